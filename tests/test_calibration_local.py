"""Local recalibration: maps conditional on the forecast's spread or on user features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from uqdyn.calibration import (
    IsotonicRecalibrator,
    LocalIsotonicRecalibrator,
    LocalVarianceScaling,
    Recalibrated,
    VarianceScaling,
    coverage,
    pit,
)
from uqdyn.calibration.recalibrate import _isotonic_knots
from uqdyn.predictive import Ensemble, Normal

F64 = torch.float64
# sigma(x) = 0.3 * 5**x on x ~ U(0, 1): the true spread varies by a factor 5; its mean:
SIGMA_BAR = 0.3 * 4.0 / math.log(5.0)
# Relative error of Recalibrated's CRPS at 201 nodes for these maps (see the test)
TOL_CRPS = 1e-3
REGIONS = {"small spread": lambda x: x < 0.25, "large spread": lambda x: x > 0.75}


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heteroscedastic truth y ~ N(0, sigma(x)^2); returns x, sigma(x), y (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=F64)
    sigma = 0.3 * 5.0**x
    return x, sigma, sigma * torch.randn(n, generator=g, dtype=F64)


def _region_coverage(obs, forecast, x) -> dict[str, float]:
    return {name: float(coverage(obs, forecast, 0.9, mask=sel(x))) for name, sel in REGIONS.items()}


@pytest.fixture(scope="module")
def hetero():
    """Validation and fresh test data, and the homoscedastic forecast N(0, mean sigma)."""
    xv, sv, yv = _task(20000, 0)
    xt, st, yt = _task(20000, 1)
    flat_v = Normal(torch.zeros_like(yv), torch.full_like(yv, SIGMA_BAR))
    flat_t = Normal(torch.zeros_like(yt), torch.full_like(yt, SIGMA_BAR))
    return {"xv": xv, "sv": sv, "yv": yv, "xt": xt, "st": st, "yt": yt, "fv": flat_v, "ft": flat_t}


# ----------------------------------------------------------------------------- the task
@pytest.mark.parametrize(
    "local",
    [LocalIsotonicRecalibrator(), LocalVarianceScaling()],
    ids=["local-isotonic", "local-scaling"],
)
def test_local_recalibration_calibrates_both_regions_where_global_cannot(hetero, local):
    d = hetero
    raw = _region_coverage(d["yt"], d["ft"], d["xt"])
    fixed = local.fit(d["yv"], d["fv"], features=d["xv"]).transform(d["ft"], features=d["xt"])
    local_cov = _region_coverage(d["yt"], fixed, d["xt"])
    for name, cov in local_cov.items():
        assert abs(cov - 0.9) < 0.03, (name, local_cov)
    for global_ in (IsotonicRecalibrator(), VarianceScaling()):
        glob = _region_coverage(d["yt"], global_.fit(d["yv"], d["fv"]).transform(d["ft"]), d["xt"])
        # a global map cannot tell the regions apart: over-covers one, under-covers the other
        assert max(abs(c - 0.9) for c in glob.values()) > 0.03, glob
        assert glob["small spread"] > 0.95 and glob["large spread"] < 0.85, glob
    assert raw["small spread"] > 0.95 and raw["large spread"] < 0.85


def test_local_on_the_forecasts_own_spread(hetero):
    """Spread informative but mis-scaled non-uniformly: sd_f = sqrt(sigma * mean sigma)."""
    d = hetero
    fv = Normal(torch.zeros_like(d["yv"]), (d["sv"] * SIGMA_BAR).sqrt())
    ft = Normal(torch.zeros_like(d["yt"]), (d["st"] * SIGMA_BAR).sqrt())
    glob = _region_coverage(d["yt"], IsotonicRecalibrator().fit(d["yv"], fv).transform(ft), d["xt"])
    assert glob["small spread"] > 0.95 and glob["large spread"] < 0.85, glob
    for local in (LocalIsotonicRecalibrator(), LocalVarianceScaling()):
        fixed = local.fit(d["yv"], fv).transform(ft)  # default feature: the predictive stddev
        cov = _region_coverage(d["yt"], fixed, d["xt"])
        assert all(abs(c - 0.9) < 0.03 for c in cov.values()), (type(local).__name__, cov)


def test_local_with_two_features_finds_the_informative_one(hetero):
    d = hetero
    g = torch.Generator().manual_seed(2)
    noise_v = torch.rand(20000, generator=g, dtype=F64)
    noise_t = torch.rand(20000, generator=g, dtype=F64)
    local = LocalIsotonicRecalibrator(n_bins=16).fit(
        d["yv"], d["fv"], features=torch.stack([d["xv"], noise_v], -1)
    )
    assert local.cells is not None and local.cells.n_features == 2
    fixed = local.transform(d["ft"], features=torch.stack([d["xt"], noise_t], -1))
    cov = _region_coverage(d["yt"], fixed, d["xt"])
    assert all(abs(c - 0.9) < 0.03 for c in cov.values()), cov


def test_kernel_weighted_maps_calibrate_and_vary_smoothly(hetero):
    d = hetero
    hard = LocalIsotonicRecalibrator().fit(d["yv"], d["fv"], features=d["xv"])
    kernel = LocalIsotonicRecalibrator(bandwidth=1 / 16).fit(d["yv"], d["fv"], features=d["xv"])
    fixed = kernel.transform(d["ft"], features=d["xt"])
    cov = _region_coverage(d["yt"], fixed, d["xt"])
    assert all(abs(c - 0.9) < 0.03 for c in cov.values()), cov
    # neighbouring cells share points: their maps differ less than those of hard bins
    p = torch.linspace(0.01, 0.99, 99, dtype=F64)

    def jumps(recal) -> float:
        maps = Recalibrated(
            Normal(torch.zeros(8, dtype=F64), 1.0),
            recal.knots_x,
            recal.knots_y,
            map_index=torch.arange(8),
        )
        values = maps.calibration_map(p.unsqueeze(-1).expand(99, 8))  # (99, 8)
        return float((values[:, 1:] - values[:, :-1]).abs().max(0).values.mean())

    assert jumps(kernel) < jumps(hard)
    assert float(kernel.n_points.min()) > float(hard.n_points.max())  # effective sizes grow


# ----------------------------------------------------------------------------- Predictive contract
def test_local_result_matches_dense_reference_and_has_uniform_pit(hetero):
    d = hetero
    local = LocalIsotonicRecalibrator(max_knots=200).fit(d["yv"], d["fv"], features=d["xv"])
    fixed = local.transform(d["ft"], features=d["xt"])
    assert isinstance(fixed, Recalibrated) and fixed.map_index is not None
    # PIT of fresh data under the locally recalibrated forecast is uniform
    values = pit(d["yt"][:3000], local.transform(_first(d["ft"], 3000), features=d["xt"][:3000]))
    assert stats.kstest(values.numpy(), "uniform").pvalue > 0.01
    # cdf, quantile and CRPS of a few points against a dense float64 computation
    pts = [0, 1, 2]
    sub = local.transform(_first(d["ft"], 3), features=d["xt"][:3])
    kx, ky = sub.knots_x.numpy(), sub.knots_y.numpy()
    for i in pts:
        g = int(sub.map_index[i])

        def cdf(t: float, g=g) -> float:
            return float(np.interp(stats.norm.cdf(t, 0.0, SIGMA_BAR), kx[g], ky[g]))

        t = torch.tensor([-1.0, 0.2, 1.3], dtype=F64)
        ref = [cdf(float(v)) for v in t]
        got = sub.cdf(t.unsqueeze(-1).expand(3, 3))[:, i]
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)
        for q in (0.05, 0.5, 0.95):
            z = float(sub.quantile(q)[i])
            assert cdf(z) == pytest.approx(q, abs=1e-9)
        y = float(d["yt"][i])
        # CRPS = int (F(t) - 1{t >= y})^2 dt by the trapezoidal rule on a fine grid
        grid = np.union1d(np.linspace(-12.0, 12.0, 480001), [y])
        big_f = np.interp(stats.norm.cdf(grid, 0.0, SIGMA_BAR), kx[g], ky[g])
        below, above = grid <= y, grid >= y
        exact = np.trapezoid(big_f[below] ** 2, grid[below])
        exact += np.trapezoid((1.0 - big_f[above]) ** 2, grid[above])
        assert float(sub.crps(d["yt"][:3])[i]) == pytest.approx(exact, rel=TOL_CRPS)


def _first(p: Normal, n: int) -> Normal:
    return Normal(p.loc[:n], p.scale[:n])


# ----------------------------------------------------------------------------- safeguards
def test_small_cells_fall_back_to_the_global_map():
    x, _, y = _task(600, 3)
    f = Normal(torch.zeros_like(y), torch.full_like(y, SIGMA_BAR))
    local = LocalIsotonicRecalibrator(n_bins=8, min_points=100).fit(y, f, features=x)
    assert local.fallback_cells == list(range(8))  # 75 points per cell < 100
    glob = IsotonicRecalibrator().fit(y, f)
    assert local.global_knots_x is not None and glob.knots_x is not None
    torch.testing.assert_close(local.global_knots_x, glob.knots_x)
    p = torch.linspace(0.0, 1.0, 41, dtype=F64)
    out = local.transform(f, features=x)
    torch.testing.assert_close(
        out.calibration_map(p.unsqueeze(-1).expand(41, 600))[:, 5],
        Recalibrated(f, glob.knots_x, glob.knots_y).calibration_map(p),
    )
    assert torch.equal(local.shrink_weight, torch.zeros(8, dtype=F64))


def test_shrinkage_is_the_convex_combination_with_weight_n_over_n_plus_n0():
    x, _, y = _task(4000, 4)
    f = Normal(torch.zeros_like(y), torch.full_like(y, SIGMA_BAR))
    plain = LocalIsotonicRecalibrator(n_bins=4).fit(y, f, features=x)
    shrunk = LocalIsotonicRecalibrator(n_bins=4, shrinkage=500.0).fit(y, f, features=x)
    n_b = plain.n_points
    torch.testing.assert_close(n_b, torch.full((4,), 1000.0, dtype=F64))
    lam = n_b / (n_b + 500.0)
    torch.testing.assert_close(shrunk.shrink_weight, lam)
    p = np.linspace(0.0, 1.0, 201)
    gx, gy = plain.global_knots_x.numpy(), plain.global_knots_y.numpy()
    for b in range(4):
        own = np.interp(p, plain.knots_x[b].numpy(), plain.knots_y[b].numpy())
        expected = float(lam[b]) * own + (1 - float(lam[b])) * np.interp(p, gx, gy)
        got = np.interp(p, shrunk.knots_x[b].numpy(), shrunk.knots_y[b].numpy())
        np.testing.assert_allclose(got, expected, atol=1e-12)
    # local variance scaling: log-linear shrinkage of the factors
    s_plain = LocalVarianceScaling(n_bins=4).fit(y, f, features=x)
    s_shrunk = LocalVarianceScaling(n_bins=4, shrinkage=500.0).fit(y, f, features=x)
    expected = torch.exp(lam * s_plain.scales.log() + (1 - lam) * math.log(s_plain.global_scale))
    torch.testing.assert_close(s_shrunk.scales, expected)


def test_weighted_isotonic_knots_with_equal_weights_match_unweighted():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=500) ** 1.5
    x0, y0 = _isotonic_knots(p, None, 100)
    x1, y1 = _isotonic_knots(p, np.full(500, 3.0), 100)
    np.testing.assert_allclose(x1, x0)
    np.testing.assert_allclose(y1, y0, atol=1e-12)


def test_local_scaling_cells_match_separate_fits_for_ensembles():
    """Hard bins: each cell's factor is VarianceScaling('crps') fitted on that cell alone."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(1200, generator=g, dtype=F64)
    truth = (0.5 + x) * torch.randn(1200, generator=g, dtype=F64)
    members = 0.7 * torch.randn(16, 1200, generator=g, dtype=F64)
    ens = Ensemble(members)
    local = LocalVarianceScaling(n_bins=3).fit(truth, ens, features=x)
    order = torch.argsort(x)
    for b in range(3):
        idx = order[400 * b : 400 * (b + 1)]
        ref = VarianceScaling("crps").fit(truth[idx], Ensemble(members[:, idx])).scale
        assert float(local.scales[b]) == pytest.approx(ref, rel=1e-6)
    out = local.transform(ens, features=x)
    assert isinstance(out, Ensemble)
    s = local.point_scales(ens, features=x)
    torch.testing.assert_close(out.stddev, s * ens.stddev)
    assert float(local.scales[0]) < float(local.scales[2])


# ----------------------------------------------------------------------------- bad input
def test_local_validation_errors():
    x, _, y = _task(300, 7)
    f = Normal(torch.zeros_like(y), torch.ones_like(y))
    with pytest.raises(ValueError, match="n_bins=0"):
        LocalIsotonicRecalibrator(n_bins=0)
    with pytest.raises(ValueError, match="bandwidth=-1"):
        LocalIsotonicRecalibrator(bandwidth=-1.0)
    with pytest.raises(ValueError, match="shrinkage=-2"):
        LocalVarianceScaling(shrinkage=-2.0)
    with pytest.raises(ValueError, match="not fitted"):
        LocalIsotonicRecalibrator().transform(f)
    with pytest.raises(ValueError, match="features has shape"):
        LocalIsotonicRecalibrator().fit(y, f, features=torch.zeros(7, 3))
    holey = x.clone()
    holey[3] = torch.nan
    with pytest.raises(ValueError, match="features has 1 non-finite"):
        LocalIsotonicRecalibrator().fit(y, f, features=holey)
    local = LocalIsotonicRecalibrator(min_points=5).fit(y, f, features=x)
    with pytest.raises(ValueError, match="fitted on user features"):
        local.transform(f)
    with pytest.raises(ValueError, match="expected 1 as in fit"):
        local.transform(f, features=torch.stack([x, x], -1))
    spread = LocalVarianceScaling(min_points=5).fit(y, f)
    with pytest.raises(ValueError, match="fitted on the forecast's spread"):
        spread.transform(f, features=x)
    with pytest.raises(TypeError, match="LocalVarianceScaling supports"):
        LocalVarianceScaling().fit(y, IsotonicRecalibrator().fit(y, f).transform(f))
