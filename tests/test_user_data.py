"""Users' netCDF/zarr data: opening, dim checks with helpful errors, and tasks from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.data import (
    dask_available,
    load_task_sampler,
    open_user_dataset,
    split_dataset,
    standardize_dataset,
)

pytest.importorskip("netCDF4")


def _field_dataset(seed: int = 0) -> xr.Dataset:
    """A user-style gridded file: (member, valid_time, lat, lon), datetime times."""
    rng = np.random.default_rng(seed)
    sst = rng.normal(size=(3, 6, 4, 5))
    times = np.datetime64("2020-01-01T00") + np.arange(6) * np.timedelta64(6, "h")
    return xr.Dataset(
        {"sst": (("member", "valid_time", "lat", "lon"), sst)},
        coords={
            "valid_time": times,
            "lat": np.linspace(-10.0, 10.0, 4),
            "lon": np.linspace(100.0, 140.0, 5),
        },
        attrs={"title": "test"},
    )


MAPPING = {"sample": "member", "time": "valid_time", "y": "lat", "x": "lon"}


def test_netcdf_grid_loads_with_dim_mapping(tmp_path):
    ds = _field_dataset()
    path = tmp_path / "sst.nc"
    ds.to_netcdf(path)
    sampler = load_task_sampler(
        path, dims=MAPPING, setting="interpolation", num_context=5, num_target=10
    )
    expected = torch.tensor(ds["sst"].values, dtype=torch.float32)[:, :, None]
    assert sampler.values.shape == (3, 6, 1, 4, 5)
    torch.testing.assert_close(sampler.values, expected)
    # datetimes become elapsed days since the first time: 6 h = 0.25 d
    torch.testing.assert_close(sampler.times, torch.arange(6, dtype=torch.float32) * 0.25)
    torch.testing.assert_close(sampler.grid[0], torch.linspace(-10.0, 10.0, 4))
    torch.testing.assert_close(sampler.grid[1], torch.linspace(100.0, 140.0, 5))
    task = sampler.sample(4, generator=0)
    assert task.x_context.shape == (4, 5, 3) and task.y_target.shape == (4, 15, 1)
    # every target value is the file's value at its (t, lat, lon) for one of the members
    t, lat, lon = task.x_target[..., 0], task.x_target[..., 1], task.x_target[..., 2]
    it = torch.round(t / 0.25).long()
    iy = torch.round((lat + 10.0) / (20.0 / 3)).long()
    ix = torch.round((lon - 100.0) / 10.0).long()
    for b in range(4):
        cand = expected[:, it[b], 0, iy[b], ix[b]]  # (members, points)
        hit = (cand - task.y_target[b, :, 0]).abs().min(dim=0).values
        assert bool((hit < 1e-6).all())


def test_misnamed_dim_error_names_dim_and_suggests_match():
    ds = _field_dataset().rename({"valid_time": "tme", "member": "sample"})
    with pytest.raises(ValueError, match=r"time dim 'time'.*did you mean 'tme'\?") as info:
        standardize_dataset(ds, dims={"y": "lat", "x": "lon"})
    assert "dims={'time': 'tme'}" in str(info.value)
    with pytest.raises(ValueError, match=r"'sst' has dims .* no dim 'time'.*did you mean 'tme'"):
        standardize_dataset(ds, ["sst"], dims={"y": "lat", "x": "lon"})


def test_missing_dim_error_suggests_common_alias():
    ds = _field_dataset().rename({"valid_time": "time", "member": "sample"})
    with pytest.raises(ValueError, match=r"no dim 'y'.*did you mean 'lat'\?"):
        standardize_dataset(ds, layout="grid")
    # a wrong mapping names the file dim it looked for
    with pytest.raises(ValueError, match=r"no dim 'latitude' \(mapped from 'y' by dims\)"):
        standardize_dataset(ds, dims={"y": "latitude", "x": "lon"})


def test_missing_sample_dim_and_unknown_keys():
    ds = _field_dataset().isel(member=0)
    with pytest.raises(ValueError, match=r"no dim 'sample'.*dims=\{'sample': None\}"):
        standardize_dataset(ds, dims={"time": "valid_time", "y": "lat", "x": "lon"})
    with pytest.raises(ValueError, match=r"dims has key 'tim' \(did you mean 'time'\?\)"):
        standardize_dataset(ds, dims={"tim": "valid_time"})
    with pytest.raises(ValueError, match=r"variable 'sts' is not in the dataset \(did you"):
        standardize_dataset(ds, ["sts"], dims={"sample": None, "time": "valid_time"})
    # a single trajectory with sample=None gets a length-1 sample dim
    out = standardize_dataset(
        ds, dims={"sample": None, "time": "valid_time", "y": "lat", "x": "lon"}
    )
    assert out["sst"].dims == ("sample", "time", "y", "x") and out.sizes["sample"] == 1
    np.testing.assert_array_equal(out["sst"].values[0], ds["sst"].values)


def test_unexpected_extra_dim_is_reported():
    ds = _field_dataset().expand_dims(depth=2, axis=2)
    with pytest.raises(ValueError, match=r"unexpected \['depth'\]"):
        standardize_dataset(ds, dims=MAPPING)
    out = standardize_dataset(ds, dims={**MAPPING, "channel": "depth"})
    assert out["sst"].dims == ("sample", "time", "channel", "y", "x")


def test_scalar_series_become_components_nan_is_missing_and_inf_is_rejected(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    ds = xr.Dataset(
        {"temp": (("station", "t"), a), "wind": (("station", "t"), b)},
        coords={"t": np.arange(9) * 0.5},
    )
    sampler = load_task_sampler(
        ds,
        ["wind", "temp"],
        dims={"sample": "station", "time": "t"},
        setting="extrapolation",
        num_context=3,
        num_target=4,
        dtype=torch.float64,
    )
    assert sampler.values.dtype == torch.float64 and sampler.values.shape == (4, 9, 2)
    torch.testing.assert_close(sampler.values, torch.tensor(np.stack([b, a], axis=-1)))
    torch.testing.assert_close(sampler.times, torch.arange(9, dtype=torch.float64) * 0.5)
    a[2, 3] = np.nan  # a missing observation: accepted, never drawn into a task
    ds["temp"] = (("station", "t"), a)
    path = tmp_path / "stations.nc"
    ds.to_netcdf(path)
    gappy = load_task_sampler(
        path, dims={"sample": "station", "time": "t"}, num_context=3, num_target=4
    )
    assert int(torch.isnan(gappy.values).sum()) == 1
    for seed in range(20):
        task = gappy.sample(8, generator=seed)
        assert bool(torch.isfinite(task.y_context).all() and torch.isfinite(task.y_target).all())
    a[2, 3] = np.inf
    ds["temp"] = (("station", "t"), a)
    with pytest.raises(ValueError, match=r"variable 'state' has 1 infinite"):
        load_task_sampler(ds, dims={"sample": "station", "time": "t"})


def test_non_increasing_time_is_rejected():
    ds = _field_dataset().isel(valid_time=[0, 2, 1, 3])
    with pytest.raises(ValueError, match="not strictly increasing"):
        standardize_dataset(ds, dims=MAPPING)


def test_split_dataset_partitions_samples_and_time():
    ds = standardize_dataset(_field_dataset(), dims=MAPPING)
    ds = xr.concat([ds] * 4, dim="sample").assign_coords(sample=np.arange(12))
    train, val, test = split_dataset(ds, (0.5, 0.25, 0.25), seed=3)
    ids = [p["sample"].values.tolist() for p in (train, val, test)]
    assert [len(i) for i in ids] == [6, 3, 3]
    assert sorted(sum(ids, [])) == list(range(12))
    early, late = split_dataset(ds, (0.5, 0.5), dim="time")
    assert early["time"].values.max() < late["time"].values.min()
    with pytest.raises(ValueError, match="fractions"):
        split_dataset(ds, (0.5, 0.6))


def test_open_eager_without_chunks(tmp_path, monkeypatch):
    path = tmp_path / "sst.nc"
    _field_dataset().to_netcdf(path)
    ds = open_user_dataset(path, chunks=None)
    assert ds["sst"].chunks is None
    import uqdyn.data.user_data as user_data

    monkeypatch.setattr(user_data, "dask_available", lambda: False)
    assert open_user_dataset(path)["sst"].chunks is None  # "auto" without dask: eager
    with pytest.raises(ImportError, match="needs dask"):
        open_user_dataset(path, chunks={"member": 1})
    np.testing.assert_array_equal(ds["sst"].values, _field_dataset()["sst"].values)
    with pytest.raises(ValueError, match="does not exist"):
        open_user_dataset(tmp_path / "missing.nc")


@pytest.mark.skipif(not dask_available(), reason="dask is not installed")
def test_open_is_lazy_with_dask(tmp_path):
    path = tmp_path / "sst.nc"
    _field_dataset().to_netcdf(path)
    ds = open_user_dataset(path)
    assert ds["sst"].chunks is not None  # dask-backed: nothing read yet
    standard = standardize_dataset(ds, dims=MAPPING)
    assert standard["sst"].chunks is not None  # still lazy after renaming/ordering
    sampler = load_task_sampler(standard, num_context=3, num_target=5)
    torch.testing.assert_close(
        sampler.values[:, :, 0], torch.tensor(_field_dataset()["sst"].values, dtype=torch.float32)
    )


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_zarr_store_round_trip(tmp_path):
    pytest.importorskip("zarr")
    path = tmp_path / "sst.zarr"
    _field_dataset().to_zarr(path)  # zarr 3 warns that consolidated metadata is an extension
    sampler = load_task_sampler(path, dims=MAPPING, num_context=3, num_target=5)
    torch.testing.assert_close(
        sampler.values[:, :, 0], torch.tensor(_field_dataset()["sst"].values, dtype=torch.float32)
    )


def test_default_variables_skip_cf_bounds_and_time_units():
    ds = _field_dataset()
    ds["valid_time_bnds"] = (("valid_time", "nv"), np.zeros((6, 2)))
    ds["valid_time"].attrs["bounds"] = "valid_time_bnds"
    out = standardize_dataset(ds, dims=MAPPING, time_unit="h")
    assert list(out.data_vars) == ["sst"]
    np.testing.assert_allclose(out["time"].values, np.arange(6) * 6.0)
    assert out["time"].attrs["units"].startswith("h since 2020-01-01T00")
    with pytest.raises(ValueError, match=r"time_unit='days'; expected one of"):
        standardize_dataset(ds, dims=MAPPING, time_unit="days")


def test_cftime_hint_only_for_cftime_times() -> None:
    times = xr.date_range("2000-01-01", periods=4, freq="D", calendar="noleap", use_cftime=True)
    cf = xr.Dataset({"v": (("time", "dim"), np.zeros((4, 2)))}, coords={"time": times})
    with pytest.raises(TypeError, match="cftime dates.*decode_times=False"):
        standardize_dataset(cf, dims={"sample": None})
    text = xr.Dataset({"v": (("time", "dim"), np.zeros((4, 2)))}, coords={"time": list("abcd")})
    with pytest.raises(TypeError) as info:
        standardize_dataset(text, dims={"sample": None})
    assert "cftime" not in str(info.value)
