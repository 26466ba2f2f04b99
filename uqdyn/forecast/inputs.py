"""A user's series or field, from any common container, as one checked ``xarray.DataArray``.

:func:`load_data` accepts an ``xarray.DataArray`` or ``Dataset``, a pandas ``Series`` or
``DataFrame``, or a path to a CSV file, a netCDF file or a zarr store, and returns the chosen
variable as a ``DataArray`` with the time dim first, float64 values (NaN = not observed) and
a checked time coordinate:

* timezone-aware times are converted to UTC and made naive (a ``UserWarning`` says so);
* duplicated timestamps are an error naming them, unless ``duplicates="drop"`` (keep the
  first of each);
* times must increase; the error names the first position where they do not;
* times may be datetimes (numpy ``datetime64``), cftime dates (non-standard calendars) or
  plain numbers;
* an all-NaN variable, infinite values and non-numeric data are errors naming the variable.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["load_data", "TIME_ALIASES"]

#: Names that the time dim (or a CSV's time column) often goes by.
TIME_ALIASES = ("time", "date", "datetime", "timestamp", "valid_time", "t", "times", "index")

Duplicates = Literal["raise", "drop"]


def _is_cftime(values: np.ndarray) -> bool:
    if values.dtype != object or values.size == 0:
        return False
    first = values.reshape(-1)[0]
    return type(first).__module__.split(".")[0] == "cftime"


def _read_path(path: Path, dim: str, var: str | Sequence[str] | None) -> Any:
    """Open a CSV file (as a DataFrame) or a netCDF file / zarr store (as a Dataset)."""
    if not path.exists():
        raise ValueError(f"data={str(path)!r} does not exist; expected a CSV, netCDF or zarr path")
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        frame = pd.read_csv(path, sep=sep)
        columns = [str(c) for c in frame.columns]
        time_col = (
            dim if dim in columns else next((c for c in columns if c.lower() in TIME_ALIASES), None)
        )
        if time_col is None:
            close = difflib.get_close_matches(dim, columns, n=1)
            hint = f" (did you mean {close[0]!r}? pass dim={close[0]!r})" if close else ""
            raise ValueError(
                f"the CSV file {path.name!r} has columns {columns} and no time column {dim!r}"
                f"{hint}; expected a column of dates or times named by dim="
            )
        times = frame[time_col]
        if times.dtype.kind not in "iuf":
            try:
                times = pd.to_datetime(times, utc=False, format="mixed")
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"the time column {time_col!r} of {path.name!r} could not be read as dates "
                    f"({err}); expected ISO dates such as 2001-01-31 or numbers"
                ) from None
        frame = frame.drop(columns=[time_col])
        frame.index = pd.Index(times, name=dim)
        return frame
    from uqdyn.data.user_data import open_user_dataset

    return open_user_dataset(path)


def _from_pandas(obj: Any, dim: str, var: str | Sequence[str] | None) -> xr.DataArray:
    if isinstance(obj, pd.Series):
        name = str(obj.name) if obj.name is not None else (var if isinstance(var, str) else "value")
        series = obj.copy()
        series.index.name = dim
        return xr.DataArray(
            series.to_numpy(),
            dims=(dim,),
            coords={dim: _time_values(series.index, dim, name)},
            name=name,
        )
    frame: pd.DataFrame = obj
    if dim in frame.columns:
        frame = frame.set_index(dim)
    columns = [str(c) for c in frame.columns]
    if var is not None:
        wanted = [var] if isinstance(var, str) else [str(v) for v in var]
        for w in wanted:
            if w not in columns:
                close = difflib.get_close_matches(w, columns, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"var={w!r} is not a column{hint}; columns: {columns}")
        frame = frame[wanted]
        columns = wanted
    numeric = [c for c in columns if frame[c].dtype.kind in "iufb"]
    if not numeric:
        raise ValueError(f"the table has no numeric column among {columns}; expected values")
    if var is None and len(numeric) < len(columns):
        frame = frame[numeric]
        columns = numeric
    index = _time_values(frame.index, dim, columns[0] if len(columns) == 1 else "value")
    if len(columns) == 1:
        return xr.DataArray(
            frame[columns[0]].to_numpy(), dims=(dim,), coords={dim: index}, name=columns[0]
        )
    return xr.DataArray(
        frame.to_numpy(),
        dims=(dim, "variable"),
        coords={dim: index, "variable": columns},
        name="value",
    )


def _from_dataset(ds: xr.Dataset, dim: str, var: str | Sequence[str] | None) -> xr.DataArray:
    names = [str(n) for n in ds.data_vars]
    if var is None:
        with_time = [n for n in names if dim in ds[n].dims and not n.endswith(("_bnds", "_bounds"))]
        if len(with_time) != 1:
            raise ValueError(
                f"the dataset has data variables {names}"
                + (f", of which {with_time} have the time dim {dim!r}" if with_time else "")
                + "; pass var=NAME to choose one"
            )
        var = with_time[0]
    if not isinstance(var, str):
        raise TypeError(f"var={var!r}; expected one variable name for a Dataset")
    if var not in names:
        close = difflib.get_close_matches(var, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"var={var!r} is not in the dataset{hint}; data variables: {names}")
    return ds[var]


def _check_dim(da: xr.DataArray, dim: str) -> None:
    if dim in da.dims:
        return
    dims = [str(d) for d in da.dims]
    close = [d for d in dims if d.lower() in TIME_ALIASES] + difflib.get_close_matches(
        dim, dims, n=1
    )
    hint = f"; did you mean {close[0]!r}? pass dim={close[0]!r}" if close else ""
    raise ValueError(f"variable {da.name!r} has dims {tuple(dims)} and no time dim {dim!r}{hint}")


def _time_values(raw: Any, dim: str, name: Any) -> np.ndarray:
    """The times as datetime64[ns] (UTC, naive), cftime objects or numbers."""
    index = raw if isinstance(raw, pd.Index) else pd.Index(np.asarray(raw))
    if isinstance(index, pd.DatetimeIndex) and index.tz is None:
        return index.to_numpy().astype("datetime64[ns]")
    values = np.asarray(index)
    if values.dtype.kind in "iuf":
        return values
    if _is_cftime(values):
        return values
    aware = isinstance(index, pd.DatetimeIndex) or (
        values.dtype == object and values.size and getattr(values[0], "tzinfo", None) is not None
    )
    try:
        converted = pd.DatetimeIndex(pd.to_datetime(values, utc=bool(aware)))
    except (ValueError, TypeError):
        raise TypeError(
            f"the time coordinate {dim!r} of {name!r} has values of type "
            f"{type(values.reshape(-1)[0]).__name__ if values.size else values.dtype}; expected "
            "dates (datetime64), cftime dates or numbers"
        ) from None
    if aware:
        warnings.warn(
            f"the times of {name!r} carry a timezone; converted to UTC and made naive",
            UserWarning,
            stacklevel=4,
        )
        converted = converted.tz_convert("UTC").tz_localize(None)
    return converted.to_numpy().astype("datetime64[ns]")


def _checked_times(da: xr.DataArray, dim: str, duplicates: Duplicates) -> xr.DataArray:
    raw = da.indexes[dim] if dim in da.indexes else np.arange(da.sizes[dim])
    values = _time_values(raw, dim, da.name)
    if values.dtype.kind == "M" and np.isnat(values).any():
        pos = int(np.flatnonzero(np.isnat(values))[0])
        raise ValueError(
            f"the time coordinate {dim!r} of {da.name!r} has missing times (NaT), first at "
            f"position {pos}; expected a time for every sample"
        )
    attrs = dict(da[dim].attrs) if dim in da.coords else {}
    da = da.assign_coords({dim: (dim, values, attrs)})
    index = pd.Index(values)
    dup = np.asarray(index.duplicated(keep="first"))
    if dup.any():
        if duplicates == "raise":
            shown = [str(v) for v in pd.unique(np.asarray(index[dup]))[:5]]
            more = "" if int(dup.sum()) <= 5 else f" and {int(dup.sum()) - 5} more"
            raise ValueError(
                f"the time coordinate {dim!r} of {da.name!r} has {int(dup.sum())} duplicated "
                f"timestamp(s): {', '.join(shown)}{more}; expected unique times (pass "
                "duplicates='drop' to keep the first value of each)"
            )
        da = da.isel({dim: np.flatnonzero(~dup)})
        values = values[~dup]
    if values.size > 1:
        bad = np.flatnonzero(~(values[1:] > values[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(
                f"the time coordinate {dim!r} of {da.name!r} is not increasing at position {i}: "
                f"{values[i - 1]} is followed by {values[i]}; expected increasing times (sort "
                f"with data.sortby({dim!r}))"
            )
    return da


def load_data(
    data: Any,
    var: str | Sequence[str] | None = None,
    *,
    dim: str = "time",
    duplicates: Duplicates = "raise",
) -> xr.DataArray:
    """A user's series or gridded field as a checked ``DataArray`` with the time dim first.

    Parameters
    ----------
    data:
        ``xarray.DataArray``, ``xarray.Dataset`` (``var`` names the variable), pandas
        ``Series``, ``DataFrame`` (one column per variable; a column named ``dim`` or the
        index gives the times), or a path to a ``.csv`` file (a time column named ``dim`` or
        one of :data:`TIME_ALIASES`), a netCDF file or a zarr store.
    var:
        The variable (Dataset) or column(s) (DataFrame, CSV) to forecast. Several columns
        become a ``variable`` dim.
    dim:
        Name of the time dim (or CSV column).
    duplicates:
        ``"raise"`` (default): duplicated timestamps are an error naming them; ``"drop"``:
        keep the first value of each.

    Returns
    -------
    xarray.DataArray
        Dims ``(dim, *space)`` (e.g. ``(time,)``, ``(time, variable)``, ``(time, lat,
        lon)``), float64 values with NaN for missing observations, increasing unique times.

    Raises
    ------
    ValueError
        Naming the argument or variable: a missing time dim or column (with a suggestion),
        duplicated or non-increasing times (naming them / where), an all-NaN variable,
        infinite values.
    TypeError
        Non-numeric values or times.
    """
    if duplicates not in ("raise", "drop"):
        raise ValueError(f"duplicates={duplicates!r}; expected 'raise' or 'drop'")
    if not isinstance(dim, str) or not dim:
        raise TypeError(f"dim={dim!r}; expected the name of the time dim")
    source = data
    if isinstance(source, (str, os.PathLike)):
        source = _read_path(Path(source), dim, var)
    if isinstance(source, (pd.Series, pd.DataFrame)):
        da = _from_pandas(source, dim, var)
    elif isinstance(source, xr.Dataset):
        da = _from_dataset(source, dim, var)
    elif isinstance(source, xr.DataArray):
        da = source
        if da.name is None:
            da = da.rename(var if isinstance(var, str) else "value")
    else:
        raise TypeError(
            f"data is a {type(data).__name__}; expected an xarray DataArray or Dataset, a "
            "pandas Series or DataFrame, or a path to a CSV, netCDF or zarr file"
        )
    _check_dim(da, dim)
    if da.dtype.kind not in "iufb":
        raise TypeError(f"variable {da.name!r} has dtype {da.dtype}; expected numbers")
    da = da.transpose(dim, ...).astype(np.float64)
    da = _checked_times(da, dim, duplicates)
    values = np.asarray(da.values)
    if np.isinf(values).any():
        raise ValueError(
            f"variable {da.name!r} has {int(np.isinf(values).sum())} infinite value(s); "
            "expected finite values or NaN for missing ones"
        )
    if not np.isfinite(values).any():
        raise ValueError(
            f"variable {da.name!r} has no observed value (all {values.size} are NaN); expected "
            "at least some finite values"
        )
    return da
