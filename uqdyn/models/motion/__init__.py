"""Learned motion-field forecasting of transported fields (de Bezenac et al., ICLR 2018).

:class:`MotionFieldForecaster` estimates a motion field ``w`` (and a diffusion ``D``) from the
last frames with a periodic U-Net and moves the current frame with the semi-Lagrangian
:func:`uqdyn.physics.warp`; it is trained end to end on the next frames only, with the
divergence, magnitude and smoothness regularisers of :func:`motion_penalties` (its
:class:`ForecastLoss`, set by its constructor). :class:`ConvForecaster` is the plain
convolutional baseline of the same size. Every forecaster follows the training contract:
``uqdyn.train.fit(model, window_sampler(...), steps=...)`` trains it with its own
``loss(batch)`` and validates it with ``predict_batch(batch)`` (a
:class:`~uqdyn.predictive.Normal` from its training errors); :class:`ForecasterEnsemble`
(:func:`fit_forecaster_ensemble`, one fit per seed) turns several seeds into an
:class:`~uqdyn.predictive.Ensemble` of forecast frames.

The simulated training data (:func:`simulate_transport`) and the true-physics reference
(:func:`physics_rollout`) live in :mod:`uqdyn.data.motion`; they are re-exported here.
"""

from uqdyn.data.motion import (
    TransportData,
    divergence_free_velocity,
    physics_rollout,
    random_smooth_field,
    simulate_transport,
)

from .forecaster import (
    ConvForecaster,
    ForecastLoss,
    ForecastStep,
    FrameForecaster,
    MotionFieldForecaster,
    Rollout,
)
from .networks import PeriodicUNet
from .regularizers import MotionPenalties, divergence, motion_penalties
from .training import ForecasterEnsemble, fit_forecaster_ensemble, window_sampler

__all__ = [
    "MotionFieldForecaster",
    "ConvForecaster",
    "FrameForecaster",
    "ForecastStep",
    "Rollout",
    "PeriodicUNet",
    "ForecastLoss",
    "ForecasterEnsemble",
    "fit_forecaster_ensemble",
    "window_sampler",
    "MotionPenalties",
    "divergence",
    "motion_penalties",
    "TransportData",
    "random_smooth_field",
    "divergence_free_velocity",
    "simulate_transport",
    "physics_rollout",
]
