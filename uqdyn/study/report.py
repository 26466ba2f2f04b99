"""The study report: one Markdown file and one self-contained HTML page (figures inlined)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from .base import StudyData
from .config import StudyConfig
from .evaluate import SCALAR_SCORES
from .outputs import atomic_write_text, scores_table

__all__ = ["Block", "build_blocks", "to_markdown", "to_html", "write_report", "summary_lines"]


@dataclass
class Block:
    """One piece of the report: ``kind`` is ``"h1"``, ``"h2"``, ``"p"``, ``"table"``,
    ``"list"`` or ``"figure"``; ``content`` is text, ``(header, rows)``, items, or
    ``(caption, path relative to the report)``."""

    kind: str
    content: Any


_COLUMNS = ("crps", "rmse", "coverage90", "spread_skill", "miscalibration_area", "sharpness")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


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
    blocks.append(Block("h2", "Scores on the test cases"))
    blocks.append(
        Block(
            "p",
            f"{scores.attrs['n_test_cases']} test cases ({scores.attrs['n_test_points']} "
            f"values); recalibrations fitted on {scores.attrs['n_valid_cases']} validation "
            "cases. "
            + "; ".join(f"{k}: {v}" for k, v in SCALAR_SCORES.items() if k in _COLUMNS)
            + ".",
        )
    )
    header = ["model", "calibration", *_COLUMNS]
    rows = [
        [r["model"], r["calibration"], *(_fmt(r[c]) for c in _COLUMNS)]
        for r in scores_table(scores)
    ]
    blocks.append(Block("table", (header, rows)))
    lead_dim = data.lead_dim
    leads = [float(v) for v in scores[lead_dim].values]
    blocks.append(Block("h2", f"CRPS per {lead_dim.replace('_', ' ')} (raw forecasts)"))
    header = ["model", *(f"{v:.3g}" for v in leads)]
    rows = [
        [
            str(m),
            *(
                _fmt(float(v))
                for v in scores["crps_by_lead"].sel(model=m, calibration="raw").values
            ),
        ]
        for m in scores["model"].values
    ]
    blocks.append(Block("table", (header, rows)))
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
                "`scores.csv`, `scores.nc`: the scores above (netCDF adds the curves behind "
                "the figures)",
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
