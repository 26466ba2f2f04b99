"""CORP reliability diagrams and decompositions against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import linprog

from uqdyn.calibration.corp import (
    corp_crps_decomposition,
    corp_decomposition,
    corp_reliability,
    isotonic_fit,
)
from uqdyn.scoring.quantile import crps_quantile


def _minmax_mean(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Brute-force isotonic regression: fit_i = min_{k >= i} max_{j <= i} mean(y_j..y_k)
    over the blocks of distinct forecast values (Robertson, Wright & Dykstra 1988, 1.4.4)."""
    distinct = np.unique(x)
    sums = np.array([y[x == v].sum() for v in distinct])
    counts = np.array([(x == v).sum() for v in distinct])
    m = distinct.size
    curve = np.empty(m)
    for i in range(m):
        curve[i] = min(
            max(sums[j : k + 1].sum() / counts[j : k + 1].sum() for j in range(i + 1))
            for k in range(i, m)
        )
    return curve[np.searchsorted(distinct, x)]


def _lp_quantile_isotonic_loss(y: np.ndarray, x: np.ndarray, tau: float) -> float:
    """Minimal mean pinball loss over fits non-decreasing in x (equal at ties), by LP."""
    distinct = np.unique(x)
    m, n = distinct.size, y.size
    g = np.searchsorted(distinct, x)
    # variables: z (m), u (n), v (n) with y_i - z_g(i) = u_i - v_i, u, v >= 0
    c = np.concatenate([np.zeros(m), np.full(n, tau / n), np.full(n, (1 - tau) / n)])
    a_eq = np.zeros((n, m + 2 * n))
    a_eq[np.arange(n), g] = 1.0
    a_eq[np.arange(n), m + np.arange(n)] = 1.0
    a_eq[np.arange(n), m + n + np.arange(n)] = -1.0
    a_ub = np.zeros((m - 1, m + 2 * n))
    a_ub[np.arange(m - 1), np.arange(m - 1)] = 1.0
    a_ub[np.arange(m - 1), np.arange(1, m)] = -1.0
    bounds = [(None, None)] * m + [(0, None)] * (2 * n)
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(m - 1), A_eq=a_eq, b_eq=y, bounds=bounds)
    assert res.status == 0
    return float(res.fun)


def _pinball(x: np.ndarray, y: np.ndarray, tau: float) -> float:
    return float(np.mean(((y < x).astype(float) - tau) * (x - y)))


def test_mean_pav_matches_the_min_max_formula_and_scores_isotonic_fit() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(size=80), 1)  # many ties
    y = (rng.uniform(size=80) < x**2).astype(float)
    fitted, distinct, curve = isotonic_fit(y, x)
    np.testing.assert_allclose(fitted, _minmax_mean(y, x), atol=1e-14)
    assert np.all(np.diff(curve) >= 0) and np.array_equal(distinct, np.unique(x))
    scores_prob = pytest.importorskip("scores.probability")
    ref = scores_prob.isotonic_fit(x, y, functional="mean")
    np.testing.assert_allclose(
        np.interp(distinct, ref["fcst_sorted"], ref["regression_values"]), curve, atol=1e-12
    )


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.8])
def test_quantile_pav_attains_the_linear_programming_optimum(tau: float) -> None:
    rng = np.random.default_rng(int(tau * 10))
    x = np.round(rng.normal(size=40), 1)
    y = 0.5 * x + rng.standard_t(3, size=40)
    d = corp_decomposition(y, x, functional="quantile", level=tau)
    fitted = d.recalibrated
    assert np.all(np.diff(d.recalibrated_values) >= 0)
    for v in np.unique(x):  # equal forecasts, equal recalibrated values
        assert np.ptp(fitted[x == v]) == 0
    assert _pinball(fitted, y, tau) == pytest.approx(
        _lp_quantile_isotonic_loss(y, x, tau), abs=1e-7
    )
    assert d.score - d.mcb == pytest.approx(_pinball(fitted, y, tau), abs=1e-14)


def test_decompositions_sum_back_exactly() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=500)
    o = (rng.uniform(size=500) < p**1.5).astype(float)
    r = corp_reliability(o, p, n_resamples=0)
    assert abs(r.score - (r.mcb - r.dsc + r.unc)) < 1e-12
    assert r.score == pytest.approx(float(np.mean((p - o) ** 2)), abs=1e-15)
    assert r.unc == pytest.approx(o.mean() * (1 - o.mean()), abs=1e-15)
    assert r.mcb >= 0 and r.dsc >= 0
    y = rng.normal(size=300)
    for functional, level in (("mean", 0.5), ("quantile", 0.3)):
        d = corp_decomposition(y, y + rng.normal(size=300), functional=functional, level=level)
        assert abs(d.score - (d.mcb - d.dsc + d.unc)) < 1e-12
        assert d.mcb >= 0 and d.dsc >= 0


def test_calibrated_forecast_stays_in_the_band_and_a_miscalibrated_one_does_not() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=2000)
    calibrated = corp_reliability((rng.uniform(size=2000) < p).astype(float), p, n_resamples=200)
    over = corp_reliability(
        (rng.uniform(size=2000) < 0.5 + 0.4 * (p - 0.5)).astype(float), p, n_resamples=200
    )
    inside = (calibrated.recalibrated_values >= calibrated.band_lower) & (
        calibrated.recalibrated_values <= calibrated.band_upper
    )
    assert inside.mean() > 0.8
    assert calibrated.mcb < 0.005
    inside_over = (over.recalibrated_values >= over.band_lower) & (
        over.recalibrated_values <= over.band_upper
    )
    assert inside_over.mean() < 0.5
    assert over.mcb > 5 * calibrated.mcb
    assert calibrated.band_lower.shape == calibrated.forecast_values.shape
    assert np.all(calibrated.band_lower <= calibrated.band_upper)
    # same seed, same band; another seed, another band
    o = (np.random.default_rng(9).uniform(size=2000) < p).astype(float)
    first = corp_reliability(o, p, n_resamples=50, seed=1)
    assert np.array_equal(
        first.band_lower, corp_reliability(o, p, n_resamples=50, seed=1).band_lower
    )
    assert not np.array_equal(
        first.band_upper, corp_reliability(o, p, n_resamples=50, seed=2).band_upper
    )


def test_crps_decomposition_over_quantile_levels() -> None:
    rng = np.random.default_rng(3)
    levels = (np.arange(9) + 0.5) / 9
    mu = rng.normal(size=400)
    y = mu + rng.normal(size=400)
    from scipy.stats import norm

    q = mu[:, None] + 1.3 * norm.ppf(levels)[None, :] + 0.2
    d = corp_crps_decomposition(y, q, levels)
    assert d.score == pytest.approx(float(crps_quantile(y, q, levels).mean()), rel=1e-12)
    assert abs(d.score - (d.mcb - d.dsc + d.unc)) < 1e-12
    assert len(d.per_level) == 9 and d.per_level[4].level == pytest.approx(0.5)
    assert d.mcb > 0 and d.dsc > 0
    qa = xr.DataArray(q, dims=("case", "quantile"))
    da = corp_crps_decomposition(xr.DataArray(y, dims="case"), qa, levels)
    assert da.score == pytest.approx(d.score, rel=1e-12)
    w = xr.DataArray(np.cos(np.linspace(0, 1.5, 400)), dims="case")
    dw = corp_crps_decomposition(xr.DataArray(y, dims="case"), qa, levels, weights=w)
    mean_w = float((crps_quantile(y, q, levels) * w.values).sum() / w.values.sum())
    assert dw.score == pytest.approx(mean_w, rel=1e-12)
    assert abs(dw.score - (dw.mcb - dw.dsc + dw.unc)) < 1e-12


def test_kinds_mask_and_nan_policy() -> None:
    rng = np.random.default_rng(4)
    p = rng.uniform(size=(20, 5))
    o = (rng.uniform(size=(20, 5)) < p).astype(float)
    rt = corp_reliability(torch.tensor(o), torch.tensor(p), n_resamples=0)
    assert isinstance(rt.recalibrated, torch.Tensor) and rt.recalibrated.shape == (20, 5)
    r32 = corp_reliability(
        torch.tensor(o > 0.5), torch.tensor(p, dtype=torch.float32), n_resamples=0
    )
    assert r32.recalibrated.dtype == torch.float32
    np.testing.assert_allclose(r32.recalibrated.numpy(), rt.recalibrated.numpy(), atol=1e-6)
    rx = corp_reliability(
        xr.DataArray(o, dims=("t", "s")), xr.DataArray(p, dims=("t", "s")), n_resamples=0
    )
    assert isinstance(rx.recalibrated, xr.DataArray) and rx.recalibrated.dims == ("t", "s")
    np.testing.assert_allclose(rx.recalibrated.values, rt.recalibrated.numpy())
    pn = p.copy()
    pn[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        corp_reliability(o, pn, n_resamples=0)
    om = corp_reliability(o, pn, n_resamples=0, nan_policy="omit")
    keep = np.ones((20, 5), bool)
    keep[0, 0] = False
    ref = corp_reliability(o[keep], p[keep], n_resamples=0)
    assert om.n == 99 and om.mcb == pytest.approx(ref.mcb, abs=1e-15)
    assert np.isnan(om.recalibrated[0, 0])
    mk = corp_reliability(o, p, n_resamples=0, mask=keep)
    assert mk.score == pytest.approx(ref.score, abs=1e-15)


def test_bad_arguments() -> None:
    p = np.array([0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="obs_event has 1 entries that are not 0 or 1"):
        corp_reliability(np.array([0.0, 0.5, 1.0]), p)
    with pytest.raises(ValueError, match="prob has 1 entries outside"):
        corp_reliability(np.array([0.0, 1.0, 1.0]), np.array([0.1, 1.5, 0.2]))
    with pytest.raises(ValueError, match="functional="):
        corp_decomposition(p, p, functional="median")
    with pytest.raises(ValueError, match="level="):
        corp_decomposition(p, p, functional="quantile", level=1.0)
    with pytest.raises(ValueError, match="nan_policy="):
        corp_decomposition(p, p, nan_policy="propagate")
    with pytest.raises(ValueError, match="levels has 2 entries"):
        corp_crps_decomposition(p, np.ones((3, 3)), [0.25, 0.75])
    with pytest.raises(ValueError, match="n_resamples"):
        corp_reliability(np.array([0.0, 1.0, 1.0]), p, n_resamples=-1)


@pytest.mark.parametrize("functional", ["mean", "quantile"])
def test_integer_weights_equal_duplicated_points(functional: str) -> None:
    rng = np.random.default_rng(6)
    x = np.round(rng.normal(size=60), 1)
    y = x + rng.normal(size=60)
    w = rng.integers(0, 4, size=60).astype(float)  # zeros leave points out
    rep = np.repeat(np.arange(60), w.astype(int))
    dw = corp_decomposition(y, x, functional=functional, level=0.3, weights=w)
    dr = corp_decomposition(y[rep], x[rep], functional=functional, level=0.3)
    for field in ("score", "mcb", "dsc", "unc"):
        assert getattr(dw, field) == pytest.approx(getattr(dr, field), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(dw.recalibrated_values, dr.recalibrated_values, atol=1e-14)
    assert np.isnan(dw.recalibrated[w == 0]).all()
    p = 1 / (1 + np.exp(-x))
    o = (rng.uniform(size=60) < p).astype(float)
    rw = corp_reliability(o, p, weights=w, n_resamples=0)
    rr = corp_reliability(o[rep], p[rep], n_resamples=0)
    assert rw.mcb == pytest.approx(rr.mcb, rel=1e-12, abs=1e-15)
    assert corp_reliability(o, p, weights=w, n_resamples=20).band_lower.shape == (
        rw.forecast_values.size,
    )
    with pytest.raises(ValueError, match="negative"):
        corp_decomposition(y, x, weights=-w)
