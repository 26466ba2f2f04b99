"""uqdyn.train.fit under torchrun: DistributedDataParallel over two CPU processes (gloo).

The two-process runs happen in one ``torchrun`` launch of this file (``_worker`` below), which
saves every rank's results; the test process compares them with one process training on the
global batches (the two ranks' local batches together) in float64.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uqdyn.predictive import Normal
from uqdyn.train import fit, load_checkpoint, save_checkpoint

WORLD = 2
SEED = 3
ROW_KEYS = ("step", "loss", "grad_norm", "lr", "val_loss", "val_crps", "val_nll")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------------- models and data
class _Regression(nn.Module):
    """Linear regression with a Gaussian predictive; ``unused`` never enters the loss."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))
        self.unused = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return (self(x) - y).square().mean()

    def predict_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        x, y = batch
        mean = self(x)
        return Normal(mean, torch.full_like(mean, 0.5)), y, None


class _Noisy(nn.Module):
    """An MLP with dropout whose loss adds sampled noise: resuming needs every rank's RNG."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 1))
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return (self(x) - y - 0.05 * torch.randn_like(y)).square().mean()

    def predict_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        mean = self(batch[0])
        return Normal(mean, torch.full_like(mean, 0.5)), batch[1], None


def _regression_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([[1.0, -0.5], [2.0, 0.0], [-1.0, 0.3]], dtype=torch.float64)
    return x, x @ w + 0.2 + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _split(n: int, size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _regression_data(n, seed)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]


def _cat(*batches: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    return x, torch.sin(x[:, :1]) + 0.5 * x[:, 1:]


def _loaders() -> tuple[DataLoader, DataLoader]:
    x, y = _regression_data(24, 11)
    train = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    xv, yv = _regression_data(10, 12)
    return train, DataLoader(TensorDataset(xv, yv), batch_size=3)


def _shuffled_val(shuffle: bool = True) -> DataLoader:
    return DataLoader(TensorDataset(*_regression_data(20, 13)), batch_size=5, shuffle=shuffle)


# The options of each scenario, shared by the worker and the single-process reference.
LIST_OPTIONS: dict[str, Any] = {
    "steps": 6,
    "lr": 0.05,
    "grad_clip": 1.0,
    "val_every": 2,
    "monitor": "val_crps",
    "device": "cpu",
    "progress": False,
    "seed": SEED,
}
LOADER_OPTIONS: dict[str, Any] = {
    "steps": 7,
    "optimizer": "sgd",
    "lr": 0.1,
    "val_every": 3,
    "device": "cpu",
    "progress": False,
    "seed": SEED,
}
LBFGS_OPTIONS: dict[str, Any] = {
    "steps": 4,
    "optimizer": "lbfgs",
    "lr": 1.0,
    "device": "cpu",
    "progress": False,
    "seed": SEED,
}
SHUFFLED_VAL_OPTIONS: dict[str, Any] = {
    "steps": 2,
    "val_every": 1,
    "device": "cpu",
    "progress": False,
    "seed": SEED,
}
NOISY_OPTIONS: dict[str, Any] = {
    "steps": 9,
    "lr": 1e-2,
    "scheduler": "cosine",
    "val_data": _draw,
    "val_batches": 3,  # not a multiple of the world size: rank 0 scores 2 draws, rank 1 one
    "val_every": 3,
    "monitor": "val_crps",
    "device": "cpu",
    "progress": False,
    "seed": SEED,
}


def _rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: row[key] for key in ROW_KEYS} for row in history]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- the torchrun worker
def _worker(out: Path) -> None:
    """Every scenario in both processes; each rank saves what the test compares."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    results: dict[str, Any] = {}

    # A list of batches: rank r trains on batches r::2, validates on its share of 3 batches.
    # Each rank starts from other weights: DDP broadcasts rank 0's.
    model = _Regression(seed=10 + rank)
    res = fit(model, _split(32, 8, 0), val_data=_split(15, 5, 1), **LIST_OPTIONS)
    results["list"] = {"history": _rows(res.history), "state": _state(model)}
    results["list"]["best"] = (res.best_step, res.best_score)

    # After fit, DDP's gradient hooks are gone: a backward gives this rank's own gradient.
    batch = _split(32, 8, 0)[rank]
    model.zero_grad()
    model.loss(batch).backward()
    own = torch.autograd.grad(model.loss(batch), [model.weight])[0]
    results["hooks_gone"] = bool(torch.equal(model.weight.grad, own))

    # A shuffling DataLoader (DistributedSampler, set_epoch) and a validation DataLoader;
    # then the same fit interrupted after 4 steps and resumed from other weights.
    train, val = _loaders()
    model = _Regression(seed=20)
    res = fit(model, train, val_data=val, **LOADER_OPTIONS)
    results["loader"] = {"history": _rows(res.history), "state": _state(model)}
    ckpt = out / "ckpt-loader"
    fit(
        _Regression(seed=20),
        train,
        val_data=val,
        checkpoint_dir=ckpt,
        **LOADER_OPTIONS | {"steps": 4},
    )
    resumed = _Regression(seed=30 + rank)
    res = fit(resumed, train, val_data=val, checkpoint_dir=ckpt, resume=True, **LOADER_OPTIONS)
    results["loader_resumed"] = {"history": _rows(res.history), "state": _state(resumed)}

    # L-BFGS on a full batch split in halves: every rank must run the same line search.
    model = _Regression(seed=40)
    fit(model, _split(20, 10, 2), **LBFGS_OPTIONS)
    results["lbfgs"] = {"state": _state(model)}

    # A callable (per-rank generator), dropout and sampled noise (per-rank RNG), a crash in
    # step 7 on every rank, and a resume from the checkpoint of step 6.
    model = _Noisy(seed=50)
    res = fit(model, _draw, **NOISY_OPTIONS)
    results["noisy"] = {"history": _rows(res.history), "state": _state(model)}
    calls = {"n": 0}

    def crash(m: nn.Module, b: Any) -> torch.Tensor:
        calls["n"] += m.training
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash")
        return m.loss(b)

    ckpt = out / "ckpt-noisy"
    try:
        fit(
            _Noisy(seed=50),
            _draw,
            loss_fn=crash,
            checkpoint_dir=ckpt,
            checkpoint_every=2,
            **NOISY_OPTIONS,
        )
    except KeyboardInterrupt:
        results["crashed"] = True
    resumed = _Noisy(seed=60 + rank)
    res = fit(resumed, _draw, checkpoint_dir=ckpt, checkpoint_every=2, resume=True, **NOISY_OPTIONS)
    results["noisy_resumed"] = {"history": _rows(res.history), "state": _state(resumed)}

    # A shuffling validation DataLoader, with another global RNG state on each rank: the
    # ranks still split the same batches between them.
    torch.manual_seed(100 + rank)
    model = _Regression(seed=80)
    res = fit(model, _split(32, 8, 0), val_data=_shuffled_val(), **SHUFFLED_VAL_OPTIONS)
    results["shuffled_val"] = {"history": _rows(res.history), "state": _state(model)}

    # Progress lines come from rank 0 alone.
    fit(
        _Regression(seed=70),
        _split(32, 8, 0),
        steps=2,
        device="cpu",
        progress=True,
        desc="ddp-progress-check",
    )
    torch.save(results, out / f"rank{rank}.pt")


# ---------------------------------------------------------------------- the test process
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Launch this file with ``torchrun --nproc_per_node=2`` once; every rank's results."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={WORLD}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        __file__,
        str(out),
    ]
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return {"ranks": ranks, "stderr": run.stderr, "out": out, "seconds": seconds}


def _assert_close_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [row["step"] for row in got] == [row["step"] for row in want]
    for a, b in zip(got, want, strict=True):
        for key in ROW_KEYS:
            if b[key] is None:
                assert a[key] is None, key
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-14), (a["step"], key)


def _assert_close_state(got: dict[str, torch.Tensor], model: nn.Module) -> None:
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=1e-10, atol=1e-13, msg=name)


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bitwise the same history and state (two ranks, or a resumed and a whole run)."""
    assert a["history"] == b["history"]
    for name, value in b["state"].items():
        assert torch.equal(a["state"][name], value), name


def test_the_ranks_agree_bitwise(two_ranks: dict[str, Any]) -> None:
    first, second = two_ranks["ranks"]
    for name in ("list", "loader", "loader_resumed", "noisy", "noisy_resumed"):
        _assert_same(first[name], second[name])
    assert first["hooks_gone"] and second["hooks_gone"]


def test_list_of_batches_equals_one_process_on_the_global_batch(two_ranks: dict[str, Any]) -> None:
    local = _split(32, 8, 0)
    reference = _Regression(seed=10)  # rank 0's weights: DDP broadcasts them
    res = fit(
        reference,
        [_cat(local[0], local[1]), _cat(local[2], local[3])],
        val_data=_split(15, 5, 1),
        **LIST_OPTIONS,
    )
    got = two_ranks["ranks"][0]["list"]
    _assert_close_rows(got["history"], _rows(res.history))
    _assert_close_state(got["state"], reference)
    assert got["best"][0] == res.best_step
    assert got["best"][1] == pytest.approx(res.best_score, rel=1e-10)
    assert torch.equal(got["state"]["unused"], torch.zeros(1, dtype=torch.float64))
    # The comparison can fail: the weights moved far from their start.
    assert not torch.allclose(got["state"]["weight"], _Regression(seed=10).weight.detach())


def test_dataloader_uses_a_distributed_sampler_per_epoch(two_ranks: dict[str, Any]) -> None:
    train, val = _loaders()
    x, y = train.dataset.tensors  # type: ignore[attr-defined]
    steps, per_rank = LOADER_OPTIONS["steps"], 12 // 4
    global_batches = []
    for epoch in range(-(-steps // per_rank)):
        # DistributedSampler(shuffle=True, seed=SEED) after set_epoch(epoch).
        g = torch.Generator().manual_seed(SEED + epoch)
        order = torch.randperm(len(x), generator=g).tolist()
        shares = [order[r::WORLD] for r in range(WORLD)]
        for k in range(per_rank):
            index = [i for share in shares for i in share[4 * k : 4 * k + 4]]
            global_batches.append((x[index], y[index]))
    reference = _Regression(seed=20)
    res = fit(reference, global_batches[:steps], val_data=val, **LOADER_OPTIONS)
    got = two_ranks["ranks"][0]["loader"]
    _assert_close_rows(got["history"], _rows(res.history))
    _assert_close_state(got["state"], reference)


def test_a_shuffling_validation_loader_is_split_alike_on_every_rank(
    two_ranks: dict[str, Any],
) -> None:
    # Batches of 5 out of 20 points: every partition gives the same metrics.
    local = _split(32, 8, 0)
    reference = _Regression(seed=80)
    res = fit(
        reference,
        [_cat(local[0], local[1]), _cat(local[2], local[3])],
        val_data=_shuffled_val(shuffle=False),
        **SHUFFLED_VAL_OPTIONS,
    )
    got = two_ranks["ranks"][0]["shuffled_val"]
    _assert_close_rows(got["history"], _rows(res.history))
    _assert_same(got, two_ranks["ranks"][1]["shuffled_val"])


def test_lbfgs_equals_one_process_on_the_full_batch(two_ranks: dict[str, Any]) -> None:
    reference = _Regression(seed=40)
    fit(reference, [_cat(*_split(20, 10, 2))], **LBFGS_OPTIONS)
    _assert_close_state(two_ranks["ranks"][0]["lbfgs"]["state"], reference)


def test_resumed_two_process_runs_equal_uninterrupted_ones(two_ranks: dict[str, Any]) -> None:
    for rank in two_ranks["ranks"]:
        _assert_same(rank["loader_resumed"], rank["loader"])
        assert rank["crashed"]
        _assert_same(rank["noisy_resumed"], rank["noisy"])
    ckpt = load_checkpoint(two_ranks["out"] / "ckpt-noisy")  # weights_only, from rank 0
    assert ckpt["step"] == NOISY_OPTIONS["steps"]
    per_rank = ckpt["distributed"]["rng"]
    assert ckpt["distributed"]["world_size"] == WORLD and len(per_rank) == WORLD
    assert torch.equal(ckpt["rng"]["torch_cpu"], per_rank[0]["torch_cpu"])
    # Each rank draws its own batches and its own noise.
    assert not torch.equal(per_rank[0]["data"]["generator"], per_rank[1]["data"]["generator"])
    assert not torch.equal(per_rank[0]["torch_cpu"], per_rank[1]["torch_cpu"])
    assert sorted(p.name for p in (two_ranks["out"] / "ckpt-noisy").iterdir()) == ["last.pt"]


def test_progress_is_reported_by_rank_zero_only(two_ranks: dict[str, Any]) -> None:
    lines = [line for line in two_ranks["stderr"].splitlines() if "ddp-progress-check" in line]
    assert sum("started" in line for line in lines) == 1, lines
    assert two_ranks["seconds"] < 60


# ---------------------------------------------------------------------- one process
def _clear_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_distributed_argument_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_torchrun_env(monkeypatch)
    data = _split(16, 8, 0)
    with pytest.raises(ValueError, match="distributed='yes'"):
        fit(_Regression(0), data, steps=1, device="cpu", progress=False, distributed="yes")
    with pytest.raises(ValueError, match="distributed=True but torch.distributed"):
        fit(_Regression(0), data, steps=1, device="cpu", progress=False, distributed=True)


def test_one_process_is_unchanged_by_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_torchrun_env(monkeypatch)
    data = _split(16, 8, 0)
    options: dict[str, Any] = {"steps": 3, "device": "cpu", "progress": False}
    plain = _Regression(0)
    fit(plain, data, **options)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for world, mode in (("1", "auto"), ("2", False)):  # torchrun with one process; opted out
        monkeypatch.setenv("WORLD_SIZE", world)
        model = _Regression(0)
        fit(model, data, distributed=mode, **options)
        assert torch.equal(model.weight, plain.weight)
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())


def test_resume_refuses_a_checkpoint_of_another_world_size(tmp_path: Path) -> None:
    data = _split(16, 8, 0)
    options: dict[str, Any] = {"device": "cpu", "progress": False, "checkpoint_dir": tmp_path}
    fit(_Regression(0), data, steps=2, **options)
    state = load_checkpoint(tmp_path)
    state["distributed"] = {"world_size": 2, "rng": [copy.deepcopy(state["rng"])] * 2}
    save_checkpoint(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="over 2 process"):
        fit(_Regression(0), data, steps=4, resume=True, **options)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
