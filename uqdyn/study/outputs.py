"""Files of a study: forecasts as CF-style netCDF, scores as CSV and netCDF, atomic writes."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

import uqdyn
from uqdyn.predictive import Ensemble, Predictive

from .base import StudyData
from .evaluate import SCALAR_SCORES

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "forecast_dataset",
    "write_netcdf",
    "write_forecasts",
    "write_scores",
    "scores_table",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give a temporary file (0600) or directory (0700) the usual permissions under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _public(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_netcdf(
    dataset: xr.Dataset, path: str | os.PathLike[str], *, compress: bool = True
) -> None:
    """Write ``dataset`` to netCDF through a temporary file (no half-written file on error).

    Uses the netCDF4 engine (zlib compression of the data variables) when installed, else
    xarray's default engine.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _public(tmp)
        try:
            import netCDF4  # noqa: F401

            encoding = (
                {name: {"zlib": True, "complevel": 4} for name in dataset.data_vars}
                if compress
                else None
            )
            dataset.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        except ImportError:
            dataset.to_netcdf(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def forecast_dataset(
    data: StudyData,
    name: str,
    variants: dict[str, Predictive],
    quantiles: Sequence[float],
    *,
    description: str = "",
) -> xr.Dataset:
    """The test forecasts of one model as a CF-style dataset.

    Parameters
    ----------
    data:
        The study data (observations, dims, coordinates).
    name:
        Model name.
    variants:
        ``{calibration: Predictive}`` with ``batch_shape`` equal to ``data.obs_test.shape``.
    quantiles:
        Quantile levels stored for every calibration.

    Returns
    -------
    xarray.Dataset with ``observation (case, <lead>, *space)``, ``mean`` and ``stddev``
    ``(calibration, case, ...)``, ``forecast_quantile (calibration, quantile, case, ...)`` and,
    when the raw forecast is an ensemble, ``ensemble_member (member, case, ...)``.
    """
    dims = data.dims
    levels = torch.tensor([float(q) for q in quantiles], dtype=torch.float64)
    cals = list(variants)
    with torch.no_grad():
        means = np.stack([_np(p.mean) for p in variants.values()])
        stds = np.stack([_np(p.stddev) for p in variants.values()])
        quants = np.stack([_np(p.quantile(levels.to(p.dtype))) for p in variants.values()])
    units = data.units
    var_attrs = {"units": units}
    ds = xr.Dataset(
        {
            "observation": (
                dims,
                _np(data.obs_test),
                {"long_name": data.long_name, **var_attrs},
            ),
            "mean": (
                ("calibration", *dims),
                means,
                {"long_name": f"predictive mean of {data.long_name}", **var_attrs},
            ),
            "stddev": (
                ("calibration", *dims),
                stds,
                {"long_name": f"predictive standard deviation of {data.long_name}", **var_attrs},
            ),
            "forecast_quantile": (
                ("calibration", "quantile", *dims),
                quants,
                {"long_name": f"predictive quantiles of {data.long_name}", **var_attrs},
            ),
        },
        coords={
            dims[0]: (
                dims[0],
                np.arange(data.obs_test.shape[0]) if data.case_values is None else data.case_values,
                {
                    "long_name": "forecast origin (issue time)"
                    if dims[0] == "origin"
                    else "test case index"
                },
            ),
            "calibration": ("calibration", cals, {"long_name": "recalibration applied"}),
            "quantile": (
                "quantile",
                levels.numpy(),
                {"long_name": "quantile level (probability)", "units": "1"},
            ),
        },
    )
    for dim in dims[1:]:
        attrs = {"units": "1"}
        values = np.asarray(data.coords[dim])
        if dim == "lead":
            attrs["long_name"] = "lead time after the forecast origin (steps or offset)"
        elif dim in ("lead_time", "time"):
            attrs["long_name"] = (
                "time after the last context frame" if dim == "lead_time" else "observation time"
            )
            attrs["axis"] = "T"
        elif dim in ("y", "x"):
            attrs["long_name"] = f"{dim} coordinate of the grid (domain units)"
            attrs["axis"] = dim.upper()
        elif values.dtype.kind in "US":
            attrs = {"long_name": f"{dim} name"}
        else:
            attrs["long_name"] = "state component index"
        ds = ds.assign_coords({dim: (dim, values, attrs)})
    if data.valid_times is not None:
        ds = ds.assign_coords(
            valid_time=(dims[:2], data.valid_times, {"long_name": "time the target verifies at"})
        )
    if data.kind == "vector" and data.component_names is not None and len(dims) > 2:
        names = list(data.component_names)
        if len(names) == ds.sizes[dims[-1]]:
            ds = ds.assign_coords(
                component_name=(dims[-1], names, {"long_name": "state component"})
            )
    raw = variants.get("raw")
    if isinstance(raw, Ensemble):
        ds["ensemble_member"] = (
            ("member", *dims),
            _np(raw.members),
            {"long_name": f"ensemble members of {data.long_name}", **var_attrs},
        )
        ds = ds.assign_coords(
            member=("member", np.arange(raw.n_members), {"long_name": "ensemble member index"})
        )
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "title": f"{data.title}: test forecasts of model {name}",
            "source": f"uqdyn {uqdyn.__version__}",
            "model": name,
            "predictive": getattr(raw, "kind", "predictive"),
            "comment": description,
            "featureType": "grid" if data.kind == "field" else "timeSeries",
        }
    )
    return ds


def write_forecasts(
    out_dir: Path,
    data: StudyData,
    predictives: dict[str, dict[str, Predictive]],
    quantiles: Sequence[float],
) -> list[Path]:
    """Write ``forecasts/<model>.nc`` for every model; returns the paths."""
    paths = []
    descriptions = {f.name: f.description for f in data.forecasts}
    for name, variants in predictives.items():
        ds = forecast_dataset(data, name, variants, quantiles, description=descriptions[name])
        path = out_dir / "forecasts" / f"{name}.nc"
        write_netcdf(ds, path)
        paths.append(path)
    return paths


def scores_table(scores: xr.Dataset) -> list[dict[str, Any]]:
    """One row per (model, calibration) with the scalar scores, fit time and scale."""
    rows = []
    for model in scores["model"].values:
        for cal in scores["calibration"].values:
            row: dict[str, Any] = {"model": str(model), "calibration": str(cal)}
            for name in SCALAR_SCORES:
                row[name] = float(scores[name].sel(model=model, calibration=cal))
                for side in ("lower", "upper"):
                    key = f"{name}_{side}"
                    if key in scores:
                        row[key] = float(scores[key].sel(model=model, calibration=cal))
            row["variance_scale"] = float(scores["variance_scale"].sel(model=model))
            row["fit_seconds"] = float(scores["fit_seconds"].sel(model=model))
            rows.append(row)
    return rows


def write_scores(out_dir: Path, scores: xr.Dataset) -> tuple[Path, Path]:
    """Write ``scores.csv`` (one row per model and calibration) and ``scores.nc``."""
    rows = scores_table(scores)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    csv_path, nc_path = out_dir / "scores.csv", out_dir / "scores.nc"
    atomic_write_text(csv_path, buffer.getvalue())
    write_netcdf(scores, nc_path)
    return csv_path, nc_path
