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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, prepare
from uqdyn._checks import as_float

from ._common import DEFAULT_MEMBER_NAME, check_core_sizes, finish, normalise_weights
from ._common import resolve_core_dim as _resolve_core_dim
from ._fused import crps_ensemble_fused, spread_factor

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


def _terms_sorted(obs: Tensor, fc: Tensor, ranked: Tensor, estimator: str, alpha: float):
    """(skill, spread) for equal weights; ``ranked`` are the members sorted ascending."""
    members = fc.shape[-1]
    skill = (fc - obs.unsqueeze(-1)).abs().mean(-1)
    if estimator == "pwm":
        # beta_0 = mean x, beta_1 = 1/(M(M-1)) sum_i i x_(i); CRPS = skill + beta_0 - 2 beta_1.
        ranks = torch.arange(members, dtype=fc.dtype, device=fc.device)
        beta0 = ranked.mean(-1)
        beta1 = (ranked @ ranks) / (members * (members - 1))
        return skill, 2.0 * beta1 - beta0
    coeff = _rank_coefficients(members, fc)
    return skill, (ranked @ coeff) * spread_factor(members, estimator, alpha)


def _terms_weighted(obs: Tensor, fc: Tensor, weights: Tensor, estimator: str, alpha: float):
    """(skill, spread) with normalised member weights ``weights (..., M)``."""
    skill = (weights * (fc - obs.unsqueeze(-1)).abs()).sum(-1)
    ranked, order = torch.sort(fc, dim=-1)
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
        raise ValueError(
            f"estimator={estimator!r} with weights that put all mass on one member at "
            f"{int(bad.sum())} points (1 - sum w_i^2 = 0); expected weight on >= 2 members"
        )
    fair = nrg / denom
    if estimator == "fair":
        return skill, fair
    return skill, alpha * fair + (1.0 - alpha) * nrg


def _terms_cpu_blocked(obs: Tensor, fc: Tensor, estimator: str, alpha: float):
    """Equal-weight terms on the CPU without autograd: numpy's vectorised sort, in row blocks
    spread over ``torch.get_num_threads()`` threads (numpy and torch release the GIL)."""
    members = fc.shape[-1]
    rows = fc.reshape(-1, members)
    y = obs.reshape(-1)
    n = rows.shape[0]
    skill = torch.empty(n, dtype=fc.dtype)
    spread = torch.empty(n, dtype=fc.dtype)
    rows_np = rows.numpy()

    def block(start: int) -> None:
        stop = min(start + _CPU_BLOCK_ROWS, n)
        ranked = torch.from_numpy(np.sort(rows_np[start:stop], axis=-1))
        s, p = _terms_sorted(y[start:stop], rows[start:stop], ranked, estimator, alpha)
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


def _terms(obs: Tensor, fc: Tensor, weights: Tensor | None, estimator: str, alpha: float):
    """(skill, spread), each of shape ``obs.shape``; ``fc`` is ``(*obs.shape, M)``."""
    if weights is not None:
        return _terms_weighted(obs, fc, weights, estimator, alpha)
    tracks_grad = torch.is_grad_enabled() and (obs.requires_grad or fc.requires_grad)
    if fc.device.type == "cpu" and fc.dtype in (torch.float32, torch.float64) and not tracks_grad:
        return _terms_cpu_blocked(obs.contiguous(), fc.contiguous(), estimator, alpha)
    ranked = torch.sort(fc, dim=-1).values
    return _terms_sorted(obs, fc, ranked, estimator, alpha)


def _prepare_ensemble(obs, forecasts, member_dim, weights, estimator, alpha):
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    arrays = [obs, forecasts] + ([] if weights is None else [weights])
    names = ["obs", "forecasts"] + ([] if weights is None else ["weights"])
    core = [None, member] + ([] if weights is None else [member])
    tensors, restore = prepare(*arrays, names=names, core=core)
    cores = {"forecasts": tensors[1]} | ({} if weights is None else {"weights": tensors[2]})
    members = check_core_sizes(cores, "member")
    alpha_f = _check_estimator(estimator, alpha, members, weights is not None)
    w = None if weights is None else normalise_weights(tensors[2], "weights")
    return tensors[0], tensors[1], w, alpha_f, restore


def crps_ensemble(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    estimator: str = "nrg",
    alpha: float = 0.95,
    weights: ArrayLike | None = None,
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

    A NaN observation or a NaN member gives NaN at that point. The result is differentiable
    in ``obs`` and ``forecasts``. On CUDA (no weights, no autograd) a fused kernel is used
    where available.

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
    weights:
        Optional non-negative member weights, shape ``(M,)`` or ``(*batch, M)``; normalised to
        sum to one at each point. Not accepted by ``"pwm"``.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over all points,
        ignoring NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind: torch tensor,
    numpy array or ``xarray.DataArray`` (coords kept, member dim removed).

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
    y, fc, w, alpha_f, restore = _prepare_ensemble(
        obs, forecasts, member_dim, weights, estimator, alpha
    )
    fused = _try_fused(y, fc, w, estimator, alpha_f)
    if fused is not None:
        return finish(fused, restore, reduction, skipna, mask)
    skill, spread = _terms(y, fc, w, estimator, alpha_f)
    return finish(skill - spread, restore, reduction, skipna, mask)


def _try_fused(y: Tensor, fc: Tensor, w: Tensor | None, estimator: str, alpha: float):
    if fc.device.type != "cuda" or w is not None:
        return None
    if torch.is_grad_enabled() and (y.requires_grad or fc.requires_grad):
        return None
    members = fc.shape[-1]
    out = crps_ensemble_fused(y.reshape(-1), fc.reshape(-1, members).contiguous(), estimator, alpha)
    return None if out is None else out.reshape(y.shape)


def crps_ensemble_components(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    estimator: str = "nrg",
    alpha: float = 0.95,
    weights: ArrayLike | None = None,
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
    member_dim, estimator, alpha, weights, reduction, skipna, mask:
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
    y, fc, w, alpha_f, restore = _prepare_ensemble(
        obs, forecasts, member_dim, weights, estimator, alpha
    )
    skill, spread = _terms(y, fc, w, estimator, alpha_f)
    return (
        finish(skill, restore, reduction, skipna, mask),
        finish(spread, restore, reduction, skipna, mask),
    )
