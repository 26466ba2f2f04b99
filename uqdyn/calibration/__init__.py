"""Calibration of predictive distributions: diagnostics and post-hoc recalibration.

Diagnostics (:mod:`uqdyn.calibration.metrics`): :func:`pit`, :func:`rank_histogram`,
:func:`coverage`, :func:`reliability_curve`, :func:`miscalibration_area`,
:func:`spread_skill_ratio`, :func:`sharpness`. Recalibration fitted on a validation set
(:mod:`uqdyn.calibration.recalibrate`): :class:`IsotonicRecalibrator` (returns a
:class:`Recalibrated` predictive) and :class:`VarianceScaling` (returns the same family).
"""

from .metrics import (
    ReliabilityCurve,
    coverage,
    miscalibration_area,
    pit,
    rank_histogram,
    reliability_curve,
    sharpness,
    spread_skill_ratio,
)
from .recalibrate import IsotonicRecalibrator, VarianceScaling
from .recalibrated import Recalibrated

__all__ = [
    "pit",
    "rank_histogram",
    "coverage",
    "reliability_curve",
    "ReliabilityCurve",
    "miscalibration_area",
    "spread_skill_ratio",
    "sharpness",
    "IsotonicRecalibrator",
    "VarianceScaling",
    "Recalibrated",
]
