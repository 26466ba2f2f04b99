"""Murphy diagrams: integral identities and the scores package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.calibration.murphy import murphy_diagram
from uqdyn.scoring.quantile import quantile_score


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.gamma(2.0, size=n)
    x = y + rng.normal(size=n) + 0.3
    return y, x


def _midpoints(y: np.ndarray, x: np.ndarray):
    """Midpoints and widths of the intervals between consecutive distinct breakpoints."""
    br = np.unique(np.concatenate([y, x]))
    return 0.5 * (br[1:] + br[:-1]), np.diff(br)


@pytest.mark.parametrize("level", [0.1, 0.5, 0.75])
def test_quantile_elementary_scores_integrate_to_the_pinball_loss(level: float) -> None:
    y, x = _data()
    mids, widths = _midpoints(y, x)  # the elementary score is constant between breakpoints
    m = murphy_diagram(y, x, functional="quantile", level=level, thetas=mids)
    integral = float((m.score * widths).sum())
    assert integral == pytest.approx(float(quantile_score(y, x, level).mean()), rel=1e-12)
    np.testing.assert_allclose(m.score, m.underforecast + m.overforecast, atol=1e-15)


@pytest.mark.parametrize("level", [0.2, 0.5])
def test_expectile_elementary_scores_integrate_to_half_the_expectile_score(level: float) -> None:
    y, x = _data(seed=1)
    mids, widths = _midpoints(y, x)  # linear between breakpoints: the midpoint rule is exact
    m = murphy_diagram(y, x, functional="expectile", level=level, thetas=mids)
    integral = float((m.score * widths).sum())
    expectile_score = np.mean(np.abs((y < x).astype(float) - level) * (x - y) ** 2)
    assert integral == pytest.approx(0.5 * expectile_score, rel=1e-12)
    if level == 0.5:
        assert integral == pytest.approx(np.mean((x - y) ** 2) / 4, rel=1e-12)


@pytest.mark.parametrize("functional", ["quantile", "expectile"])
def test_matches_scores_murphy_score(functional: str) -> None:
    continuous = pytest.importorskip("scores.continuous")
    y, x = _data(n=200, seed=2)
    thetas = np.linspace(-1, 8, 37)
    m = murphy_diagram(y, x, functional=functional, level=0.3, thetas=thetas)
    ref = continuous.murphy_score(
        xr.DataArray(x, dims="t"),
        xr.DataArray(y, dims="t"),
        thetas,
        functional=functional,
        alpha=0.3,
        decomposition=True,
    )
    np.testing.assert_allclose(m.score, ref["total"].values, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m.underforecast, ref["underforecast"].values, atol=1e-15)
    np.testing.assert_allclose(m.overforecast, ref["overforecast"].values, atol=1e-15)


def test_dims_kinds_weights_and_nan() -> None:
    y, x = _data(n=60, seed=3)
    y2, x2 = y.reshape(20, 3), x.reshape(20, 3)
    pointwise = murphy_diagram(torch.tensor(y2), torch.tensor(x2), reduction="none", n_thetas=11)
    assert pointwise.score.shape == (20, 3, 11) and pointwise.theta.shape == (11,)
    assert pointwise.theta[0] == pytest.approx(min(y.min(), x.min()))
    by_site = murphy_diagram(torch.tensor(y2), torch.tensor(x2), dim=0, n_thetas=11)
    torch.testing.assert_close(by_site.score, pointwise.score.mean(0))
    w = np.array([1.0, 2.0, 3.0])
    weighted = murphy_diagram(y2, x2, dim=1, weights=w, thetas=pointwise.theta)
    np.testing.assert_allclose(
        weighted.score, (pointwise.score.numpy() * w[:, None]).sum(1) / 6, rtol=1e-12
    )
    ya = xr.DataArray(y2, dims=("time", "site"), coords={"site": [1, 2, 3]})
    xa = xr.DataArray(x2, dims=("time", "site"), coords={"site": [1, 2, 3]})
    mx = murphy_diagram(ya, xa, dim="time", thetas=[0.5, 1.0, 2.0])
    assert mx.score.dims == ("site", "theta")
    np.testing.assert_allclose(mx.score.theta.values, [0.5, 1.0, 2.0])
    yn = y.copy()
    yn[0] = np.nan
    assert np.isnan(murphy_diagram(yn, x, n_thetas=5).score).all()
    omit = murphy_diagram(yn, x, thetas=[1.0, 2.0], nan_policy="omit")
    np.testing.assert_allclose(omit.score, murphy_diagram(y[1:], x[1:], thetas=[1.0, 2.0]).score)
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        murphy_diagram(yn, x, nan_policy="raise")


def test_bad_arguments() -> None:
    y, x = _data(n=5)
    with pytest.raises(ValueError, match="functional="):
        murphy_diagram(y, x, functional="mean")
    with pytest.raises(ValueError, match="level="):
        murphy_diagram(y, x, level=0.0)
    with pytest.raises(ValueError, match="thetas has shape"):
        murphy_diagram(y, x, thetas=np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_thetas"):
        murphy_diagram(y, x, n_thetas=1)
    with pytest.raises(ValueError, match="weights="):
        murphy_diagram(y, x, weights=np.ones(5), reduction="none")
