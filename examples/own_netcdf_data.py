"""Load your own netCDF data as neural-process tasks, fit a CNP, and score its forecasts.

The script first writes a small netCDF file the way other tools do: a sea-surface
temperature anomaly ``sst_anomaly(member, time, lat, lon)`` with datetime times every 6
hours and CF attributes (a travelling wave of random amplitude and phase per member, plus
noise). It then uses only the file:

1. :func:`uqdyn.data.open_user_dataset` opens it (lazily when dask is installed);
2. :func:`uqdyn.data.standardize_dataset` maps the file's dims to uqdyn's
   (``member -> sample``, ``lat -> y``, ``lon -> x``), checks them (a misnamed dim gives an
   error naming it and suggesting the right one) and turns times into elapsed days;
3. :func:`uqdyn.data.split_dataset` holds out whole members for testing;
4. :func:`uqdyn.data.load_task_sampler` cuts forecasting tasks (context in the first part of
   an 8-step window, targets later) with inputs ``x = (t, lat, lon)``;
5. a CNP is fitted and scored by CRPS and interval coverage against climatology.

Usage: ``python examples/own_netcdf_data.py [--quick] [--path FILE.nc] [--seed S]``;
``--quick`` trains briefly (a smoke test, numbers not converged). Without ``--path`` the file
goes to a temporary directory that is removed at the end. ``uqdyn.seed_everything(seed)``
fixes the CNP's initial weights, so every run prints the same numbers.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import uqdyn
from uqdyn.calibration import coverage
from uqdyn.data import load_task_sampler, open_user_dataset, split_dataset, standardize_dataset
from uqdyn.models.neural_process import CNP
from uqdyn.predictive import Normal
from uqdyn.train import fit


def write_example_file(path: Path, members: int = 16, seed: int = 0) -> None:
    """A CF-style netCDF file of ``sst_anomaly(member, time, lat, lon)`` in kelvin."""
    rng = np.random.default_rng(seed)
    time = np.datetime64("2024-03-01T00") + np.arange(24) * np.timedelta64(6, "h")
    days = np.arange(24) * 0.25
    lat = np.linspace(-10.0, 10.0, 8)
    lon = np.linspace(150.0, 172.0, 12)
    amp = rng.uniform(0.5, 1.5, size=(members, 1, 1, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(members, 1, 1, 1))
    travel = 2 * np.pi * (lon[None, None, None, :] - 2.0 * days[None, :, None, None]) / 20.0
    field = amp * np.sin(travel + phase) * np.exp(-((lat[None, None, :, None] / 8.0) ** 2))
    field = field + 0.05 * rng.standard_normal(field.shape)
    ds = xr.Dataset(
        {
            "sst_anomaly": (
                ("member", "time", "lat", "lon"),
                field.astype(np.float32),
                {"units": "K", "long_name": "sea surface temperature anomaly"},
            )
        },
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"Conventions": "CF-1.8", "title": "synthetic SST anomalies"},
    )
    ds.to_netcdf(path)


def main(quick: bool = False, path: str | None = None, seed: int = 0) -> dict[str, float]:
    """Write (if needed), load, fit and score; returns the scores printed."""
    torch.set_num_threads(1)
    uqdyn.seed_everything(seed)  # the CNP's initial weights; fit() seeds its own draws
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(path) if path else Path(tmp) / "sst_anomaly.nc"
        if not file.exists():
            write_example_file(file)
        raw = open_user_dataset(file)
        data = standardize_dataset(
            raw, ["sst_anomaly"], dims={"sample": "member", "y": "lat", "x": "lon"}
        )
        # centre and scale the coordinates so the network sees inputs of order one
        data = data.assign_coords(y=data.y / 10.0, x=(data.x - float(data.x.mean())) / 10.0)
        train_ds, test_ds = split_dataset(data, (0.75, 0.25), seed=0)
        tasks = {"setting": "extrapolation", "window": 8, "num_context": (30, 80), "num_target": 60}
        train = load_task_sampler(train_ds, **tasks)
        test = load_task_sampler(test_ds, **tasks)
        raw.close()

    model = CNP(x_dim=3, y_dim=1, width=64)
    steps = 300 if quick else 3000
    fit(
        model,
        lambda g: train.sample(16, generator=g),
        steps=steps,
        lr=2e-3,
        device="cpu",
        seed=seed,
        progress=False,
    )
    task = test.sample(128, generator=1)
    with torch.no_grad():
        forecast = model.predict(task)  # Normal (128, 60, 1)
    mask = task.mask_target.unsqueeze(-1)
    cover = coverage(task.y_target, forecast, [0.5, 0.9], mask=mask)
    clim = Normal(
        train.values.mean().expand_as(task.y_target), train.values.std().expand_as(task.y_target)
    )
    scores = {
        "cnp_crps": float(forecast.crps(task.y_target)[mask.expand_as(task.y_target)].mean()),
        "climatology_crps": float(clim.crps(task.y_target)[mask.expand_as(task.y_target)].mean()),
        "cnp_coverage_50": float(cover[0]),
        "cnp_coverage_90": float(cover[1]),
    }
    print(
        f"train members {train.values.shape[0]}, test members {test.values.shape[0]}, "
        f"values {tuple(train.values.shape[1:])}; {steps} training steps"
    )
    print(f"CRPS {scores['cnp_crps']:.4f} K (climatology {scores['climatology_crps']:.4f} K)")
    print(
        f"coverage of the 50% / 90% intervals: {scores['cnp_coverage_50']:.3f} / "
        f"{scores['cnp_coverage_90']:.3f}"
    )
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (smoke test)")
    parser.add_argument("--path", default=None, help="netCDF file to write/read")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and training")
    args = parser.parse_args()
    main(quick=args.quick, path=args.path, seed=args.seed)
