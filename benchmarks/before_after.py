"""Speed of this checkout against an earlier git revision, measured in the same run.

Prints markdown tables comparing the working tree ("after") with ``REV`` ("before", checked
out into a temporary git worktree), alternating the two in fresh processes so that machine
load hits both alike:

1. CNP and attentive CNP training steps per second (``bench_np._train_case``: a bare Adam
   loop on ``model.loss``), before, after and, where ``neuralprocesses`` imports, the peer
   in the same rounds (before and after swap order every round); medians over ``--rounds``;
2. torch operations profiled in one ACNP training step, before and after (the same count
   means the same computation, whatever the timings say);
3. the overhead of ``uqdyn.train.fit`` per step (after only): a 4 -> 1 linear model trained
   2000 steps through ``fit`` and in a bare Adam loop, one thread;
4. wall time of ``uqdyn study advection-diffusion --quick`` (one torch thread), before and
   after, alternating, medians over ``--study-runs``.

The machine's load average is printed with every table. Run it with the interpreter of an
environment that has uqdyn's dependencies (and neuralprocesses for the peer column).

Usage: ``python benchmarks/before_after.py REV [--rounds 5] [--steps 200] [--study-runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

STEP_CODE = """
import sys
sys.path.insert(0, {bench!r})
import bench_np
print(bench_np._train_case({tool!r}, {model!r}, "cpu", {steps})["steps/s"])
"""

OPS_CODE = """
import sys, torch
sys.path.insert(0, {bench!r})
import bench_np
from torch.profiler import ProfilerActivity, profile
torch.manual_seed(0)
net, loss_fn = bench_np._build("uqdyn", "acnp")
batches = bench_np._eq_batches(2, 0, "cpu")
opt = torch.optim.Adam(net.parameters(), lr=1e-4)
def step(b):
    opt.zero_grad(set_to_none=True)
    loss_fn(net, *b).backward()
    opt.step()
step(batches[0])
with profile(activities=[ProfilerActivity.CPU]) as prof:
    step(batches[1])
events = prof.key_averages()
print(sum(e.count for e in events), len(events))
"""

OVERHEAD_CODE = """
import time, torch
from uqdyn.train import fit
torch.set_num_threads(1)
torch.manual_seed(0)
m = torch.nn.Linear(4, 1)
data = [(torch.randn(16, 4), torch.randn(16, 1)) for _ in range(10)]
loss = lambda m, b: (m(b[0]) - b[1]).square().mean()
fit(m, data, loss_fn=loss, steps=10, progress=False, device="cpu")
start = time.perf_counter()
fit(m, data, loss_fn=loss, steps=2000, progress=False, device="cpu")
through_fit = (time.perf_counter() - start) / 2000
opt = torch.optim.Adam(m.parameters(), 1e-3)
start = time.perf_counter()
for i in range(2000):
    opt.zero_grad()
    loss(m, data[i % 10]).backward()
    opt.step()
bare = (time.perf_counter() - start) / 2000
print(1000 * through_fit, 1000 * bare)
"""


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def _python(code: str, root: Path, threads: int | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONWARNINGS="ignore")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _peer_available() -> bool:
    try:
        import neuralprocesses  # noqa: F401
    except Exception:
        return False
    return True


def _np_steps(roots: dict[str, Path], rounds: int, steps: int) -> None:
    sides = [*roots, "peer"] if _peer_available() else list(roots)
    print(
        f"\nNP training steps/s, {steps} steps per process, {rounds} alternating rounds, load {_load()}"
    )
    print("\n| model | before | after | after / before | peer | before / peer | after / peer |")
    print("|---|---|---|---|---|---|---|")
    for model in ("cnp", "acnp"):
        runs: dict[str, list[float]] = {side: [] for side in sides}
        for i in range(rounds):
            # before and after swap places every round, so neither always runs first
            order = sides if i % 2 == 0 else [sides[1], sides[0], *sides[2:]]
            for side in order:
                tool = "neuralprocesses" if side == "peer" else "uqdyn"
                root = roots.get(side, roots["after"])
                code = STEP_CODE.format(bench=str(HERE), tool=tool, model=model, steps=steps)
                runs[side].append(float(_python(code, root)))
        med = {side: statistics.median(values) for side, values in runs.items()}
        peer = med.get("peer")
        cells = [
            f"{med['before']:.1f}",
            f"{med['after']:.1f}",
            f"{med['after'] / med['before']:.2f}",
            f"{peer:.1f}" if peer else "",
            f"{med['before'] / peer:.2f}" if peer else "",
            f"{med['after'] / peer:.2f}" if peer else "",
        ]
        print(f"| {model} | " + " | ".join(cells) + " |")
        paired = sorted(a / b for a, b in zip(runs["after"], runs["before"], strict=True))
        print(f"<!-- {model} paired after/before: {', '.join(f'{r:.2f}' for r in paired)} -->")
    print(f"\nload {_load()} after")


def _ops(roots: dict[str, Path]) -> None:
    print("\nTorch operations in one ACNP training step (profiled):\n")
    print("| side | operations | distinct |")
    print("|---|---|---|")
    for side, root in roots.items():
        total, distinct = _python(OPS_CODE.format(bench=str(HERE)), root).split()
        print(f"| {side} | {total} | {distinct} |")


def _overhead(root: Path) -> None:
    through_fit, bare = (float(v) for v in _python(OVERHEAD_CODE, root, threads=1).split())
    print(
        f"\nuqdyn.train.fit overhead (after, one thread, load {_load()}): {through_fit:.3f} ms "
        f"per step through fit, {bare:.3f} ms in a bare Adam loop "
        f"({through_fit - bare:+.3f} ms)"
    )


def _study(roots: dict[str, Path], runs: int) -> None:
    code = (
        "import sys; from uqdyn.cli import main; "
        "sys.exit(main(['study', 'advection-diffusion', '--quick', '--out', sys.argv[1]]))"
    )
    walls: dict[str, list[float]] = {side: [] for side in roots}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for side, root in list(roots.items())[:: 1 if i % 2 == 0 else -1]:
                loads.append(float(_load()))
                env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-c", code, str(Path(tmp) / f"{side}{i}")],
                    env=env,
                    capture_output=True,
                    check=True,
                    cwd=tmp,
                )
                walls[side].append(time.perf_counter() - start)
    print(
        f"\n`uqdyn study advection-diffusion --quick` wall seconds, {runs} alternating runs, "
        f"load {min(loads):.2f} to {max(loads):.2f}:\n"
    )
    print("| side | median | min | max |")
    print("|---|---|---|---|")
    for side, values in walls.items():
        print(
            f"| {side} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the earlier git revision (before)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--study-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.rev],
            check=True,
        )
        try:
            head = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            print(f"before: {args.rev}, after: the working tree at {head}; {os.cpu_count()} CPUs")
            roots = {"before": before, "after": ROOT}
            _np_steps(roots, args.rounds, args.steps)
            _ops(roots)
            _overhead(ROOT)
            if args.study_runs > 0:
                _study(roots, args.study_runs)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False
            )


if __name__ == "__main__":
    main()
