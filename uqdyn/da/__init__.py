"""Data assimilation with uqdyn models: ensemble forecast operators and observation adapters.

:class:`ForecastOperator` wraps any uqdyn dynamics (physics solver, hybrid model, neural ODE,
learned surrogate) as ``step(E, t, dt)`` on numpy ensembles ``(N, Nx)`` or single states
``(Nx,)``, integrating with torch on the CPU or GPU in steps no longer than the dynamics'
stability limit (or :data:`~uqdyn.da.forecast.DEFAULT_MAX_STEP`, with a warning, for a
dynamics that declares none), optionally adding model-error draws from a Predictive (a
stochastic forecast). :func:`to_dapper` gives the ``Dyn`` mapping of a DAPPER
``HiddenMarkovModel``; :func:`to_filterpy` the ``fx`` of filterpy's ensemble and unscented
Kalman filters (:class:`FilterpyTransition`: one batched forecast of all sigma points, time
tracked for non-autonomous dynamics).

Observations: :func:`realize_observation` turns a :mod:`uqdyn.observe` operator into a linear
``H`` (:class:`LinearObservation`); :class:`NonlinearObservation` takes any vectorised
``h(E)``; both take independent or full, correlated error covariances ``R`` and give
DAPPER's ``Obs`` mapping with the localizer its local filters (LETKF) need, and filterpy's
``hx`` and ``R``.

The learned Lorenz-96 surrogate lives in :mod:`uqdyn.models.surrogate` and its training
pairs in :mod:`uqdyn.data.pairs` (re-exported from ``uqdyn.da.surrogate`` for old imports).

DAPPER (``pip install dapper``) and filterpy are optional (the ``da`` extra); this package
imports neither at import time.
"""

from uqdyn.da.adapters import FilterpyTransition, to_dapper, to_filterpy
from uqdyn.da.forecast import DEFAULT_MAX_STEP, ForecastOperator, rk4_classic
from uqdyn.da.observation import (
    LinearObservation,
    NonlinearObservation,
    check_covariance,
    realize_observation,
)

__all__ = [
    "DEFAULT_MAX_STEP",
    "ForecastOperator",
    "rk4_classic",
    "to_dapper",
    "to_filterpy",
    "FilterpyTransition",
    "LinearObservation",
    "NonlinearObservation",
    "check_covariance",
    "realize_observation",
]
