"""Training speed, peak memory and inference cost of the Fourier neural operator forecasters.

Prints two markdown tables:

1. Training: Adam steps per second and peak memory of one FNO size (modes 12, width 32,
   depth 4, 1 channel in, a mean and a scale out) on the same data (random band-limited
   periodic fields, batch 8, 32x32, the target a shifted and damped copy of the input), with
   the same loss (the Gaussian negative log-likelihood of ``FNOForecaster.loss``: residual
   mean, softplus scale), trained

   * ``uqdyn fit (neuralop)``: ``uqdyn.train.fit(FNOForecaster(..., backbone="neuralop"))``;
   * ``bare loop (neuralop)``: a plain torch Adam loop on the same ``neuralop.models.FNO``;
   * ``neuralop Trainer``: neuraloperator's own ``neuralop.Trainer`` fed in-memory batches
     (a list of ``{"x", "y"}`` dicts, one epoch of ``--steps`` batches, no evaluation
     loaders, no wandb, no checkpoints);
   * ``uqdyn fit (uqdyn)``: ``fit`` on uqdyn's own ``FNO2d`` backbone.

   Each case runs in a fresh process (so that the CPU peak resident set, ``ru_maxrss``, of
   one case is not hidden by another; on CUDA the peak is
   ``torch.cuda.max_memory_allocated``) after a 3-step warm-up; the tools alternate over
   ``--repeats`` runs and the table shows medians. ``ratio`` is steps per second over
   those of the neuralop Trainer on the same device (above 1: faster); ``params`` counts a
   complex weight as two real numbers.
2. Inference: median seconds per forward pass (``FNOForecaster.predict`` under
   ``torch.no_grad``) of both backbones at the training size on 32 to 256 grids, batch 4,
   and the ratio to the 32x32 time.

The load average is printed before and after each table.

    OMP_NUM_THREADS=1 python benchmarks/bench_operator.py --steps 30 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import statistics
import time
import traceback
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from bench_scoring import _load_line

MODES, WIDTH, DEPTH, BATCH, SIZE, N_BATCHES, LR = 12, 32, 4, 8, 32, 10, 1e-3
TOOLS = ("uqdyn fit (neuralop)", "bare loop (neuralop)", "neuralop Trainer", "uqdyn fit (uqdyn)")
REFERENCE = "neuralop Trainer"
SIZES = (32, 64, 128, 256)


def _fields(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random band-limited periodic fields ``(n, 1, size, size)`` (|k| <= 4) and the
    same fields shifted by (0.1, 0.05) of the domain and damped by exp(-0.02 |k|^2)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(size, 1.0 / size)
    kx = torch.fft.rfftfreq(size, 1.0 / size)
    ky, kx = torch.meshgrid(k, kx, indexing="ij")
    band = ((ky.abs() <= 4) & (kx <= 4)).to(torch.complex64)
    coef = torch.complex(
        torch.randn(n, 1, size, size // 2 + 1, generator=g),
        torch.randn(n, 1, size, size // 2 + 1, generator=g),
    )
    coef = coef * band * size
    step = torch.exp(-2j * math.pi * (0.1 * ky + 0.05 * kx) - 0.02 * (ky**2 + kx**2))
    x = torch.fft.irfft2(coef, s=(size, size))
    y = torch.fft.irfft2(coef * step, s=(size, size))
    scale = x.std()
    return (x / scale).float(), (y / scale).float()


def _nll(raw: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Gaussian NLL of FNOForecaster.loss from the backbone's raw 2-channel output."""
    from uqdyn.models.operator import gaussian_nll

    loc = x + raw[:, :1]
    scale = F.softplus(raw[:, 1:]) + 1e-4
    return gaussian_nll(loc, scale, y, None)


def _peak(device: str) -> float:
    """Peak memory in MiB: CUDA allocator peak, or the process's peak resident set on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _model(backbone: str) -> Any:
    from uqdyn.models.operator import FNOForecaster

    return FNOForecaster(1, 1, modes=MODES, width=WIDTH, depth=DEPTH, backbone=backbone, seed=0)


def _train_case(tool: str, device: str, steps: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = _model("uqdyn" if tool == "uqdyn fit (uqdyn)" else "neuralop").to(device)
    x, y = _fields(N_BATCHES * BATCH, SIZE, seed=0)
    xs = [t.to(device) for t in x.split(BATCH)]
    ys = [t.to(device) for t in y.split(BATCH)]
    params = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())

    if tool.startswith("uqdyn fit"):
        from uqdyn.models.operator import FieldPairBatch
        from uqdyn.train import fit

        batches = [FieldPairBatch(a, b) for a, b in zip(xs, ys, strict=True)]
        options = {"lr": LR, "device": device, "progress": False}

        def train(n: int) -> None:
            fit(model, batches, steps=n, **options)

    elif tool == "bare loop (neuralop)":
        net = model.backbone
        opt = torch.optim.Adam(net.parameters(), lr=LR)

        def train(n: int) -> None:
            for i in range(n):
                a, b = xs[i % N_BATCHES], ys[i % N_BATCHES]
                opt.zero_grad(set_to_none=True)
                loss = _nll(net(a), a, b)
                loss.backward()
                opt.step()

    else:
        from neuralop import Trainer

        net = model.backbone
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

        def loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, **_: Any) -> torch.Tensor:
            return _nll(out, x, y)

        def train(n: int) -> None:
            # Trainer calls model(**sample); neuralop's FNO warns that it ignores "y"
            warnings.filterwarnings("ignore", message=".*unexpected keyword")
            loader = [{"x": xs[i % N_BATCHES], "y": ys[i % N_BATCHES]} for i in range(n)]
            trainer = Trainer(model=net, n_epochs=1, device=device, eval_interval=10**9)
            trainer.train(loader, {}, opt, sched, training_loss=loss, eval_losses={})

    train(3)  # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = 0.0 if device == "cuda" else _peak(device)
    start = time.perf_counter()
    train(steps)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"steps/s": steps / elapsed, "peak": _peak(device), "base": base, "params": params}


def _child(queue: Any, args: tuple) -> None:
    try:
        queue.put(_train_case(*args))
    except Exception as error:  # reported in the table
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        queue.put({"error": last.splitlines()[0][:140]})


def _run(*args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _training(args: argparse.Namespace) -> None:
    print()
    print(
        f"### Training: modes {MODES}, width {WIDTH}, depth {DEPTH}, batch {BATCH}, "
        f"{SIZE}x{SIZE}, {args.steps} Adam steps, median of {args.repeats} alternating runs"
    )
    print(f"before: {_load_line()}")
    rows = []
    for device in args.devices:
        runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
        for _ in range(max(1, args.repeats)):
            for tool in TOOLS:
                runs[tool].append(_run(tool, device, args.steps, args.threads))
        res: dict[str, dict[str, Any]] = {}
        for tool, rs in runs.items():
            good = [r for r in rs if "error" not in r]
            if not good:
                res[tool] = rs[0]
                continue
            res[tool] = {
                "params": good[0]["params"],
                "steps/s": statistics.median(r["steps/s"] for r in good),
                "peak": statistics.median(r["peak"] for r in good),
                "growth": statistics.median(r["peak"] - r["base"] for r in good),
            }
        ref = res[REFERENCE].get("steps/s")
        for tool in TOOLS:
            r = res[tool]
            if "error" in r:
                rows.append(f"| {device} | {tool} | | error: {r['error']} | | | |")
                continue
            ratio = f"{r['steps/s'] / ref:.2f}" if ref else ""
            rows.append(
                f"| {device} | {tool} | {r['params']:,} | {r['steps/s']:.1f} | {ratio} | "
                f"{r['peak']:.0f} | {r['growth']:.0f} |"
            )
    print(f"after:  {_load_line()}")
    print()
    print(
        f"| device | tool | params | steps/s (median) | ratio vs {REFERENCE} | peak MiB "
        "| growth during training MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    if "cpu" in args.devices:
        print()
        print(
            "CPU peak MiB is the peak resident set of a fresh process (torch included); growth "
            "is the peak minus the resident set after the warm-up."
        )


def _inference(args: argparse.Namespace) -> None:
    print()
    print(
        f"### Inference: FNOForecaster.predict, batch 4, modes {MODES}, width {WIDTH}, "
        f"depth {DEPTH}, median of {args.calls} alternating calls"
    )
    print(f"before: {_load_line()}")
    rows = []
    backbones = ("uqdyn", "neuralop")
    for device in args.devices:
        models = {b: _model(b).to(device).eval() for b in backbones}
        first: dict[str, float] = {}
        for size in SIZES:
            x = _fields(4, size, seed=1)[0].to(device)
            times: dict[str, list[float]] = {b: [] for b in backbones}
            with torch.no_grad():
                for b in backbones:  # warm-up
                    models[b].predict(x)
                _sync(device)
                for _ in range(args.calls):
                    for b in backbones:
                        start = time.perf_counter()
                        models[b].predict(x)
                        _sync(device)
                        times[b].append(time.perf_counter() - start)
            for b in backbones:
                seconds = statistics.median(times[b])
                first.setdefault(b, seconds)
                rows.append(
                    f"| {device} | {b} | {size}x{size} | {seconds:.4g} | "
                    f"{seconds / first[b]:.1f} | {(size / SIZES[0]) ** 2:.0f} |"
                )
    print(f"after:  {_load_line()}")
    print()
    print("| device | backbone | grid | seconds per forward | ratio vs 32x32 | pixels ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per tool; the median is shown"
    )
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calls", type=int, default=5, help="forward calls per grid size")
    parser.add_argument(
        "--parts", nargs="+", default=["train", "infer"], choices=["train", "infer"]
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import neuralop

    name = f", {torch.cuda.get_device_name()}" if "cuda" in args.devices else ""
    print(
        f"torch {torch.__version__}, neuraloperator {neuralop.__version__}, "
        f"{torch.get_num_threads()} CPU threads{name}"
    )
    if "train" in args.parts:
        _training(args)
    if "infer" in args.parts:
        _inference(args)


if __name__ == "__main__":
    main()
