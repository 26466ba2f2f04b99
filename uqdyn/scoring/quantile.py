"""Quantile (pinball) loss, interval score and the CRPS approximated from quantiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, is_xarray, prepare
from uqdyn._checks import as_float

from ._common import Dim, check_in_unit_interval, check_nan_policy, finish
from ._common import resolve_core_dim as _resolve_core_dim
from ._lazy import dask_aware

__all__ = ["quantile_score", "interval_score", "crps_quantile", "weighted_interval_score"]


def _pinball(y: Tensor, q: Tensor, tau: Tensor) -> Tensor:
    """``(1{y < q} - tau) (q - y)``; NaN where ``y`` or ``q`` is NaN."""
    below = (y < q).to(q.dtype)
    return (below - tau) * (q - y)


@dask_aware({"obs": None, "forecast_quantile": None, "level": None})
def quantile_score(
    obs: ArrayLike,
    forecast_quantile: ArrayLike,
    level: ArrayLike,
    *,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Quantile (pinball) loss of a forecast quantile at level ``tau``.

    ``QS_tau(q, y) = (1{y < q} - tau) (q - y)``, i.e. ``tau (y - q)`` when ``y >= q`` and
    ``(1 - tau) (q - y)`` otherwise; a proper score for the ``tau``-quantile.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecast_quantile:
        Forecast ``tau``-quantiles, shape broadcastable with ``obs``.
    level:
        Quantile level(s) ``tau`` in (0, 1): a number or an array broadcastable with ``obs``.
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the score (xarray: by name): ``sum(w s) / sum(w)``.
    nan_policy:
        ``"propagate"`` (NaN input, NaN score), ``"omit"`` (NaN points left out of
        reductions) or ``"raise"`` (ValueError naming the input).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (a weighted mean over ``dim`` when given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``None``), ignoring NaN
        points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape without ``dim`` (0-d after a full reduction), of the
    caller's kind.

    References
    ----------
    Koenker & Bassett (1978), Econometrica 46(1); Gneiting & Raftery (2007), JASA 102(477).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import quantile_score
    >>> quantile_score(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]), 0.9)
    tensor([0.9000, 0.1000])
    """
    (y, q, tau), restore = prepare(
        obs, forecast_quantile, level, names=["obs", "forecast_quantile", "level"]
    )
    check_nan_policy(nan_policy, {"obs": y, "forecast_quantile": q})
    check_in_unit_interval(tau, "level", closed=False)
    return finish(
        _pinball(y, q, tau),
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
    )


@dask_aware({"obs": None, "lower": None, "upper": None})
def interval_score(
    obs: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    level: float,
    *,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Interval score of a central prediction interval with nominal coverage ``level``.

    With ``a = 1 - level``:
    ``IS = (u - l) + 2/a (l - y) 1{y < l} + 2/a (y - u) 1{y > u}`` (Gneiting & Raftery
    2007, eq. 43); ``level=0.9`` scores a 5%-95% interval.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    lower, upper:
        Interval bounds, shapes broadcastable with ``obs``; ``lower <= upper``.
    level:
        Nominal coverage in (0, 1), e.g. ``0.9`` (as in ``Predictive.interval``).
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`quantile_score`.

    Returns
    -------
    Score of the broadcast shape without ``dim`` (0-d after a full reduction), of the
    caller's kind.

    References
    ----------
    Gneiting & Raftery (2007), "Strictly proper scoring rules, prediction, and estimation",
    JASA 102(477), section 6.2.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import interval_score
    >>> interval_score(torch.tensor([0.0, 3.0]), torch.tensor([-1.0, -1.0]),
    ...                torch.tensor([1.0, 1.0]), 0.9)
    tensor([ 2., 42.])
    """
    level = as_float(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a nominal coverage strictly in (0, 1)")
    (y, lo, hi), restore = prepare(obs, lower, upper, names=["obs", "lower", "upper"])
    check_nan_policy(nan_policy, {"obs": y, "lower": lo, "upper": hi})
    crossed = lo > hi
    if bool(crossed.any()):
        raise ValueError(
            f"lower > upper at {int(crossed.sum())} points (e.g. lower="
            f"{lo[crossed].flatten()[0].item()!r}, upper={hi[crossed].flatten()[0].item()!r}); "
            "expected lower <= upper"
        )
    scale = 2.0 / (1.0 - float(level))
    below = torch.clamp(lo - y, min=0.0)
    above = torch.clamp(y - hi, min=0.0)
    score = (hi - lo) + scale * (below + above)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware(
    {"obs": None, "quantiles": "quantile_dim"},
    default_dims={"quantile_dim": "quantile"},
)
def crps_quantile(
    obs: ArrayLike,
    quantiles: ArrayLike,
    levels: ArrayLike,
    *,
    quantile_dim: int | str = -1,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """CRPS approximated from forecast quantiles: twice the average pinball loss.

    ``CRPS(F, y) = 2 int_0^1 QS_tau(F^-1(tau), y) dtau``, approximated by
    ``2/K sum_k QS_tau_k(q_k, y)``. This is an **approximation**: a midpoint rule in
    ``tau`` that converges to the CRPS as the levels densify; use evenly spaced levels such
    as ``tau_k = (k - 1/2)/K``. It equals scoringrules' ``crps_quantile``.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    quantiles:
        Forecast quantiles, shape ``(*batch, K)`` with the K levels on ``quantile_dim``.
    levels:
        The K quantile levels in (0, 1), shape ``(K,)``.
    quantile_dim:
        Quantile axis of ``quantiles`` (default last). For ``xarray.DataArray`` input a dim
        name; the default ``-1`` means ``"quantile"``.
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`quantile_score`.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Laio & Tamea (2007), "Verification tools for probabilistic forecasts of continuous
    hydrological variables", HESS 11(4); Gneiting & Ranjan (2011), JBES 29(3).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import crps_quantile
    >>> crps_quantile(torch.tensor([0.0]), torch.tensor([[-1.0, 0.0, 1.0]]),
    ...               torch.tensor([0.25, 0.5, 0.75]))
    tensor([0.3333])
    """
    qdim = _resolve_core_dim(quantiles, quantile_dim, -1, "quantile_dim", "quantile")
    if is_xarray(levels):
        levels = levels.values
    (y, q), restore = prepare(obs, quantiles, names=["obs", "quantiles"], core=[None, qdim])
    tau = torch.as_tensor(np.asarray(levels) if not isinstance(levels, Tensor) else levels).to(
        device=q.device, dtype=q.dtype
    )
    if tau.dim() != 1 or tau.shape[0] != q.shape[-1] or tau.shape[0] == 0:
        raise ValueError(
            f"levels has shape {tuple(tau.shape)} and quantiles has {q.shape[-1]} quantiles on "
            f"quantile_dim; expected non-empty levels of shape ({q.shape[-1]},)"
        )
    check_in_unit_interval(tau, "levels", closed=False)
    check_nan_policy(nan_policy, {"obs": y, "quantiles": q})
    score = 2.0 * _pinball(y.unsqueeze(-1), q, tau).mean(-1)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware(
    {"obs": None, "median": None, "lower": "interval_dim", "upper": "interval_dim"},
    default_dims={"interval_dim": "interval"},
)
def weighted_interval_score(
    obs: ArrayLike,
    median: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    alpha: ArrayLike,
    *,
    interval_dim: int | str = -1,
    w_median: float = 0.5,
    w_alpha: ArrayLike | None = None,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Weighted interval score of a median and ``K`` central prediction intervals.

    ``WIS = 1/(K + 1/2) (w_0 |y - m| + sum_k w_k IS_{alpha_k}(l_k, u_k; y))`` with
    ``IS_alpha`` the interval score of the central ``1 - alpha`` interval (see
    :func:`interval_score`; ``level = 1 - alpha``). The canonical weights ``w_0 = 1/2``,
    ``w_k = alpha_k / 2`` (the defaults) make it the sum of the pinball losses of the
    ``2K + 1`` quantiles ``m, l_k, u_k`` divided by ``K + 1/2``, i.e. exactly
    :func:`crps_quantile` at those levels and an approximation of the CRPS. Same definition
    and defaults as scoringrules' ``weighted_interval_score``.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    median:
        Forecast medians, broadcastable with ``obs``.
    lower, upper:
        Interval bounds, shape ``(*batch, K)`` with the intervals on ``interval_dim``;
        ``lower <= upper``.
    alpha:
        The ``K`` levels ``alpha_k`` in (0, 1), shape ``(K,)``: the interval ``k`` is the
        central ``1 - alpha_k`` interval (quantiles ``alpha_k/2`` and ``1 - alpha_k/2``).
    interval_dim:
        Interval axis of ``lower``/``upper`` (for xarray a dim name; the default ``-1`` means
        ``"interval"``).
    w_median, w_alpha:
        Weight of the median term and the ``K`` interval weights (default ``alpha / 2``).
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`quantile_score`.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Bracher, Ray, Gneiting & Reich (2021), "Evaluating epidemic forecasts in an interval
    format", PLoS Comput. Biol. 17(2), e1008618, eq. (2)-(4).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.quantile import weighted_interval_score
    >>> weighted_interval_score(torch.tensor([0.0]), torch.tensor([0.0]),
    ...                         torch.tensor([[-1.0]]), torch.tensor([[1.0]]), [0.5])
    tensor([0.3333])
    """
    core = _resolve_core_dim(lower, interval_dim, -1, "interval_dim", "interval")
    core_u = _resolve_core_dim(upper, interval_dim, -1, "interval_dim", "interval")
    (y, m, lo, hi), restore = prepare(
        obs,
        median,
        lower,
        upper,
        names=["obs", "median", "lower", "upper"],
        core=[None, None, core, core_u],
    )
    k = lo.shape[-1]
    if hi.shape[-1] != k or k == 0:
        raise ValueError(
            f"lower has {k} intervals and upper {hi.shape[-1]} on interval_dim; expected one "
            "non-zero number of intervals"
        )

    def vector(value: Any, name: str) -> Tensor:
        value = value.values if is_xarray(value) else value
        t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
        t = t.to(device=lo.device, dtype=lo.dtype).reshape(-1) if t.dim() <= 1 else t
        if t.shape != (k,):
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} and lower/upper have {k} intervals; "
                f"expected shape ({k},)"
            )
        return t

    a = vector(alpha, "alpha")
    check_in_unit_interval(a, "alpha", closed=False)
    wk = a / 2 if w_alpha is None else vector(w_alpha, "w_alpha")
    w0 = as_float(w_median, "w_median", nonnegative=True)
    if bool((wk < 0).any()) or bool(torch.isnan(wk).any()):
        raise ValueError(f"w_alpha={wk.tolist()}; expected non-negative interval weights")
    check_nan_policy(nan_policy, {"obs": y, "median": m, "lower": lo, "upper": hi})
    crossed = lo > hi
    if bool(crossed.any()):
        raise ValueError(f"lower > upper at {int(crossed.sum())} entries; expected lower <= upper")
    yk = y.unsqueeze(-1)
    interval = (hi - lo) + (2.0 / a) * (
        torch.clamp(lo - yk, min=0.0) + torch.clamp(yk - hi, min=0.0)
    )
    score = (w0 * (y - m).abs() + (wk * interval).sum(-1)) / (k + 0.5)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )
