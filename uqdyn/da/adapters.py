"""Adapters from uqdyn forecast operators to DAPPER and filterpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from uqdyn._checks import as_float, is_real_scalar
from uqdyn.da.forecast import ForecastOperator

__all__ = ["FilterpyTransition", "to_dapper", "to_filterpy"]


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
    if is_real_scalar(noise):
        value = as_float(noise, "noise", finite=False)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"noise={noise!r}; expected a variance per unit time >= 0")
        if not isinstance(noise, (int, float)):
            noise = value  # a NumPy scalar or 0-d array/tensor: DAPPER takes a Python number
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


class _Replay:
    """filterpy's per-point ``fx`` serving forecasts computed beforehand in one batch."""

    def __init__(self, inputs: np.ndarray, outputs: np.ndarray) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.calls = 0

    def __call__(self, x: Any, dt: float, **_: Any) -> np.ndarray:
        i = self.calls
        if i >= len(self.inputs) or not np.array_equal(np.asarray(x), self.inputs[i]):
            raise RuntimeError(
                "filterpy asked for the forecast of a point that was not in the batch "
                f"(call {i} of {len(self.inputs)}); this filterpy version orders its sigma "
                "points differently, use the filter's own predict() with fx"
            )
        self.calls += 1
        return self.outputs[i].copy()


class FilterpyTransition:
    """A :class:`ForecastOperator` as filterpy's state transition, vectorised and timed.

    * ``fx(x, dt, t=None)`` is filterpy's ``fx(x, dt, **fx_args)``: one state ``(Nx,)`` or
      all sigma points / members at once ``(N, Nx)``, integrated from time ``t`` (default:
      the tracked time :attr:`t`). ``UnscentedKalmanFilter.predict(t=...)`` passes ``t``
      through to it.
    * :meth:`predict` runs the predict step of filterpy's ``EnsembleKalmanFilter`` or
      ``UnscentedKalmanFilter`` with **one batched forecast of all sigma points** (filterpy
      itself calls ``fx`` once per point), starting at ``t`` (default :attr:`t`), and then
      advances :attr:`t` by ``dt``. Everything else (process noise ``Q``, moments, priors)
      is the filter's own code, so the result equals the per-point loop.

    filterpy's ``EnsembleKalmanFilter.predict()`` passes no time: with its own loop every
    call starts at :attr:`t`, which only :meth:`predict` (or setting :attr:`t`) moves. That
    is exact for autonomous dynamics (Lorenz-96); for time-dependent dynamics use
    :meth:`predict`.

    Attributes
    ----------
    operator : ForecastOperator
    t : float
        Start time of the next forecast.
    """

    def __init__(self, operator: ForecastOperator, *, t0: float = 0.0) -> None:
        self.operator = _check_operator(operator)
        self.t = _check_time(t0, "t0")

    def __repr__(self) -> str:
        return f"FilterpyTransition({self.operator!r}, t={self.t:.6g})"

    def __call__(self, x: Any, dt: float, t: float | None = None, **fx_args: Any) -> np.ndarray:
        """Forecast ``x (Nx,)`` or ``(N, Nx)`` from ``t`` (default :attr:`t`) over ``dt``.

        Returns
        -------
        numpy.ndarray, float64, the shape of ``x``
        """
        if fx_args:
            raise TypeError(
                f"fx got unexpected keyword arguments {sorted(fx_args)}; expected only t="
            )
        start = self.t if t is None else _check_time(t, "t")
        return self.operator.step(x, start, dt)

    def predict(self, kf: Any, *, dt: float | None = None, t: float | None = None) -> None:
        """The predict step of a filterpy filter with one batched forecast of its points.

        Parameters
        ----------
        kf : filterpy.kalman.EnsembleKalmanFilter or UnscentedKalmanFilter
            Updated in place like ``kf.predict()`` (its ``x``, ``P``, sigma points and
            priors).
        dt : float, optional
            Time step; default the filter's (``kf.dt`` / ``kf._dt``). An
            ``EnsembleKalmanFilter`` always steps ``kf.dt``.
        t : float, optional
            Start time of the forecast; default :attr:`t`. Afterwards :attr:`t` is
            ``t + dt``.
        """
        from filterpy.kalman import EnsembleKalmanFilter, UnscentedKalmanFilter

        start = self.t if t is None else _check_time(t, "t")
        if isinstance(kf, EnsembleKalmanFilter):
            if dt is not None and not math.isclose(float(dt), float(kf.dt)):
                raise ValueError(
                    f"dt={dt!r} differs from the EnsembleKalmanFilter's dt={kf.dt!r}; "
                    "expected dt=None (filterpy's EnKF always steps kf.dt)"
                )
            step = float(kf.dt)
            points = np.array(kf.sigmas, dtype=np.float64)
            replay = _Replay(points, self.operator.step(points, start, step))
            own = kf.fx
            kf.fx = replay
            try:
                kf.predict()
            finally:
                kf.fx = own
        elif isinstance(kf, UnscentedKalmanFilter):
            step = float(kf._dt if dt is None else dt)
            points = np.array(kf.points_fn.sigma_points(kf.x, kf.P), dtype=np.float64)
            replay = _Replay(points, self.operator.step(points, start, step))
            kf.predict(dt=step, fx=replay)
        else:
            raise TypeError(
                f"kf is a {type(kf).__name__}; expected a filterpy EnsembleKalmanFilter or "
                "UnscentedKalmanFilter"
            )
        if replay.calls != len(points):
            raise RuntimeError(
                f"filterpy used {replay.calls} of the {len(points)} batched forecasts; "
                "expected all of them"
            )
        self.t = start + step


def _check_time(value: Any, name: str) -> float:
    return as_float(value, name)


def to_filterpy(operator: ForecastOperator, *, t0: float = 0.0) -> FilterpyTransition:
    """The state-transition function ``fx`` of filterpy's Kalman filters, vectorised.

    Returns a :class:`FilterpyTransition`: ``fx(x, dt, t=None)`` forecasts one state or a
    whole ensemble in one batched call; ``fx.predict(kf)`` runs the predict step of an
    ``EnsembleKalmanFilter`` or ``UnscentedKalmanFilter`` with one batched forecast of all
    sigma points and tracks the time (``fx.t``, from ``t0``), which non-autonomous dynamics
    need; a stochastic ``operator`` adds one model-error draw per point.

    Parameters
    ----------
    operator : ForecastOperator
    t0 : float
        Time of the first forecast.

    Returns
    -------
    FilterpyTransition
        ``fx(x (Nx,) or (N, Nx), dt, t=None) -> numpy array of the same shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from uqdyn.physics import Lorenz96
    >>> from uqdyn.da import ForecastOperator, to_filterpy
    >>> fx = to_filterpy(ForecastOperator(Lorenz96(40), max_step=0.01, device="cpu"))
    >>> fx(np.full(40, 8.0), 0.05).shape, fx(np.full((3, 40), 8.0), 0.05).shape
    ((40,), (3, 40))
    """
    return FilterpyTransition(operator, t0=t0)
