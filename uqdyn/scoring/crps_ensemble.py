"""CRPS of an ensemble forecast: standard, fair, almost-fair and PWM estimators.

All estimators share one decomposition, ``CRPS = skill - spread`` with

* ``skill  = sum_i w_i |x_i - y|`` (``w_i = 1/M`` without member weights), and
* ``spread = 1/2 E|X - X'|`` under the estimator,

and the pair sum is computed from the sorted members in O(M log M) time and O(N M) memory:
``sum_ij |x_i - x_j| = 2 sum_i x_(i) (2 i - M + 1)`` (0-based ranks ``i``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, Restore, prepare
from uqdyn._checks import as_float

from ._common import (
    DEFAULT_MEMBER_NAME,
    Dim,
    check_core_sizes,
    check_nan_policy,
    finish,
    normalise_weights,
)
from ._common import resolve_core_dim as _resolve_core_dim
from ._fused import crps_ensemble_fused, spread_factor
from ._lazy import dask_aware

__all__ = ["crps_ensemble", "crps_ensemble_components", "ESTIMATORS"]

#: Names accepted by ``estimator``.
ESTIMATORS = ("nrg", "fair", "afair", "pwm")

#: Rows per block on the CPU fast path (sized so a block of 50 float64 members stays in L2).
_CPU_BLOCK_ROWS = 4096


def _check_estimator(estimator: Any, alpha: Any, members: int, weighted: bool) -> float:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; expected one of {ESTIMATORS}")
    alpha = as_float(alpha, "alpha")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r}; expected a number in [0, 1]")
    if estimator in ("fair", "pwm", "afair") and members < 2 and not weighted:
        raise ValueError(
            f"estimator={estimator!r} needs at least 2 members, got forecasts with {members}; "
            "use estimator='nrg' for a single member"
        )
    if estimator == "pwm" and weighted:
        raise ValueError(
            "estimator='pwm' does not take member weights; expected weights=None or "
            "estimator in ('nrg', 'fair', 'afair')"
        )
    return float(alpha)


def _rank_coefficients(members: int, like: Tensor) -> Tensor:
    """``2 i - M + 1`` for 0-based ranks ``i``, shape ``(M,)``."""
    return torch.arange(members, dtype=like.dtype, device=like.device).mul_(2).sub_(members - 1)


def _terms_sorted(ranked: Tensor, estimator: str, alpha: float) -> tuple[Tensor, Tensor]:
    """(skill, spread) for equal weights from the members minus the observation, sorted
    ascending, shape ``(..., M)`` (both terms are unchanged by that shift)."""
    members = ranked.shape[-1]
    skill = ranked.abs().mean(-1)
    if estimator == "pwm":
        # beta_0 = mean x, beta_1 = 1/(M(M-1)) sum_i i x_(i); CRPS = skill + beta_0 - 2 beta_1.
        ranks = torch.arange(members, dtype=ranked.dtype, device=ranked.device)
        beta0 = ranked.mean(-1)
        beta1 = (ranked @ ranks) / (members * (members - 1))
        return skill, 2.0 * beta1 - beta0
    coeff = _rank_coefficients(members, ranked)
    return skill, (ranked @ coeff) * spread_factor(members, estimator, alpha)


def _terms_weighted(
    diff: Tensor, weights: Tensor, estimator: str, alpha: float, *, degenerate: str = "raise"
) -> tuple[Tensor, Tensor]:
    """(skill, spread) with normalised member weights ``weights (..., M)``; ``diff`` are the
    members minus the observation. ``degenerate="nan"`` gives NaN (instead of an error) for
    the fair estimators where all weight is on one member."""
    diff = torch.where(weights > 0, diff, torch.zeros((), dtype=diff.dtype, device=diff.device))
    skill = (weights * diff.abs()).sum(-1)
    ranked, order = torch.sort(diff, dim=-1)
    w_sorted = torch.gather(weights, -1, order)
    before = torch.cumsum(w_sorted, -1) - w_sorted  # W_<i
    # sum_ij w_i w_j |x_i - x_j| = 2 sum_i w_(i) x_(i) (2 W_<i + w_(i) - 1)
    pair_sum = 2.0 * (w_sorted * ranked * (2.0 * before + w_sorted - 1.0)).sum(-1)
    nrg = 0.5 * pair_sum
    if estimator == "nrg":
        return skill, nrg
    denom = 1.0 - (weights * weights).sum(-1)
    bad = denom <= 0
    if bool(bad.any()):
        if degenerate == "raise":
            raise ValueError(
                f"estimator={estimator!r} with member weights that put all mass on one member "
                f"at {int(bad.sum())} points (1 - sum w_i^2 = 0); expected weight on >= 2 "
                "members"
            )
        denom = torch.where(bad, torch.nan, denom)
    fair = nrg / denom
    if estimator in ("fair", "pwm"):
        return skill, fair
    return skill, alpha * fair + (1.0 - alpha) * nrg


def _terms_cpu_blocked(obs: Tensor, fc: Tensor, estimator: str, alpha: float):
    """Equal-weight terms on the CPU without autograd, in float64: members minus observation
    (in the input dtype, exact within a factor 2), sorted in place by numpy, summed in
    float64, in row blocks spread over ``torch.get_num_threads()`` threads (numpy and torch
    release the GIL)."""
    members = fc.shape[-1]
    rows_np = fc.reshape(-1, members).numpy()
    y_np = obs.reshape(-1).numpy()
    n = rows_np.shape[0]
    skill = torch.empty(n, dtype=torch.float64)
    spread = torch.empty(n, dtype=torch.float64)

    def block(start: int) -> None:
        stop = min(start + _CPU_BLOCK_ROWS, n)
        with np.errstate(invalid="ignore"):  # inf - inf: fixed by _infinite_points
            diff = rows_np[start:stop] - y_np[start:stop, None]
        diff.sort(axis=-1)
        s, p = _terms_sorted(torch.from_numpy(diff).to(torch.float64), estimator, alpha)
        skill[start:stop] = s
        spread[start:stop] = p

    starts = range(0, n, _CPU_BLOCK_ROWS)
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1, len(starts)))
    if workers == 1:
        for start in starts:
            block(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(block, starts))
    return skill.reshape(obs.shape), spread.reshape(obs.shape)


def _accurate_terms(
    obs: Tensor,
    fc: Tensor,
    weights: Tensor | None,
    estimator: str,
    alpha: float,
    *,
    degenerate: str = "raise",
) -> tuple[Tensor, Tensor]:
    """(skill, spread), each of shape ``obs.shape``; ``fc`` is ``(*obs.shape, M)``.

    The members are centred on the observation first (``x_i - y`` is exact when ``x_i`` is
    within a factor 2 of ``y``), so float32 keeps its accuracy on values far from zero; on
    the CPU the sums of float32 input are taken in float64 (the terms come back in float64
    there; the caller rounds their difference once).
    """
    diff = fc - obs.unsqueeze(-1) if weights is not None else None
    wide = fc.device.type == "cpu" and fc.dtype == torch.float32
    if weights is not None and diff is not None:
        if wide:
            diff, weights = diff.to(torch.float64), weights.to(torch.float64)
        return _terms_weighted(diff, weights, estimator, alpha, degenerate=degenerate)
    tracks_grad = torch.is_grad_enabled() and (obs.requires_grad or fc.requires_grad)
    if fc.device.type == "cpu" and fc.dtype in (torch.float32, torch.float64) and not tracks_grad:
        return _terms_cpu_blocked(obs.contiguous(), fc.contiguous(), estimator, alpha)
    ranked = torch.sort(fc - obs.unsqueeze(-1), dim=-1).values
    return _terms_sorted(ranked.to(torch.float64) if wide else ranked, estimator, alpha)


def _terms(
    obs: Tensor,
    fc: Tensor,
    weights: Tensor | None,
    estimator: str,
    alpha: float,
    *,
    degenerate: str = "raise",
) -> tuple[Tensor, Tensor]:
    """(skill, spread) in the dtype of ``fc``, each of shape ``obs.shape``."""
    skill, spread = _accurate_terms(obs, fc, weights, estimator, alpha, degenerate=degenerate)
    return skill.to(fc.dtype), spread.to(fc.dtype)


def _score(
    obs: Tensor,
    fc: Tensor,
    weights: Tensor | None,
    estimator: str,
    alpha: float,
    *,
    degenerate: str = "raise",
) -> Tensor:
    """``skill - spread`` rounded once to the dtype of ``fc``, shape ``obs.shape``."""
    skill, spread = _accurate_terms(obs, fc, weights, estimator, alpha, degenerate=degenerate)
    return (skill - spread).to(fc.dtype)


def _infinite_points(score: Tensor, obs: Tensor, fc: Tensor) -> Tensor:
    """``score`` with the right value where infinite inputs made ``inf - inf = NaN``.

    A point with no NaN input and an infinite member or observation has CRPS ``inf``, except
    when every member equals the (infinite) observation, where it is 0.
    """
    bad = torch.isnan(score)
    if not bool(bad.any()):
        return score
    inputs_nan = torch.isnan(obs) | torch.isnan(fc).any(-1)
    infinite = torch.isinf(obs) | torch.isinf(fc).any(-1)
    fix = bad & ~inputs_nan & infinite
    if not bool(fix.any()):
        return score
    exact = (fc == obs.unsqueeze(-1)).all(-1)
    inf = torch.full((), torch.inf, dtype=score.dtype, device=score.device)
    value = torch.where(exact, torch.zeros_like(inf), inf)
    return torch.where(fix, value, score)


class _Prepared(NamedTuple):
    obs: Tensor
    forecasts: Tensor
    weights: Tensor | None
    alpha: float
    estimator: str
    degenerate: str
    restore: Restore


def _prepare_ensemble(
    obs: ArrayLike,
    forecasts: ArrayLike,
    member_dim: int | str,
    member_weights: ArrayLike | None,
    estimator: str,
    alpha: float,
    nan_policy: str,
) -> _Prepared:
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    weighted = member_weights is not None
    arrays = [obs, forecasts] + ([member_weights] if weighted else [])
    names = ["obs", "forecasts"] + (["member_weights"] if weighted else [])
    core = [None, member] + ([member] if weighted else [])
    tensors, restore = prepare(*arrays, names=names, core=core)
    y, fc = tensors[0], tensors[1]
    cores = {"forecasts": fc} | ({"member_weights": tensors[2]} if weighted else {})
    members = check_core_sizes(cores, "member")
    policy = check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    alpha_f = _check_estimator(estimator, alpha, members, weighted)
    raw = None
    if weighted:
        raw = tensors[2]
        n_nan = int(torch.isnan(raw).sum())
        if n_nan:
            raise ValueError(
                f"member_weights has {n_nan} NaN entries; expected non-negative numbers"
            )
        w = normalise_weights(raw, "member_weights")
    else:
        w = None
    nan_members = torch.isnan(fc) if policy == "omit" else None
    if nan_members is None or not bool(nan_members.any()):
        return _Prepared(y, fc, w, alpha_f, estimator, "raise", restore)
    # omit: NaN members get weight 0 per point (an estimator over the members that are left;
    # "pwm" becomes its equal "fair"); a point with no member left is NaN
    valid = (~nan_members).to(fc.dtype)
    raw_w = valid if raw is None else raw.expand_as(fc) * valid
    total = raw_w.sum(-1, keepdim=True)
    empty = total <= 0
    w = torch.where(empty, torch.nan, raw_w / torch.where(empty, 1.0, total))
    fc = torch.where(nan_members, torch.zeros((), dtype=fc.dtype, device=fc.device), fc)
    est = "fair" if estimator == "pwm" else estimator
    return _Prepared(y, fc, w, alpha_f, est, "nan", restore)


@dask_aware({"obs": None, "forecasts": "member_dim", "member_weights": "member_dim"})
def crps_ensemble(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    estimator: str = "nrg",
    alpha: float = 0.95,
    member_weights: ArrayLike | None = None,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    r"""Continuous ranked probability score of an ensemble forecast.

    ``CRPS(F, y) = E|X - y| - 1/2 E|X - X'|`` with ``X, X'`` drawn from the ensemble.
    Four estimators of it, named by ``estimator``:

    * ``"nrg"`` -- the **standard CRPS** of the empirical CDF (energy form), as reported by
      properscoring and xskillscore:
      ``1/M sum_i |x_i - y| - 1/(2 M^2) sum_ij |x_i - x_j|``.
    * ``"fair"`` -- the **fair (unbiased) CRPS** (Ferro 2014), as reported by WeatherBench 2:
      ``1/M sum_i |x_i - y| - 1/(2 M (M - 1)) sum_ij |x_i - x_j|``.
    * ``"afair"`` -- the **almost fair CRPS** of Lang et al. (2024, AIFS-CRPS):
      ``alpha * fair + (1 - alpha) * nrg``.
    * ``"pwm"`` -- the **probability-weighted-moment** form (Taillardat et al. 2016):
      ``1/M sum_i |x_i - y| + beta_0 - 2 beta_1`` with ``beta_0 = 1/M sum_i x_(i)``,
      ``beta_1 = 1/(M (M - 1)) sum_i i x_(i)``; algebraically equal to ``"fair"``.

    The pair sum uses the sorted members, ``sum_ij |x_i - x_j| = 2 sum_i x_(i) (2 i - M + 1)``
    (0-based ranks), so a call costs O(N M log M) time and O(N M) memory. With member
    weights ``w`` (normalised to sum to one), ``"nrg"`` is
    ``sum_i w_i |x_i - y| - 1/2 sum_ij w_i w_j |x_i - x_j|`` (properscoring's weighted CRPS),
    the pair sum being ``2 sum_i w_(i) x_(i) (2 W_<i + w_(i) - 1)`` with ``W_<i`` the weight
    below rank ``i``; ``"fair"`` divides the pair term by ``1 - sum_i w_i^2``.

    The members are centred on the observation before sorting (``x_i - y`` is exact for
    members within a factor 2 of ``y``), so float32 input keeps float32 accuracy far from
    zero (relative error about 1e-7 on temperature- or geopotential-like values). Integer,
    list and Python-number inputs are computed in float64. An infinite member or observation
    gives ``inf`` (0 when every member equals the infinite observation). A NaN observation
    gives NaN; a NaN member gives NaN under ``nan_policy="propagate"`` and is dropped at its
    point under ``"omit"`` (the estimator is then taken over the members left, with equal
    weights on them, as properscoring does; ``"pwm"`` becomes its equal ``"fair"``; a point
    with no member left, or with one member under a fair estimator, is NaN). The result is
    differentiable in ``obs`` and ``forecasts``. On CUDA (no member weights, no autograd) a
    fused kernel is used where available. Dask-backed ``xarray.DataArray`` inputs give a
    lazy (dask-backed) result, computed block by block when asked for.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)`` (broadcastable with the forecasts' batch shape).
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim``.
    member_dim:
        Member axis of ``forecasts`` (and of ``weights``); default the last axis, as in
        properscoring and scoringrules. For ``xarray.DataArray`` input it is a dim name; the
        default ``-1`` then means the dim named ``"member"`` (as in xskillscore).
    estimator:
        ``"nrg"`` (standard), ``"fair"``, ``"afair"`` or ``"pwm"``; see above.
    alpha:
        Weight of the fair estimator in ``"afair"``, in [0, 1].
    member_weights:
        Optional non-negative member weights, shape ``(M,)`` or ``(*batch, M)``; normalised to
        sum to one at each point (NaN weights are an error). Not accepted by ``"pwm"``.
    dim:
        Batch axes to reduce (ints; dim names for xarray); the mean over them unless
        ``reduction="sum"``. Default None: no reduction (unless ``reduction`` asks for one).
    weights:
        Reduction weights broadcastable to the batch shape (xarray: by dim name, e.g.
        cos-latitude area weights): ``sum(w s) / sum(w)`` over the reduced points.
    nan_policy:
        ``"propagate"`` (NaN members give NaN), ``"omit"`` (NaN members dropped per point,
        NaN points left out of reductions) or ``"raise"`` (NaN in the inputs is an error).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over ``dim`` (all
        points when ``dim`` is None), ignoring NaN points when ``skipna`` and points where
        the boolean ``mask`` is False.

    Returns
    -------
    Score of shape ``(*batch,)`` without the reduced axes (0-d after a full reduction), of
    the caller's kind: torch tensor, numpy array or ``xarray.DataArray`` (coords kept, member
    dim removed).

    References
    ----------
    Gneiting & Raftery (2007), JASA 102(477); Ferro (2014), QJRMS 140(683);
    Taillardat et al. (2016), MWR 144(6); Lang et al. (2024), arXiv:2412.15832.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import crps_ensemble
    >>> crps_ensemble(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]))
    tensor([0.2500])
    >>> crps_ensemble(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]), estimator="fair")
    tensor([0.])
    """
    p = _prepare_ensemble(obs, forecasts, member_dim, member_weights, estimator, alpha, nan_policy)
    score = _try_fused(p.obs, p.forecasts, p.weights, p.estimator, p.alpha)
    if score is None:
        score = _score(p.obs, p.forecasts, p.weights, p.estimator, p.alpha, degenerate=p.degenerate)
    score = _infinite_points(score, p.obs, p.forecasts)
    reduce = {"dim": dim, "weights": weights, "nan_policy": nan_policy}
    return finish(score, p.restore, reduction, skipna, mask, **reduce)


def _try_fused(y: Tensor, fc: Tensor, w: Tensor | None, estimator: str, alpha: float):
    if fc.device.type != "cuda" or w is not None:
        return None
    if torch.is_grad_enabled() and (y.requires_grad or fc.requires_grad):
        return None
    members = fc.shape[-1]
    out = crps_ensemble_fused(y.reshape(-1), fc.reshape(-1, members).contiguous(), estimator, alpha)
    return None if out is None else out.reshape(y.shape)


@dask_aware({"obs": None, "forecasts": "member_dim", "member_weights": "member_dim"}, n_outputs=2)
def crps_ensemble_components(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    estimator: str = "nrg",
    alpha: float = 0.95,
    member_weights: ArrayLike | None = None,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> tuple[Any, Any]:
    """Skill and spread parts of the ensemble CRPS, ``CRPS = skill - spread``.

    ``skill = E|X - y| = sum_i w_i |x_i - y|`` (WeatherBench 2's "CRPS skill") and
    ``spread = 1/2 E|X - X'|`` under ``estimator`` (WeatherBench 2's "CRPS spread"; with
    ``estimator="fair"`` these match WeatherBench 2, with ``"nrg"`` the standard CRPS).
    Estimators, weights and the NaN policy are those of :func:`crps_ensemble`; for ``"pwm"``
    the spread is ``2 beta_1 - beta_0``.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim``.
    member_dim, estimator, alpha, member_weights, dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`crps_ensemble`; a reduction applies to each part separately.

    Returns
    -------
    (skill, spread):
        Two scores of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

    References
    ----------
    Rasp et al. (2024), "WeatherBench 2", JAMES 16(6); Gneiting & Raftery (2007).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import crps_ensemble_components
    >>> skill, spread = crps_ensemble_components(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]))
    >>> skill, spread
    (tensor([0.5000]), tensor([0.2500]))
    """
    p = _prepare_ensemble(obs, forecasts, member_dim, member_weights, estimator, alpha, nan_policy)
    skill, spread = _terms(
        p.obs, p.forecasts, p.weights, p.estimator, p.alpha, degenerate=p.degenerate
    )
    reduce = {"dim": dim, "weights": weights, "nan_policy": nan_policy}
    return (
        finish(skill, p.restore, reduction, skipna, mask, **reduce),
        finish(spread, p.restore, reduction, skipna, mask, **reduce),
    )
