"""Dynamics that generalise across environments and adapt to a new one from few trajectories.

An *environment* is one setting of a system's physical parameters (another drag, another
diffusion). :class:`LEADS` learns a shared vector field plus a small part per environment;
:class:`CoDA` decodes a low-dimensional context vector per environment into the weights of
one network through a linear hypernetwork, so a new environment is fitted by its context
alone. :class:`OneForAll` (and its fine-tuning :meth:`~OneForAll.adapt`) and
:class:`OnePerEnv` are the baselines. All of them wrap any vector-field network (optionally
added to a physical :class:`~uqdyn.physics.Dynamics`), follow the :mod:`uqdyn.train`
contract on an :class:`EnvironmentBatch` and adapt with ``adapt(batch)``; forecasts are
:class:`~uqdyn.predictive.Normal` around the rollout. :func:`environment_batch` turns a
:func:`uqdyn.data.multi_environment` dataset into a batch.

Uncertainty for a new environment: :func:`context_laplace` (a Laplace posterior of a CoDA
context) and :func:`context_ensemble` turn it into an :class:`~uqdyn.predictive.Ensemble`,
:func:`ensemble_forecast` makes a deep ensemble of several models;
:func:`fit_parameter_map` maps contexts to physical parameters.
"""

from .base import MultiEnvironmentModel
from .baselines import OneForAll, OnePerEnv
from .batch import EnvironmentBatch, environment_batch
from .coda import CoDA
from .leads import LEADS
from .uncertainty import (
    ContextPosterior,
    ParameterMap,
    context_ensemble,
    context_laplace,
    ensemble_forecast,
    fit_parameter_map,
)

__all__ = [
    "MultiEnvironmentModel",
    "LEADS",
    "CoDA",
    "OneForAll",
    "OnePerEnv",
    "EnvironmentBatch",
    "environment_batch",
    "ContextPosterior",
    "context_laplace",
    "context_ensemble",
    "ensemble_forecast",
    "ParameterMap",
    "fit_parameter_map",
]
