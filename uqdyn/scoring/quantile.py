"""Quantile (pinball) loss, interval score and the CRPS approximated from quantiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, is_xarray, prepare
from uqdyn._checks import as_float

from ._common import check_in_unit_interval, finish
from ._common import resolve_core_dim as _resolve_core_dim

__all__ = ["quantile_score", "interval_score", "crps_quantile"]


def _pinball(y: Tensor, q: Tensor, tau: Tensor) -> Tensor:
    """``(1{y < q} - tau) (q - y)``; NaN where ``y`` or ``q`` is NaN."""
    below = (y < q).to(q.dtype)
    return (below - tau) * (q - y)


def quantile_score(
    obs: ArrayLike,
    forecast_quantile: ArrayLike,
    level: ArrayLike,
    *,
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
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over all points,
        ignoring NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape (0-d after a reduction), of the caller's kind.

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
    check_in_unit_interval(tau, "level", closed=False)
    return finish(_pinball(y, q, tau), restore, reduction, skipna, mask)


def interval_score(
    obs: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    level: float,
    *,
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
    reduction, skipna, mask:
        As in :func:`quantile_score`.

    Returns
    -------
    Score of the broadcast shape (0-d after a reduction), of the caller's kind.

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
    return finish(score, restore, reduction, skipna, mask)


def crps_quantile(
    obs: ArrayLike,
    quantiles: ArrayLike,
    levels: ArrayLike,
    *,
    quantile_dim: int | str = -1,
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
    reduction, skipna, mask:
        As in :func:`quantile_score`.

    Returns
    -------
    Score of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

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
    score = 2.0 * _pinball(y.unsqueeze(-1), q, tau).mean(-1)
    return finish(score, restore, reduction, skipna, mask)
