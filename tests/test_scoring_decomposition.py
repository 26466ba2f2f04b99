"""Hersbach decomposition of the ensemble CRPS against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.scoring.crps_ensemble import crps_ensemble
from uqdyn.scoring.decomposition import crps_decomposition


def _data(cases: int = 400, members: int = 6, seed: int = 0, shift: float = 0.3):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=cases) * 1.5
    x = rng.normal(size=(cases, members)) + shift
    y[:10] += 8.0  # outliers above and below the ensemble range
    y[10:20] -= 8.0
    return y, x


def _hersbach_loop(y: np.ndarray, x: np.ndarray):
    """Hersbach (2000) table 1 and eqs. 29-34, case by case with explicit branches."""
    cases, m = x.shape
    a = np.zeros(m + 1)
    b = np.zeros(m + 1)
    n_below = n_above = 0
    for k in range(cases):
        xs = np.sort(x[k])
        yk = y[k]
        for i in range(1, m):
            lo, hi = xs[i - 1], xs[i]
            if yk > hi:
                a[i] += hi - lo
            elif yk < lo:
                b[i] += hi - lo
            else:
                a[i] += yk - lo
                b[i] += hi - yk
        if yk < xs[0]:
            b[0] += xs[0] - yk
            n_below += 1
        if yk > xs[-1]:
            a[m] += yk - xs[-1]
            n_above += 1
    a /= cases
    b /= cases
    g = a + b
    o = np.divide(b, g, out=np.zeros_like(g), where=g > 0)
    o[0] = n_below / cases
    g[0] = b[0] / o[0] if o[0] > 0 else 0.0
    o[m] = 1 - n_above / cases
    g[m] = a[m] / (1 - o[m]) if o[m] < 1 else 0.0
    p = np.arange(m + 1) / m
    return g, o, (g * (o - p) ** 2).sum(), (g * o * (1 - o)).sum()


def _dense_uncertainty(y: np.ndarray) -> float:
    """integral of P(1-P) for the empirical CDF of y, by the exact piecewise-constant sum."""
    ys = np.sort(y)
    mids = 0.5 * (ys[1:] + ys[:-1])
    cdf = (y[None, :] <= mids[:, None]).mean(1)
    return float((np.diff(ys) * cdf * (1 - cdf)).sum())


def test_reliability_plus_potential_is_the_mean_crps_with_outliers() -> None:
    y, x = _data()
    d = crps_decomposition(torch.tensor(y), torch.tensor(x))
    mean_crps = crps_ensemble(torch.tensor(y), torch.tensor(x), estimator="nrg").mean()
    assert abs(float(d.reliability + d.potential) - float(mean_crps)) < 1e-12
    assert abs(float(d.crps) - float(mean_crps)) < 1e-12
    assert float(d.resolution) == pytest.approx(float(d.uncertainty - d.potential), abs=1e-15)


def test_bins_match_a_case_by_case_loop() -> None:
    y, x = _data(cases=60, members=5, seed=3)
    x[0, 1] = x[0, 2]  # a tie between members
    y[1] = x[1, 0]  # an observation on a member
    g, o, reli, pot = _hersbach_loop(y, x)
    d = crps_decomposition(y, x)
    np.testing.assert_allclose(d.bin_width, g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d.obs_frequency, o, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d.probability, np.arange(6) / 5)
    assert float(d.reliability) == pytest.approx(reli, rel=1e-12)
    assert float(d.potential) == pytest.approx(pot, rel=1e-12)


def test_uncertainty_is_the_crps_of_the_sample_climatology() -> None:
    y, x = _data(cases=300, seed=1)
    d = crps_decomposition(y, x)
    assert float(d.uncertainty) == pytest.approx(_dense_uncertainty(y), rel=1e-12)
    clim = np.tile(y, (y.size, 1))
    assert float(d.uncertainty) == pytest.approx(float(crps_ensemble(y, clim).mean()), rel=1e-12)


def test_a_calibrated_ensemble_has_small_reliability_and_a_biased_one_large() -> None:
    rng = np.random.default_rng(5)
    mu = rng.normal(size=4000)
    y = mu + rng.normal(size=4000)
    good = crps_decomposition(y, mu[:, None] + rng.normal(size=(4000, 10)))
    bad = crps_decomposition(y, mu[:, None] + 1.5 + 0.3 * rng.normal(size=(4000, 10)))
    assert float(good.reliability) < 0.03 * float(good.crps)
    assert float(bad.reliability) > 0.3 * float(bad.crps)
    assert float(good.resolution) > 0


def test_dim_weights_and_xarray() -> None:
    y, x = _data(cases=120, members=4, seed=2)
    y2, x2 = y.reshape(40, 3), x.reshape(40, 3, 4)
    d = crps_decomposition(torch.tensor(y2), torch.tensor(x2), dim=0)
    assert d.crps.shape == (3,) and d.bin_width.shape == (3, 5)
    for j in range(3):
        dj = crps_decomposition(y2[:, j], x2[:, j])
        assert float(d.crps[j]) == pytest.approx(float(dj.crps), rel=1e-12)
        assert float(d.uncertainty[j]) == pytest.approx(float(dj.uncertainty), rel=1e-12)
    # integer case weights equal duplicated cases
    w = np.arange(1, 41) % 3 + 1.0
    dw = crps_decomposition(y2[:, 0], x2[:, 0], dim=0, weights=w)
    rep = np.repeat(np.arange(40), w.astype(int))
    dr = crps_decomposition(y2[rep, 0], x2[rep, 0])
    for field in ("crps", "reliability", "potential", "uncertainty"):
        assert float(getattr(dw, field)) == pytest.approx(float(getattr(dr, field)), rel=1e-12)
    ya = xr.DataArray(y2, dims=("time", "site"), coords={"site": [10, 20, 30]})
    xa = xr.DataArray(x2, dims=("time", "site", "member"))
    da = crps_decomposition(ya, xa, dim="time")
    assert isinstance(da.crps, xr.DataArray) and da.crps.dims == ("site",)
    assert list(da.crps.site.values) == [10, 20, 30]
    assert da.bin_width.dims == ("site", "bin")
    np.testing.assert_allclose(da.crps.values, d.crps.numpy(), rtol=1e-12)
    # xarray weights are matched by dim name; one member gives CRPS = |x - y|
    lat_w = np.cos(np.linspace(0.0, 1.0, 3))
    dxw = crps_decomposition(ya, xa, weights=xr.DataArray(lat_w, dims="site"))
    dnw = crps_decomposition(y2, x2, weights=lat_w)
    assert float(dxw.crps) == pytest.approx(float(dnw.crps), rel=1e-12)
    assert float(dxw.uncertainty) == pytest.approx(float(dnw.uncertainty), rel=1e-12)
    one = crps_decomposition(y, x[:, :1])
    assert float(one.reliability + one.potential) == pytest.approx(
        float(np.abs(x[:, 0] - y).mean()), rel=1e-12
    )


def test_nan_policy_and_mask() -> None:
    y, x = _data(cases=50, seed=4)
    yn, xn = y.copy(), x.copy()
    yn[3] = np.nan
    xn[7, 2] = np.nan
    assert np.isnan(crps_decomposition(yn, xn).crps)
    omit = crps_decomposition(yn, xn, nan_policy="omit")
    keep = np.ones(50, bool)
    keep[[3, 7]] = False
    ref = crps_decomposition(y[keep], x[keep])
    for field in ("crps", "reliability", "potential", "uncertainty"):
        assert float(getattr(omit, field)) == pytest.approx(float(getattr(ref, field)), rel=1e-12)
    masked = crps_decomposition(y, x, mask=keep)
    assert float(masked.uncertainty) == pytest.approx(float(ref.uncertainty), rel=1e-12)
    assert float(masked.crps) == pytest.approx(float(ref.crps), rel=1e-12)
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        crps_decomposition(yn, xn, nan_policy="raise")


def test_bad_arguments() -> None:
    y, x = _data(cases=10)
    with pytest.raises(ValueError, match="reduction='sum'"):
        crps_decomposition(y, x, reduction="sum")
    with pytest.raises(ValueError, match="nan_policy"):
        crps_decomposition(y, x, nan_policy="drop")
    with pytest.raises(ValueError, match="no case is left"):
        crps_decomposition(y, x, mask=np.zeros(10, bool))
    with pytest.raises(ValueError, match="dim=3"):
        crps_decomposition(y, x, dim=3)
