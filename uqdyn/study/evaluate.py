"""Scores of every model, raw and recalibrated on the validation split, as one xarray Dataset.

Every scalar score comes with a bootstrap confidence interval over the test cases (blocks of
consecutive cases for time-ordered forecast origins, single cases for independent ones), and
skill against the study's reference forecasts comes with its interval too. Observations that
are NaN (not observed), and points where any raw forecast is undefined, are left out of every
score, the same points for every model.
"""

from __future__ import annotations

import math
import warnings
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
    select_recalibration,
    spread_skill_ratio,
)
from uqdyn.forecast import bootstrap_statistic, mean_interval, skill_score
from uqdyn.predictive import Ensemble, Predictive

from .base import StudyData, generator

__all__ = ["CALIBRATIONS", "evaluate", "SCALAR_SCORES", "INTERVAL_SCORES", "SELECTION_CANDIDATES"]

#: Calibration variants: the raw forecast, the two global recalibrations fitted on the
#: validation cases, and the per-lead cross-validated choice (``selected``).
CALIBRATIONS = ("raw", "variance_scaling", "isotonic", "selected")

#: Scalar scores per (model, calibration), with a description for the report.
SCALAR_SCORES: dict[str, str] = {
    "crps": "mean CRPS (lower is better)",
    "rmse": "RMSE of the predictive mean",
    "coverage90": "fraction of observations inside the central 90% interval (nominal 0.9)",
    "spread_skill": "spread-skill ratio (1 is calibrated, < 1 over-confident)",
    "miscalibration_area": "area between the reliability curve and the diagonal",
    "sharpness": "mean predictive standard deviation",
}

#: The scalar scores that get ``<name>_lower`` and ``<name>_upper`` bootstrap bounds.
INTERVAL_SCORES = ("crps", "rmse", "coverage90", "spread_skill", "sharpness")

#: Default candidates of the per-lead cross-validated recalibration choice.
SELECTION_CANDIDATES = (
    "raw",
    "variance_scaling",
    "isotonic",
    "grouped_variance_scaling",
    "grouped_isotonic",
)


def _rank_members(pred: Predictive, n: int, g: torch.Generator) -> Tensor:
    """``(n, *batch_shape)`` exchangeable draws: the first members of an ensemble, else samples."""
    if isinstance(pred, Ensemble) and pred.weights is None and pred.n_members >= n:
        return pred.members[:n]
    with torch.no_grad():
        return pred.sample(n, generator=g)


def _spread_skill_bins(
    pred: Predictive, obs: Tensor, keep: Tensor, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """RMS spread and RMSE of the mean in ``bins`` equally populated bins of the spread."""
    var = pred.variance.double()[keep]
    err = (pred.mean.double() - obs.double())[keep].square()
    order = torch.argsort(var)
    spread, skill = np.full(bins, np.nan), np.full(bins, np.nan)
    for i, chunk in enumerate(torch.tensor_split(order, bins)):
        if chunk.numel():
            spread[i] = float(var[chunk].mean().sqrt())
            skill[i] = float(err[chunk].mean().sqrt())
    return spread, skill


def _finite(t: Tensor) -> Tensor:
    return torch.isfinite(t)


def _common_mask(obs: Tensor, predictives: list[Predictive]) -> Tensor:
    """Observed points where every forecast has a finite mean and spread."""
    keep = _finite(obs)
    for p in predictives:
        with torch.no_grad():
            keep &= _finite(p.mean) & _finite(p.stddev)
    return keep


def _case_array(values: Tensor, keep: Tensor, dims: tuple[str, ...]) -> xr.DataArray:
    """Per-point values (NaN where not kept) as a DataArray with the study's dims."""
    v = values.detach().double().cpu()
    v = torch.where(keep.cpu(), v, torch.nan)
    return xr.DataArray(v.numpy(), dims=("case", *dims[1:]))


def _select_variant(
    obs_v: Tensor,
    fc_valid: Predictive,
    keep_v: Tensor,
    candidates: tuple[str, ...],
    seed: int,
    index: int,
) -> tuple[Any, list[dict[str, Any]]]:
    """Per-lead cross-validated choice among ``candidates`` on the validation cases."""
    selection = select_recalibration(
        torch.where(keep_v, obs_v, torch.zeros((), dtype=obs_v.dtype)),
        fc_valid,
        candidates=list(candidates),
        axis=0,
        folds=min(5, int(obs_v.shape[0])),
        group_axis=1,
        mask=keep_v,
        generator=generator(seed, 700 + index),
    )
    record = [
        {
            "lead_index": int(c.group) if isinstance(c.group, (int, np.integer)) else -1,
            "chosen": c.chosen,
            "raw_crps": float(c.raw_crps),
            "chosen_crps": float(c.chosen_crps),
            "improvement": float(c.improvement.get(c.chosen, 0.0)),
            "standard_error": float(c.standard_error.get(c.chosen, 0.0)),
        }
        for c in selection.choices
    ]
    return selection, record


def evaluate(
    data: StudyData, settings: dict[str, Any], seed: int
) -> tuple[xr.Dataset, dict[str, dict[str, Predictive]]]:
    """Score every model of ``data`` on the test cases, raw and recalibrated, with CIs.

    Parameters
    ----------
    data:
        The study's observations and forecasts (NaN observations are not scored).
    settings:
        The ``evaluation`` table: ``coverage_levels``, ``rank_members``, ``pit_bins``,
        ``spread_bins``, ``isotonic_nodes``; optional ``n_boot`` (1000), ``ci_level``
        (0.9), ``bootstrap_block`` (cases per block; 0 = automatic, default
        ``data.case_block``) and ``selection_candidates`` (candidates of the per-lead
        choice, default :data:`SELECTION_CANDIDATES`).
    seed:
        Seed of the randomized PIT, rank ties, samples and bootstrap.

    Returns
    -------
    scores:
        Dataset with dims ``model`` and ``calibration`` and the variables of
        :data:`SCALAR_SCORES`, ``<score>_lower`` / ``<score>_upper`` for
        :data:`INTERVAL_SCORES`; ``crps_by_lead`` (and its bounds) ``(model, calibration,
        <lead dim>)``; ``skill``, ``skill_lower``, ``skill_upper`` ``(model, reference,
        <lead dim>)`` and ``skill_all`` (over every lead) for the study's references;
        ``selected_method`` ``(model, <lead dim>)`` (what the per-lead choice kept) with
        ``selection_raw_crps`` and ``selection_chosen_crps`` (held-out CRPS on the
        validation cases); ``coverage (.., level)``; ``reliability (.., quantile)``;
        ``pit_histogram (.., pit_bin)``; ``rank_histogram (.., rank)``; ``spread_binned`` and
        ``rmse_binned (.., spread_bin)``; ``fit_seconds (model)`` and ``variance_scale
        (model)``; ``spread_variation_space`` and ``spread_variation_time`` (model): the
        coefficient of variation of the raw predictive spread across space and across cases.
    predictives:
        ``{model: {calibration: test Predictive}}``.
    """
    levels = [float(v) for v in settings["coverage_levels"]]
    n_rank = int(settings["rank_members"])
    n_pit = int(settings["pit_bins"])
    n_spread = int(settings["spread_bins"])
    n_nodes = int(settings["isotonic_nodes"])
    n_boot = int(settings.get("n_boot", 1000))
    ci_level = float(settings.get("ci_level", 0.9))
    block_setting = int(settings.get("bootstrap_block", data.case_block))
    block = None if block_setting == 0 else block_setting
    candidates = tuple(settings.get("selection_candidates", SELECTION_CANDIDATES))
    rel_levels = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    obs_v, obs_t = data.obs_valid, data.obs_test
    lead_dim = data.lead_dim
    n_lead = obs_t.shape[1]
    models = [f.name for f in data.forecasts]
    shape2 = (len(models), len(CALIBRATIONS))
    keep_v = _common_mask(obs_v, [f.valid for f in data.forecasts])
    keep_t = _common_mask(obs_t, [f.test for f in data.forecasts])
    if not bool(keep_t.any()):
        raise ValueError(
            "no test point is both observed and forecast by every model; expected some "
            "finite observations where the forecasts are defined"
        )
    if not bool(keep_v.any()):
        raise ValueError("no validation point is observed and forecast by every model")
    obs_t0 = torch.where(keep_t, obs_t, torch.zeros((), dtype=obs_t.dtype))
    boot: dict[str, Any] = {"n_boot": n_boot, "level": ci_level, "seed": seed, "block": block}
    reduce_all = ["case", *data.dims[1:]]

    def empty(*extra: int) -> np.ndarray:
        return np.full(shape2 + extra, np.nan)

    out: dict[str, np.ndarray] = {name: empty() for name in SCALAR_SCORES}
    for name in INTERVAL_SCORES:
        out[f"{name}_lower"], out[f"{name}_upper"] = empty(), empty()
    for suffix in ("", "_lower", "_upper"):
        out[f"crps_by_lead{suffix}"] = empty(n_lead)
    out["coverage"] = empty(len(levels))
    out["reliability"] = empty(len(rel_levels))
    out["pit_histogram"] = empty(n_pit)
    out["rank_histogram"] = empty(n_rank + 1)
    out["spread_binned"] = empty(n_spread)
    out["rmse_binned"] = empty(n_spread)
    scales = np.full(len(models), np.nan)
    selected = np.full((len(models), n_lead), "", dtype=object)
    sel_raw = np.full((len(models), n_lead), np.nan)
    sel_chosen = np.full((len(models), n_lead), np.nan)
    spread_space = np.full(len(models), np.nan)
    spread_time = np.full(len(models), np.nan)
    mean_space = np.full(len(models), np.nan)
    crps_arrays: dict[str, xr.DataArray] = {}
    predictives: dict[str, dict[str, Predictive]] = {}
    for i, fc in enumerate(data.forecasts):
        scaler = VarianceScaling().fit(obs_v, fc.valid, mask=keep_v)
        scales[i] = float(scaler.scale) if scaler.scale is not None else math.nan
        iso = IsotonicRecalibrator(n_nodes=n_nodes).fit(
            obs_v, fc.valid, mask=keep_v, generator=generator(seed, 501 + i)
        )
        selection, record = _select_variant(obs_v, fc.valid, keep_v, candidates, seed, i)
        for row in record:
            j = row["lead_index"]
            if 0 <= j < n_lead:
                selected[i, j] = row["chosen"]
                sel_raw[i, j], sel_chosen[i, j] = row["raw_crps"], row["chosen_crps"]
        variants = {
            "raw": fc.test,
            "variance_scaling": scaler.transform(fc.test),
            "isotonic": iso.transform(fc.test),
            "selected": selection.transform(fc.test),
        }
        variants = {k: fc.test._labelled_like(v) for k, v in variants.items()}
        predictives[fc.name] = variants
        spread_space[i], spread_time[i] = _spread_variation(fc.test, keep_t, data)
        mean_space[i] = _mean_structure(fc.test, obs_t, keep_t)
        for j, cal in enumerate(CALIBRATIONS):
            pred = variants[cal]
            g = generator(seed, 1000 + 10 * i + j)
            with torch.no_grad():
                crps = pred.crps(obs_t0).double()
                mean = pred.mean.double()
                var = pred.variance.double()
                lo, hi = pred.interval(0.9)
            crps_da = _case_array(crps, keep_t, data.dims)
            sq_da = _case_array((mean - obs_t.double()).square(), keep_t, data.dims)
            var_da = _case_array(var, keep_t, data.dims)
            std_da = _case_array(var.sqrt(), keep_t, data.dims)
            inside = ((obs_t >= lo) & (obs_t <= hi)).double()
            inside_da = _case_array(inside, keep_t, data.dims)
            if cal == "raw":
                crps_arrays[fc.name] = crps_da
            for name, arr, stat in (
                ("crps", crps_da, "mean"),
                ("rmse", sq_da, "sqrt"),
                ("coverage90", inside_da, "mean"),
                ("sharpness", std_da, "mean"),
            ):
                ci = mean_interval(arr, dim=reduce_all, statistic=stat, time_dim="case", **boot)
                out[name][i, j] = float(ci["value"])
                out[f"{name}_lower"][i, j] = float(ci["lower"])
                out[f"{name}_upper"][i, j] = float(ci["upper"])
            ssr = bootstrap_statistic(
                [var_da, sq_da],
                lambda v, s: np.sqrt(v / s),
                dim=reduce_all,
                time_dim="case",
                **boot,
            )
            out["spread_skill"][i, j] = float(spread_skill_ratio(obs_t0, pred, mask=keep_t))
            out["spread_skill_lower"][i, j] = float(ssr["lower"])
            out["spread_skill_upper"][i, j] = float(ssr["upper"])
            by_lead = mean_interval(
                crps_da, dim=[d for d in reduce_all if d != data.dims[1]], time_dim="case", **boot
            )
            out["crps_by_lead"][i, j] = by_lead["value"].values
            out["crps_by_lead_lower"][i, j] = by_lead["lower"].values
            out["crps_by_lead_upper"][i, j] = by_lead["upper"].values
            with torch.no_grad():
                out["coverage"][i, j] = np.asarray(
                    coverage(obs_t0, pred, levels, mask=keep_t), dtype=float
                )
                out["miscalibration_area"][i, j] = float(
                    miscalibration_area(obs_t0, pred, generator=g, mask=keep_t)
                )
                curve = reliability_curve(obs_t0, pred, rel_levels, generator=g, mask=keep_t)
                out["reliability"][i, j] = np.asarray(curve.observed, dtype=float)
                pits = pit(obs_t0, pred, generator=g)[keep_t]
                hist = torch.histc(pits.double(), bins=n_pit, min=0.0, max=1.0)
                out["pit_histogram"][i, j] = (hist / hist.sum() * n_pit).numpy()
                ranks = rank_histogram(
                    obs_t0, Ensemble(_rank_members(pred, n_rank, g)), generator=g, mask=keep_t
                )
                counts = np.asarray(ranks, dtype=float)
                out["rank_histogram"][i, j] = counts / counts.sum() * (n_rank + 1)
                spread, skill = _spread_skill_bins(pred, obs_t, keep_t, n_spread)
                out["spread_binned"][i, j], out["rmse_binned"][i, j] = spread, skill
    base_dims = ("model", "calibration")
    variables: dict[str, Any] = {
        name: (base_dims, out[name], {"long_name": desc}) for name, desc in SCALAR_SCORES.items()
    }
    for name in INTERVAL_SCORES:
        for side in ("lower", "upper"):
            variables[f"{name}_{side}"] = (
                base_dims,
                out[f"{name}_{side}"],
                {"long_name": f"{side} bound of the {ci_level:.0%} bootstrap interval of {name}"},
            )
    for suffix, what in (
        ("", "mean CRPS"),
        ("_lower", "lower bound of"),
        ("_upper", "upper bound of"),
    ):
        variables[f"crps_by_lead{suffix}"] = (
            (*base_dims, lead_dim),
            out[f"crps_by_lead{suffix}"],
            {
                "long_name": f"{what} mean CRPS per {lead_dim}"
                if suffix
                else f"mean CRPS per {lead_dim}"
            },
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
    variables["selected_method"] = (
        ("model", lead_dim),
        selected.astype(str),
        {"long_name": "recalibration kept per lead by cross-validation on the validation cases"},
    )
    variables["selection_raw_crps"] = (
        ("model", lead_dim),
        sel_raw,
        {"long_name": "held-out (cross-validated) CRPS of the raw forecast on validation"},
    )
    variables["selection_chosen_crps"] = (
        ("model", lead_dim),
        sel_chosen,
        {"long_name": "held-out (cross-validated) CRPS of the kept recalibration"},
    )
    variables["spread_variation_space"] = (
        ("model",),
        spread_space,
        {"long_name": "coefficient of variation of the raw spread across space (mean over cases)"},
    )
    variables["spread_variation_time"] = (
        ("model",),
        spread_time,
        {"long_name": "coefficient of variation of the raw spread across cases (mean over points)"},
    )
    variables["mean_structure_space"] = (
        ("model",),
        mean_space,
        {
            "long_name": "spatial std of the raw predictive mean over the spatial std of the "
            "observations (mean over cases and leads; near 0: a spatially constant mean)"
        },
    )
    references = [r for r in data.references if r in crps_arrays]
    if references:
        skill = np.full((len(models), len(references), n_lead), np.nan)
        skill_lo, skill_hi = skill.copy(), skill.copy()
        skill_all = np.full((len(models), len(references), 3), np.nan)
        inner = [d for d in reduce_all if d != data.dims[1]]
        for i, m in enumerate(models):
            for k, ref in enumerate(references):
                res = skill_score(
                    crps_arrays[m], crps_arrays[ref], dim=inner, time_dim="case", **boot
                )
                skill[i, k], skill_lo[i, k], skill_hi[i, k] = (
                    res["skill"].values,
                    res["lower"].values,
                    res["upper"].values,
                )
                tot = skill_score(
                    crps_arrays[m], crps_arrays[ref], dim=reduce_all, time_dim="case", **boot
                )
                skill_all[i, k] = [float(tot["skill"]), float(tot["lower"]), float(tot["upper"])]
        for name, values in (
            ("skill", skill),
            ("skill_lower", skill_lo),
            ("skill_upper", skill_hi),
        ):
            variables[name] = (
                ("model", "reference", lead_dim),
                values,
                {"long_name": f"CRPS skill 1 - CRPS / CRPS_reference per {lead_dim} (raw)"},
            )
        variables["skill_all"] = (
            ("model", "reference", "bound"),
            skill_all,
            {"long_name": "CRPS skill over every lead: estimate, lower, upper"},
        )
    coords: dict[str, Any] = {
        "model": models,
        "calibration": list(CALIBRATIONS),
        lead_dim: np.asarray(data.coords[lead_dim]),
        "level": levels,
        "quantile": rel_levels.numpy(),
        "pit_bin": (np.arange(n_pit) + 0.5) / n_pit,
        "rank": np.arange(n_rank + 1),
        "spread_bin": np.arange(n_spread),
    }
    if references:
        coords["reference"] = references
        coords["bound"] = ["estimate", "lower", "upper"]
    scores = xr.Dataset(variables, coords=coords)
    scores.attrs.update(
        {
            "n_valid_cases": int(obs_v.shape[0]),
            "n_test_cases": int(obs_t.shape[0]),
            "n_test_points": int(keep_t.sum()),
            "n_test_unscored": int(obs_t.numel() - int(keep_t.sum())),
            "ci_level": ci_level,
            "n_boot": n_boot,
            "bootstrap_block": block_setting,
        }
    )
    return scores, predictives


def _spread_variation(pred: Predictive, keep: Tensor, data: StudyData) -> tuple[float, float]:
    """Coefficient of variation of the spread across space and across cases (raw forecast).

    Space: per (case, lead), std / mean of the spread over the remaining axes (0 for vector
    states of one component); time: per point and lead, std / mean over the cases. NaN-aware.
    """
    with torch.no_grad():
        spread = pred.stddev.double().cpu()
    sd = torch.where(keep.cpu(), spread, torch.nan).numpy()
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (land points)
        if sd.ndim > 2 and int(np.prod(sd.shape[2:])) > 1:
            flat = sd.reshape(sd.shape[0], sd.shape[1], -1)
            space = float(np.nanmean(np.nanstd(flat, axis=2) / np.nanmean(flat, axis=2)))
        else:
            space = math.nan
        time = float(np.nanmean(np.nanstd(sd, axis=0) / np.nanmean(sd, axis=0)))
    return space, time


def _mean_structure(pred: Predictive, obs: Tensor, keep: Tensor) -> float:
    """Spatial std of the predictive mean relative to that of the observations; NaN for
    forecasts without a spatial axis (fewer than two points per case and lead)."""
    if obs.dim() < 3 or int(np.prod(obs.shape[2:])) < 2:
        return math.nan
    with torch.no_grad():
        mean = pred.mean.double().cpu()
    k = keep.cpu()
    m = torch.where(k, mean, torch.nan).numpy().reshape(obs.shape[0], obs.shape[1], -1)
    o = torch.where(k, obs.double().cpu(), torch.nan).numpy().reshape(m.shape)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (missing maps)
        ratio = np.nanstd(m, axis=2) / np.nanstd(o, axis=2)
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.mean()) if ratio.size else math.nan
