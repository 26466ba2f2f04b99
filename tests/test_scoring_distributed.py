"""Lazy scoring of a chunked zarr archive on a dask.distributed cluster with a memory cap.

Setup: an ~81 MiB float32 archive (10 members, 16 leads, 256 x 512 grid, chunks of one
lead and 64 latitudes, ~1.3 MiB) is scored by two single-threaded workers. Each worker's
``memory_limit`` is the peak RSS (VmHWM) of a warmed-up process (python + torch + dask + zarr after
scoring one lead, measured in a subprocess, ~370 MiB here) plus 56 MiB; spilling and pausing
are off and the nanny restarts a worker above 95 % of its limit. So no worker can hold more
than ~35 MiB of the archive beyond its baseline: the test passes only if the score streams
through the chunks, which it checks by the workers' pids being unchanged (no restart) and
their peak RSS staying below the limit. The result equals the eager score.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from uqdyn.scoring._lazy import dask_aware  # noqa: E402
from uqdyn.scoring.crps_ensemble import crps_ensemble  # noqa: E402

lazy_crps_ensemble = dask_aware({"obs": None, "forecasts": "member_dim"})(crps_ensemble)

_WARM = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr, dask, distributed
    from uqdyn.scoring._lazy import dask_aware
    from uqdyn.scoring.crps_ensemble import crps_ensemble
    f = dask_aware({"obs": None, "forecasts": "member_dim"})(crps_ensemble)
    d = xr.open_zarr(sys.argv[1], consolidated=False).isel(lead=slice(0, 1))
    w = xr.DataArray(np.cos(np.deg2rad(d.lat.values)), dims="lat", coords={"lat": d.lat.values})
    with dask.config.set(scheduler="synchronous"):
        f(d.obs, d.fc, dim=["lat", "lon"], weights=w).compute()
    print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")))
    """
)

HEADROOM = 56 * 2**20


def _write_archive(path: str) -> tuple[int, np.ndarray]:
    import dask.array as dsa

    rng = dsa.random.default_rng(0)
    m, n_lead, n_lat, n_lon = 10, 16, 256, 512
    fc = rng.standard_normal((m, n_lead, n_lat, n_lon), chunks=(m, 1, 64, n_lon), dtype=np.float32)
    obs = rng.standard_normal((n_lead, n_lat, n_lon), chunks=(1, 64, n_lon), dtype=np.float32)
    lat = np.linspace(-89.5, 89.5, n_lat)
    ds = xr.Dataset(
        {"fc": (("member", "lead", "lat", "lon"), fc), "obs": (("lead", "lat", "lon"), obs)},
        coords={"lat": lat, "lead": np.arange(n_lead)},
    )
    with dask.config.set(scheduler="threads", num_workers=2):
        ds.to_zarr(path, mode="w", consolidated=False)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return size, lat


def _peak_rss() -> int:
    """Peak resident memory of this process's own address space, in bytes.

    ``VmHWM`` rather than ``ru_maxrss``: on Linux ``ru_maxrss`` survives ``execve``, so a
    worker spawned from a large pytest process would report the parent's size.
    """
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_distributed_lazy_crps_streams_an_archive_larger_than_the_worker_headroom(tmp_path):
    path = str(tmp_path / "archive.zarr")
    size, lat = _write_archive(path)
    assert size > 1.4 * HEADROOM  # the archive does not fit in a worker's headroom
    warm = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _WARM, path],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    limit = int(warm.stdout.split()[-1]) + HEADROOM
    weights = xr.DataArray(np.cos(np.deg2rad(lat)), dims="lat", coords={"lat": lat})
    config = {
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": 0.95,
    }
    with (
        dask.config.set(config),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit=limit,
            dashboard_address=None,
            env={"OMP_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        ds = xr.open_zarr(path, consolidated=False)
        lazy = lazy_crps_ensemble(ds.obs, ds.fc, dim=["lat", "lon"], weights=weights)
        out = client.compute(lazy).result()
        assert client.run(os.getpid) == pids  # no worker was restarted for memory
        peaks = client.run(_peak_rss)
    assert max(peaks.values()) < 0.95 * limit
    assert out.dims == ("lead",) and out.dtype == np.float32
    loaded = xr.open_zarr(path, consolidated=False).load()
    score = crps_ensemble(loaded.obs, loaded.fc).values.astype(np.float64)
    w = np.broadcast_to(weights.values[None, :, None], score.shape)
    eager = (w * score).sum((1, 2)) / w.sum((1, 2))
    np.testing.assert_allclose(out.values, eager, rtol=1e-5)  # float32 sums, other order
