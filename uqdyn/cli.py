"""The ``uqdyn`` command: ``uqdyn --version``, ``uqdyn info``, ``uqdyn demo``."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from importlib import metadata

import uqdyn

CORE_PACKAGES = (
    "torch",
    "pyro-ppl",
    "gpytorch",
    "torchdiffeq",
    "properscoring",
    "xarray",
    "numpy",
    "scipy",
)
OPTIONAL_PACKAGES = ("scoringrules", "triton", "matplotlib", "netCDF4", "h5netcdf", "numba")


def _version_of(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def info_lines() -> list[str]:
    """Lines describing uqdyn, its dependencies and the devices torch sees."""
    import torch

    lines = [
        f"uqdyn {uqdyn.__version__}",
        f"python {platform.python_version()} ({platform.machine()}, {platform.system()})",
        "core dependencies:",
    ]
    lines += [f"  {name:<14} {_version_of(name)}" for name in CORE_PACKAGES]
    lines.append("optional:")
    lines += [f"  {name:<14} {_version_of(name)}" for name in OPTIONAL_PACKAGES]
    lines.append("devices:")
    lines.append(f"  cpu            {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(
                f"  cuda:{i:<9} {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                f"CUDA {torch.version.cuda}"
            )
    else:
        lines.append("  cuda           not available")
    return lines


def _cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from uqdyn.demo import run_demo

    run_demo(device=args.device, seed=args.seed, members=args.members)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``uqdyn`` command."""
    parser = argparse.ArgumentParser(
        prog="uqdyn",
        description="Probabilistic modeling and uncertainty quantification of physical dynamics.",
    )
    parser.add_argument("--version", action="version", version=f"uqdyn {uqdyn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="versions of the core dependencies and devices seen")
    p_info.set_defaults(func=_cmd_info)
    p_demo = sub.add_parser(
        "demo", help="simulate, forecast and score a small ensemble forecast (about a minute)"
    )
    p_demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--members", type=int, default=32, help="ensemble size")
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uqdyn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
