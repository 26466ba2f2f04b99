"""Calibration diagnostics against statistical properties and independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats
from scipy.integrate import quad

from uqdyn.calibration import (
    ReliabilityCurve,
    coverage,
    miscalibration_area,
    pit,
    rank_histogram,
    reliability_curve,
    sharpness,
    spread_skill_ratio,
)
from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal

LEVELS = [0.5, 0.8, 0.9, 0.95]


def _gen(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _gaussian_case(n: int, seed: int, device="cpu", dtype=torch.float64, true_factor=1.0):
    g = _gen(seed, device)
    opts = {"generator": g, "device": device, "dtype": dtype}
    loc = torch.randn(n, **opts)
    scale = 0.5 + torch.rand(n, **opts)
    obs = loc + true_factor * scale * torch.randn(n, **opts)
    return obs, Normal(loc, scale)


# ----------------------------------------------------------------------------- PIT
def test_pit_of_gaussian_matches_scipy_cdf():
    obs, forecast = _gaussian_case(50, 0)
    expected = stats.norm.cdf(obs.numpy(), forecast.loc.numpy(), forecast.scale.numpy())
    np.testing.assert_allclose(pit(obs, forecast).numpy(), expected, rtol=1e-12, atol=1e-14)


def test_pit_of_true_distribution_is_uniform(device):
    obs, forecast = _gaussian_case(3000, 1, device=device, dtype=torch.float32)
    values = pit(obs, forecast).cpu().numpy()
    assert stats.kstest(values, "uniform").pvalue > 0.01
    # the same test has power: a forecast twice too narrow is rejected
    narrow = Normal(forecast.loc, 0.5 * forecast.scale)
    assert stats.kstest(pit(obs, narrow).cpu().numpy(), "uniform").pvalue < 1e-6


def test_pit_of_mixture_and_mvn_draws_is_uniform():
    g = _gen(2)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    loc = torch.randn(2, 2000, generator=g, dtype=torch.float64) * 3
    scale = 0.5 + torch.rand(2, 2000, generator=g, dtype=torch.float64)
    mixture = GaussianMixture(weights, loc, scale)
    assert (
        stats.kstest(pit(mixture.sample(1, generator=g)[0], mixture).numpy(), "uniform").pvalue
        > 0.01
    )
    a = torch.randn(400, 5, 5, generator=g, dtype=torch.float64)
    mvn = MultivariateNormal(torch.randn(400, 5, dtype=torch.float64), a @ a.mT + torch.eye(5))
    values = pit(mvn.sample(1, generator=g)[0], mvn).reshape(-1).numpy()
    assert stats.kstest(values, "uniform").pvalue > 0.01


def test_randomized_pit_of_exchangeable_ensemble_is_uniform(device):
    g = _gen(3, device)
    draws = torch.randn(4000, 8, generator=g, device=device)
    values = pit(draws[:, 0], draws[:, 1:], member_dim=-1, generator=_gen(4, device))
    assert stats.kstest(values.cpu().numpy(), "uniform").pvalue > 0.01


def test_randomized_pit_handles_ties_of_discrete_ensembles():
    rng = np.random.default_rng(5)
    draws = rng.poisson(2.0, size=(4000, 6)).astype(np.float64)  # many ties
    values = pit(draws[:, 0], draws[:, 1:], member_dim=1, generator=_gen(6))
    assert isinstance(values, np.ndarray) and values.shape == (4000,)
    assert stats.kstest(values, "uniform").pvalue > 0.01
    # without randomization the ties give a far from uniform transform
    naive = (draws[:, 1:] <= draws[:, :1]).mean(1)
    assert stats.kstest(naive, "uniform").pvalue < 1e-6


def test_pit_ensemble_bounds_match_pooled_ranks():
    obs = np.array([0.0, 1.0, 2.0, 5.0])
    members = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 3.0], [0.0, 1.0, 3.0], [0.0, 1.0, 2.0]])
    values = pit(obs, members, member_dim=-1, generator=_gen(0))
    lower = (members < obs[:, None]).sum(1) / 4.0
    upper = ((members <= obs[:, None]).sum(1) + 1) / 4.0
    assert np.all((values >= lower) & (values <= upper))


def test_pit_weighted_ensemble_is_between_left_and_right_limits():
    members = torch.tensor([[0.0], [1.0], [1.0], [2.0]], dtype=torch.float64)
    ens = Ensemble(members, weights=torch.tensor([0.1, 0.2, 0.3, 0.4]))
    obs = torch.ones(2000, 1, dtype=torch.float64).expand(2000, 1)
    ens_b = Ensemble(members.expand(4, 2000).unsqueeze(-1), weights=ens.weights)
    values = pit(obs, ens_b, generator=_gen(1)).reshape(-1).numpy()
    assert values.min() >= 0.1 - 1e-12 and values.max() <= 0.6 + 1e-12
    assert stats.kstest((values - 0.1) / 0.5, "uniform").pvalue > 0.01


def test_pit_array_and_ensemble_agree_and_xarray_round_trip():
    g = _gen(7)
    members = torch.randn(10, 3, 4, generator=g)
    obs = torch.randn(3, 4, generator=g)
    a = pit(obs, Ensemble(members), generator=_gen(8))
    b = pit(obs, members, member_dim=0, generator=_gen(8))
    torch.testing.assert_close(a, b)
    da_obs = xr.DataArray(obs.numpy(), dims=("x", "y"), coords={"x": [10, 20, 30]})
    da_ens = xr.DataArray(members.numpy(), dims=("member", "x", "y"))
    c = pit(da_obs, da_ens, member_dim="member", generator=_gen(8))
    assert isinstance(c, xr.DataArray) and c.dims == ("x", "y")
    assert list(c["x"].values) == [10, 20, 30]
    np.testing.assert_allclose(c.values, a.numpy(), rtol=1e-6)


def test_pit_rejects_bad_forecast_type():
    with pytest.raises(TypeError, match="forecast is a ndarray"):
        pit(np.zeros(3), np.zeros((3, 4)))
    with pytest.raises(TypeError, match="member_dim"):
        pit(torch.zeros(3), Normal(torch.zeros(3), torch.ones(3)), member_dim=0)
    with pytest.raises(ValueError, match="obs has shape"):
        pit(torch.zeros(4), Normal(torch.zeros(3), torch.ones(3)))


# ----------------------------------------------------------------------------- rank histogram
def test_rank_histogram_of_exchangeable_ensemble_is_flat(device):
    g = _gen(9, device)
    draws = torch.randn(5000, 10, generator=g, device=device)
    counts = rank_histogram(draws[:, 0], draws[:, 1:], generator=_gen(10, device))
    assert counts.shape == (10,) and counts.dtype == torch.int64 and int(counts.sum()) == 5000
    assert stats.chisquare(counts.cpu().numpy()).pvalue > 0.01
    # an under-dispersed ensemble gives a U shape the same test detects
    narrow = rank_histogram(draws[:, 0], 0.5 * draws[:, 1:], generator=_gen(10, device))
    assert stats.chisquare(narrow.cpu().numpy()).pvalue < 1e-6


def test_rank_histogram_matches_numpy_counts_without_ties():
    rng = np.random.default_rng(11)
    obs, members = rng.normal(size=(300, 2)), rng.normal(size=(300, 2, 6))
    counts = rank_histogram(obs, members)
    expected = np.bincount((members < obs[..., None]).sum(-1).ravel(), minlength=7)
    np.testing.assert_array_equal(counts, expected)


def test_rank_histogram_with_ties_is_flat_and_masked():
    rng = np.random.default_rng(12)
    draws = rng.integers(0, 3, size=(6000, 5)).astype(np.float32)
    counts = rank_histogram(draws[:, 0], draws[:, 1:], generator=_gen(13))
    assert stats.chisquare(counts).pvalue > 0.01
    mask = np.arange(6000) < 1000
    assert int(rank_histogram(draws[:, 0], draws[:, 1:], mask=mask).sum()) == 1000
    da = rank_histogram(
        xr.DataArray(draws[:, 0], dims="t"),
        xr.DataArray(draws[:, 1:], dims=("t", "member")),
        member_dim="member",
    )
    assert da.dims == ("rank",) and list(da["rank"].values) == [0, 1, 2, 3, 4]


def test_rank_histogram_rejects_nan_and_weighted_ensembles():
    with pytest.raises(ValueError, match="obs has 1 non-finite"):
        rank_histogram(torch.tensor([0.0, float("nan")]), torch.zeros(2, 3))
    weighted = Ensemble(torch.zeros(3, 2), weights=torch.ones(3))
    with pytest.raises(TypeError, match="member weights"):
        rank_histogram(torch.zeros(2), weighted)


# ----------------------------------------------------------------------------- coverage
def test_coverage_of_exact_gaussians_matches_nominal(device):
    n = 20000
    obs, forecast = _gaussian_case(n, 14, device=device, dtype=torch.float32)
    cov = coverage(obs, forecast, LEVELS)
    nominal = torch.tensor(LEVELS)
    bound = 4 * torch.sqrt(nominal * (1 - nominal) / n)  # 4 binomial standard errors
    assert bool(((cov.cpu() - nominal).abs() < bound).all())


def test_coverage_matches_hand_computation_with_scipy_intervals():
    obs, forecast = _gaussian_case(500, 15, true_factor=1.3)
    y, mu, sd = obs.numpy(), forecast.loc.numpy(), forecast.scale.numpy()
    expected = []
    for level in LEVELS:
        lo, hi = stats.norm.interval(level, mu, sd)
        expected.append(np.mean((lo <= y) & (y <= hi)))
    np.testing.assert_allclose(coverage(y, forecast, LEVELS), expected)
    single = coverage(obs, forecast, 0.9)
    assert single.shape == () and float(single) == pytest.approx(expected[2])


def test_coverage_of_mixture_draws_and_masking():
    g = _gen(16)
    mixture = GaussianMixture(
        torch.tensor([0.5, 0.5]), torch.tensor([[-2.0], [2.0]]).expand(2, 8000), torch.ones(2, 8000)
    )
    obs = mixture.sample(1, generator=g)[0]
    cov = coverage(obs, mixture, LEVELS)
    nominal = torch.tensor(LEVELS)
    assert bool(((cov - nominal).abs() < 4 * torch.sqrt(nominal * (1 - nominal) / 8000)).all())
    mask = torch.zeros(8000, dtype=torch.bool)
    mask[:100] = True
    sub = GaussianMixture(mixture.weights[:, :100], mixture.loc[:, :100], mixture.scale[:, :100])
    torch.testing.assert_close(
        coverage(obs, mixture, LEVELS, mask=mask), coverage(obs[:100], sub, LEVELS)
    )


def test_coverage_validates_levels_and_mask():
    obs, forecast = _gaussian_case(10, 0)
    with pytest.raises(ValueError, match="levels"):
        coverage(obs, forecast, [0.5, 1.0])
    with pytest.raises(TypeError, match="mask has dtype"):
        coverage(obs, forecast, 0.5, mask=torch.ones(10))
    with pytest.raises(ValueError, match="no points are selected"):
        coverage(obs, forecast, 0.5, mask=torch.zeros(10, dtype=torch.bool))


# ----------------------------------------------------------------------------- reliability
def test_reliability_of_calibrated_forecast_is_near_diagonal():
    n = 5000
    obs, forecast = _gaussian_case(n, 17)
    curve = reliability_curve(obs, forecast)
    assert isinstance(curve, ReliabilityCurve) and curve.nominal.shape == (101,)
    # the maximal deviation is the KS statistic: 1.63 / sqrt(n) is its 1% critical value
    assert float((curve.observed - curve.nominal).abs().max()) < 1.63 / np.sqrt(n)


def test_reliability_of_calibrated_ensemble_is_near_diagonal():
    n = 5000
    draws = torch.randn(n, 5, generator=_gen(18))
    curve = reliability_curve(draws[:, 0], draws[:, 1:], member_dim=-1, generator=_gen(19))
    assert float((curve.observed - curve.nominal).abs().max()) < 1.63 / np.sqrt(n)


def test_reliability_of_overconfident_forecast_matches_analytic_curve():
    n = 20000
    obs, forecast = _gaussian_case(n, 20, true_factor=2.0)
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    curve = reliability_curve(obs.numpy(), forecast, levels)
    assert isinstance(curve.observed, np.ndarray)
    expected = stats.norm.cdf(stats.norm.ppf(levels) / 2.0)  # P(Z <= q_p / 2), Z ~ N(0, 1)
    np.testing.assert_allclose(curve.observed, expected, atol=1.63 / np.sqrt(n))


def test_miscalibration_area_matches_hand_computation():
    # PIT values 0.1, 0.2, 0.2, 0.7 under a standard normal forecast
    obs = torch.tensor(stats.norm.ppf([0.1, 0.2, 0.2, 0.7]))
    forecast = Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    curve = reliability_curve(obs, forecast, levels)
    torch.testing.assert_close(
        curve.observed, torch.tensor([0.0, 0.75, 0.75, 1.0, 1.0], dtype=torch.float64)
    )
    # |observed - nominal| = 0, .5, .25, .25, 0 -> trapezoid with step 1/4 = 0.25
    assert float(miscalibration_area(obs, forecast, levels)) == pytest.approx(0.25, abs=1e-12)


def test_miscalibration_area_of_overconfident_forecast_matches_quadrature():
    obs, forecast = _gaussian_case(20000, 21, true_factor=2.0)
    exact, _ = quad(lambda p: abs(stats.norm.cdf(stats.norm.ppf(p) / 2.0) - p), 0.0, 1.0)
    area = float(miscalibration_area(obs, forecast))
    assert area == pytest.approx(exact, abs=0.01)
    calibrated = float(miscalibration_area(*_gaussian_case(20000, 22)))
    assert calibrated < 0.01


def test_reliability_validates_levels():
    obs, forecast = _gaussian_case(10, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        reliability_curve(obs, forecast, [0.5, 0.2])
    with pytest.raises(ValueError, match="at least two levels"):
        miscalibration_area(obs, forecast, [0.5])


# ----------------------------------------------------------------------------- spread-skill
def test_spread_skill_of_calibrated_ensemble_is_one_with_correction(device):
    n, m = 20000, 4
    draws = torch.randn(n, m + 1, generator=_gen(23, device), device=device, dtype=torch.float64)
    obs, members = draws[:, 0], draws[:, 1:]
    ssr = float(spread_skill_ratio(obs, members, member_dim=-1))
    assert ssr == pytest.approx(1.0, abs=0.03)
    # the uncorrected ratio is sqrt(M / (M + 1)) = 0.894 by hand
    y, x = obs.cpu().numpy(), members.cpu().numpy()
    raw = np.sqrt(x.var(1, ddof=1).mean()) / np.sqrt(((x.mean(1) - y) ** 2).mean())
    assert ssr == pytest.approx(np.sqrt((m + 1) / m) * raw, rel=1e-10)
    assert raw == pytest.approx(np.sqrt(m / (m + 1)), abs=0.03)


def test_spread_skill_of_gaussian_and_weighted_ensemble():
    obs, forecast = _gaussian_case(20000, 24)
    assert float(spread_skill_ratio(obs, forecast)) == pytest.approx(1.0, abs=0.03)
    y, mu, sd = obs.numpy(), forecast.loc.numpy(), forecast.scale.numpy()
    expected = np.sqrt((sd**2).mean()) / np.sqrt(((mu - y) ** 2).mean())
    assert float(spread_skill_ratio(obs, forecast)) == pytest.approx(expected, rel=1e-12)
    members = torch.randn(3, 10, dtype=torch.float64, generator=_gen(25))
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ens = Ensemble(members, weights=w)
    y2 = torch.randn(10, dtype=torch.float64, generator=_gen(26))
    mean = (w[:, None] * members).sum(0)
    var = (w[:, None] * (members - mean) ** 2).sum(0) / (1 - (w**2).sum())
    ref = np.sqrt(1 + float((w**2).sum())) * var.mean().sqrt() / ((mean - y2) ** 2).mean().sqrt()
    assert float(spread_skill_ratio(y2, ens)) == pytest.approx(float(ref), rel=1e-12)


# ----------------------------------------------------------------------------- sharpness
def test_sharpness_std_and_interval_width():
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    forecast = Normal(torch.zeros(3, dtype=torch.float64), scale)
    assert float(sharpness(forecast)) == pytest.approx(2.0)
    width = 2 * stats.norm.ppf(0.95) * 2.0
    assert float(sharpness(forecast, level=0.9)) == pytest.approx(width, rel=1e-10)
    mask = torch.tensor([True, False, False])
    assert float(sharpness(forecast, mask=mask)) == pytest.approx(1.0)
    rng = np.random.default_rng(27)
    members = rng.normal(size=(5, 7))
    out = sharpness(members, member_dim=1)
    assert isinstance(out, np.ndarray)
    assert float(out) == pytest.approx(members.std(1, ddof=1).mean(), rel=1e-12)
    with pytest.raises(ValueError, match="level="):
        sharpness(forecast, level=1.5)


def test_xarray_inputs_give_labelled_outputs():
    rng = np.random.default_rng(28)
    obs = xr.DataArray(rng.normal(size=(40, 3)), dims=("time", "site"))
    members = xr.DataArray(rng.normal(size=(40, 3, 6)), dims=("time", "site", "member"))
    cov = coverage(obs, members, [0.5, 0.9], member_dim="member")
    assert isinstance(cov, xr.DataArray) and cov.dims == ("level",)
    np.testing.assert_allclose(cov["level"].values, [0.5, 0.9])
    # the ensemble's central intervals are those of Ensemble.interval on the same members
    ens = Ensemble(torch.from_numpy(members.transpose("member", "time", "site").values))
    lo, hi = ens.interval(0.9)
    y = torch.from_numpy(obs.values)
    assert float(cov.sel(level=0.9)) == pytest.approx(
        float(((lo <= y) & (y <= hi)).double().mean())
    )
    curve = reliability_curve(obs, members, [0.0, 0.5, 1.0], member_dim="member", generator=_gen(0))
    assert curve.observed.dims == ("quantile",) and float(curve.observed[-1]) == 1.0
    ssr = spread_skill_ratio(obs, members, member_dim="member")
    assert isinstance(ssr, xr.DataArray) and ssr.ndim == 0
    sharp = sharpness(
        members, member_dim="member", mask=xr.DataArray(np.ones(3, bool), dims="site")
    )
    assert float(sharp) == pytest.approx(float(members.std("member", ddof=1).mean()), rel=1e-12)
