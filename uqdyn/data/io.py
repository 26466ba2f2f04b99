"""Conversion between xarray datasets of trajectories and torch tensors; netCDF files.

Layout of trajectory datasets (as written by :func:`uqdyn.data.simulate_dataset`):

* gridded systems: one data variable per field with dims ``(sample, time, y, x)``;
* ODE systems: one variable (``state``) with dims ``(sample, time, dim)``;
* the sampled physical parameters: variables with dim ``(sample,)``;
* the attribute ``state_variables``: the comma-separated names of the state variables in
  channel order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor

__all__ = ["dataset_to_tensor", "tensor_to_dataset", "save_dataset", "load_dataset"]

GRID_DIMS = ("sample", "time", "y", "x")
VECTOR_DIMS = ("sample", "time", "dim")


def _state_variables(ds: xr.Dataset) -> list[str]:
    listed = ds.attrs.get("state_variables")
    if isinstance(listed, str) and listed:
        return listed.split(",")
    return [str(name) for name, var in ds.data_vars.items() if {"sample", "time"} <= set(var.dims)]


def dataset_to_tensor(
    dataset: xr.Dataset,
    variables: Sequence[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Stack state variables of a trajectory dataset into one tensor.

    Parameters
    ----------
    dataset:
        Gridded variables with dims ``(sample, time, y, x)`` (optionally with a ``channel``
        dim after ``time``) or vector variables with dims ``(sample, time, dim)``.
    variables:
        Names in channel order; default: the ``state_variables`` attribute, else every
        variable with ``sample`` and ``time`` dims.
    dtype, device:
        Of the result (default: the variables' dtype, CPU).

    Returns
    -------
    Tensor ``(sample, time, C, H, W)`` for gridded variables, ``(sample, time, D)`` for
    vector variables (several vector variables are concatenated along ``D``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from uqdyn.data import dataset_to_tensor
    >>> ds = xr.Dataset({"u": (("sample", "time", "y", "x"), np.zeros((2, 3, 4, 5)))})
    >>> dataset_to_tensor(ds, ["u"]).shape
    torch.Size([2, 3, 1, 4, 5])
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"dataset is a {type(dataset).__name__}; expected an xarray.Dataset")
    names = list(variables) if variables is not None else _state_variables(dataset)
    if isinstance(variables, str):
        raise TypeError(f"variables={variables!r} is a string; expected a list of names")
    if not names:
        raise ValueError(
            f"no state variables found among {list(dataset.data_vars)}; expected variables with "
            "dims (sample, time, y, x) or (sample, time, dim)"
        )
    parts = []
    kind = None
    for name in names:
        if name not in dataset.data_vars:
            raise ValueError(
                f"variable {name!r} is not in the dataset; available: {list(dataset.data_vars)}"
            )
        var = dataset[name]
        dims = set(var.dims)
        expected: tuple[str, ...]
        if {"y", "x"} <= dims:
            expected = ("sample", "time", "channel", "y", "x") if "channel" in dims else GRID_DIMS
            this = "grid"
        elif "dim" in dims:
            expected, this = VECTOR_DIMS, "vector"
        else:
            missing = [d for d in ("y", "x") if d not in dims]
            raise ValueError(
                f"variable {name!r} has dims {var.dims}; expected (sample, time, y, x) "
                f"(missing {missing}) or (sample, time, dim) (missing ['dim'])"
            )
        missing = [d for d in expected if d not in dims]
        extra = [d for d in var.dims if d not in expected]
        if missing or extra:
            raise ValueError(
                f"variable {name!r} has dims {var.dims}; expected {expected} "
                f"(missing {missing}, unexpected {extra})"
            )
        if kind is not None and this != kind:
            raise ValueError(f"variable {name!r} is {this} but earlier variables are {kind}")
        kind = this
        array = np.asarray(var.transpose(*expected).values)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"variable {name!r} has dtype {array.dtype}; expected numbers")
        if kind == "grid" and "channel" not in dims:
            array = array[:, :, None]
        parts.append(torch.tensor(array))
    out = torch.cat(parts, dim=2)
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    return out.to(device=device, dtype=dtype)


def tensor_to_dataset(
    values: Tensor,
    times: Tensor | Sequence[float],
    *,
    variables: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Tensor] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Wrap trajectories in an ``xarray.Dataset`` (the inverse of :func:`dataset_to_tensor`).

    Parameters
    ----------
    values:
        ``(sample, time, C, H, W)`` or ``(sample, time, D)``.
    times:
        ``(time,)``.
    variables:
        ``C`` names for gridded values (default ``state_0``, ...), or one name for vector
        values (default ``state``).
    coords:
        Extra coordinates, e.g. ``{"y": (H,), "x": (W,)}`` (default: grid indices).
    parameters:
        Per-sample physical parameters, each ``(sample,)``.
    attrs:
        Dataset attributes (must be netCDF-safe: numbers, strings, 1-d numeric arrays).

    Returns
    -------
    xarray.Dataset
    """
    if not isinstance(values, Tensor):
        raise TypeError(f"values is a {type(values).__name__}; expected a torch.Tensor")
    if values.dim() not in (3, 5):
        raise ValueError(
            f"values has shape {tuple(values.shape)}; expected (sample, time, C, H, W) or "
            "(sample, time, D)"
        )
    n_samples, n_times = int(values.shape[0]), int(values.shape[1])
    if isinstance(times, Tensor):
        times_np = times.detach().cpu().numpy().astype(np.float64)
    else:
        times_np = np.array(times, dtype=np.float64)
    if times_np.shape != (n_times,):
        raise ValueError(f"times has shape {times_np.shape}; expected ({n_times},)")
    array = values.detach().cpu().numpy()
    coord_values: dict[str, Any] = {"sample": np.arange(n_samples), "time": times_np}
    data: dict[str, Any] = {}
    if values.dim() == 5:
        n_channels, height, width = values.shape[2:]
        names = (
            list(variables) if variables is not None else [f"state_{c}" for c in range(n_channels)]
        )
        if len(names) != n_channels:
            raise ValueError(
                f"variables has {len(names)} names; expected {n_channels} (one per channel)"
            )
        coord_values["y"] = np.arange(height)
        coord_values["x"] = np.arange(width)
        for c, name in enumerate(names):
            data[name] = (GRID_DIMS, array[:, :, c])
    else:
        names = list(variables) if variables is not None else ["state"]
        if len(names) != 1:
            raise ValueError(f"variables={names!r}; expected one name for vector values")
        coord_values["dim"] = np.arange(values.shape[2])
        data[names[0]] = (VECTOR_DIMS, array)
    for key, value in (coords or {}).items():
        coord = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.array(value)
        if key in coord_values and coord.shape != coord_values[key].shape:
            raise ValueError(
                f"coordinate {key!r} has shape {coord.shape}; expected {coord_values[key].shape}"
            )
        coord_values[key] = coord
    for key, value in (parameters or {}).items():
        param = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.array(value)
        if param.shape != (n_samples,):
            raise ValueError(f"parameter {key!r} has shape {param.shape}; expected ({n_samples},)")
        data[key] = (("sample",), param)
    ds = xr.Dataset(data, coords=coord_values)
    ds.attrs["state_variables"] = ",".join(names)
    for key, value in (attrs or {}).items():
        ds.attrs[key] = value
    return ds


_SAFE_SCALARS = (str, int, float, np.integer, np.floating)


def _check_attrs(attrs: Mapping[str, Any], where: str) -> None:
    for key, value in attrs.items():
        if isinstance(value, bool) or isinstance(value, np.bool_):
            raise TypeError(f"{where} attribute {key!r} is a bool; netCDF needs int 0/1 instead")
        if isinstance(value, _SAFE_SCALARS):
            continue
        if isinstance(value, (list, tuple, np.ndarray)):
            arr = np.asarray(value)
            if arr.ndim == 1 and arr.dtype.kind in "iuf":
                continue
        raise TypeError(
            f"{where} attribute {key!r} = {value!r} is not netCDF-safe; expected a number, a "
            "string or a 1-d numeric array"
        )


def _engine(engine: str | None) -> Literal["netcdf4", "h5netcdf"]:
    if engine == "netcdf4":
        return "netcdf4"
    if engine == "h5netcdf":
        return "h5netcdf"
    if engine is not None:
        raise ValueError(f"engine={engine!r}; expected 'netcdf4', 'h5netcdf' or None")
    try:
        import netCDF4  # noqa: F401

        return "netcdf4"
    except ImportError:
        pass
    try:
        import h5netcdf  # noqa: F401

        return "h5netcdf"
    except ImportError:
        raise ImportError(
            "writing and reading netCDF needs netCDF4 or h5netcdf; install them with "
            "pip install 'uqdyn[io]'"
        ) from None


def save_dataset(
    dataset: xr.Dataset, path: str | os.PathLike[str], *, engine: str | None = None
) -> None:
    """Write ``dataset`` to a netCDF-4 file, checking first that all attributes are netCDF-safe.

    Parameters
    ----------
    dataset:
        Any dataset; data variables keep their dtype (booleans are stored as integers and
        restored on load).
    path:
        Destination file.
    engine:
        ``"netcdf4"`` or ``"h5netcdf"``; default ``netcdf4`` when installed.
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"dataset is a {type(dataset).__name__}; expected an xarray.Dataset")
    _check_attrs(dataset.attrs, "dataset")
    for name, var in dataset.variables.items():
        _check_attrs(var.attrs, f"variable {name!r}")
    dataset.to_netcdf(os.fspath(path), engine=_engine(engine), format="NETCDF4")


def load_dataset(path: str | os.PathLike[str], *, engine: str | None = None) -> xr.Dataset:
    """Read a netCDF file written by :func:`save_dataset` fully into memory (file closed)."""
    if not os.path.exists(path):
        raise ValueError(f"path {os.fspath(path)!r} does not exist; expected a netCDF file")
    return xr.load_dataset(path, engine=_engine(engine))
