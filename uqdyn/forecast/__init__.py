"""Forecast evaluation on any dataset: origins, reference forecasts, skill with CIs.

* :func:`load_data` reads a series or field (xarray, pandas, CSV, netCDF, zarr) into a
  checked ``DataArray`` (times, duplicates, time zones, NaN = not observed);
* :func:`rolling_origins` cuts forecast origins with their context windows and targets at
  fixed lead times (:class:`Origins`), saying how many it dropped and why;
* :class:`Persistence`, :class:`Climatology` and :class:`DampedPersistence` are reference
  forecasts with ``fit(train_origins)`` and ``predict(origins)`` returning a labelled
  :class:`~uqdyn.predictive.Normal` over ``(origin, lead, *space)``;
* :func:`skill_score`, :func:`paired_difference` and :func:`mean_interval` give skill,
  score differences and mean scores with block-bootstrap confidence intervals.

Learned forecasters with the same ``fit``/``predict`` interface (GP, neural processes,
ConvCNP on grids) are in :mod:`uqdyn.models.forecasters`.
"""

from .inputs import load_data
from .origins import DROP_REASONS, Origins, last_observed, rolling_origins
from .references import SEASONS, Climatology, DampedPersistence, Persistence
from .skill import (
    block_bootstrap_indices,
    bootstrap_statistic,
    mean_interval,
    optimal_block_length,
    paired_difference,
    skill_score,
)

__all__ = [
    "load_data",
    "rolling_origins",
    "Origins",
    "last_observed",
    "DROP_REASONS",
    "Persistence",
    "Climatology",
    "DampedPersistence",
    "SEASONS",
    "skill_score",
    "paired_difference",
    "mean_interval",
    "bootstrap_statistic",
    "optimal_block_length",
    "block_bootstrap_indices",
]
