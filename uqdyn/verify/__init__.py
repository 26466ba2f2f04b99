"""Verification of archived forecasts against observations (``uqdyn verify``).

:func:`verify_files` opens a forecast archive and an observation archive (netCDF or zarr,
lazily), aligns them (:func:`align`: identical labels on shared dims, or valid time =
``init_time + lead``), scores an ensemble, quantile or Gaussian forecast one slice at a time
(:func:`verify`: CRPS, spread-skill ratio, coverage, rank histogram; averaged over chosen
dims with optional cosine-latitude weights, one row per label of the other dims) and writes
``scores.csv``, ``scores.nc``, figures and ``report.html``.
"""

from .files import verify_files
from .io import Forecast, align, open_archive, read_forecast, read_observations
from .run import LEVELS, MAX_VALUES, VerifyResult, coslat_weights, score_rows, verify

__all__ = [
    "verify_files",
    "verify",
    "VerifyResult",
    "Forecast",
    "open_archive",
    "read_forecast",
    "read_observations",
    "align",
    "coslat_weights",
    "score_rows",
    "LEVELS",
    "MAX_VALUES",
]
