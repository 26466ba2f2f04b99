"""Users' own data: open netCDF or zarr, check its dims, and cut neural-process tasks from it.

The task builder (:class:`~uqdyn.data.TaskSampler`, through
:func:`~uqdyn.data.dataset_to_tensor`) expects the layout written by
:func:`~uqdyn.data.simulate_dataset`:

* gridded fields: variables with dims ``(sample, time, y, x)`` (optionally ``channel`` after
  ``time``), coordinates ``time``, ``y`` and ``x``;
* vector or scalar series: variables with dims ``(sample, time, dim)`` or ``(sample, time)``.

Files made elsewhere name their dims differently (``member``, ``lat``, ``lon``, ...).
:func:`standardize_dataset` renames them through a ``dims`` mapping from uqdyn's names to
the file's names, checks every selected variable, and raises a ``ValueError`` that names the
missing or misnamed dim and suggests close matches when something does not fit. Times
become floats (datetimes: elapsed time since the first one in ``time_unit``).

:func:`open_user_dataset` opens a file lazily (dask chunks) when dask is installed, eagerly
otherwise; nothing is read from disk until :func:`load_task_sampler` (or
:func:`~uqdyn.data.dataset_to_tensor`) converts the selected variables to a tensor.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from uqdyn.data import standardize_dataset
>>> ds = xr.Dataset({"sst": (("member", "time", "lat", "lon"), np.zeros((2, 5, 3, 4)))})
>>> standardize_dataset(ds, dims={"sample": "member", "y": "lat", "x": "lon"})["sst"].dims
('sample', 'time', 'y', 'x')
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from uqdyn.data.io import _engine
from uqdyn.data.tasks import TaskSampler

__all__ = [
    "open_user_dataset",
    "standardize_dataset",
    "split_dataset",
    "load_task_sampler",
    "dask_available",
]

Layout = Literal["auto", "grid", "vector"]

#: The dims uqdyn's task builder knows, and names they often go by in other files.
DIM_ALIASES: dict[str, tuple[str, ...]] = {
    "sample": ("member", "ensemble", "realization", "number", "run", "trajectory", "case"),
    "time": ("t", "times", "valid_time", "date", "step", "lead_time", "ocean_time"),
    "y": ("lat", "latitude", "rlat", "nlat", "j", "row", "south_north", "eta_rho"),
    "x": ("lon", "longitude", "rlon", "nlon", "i", "col", "west_east", "xi_rho"),
    "dim": ("component", "components", "variable", "state", "feature", "features"),
    "channel": ("channels", "field", "fields", "level"),
}

_GRID = ("sample", "time", "y", "x")
_VECTOR = ("sample", "time", "dim")
_KNOWN = ("sample", "time", "y", "x", "dim", "channel")
_TIME_UNITS = ("W", "D", "h", "m", "s", "ms", "us", "ns")


def dask_available() -> bool:
    """Whether dask is importable (then files open lazily, chunk by chunk)."""
    try:
        import dask  # noqa: F401
        import dask.array  # noqa: F401
    except ImportError:
        return False
    return True


def _is_zarr(path: Path) -> bool:
    if path.suffix == ".zarr":
        return True
    return path.is_dir() and any(
        (path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
    )


def open_user_dataset(
    path: str | os.PathLike[str],
    *,
    format: Literal["auto", "netcdf", "zarr"] = "auto",
    chunks: Literal["auto"] | Mapping[str, int] | None = "auto",
    engine: str | None = None,
) -> xr.Dataset:
    """Open a netCDF file or a zarr store, lazily when dask is installed.

    Parameters
    ----------
    path:
        A netCDF file (``.nc``, ...) or a zarr store (a directory, or a name ending in
        ``.zarr``).
    format:
        ``"auto"`` (zarr for ``*.zarr`` and zarr directories, netCDF otherwise), ``"netcdf"``
        or ``"zarr"``.
    chunks:
        ``"auto"``: dask arrays with the file's own chunks when dask is installed, else the
        whole file read into memory (and closed); ``None``: always read eagerly; a mapping
        ``{dim: size}``: dask chunks of that size (needs dask).
    engine:
        netCDF engine, ``"netcdf4"`` or ``"h5netcdf"`` (default: the one installed).

    Returns
    -------
    xarray.Dataset
        Dask-backed (lazy) or numpy-backed (eager), with the file's own dim names; pass it
        to :func:`standardize_dataset` or :func:`load_task_sampler`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path is a {type(path).__name__}; expected a str or os.PathLike")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"path {os.fspath(path)!r} does not exist; expected a netCDF file or zarr")
    if format not in ("auto", "netcdf", "zarr"):
        raise ValueError(f"format={format!r}; expected 'auto', 'netcdf' or 'zarr'")
    kind = ("zarr" if _is_zarr(p) else "netcdf") if format == "auto" else format
    if isinstance(chunks, str) and chunks != "auto":
        raise ValueError(f"chunks={chunks!r}; expected 'auto', None or a {{dim: size}} mapping")
    lazy = dask_available() if chunks == "auto" else chunks is not None
    if lazy and not dask_available():
        raise ImportError(
            f"chunks={dict(chunks) if isinstance(chunks, Mapping) else chunks!r} needs dask; "
            "install it (pip install dask) or pass chunks='auto' or None to read eagerly"
        )
    dask_chunks: dict[str, int] | None = None
    if lazy:
        dask_chunks = dict(chunks) if isinstance(chunks, Mapping) else {}
    if kind == "zarr":
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise ImportError(
                "reading zarr stores needs the zarr package; install it (pip install zarr)"
            ) from None
        ds = xr.open_zarr(p, chunks=dask_chunks)
        return ds if lazy else ds.load()
    if not p.is_file():
        raise ValueError(f"path {os.fspath(path)!r} is a directory; expected a netCDF file")
    if lazy:
        return xr.open_dataset(p, engine=_engine(engine), chunks=dask_chunks)
    return xr.load_dataset(p, engine=_engine(engine))


def _suggest(name: str, candidates: Sequence[str]) -> list[str]:
    """Candidates that look like ``name``: known aliases first, then close spellings."""
    lowered = {c.lower(): c for c in candidates}
    found = [lowered[a] for a in (name, *DIM_ALIASES.get(name, ())) if a in lowered]
    found += difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return list(dict.fromkeys(found))


def _resolve_dims(dims: Mapping[str, str | None] | None) -> dict[str, str | None]:
    mapping: dict[str, str | None] = {}
    for key, value in (dims or {}).items():
        if key not in _KNOWN:
            close = difflib.get_close_matches(str(key), _KNOWN, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"dims has key {key!r}{hint}; expected keys among {list(_KNOWN)}")
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"dims[{key!r}] is a {type(value).__name__}; expected the file's dim name or None"
            )
        if value is None and key not in ("sample", "dim"):
            raise ValueError(
                f"dims[{key!r}]=None; only 'sample' (a single trajectory) and 'dim' (scalar "
                "series) may be absent"
            )
        mapping[key] = value
    return mapping


def _missing_dims_error(
    variable: str,
    var_dims: tuple[str, ...],
    missing: list[tuple[str, str]],
    layout: str,
    extra: list[str],
) -> ValueError:
    """One error for every required dim ``(uqdyn name, name looked for)`` a variable lacks.

    ``extra`` are the variable's dims that no required dim claims: the candidates.
    """
    parts: list[str] = []
    fixes: dict[str, str] = {}
    hints: list[str] = []
    for wanted, file_name in missing:
        mapped = f" (mapped from {wanted!r} by dims)" if file_name != wanted else ""
        close = _suggest(file_name, extra) or _suggest(wanted, extra)
        close = [c for c in close if c not in fixes.values()]
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        parts.append(f"{file_name!r}{mapped}{guess}")
        if close:
            fixes[wanted] = close[0]
        elif wanted == "sample":
            hints.append("for a single trajectory pass dims={'sample': None}")
        else:
            hints.append(f"name the file's dim with dims={{{wanted!r}: '<name>'}}")
    if fixes:
        hints.insert(0, f"pass dims={fixes!r}")
    return ValueError(
        f"variable {variable!r} has dims {var_dims} and no dim {' nor '.join(parts)}, which "
        f"the {layout} layout needs; {'; '.join(hints)}"
    )


def _layout_of(
    name: str, var_dims: tuple[str, ...], mapping: dict[str, str | None], layout: Layout
) -> str:
    if layout in ("grid", "vector"):
        return layout
    y, x = mapping.get("y", "y"), mapping.get("x", "x")
    if y in var_dims and x in var_dims:
        return "grid"
    if y in var_dims or x in var_dims or any(_suggest(d, var_dims) for d in ("y", "x")):
        return "grid"  # a half-named grid: report the other one as missing
    return "vector"


def _float_times(values: np.ndarray, time_unit: str) -> tuple[np.ndarray, dict[str, Any]]:
    if np.issubdtype(values.dtype, np.datetime64):
        origin = values[0]
        elapsed = (values - origin) / np.timedelta64(1, time_unit)  # type: ignore[call-overload]
        return np.asarray(elapsed, dtype=np.float64), {
            "units": f"{time_unit} since {np.datetime_as_string(origin)}"
        }
    if np.issubdtype(values.dtype, np.timedelta64):
        elapsed = values / np.timedelta64(1, time_unit)  # type: ignore[call-overload]
        return np.asarray(elapsed, dtype=np.float64), {"units": time_unit}
    if values.dtype.kind in "iuf":
        return values.astype(np.float64), {}
    first = values.reshape(-1)[0] if values.size else None
    if type(first).__module__.split(".")[0] == "cftime":
        raise TypeError(
            f"the time coordinate holds cftime dates ({type(first).__name__}, a non-standard "
            "calendar); expected numbers, datetime64 or timedelta64: open the file with "
            "decode_times=False, or use uqdyn.forecast.load_data, which reads cftime dates"
        )
    raise TypeError(
        f"the time coordinate has dtype {values.dtype}; expected numbers, datetime64 or timedelta64"
    )


def standardize_dataset(
    dataset: xr.Dataset,
    variables: Sequence[str] | None = None,
    *,
    dims: Mapping[str, str | None] | None = None,
    layout: Layout = "auto",
    time_unit: str = "D",
) -> xr.Dataset:
    """Rename, check and order a user's dataset into the layout the task builder expects.

    Parameters
    ----------
    dataset:
        Any ``xarray.Dataset`` (lazy or in memory).
    variables:
        Names of the state variables in channel order; default: every data variable that has
        the time dim, except CF cell bounds (``time_bnds``, variables named by a ``bounds``
        attribute).
    dims:
        uqdyn dim name -> the dataset's dim name, e.g. ``{"sample": "member", "y": "lat",
        "x": "lon"}``; unnamed dims keep uqdyn's name. ``{"sample": None}``: the data is a
        single trajectory (a length-1 ``sample`` dim is added); ``{"dim": None}``: every
        variable is a scalar series ``(sample, time)`` and the variables become the
        components of ``dim``.
    layout:
        ``"grid"`` (``(sample, time, y, x)``, optional ``channel``), ``"vector"``
        (``(sample, time, dim)`` or ``(sample, time)``) or ``"auto"`` (grid when a variable
        has the y and x dims).
    time_unit:
        Unit of elapsed time for datetime coordinates, a numpy code: ``"W"``, ``"D"``,
        ``"h"``, ``"m"``, ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``.

    Returns
    -------
    xarray.Dataset
        Gridded: the variables with dims ``(sample, time, [channel,] y, x)`` and float
        coordinates ``time``, ``y``, ``x``. Vector: one variable per input with dims
        ``(sample, time, dim)``, or, for scalar series, a single variable ``state`` with the
        input names as its ``dim`` coordinate. Attribute ``state_variables`` lists them in
        channel order. Still lazy when the input was.

    Raises
    ------
    ValueError
        Naming the variable, its dims and the missing dim, with a suggestion of the file's
        dim it was probably meant to be (``difflib`` close matches and common aliases such as
        ``lat``/``lon``); also on unexpected extra dims and non-increasing times. NaN values
        are allowed (missing points); infinite values are refused by :func:`load_task_sampler`.
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"dataset is a {type(dataset).__name__}; expected an xarray.Dataset")
    if layout not in ("auto", "grid", "vector"):
        raise ValueError(f"layout={layout!r}; expected 'auto', 'grid' or 'vector'")
    mapping = _resolve_dims(dims)
    time_name = mapping.get("time") or "time"
    if isinstance(variables, str):
        raise TypeError(f"variables={variables!r} is a string; expected a list of names")
    if time_unit not in _TIME_UNITS:
        raise ValueError(f"time_unit={time_unit!r}; expected one of {list(_TIME_UNITS)}")
    if variables is None:
        bounds = {str(v.attrs["bounds"]) for v in dataset.variables.values() if "bounds" in v.attrs}
        names = [
            str(n)
            for n, v in dataset.data_vars.items()
            if time_name in v.dims
            and str(n) not in bounds
            and not str(n).endswith(("_bnds", "_bounds"))
        ]
        if not names:
            listing = {str(n): v.dims for n, v in dataset.data_vars.items()}
            all_dims = [str(d) for d in dataset.dims]
            close = _suggest(time_name, all_dims)
            hint = (
                f"; did you mean {close[0]!r}? pass dims={{'time': {close[0]!r}}}"
                if close
                else "; name the time dim with dims={'time': '<name>'}"
            )
            raise ValueError(
                f"no data variable has the time dim {time_name!r}; variables and dims: "
                f"{listing}{hint}"
            )
    else:
        names = [str(n) for n in variables]
        if not names:
            raise ValueError("variables is empty; expected at least one variable name")
        for n in names:
            if n not in dataset.data_vars:
                close = difflib.get_close_matches(n, [str(v) for v in dataset.data_vars], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"variable {n!r} is not in the dataset{hint}; available: "
                    f"{list(dataset.data_vars)}"
                )
    kinds = {n: _layout_of(n, tuple(map(str, dataset[n].dims)), mapping, layout) for n in names}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"variables mix layouts {kinds}; expected all gridded (y, x) or all vector series"
        )
    kind = next(iter(kinds.values()))
    required = _GRID if kind == "grid" else _VECTOR
    optional = ("channel",) if kind == "grid" else ()
    scalar = False
    if kind == "vector":
        dim_name = mapping.get("dim", "dim")
        has_dim = [dim_name is not None and dim_name in dataset[n].dims for n in names]
        if "dim" in mapping and dim_name is None:
            scalar = True
        elif not any(has_dim):
            scalar = True  # every variable a scalar series: they become the components
        elif not all(has_dim):
            raise ValueError(
                f"variables {[n for n, h in zip(names, has_dim, strict=True) if not h]} have no "
                f"dim {dim_name!r} but {[n for n, h in zip(names, has_dim, strict=True) if h]} "
                "do; expected all vector (sample, time, dim) or all scalar (sample, time) series"
            )
    rename: dict[str, str] = {}
    for n in names:
        var_dims = tuple(str(d) for d in dataset[n].dims)
        missing: list[tuple[str, str]] = []
        for want in (*required, *optional):
            if want == "dim" and scalar:
                continue
            file_name = mapping.get(want, want)
            if file_name is None:  # sample=None: added below
                if want in var_dims:
                    raise ValueError(
                        f"dims['{want}']=None but variable {n!r} has a dim {want!r} {var_dims}; "
                        f"expected no {want!r} dim"
                    )
                continue
            if file_name in var_dims:
                if file_name != want:
                    if want in var_dims:
                        raise ValueError(
                            f"dims maps {want!r} to {file_name!r} but variable {n!r} also has a "
                            f"dim {want!r} {var_dims}; expected one of them"
                        )
                    rename[file_name] = want
            elif want not in optional:
                missing.append((want, file_name))
        if missing:
            claimed = {mapping.get(d, d) for d in (*required, *optional)}
            extra = [d for d in var_dims if d not in claimed]
            raise _missing_dims_error(n, var_dims, missing, kind, extra)
        allowed = {mapping.get(d, d) for d in (*required, *optional)}
        extra = [d for d in var_dims if d not in allowed]
        if extra:
            raise ValueError(
                f"variable {n!r} has dims {var_dims} with unexpected {extra}; the {kind} layout "
                f"takes {required}{' (+ channel)' if optional else ''}: select or reduce the "
                f"others first (e.g. dataset.isel({extra[0]}=0)) or map them with dims="
            )
    out = dataset[names].rename(rename) if rename else dataset[names]
    if mapping.get("sample", "sample") is None:
        out = out.expand_dims("sample")
    if scalar:
        stacked = xr.concat([out[n] for n in names], dim="dim").assign_coords(dim=names)
        out = xr.Dataset({"state": stacked})
        names = ["state"]
    order = (*required[:2], *(("channel",) if kind == "grid" else ()), *required[2:])
    out = out.transpose(*[d for d in order if d in out.dims])
    for c in ("sample", "y", "x"):
        if c in out.dims and c not in out.coords:
            out = out.assign_coords({c: np.arange(out.sizes[c])})
    time_values = (
        np.asarray(out["time"].values)
        if "time" in out.coords
        else np.arange(out.sizes["time"], dtype=np.float64)
    )
    times, time_attrs = _float_times(time_values, time_unit)
    if times.size > 1 and not bool((np.diff(times) > 0).all()):
        raise ValueError(
            f"the time coordinate {time_name!r} is not strictly increasing; expected increasing "
            "times (sort with dataset.sortby)"
        )
    out = out.assign_coords(time=("time", times, time_attrs))
    for c in ("y", "x"):
        if c in out.dims:
            coord = np.asarray(out[c].values)
            if coord.dtype.kind not in "iuf":
                raise TypeError(f"coordinate {c!r} has dtype {coord.dtype}; expected numbers")
            out = out.assign_coords({c: (c, coord.astype(np.float64), dict(out[c].attrs))})
    out.attrs = dict(dataset.attrs)
    out.attrs["state_variables"] = ",".join(names)
    return out


def split_dataset(
    dataset: xr.Dataset,
    fractions: Sequence[float] = (0.8, 0.2),
    *,
    dim: Literal["sample", "time"] = "sample",
    seed: int | None = 0,
) -> tuple[xr.Dataset, ...]:
    """Split a standardized dataset into parts (train / validation / test ...).

    Parameters
    ----------
    dataset:
        Output of :func:`standardize_dataset` (dims ``sample`` and ``time``).
    fractions:
        Positive fractions summing to 1; part ``k`` gets ``round`` of its share of the
        ``dim`` entries (the last part the rest), at least one each.
    dim:
        ``"sample"``: whole trajectories, shuffled with ``seed`` (``None``: in order);
        ``"time"``: consecutive time blocks in order (earlier times train, later test), for
        a single long record.
    seed:
        Seed of the shuffle of samples.

    Returns
    -------
    tuple of xarray.Dataset
        One per fraction, each still lazy when the input was.
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"dataset is a {type(dataset).__name__}; expected an xarray.Dataset")
    if dim not in ("sample", "time"):
        raise ValueError(f"dim={dim!r}; expected 'sample' or 'time'")
    if dim not in dataset.dims:
        raise ValueError(
            f"dataset has dims {tuple(dataset.dims)} and no {dim!r}; expected the output of "
            "standardize_dataset"
        )
    shares = np.asarray([float(f) for f in fractions], dtype=np.float64)
    if shares.ndim != 1 or shares.size < 1 or (shares <= 0).any() or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(f"fractions={tuple(fractions)}; expected positive numbers summing to 1")
    n = int(dataset.sizes[dim])
    if n < shares.size:
        raise ValueError(f"dim {dim!r} has {n} entries; cannot split into {shares.size} parts")
    counts = np.maximum(np.round(shares * n).astype(int), 1)
    counts[-1] = n - counts[:-1].sum()
    while counts[-1] < 1:  # rounding gave the last part nothing: take from the largest
        counts[int(np.argmax(counts[:-1]))] -= 1
        counts[-1] += 1
    if dim == "sample" and seed is not None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    else:
        order = np.arange(n)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    parts = []
    for k in range(shares.size):
        index = np.sort(order[bounds[k] : bounds[k + 1]])
        parts.append(dataset.isel({dim: index}))
    return tuple(parts)


def load_task_sampler(
    source: str | os.PathLike[str] | xr.Dataset,
    variables: Sequence[str] | None = None,
    *,
    dims: Mapping[str, str | None] | None = None,
    layout: Layout = "auto",
    time_unit: str = "D",
    dtype: torch.dtype = torch.float32,
    **sampler_kwargs: Any,
) -> TaskSampler:
    """Open (if a path), standardize and load users' data into a :class:`TaskSampler`.

    Only the selected variables are read (computed, when lazy), converted by
    :func:`~uqdyn.data.dataset_to_tensor` and handed to
    :meth:`TaskSampler.from_dataset <uqdyn.data.TaskSampler.from_dataset>`.

    Parameters
    ----------
    source:
        A netCDF/zarr path (opened by :func:`open_user_dataset`) or an ``xarray.Dataset``
        (raw, or already standardized, e.g. one part of :func:`split_dataset`).
    variables, dims, layout, time_unit:
        As in :func:`standardize_dataset`.
    dtype:
        Floating dtype of the task tensors.
    **sampler_kwargs:
        Passed to :class:`TaskSampler` (``setting``, ``num_context``, ``num_target``,
        ``window``, ...).

    Returns
    -------
    TaskSampler
        Over values ``(sample, time, D)`` (inputs ``x = (t,)``) or ``(sample, time, C, H, W)``
        (inputs ``x = (t, y, x)`` in the file's coordinate units).

    Raises
    ------
    ValueError
        On missing or misnamed dims (see :func:`standardize_dataset`) and on infinite
        values (naming the variable and the count). NaN values are accepted: they mark
        points that were not observed (land, gaps, dropped samples), which the sampler
        never draws (see :class:`~uqdyn.data.TaskSampler`); a window without enough
        observed points raises there.
    """
    if isinstance(source, xr.Dataset):
        dataset = source
    elif isinstance(source, (str, os.PathLike)):
        dataset = open_user_dataset(source)
    else:
        raise TypeError(
            f"source is a {type(source).__name__}; expected a path or an xarray.Dataset"
        )
    if dtype not in (torch.float16, torch.float32, torch.float64):
        raise TypeError(f"dtype={dtype!r}; expected torch.float16, float32 or float64")
    standard = standardize_dataset(
        dataset, variables, dims=dims, layout=layout, time_unit=time_unit
    ).load()
    for name, var in standard.data_vars.items():
        bad = int(np.count_nonzero(np.isinf(np.asarray(var.values, dtype=np.float64))))
        if bad:
            raise ValueError(
                f"variable {name!r} has {bad} infinite value(s) of {var.size}; expected finite "
                "values, or NaN where nothing was observed (e.g. dataset.where(np.isfinite("
                "dataset)) turns them into missing points)"
            )
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return TaskSampler.from_dataset(standard.astype(numpy_dtype), **sampler_kwargs)
