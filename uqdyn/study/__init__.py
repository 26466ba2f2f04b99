"""Calibration studies: simulate, fit, forecast, recalibrate, score and report.

``uqdyn study NAME`` and :func:`run` run one of :data:`STUDIES` end to end and write into
the output directory a report (``report.md`` and a self-contained ``report.html``) with its
figures, the test forecasts as CF-style netCDF (``forecasts/<model>.nc``) and the scores
(``scores.csv``, ``scores.nc``). Configurations come from TOML defaults shipped with the
package (:func:`default_config`), a user file and ``key=value`` overrides
(:func:`load_config`); unknown keys are rejected with the list of valid ones, and every
value is checked when the configuration is built. The learned models of every study come
from one registry of recipes (:data:`RECIPES`).

Examples
--------
>>> from uqdyn.study import load_config, run
>>> cfg = load_config("advection-diffusion", quick=True, out="ad-study")  # doctest: +SKIP
>>> scores = run(cfg)  # doctest: +SKIP
>>> scores["crps"].sel(calibration="raw").to_series()  # doctest: +SKIP
"""

from .base import ModelForecast, StudyData
from .config import STUDIES, StudyConfig, default_config, load_config, parse_override, valid_keys
from .evaluate import CALIBRATIONS, evaluate
from .recipes import RECIPES, Recipe
from .runner import run

__all__ = [
    "STUDIES",
    "StudyConfig",
    "load_config",
    "default_config",
    "valid_keys",
    "parse_override",
    "run",
    "evaluate",
    "CALIBRATIONS",
    "RECIPES",
    "Recipe",
    "ModelForecast",
    "StudyData",
]
