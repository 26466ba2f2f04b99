"""Scores of ensemble precipitation nowcasts per lead time, with bootstrap intervals.

The verification of the nowcasting literature (Shi et al. 2015, 2017: HKO-7; pysteps'
verification), computed from per-case terms so that every score gets a bootstrap interval
over the test sequences (:func:`uqdyn.forecast.bootstrap_statistic`, cases independent):

* contingency scores ``csi``, ``hss``, ``pod``, ``far`` per lead and rain-rate threshold of
  the event forecast ``P(R >= threshold) >= 1/2`` (the ensemble median exceeds the
  threshold; for one member, the member itself), counts pooled over the cases;
* ``b_mse``, ``b_mae``: the balanced mean squared / absolute error of the ensemble mean,
  weighted per pixel by the observed rain rate (HKO-7's weights 1, 2, 5, 10, 30 for rain
  below 2, 5, 10, 30 mm/h and above), per pixel (HKO-7 sums per frame);
* ``fss``: the fractions skill score of the exceedance probabilities (forecast fractions are
  window means of ``P(R >= threshold)``, observed fractions those of the observed events;
  windows with a not-observed pixel are left out) per lead, threshold and window size,
  sums pooled over cases (Roberts & Lean 2008, the probabilistic form of Schwartz et al.
  2010);
* ``spread_skill``: ensemble spread over the RMSE of the ensemble mean, per lead;
* ``corp_mcb``, ``corp_dsc``, ``corp_unc``, ``brier``: the CORP decomposition of the Brier
  score of the exceedance probabilities (Dimitriadis, Gneiting & Jordan 2021), points of all
  leads pooled, per threshold;
* ``rank_histogram``: relative frequencies of the rank of the observation among the members
  (random tie breaking: dry pixels tie), per lead;
* the paired differences ``csi_diff`` and ``crps_skill`` of every model against a reference
  model (the same bootstrap resamples for both, so the interval is of the difference).

Observations are ``(case, lead, height, width)`` rain rates in mm/h with NaN where not
observed; forecasts are member-first tensors ``(member, case, lead, height, width)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor

from uqdyn.calibration import corp_reliability, rank_histogram
from uqdyn.forecast import bootstrap_statistic
from uqdyn.predictive import Ensemble
from uqdyn.scoring import crps_ensemble

__all__ = [
    "BALANCE_THRESHOLDS",
    "BALANCE_WEIGHTS",
    "balanced_weights",
    "contingency_counts",
    "fss_terms",
    "nowcast_scores",
]

#: HKO-7's balanced-loss weights: 1 below 2 mm/h, 2 from 2, 5 from 5, 10 from 10, 30 from 30.
BALANCE_THRESHOLDS = (2.0, 5.0, 10.0, 30.0)
BALANCE_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)

#: Forecast probabilities at which the CORP reliability curves are stored.
PROBABILITIES = np.round(np.linspace(0.0, 1.0, 21), 10)

_COUNTS = ("hits", "misses", "false_alarms", "correct_negatives")


def _check_inputs(obs: Tensor, members: Tensor, name: str) -> None:
    if obs.dim() != 4:
        raise ValueError(f"obs has shape {tuple(obs.shape)}; expected (case, lead, height, width)")
    if members.dim() != 5 or tuple(members.shape[1:]) != tuple(obs.shape):
        raise ValueError(
            f"forecast {name!r} has shape {tuple(members.shape)}; expected (member, "
            f"*{tuple(obs.shape)}) matching obs (case, lead, height, width)"
        )


def balanced_weights(obs: Tensor) -> Tensor:
    """HKO-7's per-pixel weights of the observed rain rate ``obs`` (mm/h), same shape."""
    w = torch.full_like(obs, BALANCE_WEIGHTS[0])
    for thr, weight in zip(BALANCE_THRESHOLDS, BALANCE_WEIGHTS[1:], strict=True):
        w = torch.where(obs >= thr, torch.full_like(obs, weight), w)
    return w


def exceedance(members: Tensor, threshold: float) -> Tensor:
    """``P(R >= threshold)``: the fraction of members at or above it, ``members.shape[1:]``."""
    return (members >= threshold).to(members.dtype).mean(0)


def contingency_counts(obs: Tensor, event_forecast: Tensor, threshold: float) -> dict[str, Tensor]:
    """Hits, misses, false alarms and correct negatives per ``(case, lead)``.

    ``obs``: ``(case, lead, H, W)`` with NaN where not observed (not counted);
    ``event_forecast``: boolean ``(case, lead, H, W)``; event: ``obs >= threshold``.
    Returns float64 tensors ``(case, lead)``.
    """
    seen = torch.isfinite(obs)
    o = (obs >= threshold) & seen
    f = event_forecast & seen
    no, nf = (~o) & seen, (~f) & seen
    dims = (-2, -1)
    return {
        "hits": (o & f).sum(dims).double(),
        "misses": (o & nf).sum(dims).double(),
        "false_alarms": (no & f).sum(dims).double(),
        "correct_negatives": (no & nf).sum(dims).double(),
    }


def fss_terms(obs: Tensor, prob: Tensor, threshold: float, window: int) -> tuple[Tensor, Tensor]:
    """Per-``(case, lead)`` sums ``sum_n (F_n - O_n)^2`` and ``sum_n F_n^2 + O_n^2``.

    ``F_n`` and ``O_n`` are the means of ``prob`` and of the observed events ``obs >=
    threshold`` over the ``n``-th ``window x window`` window inside the field; windows with a
    not-observed (NaN) pixel are left out. ``FSS = 1 - first / second`` after pooling.
    """
    n, lead, h, w = obs.shape
    if window > min(h, w):
        raise ValueError(f"window={window} does not fit in a {h} x {w} field")
    seen = torch.isfinite(obs).double().reshape(n * lead, 1, h, w)
    events = torch.where(torch.isfinite(obs), (obs >= threshold).double(), 0.0)
    o = F.avg_pool2d(events.reshape(n * lead, 1, h, w), window, stride=1)
    f = F.avg_pool2d(prob.double().reshape(n * lead, 1, h, w), window, stride=1)
    full = F.avg_pool2d(seen, window, stride=1) > 1.0 - 1e-9
    num = torch.where(full, (f - o).square(), 0.0).sum((-3, -2, -1))
    den = torch.where(full, f.square() + o.square(), 0.0).sum((-3, -2, -1))
    return num.reshape(n, lead), den.reshape(n, lead)


def _step_at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The step function through ``(x, y)`` (right-continuous) at :data:`PROBABILITIES`;
    NaN below the smallest ``x`` and at probabilities no forecast took (beyond 1e-9)."""
    idx = np.searchsorted(x, PROBABILITIES + 1e-9, side="right") - 1
    vals = np.where(idx >= 0, y[np.clip(idx, 0, None)], np.nan)
    taken = np.isin(np.round(PROBABILITIES, 6), np.round(x, 6))
    return np.where(taken, vals, np.nan)


def _csi(h: Any, m: Any, f: Any, c: Any) -> Any:
    return h / (h + m + f)


def _pod(h: Any, m: Any, f: Any, c: Any) -> Any:
    return h / (h + m)


def _far(h: Any, m: Any, f: Any, c: Any) -> Any:
    return f / (h + f)


def _hss(h: Any, m: Any, f: Any, c: Any) -> Any:
    return 2.0 * (h * c - m * f) / ((h + m) * (m + c) + (h + f) * (f + c))


_CONTINGENCY = {"csi": _csi, "hss": _hss, "pod": _pod, "far": _far}


def _case_lead(values: Tensor, coords: dict[str, Any]) -> xr.DataArray:
    return xr.DataArray(values.double().cpu().numpy(), dims=("case", "lead_time"), coords=coords)


def nowcast_scores(
    obs: Tensor,
    forecasts: Mapping[str, Tensor],
    *,
    lead_minutes: Sequence[float],
    thresholds: Sequence[float] = (0.5, 2.0, 5.0, 10.0, 30.0),
    fss_thresholds: Sequence[float] = (2.0, 10.0),
    fss_windows: Sequence[int] = (1, 5, 11, 21),
    reliability_thresholds: Sequence[float] = (2.0, 10.0),
    reference: str | None = None,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> xr.Dataset:
    """Nowcast scores of every model per lead time, with bootstrap intervals over the cases.

    Parameters
    ----------
    obs:
        ``(case, lead, height, width)`` observed rain rates (mm/h), NaN where not observed.
    forecasts:
        ``{model: members}`` with members ``(member, case, lead, height, width)`` in mm/h.
    lead_minutes:
        The lead times in minutes, ``(lead,)``.
    thresholds, fss_thresholds, fss_windows, reliability_thresholds:
        Rain-rate thresholds (mm/h) of the contingency scores, of the FSS and of the CORP
        reliability, and the FSS window sizes (pixels, odd or even, each fitting the field).
    reference:
        A model of ``forecasts`` to compare every other with (``csi_diff``, ``crps_skill``),
        or ``None``.
    n_boot, level, seed:
        Bootstrap resamples, interval level and seed (the same resamples for every score).

    Returns
    -------
    xarray.Dataset
        Dims ``model``, ``lead_time`` (minutes), ``threshold``, ``fss_threshold``,
        ``window``, ``reliability_threshold``, ``rank``, ``bound`` (``value``, ``lower``,
        ``upper``); see the module docstring for the variables.
    """
    if not forecasts:
        raise ValueError("forecasts is empty; expected {model: members}")
    obs = torch.as_tensor(obs).double()
    if obs.dim() != 4:
        raise ValueError(f"obs has shape {tuple(obs.shape)}; expected (case, lead, height, width)")
    leads = [float(v) for v in lead_minutes]
    if len(leads) != obs.shape[1]:
        raise ValueError(
            f"lead_minutes has {len(leads)} values; expected one per lead ({obs.shape[1]})"
        )
    if reference is not None and reference not in forecasts:
        raise ValueError(f"reference={reference!r}; expected one of {sorted(forecasts)}")
    thresholds = [float(t) for t in thresholds]
    fss_thresholds = [float(t) for t in fss_thresholds]
    fss_windows = [int(w) for w in fss_windows]
    rel_thresholds = [float(t) for t in reliability_thresholds]
    models = list(forecasts)
    coords = {"case": np.arange(obs.shape[0]), "lead_time": np.asarray(leads)}
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed, "block": 1}
    seen = torch.isfinite(obs)
    obs0 = torch.where(seen, obs, 0.0)
    weights = balanced_weights(obs0)
    generator = torch.Generator().manual_seed(int(seed))

    def interval(arrays: list[xr.DataArray], stat: Any) -> np.ndarray:
        ds = bootstrap_statistic(arrays, stat, dim="case", time_dim="case", **boot)
        return np.stack([ds["value"].values, ds["lower"].values, ds["upper"].values], -1)

    def count_sum(values: Tensor) -> Tensor:
        return torch.where(seen, values, 0.0).sum((-2, -1))

    counts: dict[str, dict[float, dict[str, xr.DataArray]]] = {}
    crps_terms: dict[str, xr.DataArray] = {}
    n_seen = count_sum(torch.ones_like(obs))
    out: dict[str, Any] = {}
    nm, nl, nt = len(models), len(leads), len(thresholds)
    for name in _CONTINGENCY:
        out[name] = np.full((nm, nl, nt, 3), np.nan)
    for name in ("b_mse", "b_mae", "spread_skill", "crps"):
        out[name] = np.full((nm, nl, 3), np.nan)
    out["fss"] = np.full((nm, nl, len(fss_thresholds), len(fss_windows), 3), np.nan)
    for name in ("corp_mcb", "corp_dsc", "corp_unc", "brier"):
        out[name] = np.full((nm, len(rel_thresholds)), np.nan)
    out["reliability"] = np.full((nm, len(rel_thresholds), len(PROBABILITIES)), np.nan)
    rank_hists: list[np.ndarray] = []
    for i, model in enumerate(models):
        members = torch.as_tensor(forecasts[model]).double()
        _check_inputs(obs, members, model)
        mean = members.mean(0)
        counts[model] = {}
        for k, thr in enumerate(thresholds):
            table = contingency_counts(obs, exceedance(members, thr) >= 0.5, thr)
            arrays = {key: _case_lead(table[key], coords) for key in _COUNTS}
            counts[model][thr] = arrays
            for name, fn in _CONTINGENCY.items():
                out[name][i, :, k] = interval([arrays[key] for key in _COUNTS], fn)
        err = mean - obs0
        n_da = _case_lead(n_seen, coords)
        bmse = _case_lead(count_sum(weights * err.square()), coords)
        bmae = _case_lead(count_sum(weights * err.abs()), coords)
        out["b_mse"][i] = interval([bmse, n_da], lambda s, n: s / n)
        out["b_mae"][i] = interval([bmae, n_da], lambda s, n: s / n)
        var = members.var(0, unbiased=True) if members.shape[0] > 1 else torch.zeros_like(mean)
        var_da = _case_lead(count_sum(var), coords)
        sq_da = _case_lead(count_sum(err.square()), coords)
        out["spread_skill"][i] = interval([var_da, sq_da], lambda v, s: np.sqrt(v / s))
        crps = crps_ensemble(obs0, members, member_dim=0)
        crps_da = _case_lead(count_sum(torch.as_tensor(crps).double()), coords)
        crps_terms[model] = crps_da
        out["crps"][i] = interval([crps_da, n_da], lambda s, n: s / n)
        for a, thr in enumerate(fss_thresholds):
            prob = exceedance(members, thr)
            for b, window in enumerate(fss_windows):
                num, den = fss_terms(obs, prob, thr, window)
                out["fss"][i, :, a, b] = interval(
                    [_case_lead(num, coords), _case_lead(den, coords)], lambda u, v: 1.0 - u / v
                )
        for a, thr in enumerate(rel_thresholds):
            prob = exceedance(members, thr)
            rel = corp_reliability(
                (obs0 >= thr).double(), prob, n_resamples=0, mask=seen, nan_policy="omit"
            )
            out["corp_mcb"][i, a] = float(rel.mcb)
            out["corp_dsc"][i, a] = float(rel.dsc)
            out["corp_unc"][i, a] = float(rel.unc)
            out["brier"][i, a] = float(rel.score)
            out["reliability"][i, a] = _step_at(rel.forecast_values, rel.recalibrated_values)
        hist = []
        for j in range(nl):
            ranks = rank_histogram(
                obs0[:, j], Ensemble(members[:, :, j]), generator=generator, mask=seen[:, j]
            )
            c = np.asarray(ranks, dtype=float)
            hist.append(c / c.sum() * len(c))
        rank_hists.append(np.stack(hist))
    bound = ["value", "lower", "upper"]
    dims_t = ("model", "lead_time", "threshold", "bound")
    variables: dict[str, Any] = {
        name: (dims_t, out[name], {"long_name": f"{name.upper()} of the median event forecast"})
        for name in _CONTINGENCY
    }
    long_names = {
        "b_mse": "balanced mean squared error of the ensemble mean (HKO-7 weights)",
        "b_mae": "balanced mean absolute error of the ensemble mean (HKO-7 weights)",
        "spread_skill": "ensemble spread / RMSE of the ensemble mean",
        "crps": "mean CRPS (mm/h)",
    }
    for name, text in long_names.items():
        variables[name] = (("model", "lead_time", "bound"), out[name], {"long_name": text})
    variables["fss"] = (
        ("model", "lead_time", "fss_threshold", "window", "bound"),
        out["fss"],
        {"long_name": "fractions skill score of the exceedance probabilities"},
    )
    corp_names = {
        "corp_mcb": "CORP miscalibration of P(R >= threshold) (all leads pooled)",
        "corp_dsc": "CORP discrimination of P(R >= threshold)",
        "corp_unc": "CORP uncertainty of the event",
        "brier": "Brier score of P(R >= threshold)",
    }
    for name, text in corp_names.items():
        variables[name] = (("model", "reliability_threshold"), out[name], {"long_name": text})
    variables["reliability"] = (
        ("model", "reliability_threshold", "probability"),
        out["reliability"],
        {"long_name": "CORP recalibrated event frequency at each forecast probability"},
    )
    variables["rank_histogram"] = (
        ("model", "lead_time", "rank"),
        np.stack(rank_hists),
        {"long_name": "relative frequency of the observation's rank (1 = flat)"},
    )
    ds_coords: dict[str, Any] = {
        "model": models,
        "lead_time": ("lead_time", np.asarray(leads), {"units": "minutes"}),
        "threshold": ("threshold", np.asarray(thresholds), {"units": "mm/h"}),
        "fss_threshold": ("fss_threshold", np.asarray(fss_thresholds), {"units": "mm/h"}),
        "window": ("window", np.asarray(fss_windows), {"units": "pixels"}),
        "reliability_threshold": (
            "reliability_threshold",
            np.asarray(rel_thresholds),
            {"units": "mm/h"},
        ),
        "probability": PROBABILITIES,
        "bound": bound,
    }
    if reference is not None:
        diff = np.full((nm, nl, nt, 3), np.nan)
        skill = np.full((nm, nl, 3), np.nan)
        ref = counts[reference]
        n_da = _case_lead(n_seen, coords)
        for i, model in enumerate(models):
            for k, thr in enumerate(thresholds):
                pair = [counts[model][thr][key] for key in _COUNTS]
                pair += [ref[thr][key] for key in _COUNTS]
                diff[i, :, k] = interval(pair, lambda *a: _csi(*a[:4]) - _csi(*a[4:]))
            skill[i] = interval(
                [crps_terms[model], crps_terms[reference], n_da], lambda a, b, n: 1.0 - a / b
            )
        variables["csi_diff"] = (
            dims_t,
            diff,
            {"long_name": f"CSI minus the CSI of {reference} (paired bootstrap)"},
        )
        variables["crps_skill"] = (
            ("model", "lead_time", "bound"),
            skill,
            {"long_name": f"1 - CRPS / CRPS of {reference} (paired bootstrap)"},
        )
    ds = xr.Dataset(variables, coords=ds_coords)
    ds.attrs.update(
        {
            "reference": reference or "",
            "n_cases": int(obs.shape[0]),
            "n_boot": int(n_boot),
            "ci_level": float(level),
        }
    )
    return ds
