"""Figures of a study (matplotlib, Agg canvas; no pyplot state is touched)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from uqdyn.predictive import Predictive

from .base import StudyData, generator

__all__ = ["make_figures"]

_GAPS = {"hspace": 0.45, "wspace": 0.3}

_CAL_TITLES = {
    "raw": "raw",
    "variance_scaling": "variance scaling",
    "isotonic": "isotonic",
    "selected": "selected per lead",
}


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a dev/plot dependency
        raise ImportError(
            "study figures need matplotlib; install it with `pip install uqdyn[plot]`"
        ) from err
    return Figure(figsize=(width, height))


def _save(fig: Any, path: Path) -> Path:
    from .outputs import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _per_calibration(
    scores: xr.Dataset,
    title: str,
    draw: Any,
    xlabel: str,
    ylabel: str,
    diagonal: bool | str = False,
) -> Any:
    cals = [str(c) for c in scores["calibration"].values]
    fig = _figure(4.0 * len(cals), 3.6)
    axes = fig.subplots(1, len(cals), sharey=True, squeeze=False, gridspec_kw={"wspace": 0.15})[0]
    for ax, cal in zip(axes, cals, strict=True):
        for model in scores["model"].values:
            draw(ax, str(model), cal)
        if diagonal == "unit":
            ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="ideal")
        elif diagonal:
            lims = [
                min(ax.get_xlim()[0], ax.get_ylim()[0]),
                max(ax.get_xlim()[1], ax.get_ylim()[1]),
            ]
            ax.plot(lims, lims, color="0.5", lw=1, ls="--", label="ideal")
        ax.set_title(_CAL_TITLES.get(cal, cal), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def _histograms(scores: xr.Dataset, var: str, dim: str, title: str, xlabel: str) -> Any:
    models = [str(m) for m in scores["model"].values]
    cals = [str(c) for c in scores["calibration"].values]
    fig = _figure(3.2 * len(cals), 2.4 * len(models))
    axes = fig.subplots(
        len(models), len(cals), sharex=True, sharey=True, squeeze=False, gridspec_kw=_GAPS
    )
    x = scores[dim].values
    width = float(x[1] - x[0]) if len(x) > 1 else 1.0
    for r, model in enumerate(models):
        for c, cal in enumerate(cals):
            ax = axes[r, c]
            ax.bar(x, scores[var].sel(model=model, calibration=cal).values, width=0.9 * width)
            ax.axhline(1.0, color="k", lw=1, ls="--")
            ax.set_title(f"{model}, {_CAL_TITLES.get(cal, cal)}", fontsize=9)
            if r == len(models) - 1:
                ax.set_xlabel(xlabel)
        axes[r, 0].set_ylabel("density")
    fig.suptitle(title)
    return fig


def make_figures(
    out_dir: Path,
    data: StudyData,
    scores: xr.Dataset,
    predictives: dict[str, dict[str, Predictive]],
    *,
    seed: int = 0,
    example_cases: int = 1,
) -> list[tuple[str, Path]]:
    """Draw every figure into ``out_dir/figures``; returns ``[(caption, path), ...]``.

    Reliability diagram, PIT and rank histograms, coverage versus nominal level,
    spread-skill, CRPS per lead time, and fan charts (vector states) or field maps of
    observation, mean, standard deviation, error and samples (fields).
    """
    fig_dir = out_dir / "figures"
    made: list[tuple[str, Path]] = []
    lead_dim = data.lead_dim

    def add(caption: str, fig: Any, name: str) -> None:
        made.append((caption, _save(fig, fig_dir / name)))

    def rel(ax: Any, model: str, cal: str) -> None:
        sel = scores["reliability"].sel(model=model, calibration=cal)
        ax.plot(scores["quantile"].values, sel.values, marker=".", label=model)

    fig = _per_calibration(
        scores, "reliability", rel, "nominal quantile level", "observed frequency", "unit"
    )
    add("Reliability diagram: observed frequency of PIT <= level.", fig, "reliability.png")

    add(
        "PIT histograms (flat = calibrated; U-shape = over-confident).",
        _histograms(scores, "pit_histogram", "pit_bin", "PIT histogram", "PIT"),
        "pit_histogram.png",
    )
    add(
        "Rank histograms of the observation among draws from each forecast.",
        _histograms(scores, "rank_histogram", "rank", "rank histogram", "rank"),
        "rank_histogram.png",
    )

    def cov(ax: Any, model: str, cal: str) -> None:
        sel = scores["coverage"].sel(model=model, calibration=cal)
        ax.plot(scores["level"].values, sel.values, marker="o", label=model)

    fig = _per_calibration(scores, "coverage", cov, "nominal level", "observed coverage", "unit")
    add("Coverage of the central prediction intervals versus nominal level.", fig, "coverage.png")

    def ss(ax: Any, model: str, cal: str) -> None:
        sp = scores["spread_binned"].sel(model=model, calibration=cal).values
        sk = scores["rmse_binned"].sel(model=model, calibration=cal).values
        ax.plot(sp, sk, marker="o", label=model)

    fig = _per_calibration(
        scores, "spread-skill", ss, "RMS spread (binned)", "RMSE of the mean", True
    )
    add(
        "Spread-skill: RMSE of the mean against the predicted spread, in bins of spread.",
        fig,
        "spread_skill.png",
    )

    def crl(ax: Any, model: str, cal: str) -> None:
        sel = scores["crps_by_lead"].sel(model=model, calibration=cal)
        ax.plot(scores[lead_dim].values, sel.values, marker="o", label=model)

    if scores.sizes[lead_dim] > 1:
        fig = _crps_by_lead(scores, lead_dim)
        add(
            f"Mean CRPS per {lead_dim.replace('_', ' ')} and model (raw forecasts), with "
            "bootstrap intervals.",
            fig,
            "crps_lead.png",
        )
    if data.case_values is not None and np.asarray(data.case_values).dtype.kind == "M":
        add(
            "The test period: observations and each model's median and 90% interval at the "
            f"first and the last {lead_dim.replace('_', ' ')} (raw forecasts), by the time "
            "the forecast verifies.",
            _test_period(data, predictives),
            "test_period.png",
        )
    if data.kind == "vector":
        for case in range(min(example_cases, data.obs_test.shape[0])):
            add(
                f"Fan charts of test case {case} (raw forecasts; 50% and 90% intervals).",
                _fan_chart(data, predictives, case),
                f"fan_chart_case{case}.png",
            )
    else:
        for case in range(min(example_cases, data.obs_test.shape[0])):
            add(
                f"Field maps of test case {case} at the last {lead_dim.replace('_', ' ')}: "
                "observation, raw predictive mean, standard deviation, error and samples (draws "
                "of marginal Normal forecasts are independent from pixel to pixel).",
                _field_maps(data, predictives, case, seed),
                f"field_maps_case{case}.png",
            )
    return made


def _fan_chart(data: StudyData, predictives: dict[str, dict[str, Predictive]], case: int) -> Any:
    models = list(predictives)
    n_comp = min(int(data.obs_test.shape[-1]), 2)
    fig = _figure(5.0 * n_comp, 2.6 * len(models))
    axes = fig.subplots(len(models), n_comp, sharex=True, squeeze=False, gridspec_kw=_GAPS)
    lead = np.asarray(data.coords[data.lead_dim])
    if lead.dtype.kind not in "iuf":  # time-offset labels: plot against their position
        lead = np.arange(1, lead.size + 1)
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    for r, model in enumerate(models):
        pred = predictives[model]["raw"]
        with torch.no_grad():
            q = pred.quantile(levels.to(pred.dtype))[:, case].double().numpy()  # (5, L, D)
        for c in range(n_comp):
            ax = axes[r, c]
            ax.fill_between(lead, q[0, :, c], q[4, :, c], alpha=0.25, color="C0", label="90%")
            ax.fill_between(lead, q[1, :, c], q[3, :, c], alpha=0.45, color="C0", label="50%")
            ax.plot(lead, q[2, :, c], color="C0", label="median")
            ax.plot(lead, data.obs_test[case, :, c].numpy(), "k.", label="observed")
            if data.context_test is not None and data.context_times is not None:
                ax.plot(
                    data.context_times,
                    data.context_test[case, :, c].numpy(),
                    "x",
                    color="C3",
                    label="context",
                )
            ax.set_title(f"{model}, {_component(data, c)}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel(f"{data.variable} ({data.units})")
    for c in range(n_comp):
        axes[-1, c].set_xlabel(
            "steps after the origin"
            if data.lead_dim == "lead"
            else "time relative to the last context observation"
        )
    axes[0, 0].legend(fontsize=7, ncol=2)
    return fig


def _component(data: StudyData, index: int) -> str:
    """The name of state component ``index`` (its name when the study gives one)."""
    names = data.component_names
    if names is not None and index < len(names):
        return str(names[index])
    return f"component {index}"


def _crps_by_lead(scores: xr.Dataset, lead_dim: str) -> Any:
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    labels = [str(v) for v in scores[lead_dim].values]
    x = np.arange(len(labels))
    for model in scores["model"].values:
        sel = {"model": model, "calibration": "raw"}
        v = scores["crps_by_lead"].sel(**sel).values
        lo = scores["crps_by_lead_lower"].sel(**sel).values
        hi = scores["crps_by_lead_upper"].sel(**sel).values
        line = ax.plot(x, v, marker="o", label=str(model))[0]
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xticks(x, labels)
    ax.set_xlabel(lead_dim.replace("_", " "))
    ax.set_ylabel("mean CRPS")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _test_period(data: StudyData, predictives: dict[str, dict[str, Predictive]]) -> Any:
    models = list(predictives)
    leads = [0, data.obs_test.shape[1] - 1] if data.obs_test.shape[1] > 1 else [0]
    fig = _figure(10.0, 2.4 * len(models))
    axes = fig.subplots(len(models), 1, sharex=True, squeeze=False)[:, 0]
    valid = data.valid_times
    labels = [str(v) for v in np.asarray(data.coords[data.lead_dim])]
    levels = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    for ax, model in zip(axes, models, strict=True):
        pred = predictives[model]["raw"]
        with torch.no_grad():
            q = pred.quantile(levels.to(pred.dtype)).double().numpy()
        for k, lead in enumerate(leads):
            times = valid[:, lead] if valid is not None else np.asarray(data.case_values)
            qq = q[:, :, lead].reshape(3, q.shape[1], -1)[..., 0]
            color = f"C{k}"
            ax.fill_between(times, qq[0], qq[2], color=color, alpha=0.2, lw=0)
            ax.plot(times, qq[1], color=color, lw=1, label=f"lead {labels[lead]}")
        obs_times = valid[:, 0] if valid is not None else np.asarray(data.case_values)
        obs = data.obs_test[:, 0].reshape(data.obs_test.shape[0], -1)[:, 0].numpy()
        ax.plot(obs_times, obs, "k.", ms=2, label="observed")
        ax.set_ylabel(f"{data.variable} ({data.units})")
        ax.set_title(model, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=3, loc="upper right")
    axes[-1].set_xlabel("time the forecast verifies")
    return fig


def _extent(data: StudyData) -> tuple[float, float, float, float] | None:
    dims = data.dims[-2:]
    try:
        ys = np.asarray(data.coords[dims[0]], dtype=float)
        xs = np.asarray(data.coords[dims[1]], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    if ys.size < 2 or xs.size < 2:
        return None
    dy, dx = (ys[1] - ys[0]) / 2, (xs[1] - xs[0]) / 2
    return (xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy)


def _field_maps(
    data: StudyData, predictives: dict[str, dict[str, Predictive]], case: int, seed: int
) -> Any:
    models = list(predictives)
    n_samples = 2
    cols = ["mean", "std", "|error|"] + [f"sample {i + 1}" for i in range(n_samples)]
    fig = _figure(2.6 * (len(cols) + 1), 2.4 * len(models) + 0.6)
    axes = fig.subplots(len(models), len(cols) + 1, squeeze=False, gridspec_kw=_GAPS)
    obs = data.obs_test[case, -1].double().numpy()
    panels: dict[str, dict[str, np.ndarray]] = {}
    for r, model in enumerate(models):
        pred = predictives[model]["raw"]
        with torch.no_grad():
            mean = pred.mean[case, -1].double().numpy()
            std = pred.stddev[case, -1].double().numpy()
            draws = pred.sample(n_samples, generator=generator(seed, 900 + r))[:, case, -1]
        panels[model] = {"mean": mean, "std": std, "|error|": np.abs(mean - obs)}
        for i in range(n_samples):
            panels[model][f"sample {i + 1}"] = draws[i].double().numpy()
    # one colour scale for the observation, the means and the samples (its bar on the last
    # sample), one for the spreads and one for the errors
    shared = [obs] + [panels[m][c] for m in models for c in cols if c not in ("std", "|error|")]
    finite = np.concatenate([v[np.isfinite(v)] for v in shared])
    vmin, vmax = (float(np.min(finite)), float(np.max(finite))) if finite.size else (0.0, 1.0)
    spread_max = max(float(np.nanmax(panels[m]["std"])) for m in models)
    error_max = max(float(np.nanmax(panels[m]["|error|"])) for m in models)
    extent = _extent(data)
    ylab, xlab = data.dims[-2], data.dims[-1]
    observed = None
    if data.observed_points is not None:
        observed = np.asarray(data.observed_points[case]).reshape(obs.shape)
    for r, model in enumerate(models):
        row = [("observation", obs)] + [(c, panels[model][c]) for c in cols]
        for c, (title, panel) in enumerate(row):
            ax = axes[r, c]
            if title == "std":
                kw = {"cmap": "magma", "vmin": 0.0, "vmax": spread_max}
            elif title == "|error|":
                kw = {"cmap": "magma", "vmin": 0.0, "vmax": error_max}
            else:
                kw = {"cmap": "viridis", "vmin": vmin, "vmax": vmax}
            im = ax.imshow(panel, origin="lower", extent=extent, aspect="auto", **kw)
            if title in ("std", "|error|", f"sample {n_samples}"):  # one bar per colour scale
                fig.colorbar(im, ax=ax, shrink=0.8, format="%.3g")
            if title == "observation" and observed is not None:
                yy, xx = np.nonzero(observed)
                if extent is not None:
                    ys = np.asarray(data.coords[ylab], dtype=float)[yy]
                    xs = np.asarray(data.coords[xlab], dtype=float)[xx]
                else:
                    ys, xs = yy, xx
                ax.scatter(xs, ys, s=4, c="white", edgecolors="k", linewidths=0.3)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{model}\n{ylab}", fontsize=8)
            if r == len(models) - 1:
                ax.set_xlabel(xlab, fontsize=8)
            ax.tick_params(labelsize=6)
    lead = np.asarray(data.coords[data.lead_dim])[-1]
    fig.suptitle(
        f"{data.long_name} ({data.units}), test case {case}, {data.lead_dim.replace('_', ' ')} "
        f"{lead}" + (" (white dots: observed points)" if observed is not None else "")
    )
    return fig
