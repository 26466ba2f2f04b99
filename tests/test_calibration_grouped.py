"""Grouped recalibration, per-point CDF maps in Recalibrated, and the Stitched predictive."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import quad
from scipy.optimize import brentq

from uqdyn.calibration import (
    GroupedRecalibrator,
    IsotonicRecalibrator,
    LocalIsotonicRecalibrator,
    NoRecalibration,
    Recalibrated,
    Stitched,
    VarianceScaling,
    pit,
)
from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Three strictly increasing maps R_g with R(0) = 0, R(1) = 1 (one of them the identity)."""
    kx = torch.tensor(
        [[0.0, 0.2, 0.5, 0.9, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.1, 0.3, 0.6, 1.0]],
        dtype=F64,
    )
    ky = torch.tensor(
        [[0.0, 0.05, 0.45, 0.97, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.3, 0.6, 0.8, 1.0]],
        dtype=F64,
    )
    return kx, ky


# ----------------------------------------------------------------------------- per-point maps
def _bases(n: int):
    g = _gen(0)
    loc = torch.randn(n, generator=g, dtype=F64)
    scale = 0.5 + torch.rand(n, generator=g, dtype=F64)
    members = loc + scale * torch.randn(12, n, generator=g, dtype=F64)
    mix_loc = torch.stack([loc - 0.7, loc + 0.4])
    weights = torch.rand(12, generator=g, dtype=F64)
    return {
        "normal": (Normal(loc, scale), lambda idx: Normal(loc[idx], scale[idx])),
        "ensemble": (Ensemble(members), lambda idx: Ensemble(members[:, idx])),
        "weighted-ensemble": (
            Ensemble(members, weights),
            lambda idx: Ensemble(members[:, idx], weights),
        ),
        "mixture": (
            GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), mix_loc, scale.expand(2, n)),
            lambda idx: GaussianMixture(
                torch.tensor([0.3, 0.7], dtype=F64), mix_loc[:, idx], scale[idx].expand(2, -1)
            ),
        ),
    }


@pytest.mark.parametrize("family", ["normal", "ensemble", "weighted-ensemble", "mixture"])
def test_per_point_maps_equal_a_loop_over_single_maps(family):
    n = 12
    base, take = _bases(n)[family]
    kx, ky = _maps()
    index = torch.tensor([0, 1, 2] * 4)
    multi = Recalibrated(base, kx, ky, map_index=index)
    y = torch.linspace(-2.0, 2.0, n, dtype=F64)
    levels = torch.tensor([0.02, 0.3, 0.5, 0.9], dtype=F64)
    for g in range(3):
        idx = (index == g).nonzero().squeeze(-1)
        single = Recalibrated(take(idx), kx[g], ky[g])
        for name in ("mean", "variance"):
            torch.testing.assert_close(getattr(multi, name)[idx], getattr(single, name))
        torch.testing.assert_close(multi.cdf(y)[idx], single.cdf(y[idx]))
        torch.testing.assert_close(multi.quantile(levels)[:, idx], single.quantile(levels))
        torch.testing.assert_close(multi.crps(y)[idx], single.crps(y[idx]))
        if family in ("normal", "mixture"):
            torch.testing.assert_close(multi.log_prob(y)[idx], single.log_prob(y[idx]))


def test_per_point_maps_against_dense_quadrature():
    kx, ky = _maps()
    loc = torch.tensor([1.0, -0.5, 0.3], dtype=F64)
    scale = torch.tensor([2.0, 0.7, 1.1], dtype=F64)
    index = torch.tensor([2, 0, 1])
    recal = Recalibrated(Normal(loc, scale), kx, ky, map_index=index)
    fine = Recalibrated(Normal(loc, scale), kx, ky, map_index=index, n_nodes=801)
    for i in range(3):
        g, m, s = int(index[i]), float(loc[i]), float(scale[i])

        def cdf(t: float, g=g, m=m, s=s) -> float:
            return float(np.interp(stats.norm.cdf(t, m, s), kx[g].numpy(), ky[g].numpy()))

        def quantile(q: float, g=g, m=m, s=s) -> float:
            return m + s * stats.norm.ppf(np.interp(q, ky[g].numpy(), kx[g].numpy()))

        t = torch.tensor([-1.5, 0.2, 2.5], dtype=F64)
        got = recal.cdf(t.unsqueeze(-1).expand(3, 3))[:, i].numpy()
        np.testing.assert_allclose(got, [cdf(float(v)) for v in t], rtol=1e-13)
        for q in (0.01, 0.4, 0.97):
            ref = brentq(lambda v, q=q: cdf(v) - q, -30, 30, xtol=1e-13)
            assert float(recal.quantile(q)[i]) == pytest.approx(ref, abs=1e-9)
        breaks = list(ky[g].numpy()[1:-1])
        mean, _ = quad(quantile, 0, 1, points=breaks, limit=200)
        second, _ = quad(lambda q: quantile(q) ** 2, 0, 1, points=breaks, limit=200)
        assert float(recal.mean[i]) == pytest.approx(mean, abs=2e-4 * s)
        assert float(recal.variance[i]) == pytest.approx(second - mean**2, rel=5e-4)
        kinks = list(m + s * stats.norm.ppf(kx[g].numpy()[1:-1]))
        for y in (-3.0, 0.7):
            exact, _ = quad(
                lambda v, y=y: (cdf(v) - (v >= y)) ** 2,
                -40,
                40,
                points=sorted([y, m, *kinks]),
                limit=400,
                epsabs=1e-13,
                epsrel=1e-12,
            )
            # the node interpolation converges like h^2: 201 nodes within 5e-4, 801 within 5e-5
            ys = torch.full((3,), y, dtype=F64)
            assert float(recal.crps(ys)[i]) == pytest.approx(exact, rel=5e-4)
            assert float(fine.crps(ys)[i]) == pytest.approx(exact, rel=5e-5)


def test_per_point_maps_validation():
    kx, ky = _maps()
    base = Normal(torch.zeros(4, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="map_index is None"):
        Recalibrated(base, kx, ky)
    with pytest.raises(ValueError, match=r"map_index has values in \[0, 3\]"):
        Recalibrated(base, kx, ky, map_index=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="map_index has shape"):
        Recalibrated(base, kx, ky, map_index=torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="map_index has dtype"):
        Recalibrated(base, kx, ky, map_index=torch.zeros(4))
    with pytest.raises(ValueError, match="map_index was given"):
        Recalibrated(base, kx[0], ky[0], map_index=torch.zeros(4, dtype=torch.int64))
    bad = kx.clone()
    bad[1, 2] = bad[1, 1]
    with pytest.raises(ValueError, match="in map 1"):
        Recalibrated(base, bad, ky, map_index=torch.zeros(4, dtype=torch.int64))
    moved = Recalibrated(base, kx, ky, map_index=torch.tensor([0, 1, 2, 0])).to(torch.float32)
    assert moved.dtype == torch.float32 and moved.n_maps == 3
    assert "map_index" in moved.to_xarray().data_vars


# ----------------------------------------------------------------------------- grouped fits
def _lead_task(n_cases: int, seed: int, dtype=F64):
    """(cases, leads, points) data whose error grows with lead: sigma = 1, 2, 4."""
    g = _gen(seed)
    growth = torch.tensor([1.0, 2.0, 4.0], dtype=dtype).reshape(3, 1)
    loc = torch.randn(n_cases, 3, 20, generator=g, dtype=dtype)
    obs = loc + growth * torch.randn(n_cases, 3, 20, generator=g, dtype=dtype)
    return obs, Normal(loc, torch.ones_like(loc))


def test_grouped_variance_scaling_recovers_per_lead_scales():
    obs, forecast = _lead_task(100, 1)
    per_lead = GroupedRecalibrator(VarianceScaling(), axis=1).fit(obs, forecast)
    assert per_lead.labels == [0, 1, 2] and per_lead.fallback_groups == []
    for lead in range(3):
        sub = Normal(forecast.loc[:, lead], forecast.scale[:, lead])
        alone = VarianceScaling().fit(obs[:, lead], sub).scale
        assert per_lead.recalibrators[lead].scale == pytest.approx(alone, rel=1e-12)
        assert alone == pytest.approx(2.0**lead, rel=0.06)
    out = per_lead.transform(forecast)
    assert isinstance(out, Normal)
    expected = torch.tensor([per_lead.recalibrators[k].scale for k in range(3)], dtype=F64)
    torch.testing.assert_close(out.stddev, expected.reshape(3, 1).expand(100, 3, 20))


def test_grouped_scaling_of_ensembles_matches_separate_crps_fits():
    g = _gen(2)
    truth = torch.randn(60, 2, 10, generator=g, dtype=F64) * torch.tensor([1.0, 3.0]).reshape(2, 1)
    members = torch.randn(8, 60, 2, 10, generator=g, dtype=F64)
    grouped = GroupedRecalibrator(VarianceScaling(), axis=1).fit(truth, Ensemble(members))
    for lead in range(2):
        alone = VarianceScaling().fit(truth[:, lead], Ensemble(members[:, :, lead])).scale
        assert grouped.recalibrators[lead].scale == pytest.approx(alone, rel=1e-6)
    out = grouped.transform(Ensemble(members))
    assert isinstance(out, Ensemble)


def test_grouped_isotonic_with_string_labels_equals_separate_fits():
    g = _gen(3)
    n = 3000
    region = np.where(np.arange(n) % 3 == 0, "coast", "inland")
    widen = torch.as_tensor(np.where(region == "coast", 2.5, 0.6), dtype=F64)
    loc = torch.randn(n, generator=g, dtype=F64)
    obs = loc + widen * torch.randn(n, generator=g, dtype=F64)
    forecast = Normal(loc, torch.ones(n, dtype=F64))
    grouped = GroupedRecalibrator(IsotonicRecalibrator(max_knots=300)).fit(
        obs, forecast, groups=region
    )
    assert grouped.labels == ["coast", "inland"]
    out = grouped.transform(forecast, groups=region)
    assert isinstance(out, Recalibrated) and out.n_maps == 2
    y = obs.flip(0)
    for label in ("coast", "inland"):
        idx = torch.as_tensor(np.nonzero(region == label)[0])
        sub = Normal(loc[idx], torch.ones(len(idx), dtype=F64))
        alone = IsotonicRecalibrator(max_knots=300).fit(obs[idx], sub).transform(sub)
        torch.testing.assert_close(out.cdf(y)[idx], alone.cdf(y[idx]))
        torch.testing.assert_close(out.crps(y)[idx], alone.crps(y[idx]))
        torch.testing.assert_close(out.quantile(0.9)[idx], alone.quantile(0.9))


def test_small_groups_fall_back_and_shrinkage_follows_its_formula():
    obs, forecast = _lead_task(100, 4)
    mask = torch.ones(100, 3, 20, dtype=torch.bool)
    mask[2:, 2] = False  # lead 2 keeps 2 cases x 20 = 40 points < min_points
    grouped = GroupedRecalibrator(VarianceScaling(), axis=1, min_points=50).fit(
        obs, forecast, mask=mask
    )
    assert grouped.fallback_groups == [2] and grouped.n_points == {0: 2000, 1: 2000, 2: 40}
    glob = VarianceScaling().fit(obs, forecast, mask=mask).scale
    assert grouped.recalibrators[2].scale == pytest.approx(glob, rel=1e-12)
    ident = GroupedRecalibrator(VarianceScaling(), axis=1, min_points=50, fallback="identity")
    out = ident.fit(obs, forecast, mask=mask).transform(forecast)
    assert isinstance(ident.recalibrators[2], NoRecalibration)
    torch.testing.assert_close(out.stddev[:, 2], forecast.stddev[:, 2], rtol=0, atol=0)
    # shrinkage: log s_g = lam log s_g(own) + (1 - lam) log s(global), lam = n / (n + n0)
    n0 = 500.0
    shrunk = GroupedRecalibrator(VarianceScaling(), axis=1, shrinkage=n0).fit(obs, forecast)
    plain = GroupedRecalibrator(VarianceScaling(), axis=1).fit(obs, forecast)
    s0 = VarianceScaling().fit(obs, forecast).scale
    for lead in range(3):
        lam = 2000 / (2000 + n0)
        assert shrunk.shrink_weight[lead] == pytest.approx(lam)
        expected = math.exp(
            lam * math.log(plain.recalibrators[lead].scale) + (1 - lam) * math.log(s0)
        )
        assert shrunk.recalibrators[lead].scale == pytest.approx(expected, rel=1e-12)
    iso = GroupedRecalibrator(IsotonicRecalibrator(), axis=1, shrinkage=n0).fit(obs, forecast)
    own = GroupedRecalibrator(IsotonicRecalibrator(), axis=1).fit(obs, forecast)
    glob_iso = IsotonicRecalibrator().fit(obs, forecast)
    p = np.linspace(0, 1, 101)
    r_own = np.interp(p, own.recalibrators[1].knots_x, own.recalibrators[1].knots_y)
    r_glob = np.interp(p, glob_iso.knots_x, glob_iso.knots_y)
    r_shrunk = np.interp(p, iso.recalibrators[1].knots_x, iso.recalibrators[1].knots_y)
    np.testing.assert_allclose(r_shrunk, lam * r_own + (1 - lam) * r_glob, atol=1e-12)


def test_grouped_local_recalibrators_per_group():
    obs, forecast = _lead_task(200, 5)
    grouped = GroupedRecalibrator(LocalIsotonicRecalibrator(n_bins=2, min_points=30), axis=1)
    out = grouped.fit(obs, forecast).transform(forecast)
    assert isinstance(out, Recalibrated) and out.n_maps == 6  # 3 leads x 2 cells
    assert set(out.map_index[:, 0].unique().tolist()) <= {0, 1}
    assert set(out.map_index[:, 2].unique().tolist()) <= {4, 5}


# ----------------------------------------------------------------------------- mixed kinds
def test_mixed_kinds_give_a_stitched_forecast_exact_per_group():
    g = _gen(6)
    members = torch.randn(10, 40, 3, generator=g, dtype=F64)
    ens = Ensemble(members, estimator="fair")
    obs = torch.randn(40, 3, generator=g, dtype=F64) * torch.tensor([1.0, 2.0, 0.5])
    vs = VarianceScaling().fit(obs[:, 0], Ensemble(members[:, :, 0]))
    iso = IsotonicRecalibrator().fit(obs[:, 1], Ensemble(members[:, :, 1]), generator=g)
    combined = GroupedRecalibrator.from_fitted({0: vs, 1: iso, 2: NoRecalibration()}, axis=1)
    out = combined.transform(ens)
    assert isinstance(out, Stitched)
    y = obs
    crps = out.crps(y)
    alone = vs.transform(Ensemble(members[:, :, 0], estimator="fair"))
    torch.testing.assert_close(crps[:, 0], alone.crps(y[:, 0]))
    torch.testing.assert_close(crps[:, 1], iso.transform(Ensemble(members[:, :, 1])).crps(y[:, 1]))
    # the raw lead is the raw ensemble exactly (its fair CRPS, not a quadrature of it)
    torch.testing.assert_close(
        crps[:, 2], Ensemble(members[:, :, 2], estimator="fair").crps(y[:, 2])
    )
    torch.testing.assert_close(out.quantile(0.8)[:, 2], ens.quantile(0.8)[:, 2])
    assert out.sample(5, generator=g).shape == (5, 40, 3)
    values = pit(y, out, generator=_gen(7))
    assert values.shape == (40, 3) and bool(((values >= 0) & (values <= 1)).all())


def test_stitched_of_gaussians_and_validation():
    a = Normal(torch.zeros(4, dtype=F64), 1.0)
    b = Normal(torch.ones(4, dtype=F64), 2.0)
    s = Stitched([a, b], torch.tensor([0, 1, 0, 1]))
    y = torch.tensor([0.3, -0.2, 1.0, 2.0], dtype=F64)
    torch.testing.assert_close(s.cdf(y), torch.where(s.index == 0, a.cdf(y), b.cdf(y)))
    torch.testing.assert_close(
        s.log_prob(y), torch.where(s.index == 0, a.log_prob(y), b.log_prob(y))
    )
    torch.testing.assert_close(pit(y, s), s.cdf(y))
    torch.testing.assert_close(s.to(torch.float32).mean, s.mean.float())
    with pytest.raises(ValueError, match="parts is empty"):
        Stitched([], 0)
    with pytest.raises(ValueError, match="batch_shape"):
        Stitched([a, Normal(torch.zeros(3, dtype=F64), 1.0)], 0)
    with pytest.raises(ValueError, match=r"values in \[0, 2\)"):
        Stitched([a, b], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(NotImplementedError, match="elementwise densities"):
        mvn = MultivariateNormal(torch.zeros(4, dtype=F64), torch.eye(4, dtype=F64))
        Stitched([a, mvn], torch.tensor([0, 1, 0, 1])).log_prob(y)


def test_grouped_per_point_scale_of_a_multivariate_normal():
    g = _gen(8)
    a = torch.randn(2, 2, generator=g, dtype=F64)
    cov = a @ a.T + torch.eye(2, dtype=F64)
    loc = torch.zeros(300, 2, dtype=F64)
    chol = torch.linalg.cholesky(cov)
    obs = (chol @ torch.randn(300, 2, 1, generator=g, dtype=F64)).squeeze(-1) * torch.tensor(
        [1.0, 3.0], dtype=F64
    ).reshape(1, 2)
    forecast = MultivariateNormal(loc, scale_tril=chol.expand(300, 2, 2))
    grouped = GroupedRecalibrator(VarianceScaling(), axis=0, min_points=1)
    out = grouped.fit(obs, forecast).transform(forecast)  # one group per case: 2 points each
    assert isinstance(out, MultivariateNormal)
    s = torch.tensor([grouped.recalibrators[i].scale for i in range(300)], dtype=F64)
    torch.testing.assert_close(out.covariance_matrix, s.reshape(300, 1, 1) ** 2 * cov)


# ----------------------------------------------------------------------------- bad input
def test_grouped_validation_errors():
    obs, forecast = _lead_task(20, 9)
    with pytest.raises(ValueError, match="groups has shape"):
        GroupedRecalibrator(VarianceScaling()).fit(obs, forecast, groups=np.zeros((4, 4), int))
    with pytest.raises(TypeError, match="groups has dtype float"):
        GroupedRecalibrator(VarianceScaling()).fit(obs, forecast, groups=np.zeros((20, 3, 20)))
    with pytest.raises(ValueError, match="exactly one of groups="):
        GroupedRecalibrator(VarianceScaling()).fit(obs, forecast)
    with pytest.raises(ValueError, match="exactly one of groups="):
        GroupedRecalibrator(VarianceScaling(), axis=1).fit(obs, forecast, groups=0)
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        GroupedRecalibrator(VarianceScaling(), axis=3).fit(obs, forecast)
    with pytest.raises(ValueError, match="not fitted"):
        GroupedRecalibrator(VarianceScaling(), axis=1).transform(forecast)
    with pytest.raises(ValueError, match="min_points=0"):
        GroupedRecalibrator(VarianceScaling(), min_points=0)
    with pytest.raises(ValueError, match="fallback='nearest'"):
        GroupedRecalibrator(VarianceScaling(), fallback="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shrinkage=10.0 needs"):
        GroupedRecalibrator(LocalIsotonicRecalibrator(), shrinkage=10.0)
    with pytest.raises(TypeError, match="expected a uqdyn recalibrator"):
        GroupedRecalibrator(object())
    labels = np.repeat(np.array([[0], [1], [2]]), 20, axis=1)  # (3, 20) broadcast over cases
    grouped = GroupedRecalibrator(VarianceScaling()).fit(obs, forecast, groups=labels)
    with pytest.raises(ValueError, match="expected groups="):
        grouped.transform(forecast)
    with pytest.warns(RuntimeWarning, match=r"groups \[7\] were not in fit"):
        out = grouped.transform(forecast, groups=np.where(labels == 2, 7, labels))
    glob = VarianceScaling().fit(obs, forecast).scale
    torch.testing.assert_close(out.stddev[:, 2], torch.full((20, 20), glob, dtype=F64))
    by_axis = GroupedRecalibrator(VarianceScaling(), axis=1).fit(obs, forecast)
    with pytest.raises(ValueError, match="groups by axis=1"):
        by_axis.transform(forecast, groups=labels)
    with pytest.raises(ValueError, match="cannot be refitted"):
        GroupedRecalibrator.from_fitted({0: NoRecalibration()}).fit(obs, forecast, groups=0)
