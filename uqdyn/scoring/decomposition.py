"""Hersbach (2000) decomposition of the ensemble CRPS into reliability, resolution, uncertainty.

For an ensemble of ``M`` members sorted as ``x_(1) <= ... <= x_(M)`` (with ``x_(0) = -inf`` and
``x_(M+1) = +inf``) the empirical CDF equals ``p_i = i / M`` on the bin ``(x_(i), x_(i+1))``,
``i = 0, ..., M``. Per case the standard CRPS splits over the bins (Hersbach 2000, eq. 26)::

    CRPS = sum_i alpha_i p_i^2 + beta_i (1 - p_i)^2

with ``alpha_i`` the part of bin ``i`` below the observation ``y`` and ``beta_i`` the part above
it: ``alpha_i = max(0, min(x_(i+1), y) - x_(i))``, ``beta_i = max(0, x_(i+1) - max(x_(i), y))``
(for the outlier bins, ``alpha_0 = 0``, ``beta_0 = max(0, x_(1) - y)``, ``alpha_M =
max(0, y - x_(M))``, ``beta_M = 0``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, prepare

from ._common import (
    DEFAULT_MEMBER_NAME,
    Dim,
    check_core_sizes,
    check_nan_policy,
    prepare_mask,
    prepare_weights,
    resolve_dims,
)
from ._common import resolve_core_dim as _resolve_core_dim

__all__ = ["CRPSDecomposition", "crps_decomposition", "hersbach_bins"]


class CRPSDecomposition(NamedTuple):
    """Result of :func:`crps_decomposition`; every field is of the caller's kind.

    ``crps = reliability + potential`` and ``potential = uncertainty - resolution``.

    Attributes
    ----------
    crps:
        Mean standard (``"nrg"``) ensemble CRPS over the cases.
    reliability:
        ``sum_i g_i (o_i - p_i)^2`` (0 for a perfectly reliable system; lower is better).
    resolution:
        ``uncertainty - potential`` (higher is better).
    uncertainty:
        CRPS of the climatological (sample) distribution of the observations over the cases,
        ``integral P_sam (1 - P_sam) dx = 1/2 sum_kl w_k w_l |y_k - y_l|``.
    potential:
        Potential CRPS ``sum_i g_i o_i (1 - o_i)``: the CRPS the system would have after a
        perfect recalibration of its bins.
    bin_width:
        ``g_i`` per bin, trailing axis ``bin`` of length ``M + 1``.
    obs_frequency:
        ``o_i`` per bin (same shape as ``bin_width``).
    probability:
        ``p_i = i / M`` per bin (same shape as ``bin_width``).
    """

    crps: Any
    reliability: Any
    resolution: Any
    uncertainty: Any
    potential: Any
    bin_width: Any
    obs_frequency: Any
    probability: Any


def hersbach_bins(obs: Tensor, forecasts: Tensor) -> tuple[Tensor, Tensor]:
    """``(alpha, beta)`` per case and bin, each of shape ``(*obs.shape, M + 1)``.

    ``forecasts`` is ``(*obs.shape, M)``; the members need not be sorted. NaN anywhere in a
    case gives NaN for that case.
    """
    x = torch.sort(forecasts, dim=-1).values
    y = obs.unsqueeze(-1)
    lo, hi = x[..., :-1], x[..., 1:]  # inner bins i = 1..M-1
    alpha_in = torch.clamp(torch.minimum(hi, y) - lo, min=0.0)
    beta_in = torch.clamp(hi - torch.maximum(lo, y), min=0.0)
    below = torch.clamp(x[..., :1] - y, min=0.0)  # beta_0: obs below the ensemble
    above = torch.clamp(y - x[..., -1:], min=0.0)  # alpha_M: obs above the ensemble
    alpha = torch.cat([torch.zeros_like(below), alpha_in, above], dim=-1)
    beta = torch.cat([below, beta_in, torch.zeros_like(above)], dim=-1)
    bad = torch.isnan(x).any(-1, keepdim=True) | torch.isnan(y)
    nan = torch.full((), torch.nan, dtype=x.dtype, device=x.device)
    alpha = torch.where(bad, nan, alpha)
    beta = torch.where(bad, nan, beta)
    return alpha, beta


def _sample_uncertainty(y: Tensor, w: Tensor) -> Tensor:
    """``integral P (1 - P) dx`` of the weighted empirical CDF of ``y`` along the last axis.

    ``w`` are normalised case weights (zero for cases left out).
    """
    order = torch.argsort(y, dim=-1)
    ys = torch.gather(y, -1, order)
    ws = torch.gather(w, -1, order)
    cdf = torch.cumsum(ws, -1)[..., :-1]
    gaps = ys[..., 1:] - ys[..., :-1]
    # a left-out case (weight 0) keeps the CDF flat across it, so its two gaps add up to the
    # gap between its neighbours: the sum is exact without removing it.
    return (gaps * cdf * (1.0 - cdf)).sum(-1) if gaps.shape[-1] else y.new_zeros(y.shape[:-1])


def crps_decomposition(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: str = "mean",
    skipna: bool = False,
    mask: Any = None,
) -> CRPSDecomposition:
    r"""Decomposition of the mean ensemble CRPS over cases (Hersbach 2000).

    The cases are the points along ``dim`` (all batch axes when ``dim`` is None). With the
    bin sums :math:`\bar\alpha_i, \bar\beta_i` averaged over the cases (weighted by
    ``weights``), :math:`g_i = \bar\alpha_i + \bar\beta_i` and
    :math:`o_i = \bar\beta_i / g_i` for the inner bins; for the outlier bins (Hersbach 2000,
    eqs. 33-34) :math:`o_0` is the frequency of observations below the ensemble and
    :math:`g_0 = \bar\beta_0 / o_0`, :math:`1 - o_M` the frequency above it and
    :math:`g_M = \bar\alpha_M / (1 - o_M)` (``g = 0`` where the frequency is 0). Then

    * ``reliability = sum_i g_i (o_i - p_i)^2``,
    * ``potential = sum_i g_i o_i (1 - o_i)`` and ``crps = reliability + potential`` exactly,
    * ``uncertainty`` = CRPS of the sample climatology of the observations (the weighted
      empirical CDF ``P_sam`` of ``y`` over the cases): ``integral P_sam (1 - P_sam) dx``,
    * ``resolution = uncertainty - potential``.

    The member count ``M`` must be the same for every case (NaN members are not dropped: a
    case with a NaN is NaN, or left out under ``nan_policy="omit"``).

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim`` (an int axis, or
        a dim name for xarray; the default ``-1`` means the dim named ``"member"`` there).
    member_dim:
        Member axis of ``forecasts``.
    dim:
        Batch axes over which the cases are pooled (ints; dim names for xarray); None pools
        every point. The remaining axes are kept: one decomposition per remaining point.
    weights:
        Case weights (e.g. cos-latitude), broadcastable to the batch shape (xarray: by name).
    nan_policy:
        ``"propagate"`` (a NaN case makes its decomposition NaN), ``"omit"`` (NaN cases are
        left out) or ``"raise"``.
    reduction:
        ``"mean"`` (or ``"none"``, the same here): the decomposition is of the mean CRPS.
    skipna:
        Same as ``nan_policy="omit"``.
    mask:
        Boolean, broadcastable to the batch shape; only True cases are pooled.

    Returns
    -------
    :class:`CRPSDecomposition` with fields of shape ``(*kept,)`` (the batch shape without
    ``dim``); the per-bin fields add a trailing ``bin`` axis of length ``M + 1``.

    References
    ----------
    Hersbach (2000), "Decomposition of the continuous ranked probability score for ensemble
    prediction systems", Weather and Forecasting 15(5), 559-570.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([0.2, 1.5, -0.3, 0.9])
    >>> x = torch.tensor([[0.0, 1.0], [0.5, 1.0], [-1.0, 0.0], [0.0, 2.0]])
    >>> d = crps_decomposition(y, x)
    >>> bool(torch.isclose(d.reliability + d.potential, d.crps))
    True
    """
    if reduction not in ("none", "mean"):
        raise ValueError(
            f"reduction={reduction!r}; expected 'mean' (the decomposition is of the mean CRPS "
            "over the cases; 'none' is accepted as the same)"
        )
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    (y, fc), restore = prepare(obs, forecasts, names=["obs", "forecasts"], core=[None, member])
    members = check_core_sizes({"forecasts": fc}, "member")
    if check_nan_policy(nan_policy, {"obs": y, "forecasts": fc}) == "omit":
        skipna = True
    axes = resolve_dims(dim, restore)
    n_batch = len(restore.batch_shape)
    kept = [a for a in range(n_batch) if a not in axes]
    order = kept + list(axes)

    w = torch.ones((), dtype=y.dtype, device=y.device)
    if weights is not None:
        w = prepare_weights(weights, restore, y)
    mask_t = prepare_mask(mask, restore, y.device)
    keep = torch.ones(restore.batch_shape, dtype=torch.bool, device=y.device)
    if mask_t is not None:
        keep = keep & mask_t
    alpha, beta = hersbach_bins(y, fc)
    if skipna:
        keep = keep & ~torch.isnan(alpha).any(-1)
    w = torch.where(keep, w, torch.zeros((), dtype=y.dtype, device=y.device)).expand(
        restore.batch_shape
    )

    def cases(t: Tensor, extra: int) -> Tensor:  # (*kept, K, *extra)
        t = t.permute(*order, *range(n_batch, n_batch + extra))
        shape = t.shape[: len(kept)]
        return t.reshape(*shape, -1, *t.shape[n_batch:])

    wc = cases(w, 0)
    total = wc.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(
            "no case is left to pool at some points (all masked, omitted or zero weight); "
            "expected at least one case"
        )
    wn = wc / total
    zero = torch.zeros((), dtype=y.dtype, device=y.device)

    def wmean(t: Tensor) -> Tensor:  # weighted mean over the case axis of (*kept, K, bins)
        tc = cases(t, 1)
        return (wn.unsqueeze(-1) * torch.where(wn.unsqueeze(-1) > 0, tc, zero)).sum(-2)

    a_bar, b_bar = wmean(alpha), wmean(beta)
    yc = cases(y.expand(restore.batch_shape), 0)
    below = (y.unsqueeze(-1) < torch.min(fc, -1, keepdim=True).values).to(y.dtype)
    above = (y.unsqueeze(-1) > torch.max(fc, -1, keepdim=True).values).to(y.dtype)
    nan_case = torch.isnan(alpha[..., :1])
    below = torch.where(nan_case, torch.nan, below)
    above = torch.where(nan_case, torch.nan, above)
    f_below, f_above = wmean(below)[..., 0], wmean(above)[..., 0]

    g = a_bar + b_bar
    o = torch.where(g > 0, b_bar / torch.where(g > 0, g, 1.0), zero)
    o0 = f_below
    g0 = torch.where(o0 > 0, b_bar[..., 0] / torch.where(o0 > 0, o0, 1.0), zero)
    oM = 1.0 - f_above
    gM = torch.where(f_above > 0, a_bar[..., -1] / torch.where(f_above > 0, f_above, 1.0), zero)
    nan_any = torch.isnan(a_bar).any(-1) | torch.isnan(b_bar).any(-1)
    o = torch.cat([o0.unsqueeze(-1), o[..., 1:-1], oM.unsqueeze(-1)], -1)
    g = torch.cat([g0.unsqueeze(-1), g[..., 1:-1], gM.unsqueeze(-1)], -1)
    o = torch.where(nan_any.unsqueeze(-1), torch.nan, o)
    g = torch.where(nan_any.unsqueeze(-1), torch.nan, g)
    p = torch.arange(members + 1, dtype=y.dtype, device=y.device) / members
    p_full = p.expand(g.shape)

    reliability = (g * (o - p) ** 2).sum(-1)
    potential = (g * o * (1.0 - o)).sum(-1)
    crps = (a_bar * p**2 + b_bar * (1.0 - p) ** 2).sum(-1)
    y_safe = torch.where(wn > 0, yc, zero)
    uncertainty = _sample_uncertainty(y_safe, wn)
    uncertainty = torch.where(nan_any, torch.nan, uncertainty)
    resolution = uncertainty - potential

    out = restore.reduced(axes)
    return CRPSDecomposition(
        crps=out(crps),
        reliability=out(reliability),
        resolution=out(resolution),
        uncertainty=out(uncertainty),
        potential=out(potential),
        bin_width=out(g, ("bin",)),
        obs_frequency=out(o, ("bin",)),
        probability=out(p_full.clone(), ("bin",)),
    )
