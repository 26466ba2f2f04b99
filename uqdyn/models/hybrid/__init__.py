"""Hybrid physics + neural dynamics with uncertainty (APHYNITY-style augmentation).

:class:`HybridDynamics` adds a network ``F_aug`` to a physical model ``F_phys`` (either may
be absent), optionally keeping conserved totals exact; :func:`fit_aphynity` trains it with
APHYNITY's adaptive Lagrangian (minimal augmentation subject to fitting the trajectories).
Uncertainty comes from a deep ensemble (:class:`HybridEnsemble`,
:func:`fit_hybrid_ensemble`; :meth:`HybridEnsemble.calibrate` fits its missing spread on
held-out trajectories) or a latent on the augmentation
(:class:`LatentHybridDynamics`); both forecast an :class:`~uqdyn.predictive.Ensemble` of
trajectories, members first.

Every model follows the :mod:`uqdyn.train` contract on a :class:`TrajectoryBatch` (times,
observed trajectories, mask): ``loss(batch)`` and ``predict_batch(batch)``, so
``uqdyn.train.fit(model, batches)`` trains it; :class:`Aphynity` is the constrained
objective that :func:`fit_aphynity` trains with one ``fit`` call.
"""

from .aphynity import Aphynity, AphynityResult, augmentation_norm, fit_aphynity, trajectory_loss
from .augmented import ConvAugmentation, HybridDynamics, MLPAugmentation
from .batch import TrajectoryBatch
from .ensemble import HybridEnsemble, fit_hybrid_ensemble
from .stochastic import LatentHybridDynamics

__all__ = [
    "HybridDynamics",
    "MLPAugmentation",
    "ConvAugmentation",
    "LatentHybridDynamics",
    "TrajectoryBatch",
    "Aphynity",
    "fit_aphynity",
    "AphynityResult",
    "augmentation_norm",
    "trajectory_loss",
    "HybridEnsemble",
    "fit_hybrid_ensemble",
]
