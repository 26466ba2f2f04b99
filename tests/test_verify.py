"""``uqdyn.verify``: archives with known answers, scores equal to direct calls, alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import properscoring
import pytest
import xarray as xr
from scipy import stats

from uqdyn.calibration import coverage, spread_skill_ratio
from uqdyn.verify import align, open_archive, read_forecast, read_observations, verify_files

LAT = np.linspace(-60.0, 60.0, 6)
LON = np.arange(8) * 45.0
INIT = pd.date_range("2020-01-01", periods=20, freq="D")
LEAD = pd.to_timedelta([1, 2, 3], unit="D")
TIMES = pd.date_range("2020-01-01", periods=24, freq="D")
MEMBERS = 10


def _obs(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((TIMES.size, LAT.size, LON.size))
    return xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values)},
        coords={"time": TIMES, "lat": LAT, "lon": LON},
    )


def _ensemble(spread: float = 1.0, seed: int = 1) -> xr.Dataset:
    """Members exchangeable with N(0, 1) observations when ``spread`` is 1."""
    rng = np.random.default_rng(seed)
    shape = (INIT.size, LEAD.size, LAT.size, LON.size, MEMBERS)
    return xr.Dataset(
        {
            "t2m": (
                ("init_time", "lead", "lat", "lon", "member"),
                spread * rng.standard_normal(shape),
            )
        },
        coords={"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON, "member": np.arange(10)},
    )


def _write(tmp_path: Path, fc: xr.Dataset, obs: xr.Dataset) -> tuple[Path, Path]:
    fc_path, obs_path = tmp_path / "fc.nc", tmp_path / "obs.zarr"
    fc.to_netcdf(fc_path)
    obs.to_zarr(obs_path, mode="w", zarr_format=2)
    return fc_path, obs_path


def _aligned_obs(obs: xr.Dataset) -> np.ndarray:
    """Observations at init + lead, shape (init, lead, lat, lon), by plain indexing."""
    out = np.empty((INIT.size, LEAD.size, LAT.size, LON.size))
    for i, t0 in enumerate(INIT):
        for j, dt in enumerate(LEAD):
            k = int(np.flatnonzero(TIMES == t0 + dt)[0])
            out[i, j] = obs["t2m"].values[k]
    return out


def _chi2(counts: np.ndarray) -> float:
    counts = counts.reshape(-1, counts.shape[-1]).sum(0).astype(float)
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _run(tmp_path: Path, fc: xr.Dataset, obs: xr.Dataset, **kw):
    fc_path, obs_path = _write(tmp_path, fc, obs)
    kw.setdefault("by", ["lead"])
    kw.setdefault("valid_time", True)
    return verify_files(fc_path, obs_path, var="t2m", out=tmp_path / "out", figures=False, **kw)


def test_calibrated_ensemble_flat_ranks_and_unit_spread_skill(tmp_path: Path) -> None:
    result = _run(tmp_path, _ensemble(), _obs())
    ssr = result.scores["spread_skill"].values
    assert np.all(np.abs(ssr - 1.0) < 0.06), ssr
    counts = result.scores["rank_histogram"].values
    assert counts.sum() == INIT.size * LEAD.size * LAT.size * LON.size
    assert _chi2(counts) < stats.chi2.ppf(0.999, MEMBERS), counts.sum(0)


def test_under_dispersed_ensemble_is_detected(tmp_path: Path) -> None:
    result = _run(tmp_path, _ensemble(spread=0.4), _obs())
    assert np.all(result.scores["spread_skill"].values < 0.5)
    counts = result.scores["rank_histogram"].values.sum(0)
    assert _chi2(counts) > 10 * stats.chi2.ppf(0.999, MEMBERS)
    assert counts[0] + counts[-1] > 0.4 * counts.sum()  # U shape: outer ranks crowded


def test_scores_equal_direct_calls(tmp_path: Path) -> None:
    fc, obs = _ensemble(), _obs()
    result = _run(tmp_path, fc, obs, weights="coslat")
    y = _aligned_obs(obs)
    x = fc["t2m"].values
    w = np.broadcast_to(np.cos(np.deg2rad(LAT))[None, :, None], (INIT.size, LAT.size, LON.size))
    table = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(table.columns[:3]) == ["lead", "crps", "crps_fair"]
    for j in range(LEAD.size):
        nrg = properscoring.crps_ensemble(y[:, j], x[:, j])
        m = MEMBERS
        pair = np.abs(x[:, j, ..., :, None] - x[:, j, ..., None, :]).sum((-1, -2))
        fair = np.abs(x[:, j] - y[:, j, ..., None]).mean(-1) - pair / (2 * m * (m - 1))
        for name, ref in (("crps", nrg), ("crps_fair", fair)):
            expected = float((w * ref).sum() / w.sum())
            got = float(result.scores[name].isel(lead=j))
            assert got == pytest.approx(expected, rel=1e-12)
            assert table[name][j] == pytest.approx(expected, rel=1e-5)
        ssr = float(spread_skill_ratio(y[:, j], x[:, j], member_dim=-1))
        assert float(result.scores["spread_skill"].isel(lead=j)) == pytest.approx(ssr, rel=1e-12)
        cov_ref = coverage(y[:, j], x[:, j], [0.5, 0.9], member_dim=-1)
        cov = result.scores["coverage"].isel(lead=j).values
        np.testing.assert_allclose(cov, np.asarray(cov_ref), rtol=0, atol=1e-12)


def test_gaussian_forecast_crps_normal_and_coverage(tmp_path: Path) -> None:
    obs = _obs()
    obs["t2m"][5, 2, 3] = np.nan  # unobserved: left out of every (init, lead) it verifies
    rng = np.random.default_rng(3)
    shape = (INIT.size, LEAD.size, LAT.size, LON.size)
    mean, std = 0.1 * rng.standard_normal(shape), np.full(shape, 1.0)
    dims = ("init_time", "lead", "lat", "lon")
    coords = {"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON}
    fc = xr.Dataset({"t2m_mean": (dims, mean), "t2m_std": (dims, std)}, coords=coords)
    result = _run(tmp_path, fc, obs)
    assert result.kind == "normal"
    y = _aligned_obs(obs)
    for j in range(LEAD.size):
        ok = np.isfinite(y[:, j])
        assert ok.sum() == y[:, j].size - 1
        ref = properscoring.crps_gaussian(y[:, j][ok], mean[:, j][ok], std[:, j][ok]).mean()
        assert float(result.scores["crps"].isel(lead=j)) == pytest.approx(ref, rel=1e-12)
        z = np.abs(y[:, j][ok] - mean[:, j][ok]) / std[:, j][ok]
        cov = float(result.scores["coverage"].isel(lead=j).sel(level=0.9))
        assert cov == pytest.approx(float((z <= stats.norm.ppf(0.95)).mean()), abs=1e-12)
    assert np.all(np.abs(result.scores["spread_skill"].values - 1.0) < 0.08)


def test_quantile_forecast_crps_quantile_interval_and_coverage(tmp_path: Path) -> None:
    obs = _obs()
    levels = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    q = np.broadcast_to(stats.norm.ppf(levels), (INIT.size, LEAD.size, LAT.size, LON.size, 5))
    fc = xr.Dataset(
        {"t2m": (("init_time", "lead", "lat", "lon", "quantile"), q.copy())},
        coords={"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON, "quantile": levels},
    )
    result = _run(tmp_path, fc, obs)
    assert result.kind == "quantile"
    assert list(result.scores["level"].values) == [0.5, 0.9]
    y = _aligned_obs(obs)
    for j in range(LEAD.size):
        yy = y[:, j][..., None]
        pinball = np.where(yy >= q[:, j], levels * (yy - q[:, j]), (1 - levels) * (q[:, j] - yy))
        ref = 2.0 * pinball.mean(-1).mean()
        assert float(result.scores["crps"].isel(lead=j)) == pytest.approx(ref, rel=1e-12)
        lo, hi = q[0, 0, 0, 0, 0], q[0, 0, 0, 0, 4]
        ref_is = (hi - lo) + 20.0 * (
            np.clip(lo - y[:, j], 0, None) + np.clip(y[:, j] - hi, 0, None)
        )
        got_is = float(result.scores["interval_score"].isel(lead=j).sel(level=0.9))
        assert got_is == pytest.approx(ref_is.mean(), rel=1e-12)
        cov = float(result.scores["coverage"].isel(lead=j).sel(level=0.9))
        assert cov == pytest.approx(((lo <= y[:, j]) & (y[:, j] <= hi)).mean(), abs=1e-12)


def test_exact_labels_without_valid_time_and_nan_points_left_out(tmp_path: Path) -> None:
    fc = _ensemble()
    y = _aligned_obs(_obs())
    y[:, :, 0, 0] = np.nan  # a "land" point
    obs = xr.Dataset(
        {"t2m": (("init_time", "lead", "lat", "lon"), y)},
        coords={"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON},
    )
    result = _run(tmp_path, fc, obs, valid_time=False, dims=["init_time", "lat", "lon"])
    n = INIT.size * (LAT.size * LON.size - 1)
    assert list(result.scores["n_points"].values) == [n] * LEAD.size
    assert np.isfinite(result.scores["crps"].values).all()
    ref = np.nanmean(properscoring.crps_ensemble(y[:, 0], fc["t2m"].values[:, 0]))
    assert float(result.scores["crps"].isel(lead=0)) == pytest.approx(ref, rel=1e-12)
    assert np.isnan(result.scores["crps_map"].values[0, 0])
    assert result.scores["rank_histogram"].values.sum() == n * LEAD.size


def test_kept_dims_give_one_row_per_label_pair(tmp_path: Path) -> None:
    result = _run(tmp_path, _ensemble(), _obs(), dims=["lat", "lon"], by=["lead"])
    assert result.kept == ("init_time", "lead")
    table = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(table) == INIT.size * LEAD.size
    assert list(table.columns[:2]) == ["init_time", "lead"]


def test_archives_open_lazily(tmp_path: Path) -> None:
    fc_path, obs_path = _write(tmp_path, _ensemble(), _obs())
    fc = read_forecast(open_archive(fc_path, "forecasts"), "t2m")
    obs = read_observations(open_archive(obs_path, "observations"), "t2m")
    assert fc.data.chunks is not None and obs.chunks is not None
    _, aligned = align(fc, obs, valid_time=True)
    assert aligned.chunks is not None  # alignment reads labels only
    assert aligned.dims == ("init_time", "lead", "lat", "lon")


def test_mismatched_labels_name_the_dim_and_first_difference(tmp_path: Path) -> None:
    fc = _ensemble()
    obs = _obs().assign_coords(lat=np.where(np.arange(6) == 3, LAT + 0.5, LAT))
    with pytest.raises(
        ValueError, match=r"lat differs: forecasts 12\.0, observations 12\.5 at index 3"
    ):
        _run(tmp_path, fc, obs)
    assert not (tmp_path / "out").exists()
    missing = _obs().isel(time=slice(0, 10))
    with pytest.raises(ValueError, match=r"valid time 2020-01-11.* not in the observations"):
        _run(tmp_path, fc, missing)


def test_threshold_event_brier_equals_direct_computation(tmp_path: Path) -> None:
    fc, obs = _ensemble(), _obs()
    _run(tmp_path, fc, obs, threshold=1.0)
    y = _aligned_obs(obs)
    prob = (fc["t2m"].values > 1.0).mean(-1)
    brier = float(((prob - (y > 1.0)) ** 2).mean())
    attrs = xr.open_dataset(tmp_path / "out" / "scores.nc").attrs
    assert attrs["event_brier"] == pytest.approx(brier, rel=1e-12)
    assert attrs["event_mcb"] - attrs["event_dsc"] + attrs["event_unc"] == pytest.approx(brier)
    base = float((y > 1.0).mean())
    assert attrs["event_unc"] == pytest.approx(base * (1 - base), rel=1e-12)
    assert "event obs > 1" in (tmp_path / "out" / "report.md").read_text()


def test_reduction_without_dim_arguments_matches_the_scores_own(tmp_path: Path) -> None:
    """The fallback weighted mean (for a score without dim=) equals the score's reduction."""
    from uqdyn.scoring import crps_normal
    from uqdyn.verify.run import _reduced, coslat_weights

    rng = np.random.default_rng(5)
    dims, coords = ("init_time", "lat", "lon"), {"init_time": INIT, "lat": LAT, "lon": LON}
    y = xr.DataArray(rng.standard_normal((20, 6, 8)), dims=dims, coords=coords)
    y[0, 1, 2] = np.nan
    mu = xr.DataArray(rng.standard_normal((20, 6, 8)), dims=dims, coords=coords)
    sigma = xr.full_like(mu, 0.7)
    w = coslat_weights(y)

    def plain(obs, m, s):  # the same score, without dim / weights / nan_policy
        return crps_normal(obs, m, s)

    got = _reduced(crps_normal, y, mu, sigma, dims=list(dims), weights=w)
    fallback = _reduced(plain, y, mu, sigma, dims=list(dims), weights=w)
    ref = properscoring.crps_gaussian(y.values, mu.values, 0.7)
    ww = np.broadcast_to(w.values[None, :, None], ref.shape)
    ok = np.isfinite(ref)
    expected = float((ww * ref)[ok].sum() / ww[ok].sum())
    assert got == pytest.approx(expected, rel=1e-12)
    assert fallback == pytest.approx(expected, rel=1e-12)


def test_valid_time_needs_time_offsets_for_datetime_inits(tmp_path: Path) -> None:
    fc = _ensemble().assign_coords(lead=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lead has int64 labels and init_time datetimes"):
        _run(tmp_path, fc, _obs())
    steps = _ensemble().assign_coords(init_time=np.arange(20), lead=[1, 2, 3])
    obs = _obs().assign_coords(time=np.arange(24))
    result = _run(tmp_path, steps, obs)  # numeric init + numeric lead is a numeric valid time
    assert list(result.scores["n_points"].values) == [20 * 48] * 3


@pytest.mark.parametrize("kind", ["ensemble", "normal"])
def test_rows_scored_in_blocks_equal_one_pass(tmp_path: Path, kind: str) -> None:
    """A row larger than max_values is read in blocks; the merged sums give the same scores."""
    from uqdyn.verify import Forecast, verify

    fc, obs = _ensemble(), _obs()
    y = _aligned_obs(obs)
    y[3, :, 2, 5] = np.nan
    dims = ("init_time", "lead", "lat", "lon")
    coords = {"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON}
    obs_da = xr.DataArray(y, dims=dims, coords=coords)
    if kind == "ensemble":
        forecast = Forecast("ensemble", fc["t2m"], None, "member")
    else:
        mean = fc["t2m"].mean("member")
        forecast = Forecast("normal", mean, xr.full_like(mean, 1.1), None)
    kw = {"by": ["lead"], "weights": "coslat", "threshold": 0.5}
    one = verify(forecast, obs_da, **kw)
    blocks = verify(forecast, obs_da, max_values=1000, **kw)  # 10+ blocks per lead
    for name in one.scores.data_vars:
        np.testing.assert_allclose(blocks.scores[name], one.scores[name], rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(blocks.event[0], one.event[0])
    # blocks across the map (no other dim is averaged): the map is put together from them
    few = forecast.isel(init_time=slice(0, 2), lead=slice(0, 1))
    few_obs = obs_da.isel(init_time=slice(0, 2), lead=slice(0, 1))
    spatial = verify(few, few_obs, dims=["lat", "lon"], weights="coslat")
    split = verify(few, few_obs, dims=["lat", "lon"], weights="coslat", max_values=200)
    for name in spatial.scores.data_vars:
        np.testing.assert_allclose(split.scores[name], spatial.scores[name], rtol=1e-12)
    ssr = spread_skill_ratio(
        y[:, 0], fc["t2m"].values[:, 0], member_dim=-1, mask=np.isfinite(y[:, 0])
    )
    if kind == "ensemble":
        assert float(blocks.scores["spread_skill"].isel(lead=0)) == pytest.approx(
            float(ssr), rel=1e-12
        )


def test_event_probability_of_quantiles_interpolates_the_levels() -> None:
    from uqdyn.verify import Forecast
    from uqdyn.verify.run import _event_probability

    rng = np.random.default_rng(0)
    levels = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    q = np.sort(rng.standard_normal((50, 5)), -1)
    da = xr.DataArray(q, dims=("x", "quantile"), coords={"quantile": levels})
    for t in (-3.0, -0.5, 0.0, 0.3, 3.0, float(q[3, 2])):
        got = _event_probability(Forecast("quantile", da, None, "quantile"), t, ["x"])
        ref = 1 - np.array([np.interp(t, q[i], levels, left=0.0, right=1.0) for i in range(50)])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
