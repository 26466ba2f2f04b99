"""ZarrWindowDataset: windows streamed from a chunked zarr store without loading it whole.

The memory test writes a seeded ~151 MB float32 store (two variables, 144 samples of 8
frames of 128 x 128, one sample per chunk, uncompressed so the size on disk is the size in
memory), then in a fresh subprocess iterates one epoch of disjoint windows through a
``DataLoader`` and checks that the peak RSS grows by less than a third of the store over the
baseline after the imports and one item, and that the epoch's sum and sum of squares equal
those dask computes chunk by chunk (so every value of the store was read once).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader

dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from uqdyn.data import TrajectoryWindows, ZarrWindowDataset, dataset_to_tensor  # noqa: E402
from uqdyn.train import fit  # noqa: E402

GRID = ("sample", "time", "y", "x")


def _small_store(path, dtype=np.float32):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((5, 9, 6, 7)).astype(dtype)
    v = rng.standard_normal((5, 9, 6, 7)).astype(dtype)
    ds = xr.Dataset({"u": (GRID, u), "v": (GRID, v)}, coords={"time": np.arange(9) * 0.1})
    # v stored with its dims in another order: the dataset must transpose each read
    ds["v"] = ds["v"].transpose("time", "x", "sample", "y")
    ds.attrs["state_variables"] = "u,v"
    ds.chunk({"sample": 1}).to_zarr(str(path), mode="w", consolidated=False)
    return ds


@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("stride", [1, 3])
def test_items_equal_in_memory_windows(tmp_path, chunks, stride):
    ds = _small_store(tmp_path / "s.zarr")
    memory = TrajectoryWindows(
        dataset_to_tensor(ds.transpose(*GRID), ["u", "v"]), 3, 2, stride=stride
    )
    streamed = ZarrWindowDataset(
        tmp_path / "s.zarr", input_steps=3, target_steps=2, stride=stride, chunks=chunks
    )
    assert streamed.variables == ["u", "v"]
    assert len(streamed) == len(memory) == 5 * ((9 - 5) // stride + 1)
    for k in [*range(len(memory)), -1]:
        (xi, yi), (xm, ym) = streamed[k], memory[k]
        assert xi.dtype == torch.float32 and xi.shape == (3, 2, 6, 7) and yi.shape == (2, 2, 6, 7)
        assert torch.equal(xi, xm) and torch.equal(yi, ym)
    # a DataLoader batch: (batch, time, C, H, W), time right after batch
    xb, yb = next(iter(DataLoader(streamed, batch_size=4)))
    assert xb.shape == (4, 3, 2, 6, 7) and yb.shape == (4, 2, 2, 6, 7)


def test_float64_vector_variables_and_an_open_dataset(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 6, 2))
    b = rng.standard_normal((3, 6, 2))
    dims = ("traj", "t", "dim")
    ds = xr.Dataset({"a": (dims, a), "b": (dims, b)})
    path = tmp_path / "v.zarr"
    ds.chunk({"traj": 1}).to_zarr(str(path), consolidated=False)
    opened = xr.open_zarr(str(path), consolidated=False)
    for store in (path, opened):
        windows = ZarrWindowDataset(
            store,
            ["b", "a"],
            input_steps=2,
            target_steps=3,
            sample_dim="traj",
            time_dim="t",
            dtype=torch.float64,
        )
        want = np.concatenate([b, a], axis=2)
        assert len(windows) == 3 * 2
        x, y = windows[3]  # sample 1, start 1
        assert x.dtype == torch.float64
        assert torch.equal(x, torch.from_numpy(want[1, 1:3]))
        assert torch.equal(y, torch.from_numpy(want[1, 3:6]))


def test_pickles_without_its_open_store(tmp_path):
    _small_store(tmp_path / "s.zarr")
    windows = ZarrWindowDataset(str(tmp_path / "s.zarr"), ["v"], input_steps=1, target_steps=1)
    windows[0]  # opens the store
    blob = pickle.dumps(windows)
    assert len(blob) < 10_000  # no data and no open store travel to a worker
    again = pickle.loads(blob)
    assert again._ds is None
    assert all(torch.equal(p, q) for p, q in zip(again[7], windows[7], strict=True))


def test_arguments_are_checked_by_name(tmp_path):
    path = tmp_path / "s.zarr"
    _small_store(path)
    ok = {"input_steps": 2}
    cases = [
        ({"store": 3}, TypeError, "store"),
        ({"store": tmp_path / "missing.zarr"}, ValueError, "store"),
        ({"input_steps": 0}, ValueError, "input_steps"),
        ({"target_steps": 1.5}, TypeError, "target_steps"),
        ({"stride": 0}, ValueError, "stride"),
        ({"input_steps": 8, "target_steps": 2}, ValueError, "input_steps \\+ target_steps"),
        ({"variables": "u"}, TypeError, "variables"),
        ({"variables": ["w"]}, ValueError, "variables: 'w' is not in the store"),
        ({"variables": []}, ValueError, "variables"),
        ({"sample_dim": "member"}, ValueError, "sample_dim"),
        ({"time_dim": "sample"}, ValueError, "time_dim"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"chunks": 3}, TypeError, "chunks"),
        ({"chunks": "store"}, ValueError, "chunks"),
    ]
    for extra, error, match in cases:
        kwargs = {"store": path, **ok, **extra}
        with pytest.raises(error, match=match):
            ZarrWindowDataset(**kwargs)
    windows = ZarrWindowDataset(path, **ok)
    with pytest.raises(IndexError, match="out of range"):
        windows[len(windows)]


def test_mismatched_variables_are_refused(tmp_path):
    ds = xr.Dataset(
        {
            "u": (GRID, np.zeros((2, 4, 3, 3))),
            "w": (("sample", "time", "y", "x", "level"), np.zeros((2, 4, 3, 3, 2))),
            "q": (("sample", "time", "level"), np.zeros((2, 4, 2))),
            "s": (("sample", "time", "dim"), np.zeros((2, 4, 3))),
            "p": (("sample",), np.zeros(2)),
        }
    )
    ds.to_zarr(str(tmp_path / "m.zarr"), consolidated=False)
    for names, match in [
        (["w"], "unexpected dims \\['level'\\]"),
        (["q"], "expected \\(sample, time, y, x\\)"),
        (["u", "s"], "vector but earlier variables are grid"),
        (["p"], "missing \\['time'\\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            ZarrWindowDataset(tmp_path / "m.zarr", names, input_steps=1)


class _NextFrame(nn.Module):
    """Tiny Trainable: the next frame from the last input frame, mean squared error."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def loss(self, batch):
        inputs, targets = batch
        return (self.conv(inputs[:, -1]) - targets[:, 0]).square().mean()


def test_fit_trains_on_a_dataloader_of_the_store(tmp_path):
    _small_store(tmp_path / "s.zarr")
    windows = ZarrWindowDataset(tmp_path / "s.zarr", input_steps=2, target_steps=1)
    loader = DataLoader(windows, batch_size=8, shuffle=True)
    torch.manual_seed(0)
    model = _NextFrame(2)
    result = fit(model, loader, steps=12, lr=1e-2, device="cpu", progress=False, seed=0)
    assert result.steps_done == 12 and result.stopped == "completed"
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses))


# -- a store larger than the memory the epoch may use ------------------------------------

N, T, H, W = 144, 8, 128, 128
VARIABLES = ("u", "v")

_EPOCH = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch.utils.data import DataLoader
    from uqdyn.data import ZarrWindowDataset
    torch.set_num_threads(1)
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    windows = ZarrWindowDataset(sys.argv[1], ["u", "v"], input_steps=3, target_steps=1,
                                stride=4, chunks=json.loads(sys.argv[2]))
    windows[0]  # store opened, one chunk read: the baseline is a warm process
    base = peak()
    total = squares = 0.0
    items = 0
    for inputs, targets in DataLoader(windows, batch_size=8, num_workers=0):
        for frames in (*inputs, *targets):  # item by item: small float64 temporaries
            frames = frames.double()
            total += frames.sum().item()
            squares += frames.square_().sum().item()
        items += inputs.shape[0]
    print(json.dumps({"base": base, "peak": peak(), "total": total, "squares": squares,
                      "items": items}))
    """
)


def _write_big_store(path: str) -> int:
    import dask.array as dsa

    rng = dsa.random.default_rng(0)
    chunks = (1, T, H, W)
    ds = xr.Dataset(
        {
            v: (GRID, rng.standard_normal((N, T, H, W), chunks=chunks, dtype=np.float32))
            for v in VARIABLES
        }
    )
    encoding = {v: {"compressors": None} for v in VARIABLES}  # size on disk = size in memory
    with dask.config.set(scheduler="synchronous"):
        ds.to_zarr(path, mode="w", consolidated=False, encoding=encoding)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("streaming") / "big.zarr")
    return path, _write_big_store(path)


@pytest.mark.parametrize("chunks", [None, {}])
def test_an_epoch_streams_a_store_larger_than_its_memory(big_store, chunks):
    path, size = big_store
    assert size > 150e6
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _EPOCH, path, json.dumps(chunks)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.split("\n")[-2])
    assert out["items"] == N * (T // 4)
    grown = out["peak"] - out["base"]
    assert grown < size / 3, (
        f"peak RSS grew by {grown / 1e6:.1f} MB for a {size / 1e6:.0f} MB store"
    )
    # the epoch's disjoint windows tile the store: its sums are the store's, by dask
    ds = xr.open_zarr(path, consolidated=False)
    with dask.config.set(scheduler="synchronous"):
        data = [ds[v].data.astype(np.float64) for v in VARIABLES]
        total = float(sum(d.sum() for d in data).compute())
        squares = float(sum((d * d).sum() for d in data).compute())
    assert out["total"] == pytest.approx(total, rel=0, abs=1e-6)
    assert out["squares"] == pytest.approx(squares, rel=1e-12)
