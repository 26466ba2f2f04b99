"""Lazy (dask) scoring: dask_aware builds a graph, computes nothing, equals the eager result."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from uqdyn.scoring._lazy import dask_aware, is_dask_backed, lazy_reduce
from uqdyn.scoring.crps_closed import crps_normal
from uqdyn.scoring.crps_ensemble import crps_ensemble

lazy_crps_ensemble = dask_aware({"obs": None, "forecasts": "member_dim"})(crps_ensemble)
lazy_crps_normal = dask_aware({"obs": None, "mu": None, "sigma": None})(crps_normal)


def _no_compute(*args, **kwargs):
    raise AssertionError("the graph was computed")


def _data(seed: int = 0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-80.0, 80.0, 9)
    coords = {"lead": [1, 2, 3], "lat": lat, "lon": np.arange(7.0)}
    obs = xr.DataArray(rng.normal(size=(3, 9, 7)).astype(dtype), dims=("lead", "lat", "lon"))
    fc = xr.DataArray(
        rng.normal(size=(6, 3, 9, 7)).astype(dtype), dims=("member", "lead", "lat", "lon")
    )
    obs, fc = obs.assign_coords(coords), fc.assign_coords(coords)
    weights = xr.DataArray(np.cos(np.deg2rad(lat)), dims="lat", coords={"lat": lat})
    return obs, fc, weights


def _weighted_mean(score: xr.DataArray, w: xr.DataArray, dims, skipna: bool) -> np.ndarray:
    """Dense float64 reference: sum(w s) / sum(w) over the kept (non-NaN when skipna) points."""
    s, wb = xr.broadcast(score, w)
    s_v = s.transpose(*score.dims).values.astype(np.float64)
    w_v = wb.transpose(*score.dims).values.astype(np.float64)
    axes = tuple(score.dims.index(d) for d in dims)
    keep = ~np.isnan(s_v) if skipna else np.ones_like(s_v, dtype=bool)
    num = np.where(keep, w_v * np.where(keep, s_v, 0.0), 0.0).sum(axes)
    den = np.where(keep, w_v, 0.0).sum(axes)
    return num / np.where(den == 0, np.nan, den)


def test_lazy_crps_ensemble_builds_a_graph_and_equals_eager():
    obs, fc, w = _data()
    with dask.config.set(scheduler=_no_compute):
        lazy = lazy_crps_ensemble(
            obs.chunk({"lat": 4}), fc.chunk({"lat": 4, "member": 2}), dim=["lat", "lon"], weights=w
        )
        assert is_dask_backed(lazy)
        assert lazy.dims == ("lead",)
    eager = crps_ensemble(obs, fc)  # pointwise, then the dense weighted mean
    np.testing.assert_allclose(
        lazy.compute().values, _weighted_mean(eager, w, ["lat", "lon"], False), rtol=1e-12
    )
    np.testing.assert_array_equal(lazy.lead.values, [1, 2, 3])


def test_lazy_pointwise_equals_eager_and_keeps_coords():
    obs, fc, _ = _data(1)
    with dask.config.set(scheduler=_no_compute):
        lazy = lazy_crps_ensemble(obs.chunk({"lon": 3}), fc.chunk({"lon": 3}), estimator="fair")
    eager = crps_ensemble(obs, fc, estimator="fair")
    out = lazy.compute()
    assert out.dims == eager.dims
    np.testing.assert_array_equal(out.lat.values, eager.lat.values)
    np.testing.assert_allclose(out.values, eager.values, rtol=1e-13, atol=0)


def test_eager_inputs_call_the_score_unchanged():
    obs, fc, _ = _data(2)
    out = lazy_crps_ensemble(obs, fc)
    assert not is_dask_backed(out)
    np.testing.assert_array_equal(out.values, crps_ensemble(obs, fc).values)


@pytest.mark.parametrize("how", ["skipna", "omit"])
def test_nan_points_left_out_of_numerator_and_denominator(how):
    obs, fc, w = _data(3)
    obs = obs.copy()
    obs[0, 2, 3] = np.nan
    obs[1, :, :] = np.nan  # a whole lead: mean over no kept point is NaN
    kwargs = {"skipna": True} if how == "skipna" else {"nan_policy": "omit"}
    lazy = lazy_crps_ensemble(
        obs.chunk({"lat": 3}), fc.chunk({"lat": 3}), dim=["lat", "lon"], weights=w, **kwargs
    )
    ref = _weighted_mean(crps_ensemble(obs, fc), w, ["lat", "lon"], True)
    out = lazy.compute().values
    assert np.isnan(out[1]) and np.isnan(ref[1])
    np.testing.assert_allclose(out[[0, 2]], ref[[0, 2]], rtol=1e-12)


def test_nan_propagates_without_skipna():
    obs, fc, w = _data(4)
    obs = obs.copy()
    obs[2, 0, 0] = np.nan
    out = lazy_crps_ensemble(
        obs.chunk({"lat": 3}), fc.chunk({"lat": 3}), dim=["lat", "lon"], weights=w
    ).compute()
    assert np.isnan(out.values[2]) and np.isfinite(out.values[:2]).all()


def test_zero_weight_points_are_left_out_even_when_nan():
    obs, fc, w = _data(5)
    obs = obs.copy()
    obs[:, 0, :] = np.nan
    w = w.copy()
    w[0] = 0.0
    out = lazy_crps_ensemble(obs.chunk({"lat": 3}), fc, dim=["lat", "lon"], weights=w).compute()
    ref = _weighted_mean(crps_ensemble(obs, fc).isel(lat=slice(1, None)), w[1:], ["lat", "lon"], 0)
    np.testing.assert_allclose(out.values, ref, rtol=1e-12)


def test_mask_sum_and_full_reduction():
    obs, fc, w = _data(6)
    mask = xr.DataArray(np.arange(7) % 2 == 0, dims="lon", coords={"lon": obs.lon})
    eager = crps_ensemble(obs, fc)
    lazy_sum = lazy_crps_ensemble(obs.chunk({"lat": 5}), fc, reduction="sum", mask=mask)
    ref = float(eager.where(mask).sum())
    np.testing.assert_allclose(float(lazy_sum.compute()), ref, rtol=1e-12)
    lazy_mean = lazy_crps_ensemble(obs.chunk({"lat": 5}), fc, reduction="mean", weights=w)
    np.testing.assert_allclose(
        float(lazy_mean.compute()), float(_weighted_mean(eager, w, eager.dims, False)), rtol=1e-12
    )
    masked = lazy_crps_ensemble(obs.chunk({"lat": 5}), fc, mask=mask).compute()
    np.testing.assert_array_equal(np.isnan(masked.values), np.broadcast_to(~mask.values, (3, 9, 7)))


def test_crps_normal_float32_lazy_matches_eager():
    obs, fc, w = _data(7, np.float32)
    mu, sigma = fc.mean("member"), fc.std("member") + 0.1
    with dask.config.set(scheduler=_no_compute):
        lazy = lazy_crps_normal(obs.chunk({"lat": 2}), mu.chunk({"lat": 2}), sigma, dim="lon")
        assert lazy.dtype == np.float32
    eager = crps_normal(obs, mu, sigma)
    np.testing.assert_allclose(lazy.compute().values, eager.mean("lon").values, rtol=2e-6)


def test_scalar_arguments_are_passed_to_the_blocks():
    obs, _, _ = _data(8)
    lazy = lazy_crps_normal(obs.chunk({"lat": 3}), 0.0, 1.0)
    np.testing.assert_allclose(lazy.values, crps_normal(obs, 0.0, 1.0).values, rtol=1e-14)


def test_bad_arguments_are_named():
    obs, fc, w = _data(9)
    lobs = obs.chunk({"lat": 3})
    with pytest.raises(TypeError, match="weights"):
        lazy_crps_ensemble(lobs, fc, dim="lat", weights=w.values)
    with pytest.raises(ValueError, match="reduction weights"):
        lazy_crps_ensemble(lobs, fc, weights=w)
    with pytest.raises(ValueError, match="negative"):
        lazy_crps_ensemble(lobs, fc, dim="lat", weights=-w)
    with pytest.raises(ValueError, match="dim='height'"):
        lazy_crps_ensemble(lobs, fc, dim="height")
    with pytest.raises(TypeError, match="dim names"):
        lazy_crps_ensemble(lobs, fc, dim=0)
    with pytest.raises(ValueError, match="nan_policy"):
        lazy_crps_ensemble(lobs, fc, nan_policy="drop")
    with pytest.raises(ValueError, match="none named 'ens'"):
        lazy_crps_ensemble(lobs, fc, member_dim="ens")
    with pytest.raises(TypeError, match="forecasts is a ndarray"):
        lazy_crps_ensemble(lobs, fc.values)
    with pytest.raises(ValueError, match="not parameters"):
        dask_aware({"observations": None})(crps_ensemble)
    with pytest.raises(ValueError, match="NaN"):
        bad = obs.copy()
        bad[0, 0, 0] = np.nan
        lazy_crps_ensemble(bad.chunk({"lat": 3}), fc, nan_policy="raise").compute()


def test_lazy_reduce_of_an_eager_score():
    obs, fc, w = _data(10)
    s = crps_ensemble(obs, fc)
    out = lazy_reduce(s, dim=["lat"], weights=w)
    np.testing.assert_allclose(out.values, _weighted_mean(s, w, ["lat"], False), rtol=1e-12)


def test_two_core_dims_and_member_weights_energy_score():
    from uqdyn.scoring.multivariate import energy_score

    lazy_es = dask_aware(
        {
            "forecasts": ("member_dim", "event_dim"),
            "obs": "event_dim",
            "member_weights": "member_dim",
        }
    )(energy_score)
    rng = np.random.default_rng(11)
    obs = xr.DataArray(rng.normal(size=(8, 5, 3)), dims=("t", "x", "var"))
    fc = xr.DataArray(rng.normal(size=(4, 8, 5, 3)), dims=("member", "t", "x", "var"))
    mw = xr.DataArray(rng.uniform(0.5, 1.0, size=4), dims="member")
    kw = {"member_dim": "member", "event_dim": "var", "member_weights": mw}
    lazy = lazy_es(obs.chunk({"t": 3}), fc.chunk({"t": 3, "var": 1}), **kw)
    eager = energy_score(obs, fc, **kw)
    assert lazy.dims == eager.dims == ("t", "x")
    np.testing.assert_allclose(lazy.compute().values, eager.values, rtol=1e-13)
    lazy_mean = lazy_es(obs.chunk({"t": 3}), fc, dim="t", **kw).compute()
    np.testing.assert_allclose(lazy_mean.values, eager.mean("t").values, rtol=1e-13)
