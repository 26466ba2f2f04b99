"""Verification figures draw what the results hold and write PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from uqdyn.calibration.corp import corp_decomposition, corp_reliability  # noqa: E402
from uqdyn.calibration.murphy import murphy_diagram  # noqa: E402
from uqdyn.scoring.decomposition import crps_decomposition  # noqa: E402
from uqdyn.study.verification_figures import (  # noqa: E402
    plot_corp_reliability,
    plot_crps_decomposition,
    plot_hersbach_reliability,
    plot_murphy,
    save_png,
)


def _by_gid(artists, gid):
    found = [a for a in artists if a.get_gid() == gid]
    assert len(found) == 1, [a.get_gid() for a in artists]
    return found[0]


def _is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corp_reliability_plot(tmp_path) -> None:
    rng = np.random.default_rng(0)
    p = np.round(rng.uniform(size=400), 2)
    o = (rng.uniform(size=400) < p**1.3).astype(float)
    r = corp_reliability(o, p, n_resamples=50)
    ax = plot_corp_reliability(r, label="model")
    line = _by_gid(ax.lines, "recalibrated")
    np.testing.assert_array_equal(line.get_xdata(), r.forecast_values)
    np.testing.assert_array_equal(line.get_ydata(), r.recalibrated_values)
    assert line.get_drawstyle() == "steps-post" and line.get_label() == "model"
    np.testing.assert_array_equal(_by_gid(ax.lines, "diagonal").get_xdata(), [0.0, 1.0])
    band = _by_gid(ax.collections, "band")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(r.band_lower.min()) and ys.max() == pytest.approx(
        r.band_upper.max()
    )
    text = _by_gid(ax.texts, "decomposition").get_text()
    assert f"MCB {r.mcb:.4f}" in text and f"UNC {r.unc:.4f}" in text
    assert _is_png(save_png(ax, tmp_path / "corp.png"))
    q = corp_decomposition(o + p, p, functional="quantile", level=0.9)
    ax_q = plot_corp_reliability(q)
    assert not [c for c in ax_q.collections if c.get_gid() == "band"]
    assert "0.9-quantile" in ax_q.get_xlabel()


def test_murphy_plot(tmp_path) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    diagrams = {
        "good": murphy_diagram(y, y + 0.3 * rng.normal(size=200), n_thetas=41),
        "bad": murphy_diagram(y, y + 1.0 + rng.normal(size=200), n_thetas=41),
    }
    ax = plot_murphy(diagrams)
    for name, m in diagrams.items():
        line = _by_gid(ax.lines, name)
        np.testing.assert_array_equal(line.get_xdata(), m.theta)
        np.testing.assert_array_equal(line.get_ydata(), m.score)
    assert _is_png(save_png(ax.figure, tmp_path / "murphy.png"))
    with pytest.raises(ValueError, match="expected one mean curve"):
        plot_murphy(murphy_diagram(y, y, reduction="none", n_thetas=5))


def test_crps_decomposition_plot(tmp_path) -> None:
    rng = np.random.default_rng(2)
    y = torch.tensor(rng.normal(size=300))
    decs = {
        "wide": crps_decomposition(y, torch.tensor(rng.normal(size=(300, 8)) * 2)),
        "biased": crps_decomposition(y, torch.tensor(rng.normal(size=(300, 8)) + 1)),
    }
    ax = plot_crps_decomposition(decs)
    for name, d in decs.items():
        (bars,) = [c for c in ax.containers if c.get_label() == name]
        heights = [b.get_height() for b in bars]
        assert [b.get_gid() for b in bars][1] == f"{name}:reliability"
        expected = [float(d.crps), float(d.reliability), float(d.resolution), float(d.uncertainty)]
        np.testing.assert_allclose(heights, expected, rtol=1e-12)
    assert _is_png(save_png(ax, tmp_path / "crps.png"))
    ax_r = plot_hersbach_reliability(decs)
    for name, d in decs.items():
        line = _by_gid(ax_r.lines, name)
        np.testing.assert_array_equal(line.get_xdata(), d.probability.numpy())
        np.testing.assert_array_equal(line.get_ydata(), d.obs_frequency.numpy())
    assert _is_png(save_png(ax_r, tmp_path / "hersbach.png"))
    per_site = crps_decomposition(y.reshape(100, 3), torch.randn(100, 3, 4, dtype=y.dtype), dim=0)
    with pytest.raises(ValueError, match="expected one decomposition"):
        plot_crps_decomposition(per_site)
    with pytest.raises(TypeError, match="expected a CRPSDecomposition"):
        plot_crps_decomposition({"x": 1.0})
