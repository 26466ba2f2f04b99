"""Relative operating characteristic: ROC curve and the area under it (Mann-Whitney)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Restore, is_xarray, prepare

from ._common import Dim, check_nan_policy, prepare_weights, resolve_dims
from .threshold import as_thresholds

__all__ = ["roc_curve", "roc_auc"]


def _binary_and_prob(obs_event: Any, prob: Any) -> tuple[Tensor, Tensor, Restore]:
    (o, p), restore = prepare(obs_event, prob, names=["obs_event", "prob"])
    bad = (o != 0) & (o != 1) & ~torch.isnan(o)
    if bool(bad.any()):
        raise ValueError(
            f"obs_event has {int(bad.sum())} entries that are not 0 or 1 (e.g. "
            f"{o[bad].flatten()[0].item()!r}); expected binary outcomes"
        )
    return o, p, restore


def _weights(weights: Any, restore: Restore, like: Tensor) -> Tensor:
    if weights is None:
        return torch.ones_like(like)
    return prepare_weights(weights, restore, like).expand(like.shape)


def _rates(o: Tensor, p: Tensor, w: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
    """Hit and false-alarm rates of ``{p >= t}`` for 1-d ``o, p, w`` at each ``t`` of ``thr``."""
    pos, neg = (w * o), (w * (1.0 - o))
    above = p.unsqueeze(0) >= thr.unsqueeze(-1)  # (T, n)
    hits = (above * pos).sum(-1) / pos.sum()
    false_alarms = (above * neg).sum(-1) / neg.sum()
    return false_alarms, hits


def _auc_row(o: Tensor, p: Tensor, w: Tensor) -> Tensor:
    """Weighted Mann-Whitney AUC of one row: ``sum_{i pos, j neg} w_i w_j K(p_i, p_j) / W+ W-``.

    ``K = 1`` when ``p_i > p_j``, ``1/2`` on ties, else 0; O(n log n) by sorting.
    """
    values, inverse = torch.unique(p, sorted=True, return_inverse=True)
    pos = torch.zeros_like(values).index_add_(0, inverse, w * o)
    neg = torch.zeros_like(values).index_add_(0, inverse, w * (1.0 - o))
    below = torch.cumsum(neg, 0) - neg
    return (pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum())


def roc_auc(
    obs_event: ArrayLike,
    prob: ArrayLike,
    *,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    thresholds: ArrayLike | None = None,
) -> Any:
    """Area under the ROC curve of a forecast for a binary event, over the points of ``dim``.

    Without ``thresholds`` it is the Mann-Whitney statistic

    ``AUC = 1/(n_1 n_0) sum_{i: o_i = 1} sum_{j: o_j = 0} (1{p_i > p_j} + 1/2 1{p_i = p_j})``,

    the probability that an event got a higher forecast than a non-event, equal to the
    trapezoidal area under the ROC curve through every distinct forecast value (sklearn's
    ``roc_auc_score``, xskillscore's ``roc(bin_edges="continuous")``, the ``scores``
    package's ``roc_auc``). With ``weights`` each point counts ``w_i`` times (pairs
    ``w_i w_j``). With ``thresholds`` it is the trapezoidal area under the curve through the
    points of :func:`roc_curve` at those thresholds and ``(0, 0)``, ``(1, 1)``: the binned
    ROC area (xskillscore's ``roc`` with ``bin_edges``).

    Parameters
    ----------
    obs_event:
        Observed outcomes, 0 or 1 (booleans accepted), shape ``(*batch,)``.
    prob:
        Forecast scores (probabilities or any real values; only their order matters without
        ``thresholds``), broadcastable with ``obs_event``.
    dim:
        Batch axes pooled into one AUC (ints; dim names for xarray); ``None`` pools all.
    weights:
        Non-negative point weights broadcastable to the batch shape (xarray: by name).
    nan_policy:
        ``"propagate"``: a NaN in a pool makes its AUC NaN. ``"omit"``: NaN points are left
        out. ``"raise"``: ValueError.
    thresholds:
        Optional strictly increasing thresholds for the binned area.

    Returns
    -------
    AUC of the shape left after pooling over ``dim`` (0-d for ``None``), of the caller's
    kind. A pool without an event or without a non-event has no ROC curve: NaN.

    References
    ----------
    Mason & Graham (2002), "Areas beneath the relative operating characteristics (ROC) and
    relative operating levels (ROL) curves", QJRMS 128(584); Hanley & McNeil (1982),
    Radiology 143(1).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.roc import roc_auc
    >>> roc_auc(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0.1, 0.4, 0.35, 0.8]))
    tensor(0.7500)
    """
    o, p, restore = _binary_and_prob(obs_event, prob)
    check_nan_policy(nan_policy, {"obs_event": o, "prob": p})
    w = _weights(weights, restore, p)
    axes = resolve_dims(dim, restore)
    kept = [a for a in range(p.dim()) if a not in axes]
    order = kept + list(axes)
    rest = [p.shape[a] for a in kept]
    pool = int(np.prod([p.shape[a] for a in axes])) if axes else 1
    flat = [t.permute(order).reshape(-1, pool) for t in (o, p, w)]
    thr = None if thresholds is None else as_thresholds(thresholds, p)
    out = []
    for o_r, p_r, w_r in zip(*flat, strict=True):
        nan = torch.isnan(o_r) | torch.isnan(p_r)
        if bool(nan.any()):
            if nan_policy != "omit":
                out.append(p.new_tensor(torch.nan))
                continue
            o_r, p_r, w_r = o_r[~nan], p_r[~nan], w_r[~nan]
        if thr is None:
            out.append(_auc_row(o_r, p_r, w_r))
        else:
            far, hit = _rates(o_r, p_r, w_r, thr.flip(0))  # increasing rates
            zero, one = p.new_zeros(1), p.new_ones(1)
            far, hit = torch.cat([zero, far, one]), torch.cat([zero, hit, one])
            out.append(torch.trapezoid(hit, far))
    result = torch.stack(out).reshape(rest) if out else p.new_zeros(rest)
    return restore.reduced(axes)(result)


def roc_curve(
    obs_event: ArrayLike,
    prob: ArrayLike,
    *,
    thresholds: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
) -> tuple[Any, Any, Any]:
    """ROC curve of a forecast for a binary event, pooled over all points.

    For the warning rule ``{prob >= t}`` the hit rate (probability of detection) is
    ``H(t) = #{o = 1, p >= t} / #{o = 1}`` and the false-alarm rate (probability of false
    detection) ``F(t) = #{o = 0, p >= t} / #{o = 0}`` (weighted counts with ``weights``).

    Parameters
    ----------
    obs_event:
        Observed outcomes, 0 or 1, shape ``(*batch,)``.
    prob:
        Forecast scores, broadcastable with ``obs_event``.
    thresholds:
        Strictly increasing thresholds. ``None``: ``+inf`` and every distinct forecast value
        in decreasing order, so the curve runs from ``(0, 0)`` to ``(1, 1)`` and its
        trapezoidal area is :func:`roc_auc` (sklearn's ``roc_curve`` with
        ``drop_intermediate=False``).
    weights:
        Non-negative point weights broadcastable to the batch shape.
    nan_policy:
        ``"propagate"``: NaN input gives NaN rates. ``"omit"``: NaN points are left out.
        ``"raise"``: ValueError.

    Returns
    -------
    ``(false_alarm_rate, hit_rate, thresholds)``, 1-d of length ``T`` each, in the order of
    the thresholds, of the caller's kind (a DataArray input gives DataArrays on a
    ``threshold`` dim). Without an event (or without a non-event) the hit rates (false-alarm
    rates) are NaN.

    References
    ----------
    Mason (1982), "A model for assessment of weather forecasts", Aust. Met. Mag. 30;
    Jolliffe & Stephenson (2012), "Forecast Verification", 2nd ed., ch. 7.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.roc import roc_curve
    >>> far, hit, thr = roc_curve(torch.tensor([0.0, 1.0]), torch.tensor([0.25, 0.75]))
    >>> far.tolist(), hit.tolist(), thr.tolist()
    ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [inf, 0.75, 0.25])
    """
    o, p, restore = _binary_and_prob(obs_event, prob)
    check_nan_policy(nan_policy, {"obs_event": o, "prob": p})
    w = _weights(weights, restore, p).reshape(-1)
    o, p = o.reshape(-1), p.reshape(-1)
    nan = torch.isnan(o) | torch.isnan(p)
    if nan_policy == "omit":
        o, p, w = o[~nan], p[~nan], w[~nan]
    if thresholds is None:
        finite = p[~torch.isnan(p)]
        values = torch.unique(finite, sorted=True).flip(0)
        thr = torch.cat([p.new_full((1,), torch.inf), values])
    else:
        thr = as_thresholds(thresholds, p)
    far, hit = _rates(o, p, w, thr)
    if nan_policy == "propagate" and bool(nan.any()):
        far, hit = torch.full_like(far, torch.nan), torch.full_like(hit, torch.nan)
    if restore.kind == "torch":
        return far, hit, thr
    arrays = [t.detach().cpu().numpy() for t in (far, hit, thr)]
    if is_xarray(obs_event) or is_xarray(prob):
        import xarray as xr

        coords = {"threshold": arrays[2]}
        return (
            xr.DataArray(arrays[0], dims="threshold", coords=coords, name="false_alarm_rate"),
            xr.DataArray(arrays[1], dims="threshold", coords=coords, name="hit_rate"),
            xr.DataArray(arrays[2], dims="threshold", coords=coords, name="threshold"),
        )
    return arrays[0], arrays[1], arrays[2]
