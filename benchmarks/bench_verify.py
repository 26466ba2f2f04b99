"""Verify a large ensemble archive lazily: uqdyn (dask) beside xskillscore, in one run.

Writes a seeded float32 zarr archive of ensemble forecasts ``fc (member, lead, lat, lon)``
and observations ``obs (lead, lat, lon)`` of about ``--size-gb`` GB (numpy, one lead at a
time, uncompressed), then scores it -- CRPS of the ensemble (standard estimator) by lead,
cos-latitude weighted mean over lat/lon -- with uqdyn's lazy path (``dask_aware`` around
``crps_ensemble``) and with ``xskillscore.crps_ensemble(..., dim=["lat", "lon"],
weights=...)``, both on dask's threaded scheduler. Each run is its own subprocess, the
tools taking turns; a run reports its wall seconds and its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``), printed beside the 1-min load average at its start.
``agrees`` compares each run's scores with the first uqdyn run's (max relative difference).

    python benchmarks/bench_verify.py --size-gb 4
    python benchmarks/bench_verify.py --size-gb 0.05 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

MEMBERS, N_LAT, N_LON = 20, 256, 512


def write_archive(path: str, size_gb: float, seed: int = 0) -> dict:
    """Write the archive (one lead per chunk and per numpy draw); returns its description."""
    import zarr

    per_lead = (MEMBERS + 1) * N_LAT * N_LON * 4
    n_lead = max(1, round(size_gb * 1e9 / per_lead))
    root = zarr.open_group(path, mode="w", zarr_format=3)
    fc = root.create_array(
        "fc",
        shape=(MEMBERS, n_lead, N_LAT, N_LON),
        chunks=(MEMBERS, 1, N_LAT, N_LON),
        dtype="float32",
        compressors=None,
        dimension_names=("member", "lead", "lat", "lon"),
    )
    obs = root.create_array(
        "obs",
        shape=(n_lead, N_LAT, N_LON),
        chunks=(1, N_LAT, N_LON),
        dtype="float32",
        compressors=None,
        dimension_names=("lead", "lat", "lon"),
    )
    lat = root.create_array("lat", shape=(N_LAT,), dtype="float64", dimension_names=("lat",))
    lat[:] = np.linspace(-89.5, 89.5, N_LAT)
    lead = root.create_array("lead", shape=(n_lead,), dtype="int64", dimension_names=("lead",))
    lead[:] = np.arange(n_lead)
    rng = np.random.default_rng(seed)
    bias = np.linspace(-0.5, 0.5, N_LAT, dtype=np.float32)[:, None]
    for k in range(n_lead):
        spread = np.float32(1.0 + k / max(n_lead, 1))
        truth = rng.standard_normal((N_LAT, N_LON), dtype=np.float32) * spread
        obs[k] = truth
        members = rng.standard_normal((MEMBERS, N_LAT, N_LON), dtype=np.float32) * spread
        fc[:, k] = members + bias
    zarr.consolidate_metadata(path)
    return {"n_lead": n_lead, "bytes": per_lead * n_lead}


def _score(tool: str, path: str, out: str) -> None:
    """One run in this process: score lazily, compute, write the result and the measurements."""
    import dask
    import xarray as xr

    start = time.perf_counter()
    ds = xr.open_zarr(path)
    weights = np.cos(np.deg2rad(ds.lat)).load()
    if tool == "uqdyn":
        from uqdyn.scoring._lazy import dask_aware
        from uqdyn.scoring.crps_ensemble import crps_ensemble

        lazy = dask_aware({"obs": None, "forecasts": "member_dim"})(crps_ensemble)
        score = lazy(ds.obs, ds.fc, dim=["lat", "lon"], weights=weights)
    else:
        import xskillscore as xs

        score = xs.crps_ensemble(
            ds.obs, ds.fc, member_dim="member", dim=["lat", "lon"], weights=weights
        )
    with dask.config.set(scheduler="threads"):
        values = score.compute().values
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "rss": rss, "values": values.astype(float).tolist()}, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="archive size (GB)")
    parser.add_argument("--path", default=None, help="archive path (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    parser.add_argument("--repeats", type=int, default=2, help="runs per tool, alternating")
    parser.add_argument("--run", choices=["uqdyn", "xskillscore"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _score(args.run, args.path, args.out)
        return
    tmp = tempfile.mkdtemp(prefix="bench_verify_")
    path = args.path or os.path.join(tmp, "archive.zarr")
    reuse = args.path is not None and os.path.exists(path)
    try:
        if reuse:
            import xarray as xr

            ds = xr.open_zarr(path)
            desc = {"n_lead": ds.sizes["lead"], "bytes": ds.fc.nbytes + ds.obs.nbytes}
            written = "reused"
        else:
            t0 = time.perf_counter()
            desc = write_archive(path, args.size_gb)
            written = f"written in {time.perf_counter() - t0:.1f} s"
        print(
            f"archive: fc (member {MEMBERS}, lead {desc['n_lead']}, lat {N_LAT}, lon {N_LON}) "
            f"float32 + obs, {desc['bytes'] / 1e9:.2f} GB, {written}; {os.cpu_count()} cores"
        )
        rows, reference = [], None
        for r in range(args.repeats):
            order = ("uqdyn", "xskillscore") if r % 2 == 0 else ("xskillscore", "uqdyn")
            for tool in order:
                out = os.path.join(tmp, f"{tool}-{r}.json")
                load = os.getloadavg()[0]
                cmd = [sys.executable, __file__, "--run", tool, "--path", path, "--out", out]
                subprocess.run(cmd, check=True)
                with open(out) as f:
                    res = json.load(f)
                values = np.asarray(res["values"])
                if reference is None and tool == "uqdyn":
                    reference = values
                rows.append((r, tool, res["seconds"], res["rss"], load, values))
        print("\n| run | tool | seconds | peak RSS (GB) | load (1 min) | agrees |")
        print("|---|---|---|---|---|---|")
        for r, tool, sec, rss, load, values in rows:
            diff = float(np.max(np.abs(values / reference - 1.0)))
            agree = f"{'yes' if diff < 1e-5 else 'NO'} ({diff:.1e})"
            print(f"| {r} | {tool} | {sec:.1f} | {rss / 1e9:.2f} | {load:.2f} | {agree} |")
    finally:
        if not args.keep:
            shutil.rmtree(path if not reuse else tmp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
