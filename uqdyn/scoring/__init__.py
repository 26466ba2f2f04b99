"""Proper scoring rules for probabilistic forecasts, as pure functions.

Every score takes the observation first and the forecast second (as properscoring and
scoringrules do), accepts torch tensors, numpy arrays or ``xarray.DataArray`` and answers in
the same kind, runs in torch on the device and dtype of its inputs, and returns the pointwise
score unless ``reduction="mean"`` or ``"sum"`` is asked for.

Ensemble CRPS estimators differ between tools: ``crps_ensemble(..., estimator="nrg")`` is the
standard CRPS of properscoring and xskillscore, ``estimator="fair"`` the unbiased CRPS that
WeatherBench 2 reports.
"""

from .crps_closed import crps, crps_mixture, crps_normal
from .crps_ensemble import crps_ensemble, crps_ensemble_components
from .logscore import log_score, log_score_normal
from .multivariate import energy_score, variogram_score
from .quantile import crps_quantile, interval_score, quantile_score
from .threshold import brier_score, contingency_scores, threshold_brier_score

__all__ = [
    "crps",
    "crps_normal",
    "crps_mixture",
    "crps_ensemble",
    "crps_ensemble_components",
    "crps_quantile",
    "energy_score",
    "variogram_score",
    "interval_score",
    "quantile_score",
    "log_score",
    "log_score_normal",
    "brier_score",
    "threshold_brier_score",
    "contingency_scores",
]
