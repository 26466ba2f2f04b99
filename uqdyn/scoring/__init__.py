"""Proper scoring rules for probabilistic forecasts, as pure functions.

Every score takes the observation first and the forecast second (as properscoring and
scoringrules do), accepts torch tensors, numpy arrays or ``xarray.DataArray`` and answers in
the same kind, runs in torch on the device and dtype of its inputs (integers, lists and
Python numbers in float64; float16 and bfloat16 in float32), and returns the pointwise
score unless ``dim=`` (with optional ``weights=``, e.g. cos-latitude area weights) or
``reduction="mean"``/``"sum"`` asks for a reduction. ``nan_policy`` is ``"propagate"``,
``"omit"`` or ``"raise"``. Dask-backed DataArrays give lazy results.

Ensemble CRPS estimators differ between tools: ``crps_ensemble(..., estimator="nrg")`` is the
standard CRPS of properscoring and xskillscore, ``estimator="fair"`` the unbiased CRPS that
WeatherBench 2 reports (docs/scoring.md has the table of names across tools).

Families: CRPS of ensembles, closed-form and parametric distributions, quantiles and
intervals; threshold- and outcome-weighted CRPS; log and Dawid-Sebastiani scores;
multivariate energy and variogram scores; probability scores of events and categories
(Brier, fair Brier, RPS, ROC, contingency scores); the fractions skill score of fields;
Hersbach's CRPS decomposition; mergeable accumulators for scoring batch by batch.
"""

from ._lazy import dask_aware, is_dask_backed
from .accumulate import EventReliability, EventReliabilityAccumulator, ScoreAccumulator
from .categorical import fair_brier_score, rps, rps_probabilities
from .crps_closed import crps, crps_mixture, crps_normal
from .crps_ensemble import crps_ensemble, crps_ensemble_components
from .crps_parametric import (
    crps_censored_normal,
    crps_gamma,
    crps_logistic,
    crps_lognormal,
    crps_truncated_normal,
)
from .decomposition import CRPSDecomposition, crps_decomposition, hersbach_bins
from .logscore import log_score, log_score_normal
from .moments import dss, dss_ensemble, dss_ensemble_multivariate
from .multivariate import energy_score, variogram_score
from .quantile import crps_quantile, interval_score, quantile_score, weighted_interval_score
from .roc import roc_auc, roc_curve
from .spatial import fss
from .threshold import brier_score, contingency_scores, threshold_brier_score
from .weighted import owcrps_ensemble, twcrps_ensemble, twcrps_normal, vrcrps_ensemble

__all__ = [
    "dask_aware",
    "is_dask_backed",
    "crps",
    "crps_normal",
    "crps_mixture",
    "crps_ensemble",
    "crps_ensemble_components",
    "crps_logistic",
    "crps_lognormal",
    "crps_gamma",
    "crps_censored_normal",
    "crps_truncated_normal",
    "crps_quantile",
    "twcrps_ensemble",
    "owcrps_ensemble",
    "vrcrps_ensemble",
    "twcrps_normal",
    "energy_score",
    "variogram_score",
    "interval_score",
    "weighted_interval_score",
    "quantile_score",
    "log_score",
    "log_score_normal",
    "dss",
    "dss_ensemble",
    "dss_ensemble_multivariate",
    "brier_score",
    "fair_brier_score",
    "threshold_brier_score",
    "rps",
    "rps_probabilities",
    "roc_curve",
    "roc_auc",
    "contingency_scores",
    "fss",
    "crps_decomposition",
    "CRPSDecomposition",
    "hersbach_bins",
    "ScoreAccumulator",
    "EventReliabilityAccumulator",
    "EventReliability",
]
