"""Skill scores with block-bootstrap CIs: exact values, NaN pairs, CI coverage, block length."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import xarray as xr

from uqdyn.forecast import (
    block_bootstrap_indices,
    mean_interval,
    optimal_block_length,
    paired_difference,
    skill_score,
)


def _ar1(n: int, phi: float, rng: np.random.Generator, size: tuple[int, ...] = ()) -> np.ndarray:
    x = np.zeros((n, *size))
    x[0] = rng.normal(size=size) / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal(size=size)
    return x


def test_skill_by_hand_per_lead_with_nan_pairs() -> None:
    s = np.array([[1.0, 2.0], [3.0, np.nan], [2.0, 4.0]])
    r = np.array([[2.0, 4.0], [6.0, 8.0], [np.nan, 8.0]])
    da_s = xr.DataArray(s, dims=("origin", "lead"), coords={"lead": [1, 2]})
    da_r = da_s.copy(data=r)
    result = skill_score(da_s, da_r, dim="origin", n_boot=50, block=1)
    # lead 1: pairs (1,2), (3,6) -> 1 - 4/8; lead 2: pairs (2,4), (4,8) -> 1 - 6/12
    np.testing.assert_allclose(result["skill"].values, [0.5, 0.5])
    np.testing.assert_allclose(result["n"].values, [2, 2])
    np.testing.assert_allclose(result["score"].values, [2.0, 3.0])
    assert result["skill"].dims == ("lead",) and list(result["lead"].values) == [1, 2]


def test_spatial_dims_are_pooled_within_each_time() -> None:
    rng = np.random.default_rng(0)
    s = rng.gamma(2.0, size=(40, 3, 4))
    r = s * 2.0
    da = xr.DataArray(s, dims=("origin", "lat", "lon"))
    result = skill_score(da, da.copy(data=r), dim=["origin", "lat", "lon"], n_boot=100)
    assert float(result["skill"]) == pytest.approx(0.5)
    assert float(result["lower"]) == pytest.approx(0.5) and float(result["upper"]) == pytest.approx(
        0.5
    )


def test_numpy_inputs_with_integer_dims() -> None:
    rng = np.random.default_rng(1)
    ref = rng.gamma(2.0, size=(300, 2))
    result = skill_score(0.75 * ref, ref, dim=0, n_boot=100)
    np.testing.assert_allclose(result["skill"].values, [0.25, 0.25])
    assert result["skill"].dims == ("dim_1",)


def _skill_ci_coverage(block: int | None, n_rep: int, seed: int) -> float:
    """Fraction of replications whose 90% CI covers the true skill of lognormal AR(1) scores."""
    rng = np.random.default_rng(seed)
    n, phi, mu_s, mu_r, sd = 500, 0.5, -0.3, 0.0, 0.5
    true_skill = 1.0 - np.exp(mu_s - mu_r)  # E[exp(mu + sd u)] ratio, same sd
    hits = 0
    for rep in range(n_rep):
        u = _ar1(n, phi, rng)
        v = 0.5 * u + np.sqrt(0.75) * _ar1(n, phi, rng)  # correlated with u, same marginal
        scale = sd * np.sqrt(1 - phi**2)
        s = np.exp(mu_s + scale * u)
        r = np.exp(mu_r + scale * v)
        out = skill_score(s, r, dim=0, block=block, n_boot=400, seed=rep)
        hits += int(float(out["lower"]) <= true_skill <= float(out["upper"]))
    return hits / n_rep


def test_block_bootstrap_ci_covers_the_known_skill() -> None:
    coverage = _skill_ci_coverage(None, 300, seed=10)
    assert 0.82 <= coverage <= 0.96, coverage
    # the i.i.d. bootstrap treats autocorrelated scores as independent: too narrow
    iid = _skill_ci_coverage(1, 300, seed=10)
    assert iid < coverage - 0.1, (iid, coverage)


def test_paired_difference_and_mean_interval() -> None:
    rng = np.random.default_rng(2)
    base = rng.gamma(2.0, size=500)
    better = base - 0.3
    diff = paired_difference(better, base, dim=0, n_boot=300)
    assert float(diff["difference"]) == pytest.approx(-0.3)
    assert float(diff["upper"]) < 0
    # with no true difference, the 90% interval covers 0 about 90% of the time
    covers = []
    for rep in range(200):
        base_r = rng.gamma(2.0, size=200)
        same = base_r + rng.normal(scale=0.1, size=200)
        noise = paired_difference(same, base_r, dim=0, n_boot=200, seed=rep)
        covers.append(float(noise["lower"]) <= 0.0 <= float(noise["upper"]))
    assert 0.83 <= np.mean(covers) <= 0.96, np.mean(covers)
    sq = rng.exponential(size=400)
    rmse = mean_interval(sq, dim=0, statistic="sqrt", n_boot=300)
    assert float(rmse["value"]) == pytest.approx(np.sqrt(sq.mean()))
    assert float(rmse["lower"]) < float(rmse["value"]) < float(rmse["upper"])


def test_block_bootstrap_indices_are_circular_blocks() -> None:
    idx = block_bootstrap_indices(10, 4, 5, np.random.default_rng(0))
    assert idx.shape == (5, 10)
    steps = np.diff(idx, axis=1)[:, :3]  # within the first block
    assert np.all((steps == 1) | (steps == -9))


@pytest.mark.skipif(importlib.util.find_spec("arch") is None, reason="arch not installed")
def test_block_length_agrees_with_arch() -> None:
    from arch.bootstrap import optimal_block_length as arch_block

    rng = np.random.default_rng(3)
    for phi in (0.5, 0.8, 0.95):
        x = _ar1(1000, phi, rng)
        ours = optimal_block_length(x)
        theirs = float(arch_block(x)["circular"].iloc[0])
        assert 0.7 < ours / theirs < 1.4, (phi, ours, theirs)
    white = rng.normal(size=1000)
    assert optimal_block_length(white) < 3.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": 1.5}, "level=1.5"),
        ({"n_boot": 3}, "n_boot=3"),
        ({"block": 0}, "block=0"),
        ({"dim": "lead"}, "dim='lead' is not a dim"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    da = xr.DataArray(np.ones((20, 2)), dims=("origin", "x"))
    args = {"dim": "origin", **kwargs}
    with pytest.raises(ValueError, match=match):
        skill_score(da, da, **args)


def test_mismatched_dims_are_refused() -> None:
    a = xr.DataArray(np.ones((5, 2)), dims=("origin", "lead"))
    b = xr.DataArray(np.ones((5, 2)), dims=("origin", "x"))
    with pytest.raises(ValueError, match="expected the same dims"):
        skill_score(a, b, dim="origin")
