"""Reference forecasts against hand-computed values and statistical properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from uqdyn.forecast import Climatology, DampedPersistence, Persistence, rolling_origins
from uqdyn.forecast.normalize import WindowNormalizer
from uqdyn.predictive import Normal


def _series(values, freq="MS", start="2000-01-01", name="x") -> pd.Series:
    return pd.Series(
        np.asarray(values, dtype=float),
        index=pd.date_range(start, periods=len(values), freq=freq),
        name=name,
    )


def _ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    x[0] = rng.normal() * sigma / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + sigma * rng.normal()
    return x


def test_persistence_by_hand_with_a_gap() -> None:
    s = _series([1.0, 2.0, 4.0, 7.0, np.nan, 16.0, 22.0, 29.0])
    origins = rolling_origins(s, context=2, leads=[1])
    model = Persistence().fit(origins)
    # origins at positions 1..6; position 3 verifies at the gap (no target: dropped); the
    # others persist 2, 4, 7 (last observed before the gap), 16, 22 against 4, 7, 16, 22, 29
    errors = np.array([2.0, 3.0, 9.0, 6.0, 7.0])
    np.testing.assert_allclose(model.sigma[0], np.sqrt(np.mean(errors**2)))
    pred = model.predict(origins)
    np.testing.assert_allclose(pred.mean[:, 0].numpy(), [2.0, 4.0, 7.0, 16.0, 22.0])
    assert isinstance(pred, Normal) and pred.dims == ("origin", "lead")
    assert origins.dropped["no_target"] == 1


def test_climatology_fixed_and_seasonal_against_pandas() -> None:
    rng = np.random.default_rng(1)
    t = pd.date_range("1990-01-01", periods=120, freq="MS")
    values = np.asarray(10 + 3 * np.cos(2 * np.pi * t.month / 12) + rng.normal(size=120))
    values[[5, 17, 40]] = np.nan
    s = pd.Series(values, index=t, name="x")
    train = rolling_origins(s, context=1, leads=[1, 2], end="1995-12-01", valid_end="1995-12-01")
    test = rolling_origins(s, context=1, leads=[1, 2], start="1996-01-01")
    used = s[:"1995-12-01"]
    fixed = Climatology("fixed").fit(train).predict(test)
    np.testing.assert_allclose(fixed.mean.numpy(), np.nanmean(used))
    np.testing.assert_allclose(fixed.stddev.numpy(), used.std(ddof=1))
    seasonal = Climatology("seasonal", season="month").fit(train).predict(test)
    by_month = used.groupby(used.index.month)
    valid = pd.DatetimeIndex(test.valid_time[:, 1])
    np.testing.assert_allclose(seasonal.mean[:, 1].numpy(), by_month.mean()[valid.month].to_numpy())
    np.testing.assert_allclose(
        seasonal.stddev[:, 1].numpy(), by_month.std()[valid.month].to_numpy()
    )


def test_seasonal_window_pools_neighbouring_bins() -> None:
    rng = np.random.default_rng(2)
    t = pd.date_range("1990-01-01", periods=96, freq="MS")
    s = pd.Series(rng.normal(size=96), index=t, name="x")
    origins = rolling_origins(s, context=1, leads=[1])
    clim = Climatology("seasonal", season="month", window=3).fit(origins)
    used = s[: pd.Timestamp(origins.valid_time.max())]
    month = used.index.month
    pooled = used[np.isin(month, [12, 1, 2])]  # window around January
    jan = np.flatnonzero(pd.DatetimeIndex(origins.valid_time[:, 0]).month == 1)[0]
    pred = clim.predict(origins)
    assert float(pred.mean[jan, 0]) == pytest.approx(pooled.mean())
    assert float(pred.stddev[jan, 0]) == pytest.approx(pooled.std(ddof=1))


def test_running_climatology_is_the_trailing_window() -> None:
    values = np.arange(20.0) ** 1.5
    values[7] = np.nan
    s = _series(values, freq="D")
    origins = rolling_origins(s, context=2, leads=[1, 3])
    pred = Climatology("running", window=5).fit(origins).predict(origins)
    for i, t0 in enumerate(pd.DatetimeIndex(origins.origin_time)):
        window = s[:t0].iloc[-5:]
        assert float(pred.mean[i, 0]) == pytest.approx(np.nanmean(window))
        assert float(pred.mean[i, 1]) == pytest.approx(np.nanmean(window))


def test_seasonal_climatology_needs_calendar_times_and_enough_data() -> None:
    da = xr.DataArray(np.arange(30.0), dims="time", coords={"time": np.arange(30.0)}, name="x")
    origins = rolling_origins(da, context=2, leads=[1])
    with pytest.raises(ValueError, match="needs calendar times"):
        Climatology("seasonal").fit(origins)
    short = rolling_origins(_series(np.arange(8.0)), context=1, leads=[1])
    with pytest.raises(ValueError, match="fewer than 2 observations"):
        Climatology("seasonal").fit(short)
    with pytest.raises(ValueError, match="odd number"):
        Climatology("seasonal", window=2)


def test_damped_persistence_recovers_ar1_damping_and_covers() -> None:
    phi = 0.8
    s = _series(_ar1(3000, phi, seed=3), freq="D")
    train = rolling_origins(s, context=1, leads=[1, 2, 4], end="2005-12-31", valid_end="2005-12-31")
    test = rolling_origins(s, context=1, leads=[1, 2, 4], start="2006-01-01")
    model = DampedPersistence().fit(train)
    np.testing.assert_allclose(model.phi, phi ** np.array([1, 2, 4]), atol=0.04)
    np.testing.assert_allclose(
        model.sigma, np.sqrt(1 - phi ** (2 * np.array([1, 2, 4]))) / np.sqrt(1 - phi**2), rtol=0.06
    )
    pred = model.predict(test)
    y = torch.as_tensor(test.target.values)
    lo, hi = pred.interval(0.9)
    cover = ((y >= lo) & (y <= hi)).double().mean(0)
    assert torch.all((cover > 0.86) & (cover < 0.94)), cover
    # it beats climatology and raw persistence in CRPS at every lead
    clim = Climatology().fit(train).predict(test).crps(y).mean(0)
    pers = Persistence().fit(train).predict(test).crps(y).mean(0)
    damped = pred.crps(y).mean(0)
    assert torch.all(damped < clim) and torch.all(damped < pers)
    ar1 = DampedPersistence(mode="ar1").fit(train)
    np.testing.assert_allclose(ar1.phi, phi ** np.array([1, 2, 4]), atol=0.04)


def test_anomaly_persistence_uses_the_climatology() -> None:
    t = pd.date_range("2000-01-01", periods=60, freq="MS")
    cycle = 5 * np.sin(2 * np.pi * t.month / 12)
    s = pd.Series(cycle + 1.0, index=t, name="x")  # constant anomaly 1 on the seasonal cycle
    origins = rolling_origins(s, context=1, leads=[1, 6])
    model = Persistence(climatology=Climatology("seasonal")).fit(origins)
    pred = model.predict(origins)
    np.testing.assert_allclose(pred.mean.numpy(), origins.target.values, atol=1e-9)


def test_land_points_are_nan_and_ocean_unaffected() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(200, 2, 3)).cumsum(0) * 0.1
    land = values.copy()
    land[:, 0, 0] = np.nan
    coords = {"time": pd.date_range("2000", periods=200, freq="D"), "lat": [0, 1], "lon": [0, 1, 2]}
    full = xr.DataArray(values, dims=("time", "lat", "lon"), coords=coords, name="v")
    masked = full.copy(data=land)
    for model_cls in (Persistence, DampedPersistence, Climatology):
        a = rolling_origins(full, context=3, leads=[1, 2])
        b = rolling_origins(masked, context=3, leads=[1, 2])
        pa = model_cls().fit(a).predict(a)
        pb = model_cls().fit(b).predict(b)
        assert torch.isnan(pb.mean[:, :, 0, 0]).all()
        ocean = torch.ones(2, 3, dtype=torch.bool)
        ocean[0, 0] = False
        torch.testing.assert_close(pb.mean[:, :, ocean], pa.mean[:, :, ocean])
        torch.testing.assert_close(pb.stddev[:, :, ocean], pa.stddev[:, :, ocean])


def test_forecasts_go_back_onto_the_users_coordinates() -> None:
    coords = {
        "time": pd.date_range("2000", periods=50, freq="D"),
        "lat": [10.0, 20.0],
        "lon": [5.0],
    }
    da = xr.DataArray(
        np.random.default_rng(5).normal(size=(50, 2, 1)),
        dims=("time", "lat", "lon"),
        coords=coords,
        name="sst",
    )
    origins = rolling_origins(da, context=2, leads=[1, 2])
    ds = Climatology().fit(origins).predict(origins).to_xarray(quantiles=[0.1, 0.9])
    assert ds["mean"].dims == ("origin", "lead", "lat", "lon")
    assert list(ds["lat"].values) == [10.0, 20.0] and list(ds["lead"].values) == [1, 2]
    assert ds["valid_time"].dims == ("origin", "lead")
    assert ds["quantile_forecast"].dims == ("quantile", "origin", "lead", "lat", "lon")
    np.testing.assert_array_equal(ds["origin"].values, origins.origin_time)


def test_normalizer_round_trip_in_users_units() -> None:
    t = pd.date_range("2000-01-01", periods=80, freq="MS")
    s = pd.Series(
        20 + 3 * np.cos(2 * np.pi * t.month / 12) + np.arange(80) * 0.05, index=t, name="x"
    )
    origins = rolling_origins(s, context=4, leads=[1, 3])
    for scale in ("global", "window", "climatology", None):
        norm = WindowNormalizer(Climatology("seasonal"), center="last", scale=scale).fit(origins)
        z = norm.transform(origins)
        pred_z = Normal(torch.as_tensor(z.target), torch.ones(z.target.shape, dtype=torch.float64))
        back = norm.inverse(pred_z, z)
        np.testing.assert_allclose(back.mean.numpy(), origins.target.values, rtol=1e-12)
        np.testing.assert_allclose(back.stddev.numpy(), np.broadcast_to(z.scale, z.target.shape))


def test_models_refuse_unfitted_and_mismatched_origins() -> None:
    a = rolling_origins(_series(np.arange(30.0)), context=2, leads=[1, 2])
    b = rolling_origins(_series(np.arange(30.0)), context=2, leads=[1])
    with pytest.raises(ValueError, match="not fitted"):
        Persistence().predict(a)
    with pytest.raises(ValueError, match="fitted on"):
        Persistence().fit(a).predict(b)
    with pytest.raises(TypeError, match="expected uqdyn.forecast.Origins"):
        Climatology().fit(np.zeros(3))
