"""Reading and aligning forecast and observation archives (netCDF or zarr), lazily.

A forecast archive holds one of three kinds of forecast of a variable ``NAME``:

* an **ensemble**: ``NAME`` with a member dim (``member`` by default);
* **quantiles**: ``NAME`` with a ``quantile`` dim whose coordinate holds the levels in (0, 1);
* a **Gaussian**: two variables ``NAME_mean`` and ``NAME_std`` (other names through
  ``mean_var`` / ``std_var``).

Observations are the variable ``NAME`` (or ``obs_var``) of a second archive. Both are opened
with dask chunks (``xarray.open_dataset(..., chunks={})`` / ``xarray.open_zarr``), so nothing
is read before a slice of it is scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["Forecast", "open_archive", "read_forecast", "read_observations", "align"]

KINDS = ("ensemble", "quantile", "normal")


@dataclass
class Forecast:
    """A forecast read from an archive.

    Attributes
    ----------
    kind:
        ``"ensemble"``, ``"quantile"`` or ``"normal"``.
    data:
        The members (``kind="ensemble"``, member dim ``core_dim``), the quantiles
        (``"quantile"``, dim ``core_dim`` with the levels as coordinate) or the mean
        (``"normal"``).
    std:
        The standard deviation (``"normal"`` only, same dims as ``data``), else None.
    core_dim:
        The member or quantile dim; None for a Gaussian.
    """

    kind: str
    data: xr.DataArray
    std: xr.DataArray | None = None
    core_dim: str | None = None

    @property
    def batch_dims(self) -> tuple[str, ...]:
        """The dims of the forecast without the member or quantile dim."""
        return tuple(str(d) for d in self.data.dims if d != self.core_dim)

    def isel(self, **indexers: Any) -> Forecast:
        """The forecast at positional ``indexers`` over batch dims."""
        std = None if self.std is None else self.std.isel(**indexers)
        return Forecast(self.kind, self.data.isel(**indexers), std, self.core_dim)

    def load(self) -> Forecast:
        """The same forecast read into memory."""
        std = None if self.std is None else self.std.load()
        return Forecast(self.kind, self.data.load(), std, self.core_dim)


def _is_zarr(path: Path) -> bool:
    if path.suffix == ".zarr":
        return True
    return path.is_dir() and any(
        (path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
    )


def open_archive(path: str | os.PathLike[str], what: str) -> xr.Dataset:
    """Open a netCDF file or a zarr store lazily (dask chunks of the file's own layout).

    ``what`` (``"forecasts"``, ``"observations"``) names the archive in error messages.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} is a {type(path).__name__}; expected a path")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} {os.fspath(p)!r} does not exist; expected a netCDF file or zarr")
    try:
        if _is_zarr(p):
            return xr.open_zarr(p, chunks={})
        if p.is_dir():
            raise ValueError(
                f"{what} {os.fspath(p)!r} is a directory but not a zarr store; expected a "
                "netCDF file or zarr"
            )
        return xr.open_dataset(p, chunks={})
    except ValueError:
        raise
    except (OSError, KeyError, TypeError) as err:
        raise ValueError(
            f"{what} {os.fspath(p)!r} cannot be read as netCDF or zarr ({err}); expected a "
            "netCDF file or zarr store"
        ) from None


def _variable(ds: xr.Dataset, name: str, what: str) -> xr.DataArray:
    if name not in ds.data_vars:
        names = ", ".join(sorted(str(v) for v in ds.data_vars)) or "none"
        raise ValueError(f"{what} have no variable {name!r}; variables: {names}")
    return ds[name]


def read_forecast(
    ds: xr.Dataset,
    var: str,
    *,
    member_dim: str = "member",
    mean_var: str | None = None,
    std_var: str | None = None,
) -> Forecast:
    """The forecast of ``var`` in ``ds``: ensemble, quantiles or Gaussian (see the module).

    A Gaussian is read when ``mean_var``/``std_var`` are given, or when ``var`` is missing
    and ``var_mean`` and ``var_std`` exist. Otherwise ``var`` must have the member dim or a
    ``quantile`` dim.
    """
    if (
        mean_var is not None
        or std_var is not None
        or (var not in ds.data_vars and f"{var}_mean" in ds.data_vars)
    ):
        mean = _variable(ds, mean_var or f"{var}_mean", "forecasts")
        std = _variable(ds, std_var or f"{var}_std", "forecasts")
        if set(mean.dims) != set(std.dims):
            raise ValueError(
                f"forecast mean has dims {mean.dims} and std has {std.dims}; expected the same"
            )
        return Forecast("normal", mean, std.transpose(*mean.dims), None)
    da = _variable(ds, var, "forecasts")
    if member_dim in da.dims:
        if da.sizes[member_dim] < 2:
            raise ValueError(
                f"forecasts {var!r} have {da.sizes[member_dim]} member on {member_dim!r}; "
                "expected at least 2"
            )
        return Forecast("ensemble", da, None, member_dim)
    if "quantile" in da.dims:
        if "quantile" not in da.coords:
            raise ValueError(
                f"forecasts {var!r} have a 'quantile' dim without coordinate; expected the "
                "quantile levels as its coordinate"
            )
        levels = np.asarray(da["quantile"].values, dtype=float)
        if not ((levels > 0) & (levels < 1)).all() or (np.diff(levels) <= 0).any():
            raise ValueError(
                f"forecasts {var!r} have quantile levels {levels.tolist()}; expected "
                "increasing levels strictly inside (0, 1)"
            )
        return Forecast("quantile", da, None, "quantile")
    raise ValueError(
        f"forecasts {var!r} have dims {tuple(str(d) for d in da.dims)}, none of them the member "
        f"dim {member_dim!r} or 'quantile'; expected an ensemble (--member-dim), quantiles, "
        f"or Gaussian parameters {var}_mean / {var}_std"
    )


def read_observations(ds: xr.Dataset, var: str) -> xr.DataArray:
    """The observed variable ``var`` of ``ds``."""
    return _variable(ds, var, "observations")


def _label(value: Any) -> str:
    """A coordinate label as text: dates in ISO form, time offsets as ``1D``, ``6h``, ..."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="auto"))
    if isinstance(value, np.timedelta64):
        units: tuple[tuple[Any, str], ...] = (("D", "D"), ("h", "h"), ("m", "min"), ("s", "s"))
        for unit, suffix in units:
            step = np.timedelta64(1, unit)
            if value % step == np.timedelta64(0, "s"):
                return f"{int(value // step)}{suffix}"
        return str(value)
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _check_same_labels(dim: str, fc: np.ndarray, obs: np.ndarray) -> None:
    if fc.shape != obs.shape:
        raise ValueError(
            f"{dim} differs: forecasts have {fc.size} labels, observations {obs.size}; expected "
            "the same labels"
        )
    if fc.dtype.kind != obs.dtype.kind and not (fc.dtype.kind in "iuf" and obs.dtype.kind in "iuf"):
        raise ValueError(
            f"{dim} differs: forecasts have {fc.dtype} labels, observations {obs.dtype}; "
            "expected the same labels"
        )
    same = fc == obs
    if not bool(np.all(same)):
        i = int(np.argmin(same))
        raise ValueError(
            f"{dim} differs: forecasts {_label(fc[i])}, observations {_label(obs[i])} at index "
            f"{i}; expected the same labels"
        )


def align(
    forecast: Forecast,
    obs: xr.DataArray,
    *,
    valid_time: bool = False,
    init_dim: str = "init_time",
    lead_dim: str = "lead",
    time_dim: str = "time",
) -> tuple[Forecast, xr.DataArray]:
    """Align observations with the forecast (lazily; labels only are read).

    With ``valid_time`` the forecast has ``init_dim`` and ``lead_dim`` coordinates and the
    observations a ``time_dim``: the observation of each forecast is taken at
    ``time = init + lead`` (every valid time must be observed). Then every dim the two share
    must carry identical labels (else ``ValueError: DIM differs: forecasts A, observations B
    at index i``), and the observations may have no dim the forecast lacks.

    Returns
    -------
    The forecast (unchanged) and the observations with dims ordered as the forecast's batch
    dims (those it has).
    """
    if valid_time:
        for dim in (init_dim, lead_dim):
            if dim not in forecast.data.coords:
                raise ValueError(
                    f"--valid-time needs a {dim!r} coordinate in the forecasts; they have "
                    f"coords {tuple(str(c) for c in forecast.data.coords)}"
                )
        if time_dim not in obs.dims:
            raise ValueError(
                f"--valid-time needs a {time_dim!r} dim in the observations; they have dims "
                f"{tuple(str(d) for d in obs.dims)}"
            )
        init = forecast.data[init_dim]
        lead = forecast.data[lead_dim]
        if init.dtype.kind == "M" and lead.dtype.kind != "m":
            raise ValueError(
                f"{lead_dim} has {lead.dtype} labels and {init_dim} datetimes; expected time "
                f"offsets (timedelta64) in {lead_dim} to add to {init_dim}"
            )
        try:
            valid = init + lead
        except TypeError:
            raise ValueError(
                f"{init_dim} ({init.dtype}) + {lead_dim} ({lead.dtype}) is not defined; "
                "expected datetimes and time offsets (or numbers)"
            ) from None
        times = obs[time_dim].values
        wanted = np.asarray(valid.values).ravel()
        found = np.isin(wanted, times)
        if not found.all():
            i = int(np.argmin(found))
            raise ValueError(
                f"valid time {_label(wanted[i])} (= {init_dim} + {lead_dim}) is not in the "
                f"observations' {time_dim}; expected observations at every valid time"
            )
        obs = obs.sel({time_dim: valid}).drop_vars(time_dim, errors="ignore")
    batch = forecast.batch_dims
    extra = [str(d) for d in obs.dims if d not in batch]
    if extra:
        raise ValueError(
            f"observations have dims {extra} that the forecasts lack (forecast dims "
            f"{batch}); expected observations on the forecast's dims"
            + ("" if valid_time else " (use --valid-time for init_time + lead forecasts)")
        )
    for obs_dim in obs.dims:
        d = str(obs_dim)
        if d in forecast.data.coords and d in obs.coords:
            _check_same_labels(d, np.asarray(forecast.data[d].values), np.asarray(obs[d].values))
        elif forecast.data.sizes[d] != obs.sizes[d]:
            raise ValueError(
                f"{d} differs: forecasts have {forecast.data.sizes[d]} labels, observations "
                f"{obs.sizes[d]}; expected the same labels"
            )
    order = [d for d in batch if d in obs.dims]
    return forecast, obs.transpose(*order)
