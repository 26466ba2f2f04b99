"""Threshold scores: Brier score, threshold Brier score and contingency-table scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, is_xarray, prepare
from uqdyn._checks import as_float, as_int, is_integer_scalar

from ._common import (
    DEFAULT_MEMBER_NAME,
    Dim,
    check_in_unit_interval,
    check_nan_policy,
    finish,
    prepare_mask,
    prepare_weights,
    resolve_dims,
)
from ._common import resolve_core_dim as _resolve_core_dim
from ._lazy import dask_aware

__all__ = ["brier_score", "threshold_brier_score", "contingency_scores"]


@dask_aware({"obs_event": None, "prob": None})
def brier_score(
    obs_event: ArrayLike,
    prob: ArrayLike,
    *,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
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
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the score (e.g. cos-latitude): ``sum(w s) / sum(w)``.
    nan_policy:
        ``"propagate"`` (NaN input, NaN score), ``"omit"`` (NaN points left out of
        reductions) or ``"raise"``.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (a weighted mean over ``dim`` when it is
        given); ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``None``), ignoring
        NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape without ``dim``, of the caller's kind.

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
    check_nan_policy(nan_policy, {"obs_event": o, "prob": p})
    not_binary = (o != 0) & (o != 1) & ~torch.isnan(o)
    if bool(not_binary.any()):
        raise ValueError(
            f"obs_event has {int(not_binary.sum())} entries that are not 0 or 1 (e.g. "
            f"{o[not_binary].flatten()[0].item()!r}); expected binary outcomes"
        )
    check_in_unit_interval(p, "prob", closed=True)
    return finish(
        (p - o) ** 2,
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
    )


def as_thresholds(thresholds: Any, like: Tensor, name: str = "thresholds") -> Tensor:
    """Thresholds as a 1-d tensor on ``like``'s device and dtype, strictly increasing.

    Accepts a number, a 1-d sequence, array, tensor or DataArray. NaN, an empty array, more
    than one axis or thresholds that are not strictly increasing raise ValueError.
    """
    values = thresholds.values if is_xarray(thresholds) else thresholds
    if isinstance(values, Tensor):
        thr = values.detach().to(device=like.device, dtype=like.dtype)
    else:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} is a {type(thresholds).__name__}; expected a number or a 1-d array of "
                "real thresholds"
            ) from None
        thr = torch.as_tensor(arr).to(like.device, like.dtype)
    if thr.dim() > 1 or thr.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(thr.shape)}; expected a number or (T,)")
    thr = thr.reshape(-1)
    if bool(torch.isnan(thr).any()):
        raise ValueError(f"{name} contains NaN; expected real thresholds")
    steps = thr[1:] - thr[:-1]
    if bool((steps <= 0).any()):
        i = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(
            f"{name} is not strictly increasing ({name}[{i}]={thr[i].item()!r}, "
            f"{name}[{i + 1}]={thr[i + 1].item()!r}); expected sorted distinct thresholds"
        )
    return thr


def threshold_brier_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    thresholds: ArrayLike,
    *,
    member_dim: int | str = -1,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Brier scores of an ensemble for the events ``{Y <= t}`` at several thresholds.

    ``BS_t = (F_ens(t) - 1{y <= t})^2`` with ``F_ens(t) = 1/M #{i : x_i <= t}`` the ensemble's
    empirical CDF, as properscoring's ``threshold_brier_score``. Integrated over all
    thresholds it gives the standard (``"nrg"``) ensemble CRPS; summed over the thresholds
    it is the ranked probability score :func:`uqdyn.scoring.categorical.rps`.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim``.
    thresholds:
        Thresholds, a number or shape ``(T,)``, strictly increasing (unsorted or repeated
        thresholds raise ValueError rather than being sorted silently).
    member_dim:
        Member axis of ``forecasts``; for ``xarray.DataArray`` a dim name, the default ``-1``
        meaning ``"member"``.
    dim, weights:
        Batch axes to average over and reduction weights (as in :func:`brier_score`); the
        threshold axis is never reduced.
    nan_policy:
        ``"propagate"``: a NaN observation or member gives NaN at that point (all
        thresholds). ``"omit"``: NaN members are dropped per point (``F_ens`` over the
        remaining members; no member left gives NaN) and NaN points are left out of
        reductions. ``"raise"``: ValueError on any NaN.
    reduction, skipna, mask:
        As in :func:`brier_score`, applied per threshold.

    Returns
    -------
    Scores of shape ``(*batch_without_dim, T)`` (thresholds last; a DataArray gains a
    ``threshold`` dim with the thresholds as coordinate), of the caller's kind.

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
    check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    thr = as_thresholds(thresholds, fc)
    cdf = ensemble_cdf(fc, thr, omit=nan_policy == "omit")  # (*batch, T)
    event = (y.unsqueeze(-1) <= thr).to(fc.dtype)
    score = torch.where(torch.isnan(y).unsqueeze(-1), torch.nan, (cdf - event) ** 2)
    out = finish(
        score,
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
        extra_dims=("threshold",),
    )
    if is_xarray(out):
        out = out.assign_coords(threshold=thr.detach().cpu().numpy())
    return out


def ensemble_cdf(fc: Tensor, thr: Tensor, *, omit: bool, strict: bool = False) -> Tensor:
    """Ensemble CDF ``1/M #{x_m <= t}`` (``< t`` when ``strict``) of ``fc (*batch, M)``.

    Returns ``(*batch, T)``. A NaN member gives NaN at its point, unless ``omit``: then the
    fraction is over the non-NaN members (NaN when none is left). One ``(*batch, M)``
    comparison per threshold keeps memory at O(N M).
    """
    nan = torch.isnan(fc)
    count = (~nan).sum(-1).to(fc.dtype) if omit else fc.new_full(fc.shape[:-1], fc.shape[-1])
    bad = count == 0 if omit else nan.any(-1)
    cols = []
    for t in thr:
        below = (fc < t) if strict else (fc <= t)
        cols.append(below.to(fc.dtype).sum(-1) / count)
    cdf = torch.stack(cols, -1)
    return torch.where(bad.unsqueeze(-1), torch.nan, cdf)


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
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
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
    weights:
        Non-negative point weights broadcastable to the inputs (xarray: by name): each point
        counts ``w`` times in the table (e.g. grid-cell area).
    nan_policy:
        ``"propagate"`` (a NaN point makes the counts of its reduction NaN), ``"omit"``
        (same as ``skipna``) or ``"raise"``.
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
    if check_nan_policy(nan_policy, {"obs": o, "forecast": f}) == "omit":
        skipna = True
    if not isinstance(dim, str) and dim is not None and is_integer_scalar(dim):
        dim = as_int(dim, "dim")  # 0-d arrays and tensors name one axis
    axes = resolve_dims(dim, restore)
    w_t = None if weights is None else prepare_weights(weights, restore, o).expand(o.shape)
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
        if w_t is not None:
            values = values * w_t
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
    reduced = restore.reduced(axes)
    return {key: reduced(values[key]) for key in _CONTINGENCY_KEYS}
