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
        ax.set_title(f"{title} ({_CAL_TITLES.get(cal, cal)})")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
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

    fig = _per_calibration(scores, "CRPS", crl, lead_dim.replace("_", " "), "mean CRPS")
    add(f"Mean CRPS per {lead_dim.replace('_', ' ')} and model.", fig, "crps_lead.png")

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
            ax.set_title(f"{model}, component {c}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel(data.variable)
    for c in range(n_comp):
        axes[-1, c].set_xlabel("time relative to the last context observation")
    axes[0, 0].legend(fontsize=7, ncol=2)
    return fig


def _field_maps(
    data: StudyData, predictives: dict[str, dict[str, Predictive]], case: int, seed: int
) -> Any:
    models = list(predictives)
    n_samples = 2
    cols = ["observation", "mean", "std", "|error|"] + [f"sample {i + 1}" for i in range(n_samples)]
    fig = _figure(2.2 * len(cols), 2.2 * len(models))
    axes = fig.subplots(len(models), len(cols), squeeze=False, gridspec_kw=_GAPS)
    obs = data.obs_test[case, -1].numpy()
    vmin, vmax = float(np.min(obs)), float(np.max(obs))
    for r, model in enumerate(models):
        pred = predictives[model]["raw"]
        with torch.no_grad():
            mean = pred.mean[case, -1].numpy()
            std = pred.stddev[case, -1].numpy()
            draws = pred.sample(n_samples, generator=generator(seed, 900 + r))[:, case, -1].numpy()
        panels = [obs, mean, std, np.abs(mean - obs), *draws]
        for c, (panel, title) in enumerate(zip(panels, cols, strict=True)):
            ax = axes[r, c]
            if title in ("std", "|error|"):
                im = ax.imshow(panel, origin="lower", cmap="magma")
                fig.colorbar(im, ax=ax, shrink=0.7, format="%.3g")
            else:
                ax.imshow(panel, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{model}: {title}" if c == 0 else title, fontsize=8)
    return fig
