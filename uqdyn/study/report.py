"""The study report: one Markdown file and one self-contained HTML page (figures inlined)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .base import StudyData
from .config import StudyConfig
from .evaluate import SCALAR_SCORES
from .outputs import atomic_write_text, scores_table

__all__ = [
    "Block",
    "build_blocks",
    "findings",
    "to_markdown",
    "to_html",
    "write_report",
    "summary_lines",
]


@dataclass
class Block:
    """One piece of the report: ``kind`` is ``"h1"``, ``"h2"``, ``"p"``, ``"table"``,
    ``"list"`` or ``"figure"``; ``content`` is text, ``(header, rows)``, items, or
    ``(caption, path relative to the report)``."""

    kind: str
    content: Any


_COLUMNS = ("crps", "rmse", "coverage90", "spread_skill", "miscalibration_area", "sharpness")

#: A spread whose coefficient of variation is below this is called nearly constant.
CONSTANT_SPREAD = 0.05
#: A mean whose spatial variation is below this fraction of the observations' is called flat.
FLAT_MEAN = 0.1


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _ci(scores: xr.Dataset, name: str, **sel: Any) -> str:
    """``value [lower, upper]`` of a score with bootstrap bounds, else the value."""
    value = float(scores[name].sel(**sel))
    if f"{name}_lower" not in scores:
        return _fmt(value)
    lo, hi = float(scores[f"{name}_lower"].sel(**sel)), float(scores[f"{name}_upper"].sel(**sel))
    return f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]"


def _lead_labels(scores: xr.Dataset, lead_dim: str) -> list[str]:
    out = []
    for v in scores[lead_dim].values:
        try:
            out.append(f"{float(v):.3g}")
        except (TypeError, ValueError):
            out.append(str(v))
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def findings(scores: xr.Dataset, data: StudyData) -> list[str]:
    """Plain-words warnings: negative skill, constant spreads or means, miscoverage, and what
    the per-lead recalibration kept."""
    lead_dim = data.lead_dim
    labels = _lead_labels(scores, lead_dim)
    level = float(scores.attrs.get("ci_level", 0.9))
    out: list[str] = []
    models = [str(m) for m in scores["model"].values]
    if "skill" in scores:
        refs = [str(r) for r in scores["reference"].values]
        for ref in refs:
            for m in models:
                basic = ref in ("climatology", "persistence")
                if m == ref or (m in refs and not basic):
                    continue
                upper = scores["skill_upper"].sel(model=m, reference=ref).values
                lower = scores["skill_lower"].sel(model=m, reference=ref).values
                worse = [labels[k] for k in range(len(labels)) if upper[k] < 0]
                better = [labels[k] for k in range(len(labels)) if lower[k] > 0]
                if worse:
                    out.append(
                        f"**{m} is worse than {ref}** at {lead_dim.replace('_', ' ')} "
                        f"{_join(worse)}: its CRPS skill interval ({level:.0%}) lies below zero."
                    )
                elif m not in refs and not better:
                    out.append(
                        f"{m} is not distinguishable from {ref} at any lead: every skill "
                        "interval contains zero."
                    )
    for m in models:
        space = float(scores["spread_variation_space"].sel(model=m))
        time = float(scores["spread_variation_time"].sel(model=m))
        if np.isfinite(space) and space < CONSTANT_SPREAD:
            out.append(
                f"**{m}'s spread is nearly constant over space** (coefficient of variation "
                f"{space:.3f}): it does not say where the forecast is less certain."
            )
        if np.isfinite(time) and time < CONSTANT_SPREAD:
            out.append(
                f"**{m}'s spread is nearly constant from case to case** (coefficient of "
                f"variation {time:.3f}): it does not say when the forecast is less certain."
            )
        if "mean_structure_space" in scores:
            flat = float(scores["mean_structure_space"].sel(model=m))
            if np.isfinite(flat) and flat < FLAT_MEAN:
                out.append(
                    f"**{m}'s predictive mean is nearly spatially constant**: its spatial "
                    f"variation is {flat:.3f} of the observations'."
                )
        lo = float(scores["coverage90_lower"].sel(model=m, calibration="raw"))
        hi = float(scores["coverage90_upper"].sel(model=m, calibration="raw"))
        if hi < 0.9 or lo > 0.9:
            word = "too narrow" if hi < 0.9 else "too wide"
            out.append(
                f"{m}'s raw 90% intervals are {word}: they cover "
                f"{_ci(scores, 'coverage90', model=m, calibration='raw')} of the observations."
            )
    if "selected_method" in scores:
        for m in models:
            chosen = [str(v) for v in scores["selected_method"].sel(model=m).values]
            name = lead_dim.replace("_", " ")
            kept = [f"{name} {labels[k]}: {c}" for k, c in enumerate(chosen) if c and c != "raw"]
            if kept:
                raw = scores["selection_raw_crps"].sel(model=m).values
                best = scores["selection_chosen_crps"].sel(model=m).values
                gains = [
                    f"{(raw[k] - best[k]) / raw[k]:.2%}"
                    for k, c in enumerate(chosen)
                    if c and c != "raw"
                ]
                out.append(
                    f"Per-lead recalibration of {m} kept {'; '.join(kept)} (held-out "
                    f"validation CRPS lower by {_join(gains)}); elsewhere raw was kept, no "
                    "candidate beating it by more than one standard error."
                )
            else:
                out.append(
                    f"Per-lead recalibration of {m} kept the raw forecast at every lead: no "
                    "candidate improved the held-out validation CRPS by more than one "
                    "standard error."
                )
    return out


def build_blocks(
    cfg: StudyConfig,
    data: StudyData,
    scores: xr.Dataset,
    figures: list[tuple[str, Path]],
    out_dir: Path,
    *,
    command: str,
    wall_seconds: float,
    device: str,
) -> list[Block]:
    """The report content, shared by the Markdown and HTML writers."""
    blocks = [Block("h1", f"uqdyn study {cfg.name}: {data.title}")]
    quick = " (quick settings: reduced sizes, not a converged benchmark)" if cfg.quick else ""
    blocks.append(
        Block(
            "p",
            f"Command: `{command}`. Seed {cfg.seed}, device {device}{quick}. "
            f"Total wall time {wall_seconds:.1f} s.",
        )
    )
    blocks.append(Block("h2", "Data"))
    blocks.append(Block("list", [f"{k}: {v}" for k, v in data.summary.items()]))
    blocks.append(Block("h2", "Models"))
    blocks.append(
        Block(
            "list",
            [
                f"**{f.name}**: {f.description} ({f.fit_seconds:.1f} s; variance-scaling factor "
                f"{float(scores['variance_scale'].sel(model=f.name)):.3g})"
                for f in data.forecasts
            ],
        )
    )
    level = float(scores.attrs.get("ci_level", 0.9))
    block = int(scores.attrs.get("bootstrap_block", 1))
    how = (
        "blocks of consecutive cases, length chosen from the data (Politis & White)"
        if block == 0
        else ("single cases (independent)" if block == 1 else f"blocks of {block} cases")
    )
    notes = findings(scores, data)
    if notes:
        blocks.append(Block("h2", "Findings"))
        blocks.append(Block("list", notes))
    blocks.append(Block("h2", "Scores on the test cases"))
    unscored = int(scores.attrs.get("n_test_unscored", 0))
    blocks.append(
        Block(
            "p",
            f"{scores.attrs['n_test_cases']} test cases ({scores.attrs['n_test_points']} "
            "scored values"
            + (
                f"; {unscored} not observed or not forecast by every model, left out"
                if unscored
                else ""
            )
            + f"); recalibrations fitted on {scores.attrs['n_valid_cases']} validation cases "
            "(`selected`: chosen per lead by cross-validation on them). In brackets: the "
            f"{level:.0%} bootstrap interval ({scores.attrs.get('n_boot', 1000)} resamples of "
            f"{how}). "
            + "; ".join(f"{k}: {v}" for k, v in SCALAR_SCORES.items() if k in _COLUMNS)
            + ".",
        )
    )
    header = ["model", "calibration", *_COLUMNS]
    rows = []
    for m in scores["model"].values:
        for cal in scores["calibration"].values:
            rows.append(
                [str(m), str(cal), *(_ci(scores, c, model=m, calibration=cal) for c in _COLUMNS)]
            )
    blocks.append(Block("table", (header, rows)))
    lead_dim = data.lead_dim
    labels = _lead_labels(scores, lead_dim)
    blocks.append(Block("h2", f"CRPS per {lead_dim.replace('_', ' ')} (raw forecasts)"))
    header = ["model", *labels]
    rows = []
    for m in scores["model"].values:
        sel = {"model": m, "calibration": "raw"}
        values = scores["crps_by_lead"].sel(**sel).values
        lows = scores["crps_by_lead_lower"].sel(**sel).values
        highs = scores["crps_by_lead_upper"].sel(**sel).values
        rows.append(
            [
                str(m),
                *(
                    f"{_fmt(v)} [{_fmt(a)}, {_fmt(b)}]"
                    for v, a, b in zip(values, lows, highs, strict=True)
                ),
            ]
        )
    blocks.append(Block("table", (header, rows)))
    if "skill" in scores:
        for ref in scores["reference"].values:
            blocks.append(
                Block("h2", f"CRPS skill against {ref} per {lead_dim.replace('_', ' ')} (raw)")
            )
            blocks.append(
                Block(
                    "p",
                    f"1 - CRPS / CRPS_{ref}: positive is better than {ref}. In brackets the "
                    f"{level:.0%} block-bootstrap interval; 'all' pools every lead.",
                )
            )
            rows = []
            for m in scores["model"].values:
                if m == ref:
                    continue
                sel = {"model": m, "reference": ref}
                values = scores["skill"].sel(**sel).values
                lows = scores["skill_lower"].sel(**sel).values
                highs = scores["skill_upper"].sel(**sel).values
                total = scores["skill_all"].sel(**sel).values
                rows.append(
                    [
                        str(m),
                        *(
                            f"{v:+.3f} [{a:+.3f}, {b:+.3f}]"
                            for v, a, b in zip(values, lows, highs, strict=True)
                        ),
                        f"{total[0]:+.3f} [{total[1]:+.3f}, {total[2]:+.3f}]",
                    ]
                )
            blocks.append(Block("table", (["model", *labels, "all"], rows)))
    if "selected_method" in scores:
        blocks.append(Block("h2", "Recalibration kept per lead"))
        blocks.append(
            Block(
                "p",
                "For each lead the recalibration with the best held-out CRPS in a "
                "cross-validation over the validation cases replaces the raw forecast only "
                "if it wins by more than one standard error; the cell gives the method and "
                "its held-out CRPS against raw's.",
            )
        )
        rows = []
        for m in scores["model"].values:
            chosen = scores["selected_method"].sel(model=m).values
            raw = scores["selection_raw_crps"].sel(model=m).values
            best = scores["selection_chosen_crps"].sel(model=m).values
            rows.append(
                [
                    str(m),
                    *(
                        (f"{c} ({_fmt(b)} vs {_fmt(r)})" if c and c != "raw" else "raw")
                        for c, r, b in zip(chosen, raw, best, strict=True)
                    ),
                ]
            )
        blocks.append(Block("table", (["model", *labels], rows)))
    blocks.append(Block("h2", "Figures"))
    if not figures:
        blocks.append(Block("p", "Figures were not drawn (`evaluation.figures = false`)."))
    for caption, path in figures:
        blocks.append(Block("figure", (caption, path.relative_to(out_dir).as_posix())))
    blocks.append(Block("h2", "Files"))
    blocks.append(
        Block(
            "list",
            [
                "`scores.csv`, `scores.nc`: the scores above with their interval bounds "
                "(netCDF adds the curves behind the figures, the skill and the per-lead "
                "recalibration choices)",
                "`forecasts/<model>.nc`: test forecasts (mean, stddev, quantiles per "
                "calibration; ensemble members for ensembles) with the observations",
                "`config.toml`: the exact configuration; rerun with `--config config.toml`",
                "`figures/*.png`",
            ],
        )
    )
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    """Render the blocks as Markdown."""
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.content}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.content}", ""]
        elif b.kind == "p":
            lines += [b.content, ""]
        elif b.kind == "list":
            lines += [f"- {item}" for item in b.content] + [""]
        elif b.kind == "table":
            header, rows = b.content
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        elif b.kind == "figure":
            caption, rel = b.content
            lines += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape text and render `code` and **bold** spans."""
    out = html.escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { font-style: italic; color: #555; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def to_html(blocks: list[Block], out_dir: Path) -> str:
    """Render the blocks as one HTML page with every figure embedded as base64 PNG."""
    title = next((b.content for b in blocks if b.kind == "h1"), "uqdyn study")
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{_inline(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            header, rows = b.content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif b.kind == "figure":
            caption, rel = b.content
            data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(out_dir: Path, blocks: list[Block]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``."""
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(page, to_html(blocks, out_dir))
    return md, page


def summary_lines(scores: xr.Dataset) -> list[str]:
    """A plain-text table of the scalar scores, for the terminal."""
    header = ["model", "calibration", "CRPS", "RMSE", "cov90", "SSR", "miscal"]
    rows = [
        [
            r["model"],
            r["calibration"],
            _fmt(r["crps"]),
            _fmt(r["rmse"]),
            f"{r['coverage90']:.3f}",
            f"{r['spread_skill']:.3f}",
            f"{r['miscalibration_area']:.3f}",
        ]
        for r in scores_table(scores)
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*row) for row in rows
    ]
