"""uqdyn.forecast.load_data and rolling_origins: containers, times, gaps, drop counts, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from uqdyn.forecast import load_data, rolling_origins


def _monthly(n: int = 24, start: str = "2000-01-01") -> pd.Series:
    return pd.Series(
        np.arange(n, dtype=float), index=pd.date_range(start, periods=n, freq="MS"), name="x"
    )


# ---------------------------------------------------------------------- load_data
def test_series_dataframe_dataset_and_dataarray_give_the_same_values(tmp_path) -> None:
    s = _monthly()
    from_series = load_data(s)
    from_frame = load_data(s.to_frame())
    from_da = load_data(from_series)
    ds = xr.Dataset({"x": from_series, "other": from_series * 2})
    from_ds = load_data(ds, "x")
    for da in (from_frame, from_da, from_ds):
        np.testing.assert_array_equal(da.values, s.to_numpy())
        np.testing.assert_array_equal(da["time"].values, s.index.to_numpy())
    assert from_series.dims == ("time",) and from_series.dtype == np.float64


def test_csv_with_a_date_column(tmp_path) -> None:
    path = tmp_path / "station.csv"
    pd.DataFrame(
        {"date": ["2001-01-01", "2001-01-02", "2001-01-03"], "temp": [1.5, np.nan, 2.5]}
    ).to_csv(path, index=False)
    da = load_data(path)
    assert da.name == "temp" and da.dims == ("time",)
    assert np.isnan(da.values[1]) and da.values[2] == 2.5
    assert str(da["time"].values[0]).startswith("2001-01-01")


def test_csv_without_time_column_names_the_columns(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"when": [1, 2], "v": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"columns \['when', 'v'\] and no time column 'time'"):
        load_data(path)
    assert load_data(path, dim="when").sizes["when"] == 2


def test_several_columns_become_a_variable_dim() -> None:
    frame = pd.DataFrame(
        {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]},
        index=pd.date_range("2000", periods=3, freq="D"),
    )
    da = load_data(frame)
    assert da.dims == ("time", "variable")
    assert list(da["variable"].values) == ["a", "b"]


def test_timezone_aware_times_are_converted_to_utc_with_a_warning() -> None:
    idx = pd.date_range("2000-01-01 01:00", periods=3, freq="h", tz="Europe/Paris")
    s = pd.Series([1.0, 2.0, 3.0], index=idx, name="x")
    with pytest.warns(UserWarning, match="converted to UTC"):
        da = load_data(s)
    assert str(da["time"].values[0]).startswith("2000-01-01T00:00")


def test_naive_times_give_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(_monthly())


def test_duplicated_timestamps_are_named_and_can_be_dropped() -> None:
    idx = pd.to_datetime(["2000-01-01", "2000-01-02", "2000-01-02", "2000-01-03"])
    s = pd.Series([1.0, 2.0, 99.0, 3.0], index=idx, name="x")
    with pytest.raises(
        ValueError, match=r"1 duplicated timestamp\(s\): 2000-01-02.*duplicates='drop'"
    ):
        load_data(s)
    da = load_data(s, duplicates="drop")
    np.testing.assert_array_equal(da.values, [1.0, 2.0, 3.0])


def test_non_increasing_times_name_the_position() -> None:
    idx = pd.to_datetime(["2000-01-01", "2000-01-03", "2000-01-02"])
    with pytest.raises(ValueError, match=r"not increasing at position 2.*sortby"):
        load_data(pd.Series([1.0, 2.0, 3.0], index=idx, name="x"))


@pytest.mark.parametrize(
    "values, error, match",
    [
        ([np.nan, np.nan, np.nan], ValueError, "no observed value"),
        ([1.0, np.inf, 2.0], ValueError, "infinite"),
    ],
)
def test_bad_values_are_refused(values, error, match) -> None:
    s = pd.Series(values, index=pd.date_range("2000", periods=3, freq="D"), name="v")
    with pytest.raises(error, match=match):
        load_data(s)


def test_missing_var_and_time_dim_suggest_names() -> None:
    ds = xr.Dataset({"sst": (("t", "lat"), np.zeros((3, 2)))})
    with pytest.raises(ValueError, match=r"var='sts'.*did you mean 'sst'"):
        load_data(ds, "sts", dim="t")
    with pytest.raises(ValueError, match=r"no time dim 'time'.*did you mean 't'"):
        load_data(ds, "sst")
    with pytest.raises(TypeError, match="expected an xarray DataArray"):
        load_data([1, 2, 3])


def test_cftime_calendars_are_accepted() -> None:
    times = xr.date_range("2000-01-01", periods=30, freq="MS", calendar="noleap", use_cftime=True)
    da = xr.DataArray(np.arange(30.0), dims="time", coords={"time": times}, name="c")
    origins = rolling_origins(da, context=3, leads=[1, 2])
    assert len(origins) == 26
    with pytest.raises(ValueError, match="cftime dates; give leads in steps"):
        rolling_origins(da, context=3, leads=["1MS"])


# ---------------------------------------------------------------------- rolling_origins
def test_step_windows_and_drop_counts_by_hand() -> None:
    s = _monthly(10)
    origins = rolling_origins(s, context=3, leads=[1, 3])
    # candidates 0..9: history drops 0, 1; horizon drops 7, 8, 9 (7 + 3 = 10 > 9)
    assert origins.dropped == {"history": 2, "horizon": 3, "no_context": 0, "no_target": 0}
    assert len(origins) == 5
    np.testing.assert_array_equal(origins.context.values[0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(origins.target.values[0], [3.0, 5.0])
    np.testing.assert_array_equal(origins.target.values[-1], [7.0, 9.0])
    assert origins.origin_time[0] == s.index[2]
    assert origins.valid_time[0, 1] == s.index[5]
    assert "2 not enough history" in origins.summary() and "3 a lead time" in origins.summary()


def test_stride_start_end_and_valid_end() -> None:
    s = _monthly(36)
    origins = rolling_origins(
        s, context=2, leads=[1, 2], stride=3, start="2000-06-01", end="2001-12-01"
    )
    times = pd.DatetimeIndex(origins.origin_time)
    assert times.min() >= pd.Timestamp("2000-06-01") and times.max() <= pd.Timestamp("2001-12-01")
    assert np.all(np.diff(np.arange(36)[s.index.isin(times)]) == 3)
    purged = rolling_origins(s, context=2, leads=[1, 2], valid_end="2000-12-01")
    assert pd.DatetimeIndex(purged.valid_time.reshape(-1)).max() <= pd.Timestamp("2000-12-01")


def test_offset_leads_on_an_irregular_series_with_gaps() -> None:
    times = pd.to_datetime(
        [
            "2000-01-01 00:00",
            "2000-01-01 06:00",
            "2000-01-01 12:00",
            "2000-01-02 00:00",
            "2000-01-02 06:00",
        ]
    )
    s = pd.Series([0.0, 1.0, 2.0, 3.0, 4.0], index=times, name="x")
    origins = rolling_origins(s, context=1, leads=["6h", "12h"])
    # origin 00:00 -> 06:00 (1), 12:00 (2); origin 06:00 -> 12:00 (2), 18:00 (missing)
    np.testing.assert_array_equal(origins.target.values[0], [1.0, 2.0])
    assert origins.target.values[1, 0] == 2.0 and np.isnan(origins.target.values[1, 1])
    # origin 12:00 -> 18:00 and 00:00 (3); origin 00:00+1 -> 06:00 (4), 12:00 beyond the end
    assert list(origins.target["lead"].values) == ["6h", "12h"]
    assert origins.dropped["horizon"] == 2


def test_offset_context_pads_irregular_windows_with_nan() -> None:
    times = pd.to_datetime(["2000-01-01", "2000-01-02", "2000-01-04", "2000-01-05", "2000-01-06"])
    s = pd.Series([0.0, 1.0, 2.0, 3.0, 4.0], index=times, name="x")
    origins = rolling_origins(s, context="3D", leads=[1])
    # windows (t - 3D, t]: at 01-04 -> {01-02, 01-04}; at 01-05 -> {01-04, 01-05}
    row = origins.context.sel(origin=np.datetime64("2000-01-04")).values
    assert np.isnan(row[0]) and list(row[1:]) == [1.0, 2.0]


def test_fields_with_land_keep_nan_and_drop_empty_origins() -> None:
    values = np.random.default_rng(0).normal(size=(12, 3, 4))
    values[:, 0, 0] = np.nan  # land point
    values[5] = np.nan  # a missing map
    da = xr.DataArray(
        values,
        dims=("time", "lat", "lon"),
        coords={
            "time": pd.date_range("2000", periods=12, freq="D"),
            "lat": [1, 2, 3],
            "lon": [0, 1, 2, 3],
        },
        name="sst",
    )
    origins = rolling_origins(da, context=1, leads=[1])
    assert origins.dropped["no_context"] == 1 and origins.dropped["no_target"] == 1
    assert np.isnan(origins.target.values[:, 0, 0, 0]).all()
    assert origins.space_dims == ("lat", "lon")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"context": 3, "leads": [30]}, r"largest lead \(30 steps\) is not shorter"),
        ({"context": 3, "leads": [2, 1]}, "increasing"),
        ({"context": 3, "leads": [1, "1MS"]}, "mixes steps"),
        ({"context": 0, "leads": [1]}, "context=0"),
        ({"context": 3, "leads": [1], "stride": 0}, "stride=0"),
        ({"context": 3, "leads": ["12MS"], "start": "2002-01-01"}, "start="),
        ({"context": 3, "leads": ["5YS"]}, "reaches past the end"),
        ({"context": 3, "leads": ["bogus"]}, "leads='bogus'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        rolling_origins(_monthly(24), **kwargs)


def test_no_origin_left_reports_the_counts() -> None:
    s = pd.Series(
        [np.nan] * 6 + [1.0, np.nan], index=pd.date_range("2000", periods=8, freq="D"), name="x"
    )
    with pytest.raises(
        ValueError, match=r"no forecast origin is left.*no_context: 5, no_target: 1"
    ):
        rolling_origins(s, context=2, leads=[1])
