"""Mergeable accumulators: random batch splits merged in random order equal the one-shot value."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.calibration.accumulate import (
    PITHistogramAccumulator,
    RankHistogramAccumulator,
    ReliabilityAccumulator,
)
from uqdyn.calibration.metrics import pit, rank_histogram, reliability_curve
from uqdyn.predictive import Normal
from uqdyn.scoring.accumulate import EventReliabilityAccumulator, ScoreAccumulator
from uqdyn.scoring.crps_closed import crps_normal
from uqdyn.scoring.crps_ensemble import crps_ensemble


def _splits(rng: np.random.Generator, n: int, parts: int) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _merge_randomly(rng: np.random.Generator, accs: list):
    accs = list(accs)
    while len(accs) > 1:
        i, j = rng.choice(len(accs), size=2, replace=False)
        merged = accs[i].merge(accs[j])
        accs = [a for k, a in enumerate(accs) if k not in (i, j)] + [merged]
    return accs[0]


def _dense_weighted_mean(s: np.ndarray, w: np.ndarray, axes, skipna=False) -> np.ndarray:
    w = np.broadcast_to(w, s.shape).astype(np.float64)
    keep = (w != 0) & (~np.isnan(s) if skipna else True)
    den = np.where(keep, w, 0.0).sum(axes)
    return np.where(keep, w * np.where(keep, s, 0.0), 0.0).sum(axes) / np.where(den, den, np.nan)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_accumulator_numpy_splits_equal_one_shot(seed):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(4, 60, 5))  # (lead, point, lon)
    fc = rng.normal(size=(4, 60, 5, 7))
    w = rng.uniform(0.1, 1.0, size=(1, 60, 1))
    one_shot = _dense_weighted_mean(crps_ensemble(obs, fc), w, (1, 2))
    accs = []
    for sl in _splits(rng, 60, 5):  # batches along the points, each with its weights
        acc = ScoreAccumulator(crps_ensemble, keep_dims=(0,))
        accs.append(acc.update(obs[:, sl], fc[:, sl], weights=w[:, sl]))
    out = _merge_randomly(rng, accs).result()
    assert isinstance(out, np.ndarray) and out.shape == (4,)
    np.testing.assert_allclose(out, one_shot, rtol=1e-12, atol=0)


def test_score_accumulator_xarray_groups_by_label_and_weights_by_label():
    rng = np.random.default_rng(3)
    lat = np.linspace(-70, 70, 15)
    coords = {"lead": np.arange(6), "lat": lat}
    obs = xr.DataArray(rng.normal(size=(6, 15, 4)), dims=("lead", "lat", "lon"), coords=coords)
    fc = xr.DataArray(
        rng.normal(size=(5, 6, 15, 4)), dims=("member", "lead", "lat", "lon"), coords=coords
    )
    w = xr.DataArray(np.cos(np.deg2rad(lat)), dims="lat", coords={"lat": lat})
    s = crps_ensemble(obs, fc)
    one_shot = _dense_weighted_mean(s.values, w.values[None, :, None], (1, 2))
    accs = []
    for lead_sl in _splits(rng, 6, 2):  # batches hold different leads and lats
        for lat_sl in _splits(rng, 15, 3):
            acc = ScoreAccumulator(crps_ensemble, keep_dims="lead", weights=w, member_dim="member")
            accs.append(
                acc.update(obs.isel(lead=lead_sl, lat=lat_sl), fc.isel(lead=lead_sl, lat=lat_sl))
            )
    out = _merge_randomly(rng, accs).result()
    assert out.dims == ("lead",)
    np.testing.assert_array_equal(out.lead.values, np.arange(6))
    np.testing.assert_allclose(out.values, one_shot, rtol=1e-12, atol=0)


@pytest.mark.parametrize("skipna", [False, True])
def test_score_accumulator_nan_rules_and_torch(skipna):
    rng = np.random.default_rng(4)
    obs = torch.from_numpy(rng.normal(size=(3, 40)))
    mu, sigma = (
        torch.from_numpy(rng.normal(size=(3, 40))),
        torch.full((3, 40), 1.3, dtype=torch.float64),
    )
    obs[0, 5] = torch.nan
    obs[2, :] = torch.nan
    s = crps_normal(obs, mu, sigma).numpy()
    one_shot = _dense_weighted_mean(s, np.ones(1), (1,), skipna=skipna)
    acc_a = ScoreAccumulator(crps_normal, keep_dims=(0,), skipna=skipna)
    acc_b = ScoreAccumulator(crps_normal, keep_dims=(0,), skipna=skipna)
    acc_a.update(obs[:, :17], mu[:, :17], sigma[:, :17])
    acc_b.update(obs[:, 17:], mu[:, 17:], sigma[:, 17:])
    out = pickle.loads(pickle.dumps(acc_b)).merge(acc_a).result()
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(np.isnan(out.numpy()), np.isnan(one_shot))
    assert bool(torch.isnan(out[2])) and (bool(torch.isnan(out[0])) != skipna)
    np.testing.assert_allclose(out.numpy()[1], one_shot[1], rtol=1e-12)


def test_score_accumulator_mask_and_full_mean():
    rng = np.random.default_rng(5)
    obs, fc = rng.normal(size=(30, 4)), rng.normal(size=(30, 4, 6))
    mask = rng.uniform(size=(30, 4)) > 0.3
    s = crps_ensemble(obs, fc)
    acc = ScoreAccumulator(crps_ensemble)
    acc.update(obs[:11], fc[:11], mask=mask[:11]).update(obs[11:], fc[11:], mask=mask[11:])
    np.testing.assert_allclose(acc.result(), s[mask].mean(), rtol=1e-12)
    assert int(acc.n_points) == int(mask.sum())


def test_score_accumulator_errors():
    acc = ScoreAccumulator(crps_ensemble, keep_dims=(0,))
    with pytest.raises(ValueError, match="no batch"):
        acc.result()
    with pytest.raises(ValueError, match="negative"):
        acc.update(np.zeros((2, 3)), np.zeros((2, 3, 4)), weights=-np.ones(3))
    acc.update(np.zeros((2, 3)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="keep_dims"):
        acc.update(np.zeros((3, 3)), np.ones((3, 3, 4)))
    with pytest.raises(ValueError, match="different settings"):
        acc.merge(ScoreAccumulator(crps_ensemble, keep_dims=(1,)))
    with pytest.raises(TypeError, match="cannot merge"):
        acc.merge(RankHistogramAccumulator())
    with pytest.raises(TypeError, match="score_fn"):
        ScoreAccumulator("crps")


def test_rank_histogram_accumulator_equals_one_shot_without_ties():
    rng = np.random.default_rng(6)
    obs, fc = rng.normal(size=(500, 3)), rng.normal(size=(500, 3, 9)) + 0.3
    one_shot = rank_histogram(obs, fc)
    accs = [
        RankHistogramAccumulator(generator=torch.Generator().manual_seed(k)).update(obs[sl], fc[sl])
        for k, sl in enumerate(_splits(rng, 500, 6))
    ]
    out = _merge_randomly(rng, accs).result()
    np.testing.assert_array_equal(out, one_shot)
    assert out.dtype == np.int64 and out.sum() == 1500


def test_rank_histogram_accumulator_with_ties_keeps_totals_and_xarray():
    rng = np.random.default_rng(7)
    obs = xr.DataArray(rng.integers(0, 3, size=400).astype(float), dims="t")
    fc = xr.DataArray(rng.integers(0, 3, size=(400, 5)).astype(float), dims=("t", "member"))
    acc = RankHistogramAccumulator(member_dim="member", generator=torch.Generator().manual_seed(0))
    for sl in _splits(rng, 400, 4):
        acc.update(obs[sl], fc[sl])
    out = acc.result()
    ref = rank_histogram(obs, fc, member_dim="member", generator=torch.Generator().manual_seed(0))
    assert out.dims == ("rank",) and int(out.sum()) == 400
    # ties are broken by per-batch draws: the same in distribution (here within 4 sigma)
    np.testing.assert_allclose(out.values, ref.values, atol=4 * np.sqrt(400 / 6))


def test_pit_histogram_and_reliability_accumulators_equal_one_shot_float32():
    rng = np.random.default_rng(8)
    y = torch.from_numpy(rng.normal(size=(900,)).astype(np.float32))
    mu = torch.from_numpy(rng.normal(scale=0.3, size=(900,)).astype(np.float32))
    sigma = torch.full((900,), 0.8)
    levels = np.linspace(0.0, 1.0, 21)
    pits = pit(y, Normal(mu, sigma)).numpy()
    hist_one, _ = np.histogram(pits, bins=np.linspace(0, 1, 11))
    curve_one = reliability_curve(y, Normal(mu, sigma), levels)
    hists, rels = [], []
    for sl in _splits(rng, 900, 7):
        hists.append(PITHistogramAccumulator(10).update(y[sl], Normal(mu[sl], sigma[sl])))
        rels.append(ReliabilityAccumulator(levels).update(y[sl], Normal(mu[sl], sigma[sl])))
    hist = _merge_randomly(rng, hists).result()
    curve = _merge_randomly(rng, rels).result()
    torch.testing.assert_close(hist, torch.from_numpy(hist_one.astype(np.int64)), rtol=0, atol=0)
    assert curve.observed.dtype == curve_one.observed.dtype == torch.float32
    torch.testing.assert_close(curve.observed, curve_one.observed, rtol=0, atol=0)
    torch.testing.assert_close(curve.nominal, curve_one.nominal, rtol=0, atol=0)


def test_reliability_accumulator_ensemble_xarray_mask_default_levels():
    rng = np.random.default_rng(9)
    obs = xr.DataArray(rng.normal(size=(300, 2)), dims=("t", "x"))
    fc = xr.DataArray(rng.normal(size=(300, 2, 8)), dims=("t", "x", "member"))
    mask = xr.DataArray(rng.uniform(size=(300, 2)) > 0.2, dims=("t", "x"))
    acc = ReliabilityAccumulator(member_dim="member", generator=torch.Generator().manual_seed(1))
    for sl in _splits(rng, 300, 3):
        acc.update(obs[sl], fc[sl], mask=mask[sl])
    curve = acc.result()
    ref = reliability_curve(
        obs, fc, member_dim="member", generator=torch.Generator().manual_seed(1), mask=mask
    )
    assert curve.observed.dims == ("quantile",) and curve.observed.size == 101
    assert acc.n_points == int(mask.sum())
    assert float(curve.observed[0]) == 0.0 and float(curve.observed[-1]) == 1.0
    # randomized PIT: same distribution, different draws (binomial sd <= 0.5 / sqrt(n))
    assert float(abs(curve.observed - ref.observed).max()) < 4 * 0.5 / np.sqrt(acc.n_points) * 2


def test_calibration_accumulator_errors():
    with pytest.raises(ValueError, match="bins"):
        PITHistogramAccumulator(0)
    with pytest.raises(ValueError, match="within"):
        PITHistogramAccumulator([0.0, 0.5, 1.5])
    with pytest.raises(ValueError, match="increasing"):
        ReliabilityAccumulator([0.5, 0.1])
    with pytest.raises(ValueError, match="different settings"):
        PITHistogramAccumulator(10).merge(PITHistogramAccumulator(5))
    y = torch.tensor([0.0, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        PITHistogramAccumulator().update(y, Normal(torch.zeros(2), torch.ones(2)))
    acc = RankHistogramAccumulator().update(np.zeros(3), np.ones((3, 4)))
    with pytest.raises(ValueError, match="ensemble size"):
        acc.update(np.zeros(3), np.ones((3, 5)))
    with pytest.raises(ValueError, match="no point"):
        ReliabilityAccumulator().result()


def test_event_reliability_accumulator_equals_xskillscore_and_one_pass():
    xs = pytest.importorskip("xskillscore")
    rng = np.random.default_rng(10)
    prob = rng.uniform(size=(400, 3))
    prob[:5, 0] = [0.0, 1.0, 0.2, 0.4, 0.8]  # bin edges: left-closed, last bin closed
    obs = rng.uniform(size=(400, 3)) < prob
    o = xr.DataArray(obs, dims=("t", "x"))
    p = xr.DataArray(prob, dims=("t", "x"))
    edges = np.linspace(0, 1, 6)
    ref = xs.reliability(o, p, dim=["t", "x"], probability_bin_edges=edges)
    accs = [EventReliabilityAccumulator(5).update(o[sl], p[sl]) for sl in _splits(rng, 400, 5)]
    out = _merge_randomly(rng, accs).result()
    np.testing.assert_array_equal(out.counts.values, ref.samples.values)
    np.testing.assert_allclose(out.observed_frequency.values, ref.values, rtol=1e-15)
    k = np.clip(np.searchsorted(edges, prob.ravel(), side="right") - 1, 0, 4)
    mean_p = [prob.ravel()[k == i].mean() for i in range(5)]
    np.testing.assert_allclose(out.forecast_probability.values, mean_p, rtol=1e-12)
    np.testing.assert_allclose(out.counts.forecast_probability.values, ref.forecast_probability)


def test_event_reliability_accumulator_empty_bins_and_errors():
    acc = EventReliabilityAccumulator([0.0, 0.5, 0.9, 1.0])
    out = acc.update(np.array([1, 0, 1]), np.array([0.1, 0.2, 0.3])).result()
    np.testing.assert_array_equal(out.counts, [3, 0, 0])
    assert np.isnan(out.observed_frequency[1]) and out.observed_frequency[0] == 2 / 3
    with pytest.raises(ValueError, match="0/1"):
        acc.update(np.array([2, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="outside"):
        acc.update(np.array([True]), np.array([1.2]))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([True]), np.array([np.nan]))
