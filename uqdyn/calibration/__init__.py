"""Calibration of predictive distributions: diagnostics and post-hoc recalibration.

Diagnostics (:mod:`uqdyn.calibration.metrics`): :func:`pit`, :func:`rank_histogram`,
:func:`coverage`, :func:`reliability_curve`, :func:`miscalibration_area`,
:func:`spread_skill_ratio`, :func:`sharpness`. Recalibration fitted on a validation set
(:mod:`uqdyn.calibration.recalibrate`): :class:`IsotonicRecalibrator` (returns a
:class:`Recalibrated` predictive) and :class:`VarianceScaling` (returns the same family);
per group of points (:class:`GroupedRecalibrator`: lead time, region, any label), local in a
feature such as the forecast's own spread (:class:`LocalIsotonicRecalibrator`,
:class:`LocalVarianceScaling`), and chosen by cross-validated CRPS between raw, global,
local and grouped recalibration (:func:`select_recalibration`). :class:`Stitched` is the
Predictive of a batch whose points follow different recalibrations.

Verification diagnostics: CORP reliability diagrams and score decompositions
(:func:`corp_reliability`, :func:`corp_decomposition`, :func:`corp_crps_decomposition`;
Dimitriadis, Gneiting and Jordan 2021), Murphy diagrams (:func:`murphy_diagram`), and
mergeable accumulators of rank and PIT histograms and reliability curves.
"""

from .accumulate import PITHistogramAccumulator, RankHistogramAccumulator, ReliabilityAccumulator
from .corp import (
    CORPCRPSDecomposition,
    CORPDecomposition,
    CORPReliability,
    corp_crps_decomposition,
    corp_decomposition,
    corp_reliability,
    isotonic_fit,
)
from .grouped import GroupedRecalibrator
from .local import LocalIsotonicRecalibrator, LocalVarianceScaling
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
from .murphy import MurphyDiagram, elementary_score, murphy_diagram
from .recalibrate import IsotonicRecalibrator, NoRecalibration, VarianceScaling
from .recalibrated import Recalibrated
from .selection import CANDIDATES, GroupChoice, RecalibrationSelection, select_recalibration
from .stitched import Stitched

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
    "NoRecalibration",
    "Recalibrated",
    "Stitched",
    "GroupedRecalibrator",
    "LocalIsotonicRecalibrator",
    "LocalVarianceScaling",
    "select_recalibration",
    "RecalibrationSelection",
    "GroupChoice",
    "CANDIDATES",
    "corp_reliability",
    "CORPReliability",
    "corp_decomposition",
    "CORPDecomposition",
    "corp_crps_decomposition",
    "CORPCRPSDecomposition",
    "isotonic_fit",
    "murphy_diagram",
    "MurphyDiagram",
    "elementary_score",
    "RankHistogramAccumulator",
    "PITHistogramAccumulator",
    "ReliabilityAccumulator",
]
