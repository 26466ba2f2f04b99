"""Data assimilation with uqdyn models: ensemble forecast operators for EnKF codes.

:class:`ForecastOperator` wraps any uqdyn dynamics (physics solver, hybrid model, neural ODE,
learned surrogate) as ``step(E, t, dt)`` on numpy ensembles ``(N, Nx)`` or single states
``(Nx,)``, integrating with torch on the CPU or GPU and optionally adding model-error draws
from a Predictive (a stochastic forecast). :func:`to_dapper` gives the ``Dyn`` mapping of a
DAPPER ``HiddenMarkovModel``, :func:`to_filterpy` the ``fx`` of filterpy's
``EnsembleKalmanFilter``, and :func:`realize_observation` turns a :mod:`uqdyn.observe`
operator into the linear ``H`` and ``R`` of a filter (:class:`LinearObservation`, with
``to_dapper()`` and ``hx``). :mod:`uqdyn.da.surrogate` holds a learned Lorenz-96 surrogate
and its model-error Predictive.

DAPPER (``pip install dapper``) and filterpy are optional (the ``da`` extra); this package
imports neither at import time.
"""

from uqdyn.da.adapters import to_dapper, to_filterpy
from uqdyn.da.forecast import ForecastOperator, rk4_classic
from uqdyn.da.observation import LinearObservation, realize_observation

__all__ = [
    "ForecastOperator",
    "rk4_classic",
    "to_dapper",
    "to_filterpy",
    "LinearObservation",
    "realize_observation",
]
