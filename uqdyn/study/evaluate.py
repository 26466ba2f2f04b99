"""Scores of every model, raw and recalibrated on the validation split, as one xarray Dataset."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from uqdyn.calibration import (
    IsotonicRecalibrator,
    VarianceScaling,
    coverage,
    miscalibration_area,
    pit,
    rank_histogram,
    reliability_curve,
    spread_skill_ratio,
)
from uqdyn.predictive import Ensemble, Predictive

from .base import StudyData, generator

__all__ = ["CALIBRATIONS", "evaluate", "SCALAR_SCORES"]

#: Calibration variants: the raw forecast and the two recalibrations fitted on validation.
CALIBRATIONS = ("raw", "variance_scaling", "isotonic")

#: Scalar scores per (model, calibration), with a description for the report.
SCALAR_SCORES: dict[str, str] = {
    "crps": "mean CRPS (lower is better)",
    "rmse": "RMSE of the predictive mean",
    "coverage90": "fraction of observations inside the central 90% interval (nominal 0.9)",
    "spread_skill": "spread-skill ratio (1 is calibrated, < 1 over-confident)",
    "miscalibration_area": "area between the reliability curve and the diagonal",
    "sharpness": "mean predictive standard deviation",
}


def _rank_members(pred: Predictive, n: int, g: torch.Generator) -> Tensor:
    """``(n, *batch_shape)`` exchangeable draws: the first members of an ensemble, else samples."""
    if isinstance(pred, Ensemble) and pred.weights is None and pred.n_members >= n:
        return pred.members[:n]
    with torch.no_grad():
        return pred.sample(n, generator=g)


def _spread_skill_bins(pred: Predictive, obs: Tensor, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """RMS spread and RMSE of the mean in ``bins`` equally populated bins of the spread."""
    var = pred.variance.reshape(-1).double()
    err = (pred.mean - obs).reshape(-1).double().square()
    order = torch.argsort(var)
    spread, skill = np.full(bins, np.nan), np.full(bins, np.nan)
    for i, chunk in enumerate(torch.tensor_split(order, bins)):
        if chunk.numel():
            spread[i] = float(var[chunk].mean().sqrt())
            skill[i] = float(err[chunk].mean().sqrt())
    return spread, skill


def evaluate(
    data: StudyData, settings: dict[str, Any], seed: int
) -> tuple[xr.Dataset, dict[str, dict[str, Predictive]]]:
    """Score every model of ``data`` on the test cases, raw and recalibrated.

    Parameters
    ----------
    data:
        The study's observations and forecasts.
    settings:
        The ``evaluation`` table: ``coverage_levels``, ``rank_members``, ``pit_bins``,
        ``spread_bins``, ``isotonic_nodes``.
    seed:
        Seed of the randomized PIT, rank ties and samples.

    Returns
    -------
    scores:
        Dataset with dims ``model`` and ``calibration`` and the variables of
        :data:`SCALAR_SCORES`; ``crps_by_lead (model, calibration, <lead dim>)``;
        ``coverage (.., level)``; ``reliability (.., quantile)``; ``pit_histogram
        (.., pit_bin)``; ``rank_histogram (.., rank)``; ``spread_binned`` and
        ``rmse_binned (.., spread_bin)``; ``fit_seconds (model)`` and
        ``variance_scale (model)``.
    predictives:
        ``{model: {calibration: test Predictive}}``.
    """
    levels = [float(v) for v in settings["coverage_levels"]]
    n_rank = int(settings["rank_members"])
    n_pit = int(settings["pit_bins"])
    n_spread = int(settings["spread_bins"])
    n_nodes = int(settings["isotonic_nodes"])
    rel_levels = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    obs_v, obs_t = data.obs_valid, data.obs_test
    lead_dim = data.lead_dim
    n_lead = obs_t.shape[1]
    models = [f.name for f in data.forecasts]
    shape2 = (len(models), len(CALIBRATIONS))

    def empty(*extra: int) -> np.ndarray:
        return np.full(shape2 + extra, np.nan)

    out: dict[str, np.ndarray] = {name: empty() for name in SCALAR_SCORES}
    out["crps_by_lead"] = empty(n_lead)
    out["coverage"] = empty(len(levels))
    out["reliability"] = empty(len(rel_levels))
    out["pit_histogram"] = empty(n_pit)
    out["rank_histogram"] = empty(n_rank + 1)
    out["spread_binned"] = empty(n_spread)
    out["rmse_binned"] = empty(n_spread)
    scales = np.full(len(models), np.nan)
    predictives: dict[str, dict[str, Predictive]] = {}
    for i, fc in enumerate(data.forecasts):
        scaler = VarianceScaling().fit(obs_v, fc.valid)
        scales[i] = float(scaler.scale) if scaler.scale is not None else math.nan
        iso = IsotonicRecalibrator(n_nodes=n_nodes).fit(
            obs_v, fc.valid, generator=generator(seed, 501 + i)
        )
        variants = {
            "raw": fc.test,
            "variance_scaling": scaler.transform(fc.test),
            "isotonic": iso.transform(fc.test),
        }
        predictives[fc.name] = variants
        for j, cal in enumerate(CALIBRATIONS):
            pred = variants[cal]
            g = generator(seed, 1000 + 10 * i + j)
            with torch.no_grad():
                crps = pred.crps(obs_t).double()
                mean = pred.mean.double()
                out["crps"][i, j] = float(crps.mean())
                out["crps_by_lead"][i, j] = crps.transpose(0, 1).reshape(n_lead, -1).mean(1).numpy()
                out["rmse"][i, j] = float((mean - obs_t).square().mean().sqrt())
                out["sharpness"][i, j] = float(pred.stddev.double().mean())
                out["coverage"][i, j] = np.asarray(coverage(obs_t, pred, levels), dtype=float)
                out["coverage90"][i, j] = float(coverage(obs_t, pred, 0.9))
                out["spread_skill"][i, j] = float(spread_skill_ratio(obs_t, pred))
                out["miscalibration_area"][i, j] = float(
                    miscalibration_area(obs_t, pred, generator=g)
                )
                curve = reliability_curve(obs_t, pred, rel_levels, generator=g)
                out["reliability"][i, j] = np.asarray(curve.observed, dtype=float)
                pits = pit(obs_t, pred, generator=g).reshape(-1)
                hist = torch.histc(pits.double(), bins=n_pit, min=0.0, max=1.0)
                out["pit_histogram"][i, j] = (hist / hist.sum() * n_pit).numpy()
                ranks = rank_histogram(obs_t, Ensemble(_rank_members(pred, n_rank, g)), generator=g)
                counts = np.asarray(ranks, dtype=float)
                out["rank_histogram"][i, j] = counts / counts.sum() * (n_rank + 1)
                spread, skill = _spread_skill_bins(pred, obs_t, n_spread)
                out["spread_binned"][i, j], out["rmse_binned"][i, j] = spread, skill
    base_dims = ("model", "calibration")
    variables: dict[str, Any] = {
        name: (base_dims, out[name], {"long_name": desc}) for name, desc in SCALAR_SCORES.items()
    }
    variables["crps_by_lead"] = (
        (*base_dims, lead_dim),
        out["crps_by_lead"],
        {"long_name": f"mean CRPS per {lead_dim}"},
    )
    variables["coverage"] = (
        (*base_dims, "level"),
        out["coverage"],
        {"long_name": "observed coverage of the central intervals"},
    )
    variables["reliability"] = (
        (*base_dims, "quantile"),
        out["reliability"],
        {"long_name": "observed frequency of PIT <= quantile level"},
    )
    variables["pit_histogram"] = (
        (*base_dims, "pit_bin"),
        out["pit_histogram"],
        {"long_name": "PIT histogram density (1 = uniform)"},
    )
    variables["rank_histogram"] = (
        (*base_dims, "rank"),
        out["rank_histogram"],
        {"long_name": f"rank histogram density among {n_rank} draws (1 = flat)"},
    )
    variables["spread_binned"] = (
        (*base_dims, "spread_bin"),
        out["spread_binned"],
        {"long_name": "RMS predictive spread per bin of spread"},
    )
    variables["rmse_binned"] = (
        (*base_dims, "spread_bin"),
        out["rmse_binned"],
        {"long_name": "RMSE of the mean per bin of spread"},
    )
    variables["fit_seconds"] = (
        ("model",),
        np.array([f.fit_seconds for f in data.forecasts]),
        {"long_name": "wall time of fitting and forecasting", "units": "s"},
    )
    variables["variance_scale"] = (
        ("model",),
        scales,
        {"long_name": "variance-scaling factor s fitted on the validation cases"},
    )
    coords = {
        "model": models,
        "calibration": list(CALIBRATIONS),
        lead_dim: np.asarray(data.coords[lead_dim], dtype=float),
        "level": levels,
        "quantile": rel_levels.numpy(),
        "pit_bin": (np.arange(n_pit) + 0.5) / n_pit,
        "rank": np.arange(n_rank + 1),
        "spread_bin": np.arange(n_spread),
    }
    scores = xr.Dataset(variables, coords=coords)
    scores.attrs.update(
        {
            "n_valid_cases": int(obs_v.shape[0]),
            "n_test_cases": int(obs_t.shape[0]),
            "n_test_points": int(obs_t.numel()),
        }
    )
    return scores, predictives
