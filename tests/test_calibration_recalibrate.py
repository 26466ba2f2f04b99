"""Recalibration: isotonic CDF maps, the Recalibrated predictive, and variance scaling."""

from __future__ import annotations

import numpy as np
import properscoring as ps
import pytest
import torch
from scipy import stats
from scipy.integrate import quad
from scipy.optimize import isotonic_regression, minimize_scalar

from uqdyn.calibration import (
    IsotonicRecalibrator,
    Recalibrated,
    VarianceScaling,
    coverage,
    miscalibration_area,
    pit,
)
from uqdyn.calibration.recalibrate import _pool_adjacent_violators
from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal
from uqdyn.scoring import crps_normal

LEVELS = [0.5, 0.8, 0.9, 0.95]
F64 = torch.float64


def _gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _overconfident(n: int, seed: int, device="cpu", dtype=torch.float32):
    """Truth N(mu, 2^2), forecast N(mu, 1): over-confident by a factor 2."""
    g = _gen(seed, device)
    loc = torch.randn(n, generator=g, device=device, dtype=dtype)
    obs = loc + 2.0 * torch.randn(n, generator=g, device=device, dtype=dtype)
    return obs, Normal(loc, torch.ones_like(loc))


def _coverage_error(obs, forecast) -> float:
    cov = coverage(obs, forecast, LEVELS).cpu()
    return float((cov - torch.tensor(LEVELS, dtype=cov.dtype)).abs().max())


# ----------------------------------------------------------------------------- repair
@pytest.mark.parametrize(
    "recalibrator",
    [IsotonicRecalibrator(), VarianceScaling("nll"), VarianceScaling("crps")],
    ids=["isotonic", "scaling-nll", "scaling-crps"],
)
def test_recalibration_repairs_overconfident_gaussian(recalibrator, device):
    obs_val, val = _overconfident(4000, 0, device)
    obs_test, test = _overconfident(4000, 1, device)
    before = _coverage_error(obs_test, test)
    recalibrated = recalibrator.fit(obs_val, val).transform(test)
    after = _coverage_error(obs_test, recalibrated)
    assert before > 0.25  # 95% interval covers about 56%
    assert after * 3 <= before
    assert after < 0.03


def test_isotonic_recalibration_repairs_underdispersed_ensemble():
    g = _gen(2)
    truth = torch.randn(6000, generator=g)
    members = 0.4 * torch.randn(6000, 10, generator=g)  # members too close together
    recal = IsotonicRecalibrator().fit(truth[:3000], members[:3000], member_dim=-1, generator=g)
    test = recal.transform(members[3000:], member_dim=-1)
    assert isinstance(test, Recalibrated) and isinstance(test.base, Ensemble)
    before = float(miscalibration_area(truth[3000:], members[3000:], member_dim=-1, generator=g))
    after = float(miscalibration_area(truth[3000:], test, generator=g))
    assert before > 0.05 and after * 3 <= before


# ----------------------------------------------------------------------------- isotonic map
def test_pool_adjacent_violators_matches_scipy():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = np.cumsum(rng.normal(size=200)) + 5 * rng.normal(size=200)
        np.testing.assert_allclose(_pool_adjacent_violators(y), isotonic_regression(y).x)


def test_isotonic_map_of_calibrated_forecast_is_near_identity():
    g = _gen(4)
    loc = torch.randn(5000, generator=g, dtype=F64)
    obs = loc + torch.randn(5000, generator=g, dtype=F64)
    recal = IsotonicRecalibrator(max_knots=200).fit(obs, Normal(loc, torch.ones_like(loc)))
    kx, ky = recal.knots_x, recal.knots_y
    assert len(kx) <= 200 and float(kx[0]) == 0.0 and float(ky[-1]) == 1.0
    assert bool((kx[1:] > kx[:-1]).all()) and bool((ky[1:] > ky[:-1]).all())
    assert float((ky - kx).abs().max()) < 1.63 / np.sqrt(5000)  # KS 1% critical value


def test_isotonic_map_equals_empirical_cdf_of_pit():
    obs = torch.tensor(stats.norm.ppf([0.1, 0.3, 0.35, 0.8]), dtype=F64)
    forecast = Normal(torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64))
    recal = IsotonicRecalibrator().fit(obs, forecast)
    np.testing.assert_allclose(recal.knots_x.numpy(), [0, 0.1, 0.3, 0.35, 0.8, 1], atol=1e-12)
    np.testing.assert_allclose(recal.knots_y.numpy(), [0, 0.2, 0.4, 0.6, 0.8, 1], atol=1e-5)


# ----------------------------------------------------------------------------- Recalibrated
def _identity(base) -> Recalibrated:
    knots = torch.tensor([0.0, 1.0], dtype=F64)
    return Recalibrated(base, knots, knots)


def test_identity_recalibration_reproduces_gaussian_moments_and_crps():
    g = _gen(5)
    loc = torch.randn(20, generator=g, dtype=F64)
    scale = 0.5 + torch.rand(20, generator=g, dtype=F64)
    base = Normal(loc, scale)
    recal = _identity(base)
    y = loc + 3 * torch.randn(20, generator=g, dtype=F64)
    torch.testing.assert_close(recal.mean, loc, atol=1e-12, rtol=0)
    torch.testing.assert_close(recal.stddev, scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(recal.cdf(y), base.cdf(y))
    crps = recal.crps(y)
    reference = ps.crps_gaussian(y.numpy(), loc.numpy(), scale.numpy())
    np.testing.assert_allclose(crps.numpy(), reference, rtol=1e-10)  # exact for this case
    torch.testing.assert_close(crps, crps_normal(y, loc, scale), rtol=1e-10, atol=0)


def test_identity_recalibration_crps_in_float32(device):
    loc = torch.zeros(5, device=device)
    scale = torch.ones(5, device=device)
    y = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0], device=device)
    crps = _identity(Normal(loc, scale)).crps(y).cpu().numpy()
    z = y.cpu().double().numpy()  # closed form of Gneiting et al. (2005)
    exact = z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    np.testing.assert_allclose(crps, exact, rtol=1e-5)


def _stretch_map() -> tuple[torch.Tensor, torch.Tensor]:
    """A non-trivial strictly increasing map R with R(0) = 0, R(1) = 1."""
    return (
        torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=F64),
        torch.tensor([0.0, 0.05, 0.45, 0.97, 1.0], dtype=F64),
    )


def test_recalibrated_moments_match_dense_quadrature():
    kx, ky = _stretch_map()
    base = Normal(torch.tensor([1.0], dtype=F64), torch.tensor([2.0], dtype=F64))
    recal = Recalibrated(base, kx, ky)  # default 201 nodes

    def quantile(q: float) -> float:  # F^{-1}(R^{-1}(q))
        return 1.0 + 2.0 * stats.norm.ppf(np.interp(q, ky.numpy(), kx.numpy()))

    breaks = list(ky.numpy()[1:-1])
    mean, _ = quad(quantile, 0, 1, points=breaks, limit=200)
    second, _ = quad(lambda q: quantile(q) ** 2, 0, 1, points=breaks, limit=200)
    assert float(recal.mean) == pytest.approx(mean, abs=1e-4)
    assert float(recal.variance) == pytest.approx(second - mean**2, rel=5e-4)
    # CRPS against the integral of the squared CDF difference
    for y in (-3.0, 0.7, 4.0):
        exact, _ = quad(
            lambda t, y=y: (float(recal.cdf(torch.tensor([t], dtype=F64))) - (t >= y)) ** 2,
            -40,
            40,
            points=[y, 1.0],
            limit=400,
        )
        assert float(recal.crps(torch.tensor([y], dtype=F64))) == pytest.approx(exact, rel=2e-4)


def test_recalibrated_cdf_quantile_and_density_are_consistent():
    kx, ky = _stretch_map()
    base = Normal(torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 0.5], dtype=F64))
    recal = Recalibrated(base, kx, ky)
    levels = torch.tensor([0.01, 0.3, 0.5, 0.96], dtype=F64)
    q = recal.quantile(levels)
    torch.testing.assert_close(recal.cdf(q), levels.unsqueeze(-1).expand(4, 2))
    y = torch.tensor([0.3, 1.2], dtype=F64)
    h = 1e-6
    numeric = (recal.cdf(y + h) - recal.cdf(y - h)) / (2 * h)
    torch.testing.assert_close(recal.log_prob(y).exp(), numeric, rtol=1e-6, atol=0)
    total, _ = quad(
        lambda t: float(recal.log_prob(torch.tensor([t, t], dtype=F64))[0].exp()),
        -12,
        12,
        limit=200,
    )
    assert total == pytest.approx(1.0, abs=1e-6)


def test_recalibrated_samples_follow_its_cdf():
    kx, ky = _stretch_map()
    base = Normal(torch.tensor([0.5], dtype=F64), torch.tensor([1.5], dtype=F64))
    recal = Recalibrated(base, kx, ky)
    draws = recal.sample(4000, generator=_gen(6))
    assert draws.shape == (4000, 1)
    result = stats.kstest(draws[:, 0].numpy(), lambda t: recal.cdf(torch.as_tensor(t)).numpy())
    assert result.pvalue > 0.01
    # the PIT of draws from a recalibrated forecast under itself is uniform as well
    values = pit(
        draws[:, 0], Recalibrated(Normal(base.loc.expand(4000), base.scale.expand(4000)), kx, ky)
    )
    assert stats.kstest(values.numpy(), "uniform").pvalue > 0.01


def test_recalibrated_conversion_and_validation():
    kx, ky = _stretch_map()
    recal = Recalibrated(Normal(torch.zeros(2, 3), torch.ones(2, 3)), kx, ky)
    assert recal.batch_shape == (2, 3) and recal.dtype == torch.float32
    assert recal.to(F64).mean.dtype == F64
    ds = recal.to_xarray(dims=("a", "b"))
    assert {"mean", "stddev", "base_mean", "base_stddev"} <= set(ds.data_vars)
    with pytest.raises(ValueError, match="knots_x must increase"):
        Recalibrated(
            recal.base, torch.tensor([0.0, 0.5, 0.5, 1.0]), torch.tensor([0, 0.2, 0.4, 1.0])
        )
    with pytest.raises(TypeError, match="base is a"):
        Recalibrated(np.zeros(3), kx, ky)
    with pytest.raises(NotImplementedError, match="joint density"):
        mvn = MultivariateNormal(torch.zeros(3), torch.eye(3))
        Recalibrated(mvn, kx, ky).log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="not fitted"):
        IsotonicRecalibrator().transform(recal.base)


# ----------------------------------------------------------------------------- variance scaling
def test_variance_scaling_nll_closed_form_matches_numerical_optimum():
    obs, forecast = _overconfident(3000, 7, dtype=F64)
    scale = VarianceScaling("nll").fit(obs, forecast).scale
    y, mu, sd = obs.numpy(), forecast.loc.numpy(), forecast.scale.numpy()

    def nll(log_s: float) -> float:
        return -stats.norm.logpdf(y, mu, np.exp(log_s) * sd).sum()

    assert scale == pytest.approx(
        np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded", options={"xatol": 1e-9}).x),
        rel=1e-5,
    )
    assert scale == pytest.approx(2.0, abs=0.1)


def test_variance_scaling_crps_matches_properscoring_optimum():
    obs, forecast = _overconfident(2000, 8, dtype=F64)
    scale = VarianceScaling("crps").fit(obs, forecast).scale
    y, mu, sd = obs.numpy(), forecast.loc.numpy(), forecast.scale.numpy()

    def loss(log_s: float) -> float:
        return ps.crps_gaussian(y, mu, np.exp(log_s) * sd).mean()

    ref = np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded", options={"xatol": 1e-9}).x)
    assert scale == pytest.approx(ref, rel=1e-4)


def test_variance_scaling_mvn_matches_mahalanobis_reference():
    g = _gen(9)
    a = torch.randn(4, 4, generator=g, dtype=F64)
    cov = a @ a.T + 0.5 * torch.eye(4, dtype=F64)
    loc = torch.randn(500, 4, generator=g, dtype=F64)
    forecast = MultivariateNormal(loc, cov.expand(500, 4, 4))
    obs = loc + 1.5 * (
        torch.linalg.cholesky(cov) @ torch.randn(500, 4, 1, generator=g, dtype=F64)
    ).squeeze(-1)
    vs = VarianceScaling().fit(obs, forecast)
    r = (obs - loc).numpy()
    maha = np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov.numpy()), r)
    assert vs.scale == pytest.approx(np.sqrt(maha.mean() / 4), rel=1e-8)
    scaled = vs.transform(forecast)
    assert isinstance(scaled, MultivariateNormal)
    torch.testing.assert_close(scaled.covariance_matrix, vs.scale**2 * forecast.covariance_matrix)


def test_variance_scaling_mixture_nll_matches_numerical_optimum():
    g = _gen(10)
    w = torch.tensor([0.4, 0.6], dtype=F64)
    loc = torch.stack([torch.full((1500,), -1.0, dtype=F64), torch.full((1500,), 1.0, dtype=F64)])
    scale = torch.full((2, 1500), 0.5, dtype=F64)
    forecast = GaussianMixture(w, loc, scale)  # mean 0.4 * -1 + 0.6 * 1 = 0.2
    obs = 0.2 + 1.7 * (forecast.sample(1, generator=g)[0] - 0.2)  # 1.7x wider about the mean
    vs = VarianceScaling().fit(obs, forecast)
    mean = 0.2
    y = obs.numpy()

    def nll(log_s: float) -> float:
        s = np.exp(log_s)
        dens = sum(
            wk * stats.norm.pdf(y, mean + s * (mk - mean), s * 0.5)
            for wk, mk in [(0.4, -1.0), (0.6, 1.0)]
        )
        return -np.log(dens).sum()

    ref = np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded", options={"xatol": 1e-9}).x)
    assert vs.scale == pytest.approx(ref, rel=1e-4)
    assert vs.scale == pytest.approx(1.7, abs=0.1)
    scaled = vs.transform(forecast)
    torch.testing.assert_close(scaled.mean, forecast.mean)
    torch.testing.assert_close(scaled.variance, vs.scale**2 * forecast.variance)


def test_variance_scaling_of_ensembles_uses_crps():
    g = _gen(11)
    truth = torch.randn(3000, generator=g, dtype=F64)
    members = 0.5 * torch.randn(3000, 20, generator=g, dtype=F64)
    vs = VarianceScaling().fit(truth, members, member_dim=-1)
    y, x = truth.numpy(), members.numpy()
    centre = x.mean(1, keepdims=True)

    def loss(log_s: float) -> float:
        return ps.crps_ensemble(y, centre + np.exp(log_s) * (x - centre)).mean()

    ref = np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded", options={"xatol": 1e-9}).x)
    assert vs.scale == pytest.approx(ref, rel=1e-3)
    scaled = vs.transform(members, member_dim=-1)
    assert isinstance(scaled, Ensemble) and scaled.batch_shape == (3000,)
    torch.testing.assert_close(scaled.mean, members.mean(-1))
    torch.testing.assert_close(scaled.stddev, vs.scale * members.std(-1))
    with pytest.raises(ValueError, match="needs a predictive density"):
        VarianceScaling("nll").fit(truth, members, member_dim=-1)


def test_variance_scaling_validation():
    with pytest.raises(ValueError, match="objective="):
        VarianceScaling("mse")
    with pytest.raises(ValueError, match="bounds="):
        VarianceScaling(bounds=(2.0, 3.0))
    with pytest.raises(ValueError, match="not fitted"):
        VarianceScaling().transform(Normal(torch.zeros(1), torch.ones(1)))
    obs, forecast = _overconfident(100, 12)
    vs = VarianceScaling().fit(obs, forecast)
    knots = torch.tensor([0.0, 1.0])
    with pytest.raises(TypeError, match="forecast is a Recalibrated"):
        vs.transform(Recalibrated(forecast, knots, knots))
    with pytest.raises(ValueError, match="obs has 1 non-finite"):
        VarianceScaling().fit(
            torch.tensor([float("nan"), 0.0]), Normal(torch.zeros(2), torch.ones(2))
        )
