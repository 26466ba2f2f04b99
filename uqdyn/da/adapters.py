"""Adapters from uqdyn forecast operators to DAPPER and filterpy."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from uqdyn.da.forecast import ForecastOperator

__all__ = ["to_dapper", "to_filterpy"]


def _check_operator(operator: Any) -> ForecastOperator:
    if not isinstance(operator, ForecastOperator):
        raise TypeError(
            f"operator is a {type(operator).__name__}; expected a uqdyn.da.ForecastOperator"
        )
    return operator


def to_dapper(
    operator: ForecastOperator, *, noise: Any = 0, linear: bool = False
) -> dict[str, Any]:
    """The ``Dyn`` mapping of a DAPPER ``HiddenMarkovModel`` running ``operator``.

    DAPPER calls ``Dyn["model"](x, t, dt)`` with one state ``(Nx,)`` (truth simulation) or an
    ensemble ``(N, Nx)`` (filters) and then adds ``sqrt(dt)`` times a draw of ``noise``, a
    Gaussian with covariance *per unit time*. A stochastic ``operator`` already adds its
    model error inside ``step``, so the default ``noise=0`` leaves DAPPER's additive noise
    off; pass a covariance to use DAPPER's own treatment (``fnoise_treatm``) instead or in
    addition.

    Parameters
    ----------
    operator : ForecastOperator
    noise : float, array or dapper RV
        Model-noise covariance per unit time, as DAPPER takes it: ``0`` (none, default), a
        scalar variance, a ``(Nx,)`` diagonal or an ``(Nx, Nx)`` covariance, or a DAPPER
        ``RV``.
    linear : bool
        Also provide ``Dyn["linear"](x, t, dt)``, the Jacobian ``(Nx, Nx)`` of the
        deterministic step (:meth:`ForecastOperator.jacobian`), needed by DAPPER's extended
        Kalman filter and 4D-Var.

    Returns
    -------
    dict
        ``{"M": Nx, "model": operator.step, "noise": noise}`` (and ``"linear"``), to pass as
        ``HiddenMarkovModel(Dyn, Obs, tseq, X0)``.

    Examples
    --------
    >>> from uqdyn.physics import Lorenz96
    >>> from uqdyn.da import ForecastOperator, to_dapper
    >>> Dyn = to_dapper(ForecastOperator(Lorenz96(40), device="cpu"))
    >>> Dyn["M"], Dyn["noise"]
    (40, 0)
    """
    operator = _check_operator(operator)
    nx = operator.state_dim
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise={noise!r}; expected a variance per unit time >= 0")
    elif isinstance(noise, np.ndarray):
        if noise.shape not in ((nx,), (nx, nx)):
            raise ValueError(
                f"noise has shape {noise.shape}; expected ({nx},) or ({nx}, {nx}) for Nx = {nx}"
            )
        if not np.isfinite(noise).all():
            raise ValueError("noise holds non-finite values; expected a finite covariance")
    elif not (hasattr(noise, "sample") and hasattr(noise, "C")):
        raise TypeError(
            f"noise is a {type(noise).__name__}; expected 0, a float, an array or a DAPPER RV"
        )
    dyn: dict[str, Any] = {"M": nx, "model": operator.step, "noise": noise}
    if linear:
        dyn["linear"] = operator.jacobian
    return dyn


def to_filterpy(operator: ForecastOperator, *, t0: float = 0.0) -> Callable[..., np.ndarray]:
    """The state-transition function ``fx(x, dt)`` of filterpy's ``EnsembleKalmanFilter``.

    filterpy calls ``fx(sigma, dt)`` once per member with a state ``(Nx,)``; ``fx`` also
    accepts an ensemble ``(N, Nx)``. filterpy passes no time, so every call starts at ``t0``
    (exact for autonomous dynamics such as Lorenz-96); a stochastic ``operator`` adds one
    model-error draw per call.

    Parameters
    ----------
    operator : ForecastOperator
    t0 : float
        Time passed to the dynamics.

    Returns
    -------
    callable
        ``fx(x (Nx,) or (N, Nx), dt) -> numpy array of the same shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from uqdyn.physics import Lorenz96
    >>> from uqdyn.da import ForecastOperator, to_filterpy
    >>> fx = to_filterpy(ForecastOperator(Lorenz96(40), device="cpu"))
    >>> fx(np.full(40, 8.0), 0.05).shape
    (40,)
    """
    operator = _check_operator(operator)
    if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not math.isfinite(t0):
        raise ValueError(f"t0={t0!r}; expected a finite float")

    def fx(x: Any, dt: float) -> np.ndarray:
        return operator.step(x, float(t0), dt)

    return fx
