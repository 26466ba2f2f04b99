"""Brier, threshold Brier, contingency, quantile, interval and log scores against references."""

from __future__ import annotations

import math

import numpy as np
import properscoring as ps
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from uqdyn.scoring import (
    brier_score,
    contingency_scores,
    crps_ensemble,
    interval_score,
    log_score,
    log_score_normal,
    quantile_score,
    threshold_brier_score,
)

sr = pytest.importorskip("scoringrules")


def test_brier_score_matches_scoringrules():
    rng = np.random.default_rng(0)
    obs = (rng.uniform(size=100) < 0.4).astype(float)
    prob = rng.uniform(size=100)
    np.testing.assert_allclose(brier_score(obs, prob), sr.brier_score(obs, prob), atol=1e-12)
    np.testing.assert_allclose(brier_score(obs, prob), ps.brier_score(obs, prob), atol=1e-12)
    with pytest.raises(ValueError, match="obs_event"):
        brier_score(np.array([0.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="prob"):
        brier_score(np.array([1.0]), np.array([1.5]))


@settings(max_examples=25, deadline=None)
@given(
    y=st.floats(-3, 3),
    members=st.lists(st.floats(-3, 3), min_size=1, max_size=10),
    thresholds=st.lists(st.floats(-3, 3), min_size=1, max_size=5, unique=True),
)
def test_threshold_brier_score_matches_properscoring(y, members, thresholds):
    # sorted distinct thresholds (both tools need them), 1-d observations with numpy >= 2.5
    x, t, obs = np.array(members)[None, :], np.sort(thresholds), np.array([y])
    got = threshold_brier_score(obs, x, t)
    np.testing.assert_allclose(got, ps.threshold_brier_score(obs, x, t), atol=1e-12)


def test_threshold_brier_integrates_to_crps(device):
    """int BS_t dt over all thresholds is the standard ensemble CRPS (Riemann sum)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(3, generator=gen, dtype=torch.float64).to(device)
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    tbs = threshold_brier_score(y, x, grid)
    assert tbs.shape == (3, 16001)
    integral = tbs[:, :-1].sum(-1) * (grid[1] - grid[0]).item()
    torch.testing.assert_close(integral, crps_ensemble(y, x), atol=2e-3, rtol=0)


def test_threshold_brier_nan_and_xarray():
    x = np.array([[0.0, 1.0], [np.nan, 1.0]])
    y = np.array([0.5, 0.5])
    out = threshold_brier_score(y, x, [0.0, 1.0])
    assert np.isnan(out[1]).all() and not np.isnan(out[0]).any()
    fc = xr.DataArray(x[:1], dims=("site", "member"), coords={"site": ["a"]})
    obs = xr.DataArray(y[:1], dims="site", coords={"site": ["a"]})
    da = threshold_brier_score(obs, fc, [0.0, 1.0])
    assert da.dims == ("site", "threshold") and list(da.threshold.values) == [0.0, 1.0]
    np.testing.assert_allclose(da.values, [[0.25, 0.0]])


def _contingency_reference(o, f, thr):
    oe, fe = o >= thr, f >= thr
    h, m = np.sum(oe & fe), np.sum(oe & ~fe)
    fa, cn = np.sum(~oe & fe), np.sum(~oe & ~fe)
    n = h + m + fa + cn
    expected = ((h + m) * (h + fa) + (cn + m) * (cn + fa)) / n
    hss = (h + cn - expected) / (n - expected)  # the textbook (accuracy - chance) form
    return {
        "csi": h / (h + m + fa),
        "pod": h / (h + m),
        "far": fa / (h + fa),
        "hss": hss,
        "hits": h,
        "misses": m,
        "false_alarms": fa,
        "correct_negatives": cn,
    }


def test_contingency_scores_against_counts(device):
    rng = np.random.default_rng(2)
    o = rng.gamma(0.5, 2.0, size=(4, 50))
    f = o + rng.normal(0, 1.0, size=(4, 50))
    ref = _contingency_reference(o, f, 1.0)
    got = contingency_scores(torch.tensor(o, device=device), torch.tensor(f, device=device), 1.0)
    for key, value in ref.items():
        assert float(got[key]) == pytest.approx(float(value), abs=1e-12), key
    per_row = contingency_scores(o, f, 1.0, dim=1)
    assert per_row["csi"].shape == (4,)
    for i in range(4):
        assert per_row["csi"][i] == pytest.approx(_contingency_reference(o[i], f[i], 1.0)["csi"])


def test_contingency_nan_mask_and_xarray():
    o = np.array([2.0, 0.0, 3.0, np.nan])
    f = np.array([2.0, 2.0, 0.0, 5.0])
    assert np.isnan(contingency_scores(o, f, 1.0)["hits"])
    skip = contingency_scores(o, f, 1.0, skipna=True)
    assert (skip["hits"], skip["misses"], skip["false_alarms"]) == (1.0, 1.0, 1.0)
    masked = contingency_scores(o, f, 1.0, mask=np.array([True, False, True, False]))
    assert (masked["hits"], masked["false_alarms"]) == (1.0, 0.0)
    da_o = xr.DataArray(o[:3].reshape(1, 3), dims=("t", "x"), coords={"t": [5]})
    da_f = xr.DataArray(f[:3].reshape(1, 3), dims=("t", "x"), coords={"t": [5]})
    out = contingency_scores(da_o, da_f, 1.0, dim="x")
    assert out["csi"].dims == ("t",) and out["csi"].t.values.tolist() == [5]
    assert float(out["csi"][0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="dim"):
        contingency_scores(o, f, 1.0, dim=3)


@settings(max_examples=25, deadline=None)
@given(y=st.floats(-5, 5), q=st.floats(-5, 5), tau=st.floats(0.01, 0.99))
def test_quantile_score_matches_scoringrules(y, q, tau):
    got = quantile_score(np.array([y]), np.array([q]), tau)
    assert got.item() == pytest.approx(float(sr.quantile_score(y, q, tau)), abs=1e-12)
    assert got.item() >= 0


def test_quantile_score_is_minimised_by_true_quantile():
    """The expected pinball loss under N(0,1) (numerical quadrature) is minimal at the quantile."""
    tau = 0.8
    grid = np.linspace(-8, 8, 40001)
    pdf = stats.norm.pdf(grid)

    def expected(q):
        return np.trapezoid(quantile_score(grid, np.full_like(grid, q), tau) * pdf, grid)

    true_q = stats.norm.ppf(tau)
    assert expected(true_q) < expected(true_q + 0.05) and expected(true_q) < expected(true_q - 0.05)


def test_interval_score_matches_scoringrules():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    lo = rng.normal(-1, 0.3, size=200)
    hi = lo + rng.uniform(0.1, 2, size=200)
    got = interval_score(y, lo, hi, 0.9)
    np.testing.assert_allclose(got, sr.interval_score(y, lo, hi, 0.1), atol=1e-10)
    with pytest.raises(ValueError, match="lower > upper"):
        interval_score(y, hi, lo, 0.9)
    with pytest.raises(ValueError, match="level"):
        interval_score(y, lo, hi, 1.5)


def test_log_scores(device):
    from uqdyn.predictive import Normal

    gen = torch.Generator().manual_seed(4)
    y, mu = torch.randn(2, 30, generator=gen, dtype=torch.float64).to(device)
    sigma = (torch.rand(30, generator=gen, dtype=torch.float64) + 0.2).to(device)
    ref = -stats.norm.logpdf(y.cpu().numpy(), mu.cpu().numpy(), sigma.cpu().numpy())
    np.testing.assert_allclose(log_score_normal(y, mu, sigma).cpu(), ref, atol=1e-12)
    np.testing.assert_allclose(log_score(y, Normal(mu, sigma)).cpu(), ref, atol=1e-12)
    np.testing.assert_allclose(
        sr.logs_normal(y.cpu().numpy(), mu.cpu().numpy(), sigma.cpu().numpy()), ref, atol=1e-12
    )
    with pytest.raises(TypeError, match="Predictive"):
        log_score(y, mu)
    with pytest.raises(ValueError, match="sigma"):
        log_score_normal(y, mu, -sigma)
    assert math.isnan(float(log_score_normal(math.nan, 0.0, 1.0)))


def test_threshold_brier_conventions():
    rng = np.random.default_rng(9)
    y, x = rng.normal(size=(4, 5)), rng.normal(size=(4, 5, 6))
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_brier_score(y, x, [0.5, 0.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_brier_score(y, x, [0.0, 0.0])
    lat = np.cos(np.deg2rad([0.0, 20.0, 40.0, 60.0]))[:, None]
    with pytest.raises(ValueError, match="weights has 1 NaN"):
        threshold_brier_score(y, x, [0.0], dim=0, weights=np.where(lat == 1.0, np.nan, lat))
    full = threshold_brier_score(y, x, [-0.5, 0.5])
    got = threshold_brier_score(y, x, [-0.5, 0.5], dim=0, weights=lat)
    assert got.shape == (5, 2)  # the threshold axis is never reduced
    np.testing.assert_allclose(got, (lat[..., None] * full).sum(0) / lat.sum())
    x[0, 0, 3] = np.nan
    omitted = threshold_brier_score(y, x, [-0.5, 0.5], nan_policy="omit")
    kept = np.delete(x[0, 0], 3)[None]
    np.testing.assert_allclose(omitted[0, 0], threshold_brier_score(y[0, :1], kept, [-0.5, 0.5])[0])


def test_contingency_weights_and_nan_policy():
    rng = np.random.default_rng(10)
    o, f = rng.gamma(0.5, 2.0, size=30), rng.gamma(0.5, 2.0, size=30)
    w = rng.integers(0, 3, size=30).astype(float)
    got = contingency_scores(o, f, 1.0, weights=w)
    rep_o, rep_f = np.repeat(o, w.astype(int)), np.repeat(f, w.astype(int))
    ref = contingency_scores(rep_o, rep_f, 1.0)
    for key in ("hits", "misses", "csi", "hss"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-12)
    o[2] = np.nan
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        contingency_scores(o, f, 1.0, nan_policy="raise")
    np.testing.assert_allclose(
        contingency_scores(o, f, 1.0, nan_policy="omit")["csi"],
        contingency_scores(np.delete(o, 2), np.delete(f, 2), 1.0)["csi"],
    )
