"""Verification figures: CORP reliability diagrams, Murphy diagrams, CRPS decompositions.

Each function draws on a given matplotlib ``Axes`` or, without one, on a new
``matplotlib.figure.Figure`` (Agg canvas; the pyplot state is never touched), and returns the
``Axes``. :func:`save_png` writes a figure atomically. The artists carry ``gid`` names
(``"recalibrated"``, ``"band"``, ``"diagonal"``, a forecast's name) so that they can be found
again.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from uqdyn.calibration.corp import CORPDecomposition, CORPReliability
from uqdyn.calibration.murphy import MurphyDiagram
from uqdyn.scoring.decomposition import CRPSDecomposition

__all__ = [
    "plot_corp_reliability",
    "plot_murphy",
    "plot_crps_decomposition",
    "plot_hersbach_reliability",
    "save_png",
]


def _axes(ax: Any, width: float = 4.2, height: float = 3.8) -> Any:
    if ax is not None:
        return ax
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a plot dependency
        raise ImportError(
            "verification figures need matplotlib; install it with `pip install uqdyn[plot]`"
        ) from err
    return Figure(figsize=(width, height)).add_subplot()


def save_png(fig_or_ax: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Write the figure of ``fig_or_ax`` (a Figure or an Axes) to ``path`` as PNG, atomically."""
    from .outputs import atomic_write_bytes

    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_corp_reliability(
    result: CORPDecomposition, ax: Any = None, *, label: str | None = None, color: str = "C0"
) -> Any:
    """CORP reliability diagram of :func:`uqdyn.calibration.corp_reliability` (or any
    :class:`~uqdyn.calibration.corp.CORPDecomposition`).

    Draws the diagonal (``gid="diagonal"``), the consistency band where the result has one
    (``gid="band"``, a step band), the recalibrated step curve (``gid="recalibrated"``, its
    data are ``(forecast_values, recalibrated_values)``) and a box with the score and its
    ``MCB``, ``DSC``, ``UNC`` terms.
    """
    if not isinstance(result, CORPDecomposition):
        raise TypeError(
            f"result is a {type(result).__name__}; expected the result of corp_reliability "
            "or corp_decomposition"
        )
    ax = _axes(ax)
    x, y = result.forecast_values, result.recalibrated_values
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    if result.functional == "mean" and isinstance(result, CORPReliability):
        lo, hi = 0.0, 1.0
    (diag,) = ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1)
    diag.set_gid("diagonal")
    if isinstance(result, CORPReliability) and result.band_lower is not None:
        band = ax.fill_between(
            x,
            result.band_lower,
            result.band_upper,
            step="post",
            color=color,
            alpha=0.2,
            lw=0,
            label=f"{100 * result.band_level:.0f}% consistency band",
        )
        band.set_gid("band")
    (line,) = ax.step(x, y, where="post", color=color, lw=1.8, label=label or "CORP")
    line.set_gid("recalibrated")
    what = "Brier" if isinstance(result, CORPReliability) else "score"
    ax.text(
        0.03,
        0.97,
        f"{what} {result.score:.4f}\nMCB {result.mcb:.4f}\nDSC {result.dsc:.4f}\n"
        f"UNC {result.unc:.4f}",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        family="monospace",
        gid="decomposition",
    )
    if result.functional == "mean":
        ax.set_xlabel("forecast probability" if isinstance(result, CORPReliability) else "forecast")
        ax.set_ylabel("conditional event probability (PAV)")
    else:
        ax.set_xlabel(f"forecast {result.level:g}-quantile")
        ax.set_ylabel("recalibrated quantile (isotonic)")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def _named(items: Any, kind: type, what: str) -> dict[str, Any]:
    if isinstance(items, kind):
        return {"forecast": items}
    if isinstance(items, Mapping) and items and all(isinstance(v, kind) for v in items.values()):
        return {str(k): v for k, v in items.items()}
    raise TypeError(
        f"{what} is a {type(items).__name__}; expected a {kind.__name__} or a non-empty "
        f"mapping of names to {kind.__name__}"
    )


def _scalar(value: Any, name: str) -> float:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(getattr(value, "values", value), dtype=np.float64)
    if arr.size != 1:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected one decomposition (select a point, or "
            "pool the cases with dim=None)"
        )
    return float(arr.reshape(()))


def plot_murphy(diagrams: Any, ax: Any = None) -> Any:
    """Murphy diagram: mean elementary score against the threshold, one line per forecast.

    ``diagrams`` is a :class:`~uqdyn.calibration.murphy.MurphyDiagram` of a pooled mean
    (score of shape ``(T,)``) or a mapping of forecast names to them; each line has the
    forecast's name as ``gid`` and label, and its data are ``(theta, score)``.
    """
    named = _named(diagrams, MurphyDiagram, "diagrams")
    ax = _axes(ax, 5.0, 3.6)
    for i, (name, m) in enumerate(named.items()):
        score = np.asarray(getattr(m.score, "values", m.score), dtype=np.float64)
        if score.shape != m.theta.shape:
            raise ValueError(
                f"diagram {name!r} has scores of shape {score.shape}; expected one mean curve "
                f"of shape {m.theta.shape} (reduce over the points)"
            )
        (line,) = ax.plot(m.theta, score, color=f"C{i}", lw=1.5, label=name)
        line.set_gid(name)
    ax.set_xlabel(r"threshold $\theta$")
    ax.set_ylabel("mean elementary score")
    ax.legend(fontsize=8)
    return ax


_TERMS = ("crps", "reliability", "resolution", "uncertainty")


def plot_crps_decomposition(decompositions: Any, ax: Any = None) -> Any:
    """Grouped bars of the Hersbach terms: CRPS, reliability, resolution, uncertainty.

    ``decompositions`` is a pooled :class:`~uqdyn.scoring.decomposition.CRPSDecomposition`
    (0-d fields) or a mapping of forecast names to them; the bars of a forecast form one
    container labelled with the forecast's name, each bar with ``gid`` ``"<name>:<term>"``
    for the terms ``crps``, ``reliability``, ``resolution``, ``uncertainty``
    (``crps = reliability - resolution + uncertainty``).
    """
    named = _named(decompositions, CRPSDecomposition, "decompositions")
    ax = _axes(ax, 5.0, 3.6)
    n = len(named)
    width = 0.8 / n
    base = np.arange(len(_TERMS), dtype=np.float64)
    for i, (name, d) in enumerate(named.items()):
        heights = [_scalar(getattr(d, t), f"{name}.{t}") for t in _TERMS]
        bars = ax.bar(base + (i - (n - 1) / 2) * width, heights, width, label=name, color=f"C{i}")
        for patch, term in zip(bars, _TERMS, strict=True):
            patch.set_gid(f"{name}:{term}")
    ax.set_xticks(base)
    ax.set_xticklabels(["CRPS", "reliability", "resolution", "uncertainty"])
    ax.set_ylabel("score units")
    ax.legend(fontsize=8)
    return ax


def plot_hersbach_reliability(decompositions: Any, ax: Any = None) -> Any:
    """Hersbach's reliability diagram: observed frequency ``o_i`` against ``p_i = i/M`` per bin.

    ``decompositions`` as in :func:`plot_crps_decomposition` (pooled, bin fields of shape
    ``(M + 1,)``). One line per forecast (``gid`` its name, data ``(p_i, o_i)``), markers
    scaled by the mean bin width ``g_i``; the diagonal is ``o_i = p_i`` (``reliability = 0``).
    """
    named = _named(decompositions, CRPSDecomposition, "decompositions")
    ax = _axes(ax)
    (diag,) = ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1)
    diag.set_gid("diagonal")
    for i, (name, d) in enumerate(named.items()):
        p, o, g = (
            _vector(getattr(d, f), f"{name}.{f}")
            for f in ("probability", "obs_frequency", "bin_width")
        )
        (line,) = ax.plot(p, o, color=f"C{i}", lw=1.2, label=name)
        line.set_gid(name)
        size = 80.0 * g / g.max() if g.max() > 0 else np.full_like(g, 10.0)
        ax.scatter(p, o, s=size, color=f"C{i}", zorder=3)
    ax.set_xlabel("ensemble CDF between members, p_i = i / M")
    ax.set_ylabel("observed frequency o_i")
    ax.legend(fontsize=8)
    return ax


def _vector(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(getattr(value, "values", value), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected one decomposition (select a point, or "
            "pool the cases with dim=None)"
        )
    return arr
