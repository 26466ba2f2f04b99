"""Throughput of the gridded uqdyn.physics solvers (not a test).

Prints one markdown table: for each system, grid size, device and mode (eager or
``torch.compile``), the rk4 steps per second of :func:`uqdyn.physics.simulate`, the
right-hand-side evaluations per second of the dynamics alone, the memory bandwidth those
evaluations achieve counting the state read once and the derivative written once, and that
bandwidth as a percentage of the device's copy bandwidth measured in the same run (a large
tensor copied into its clone: read once, written once).

Modes: ``eager`` (the module as is), ``compile`` (``torch.compile`` of the module; the RHS
is fused into a few kernels built on ``torch.roll`` stencils) and, on CUDA, ``compile+graph``
(the compiled RHS with its launches captured in a CUDA graph, so host-side overhead is
removed and the device throughput is measured). Steps per second are those of
:func:`~uqdyn.physics.simulate` (torchdiffeq ``rk4``) for ``eager`` and ``compile``, and of a
classical rk4 loop captured in a CUDA graph for ``compile+graph``.

Usage::

    python benchmarks/bench_physics.py                      # 128 and 256, batch 32
    python benchmarks/bench_physics.py --sizes 32 64 --batch 4 --steps 5 --modes eager
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from uqdyn.physics import AdvectionDiffusion, ShallowWater, simulate

SYSTEMS: dict[str, Callable[[int], nn.Module]] = {
    "advection_diffusion": lambda n: AdvectionDiffusion((n, n), diffusion=1e-3),
    "shallow_water": lambda n: ShallowWater((n, n)),
}
MODES = ("eager", "compile", "compile+graph")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of three timings of ``repeats`` calls, in seconds per call."""
    best = float("inf")
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def copy_bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes per second copying a large float32 tensor into its clone (read + write)."""
    data = torch.empty(megabytes * 2**18, dtype=torch.float32, device=device).uniform_()
    target = data.clone()  # copy into this preallocated clone: no allocation in the timing
    seconds = _time(lambda: target.copy_(data), device, repeats=20 if device.type == "cuda" else 5)
    return 2 * data.numel() * data.element_size() / seconds


def _rk4_step(rhs: Callable, t: torch.Tensor, state: torch.Tensor, dt: float) -> torch.Tensor:
    """One classical Runge-Kutta step (4 evaluations of ``rhs``)."""
    k1 = rhs(t, state)
    k2 = rhs(t + dt / 2, state + (dt / 2) * k1)
    k3 = rhs(t + dt / 2, state + (dt / 2) * k2)
    k4 = rhs(t + dt, state + dt * k3)
    return state + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def _graph_timings(
    compiled: Callable, t0: torch.Tensor, state: torch.Tensor, dt: float, steps: int, repeats: int
) -> tuple[float, float]:
    """Seconds per RHS and per rk4 step with the launches captured in one CUDA graph each.

    Replaying a captured graph removes the host-side cost of every launch (Python, guards,
    driver), so these timings measure what the device itself sustains.
    """
    static_state = state.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the capture
        for _ in range(3):
            compiled(t0, static_state)
            _rk4_step(compiled, t0, static_state, dt)
    torch.cuda.current_stream().wait_stream(stream)
    rhs_graph, step_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.cuda.graph(rhs_graph):
        for _ in range(repeats):
            compiled(t0, static_state)
    with torch.cuda.graph(step_graph):
        current = static_state
        for _ in range(steps):
            current = _rk4_step(compiled, t0, current, dt)
    device = state.device
    rhs_seconds = _time(rhs_graph.replay, device, 5) / repeats
    step_seconds = _time(step_graph.replay, device, 5) / steps
    return rhs_seconds, step_seconds


def run_case(
    name: str, size: int, batch: int, device: torch.device, mode: str, steps: int, repeats: int
) -> dict[str, str]:
    row = {"system": name, "size": f"{size}x{size}", "batch": str(batch), "device": device.type}
    row["mode"] = mode
    system = SYSTEMS[name](size).to(device)
    state = system.initial_state(
        batch, generator=torch.Generator(device).manual_seed(0), device=device
    )
    t0 = torch.zeros((), device=device)
    dt = 0.5 * system.stable_dt("rk4")
    times = torch.arange(steps + 1, device=device, dtype=state.dtype) * dt
    try:
        rhs = system if mode == "eager" else torch.compile(system)
        with torch.no_grad():
            for _ in range(3):  # compile and warm up
                rhs(t0, state)
            reference, result = system(t0, state), rhs(t0, state).clone()
            error = float((result - reference).abs().max() / reference.abs().max())
            if error > 1e-4:
                raise RuntimeError(f"{mode} disagrees with eager: relative error {error:.2e}")
            if mode == "compile+graph":
                rhs_seconds, step_seconds = _graph_timings(rhs, t0, state, dt, steps, repeats)
            else:
                rhs_seconds = _time(lambda: rhs(t0, state), device, repeats)
                simulate(rhs, state, times[:3])
                step_seconds = _time(lambda: simulate(rhs, state, times), device, 1) / steps
    except Exception as error:  # report compile failures in the table
        message = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:60]}"
        return {**row, "steps/s": message, "rhs/s": "", "GB/s": "", "bw": ""}
    bytes_per_rhs = 2 * state.numel() * state.element_size()
    bandwidth = bytes_per_rhs / rhs_seconds
    return {
        **row,
        "steps/s": f"{1.0 / step_seconds:,.1f}",
        "rhs/s": f"{1.0 / rhs_seconds:,.1f}",
        "GB/s": f"{bandwidth / 1e9:,.1f}",
        "bandwidth": bandwidth,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--batch", type=int, default=32)
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--steps", type=int, default=20, help="rk4 steps per simulate call")
    parser.add_argument("--repeats", type=int, default=None, help="RHS calls per timing")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=MODES,
        help="default: eager and compile (plus compile+graph on CUDA)",
    )
    args = parser.parse_args(argv)

    rows = []
    copy = {}
    for device_name in args.devices:
        device = torch.device(device_name)
        copy[device_name] = copy_bandwidth(device, 1024 if device.type == "cuda" else 256)
        modes = args.modes or (MODES if device.type == "cuda" else MODES[:2])
        repeats = args.repeats or (200 if device.type == "cuda" else 5)
        for name in args.systems:
            for size in args.sizes:
                for mode in modes:
                    if mode == "compile+graph" and device.type != "cuda":
                        continue
                    row = run_case(name, size, args.batch, device, mode, args.steps, repeats)
                    if "bandwidth" in row:
                        row["bw"] = f"{100 * row.pop('bandwidth') / copy[device_name]:.0f}%"
                    rows.append(row)
                    torch._dynamo.reset()

    header = (
        "| system | size | batch | device | mode | rk4 steps/s | RHS evals/s | "
        "GB/s per RHS eval | % of copy bandwidth |"
    )
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        print(
            f"| {row['system']} | {row['size']} | {row['batch']} | {row['device']} | {row['mode']} "
            f"| {row['steps/s']} | {row['rhs/s']} | {row['GB/s']} | {row['bw']} |"
        )
    bandwidths = ", ".join(f"{name} {value / 1e9:,.1f} GB/s" for name, value in copy.items())
    print(
        "\nrk4 steps/s: simulate (torchdiffeq) for eager/compile; a CUDA-graph rk4 loop for "
        "compile+graph. GB/s per RHS eval counts the state read once and the derivative "
        "written once (float32)."
    )
    print(f"Measured copy bandwidth (1 GiB GPU / 256 MiB CPU copy, read + write): {bandwidths}.")
    if any(torch.device(name).type == "cuda" for name in copy):
        print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}.")


if __name__ == "__main__":
    main()
