"""Speed of uqdyn's CRPS beside properscoring and scoringrules, on the same data in one run.

Prints one markdown table per case: ``crps_ensemble`` (standard estimator) and ``crps_normal`` for each
size, dtype and device; uqdyn on every requested device, properscoring on the CPU, scoringrules'
numba and numpy backends on the CPU and its torch backend on each device. Timings are the
median of ``--repeat`` calls after one warm-up call, the tools taking turns within each repeat
(so that a change in machine load hits all of them alike). Each table is printed with the load
average and torch's thread count before and after it, and a warning when the 1-min load
exceeds the core count minus 0.5. ``ratio`` is seconds over uqdyn's seconds
on the same device; ``GB/s`` is input bytes over seconds; ``%bound`` is the memory-bandwidth
bound (input bytes read once over the device's measured copy bandwidth) over seconds.

    python benchmarks/bench_scoring.py --sizes 1e5 1e6 --dtypes float32 float64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from uqdyn.scoring import crps_ensemble, crps_normal


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int = 1 << 30) -> float:
    """Bytes read plus written per second by ``clone`` of a large tensor on ``device``."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    seconds = _time(lambda: x.clone(), device, 5)
    return 2 * x.numel() * 4 / seconds


def _free_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 1 << 34


def _scoringrules():
    try:
        import scoringrules as sr
    except ImportError as err:
        return None, f"scoringrules not installed ({err})"
    try:
        sr.register_backend("torch")
    except Exception as err:  # a missing optional backend is reported, not fatal
        return sr, f"{type(err).__name__}: {err}"
    return sr, None


def _row(case, n, m, dtype, device, tool, seconds, base, nbytes, bandwidth):
    if isinstance(seconds, str):
        return [case, f"{n:.0e}", str(m), dtype, device, tool, seconds, "", "", ""]
    ratio = f"{seconds / base:.2f}" if base else ""
    gbs = nbytes / seconds / 1e9
    bound = nbytes / bandwidth[device]
    return [
        case,
        f"{n:.0e}",
        str(m),
        dtype,
        device,
        tool,
        f"{seconds:.4g}",
        ratio,
        f"{gbs:.1f}",
        f"{100 * bound / seconds:.0f}%",
    ]


def _tools_ensemble(y, x, device, sr, sr_error):
    """(tool, device, callable, estimated peak bytes) for the ensemble case."""
    nbytes = x.numel() * 8
    tools = [("uqdyn", device, lambda: crps_ensemble(y, x), 3 * nbytes)]
    if device == "cpu":
        import properscoring as ps

        x_np, y_np = x.numpy(), y.numpy()
        tools.append(("properscoring", "cpu", lambda: ps.crps_ensemble(y_np, x_np), 3 * nbytes))
        if sr is not None:
            for backend in ("numba", "numpy"):
                tools.append(
                    (
                        f"scoringrules-{backend}",
                        "cpu",
                        lambda b=backend: sr.crps_ensemble(y_np, x_np, backend=b),
                        (3 if backend == "numba" else 8) * nbytes,
                    )
                )
    if sr is None:
        tools.append(("scoringrules", device, sr_error, 0))
    else:
        if sr_error is None:
            tools.append(
                (
                    "scoringrules-torch",
                    device,
                    lambda: sr.crps_ensemble(y, x, backend="torch"),
                    6 * nbytes,
                )
            )
        else:
            tools.append(("scoringrules-torch", device, sr_error, 0))
    return tools


def _tools_normal(y, mu, sigma, device, sr, sr_error):
    nbytes = y.numel() * 8
    tools = [("uqdyn", device, lambda: crps_normal(y, mu, sigma), 8 * nbytes)]
    if device == "cpu":
        import properscoring as ps

        a, b, c = y.numpy(), mu.numpy(), sigma.numpy()
        tools.append(("properscoring", "cpu", lambda: ps.crps_gaussian(a, b, c), 10 * nbytes))
        if sr is not None:
            for backend in ("numba", "numpy"):
                tools.append(
                    (
                        f"scoringrules-{backend}",
                        "cpu",
                        lambda be=backend: sr.crps_normal(a, b, c, backend=be),
                        10 * nbytes,
                    )
                )
    if sr is None:
        tools.append(("scoringrules", device, sr_error, 0))
    else:
        if sr_error is None:
            tools.append(
                (
                    "scoringrules-torch",
                    device,
                    lambda: sr.crps_normal(y, mu, sigma, backend="torch"),
                    10 * nbytes,
                )
            )
        else:
            tools.append(("scoringrules-torch", device, sr_error, 0))
    return tools


def _admit(fn, device, peak, last_seconds, scale, repeat, max_seconds):
    """None when ``fn`` may run, else the reason it is skipped (a string for the table)."""
    if isinstance(fn, str):
        return f"error: {fn}"
    if peak > 0.7 * _free_bytes(device):
        return f"skipped: needs ~{peak / 1e9:.0f} GB, {_free_bytes(device) / 1e9:.0f} GB free"
    if last_seconds is not None and last_seconds * scale * (repeat + 1) > max_seconds:
        return f"skipped: ~{last_seconds * scale:.0f} s per call > --max-seconds budget"
    return None


def _once(fn, device) -> float | str:
    try:
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start
    except Exception as err:  # the table reports a failing backend instead of stopping
        return f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}"


def _time_alternating(tools, repeat, admitted):
    """Median seconds per tool; the tools take turns within each repeat (after one warm-up
    call each), so that a change in machine load hits every tool alike."""
    results: dict[int, list[float] | str] = {}
    for i, (_, device, fn, _) in enumerate(tools):
        if admitted[i] is None:
            warm = _once(fn, device)
            results[i] = warm if isinstance(warm, str) else []
    for _ in range(repeat):
        for i, (_, device, fn, _) in enumerate(tools):
            times = results.get(i)
            if isinstance(times, list):
                t = _once(fn, device)
                if isinstance(t, str):
                    results[i] = t
                else:
                    times.append(t)
    out: list[float | str] = []
    for i in range(len(tools)):
        r = results.get(i, admitted[i])
        out.append(statistics.median(r) if isinstance(r, list) else str(r))
    return out


def _load_line() -> str:
    """Load average and thread count, and a warning when the machine is too busy."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = os.cpu_count() or 1
    line = (
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min), "
        f"{cores} cores, {torch.get_num_threads()} torch threads"
    )
    if load[0] > cores - 0.5:
        line += (
            f"\nWARNING: 1-min load {load[0]:.2f} > {cores} cores - 0.5: "
            "machine too loaded for the ratios to mean much"
        )
    return line


# (case, reference tool, least ratio reference/uqdyn expected on the CPU)
_TARGETS = [
    ("crps_ensemble", "scoringrules-numba", 3.0),
    ("crps_normal", "scoringrules-numba", 1.0),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="skip a tool whose extrapolated time for warm-up plus repeats exceeds this",
    )
    parser.add_argument("--cases", nargs="+", default=["crps_ensemble", "crps_normal"])
    args = parser.parse_args(argv)

    sr, sr_error = _scoringrules()
    bandwidth = {d: copy_bandwidth(d) for d in args.devices}
    header = [
        "case",
        "N",
        "M",
        "dtype",
        "device",
        "tool",
        "seconds",
        "ratio vs uqdyn",
        "GB/s",
        "%bandwidth-bound",
    ]
    devices = ", ".join(f"{d}: copy {bandwidth[d] / 1e9:.1f} GB/s" for d in args.devices)
    name = torch.cuda.get_device_name() if "cuda" in args.devices else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads {name}; {devices}")
    print(f"median of {args.repeat} calls per tool, tools alternating within each repeat")
    last: dict[tuple, tuple[float, int]] = {}
    checks: list[str] = []
    gen = torch.Generator().manual_seed(0)
    for case in args.cases:
        rows = []
        load_before = _load_line()
        for size in sorted(int(s) for s in args.sizes):
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                m = args.members if case == "crps_ensemble" else 1
                for device in args.devices:
                    if case == "crps_ensemble":
                        x = torch.randn(size, m, generator=gen, dtype=dtype).to(device)
                        y = torch.randn(size, generator=gen, dtype=dtype).to(device)
                        tools = _tools_ensemble(y, x, device, sr, sr_error)
                        nbytes = (x.numel() + y.numel()) * x.element_size()
                    else:
                        y = torch.randn(size, generator=gen, dtype=dtype).to(device)
                        mu = torch.randn(size, generator=gen, dtype=dtype).to(device)
                        sigma = torch.rand(size, generator=gen, dtype=dtype).add_(0.5).to(device)
                        tools = _tools_normal(y, mu, sigma, device, sr, sr_error)
                        nbytes = 3 * size * y.element_size()
                    admitted = []
                    for tool, tool_device, fn, peak in tools:
                        prev = last.get((case, dtype_name, device, tool))
                        scale = size / prev[1] if prev else 1.0
                        admitted.append(
                            _admit(
                                fn,
                                tool_device,
                                peak,
                                prev[0] if prev else None,
                                scale,
                                args.repeat,
                                args.max_seconds,
                            )
                        )
                    seconds_all = _time_alternating(tools, args.repeat, admitted)
                    base = next(
                        (
                            s
                            for (tool, *_), s in zip(tools, seconds_all, strict=True)
                            if tool == "uqdyn" and isinstance(s, float)
                        ),
                        None,
                    )
                    for (tool, tool_device, _, _), seconds in zip(tools, seconds_all, strict=True):
                        if isinstance(seconds, float):
                            last[(case, dtype_name, device, tool)] = (seconds, size)
                        rows.append(
                            _row(
                                case,
                                size,
                                m,
                                dtype_name,
                                tool_device,
                                tool,
                                seconds,
                                base,
                                nbytes,
                                bandwidth,
                            )
                        )
                        for t_case, t_tool, least in _TARGETS:
                            if (
                                (t_case, t_tool) == (case, tool)
                                and base
                                and isinstance(seconds, float)
                            ):
                                ratio = seconds / base
                                verdict = "ok" if ratio >= least else "BELOW TARGET"
                                checks.append(
                                    f"{case} N={size:.0e} {dtype_name}: {tool}/uqdyn = "
                                    f"{ratio:.2f} (target >= {least:g}) {verdict}"
                                )
                    del tools
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
        print()
        print(f"### {case}")
        print(f"before: {load_before}")
        print(f"after:  {_load_line()}")
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    if checks:
        print()
        print("targets (CPU):")
        for line in checks:
            print("  " + line)


if __name__ == "__main__":
    main()
