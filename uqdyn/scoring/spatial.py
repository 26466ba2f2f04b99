"""Spatial verification of gridded fields: the fractions skill score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from uqdyn._arrays import ArrayLike, Restore, prepare
from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar

from ._common import Dim, check_nan_policy, prepare_mask, prepare_weights, resolve_dims

__all__ = ["fss"]


def _window(window: Any) -> tuple[int, int]:
    items = [window, window] if is_integer_scalar(window) else window
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) != 2:
        raise TypeError(
            f"window={window!r} is a {describe_type(window)}; expected an int or a pair of "
            "ints (height, width)"
        )
    h = as_int(items[0], "window", minimum=1)
    w = as_int(items[1], "window", minimum=1)
    return h, w


def _spatial_axes(spatial_dims: Any, restore: Restore) -> tuple[int, int]:
    """The (rows, columns) batch axes named by ``spatial_dims``, in the order given."""
    if isinstance(spatial_dims, (str, bytes)) or not isinstance(spatial_dims, Sequence):
        raise TypeError(
            f"spatial_dims={spatial_dims!r}; expected a pair of axes (ints, or dim names for "
            "xarray)"
        )
    if len(spatial_dims) != 2:
        raise ValueError(f"spatial_dims={spatial_dims!r}; expected exactly two axes")
    ndim = len(restore.batch_shape)
    if ndim < 2:
        raise ValueError(
            f"the fields have shape {tuple(restore.batch_shape)}; expected at least two axes"
        )
    out = []
    for d in spatial_dims:
        if restore.kind == "xarray" and is_integer_scalar(d):  # the (-2, -1) default
            d = restore.dims[as_int(d, "spatial_dims") % ndim]
        out.append(resolve_dims(d, restore)[0])
    if out[0] == out[1]:
        raise ValueError(f"spatial_dims={spatial_dims!r} names one axis twice")
    return out[0], out[1]


def _window_sums(events: Tensor, h: int, w: int, zero_padding: bool) -> Tensor:
    """Event counts in every ``h x w`` window of ``events (..., H, W)`` (summed-area table)."""
    if zero_padding:
        top, left = h // 2, w // 2
        events = F.pad(events, (left, w - 1 - left, top, h - 1 - top))
    table = F.pad(events.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return table[..., h:, w:] - table[..., :-h, w:] - table[..., h:, :-w] + table[..., :-h, :-w]


def fss(
    obs: ArrayLike,
    forecast: ArrayLike,
    threshold: float,
    window: int | Sequence[int],
    *,
    spatial_dims: Sequence[int | str] = (-2, -1),
    zero_padding: bool = False,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: str = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Fractions skill score of a deterministic field forecast for ``{value > threshold}``.

    With ``O_n`` and ``F_n`` the fractions of observed and forecast event points in the
    ``n``-th ``h x w`` window (all windows that fit in the field, by default),

    ``FSS = 1 - sum_n (F_n - O_n)^2 / (sum_n F_n^2 + sum_n O_n^2)``

    (Roberts & Lean 2008): 1 for a perfect match at that scale, 0 for no overlap. Over
    several fields (``dim``, or ``reduction="mean"``) the sums are pooled before the ratio
    (the aggregation of Roberts & Lean and Mittermaier 2021), not the per-field scores
    averaged. Window counts come from a summed-area table (cumulative sums), O(H W) per
    field whatever the window. This is the convention of the ``scores`` package's
    ``fss_2d`` (event ``value > threshold``, ``numpy.greater``) and its default
    ``zero_padding=False``; ``scores`` returns 0 where the denominator is 0 (no event in
    either field), this function NaN (the score is undefined there).

    Parameters
    ----------
    obs, forecast:
        Observed and forecast fields, broadcastable shapes ``(*batch, H, W)`` with the two
        spatial axes on ``spatial_dims``.
    threshold:
        Event threshold: the event is ``value > threshold``.
    window:
        Window size: an int (square) or ``(h, w)`` along ``spatial_dims``; without
        ``zero_padding`` it must fit in the field.
    spatial_dims:
        The two spatial axes (rows, columns); dim names for xarray.
    zero_padding:
        ``False``: only windows inside the field (``(H-h+1) x (W-w+1)`` of them, the
        "valid" windows). ``True``: one window centred on every grid point (rows
        ``i - h//2 .. i - h//2 + h - 1``), the field padded with zeros (no events) outside.
        This differs slightly from ``scores``' ``zero_padding=True``, whose index arithmetic
        forms ``(H+1) x (W+1)`` clipped windows.
    dim:
        Batch axes (not spatial) to pool over; ``None`` keeps one score per field unless
        ``reduction="mean"`` (all fields pooled).
    weights:
        Non-negative weights of the fields in the pooled sums, broadcastable to the batch
        shape (xarray: by name).
    nan_policy:
        ``"propagate"``: a NaN anywhere in a field makes its score NaN. ``"omit"``: such
        fields are left out of pooling. ``"raise"``: ValueError.
    reduction:
        ``"none"`` or ``"mean"`` (pooled as above); ``"sum"`` is not defined for a ratio.
    skipna, mask:
        Leave fields with NaN out of pooling; a boolean mask over the batch shape selects
        the fields to keep (others NaN without pooling).

    Returns
    -------
    Score of the batch shape without the spatial axes and ``dim``, of the caller's kind.

    References
    ----------
    Roberts & Lean (2008), "Scale-selective verification of rainfall accumulations from
    high-resolution forecasts of convective events", MWR 136(1); Mittermaier (2021), MWR
    149(10); Faggian, Roux, Steinle & Ebert (2015), Mausam 66(3) (summed-area tables).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.spatial import fss
    >>> o = torch.tensor([[0.0, 0, 1], [1, 2, 2], [2, 2, 3]])
    >>> f = torch.tensor([[0.0, 1, 2], [1, 2, 3], [2, 3, 4]])
    >>> round(float(fss(o, f, 1.5, (2, 2))), 4)
    0.9846
    """
    thr = as_float(threshold, "threshold", finite=False)
    h, w = _window(window)
    if not isinstance(zero_padding, bool):
        raise TypeError(f"zero_padding={zero_padding!r}; expected a boolean")
    if reduction not in ("none", "mean"):
        raise ValueError(
            f"reduction={reduction!r}; expected 'none' or 'mean' (the FSS pools its sums; a "
            "sum of ratios is not defined)"
        )
    (o, f), restore = prepare(obs, forecast, names=["obs", "forecast"])
    check_nan_policy(nan_policy, {"obs": o, "forecast": f})
    rows, cols = _spatial_axes(spatial_dims, restore)
    o, f = o.movedim((rows, cols), (-2, -1)), f.movedim((rows, cols), (-2, -1))
    height, width = o.shape[-2], o.shape[-1]
    if not zero_padding and (h > height or w > width):
        raise ValueError(
            f"window=({h}, {w}) does not fit in fields of shape ({height}, {width}) on "
            "spatial_dims; expected a smaller window or zero_padding=True"
        )
    nan = (torch.isnan(o) | torch.isnan(f)).flatten(-2).any(-1)
    eo = (o > thr).to(o.dtype)
    ef = (f > thr).to(o.dtype)
    so, sf = _window_sums(eo, h, w, zero_padding), _window_sums(ef, h, w, zero_padding)
    num = ((sf - so) ** 2).mean((-2, -1))
    den = (sf**2).mean((-2, -1)) + (so**2).mean((-2, -1))
    num = torch.where(nan, torch.nan, num)
    den = torch.where(nan, torch.nan, den)
    batch = restore.reduced((rows, cols))
    mask_t = prepare_mask(mask, batch, o.device)

    def ratio(n: Tensor, d: Tensor) -> Tensor:
        undefined = d == 0
        return torch.where(undefined, torch.nan, 1.0 - n / torch.where(undefined, 1.0, d))

    if dim is None and reduction == "none":
        if weights is not None:
            raise ValueError(
                "weights= weight the fields pooled over dim=; pass dim=... or reduction='mean'"
            )
        score = ratio(num, den)
        if mask_t is not None:
            score = torch.where(mask_t, score, torch.nan)
        return batch(score)
    axes = resolve_dims(dim, batch)
    keep = torch.ones(num.shape, dtype=torch.bool, device=num.device)
    if mask_t is not None:
        keep = keep & mask_t
    if skipna or nan_policy == "omit":
        keep = keep & ~nan
    wt = torch.ones_like(num) if weights is None else prepare_weights(weights, batch, num)
    wt = torch.where(keep, wt.expand(num.shape), 0.0)
    zero = torch.zeros((), dtype=num.dtype, device=num.device)
    num_sum = (wt * torch.where(keep, num, zero)).sum(axes) if axes else wt * num
    den_sum = (wt * torch.where(keep, den, zero)).sum(axes) if axes else wt * den
    if not axes:
        num_sum = torch.where(keep, num_sum, torch.nan)
        den_sum = torch.where(keep, den_sum, torch.nan)
    return batch.reduced(axes)(ratio(num_sum, den_sum))
