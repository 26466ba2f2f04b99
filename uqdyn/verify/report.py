"""Files of ``uqdyn verify``: ``scores.csv``, ``scores.nc``, figures and ``report.html``.

The figures and the report reuse the study machinery (:mod:`uqdyn.study.figures` for
matplotlib figures saved atomically, :mod:`uqdyn.study.report` for the Markdown/HTML blocks,
:mod:`uqdyn.study.outputs` for atomic file writes).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from uqdyn.calibration.corp import CORPReliability, corp_reliability
from uqdyn.study._interrupt import checkpoint
from uqdyn.study.figures import _figure, _save
from uqdyn.study.outputs import atomic_write_text, write_netcdf
from uqdyn.study.report import Block, write_report
from uqdyn.study.verification_figures import plot_corp_reliability

from .io import _label
from .run import VerifyResult, score_rows

__all__ = [
    "write_tables",
    "event_reliability",
    "make_figures",
    "build_blocks",
    "write_outputs",
]

#: Resamples of the CORP consistency band (``corp_reliability(n_resamples=...)``).
CORP_RESAMPLES = 200

_TITLES = {
    "crps": "CRPS",
    "crps_fair": "fair CRPS",
    "spread_skill": "spread-skill ratio",
}


def write_tables(out_dir: Path, result: VerifyResult) -> tuple[Path, Path]:
    """Write ``scores.csv`` (one row per label of the kept dims) and ``scores.nc``."""
    rows = score_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    csv_path, nc_path = out_dir / "scores.csv", out_dir / "scores.nc"
    atomic_write_text(csv_path, buffer.getvalue())
    write_netcdf(result.scores, nc_path)
    return csv_path, nc_path


def _line_dim(result: VerifyResult) -> str | None:
    """The kept dim that the by-lead lines run along (``lead`` when kept, else the first)."""
    if not result.kept:
        return None
    return "lead" if "lead" in result.kept else result.kept[0]


def _by_dim_figure(result: VerifyResult, dim: str) -> Any:
    ds = result.scores
    others = [d for d in result.kept if d != dim]
    names = [n for n in ("crps", "crps_fair", "spread_skill") if n in ds]
    fig = _figure(4.2 * (1 + ("spread_skill" in names)), 3.2)
    axes = fig.subplots(1, 1 + ("spread_skill" in names), squeeze=False)[0]
    labels = [_label(v) for v in ds[dim].values] if dim in ds.coords else None
    x = np.arange(ds.sizes[dim])
    for name in names:
        values = ds[name].mean(others) if others else ds[name]
        ax = axes[1] if name == "spread_skill" else axes[0]
        ax.plot(x, np.asarray(values.values), marker="o", label=_TITLES[name])
    axes[0].set_ylabel("CRPS")
    axes[0].legend()
    if "spread_skill" in names:
        axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
        axes[1].set_ylabel("spread / RMSE")
    for ax in axes:
        ax.set_xlabel(dim)
        if labels is not None:
            ax.set_xticks(x, labels, rotation=45 if len(labels) > 6 else 0, fontsize=8)
    return fig


def _rank_figure(result: VerifyResult) -> Any:
    counts = result.scores["rank_histogram"]
    total = counts.sum([d for d in counts.dims if d != "rank"]) if counts.ndim > 1 else counts
    values = np.asarray(total.values, dtype=float)
    fig = _figure(4.5, 3.2)
    ax = fig.subplots()
    freq = values / max(values.sum(), 1.0)
    ax.bar(np.arange(len(values)), freq, color="tab:blue")
    ax.axhline(1.0 / len(values), color="k", lw=0.8, ls="--", label="flat")
    ax.set_xlabel("rank of the observation among the members")
    ax.set_ylabel("frequency")
    ax.legend()
    return fig


def _map_figure(result: VerifyResult) -> Any:
    crps_map = result.scores["crps_map"]
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    lon, lat = crps_map["lon"].values, crps_map["lat"].values
    mesh = ax.pcolormesh(lon, lat, np.asarray(crps_map.values), shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=crps_map.attrs.get("description", "CRPS"))
    ax.set_xlabel("lon")
    ax.set_ylabel("lat")
    return fig


def event_reliability(result: VerifyResult, threshold: float | None) -> CORPReliability | None:
    """CORP reliability of the event ``obs > threshold``; its Brier terms go into the attrs
    of ``result.scores`` (``event_threshold``, ``event_brier``, ``event_mcb``, ``event_dsc``,
    ``event_unc``). None without a threshold or without scored points."""
    if threshold is None or result.event is None:
        return None
    event, prob = result.event
    curve = corp_reliability(event, prob, n_resamples=CORP_RESAMPLES)
    result.scores.attrs.update(
        {
            "event_threshold": float(threshold),
            "event_brier": float(curve.score),
            "event_mcb": float(curve.mcb),
            "event_dsc": float(curve.dsc),
            "event_unc": float(curve.unc),
        }
    )
    return curve


def _corp_figure(curve: CORPReliability, threshold: float) -> Any:
    fig = _figure(4.5, 4.2)
    ax = fig.subplots()
    plot_corp_reliability(curve, ax=ax)
    ax.set_title(f"event obs > {threshold:g}")
    return fig


def make_figures(
    out_dir: Path,
    result: VerifyResult,
    threshold: float | None = None,
    curve: CORPReliability | None = None,
) -> list[tuple[str, str]]:
    """Draw the figures into ``out_dir/figures``; returns ``(caption, relative path)`` pairs."""
    figures: list[tuple[str, str]] = []
    folder = out_dir / "figures"
    folder.mkdir(exist_ok=True)

    def save(fig: Any, name: str, caption: str) -> None:
        checkpoint()
        _save(fig, folder / name)
        figures.append((caption, f"figures/{name}"))

    dim = _line_dim(result)
    if dim is not None:
        save(
            _by_dim_figure(result, dim),
            f"scores_by_{dim}.png",
            f"CRPS and spread-skill ratio by {dim} (dashed: 1, a calibrated spread)",
        )
    if "rank_histogram" in result.scores:
        save(
            _rank_figure(result),
            "rank_histogram.png",
            "Rank histogram over every scored point (dashed: flat, a calibrated ensemble)",
        )
    if "crps_map" in result.scores:
        save(_map_figure(result), "crps_map.png", "CRPS map (mean over every other dim)")
    if threshold is not None and curve is not None:
        save(
            _corp_figure(curve, threshold),
            "corp_reliability.png",
            f"CORP reliability diagram of the event obs > {threshold:g} (PAV-recalibrated "
            "probabilities, consistency band under calibration)",
        )
    return figures


def _fmt(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.4g}"


def build_blocks(
    result: VerifyResult,
    figures: list[tuple[str, str]],
    *,
    command: str,
    sources: dict[str, str],
) -> list[Block]:
    """The report: what was verified, the score table, findings and the figures."""
    ds = result.scores
    kind = {"ensemble": "ensemble", "quantile": "quantile", "normal": "Gaussian"}[result.kind]
    blocks = [
        Block("h1", "uqdyn verify"),
        Block("p", f"`{command}`"),
        Block(
            "list",
            [f"{k}: `{v}`" for k, v in sources.items()]
            + [
                f"forecast: {kind}",
                f"averaged over: {ds.attrs.get('averaged_over', '')}",
                f"reduction weights: {ds.attrs.get('weights', 'none')}",
            ],
        ),
    ]
    rows = score_rows(result)
    header = list(rows[0])
    blocks.append(Block("h2", "Scores"))
    blocks.append(
        Block(
            "table",
            (
                header,
                [[_fmt(v) if isinstance(v, float) else str(v) for v in r.values()] for r in rows],
            ),
        )
    )
    notes = []
    if "spread_skill" in ds:
        ssr = np.asarray(ds["spread_skill"].values, dtype=float)
        ssr = ssr[np.isfinite(ssr)]
        if ssr.size:
            lo, hi = float(ssr.min()), float(ssr.max())
            verdict = (
                "under-dispersed (over-confident)"
                if hi < 0.9
                else "over-dispersed"
                if lo > 1.1
                else "close to calibrated spread"
            )
            notes.append(f"spread-skill ratio {_fmt(lo)} to {_fmt(hi)}: {verdict}")
    if "rank_histogram" in ds:
        counts = np.asarray(ds["rank_histogram"].values, dtype=float)
        counts = counts.reshape(-1, counts.shape[-1]).sum(0)
        total = counts.sum()
        if total > 0:
            expected = total / counts.size
            chi2 = float(((counts - expected) ** 2 / expected).sum())
            notes.append(
                f"rank histogram: chi-square {chi2:.1f} on {counts.size - 1} degrees of "
                "freedom against a flat histogram (outer ranks "
                f"{counts[0] / total:.3f} and {counts[-1] / total:.3f}, flat "
                f"{1 / counts.size:.3f})"
            )
    if "event_brier" in ds.attrs:
        notes.append(
            f"event obs > {ds.attrs['event_threshold']:g}: Brier score "
            f"{_fmt(ds.attrs['event_brier'])} = MCB {_fmt(ds.attrs['event_mcb'])} - DSC "
            f"{_fmt(ds.attrs['event_dsc'])} + UNC {_fmt(ds.attrs['event_unc'])} (CORP)"
        )
    if notes:
        blocks += [Block("h2", "Findings"), Block("list", notes)]
    if figures:
        blocks.append(Block("h2", "Figures"))
        blocks += [Block("figure", f) for f in figures]
    return blocks


def write_outputs(
    out_dir: Path,
    result: VerifyResult,
    *,
    command: str,
    sources: dict[str, str],
    threshold: float | None = None,
    figures: bool = True,
) -> list[Path]:
    """Write the tables, the figures and ``report.md``/``report.html`` into ``out_dir``."""
    curve = event_reliability(result, threshold)
    paths = list(write_tables(out_dir, result))
    checkpoint()
    drawn = make_figures(out_dir, result, threshold, curve) if figures else []
    paths += [out_dir / rel for _, rel in drawn]
    blocks = build_blocks(result, drawn, command=command, sources=sources)
    paths += list(write_report(out_dir, blocks))
    return paths
