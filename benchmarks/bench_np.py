"""Training speed and peak memory of the neural-process models.

Prints two markdown tables:

1. CNP and attentive CNP on the EQ Gaussian-process task (x in [-2, 2], length scale 0.25,
   noise variance 0.05; batch 16, 1 to 50 context points and 50 targets), uqdyn beside the
   ``neuralprocesses`` library (``construct_gnp`` / ``construct_agnp`` with the same widths
   and depths) on the same batches in the same run: Adam steps per second and peak memory.
2. Neural ODE process peak memory with the adjoint method from 10 to 200 target times.

Each case runs in a fresh process so that the CPU peak resident memory (``ru_maxrss``) of
one case is not hidden by another; on CUDA the peak is ``torch.cuda.max_memory_allocated``.
``neuralprocesses`` is optional: where it cannot be imported its rows show the error.

The uqdyn models are timed twice: in a bare Adam loop on ``model.loss`` (the model's own
speed, comparable with the peer's loop) and through ``uqdyn.train.fit`` (the library's one
training loop, so its overhead shows). Tools alternate over ``--repeats`` runs and the table
shows medians; the machine's load average is printed before and after.

Usage: ``python benchmarks/bench_np.py [--steps 50] [--repeats 3] [--devices cpu cuda]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
import traceback
from typing import Any

import torch

WIDTH, DEPTH, HEADS, BATCH, MAX_CONTEXT, N_TARGET = 128, 3, 8, 16, 50, 50


def _eq_batches(n: int, seed: int, device: str) -> list[tuple[torch.Tensor, ...]]:
    """``n`` batches of EQ-GP samples: (xc, yc, xt, yt), each (B, N, 1), float32."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        nc = int(torch.randint(1, MAX_CONTEXT + 1, (1,), generator=g))
        x = 4.0 * torch.rand(BATCH, nc + N_TARGET, generator=g, dtype=torch.float64) - 2.0
        cov = torch.exp(-0.5 * (x[:, :, None] - x[:, None, :]).square() / 0.25**2)
        cov = cov + 0.05 * torch.eye(nc + N_TARGET, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        y = chol @ torch.randn(BATCH, nc + N_TARGET, 1, generator=g, dtype=torch.float64)
        x, y = x[..., None].float().to(device), y.float().to(device)
        out.append((x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:]))
    return out


def _build(tool: str, model: str) -> tuple[torch.nn.Module, Any]:
    """Model and a loss ``(model, xc, yc, xt, yt) -> scalar`` (negative log-lik per target)."""
    if tool in ("uqdyn", "uqdyn fit"):
        from uqdyn.data import Task
        from uqdyn.models.neural_process import CNP, AttentiveCNP

        # depth counts linear layers: neuralprocesses' num_*_layers=3 means 3 hidden layers
        if model == "cnp":
            net = CNP(1, 1, width=WIDTH, encoder_depth=DEPTH + 1, decoder_depth=DEPTH + 1)
        else:
            net = AttentiveCNP(
                1,
                1,
                width=WIDTH,
                num_heads=HEADS,
                self_attention=0,
                encoder_depth=DEPTH + 1,
                decoder_depth=DEPTH + 1,
            )

        def loss(m, xc, yc, xt, yt):
            mc = torch.ones(xc.shape[:2], dtype=torch.bool, device=xc.device)
            mt = torch.ones(xt.shape[:2], dtype=torch.bool, device=xt.device)
            return m.loss(Task(xc, yc, mc, xt, yt, mt))

        return net, loss
    import neuralprocesses.torch as nps

    options = dict(
        dim_x=1,
        dim_y=1,
        dim_embedding=WIDTH,
        width=WIDTH,
        num_enc_layers=DEPTH,
        num_dec_layers=DEPTH,
        likelihood="het",
    )
    if model == "cnp":
        net = nps.construct_gnp(**options)
    else:
        net = nps.construct_agnp(num_heads=HEADS, **options)

    def peer_loss(m, xc, yc, xt, yt):  # channels first in neuralprocesses
        t = lambda v: v.transpose(1, 2)  # noqa: E731
        return -nps.loglik(m, t(xc), t(yc), t(xt), t(yt), normalise=True).mean()

    return net, peer_loss


def _peak(device: str) -> float:
    """Peak memory in MiB: CUDA allocator peak, or the process's peak resident set on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _fit_case(model: str, device: str, steps: int) -> dict[str, Any]:
    """The same training through ``uqdyn.train.fit`` (the library's one training loop)."""
    from uqdyn.data import Task
    from uqdyn.train import fit

    torch.manual_seed(0)
    net, _ = _build("uqdyn", model)
    net = net.to(device)
    tasks = []
    for xc, yc, xt, yt in _eq_batches(10, seed=0, device=device):
        mc = torch.ones(xc.shape[:2], dtype=torch.bool, device=xc.device)
        mt = torch.ones(xt.shape[:2], dtype=torch.bool, device=xt.device)
        tasks.append(Task(xc, yc, mc, xt, yt, mt))
    n_params = sum(p.numel() for p in net.parameters())
    options = {"lr": 1e-4, "device": device, "progress": False}
    fit(net, tasks, steps=3, **options)  # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = 0.0 if device == "cuda" else _peak(device)
    start = time.perf_counter()
    fit(net, tasks, steps=steps, **options)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"steps/s": steps / elapsed, "peak MiB": _peak(device), "base": base, "params": n_params}


def _train_case(tool: str, model: str, device: str, steps: int) -> dict[str, Any]:
    if tool == "uqdyn fit":
        return _fit_case(model, device, steps)
    torch.manual_seed(0)
    net, loss_fn = _build(tool, model)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    batches = _eq_batches(10, seed=0, device=device)
    n_params = sum(p.numel() for p in net.parameters())

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net, *batches[i % len(batches)])
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up
        step(i)
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = 0.0 if device == "cuda" else _peak(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"steps/s": steps / elapsed, "peak MiB": _peak(device), "base": base, "params": n_params}


def _ndp_case(n_times: int, adjoint: bool, device: str, steps: int) -> dict[str, Any]:
    from uqdyn.data import Task
    from uqdyn.models.neural_process import NeuralODEProcess

    torch.manual_seed(0)
    net = NeuralODEProcess(1, adjoint=adjoint, method="rk4", options={"step_size": 0.1})
    net = net.to(device)
    g = torch.Generator().manual_seed(0)
    t = torch.sort(5.0 * torch.rand(BATCH, n_times, 1, generator=g), dim=1).values
    y = torch.sin(t)
    task = Task(
        t[:, :10].to(device),
        y[:, :10].to(device),
        torch.ones(BATCH, 10, dtype=torch.bool, device=device),
        t.to(device),
        y.to(device),
        torch.ones(BATCH, n_times, dtype=torch.bool, device=device),
    )
    net.loss(task).backward()  # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = 0.0 if device == "cuda" else _peak(device)
    start = time.perf_counter()
    for _ in range(steps):
        net.zero_grad(set_to_none=True)
        net.loss(task).backward()
    _sync(device)
    return {
        "steps/s": steps / (time.perf_counter() - start),
        "peak MiB": _peak(device),
        "base": base,
    }


def _child(queue: Any, fn: str, args: tuple) -> None:
    try:
        queue.put(globals()[fn](*args))
    except Exception as error:  # reported in the table
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        queue.put({"error": last[:120]})


def _run(fn: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--ndp-steps", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["train", "ndp"], choices=["train", "ndp"])
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per tool; the median is shown"
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        "\n| model | device | tool | params | steps/s (median) | speed ratio uqdyn/peer "
        "| peak MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    tools = ("uqdyn", "uqdyn fit", "neuralprocesses")
    for device in args.devices if "train" in args.parts else []:
        for model in ("cnp", "acnp"):
            runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
            for _ in range(max(1, args.repeats)):  # alternate the tools, take medians
                for tool in tools:
                    runs[tool].append(_run("_train_case", tool, model, device, args.steps))
            res: dict[str, dict[str, Any]] = {}
            for tool, rs in runs.items():
                good = [r for r in rs if "error" not in r]
                if not good:
                    res[tool] = rs[0]
                    continue
                res[tool] = dict(good[0])
                res[tool]["steps/s"] = statistics.median(r["steps/s"] for r in good)
                res[tool]["peak MiB"] = max(r["peak MiB"] for r in good)
            other = res["neuralprocesses"]
            for tool, r in res.items():
                if "error" in r:
                    print(f"| {model} | {device} | {tool} | | error: {r['error']} | | |")
                    continue
                ratio = (
                    f"{r['steps/s'] / other['steps/s']:.2f}"
                    if tool != "neuralprocesses" and "error" not in other
                    else ""
                )
                print(
                    f"| {model} | {device} | {tool} | {r['params']} | {r['steps/s']:.1f} | "
                    f"{ratio} | {r['peak MiB']:.0f} |"
                )
        print(f"load average {os.getloadavg()[0]:.2f} after the {device} runs")
    print(
        "\nNeural ODE process (rk4, step 0.1 on [0, 5], batch 16, 10 context points, K = 1 training draw):"
    )
    print("\n| device | adjoint | target times | steps/s | peak MiB | growth vs 10 times |")
    print("|---|---|---|---|---|---|")
    for device in args.devices if "ndp" in args.parts else []:
        for adjoint in (True, False):
            first = None
            for n_times in (10, 50, 200):
                r = _run("_ndp_case", n_times, adjoint, device, args.ndp_steps)
                if "error" in r:
                    print(f"| {device} | {adjoint} | {n_times} | error: {r['error']} | | |")
                    continue
                first = first or r["peak MiB"]
                growth = 100.0 * (r["peak MiB"] / first - 1.0)
                print(
                    f"| {device} | {adjoint} | {n_times} | {r['steps/s']:.2f} | "
                    f"{r['peak MiB']:.0f} | {growth:+.1f}% |"
                )
    if "cpu" in args.devices:
        print("\nCPU peak MiB is the peak resident set of a fresh process (includes torch itself).")


if __name__ == "__main__":
    main()
