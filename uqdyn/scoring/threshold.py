"""Threshold scores: Brier score, threshold Brier score and contingency-table scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, is_xarray, prepare
from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar

from ._common import DEFAULT_MEMBER_NAME, check_in_unit_interval, finish, prepare_mask
from ._common import resolve_core_dim as _resolve_core_dim

__all__ = ["brier_score", "threshold_brier_score", "contingency_scores"]


def brier_score(
    obs_event: ArrayLike,
    prob: ArrayLike,
    *,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Brier score of a probability forecast of a binary event: ``(prob - obs_event)^2``.

    Parameters
    ----------
    obs_event:
        Observed outcomes, 0 or 1 (booleans accepted), shape ``(*batch,)``.
    prob:
        Forecast probabilities of the event in [0, 1], shape broadcastable with ``obs_event``.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over all points,
        ignoring NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape (0-d after a reduction), of the caller's kind.

    References
    ----------
    Brier (1950), "Verification of forecasts expressed in terms of probability", MWR 78(1).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import brier_score
    >>> brier_score(torch.tensor([1.0, 0.0]), torch.tensor([0.8, 0.3]))
    tensor([0.0400, 0.0900])
    """
    (o, p), restore = prepare(obs_event, prob, names=["obs_event", "prob"])
    not_binary = (o != 0) & (o != 1) & ~torch.isnan(o)
    if bool(not_binary.any()):
        raise ValueError(
            f"obs_event has {int(not_binary.sum())} entries that are not 0 or 1 (e.g. "
            f"{o[not_binary].flatten()[0].item()!r}); expected binary outcomes"
        )
    check_in_unit_interval(p, "prob", closed=True)
    return finish((p - o) ** 2, restore, reduction, skipna, mask)


def threshold_brier_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    thresholds: ArrayLike,
    *,
    member_dim: int | str = -1,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Brier scores of an ensemble for the events ``{Y <= t}`` at several thresholds.

    ``BS_t = (F_ens(t) - 1{y <= t})^2`` with ``F_ens(t) = 1/M #{i : x_i <= t}`` the ensemble's
    empirical CDF, as properscoring's ``threshold_brier_score``. Integrated over all
    thresholds it gives the standard (``"nrg"``) ensemble CRPS. A NaN observation or member
    gives NaN at that point.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim``.
    thresholds:
        Thresholds, a number or shape ``(T,)``.
    member_dim:
        Member axis of ``forecasts``; for ``xarray.DataArray`` a dim name, the default ``-1``
        meaning ``"member"``.
    reduction, skipna, mask:
        As in :func:`brier_score`; a reduction averages/sums over points and thresholds.

    Returns
    -------
    Scores of shape ``(*batch, T)`` (thresholds last; a DataArray gains a ``threshold`` dim
    with the thresholds as coordinate), 0-d after a reduction, of the caller's kind.

    References
    ----------
    Gneiting & Raftery (2007), JASA 102(477); Hersbach (2000), Weather and Forecasting 15(5).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import threshold_brier_score
    >>> threshold_brier_score(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]), [0.0, 1.0])
    tensor([[0.2500, 0.0000]])
    """
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    (y, fc), restore = prepare(obs, forecasts, names=["obs", "forecasts"], core=[None, member])
    if fc.shape[-1] == 0:
        raise ValueError(f"forecasts of shape {tuple(fc.shape)} has no members on member_dim")
    thr_values = thresholds.values if is_xarray(thresholds) else thresholds
    if isinstance(thr_values, Tensor):
        thr = thr_values.to(device=fc.device, dtype=fc.dtype)
    else:
        thr = torch.as_tensor(np.asarray(thr_values, dtype=np.float64)).to(fc.device, fc.dtype)
    if thr.dim() > 1 or thr.numel() == 0:
        raise ValueError(f"thresholds has shape {tuple(thr.shape)}; expected a number or (T,)")
    thr = thr.reshape(-1)
    if bool(torch.isnan(thr).any()):
        raise ValueError("thresholds contains NaN; expected real thresholds")
    nan_point = torch.isnan(y) | torch.isnan(fc).any(-1)
    scores = []
    for t in thr:  # one (*batch, M) comparison at a time keeps memory at O(N M)
        cdf = (fc <= t).to(fc.dtype).mean(-1)
        event = (y <= t).to(fc.dtype)
        scores.append((cdf - event) ** 2)
    score = torch.stack(scores, -1)
    score = torch.where(nan_point.unsqueeze(-1), torch.nan, score)
    score = _reduce_with_extra(score, restore, reduction, skipna, mask)
    out = restore(score, extra_dims=("threshold",))
    if is_xarray(out) and "threshold" in out.dims:
        out = out.assign_coords(threshold=thr.detach().cpu().numpy())
    return out


def _reduce_with_extra(score: Tensor, restore, reduction: str, skipna: bool, mask: Any) -> Tensor:
    """Reduce a ``(*batch, T)`` score over every axis (mask broadcast over thresholds)."""
    from uqdyn._arrays import reduce_score

    mask_t = prepare_mask(mask, restore, score.device)
    if mask_t is not None:
        mask_t = mask_t.unsqueeze(-1)
    return reduce_score(score, reduction, skipna=skipna, mask=mask_t)  # type: ignore[arg-type]


_CONTINGENCY_KEYS = (
    "hits",
    "misses",
    "false_alarms",
    "correct_negatives",
    "csi",
    "pod",
    "far",
    "hss",
)


def contingency_scores(
    obs: ArrayLike,
    forecast: ArrayLike,
    threshold: float,
    *,
    dim: int | str | Sequence[int | str] | None = None,
    skipna: bool = False,
    mask: Any = None,
) -> dict[str, Any]:
    """Contingency-table scores of a deterministic forecast for the event ``value >= threshold``.

    With hits ``H``, misses ``Mi``, false alarms ``F`` and correct negatives ``C`` counted over
    the reduced points (the precipitation-nowcasting convention, event = rain rate >=
    threshold):

    * ``csi = H / (H + Mi + F)`` (critical success index, threat score),
    * ``pod = H / (H + Mi)`` (probability of detection),
    * ``far = F / (H + F)`` (false alarm ratio),
    * ``hss = 2 (H C - Mi F) / ((H + Mi)(Mi + C) + (H + F)(F + C))`` (Heidke skill score).

    A ratio whose denominator is zero is undefined and returned as NaN. A NaN observation or
    forecast makes the counts over its reduction NaN, unless ``skipna``.

    Parameters
    ----------
    obs, forecast:
        Observed and forecast values, broadcastable shapes ``(*batch,)``.
    threshold:
        Event threshold (a number).
    dim:
        Axes (ints, or dim names for xarray) to count over; ``None`` counts over all points.
    skipna:
        Leave out points where ``obs`` or ``forecast`` is NaN.
    mask:
        Boolean, broadcastable to the inputs; only ``True`` points are counted.

    Returns
    -------
    dict with keys ``hits``, ``misses``, ``false_alarms``, ``correct_negatives``, ``csi``,
    ``pod``, ``far``, ``hss``; each of the shape left after counting over ``dim`` (0-d for
    ``dim=None``) and of the caller's kind (xarray output keeps the remaining coords).

    References
    ----------
    Jolliffe & Stephenson (2012), "Forecast Verification", 2nd ed., Wiley, ch. 3;
    Shi et al. (2015), "Convolutional LSTM network", NeurIPS (CSI, POD, FAR for nowcasting).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import contingency_scores
    >>> s = contingency_scores(torch.tensor([0.0, 2.0, 3.0, 0.0]),
    ...                        torch.tensor([1.5, 2.5, 0.0, 0.0]), 1.0)
    >>> [round(float(s[k]), 4) for k in ("csi", "pod", "far", "hss")]
    [0.3333, 0.5, 0.5, 0.0]
    """
    threshold = as_float(threshold, "threshold", finite=False)
    (o, f), restore = prepare(obs, forecast, names=["obs", "forecast"])
    axes = _resolve_axes(dim, restore)
    keep = torch.ones(o.shape, dtype=torch.bool, device=o.device)
    mask_t = prepare_mask(mask, restore, o.device)
    if mask_t is not None:
        keep = keep & mask_t
    nan = torch.isnan(o) | torch.isnan(f)
    if skipna:
        keep = keep & ~nan
    obs_event = o >= threshold
    fc_event = f >= threshold
    dtype = o.dtype

    def count(flags: Tensor) -> Tensor:
        values = (flags & keep).to(dtype)
        if not skipna:
            values = torch.where(nan & keep, torch.nan, values)
        return values.sum(axes) if axes else values

    hits = count(obs_event & fc_event)
    misses = count(obs_event & ~fc_event)
    false_alarms = count(~obs_event & fc_event)
    negatives = count(~obs_event & ~fc_event)
    hss_den = (hits + misses) * (misses + negatives) + (hits + false_alarms) * (
        false_alarms + negatives
    )
    values = {
        "hits": hits,
        "misses": misses,
        "false_alarms": false_alarms,
        "correct_negatives": negatives,
        "csi": hits / (hits + misses + false_alarms),
        "pod": hits / (hits + misses),
        "far": false_alarms / (hits + false_alarms),
        "hss": 2.0 * (hits * negatives - misses * false_alarms) / hss_den,
    }
    kept = [d for i, d in enumerate(restore.dims) if i not in axes]
    reduced = type(restore)(
        restore.kind,
        torch.Size(s for i, s in enumerate(restore.batch_shape) if i not in axes),
        tuple(kept),
        {k: v for k, v in restore.coords.items() if set(v.dims) <= set(kept)},
    )
    return {key: reduced(values[key]) for key in _CONTINGENCY_KEYS}


def _resolve_axes(dim: Any, restore) -> tuple[int, ...]:
    ndim = len(restore.batch_shape)
    if dim is None:
        return tuple(range(ndim))
    dims = [dim] if isinstance(dim, str) or is_integer_scalar(dim) else list(dim)
    axes = []
    for d in dims:
        if isinstance(d, str):
            if restore.kind != "xarray" or d not in restore.dims:
                raise ValueError(f"dim={d!r} is not a dim of the inputs {restore.dims}")
            axes.append(restore.dims.index(d))
        elif is_integer_scalar(d):
            d = as_int(d, "dim")
            if not -ndim <= d < ndim:
                raise ValueError(
                    f"dim={d} is out of range for inputs of shape {tuple(restore.batch_shape)}"
                )
            axes.append(d % ndim)
        else:
            raise TypeError(
                f"dim={d!r} is a {describe_type(d)}; expected an int axis or a dim name"
            )
    return tuple(sorted(set(axes)))
