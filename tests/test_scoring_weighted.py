"""Weighted CRPS: threshold-, outcome-weighted, vertically re-scaled and the Normal's twCRPS.

References: scoringrules 0.10 (twcrps/owcrps/vrcrps_ensemble), dense float64 pair sums written
out here, and float64 adaptive quadrature of int (F(z) - 1{y <= z})^2 w(z) dz.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import integrate, stats

from uqdyn.scoring.crps_ensemble import crps_ensemble
from uqdyn.scoring.crps_parametric import crps_censored_normal
from uqdyn.scoring.weighted import (
    owcrps_ensemble,
    twcrps_ensemble,
    twcrps_normal,
    vrcrps_ensemble,
)

sr = pytest.importorskip("scoringrules")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    fc = rng.normal(size=(40, 9))
    ew = rng.uniform(0.1, 1.0, size=(40, 9))
    return y, fc, ew


@pytest.mark.parametrize("estimator", ["nrg", "fair", "pwm"])
def test_twcrps_matches_scoringrules(data, estimator):
    y, fc, _ = data
    got = twcrps_ensemble(y, fc, threshold=0.3, estimator=estimator)
    np.testing.assert_allclose(got, sr.twcrps_ensemble(y, fc, 0.3, estimator=estimator), atol=1e-13)
    got = twcrps_ensemble(y, fc, threshold=(-0.5, 0.7), estimator=estimator)
    ref = sr.twcrps_ensemble(y, fc, -0.5, 0.7, estimator=estimator)
    np.testing.assert_allclose(got, ref, atol=1e-13)


def test_twcrps_member_weights_and_chain(data):
    y, fc, ew = data
    got = twcrps_ensemble(y, fc, threshold=0.3, member_weights=ew)
    ref = sr.twcrps_ensemble(y, fc, 0.3, ens_w=ew, estimator="nrg")
    np.testing.assert_allclose(got, ref, atol=1e-13)
    # a user chaining function: the smooth weight Phi(x) has v(x) = x Phi(x) + phi(x)
    chain = lambda x: x * torch.special.ndtr(x) + torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    got = twcrps_ensemble(y, fc, chain=chain, estimator="fair")
    ref = sr.twcrps_ensemble(
        y, fc, v_func=lambda x: x * stats.norm.cdf(x) + stats.norm.pdf(x), estimator="fair"
    )
    np.testing.assert_allclose(got, ref, atol=1e-13)
    # no threshold at all: the chain is the identity and the score is the CRPS
    got = twcrps_ensemble(y, fc, threshold=(None, None))
    np.testing.assert_allclose(got, crps_ensemble(y, fc), atol=1e-13)


def _dense_ow(y, fc, w):
    wx, wy = w(fc), w(y)
    wbar = wx.mean(-1)
    e1 = (np.abs(fc - y[:, None]) * wx).mean(-1) * wy / wbar
    pair = np.abs(fc[:, :, None] - fc[:, None, :]) * wx[:, :, None] * wx[:, None, :]
    return e1 - 0.5 * pair.mean((-1, -2)) * wy / wbar**2


def _dense_vr(y, fc, w):
    wx, wy = w(fc), w(y)
    e1 = (np.abs(fc - y[:, None]) * wx).mean(-1) * wy
    pair = np.abs(fc[:, :, None] - fc[:, None, :]) * wx[:, :, None] * wx[:, None, :]
    e3 = ((np.abs(fc) * wx).mean(-1) - np.abs(y) * wy) * (wx.mean(-1) - wy)
    return e1 - 0.5 * pair.mean((-1, -2)) + e3


def test_owcrps_vrcrps_match_scoringrules_and_dense(data):
    y, fc, ew = data
    ind = lambda x: (x >= -0.2) * 1.0  # noqa: E731
    ow = owcrps_ensemble(y, fc, threshold=-0.2)
    np.testing.assert_allclose(ow, sr.owcrps_ensemble(y, fc, -0.2), atol=1e-13)
    np.testing.assert_allclose(ow, _dense_ow(y, fc, ind), atol=1e-13)
    vr = vrcrps_ensemble(y, fc, threshold=-0.2)
    np.testing.assert_allclose(vr, sr.vrcrps_ensemble(y, fc, -0.2), atol=1e-13)
    np.testing.assert_allclose(vr, _dense_vr(y, fc, ind), atol=1e-13)
    for fn, ref in [(owcrps_ensemble, sr.owcrps_ensemble), (vrcrps_ensemble, sr.vrcrps_ensemble)]:
        got = fn(y, fc, threshold=(-1.0, 0.8), member_weights=ew)
        np.testing.assert_allclose(got, ref(y, fc, -1.0, 0.8, ens_w=ew), atol=1e-13)
        smooth = fn(y, fc, weight_fn=torch.special.ndtr)
        np.testing.assert_allclose(smooth, ref(y, fc, w_func=stats.norm.cdf), atol=1e-13)


def test_weighted_scores_reduce_to_crps_with_unit_weight(data):
    y, fc, _ = data
    crps = crps_ensemble(y, fc)
    one = lambda x: torch.ones_like(x)  # noqa: E731
    np.testing.assert_allclose(owcrps_ensemble(y, fc, weight_fn=one), crps, atol=1e-13)
    np.testing.assert_allclose(vrcrps_ensemble(y, fc, weight_fn=one), crps, atol=1e-13)


def test_owcrps_zero_weight_observation_and_undefined_points():
    fc = np.array([[-2.0, -1.0], [-2.0, -1.0]])
    y = np.array([-1.5, 0.5])  # first: w(y) = 0 -> 0; second: w(y) = 1, no member weighted
    out = owcrps_ensemble(y, fc, threshold=0.0)
    assert out[0] == 0.0 and np.isnan(out[1])
    with pytest.raises(ValueError, match="undefined at 1 points"):
        owcrps_ensemble(y, fc, threshold=0.0, nan_policy="raise")
    assert owcrps_ensemble(y, fc, threshold=0.0, nan_policy="omit", reduction="mean") == 0.0


def test_nan_omit_drops_members(data):
    y, fc, _ = data
    fc_nan = fc.copy()
    fc_nan[0, 3] = np.nan
    fc_nan[1, :] = np.nan
    for fn, kw in [
        (twcrps_ensemble, {"estimator": "fair"}),
        (owcrps_ensemble, {}),
        (vrcrps_ensemble, {}),
    ]:
        prop = fn(y, fc_nan, threshold=-0.5, **kw)
        assert np.isnan(prop[:2]).all() and np.isfinite(prop[2:]).all()
        omit = fn(y, fc_nan, threshold=-0.5, nan_policy="omit", **kw)
        ref0 = fn(y[:1], np.delete(fc[:1], 3, axis=1), threshold=-0.5, **kw)
        np.testing.assert_allclose(omit[0], ref0[0], atol=1e-13)
        assert np.isnan(omit[1])
        np.testing.assert_allclose(omit[2:], prop[2:], atol=1e-13)
        with pytest.raises(ValueError, match="forecasts has 10 NaN"):
            fn(y, fc_nan, threshold=-0.5, nan_policy="raise", **kw)


def test_xarray_member_dim_and_weighted_reduction(data):
    y, fc, _ = data
    lat = np.linspace(-60, 60, 8)
    obs = xr.DataArray(y[:40].reshape(5, 8), dims=("time", "lat"), coords={"lat": lat})
    ens = xr.DataArray(fc.reshape(5, 8, 9), dims=("time", "lat", "member"), coords={"lat": lat})
    out = twcrps_ensemble(obs, ens, threshold=0.0)
    assert isinstance(out, xr.DataArray) and out.dims == ("time", "lat")
    np.testing.assert_allclose(
        out.values.ravel(), sr.twcrps_ensemble(y, fc, 0.0, estimator="nrg"), atol=1e-13
    )
    w = xr.DataArray(np.cos(np.deg2rad(lat)), dims="lat", coords={"lat": lat})
    red = vrcrps_ensemble(obs, ens, threshold=0.0, dim="lat", weights=w)
    full = vrcrps_ensemble(obs, ens, threshold=0.0)
    assert red.dims == ("time",)
    np.testing.assert_allclose(red.values, ((full * w).sum("lat") / w.sum()).values, rtol=1e-12)
    moved = owcrps_ensemble(
        obs, ens.transpose("member", "time", "lat"), threshold=0.0, member_dim="member"
    )
    np.testing.assert_allclose(moved.values, owcrps_ensemble(obs, ens, threshold=0.0).values)


def test_array_thresholds_per_point_and_as_a_dim(data):
    y, fc, _ = data
    t = np.linspace(-1.0, 1.0, 40)  # e.g. a climatological quantile at each point
    for fn, ref in [
        (
            twcrps_ensemble,
            lambda i: sr.twcrps_ensemble(y[i : i + 1], fc[i : i + 1], t[i], estimator="nrg")[0],
        ),
        (owcrps_ensemble, lambda i: sr.owcrps_ensemble(y[i : i + 1], fc[i : i + 1], t[i])[0]),
        (vrcrps_ensemble, lambda i: sr.vrcrps_ensemble(y[i : i + 1], fc[i : i + 1], t[i])[0]),
    ]:
        got = fn(y, fc, threshold=t)
        with np.errstate(invalid="ignore", divide="ignore"):  # scoringrules: 0/0 where wbar = 0
            want = np.array([ref(i) for i in range(40)])
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], atol=1e-13)
    # thresholds along their own xarray dim give one score per threshold
    obs = xr.DataArray(y, dims="case")
    ens = xr.DataArray(fc, dims=("case", "member"))
    levels = xr.DataArray([-0.5, 0.0, 0.5], dims="threshold", coords={"threshold": [-0.5, 0, 0.5]})
    out = twcrps_ensemble(obs, ens, threshold=(levels, None))
    assert set(out.dims) == {"case", "threshold"}
    for lv in (-0.5, 0.0, 0.5):
        np.testing.assert_allclose(
            out.sel(threshold=lv).values,
            sr.twcrps_ensemble(y, fc, lv, estimator="nrg"),
            atol=1e-13,
        )
    with pytest.raises(ValueError, match="lower >= upper at 1 points"):
        twcrps_ensemble(y, fc, threshold=(t, np.where(t > 0.99, -2.0, 5.0)))


def test_twcrps_gradients(data):
    y, fc, _ = data
    yt = torch.tensor(y[:5])
    fct = torch.tensor(fc[:5], requires_grad=True)
    torch.autograd.gradcheck(lambda f: twcrps_ensemble(yt, f, threshold=-3.0), [fct])
    torch.autograd.gradcheck(lambda f: vrcrps_ensemble(yt, f, weight_fn=torch.special.ndtr), [fct])


def _quad_tw(mu, sigma, y, w, breaks):
    f = lambda z: (stats.norm(mu, sigma).cdf(z) - float(y <= z)) ** 2 * w(z)  # noqa: E731
    edges = [-math.inf, *sorted({y, *breaks}), math.inf]
    return sum(
        integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )


@pytest.mark.parametrize("y", [-25.0, -1.0, 0.1, 1.5, 30.0])
def test_twcrps_normal_indicator_matches_quadrature(y):
    mu, sigma = 0.2, 1.3
    got = twcrps_normal(np.array([y]), mu, sigma, threshold=0.5)[0]
    ref = _quad_tw(mu, sigma, y, lambda z: float(z > 0.5), (0.5,))
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    got = twcrps_normal(np.array([y]), mu, sigma, lower=-1.0, upper=0.8)[0]
    ref = _quad_tw(mu, sigma, y, lambda z: float(-1.0 < z < 0.8), (-1.0, 0.8))
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    # equals the censored-Normal CRPS at the clipped observation (the chaining identity)
    cens = crps_censored_normal(np.clip([y], -1.0, 0.8), mu, sigma, -1.0, 0.8)
    np.testing.assert_allclose(got, cens[0], rtol=1e-12)


@pytest.mark.parametrize("y", [-25.0, -1.0, 0.1, 1.5, 30.0])
@pytest.mark.parametrize(("centre", "scale"), [(0.5, 1.0), (1.0, 0.01), (-1.0, 5.0)])
def test_twcrps_normal_smooth_weight_matches_quadrature(y, centre, scale):
    mu, sigma = 0.2, 1.3
    got = twcrps_normal(
        torch.tensor([y], dtype=torch.float64), mu, sigma, threshold=centre, scale=scale
    )
    ref = _quad_tw(mu, sigma, y, lambda z: stats.norm.cdf((z - centre) / scale), (centre,))
    np.testing.assert_allclose(got.item(), ref, rtol=1e-10)


def test_twcrps_normal_smooth_matches_ensemble_limit_and_grad():
    # a large ensemble with the smooth chain approaches the closed quadrature value
    mu, sigma, c, s = 0.3, 1.1, 0.5, 0.7
    got = twcrps_normal(torch.tensor([0.8], dtype=torch.float64), mu, sigma, threshold=c, scale=s)
    members = torch.tensor(stats.norm(mu, sigma).ppf((np.arange(4000) + 0.5) / 4000))[None]

    def chain(x):
        u = (x - c) / s
        return (x - c) * torch.special.ndtr(u) + s * torch.exp(-0.5 * u * u) / math.sqrt(
            2 * math.pi
        )

    ens = twcrps_ensemble(torch.tensor([0.8], dtype=torch.float64), members, chain=chain)
    np.testing.assert_allclose(got.item(), ens.item(), rtol=1e-4)
    m = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda mm: twcrps_normal(torch.tensor([0.8]).double(), mm, 1.1, threshold=c, scale=s), [m]
    )


def test_twcrps_normal_reduction_and_float32():
    y = torch.linspace(-2, 3, 12).reshape(3, 4)
    got = twcrps_normal(y, 0.0, 1.0, threshold=1.0, scale=0.5)
    ref = twcrps_normal(y.double(), 0.0, 1.0, threshold=1.0, scale=0.5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    red = twcrps_normal(y, 0.0, 1.0, threshold=1.0, dim=-1, weights=w)
    full = twcrps_normal(y, 0.0, 1.0, threshold=1.0)
    torch.testing.assert_close(red, (full * w).sum(-1) / w.sum())


def test_twcrps_normal_xarray():
    lat = np.array([0.0, 30.0, 60.0])
    obs = xr.DataArray(
        np.array([[0.2, 1.5, -0.3], [2.0, 0.0, 1.0]]), dims=("time", "lat"), coords={"lat": lat}
    )
    mu = xr.DataArray(np.zeros(3), dims="lat", coords={"lat": lat})
    out = twcrps_normal(obs, mu, 1.0, threshold=0.5, scale=0.2)
    assert isinstance(out, xr.DataArray) and out.dims == ("time", "lat")
    ref = twcrps_normal(obs.values, 0.0, 1.0, threshold=0.5, scale=0.2)
    np.testing.assert_allclose(out.values, ref, rtol=1e-14)
    red = twcrps_normal(obs, mu, 1.0, threshold=0.5, dim="time")
    np.testing.assert_allclose(red.values, twcrps_normal(obs, mu, 1.0, threshold=0.5).mean("time"))


def test_bad_arguments_are_named(data):
    y, fc, _ = data
    with pytest.raises(ValueError, match="exactly one of threshold="):
        twcrps_ensemble(y, fc)
    with pytest.raises(ValueError, match="exactly one of threshold="):
        owcrps_ensemble(y, fc, threshold=0.0, weight_fn=torch.special.ndtr)
    with pytest.raises(TypeError, match="chain is a int"):
        twcrps_ensemble(y, fc, chain=3)
    with pytest.raises(ValueError, match="lower < upper"):
        twcrps_ensemble(y, fc, threshold=(1.0, 0.0))
    with pytest.raises(ValueError, match="negative weights"):
        vrcrps_ensemble(y, fc, weight_fn=lambda x: x)
    with pytest.raises(ValueError, match="estimator="):
        twcrps_ensemble(y, fc, threshold=0.0, estimator="crps")
    with pytest.raises(ValueError, match="needs a weight"):
        twcrps_normal(y, 0.0, 1.0)
    with pytest.raises(ValueError, match="pass threshold= with it"):
        twcrps_normal(y, 0.0, 1.0, lower=0.0, scale=1.0)
    with pytest.raises(ValueError, match="scale has .* non-positive"):
        twcrps_normal(y, 0.0, 1.0, threshold=0.0, scale=0.0)
    with pytest.raises(ValueError, match="weights= are reduction weights"):
        twcrps_ensemble(y, fc, threshold=0.0, weights=np.ones(40))
