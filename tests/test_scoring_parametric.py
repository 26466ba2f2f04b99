"""Closed-form CRPS of the logistic, log-normal, gamma, censored and truncated Normal families.

References: float64 adaptive quadrature of int (F(z) - 1{y <= z})^2 dz with scipy's cdfs, and
scoringrules 0.10 where it has the family.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import integrate, stats

from uqdyn.scoring.crps_closed import crps_normal
from uqdyn.scoring.crps_parametric import (
    crps_censored_normal,
    crps_gamma,
    crps_logistic,
    crps_lognormal,
    crps_truncated_normal,
)

sr = pytest.importorskip("scoringrules")

OBS = [-1.5, 0.0, 0.3, 1.2, 4.0]


def quad_crps(cdf, y: float, breaks=()) -> float:
    """int (F(z) - 1{y <= z})^2 dz by adaptive quadrature, split at y and at ``breaks``."""

    def f(z):
        return (cdf(z) - float(y <= z)) ** 2

    inner = sorted({y, *breaks})
    edges = [-math.inf, *inner, math.inf]
    return sum(
        integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )


def _f64(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("y", OBS)
def test_logistic_matches_quadrature_and_scoringrules(y):
    mu, s = 0.4, 1.3
    got = crps_logistic(_f64([y]), _f64([mu]), _f64([s])).item()
    ref = quad_crps(stats.logistic(mu, s).cdf, y)
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    np.testing.assert_allclose(got, sr.crps_logistic(y, mu, s), rtol=1e-10)


@pytest.mark.parametrize("y", OBS)
def test_lognormal_matches_quadrature_including_outside_support(y):
    m, s = 0.2, 0.7
    got = crps_lognormal(_f64([y]), _f64([m]), _f64([s])).item()
    ref = quad_crps(stats.lognorm(s, scale=math.exp(m)).cdf, y, breaks=(0.0,))
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    if y > 0:  # scoringrules gives NaN for y <= 0
        np.testing.assert_allclose(got, sr.crps_lognormal(y, m, s), rtol=1e-10)


@pytest.mark.parametrize("y", OBS)
@pytest.mark.parametrize("shape", [0.5, 2.3])
def test_gamma_matches_quadrature_and_scoringrules(y, shape):
    rate = 1.7
    got = crps_gamma(_f64([y]), _f64([shape]), _f64([rate])).item()
    ref = quad_crps(stats.gamma(shape, scale=1 / rate).cdf, y, breaks=(0.0,))
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    np.testing.assert_allclose(got, sr.crps_gamma(y, shape, rate), rtol=1e-10)
    by_scale = crps_gamma(_f64([y]), _f64([shape]), scale=_f64([1 / rate])).item()
    np.testing.assert_allclose(by_scale, got, rtol=1e-12)


def _censored_cdf(mu, sigma, lo, hi):
    def cdf(z):
        if z < lo:
            return 0.0
        if z >= hi:
            return 1.0
        return stats.norm(mu, sigma).cdf(z)

    return cdf


@pytest.mark.parametrize("y", OBS)
@pytest.mark.parametrize("bounds", [(0.0, 2.0), (0.0, math.inf), (-math.inf, 0.5), (-3.0, -1.0)])
def test_censored_normal_matches_quadrature_and_scoringrules(y, bounds):
    mu, sigma = 0.4, 1.1
    lo, hi = bounds
    got = crps_censored_normal(_f64([y]), _f64([mu]), _f64([sigma]), lo, hi).item()
    breaks = tuple(b for b in bounds if math.isfinite(b))
    ref = quad_crps(_censored_cdf(mu, sigma, lo, hi), y, breaks)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(got, sr.crps_cnormal(y, mu, sigma, lo, hi), rtol=1e-9)


@pytest.mark.parametrize("y", OBS)
@pytest.mark.parametrize(
    "bounds", [(0.0, 2.0), (0.0, math.inf), (-math.inf, 0.5), (-3.0, -1.0), (3.0, math.inf)]
)
def test_truncated_normal_matches_quadrature_and_scoringrules(y, bounds):
    mu, sigma = 0.4, 1.1
    lo, hi = bounds
    got = crps_truncated_normal(_f64([y]), _f64([mu]), _f64([sigma]), lo, hi).item()
    dist = stats.truncnorm((lo - mu) / sigma, (hi - mu) / sigma, loc=mu, scale=sigma)
    breaks = tuple(b for b in bounds if math.isfinite(b))
    ref = quad_crps(dist.cdf, y, breaks)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(got, sr.crps_tnormal(y, mu, sigma, lo, hi), rtol=1e-8)


def test_unbounded_censored_and_truncated_equal_crps_normal():
    y = _f64([-2.0, 0.1, 3.0])
    mu, sigma = _f64([0.3, 0.3, -1.0]), _f64([0.5, 2.0, 1.0])
    ref = crps_normal(y, mu, sigma)
    torch.testing.assert_close(crps_censored_normal(y, mu, sigma), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(crps_truncated_normal(y, mu, sigma), ref, rtol=1e-12, atol=1e-14)


def test_array_bounds_broadcast():
    y = np.array([0.0, 0.5, 3.0])
    lo = np.array([0.0, -1.0, 1.0])
    got = crps_censored_normal(y, 0.2, 1.0, lo, 4.0)
    ref = sr.crps_cnormal(y, 0.2, 1.0, lo, 4.0)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_float32_is_close_to_float64():
    rng = np.random.default_rng(1)
    y = rng.gamma(2.0, 1.0, size=200)
    y[:20] = 0.0  # point mass of precipitation at zero
    for fn, args in [
        (crps_logistic, (0.5, 1.2)),
        (crps_lognormal, (0.1, 0.8)),
        (crps_gamma, (1.8, 0.9)),
        (crps_censored_normal, (0.5, 1.3, 0.0)),
        (crps_truncated_normal, (0.5, 1.3, 0.0)),
    ]:
        ref = fn(torch.tensor(y), *[torch.tensor(a, dtype=torch.float64) for a in args])
        got = fn(torch.tensor(y, dtype=torch.float32), *[torch.tensor(a) for a in args])
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-6, msg=fn.__name__)


def test_truncated_normal_far_tail_float32():
    # an interval holding 1.3e-3 of the mass, on either side: reflected to the lower tail
    y = np.array([-5.0, 3.2, 3.5, 6.0])
    for lo, hi, sign in [(3.0, math.inf, 1.0), (-math.inf, -3.0, -1.0)]:
        ref = crps_truncated_normal(torch.tensor(sign * y), 0.0, 1.0, lo, hi)
        got = crps_truncated_normal(torch.tensor(sign * y, dtype=torch.float32), 0.0, 1.0, lo, hi)
        torch.testing.assert_close(got.double(), ref, rtol=2e-4, atol=0.0)
        np.testing.assert_allclose(ref, sr.crps_tnormal(sign * y, 0.0, 1.0, lo, hi), rtol=1e-8)


def test_gradients_match_finite_differences():
    y = torch.tensor([0.0, 0.7, 2.5], dtype=torch.float64)
    for fn, first in [
        (crps_logistic, [0.4, 1.1]),
        (crps_lognormal, [0.1, 0.6]),
        (crps_censored_normal, [0.3, 1.2]),
        (crps_truncated_normal, [0.3, 1.2]),
    ]:
        params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in first]
        extra = [0.0] if fn in (crps_censored_normal, crps_truncated_normal) else []
        torch.autograd.gradcheck(lambda *p, fn=fn, extra=extra: fn(y, *p, *extra), params)
    rate = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda r: crps_gamma(y, torch.tensor(2.0).double(), r), [rate])


def test_xarray_in_out_and_weighted_reduction():
    rng = np.random.default_rng(2)
    lat = np.array([-60.0, 0.0, 45.0])
    obs = xr.DataArray(
        rng.gamma(2.0, size=(4, 3)), dims=("time", "lat"), coords={"lat": lat, "time": range(4)}
    )
    shape = xr.full_like(obs, 2.0)
    out = crps_gamma(obs, shape, 1.0)
    assert isinstance(out, xr.DataArray) and out.dims == ("time", "lat")
    np.testing.assert_allclose(out.values, sr.crps_gamma(obs.values, 2.0, 1.0), rtol=1e-10)
    w = xr.DataArray(np.cos(np.deg2rad(lat)), dims="lat", coords={"lat": lat})
    red = crps_gamma(obs, shape, 1.0, dim="lat", weights=w)
    assert red.dims == ("time",)
    ref = (out * w).sum("lat") / w.sum()
    np.testing.assert_allclose(red.values, ref.values, rtol=1e-12)
    # numpy dim/weights as well
    arr = crps_logistic(obs.values, 0.0, 1.0, dim=0, weights=np.arange(1.0, 5.0)[:, None])
    full = crps_logistic(obs.values, 0.0, 1.0)
    np.testing.assert_allclose(arr, (full * np.arange(1.0, 5.0)[:, None]).sum(0) / 10.0)


def test_nan_policy():
    y = np.array([0.5, np.nan, 1.0])
    out = crps_lognormal(y, 0.0, 1.0)
    assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()
    mean = crps_lognormal(y, 0.0, 1.0, nan_policy="omit", reduction="mean")
    np.testing.assert_allclose(mean, np.nanmean(out))
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        crps_lognormal(y, 0.0, 1.0, nan_policy="raise")


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="s has 1 non-positive"):
        crps_logistic(np.zeros(2), 0.0, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigmalog"):
        crps_lognormal(1.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="shape"):
        crps_gamma(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of rate= and scale="):
        crps_gamma(1.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of rate= and scale="):
        crps_gamma(1.0, 1.0, 1.0, scale=1.0)
    with pytest.raises(ValueError, match="lower >= upper"):
        crps_censored_normal(0.0, 0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="no mass"):
        crps_truncated_normal(0.0, 0.0, 1.0, 50.0, 60.0)
    with pytest.raises(ValueError, match="nan_policy"):
        crps_logistic(0.0, 0.0, 1.0, nan_policy="drop")
