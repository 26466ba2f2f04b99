"""Learned forecasters on origins: skill on a known process, masks, units, labels, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from uqdyn.forecast import Climatology, DampedPersistence, rolling_origins
from uqdyn.models.forecasters import GPForecaster, NPForecaster
from uqdyn.predictive import GaussianMixture, Normal


def _seasonal_ar1(n: int, seed: int, level: float = 300.0) -> pd.Series:
    """A non-stationary series: a seasonal cycle on a far-from-zero level plus AR(1) noise."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("1980-01-01", periods=n, freq="MS")
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = 0.8 * x[i - 1] + rng.normal()
    cycle = 5.0 * np.cos(2 * np.pi * np.asarray(t.month) / 12)
    return pd.Series(level + cycle + x, index=t, name="y")


def _splits(series, context=3, leads=(1, 2, 3)):
    train = rolling_origins(series, context=context, leads=list(leads), valid_end="1999-12-01")
    valid = rolling_origins(
        series, context=context, leads=list(leads), start="1999-12-01", valid_end="2004-12-01"
    )
    test = rolling_origins(series, context=context, leads=list(leads), start="2004-12-01")
    return train, valid, test


def _crps(pred, origins) -> torch.Tensor:
    y = torch.as_tensor(origins.target.values, dtype=pred.mean.dtype)
    return pred.crps(y).mean(0)


def test_gp_forecaster_matches_damped_persistence_on_seasonal_ar1(one_thread) -> None:
    train, valid, test = _splits(_seasonal_ar1(480, seed=0))
    gp = GPForecaster(kernel="linear", climatology=Climatology("seasonal"), center=None)
    pred = gp.fit(train).predict(test)
    assert isinstance(pred, Normal) and pred.dims == ("origin", "lead")
    ref = DampedPersistence(Climatology("seasonal")).fit(train).predict(test)
    clim = Climatology("seasonal").fit(train).predict(test)
    # the Bayesian AR(3) contains the true AR(1): within 3% of the true model's CRPS and
    # better than climatology (by 30% at lead 1); its 90% intervals cover about 90%
    assert torch.all(_crps(pred, test) < 1.03 * _crps(ref, test))
    assert torch.all(_crps(pred, test) < _crps(clim, test))
    assert _crps(pred, test)[0] < 0.7 * _crps(clim, test)[0]
    y = torch.as_tensor(test.target.values)
    lo, hi = pred.interval(0.9)
    assert 0.84 < float(((y >= lo) & (y <= hi)).double().mean()) < 0.96


def test_np_forecaster_learns_and_is_seeded(one_thread) -> None:
    train, valid, test = _splits(_seasonal_ar1(480, seed=1))
    kwargs = {
        "climatology": Climatology("seasonal"),
        "center": "last",
        "scale": "global",
        "steps": 300,
        "width": 32,
        "val_every": 50,
        "seed": 3,
    }
    a = NPForecaster(**kwargs).fit(train, valid).predict(test)
    b = NPForecaster(**kwargs).fit(train, valid).predict(test)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    clim = Climatology("seasonal").fit(train).predict(test)
    assert torch.all(_crps(a, test) < 0.85 * _crps(clim, test))
    ens = NPForecaster(**{**kwargs, "members": 2, "steps": 100}).fit(train, valid).predict(test)
    assert isinstance(ens, GaussianMixture) and ens.batch_shape == a.batch_shape


def test_predictions_are_in_user_units_whatever_the_level(one_thread) -> None:
    low = _seasonal_ar1(360, seed=2, level=0.0)
    high = low + 1e4
    for series in (low, high):
        train, _, test = _splits(series)
        gp = GPForecaster(kernel="linear", climatology=Climatology("seasonal"), steps=20)
        pred = gp.fit(train).predict(test)
        err = (pred.mean - torch.as_tensor(test.target.values)).abs().mean()
        assert float(err) < 3.0  # the level of the series is restored, noise sd ~1.7
    ds = pred.to_xarray()
    assert ds["mean"].dims == ("origin", "lead") and "valid_time" in ds.coords


def test_masked_context_values_never_change_a_forecast(one_thread) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(300, 2, 2)).cumsum(0) * 0.2
    values[rng.random(values.shape) < 0.1] = np.nan
    values[:, 0, 0] = np.nan  # land
    coords = {"time": pd.date_range("2000", periods=300, freq="D"), "lat": [0, 1], "lon": [0, 1]}
    da = xr.DataArray(values, dims=("time", "lat", "lon"), coords=coords, name="v")
    origins = rolling_origins(da, context=4, leads=[1, 2])
    model = NPForecaster(steps=30, width=16, seed=0).fit(origins)
    pred = model.predict(origins)
    assert torch.isnan(pred.mean[:, :, 0, 0]).all()
    ocean = torch.isfinite(pred.mean)
    assert ocean[:, :, 1, 1].all()
    # an unobserved context entry has no value; giving it any value through the arrays the
    # model reads (after masking) changes nothing
    context = origins.context.values.copy()
    missing = np.isnan(context)
    assert missing.any()
    rows = model._rows(origins, model.normalizer.transform(origins))
    task = model._tasks(rows)
    poked = task.y_context.clone()
    poked[~task.mask_context] = 1e6
    again = type(task)(
        task.x_context, poked, task.mask_context, task.x_target, task.y_target, task.mask_target
    )
    net = model.networks[0]
    with torch.no_grad():
        torch.testing.assert_close(net.predict(task).mean, net.predict(again).mean)


def test_forecasters_refuse_bad_input() -> None:
    train, _, test = _splits(_seasonal_ar1(360, seed=5))
    with pytest.raises(ValueError, match="not fitted"):
        GPForecaster().predict(test)
    with pytest.raises(TypeError, match="expected uqdyn.forecast.Origins"):
        GPForecaster().fit(np.zeros(4))
    with pytest.raises(ValueError, match="model='rnn'"):
        NPForecaster(model="rnn")  # type: ignore[arg-type]
    other = rolling_origins(_seasonal_ar1(360, seed=5), context=3, leads=[1])
    gp = GPForecaster(kernel="linear", steps=5).fit(train)
    with pytest.raises(ValueError, match="fitted on"):
        gp.predict(other)


def _moving_field(n: int, seed: int, size: int = 12) -> xr.DataArray:
    """A smooth anomaly pattern drifting east one cell per day, damped, with fresh noise,
    on a grid with a land corner (NaN)."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)

    def smooth_noise() -> np.ndarray:
        e = rng.normal(size=(size, size))
        for axis in (0, 1):
            e = np.apply_along_axis(
                lambda v: np.convolve(np.pad(v, 3, mode="wrap"), kernel, "valid"), axis, e
            )
        return e

    x = np.zeros((n, size, size))
    x[0] = smooth_noise()
    for t in range(1, n):
        x[t] = 0.95 * np.roll(x[t - 1], 1, axis=1) + 0.3 * smooth_noise()
    x[:, :3, :3] = np.nan  # land
    coords = {
        "time": pd.date_range("2000-01-01", periods=n, freq="D"),
        "lat": np.linspace(-10, 10, size),
        "lon": np.linspace(100, 120, size),
    }
    return xr.DataArray(x, dims=("time", "lat", "lon"), coords=coords, name="anomaly")


def test_convcnp_forecaster_learns_advection_with_land(one_thread) -> None:
    from uqdyn.models.forecasters import ConvCNPForecaster

    da = _moving_field(400, seed=6)
    train = rolling_origins(da, context=2, leads=[1, 2], valid_end="2000-10-31")
    test = rolling_origins(da, context=2, leads=[1, 2], start="2000-11-01")
    model = ConvCNPForecaster(
        width=16, depth=3, steps=300, batch_size=8, lr=2e-3, center=None, seed=0
    )
    pred = model.fit(train).predict(test)
    assert pred.dims == ("origin", "lead", "lat", "lon")
    assert (
        torch.isnan(pred.mean[:, :, :3, :3]).all() and torch.isfinite(pred.mean[:, :, 3:, 3:]).all()
    )
    y = torch.as_tensor(test.target.values)
    keep = torch.isfinite(y)
    ref = DampedPersistence().fit(train).predict(test)
    ours = pred.crps(torch.nan_to_num(y))[keep].mean()
    theirs = ref.crps(torch.nan_to_num(y))[keep].mean()
    # the pointwise AR(1) cannot see the drift; the translation-equivariant ConvCNP can
    assert ours < 0.8 * theirs, (float(ours), float(theirs))
    spread = pred.stddev[:, 0, 3:, 3:]
    assert float(spread.std() / spread.mean()) > 0.05  # the spread varies in space and time
