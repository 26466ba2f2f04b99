"""CRPS scores against properscoring, scoringrules, quadrature and analytic properties."""

from __future__ import annotations

import math

import numpy as np
import properscoring as ps
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from uqdyn.scoring import (
    crps,
    crps_ensemble,
    crps_ensemble_components,
    crps_mixture,
    crps_normal,
    crps_quantile,
)

sr = pytest.importorskip("scoringrules")

SETTINGS = settings(max_examples=25, deadline=None)
finite = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False)


def _quad_crps(cdf, y: float, lo: float, hi: float) -> float:
    """int (F(x) - 1{y <= x})^2 dx by adaptive quadrature, split at the observation."""
    left = integrate.quad(lambda x: cdf(x) ** 2, lo, y, epsabs=1e-12, epsrel=1e-12, limit=200)
    right = integrate.quad(
        lambda x: (1.0 - cdf(x)) ** 2, y, hi, epsabs=1e-12, epsrel=1e-12, limit=200
    )
    return left[0] + right[0]


def _ecdf_crps(y: float, members: np.ndarray, weights: np.ndarray | None = None) -> float:
    """int (F_ens(x) - 1{y <= x})^2 dx, integrating the step function piece by piece."""
    w = np.ones_like(members) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    knots = np.sort(np.concatenate([members, [y]]))
    total = 0.0
    for a, b in zip(knots[:-1], knots[1:], strict=True):
        mid = 0.5 * (a + b)
        f = w[members <= mid].sum()
        total += (b - a) * (f - float(y <= mid)) ** 2
    return total


def _dense_pairs(y: np.ndarray, x: np.ndarray, estimator: str) -> np.ndarray:
    """The O(M^2) energy form in float64 with all pairs materialised."""
    m = x.shape[-1]
    skill = np.abs(x - y[..., None]).mean(-1)
    pairs = np.abs(x[..., :, None] - x[..., None, :]).sum((-1, -2))
    denom = m * m if estimator == "nrg" else m * (m - 1)
    return skill - pairs / (2 * denom)


# --------------------------------------------------------------------------- closed forms


@SETTINGS
@given(y=finite, mu=finite, sigma=st.floats(0.05, 4.0))
def test_crps_normal_matches_properscoring_and_quadrature(y, mu, sigma):
    got = crps_normal(torch.tensor(y, dtype=torch.float64), mu, sigma).item()
    assert got == pytest.approx(ps.crps_gaussian(y, mu, sigma), abs=1e-10)
    quad = _quad_crps(lambda x: stats.norm.cdf(x, mu, sigma), y, mu - 40 * sigma, mu + 40 * sigma)
    assert got == pytest.approx(quad, abs=1e-6)
    assert got == pytest.approx(float(sr.crps_normal(y, mu, sigma)), abs=1e-10)


@SETTINGS
@given(
    y=finite,
    mus=st.lists(finite, min_size=1, max_size=4),
    data=st.data(),
)
def test_crps_mixture_matches_quadrature_and_scoringrules(y, mus, data):
    k = len(mus)
    sigmas = np.array(data.draw(st.lists(st.floats(0.1, 3.0), min_size=k, max_size=k)))
    raw_w = np.array(data.draw(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k)))
    mus_a = np.array(mus)
    w = raw_w / raw_w.sum()
    got = crps_mixture(np.float64(y), raw_w, mus_a, sigmas).item()

    def cdf(x):
        return float(np.sum(w * stats.norm.cdf(x, mus_a, sigmas)))

    lo, hi = mus_a.min() - 40 * sigmas.max(), mus_a.max() + 40 * sigmas.max()
    assert got == pytest.approx(_quad_crps(cdf, y, lo, hi), abs=1e-6)
    ref = sr.crps_mixnorm(y, mus_a, sigmas, w, backend="numpy")
    assert got == pytest.approx(float(ref), abs=1e-8)


def test_crps_mixture_one_component_is_normal(device):
    gen = torch.Generator().manual_seed(0)
    y, mu = torch.randn(2, 50, generator=gen, dtype=torch.float64).to(device)
    sigma = torch.rand(50, generator=gen, dtype=torch.float64).to(device) + 0.1
    one = crps_mixture(y, torch.ones(1, device=device), mu[:, None], sigma[:, None])
    torch.testing.assert_close(one, crps_normal(y, mu, sigma))


def test_crps_normal_errors_and_nan():
    with pytest.raises(ValueError, match="sigma"):
        crps_normal(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        crps_normal(torch.zeros(3), torch.zeros(4), 1.0)
    out = crps_normal(torch.tensor([0.0, math.nan]), 0.0, 1.0)
    assert torch.isnan(out[1]) and not torch.isnan(out[0])
    with pytest.raises(ValueError, match="weights"):
        crps_mixture(0.0, np.array([0.0, 0.0]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="component"):
        crps_mixture(0.0, np.array([0.5, 0.5]), np.zeros(3), np.ones(3))


# --------------------------------------------------------------------------- ensembles


@SETTINGS
@given(
    y=finite,
    members=st.lists(finite, min_size=1, max_size=12),
)
def test_crps_ensemble_nrg_matches_properscoring_and_ecdf(y, members):
    x = np.array(members)
    got = crps_ensemble(np.float64(y), x).item()
    assert got == pytest.approx(float(ps.crps_ensemble(y, x)), abs=1e-9)
    assert got == pytest.approx(_ecdf_crps(y, x), abs=1e-9)
    # the autograd path (torch.sort) gives the same number as the blocked CPU path
    xt = torch.tensor(x, requires_grad=True)
    assert crps_ensemble(torch.tensor(y, dtype=torch.float64), xt).item() == pytest.approx(
        got, abs=1e-12
    )


@SETTINGS
@given(
    y=finite,
    data=st.data(),
    m=st.integers(1, 10),
)
def test_crps_ensemble_weighted_matches_properscoring_and_ecdf(y, data, m):
    x = np.array(data.draw(st.lists(finite, min_size=m, max_size=m)))
    w = np.array(data.draw(st.lists(st.floats(0.01, 2.0), min_size=m, max_size=m)))
    got = crps_ensemble(np.float64(y), x, member_weights=w).item()
    assert got == pytest.approx(float(ps.crps_ensemble(y, x, weights=w)), abs=1e-9)
    assert got == pytest.approx(_ecdf_crps(y, x, w), abs=1e-9)


@pytest.mark.parametrize("estimator", ["nrg", "fair", "pwm"])
def test_crps_ensemble_estimators_match_scoringrules_and_dense(estimator):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 9)) * rng.uniform(0.2, 3, (300, 1))
    y = rng.standard_normal(300)
    got = crps_ensemble(y, x, estimator=estimator)
    ref = sr.crps_ensemble(y, x, estimator=estimator, backend="numpy")
    np.testing.assert_allclose(got, ref, atol=1e-12)
    dense = _dense_pairs(y, x, "nrg" if estimator == "nrg" else "fair")
    np.testing.assert_allclose(got, dense, atol=1e-12)


def test_crps_ensemble_afair_and_weighted_fair():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 7))
    y = rng.standard_normal(200)
    fair = _dense_pairs(y, x, "fair")
    nrg = _dense_pairs(y, x, "nrg")
    got = crps_ensemble(y, x, estimator="afair", alpha=0.95)
    np.testing.assert_allclose(got, 0.95 * fair + 0.05 * nrg, atol=1e-12)
    w = rng.uniform(0.1, 1.0, (200, 7))
    for est in ("nrg", "fair"):
        got_w = crps_ensemble(y, x, member_weights=w, estimator=est)
        ref_w = sr.crps_ensemble(y, x, ens_w=w, estimator=est, backend="numpy")
        np.testing.assert_allclose(got_w, ref_w, atol=1e-12)
    # equal weights reduce to the unweighted estimators
    ones = np.ones(7)
    np.testing.assert_allclose(
        crps_ensemble(y, x, member_weights=ones, estimator="fair"), fair, atol=1e-12
    )


def test_one_member_is_absolute_error(device):
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(40, generator=gen).to(device)
    x = torch.randn(40, 1, generator=gen).to(device)
    torch.testing.assert_close(crps_ensemble(y, x), (x[:, 0] - y).abs())


def test_fair_estimator_is_unbiased_monte_carlo():
    """Mean fair CRPS of M-member draws from N(0,1) equals the exact CRPS of N(0,1)."""
    gen = torch.Generator().manual_seed(4)
    m, n = 5, 200_000
    y = torch.tensor([-1.3, 0.2, 1.7], dtype=torch.float64)
    x = torch.randn(3, n, m, generator=gen, dtype=torch.float64)
    exact = crps_normal(y, 0.0, 1.0)
    for estimator, biased in (("fair", False), ("pwm", False), ("nrg", True)):
        scores = crps_ensemble(y[:, None], x, estimator=estimator)
        mean, se = scores.mean(-1), scores.std(-1) / math.sqrt(n)
        z = (mean - exact) / se
        if biased:  # the standard estimator is biased upward by E|X - X'| / (2M)
            bias = (2 / math.sqrt(math.pi)) / (2 * m)
            assert torch.all(z > 20)
            torch.testing.assert_close(mean - exact, torch.full_like(mean, bias), atol=5e-3, rtol=0)
        else:
            assert torch.all(z.abs() < 4.5), z


def test_components_sum_and_values():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 6))
    y = rng.standard_normal(50)
    for est in ("nrg", "fair", "afair", "pwm"):
        skill, spread = crps_ensemble_components(y, x, estimator=est)
        np.testing.assert_allclose(skill, np.abs(x - y[:, None]).mean(-1), atol=1e-12)
        np.testing.assert_allclose(skill - spread, crps_ensemble(y, x, estimator=est), atol=1e-12)
    _, spread = crps_ensemble_components(y, x, estimator="fair")
    pairs = np.abs(x[:, :, None] - x[:, None, :]).sum((-1, -2)) / (6 * 5)
    np.testing.assert_allclose(spread, 0.5 * pairs, atol=1e-12)


def test_nan_member_or_obs_gives_nan(device):
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(6)).to(device)
    y = torch.zeros(4, device=device)
    x[1, 2] = math.nan
    y[3] = math.nan
    for est in ("nrg", "fair", "pwm", "afair"):
        out = crps_ensemble(y, x, estimator=est)
        assert torch.isnan(out[[1, 3]]).all() and not torch.isnan(out[[0, 2]]).any()
        out_w = (
            crps_ensemble(y, x, member_weights=torch.ones(6, device=device))
            if est == "nrg"
            else out
        )
        assert torch.isnan(out_w[[1, 3]]).all()
    mean = crps_ensemble(y, x, reduction="mean", skipna=True)
    torch.testing.assert_close(mean, crps_ensemble(y, x)[[0, 2]].mean())


def test_member_dim_layouts_and_kinds():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5))
    y = rng.standard_normal((3, 4))
    ref = crps_ensemble(y, x)
    assert isinstance(ref, np.ndarray) and ref.shape == (3, 4)
    np.testing.assert_allclose(crps_ensemble(y, np.moveaxis(x, -1, 0), member_dim=0), ref)
    da = xr.DataArray(np.moveaxis(x, -1, 1), dims=("time", "member", "x"))
    da = da.assign_coords(time=[10, 20, 30], x=[0.1, 0.2, 0.3, 0.4])
    obs = xr.DataArray(y, dims=("time", "x"), coords={"time": da.time, "x": da.x})
    out = crps_ensemble(obs, da)
    assert isinstance(out, xr.DataArray) and set(out.dims) == {"time", "x"}
    np.testing.assert_allclose(out.transpose("time", "x").values, ref, atol=1e-12)
    assert list(out.time.values) == [10, 20, 30]
    renamed = crps_ensemble(obs, da.rename(member="ens"), member_dim="ens")
    xr.testing.assert_allclose(renamed, out)
    mean = crps_ensemble(obs, da, reduction="mean")
    assert isinstance(mean, xr.DataArray) and mean.ndim == 0
    assert float(mean) == pytest.approx(ref.mean())


def test_crps_ensemble_errors():
    with pytest.raises(ValueError, match="member"):
        crps_ensemble(np.zeros(3), np.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)|\(3,\).*\(4,\)"):
        crps_ensemble(np.zeros(4), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="estimator"):
        crps_ensemble(np.zeros(3), np.zeros((3, 5)), estimator="qd")
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(np.zeros(3), np.zeros((3, 1)), estimator="fair")
    with pytest.raises(ValueError, match="weights"):
        crps_ensemble(np.zeros(3), np.zeros((3, 2)), member_weights=np.zeros(2))
    with pytest.raises(ValueError, match="weights"):
        crps_ensemble(np.zeros(3), np.zeros((3, 2)), member_weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="member"):
        crps_ensemble(np.zeros(3), np.zeros((3, 2)), member_weights=np.ones(3))
    with pytest.raises(ValueError, match="'member'"):
        crps_ensemble(xr.DataArray(np.zeros(3), dims="x"), xr.DataArray(np.zeros((3, 2))))
    with pytest.raises(TypeError, match="member_dim"):
        crps_ensemble(np.zeros(3), np.zeros((3, 2)), member_dim="member")
    with pytest.raises(ValueError, match="reduction"):
        crps_ensemble(np.zeros(3), np.zeros((3, 2)), reduction="median")


def test_crps_ensemble_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    for est in ("nrg", "fair", "pwm", "afair"):
        assert torch.autograd.gradcheck(
            lambda a, b, est=est: crps_ensemble(a, b, estimator=est), (y, x)
        )
    w = torch.rand(6, generator=gen, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda a, b: crps_ensemble(a, b, member_weights=w), (y, x))


def test_device_agrees_with_cpu_float64(device):
    """Same data on every available device; float32 on device against float64 on CPU."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2000, 50))
    y = rng.standard_normal(2000)
    for est in ("nrg", "fair", "pwm", "afair"):
        ref = crps_ensemble(torch.tensor(y), torch.tensor(x), estimator=est)
        got = crps_ensemble(
            torch.tensor(y, dtype=torch.float32, device=device),
            torch.tensor(x, dtype=torch.float32, device=device),
            estimator=est,
        )
        assert got.device.type == torch.device(device).type and got.dtype == torch.float32
        torch.testing.assert_close(got.double().cpu(), ref, atol=2e-5, rtol=1e-5)


def test_large_block_path_matches_reference():
    """More rows than one CPU block (threaded path) agrees with properscoring."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((10_000, 20))
    y = rng.standard_normal(10_000)
    np.testing.assert_allclose(crps_ensemble(y, x), ps.crps_ensemble(y, x), atol=1e-12)


# --------------------------------------------------------------------------- quantiles, dispatch


def test_crps_quantile_converges_to_crps_normal():
    y = np.array([-2.0, 0.0, 0.7, 3.0])
    exact = crps_normal(y, 0.0, 1.5)
    errors = []
    for k in (9, 99, 999):
        levels = (np.arange(k) + 0.5) / k
        q = stats.norm.ppf(levels, 0.0, 1.5)[None, :].repeat(4, 0)
        got = crps_quantile(y, q, levels)
        np.testing.assert_allclose(got, sr.crps_quantile(y, q, levels, backend="numpy"), atol=1e-12)
        errors.append(np.abs(got - exact).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_crps_quantile_errors():
    with pytest.raises(ValueError, match="levels"):
        crps_quantile(np.zeros(2), np.zeros((2, 3)), np.array([0.1, 0.5]))
    with pytest.raises(ValueError, match="levels"):
        crps_quantile(np.zeros(2), np.zeros((2, 2)), np.array([0.0, 0.5]))


def test_crps_dispatch_on_predictive():
    from uqdyn.predictive import Ensemble, Normal

    gen = torch.Generator().manual_seed(11)
    y = torch.randn(5, generator=gen)
    mu, sigma = torch.randn(5, generator=gen), torch.rand(5, generator=gen) + 0.5
    torch.testing.assert_close(crps(y, Normal(mu, sigma)), crps_normal(y, mu, sigma))
    members = torch.randn(8, 5, generator=gen)
    torch.testing.assert_close(crps(y, Ensemble(members)), crps_ensemble(y, members, member_dim=0))
    with pytest.raises(TypeError, match="Predictive"):
        crps(y, (mu, sigma))
