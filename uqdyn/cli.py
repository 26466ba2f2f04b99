"""The ``uqdyn`` command: ``uqdyn --version``, ``info``, ``demo``, ``study``, ``verify``."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from types import FrameType
from typing import Any, NoReturn

import uqdyn
from uqdyn.study.config import OVERRIDE_EXAMPLE

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
    from uqdyn._device import resolve_device

    resolve_device(args.device)  # a CUDA request without CUDA fails here, before any work
    from uqdyn.demo import run_demo

    run_demo(device=args.device, seed=args.seed, members=args.members)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from uqdyn.study import STUDIES

    if args.list:
        width = max(len(name) for name in STUDIES)
        for name, description in STUDIES.items():
            print(f"{name:<{width}}  {description}")
        return 0
    if args.name is None:
        raise ValueError(
            "a study NAME is required (or --list); expected one of " + ", ".join(sorted(STUDIES))
        )
    import time

    from uqdyn.study import load_config, run
    from uqdyn.study.report import summary_lines
    from uqdyn.study.runner import git_unignored

    overrides = list(args.set or []) + _data_overrides(args)
    cfg = load_config(
        args.name,
        quick=args.quick,
        config_file=args.config,
        overrides=overrides or None,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        out=args.out,
        overwrite=args.overwrite,
        progress=not (args.no_progress or args.quiet),
    )
    tree = git_unignored(cfg.out)
    if tree is not None:
        print(
            f"uqdyn: warning: the output directory {cfg.out!r} is inside the git work tree "
            f"{str(tree)!r} and not git-ignored; add it to .gitignore or choose another --out",
            file=sys.stderr,
        )
    command = " ".join(["uqdyn", "study", *(sys.argv[2:] if args.argv is None else args.argv)])
    start = time.perf_counter()
    scores = run(cfg, command=command)
    print(f"\nuqdyn study {cfg.name}: test scores (raw and recalibrated on the validation cases)")
    print("\n".join(summary_lines(scores)))
    print(
        f"wrote {cfg.out}/report.html, report.md, scores.csv, scores.nc, forecasts/*.nc "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import time

    from uqdyn.verify import verify_files

    words = list(sys.argv[2:] if args.argv is None else args.argv)
    start = time.perf_counter()
    result = verify_files(
        args.forecasts,
        args.observations,
        var=args.var,
        obs_var=args.obs_var,
        member_dim=args.member_dim,
        mean_var=args.mean_var,
        std_var=args.std_var,
        dims=args.dims,
        by=args.by or (),
        weights=args.weights,
        valid_time=args.valid_time,
        threshold=args.threshold,
        out=args.out,
        overwrite=args.overwrite,
        figures=not args.no_figures,
        command=" ".join(["uqdyn", "verify", *words]),
    )
    rows = result.scores.sizes
    n_rows = 1
    for d in result.kept:
        n_rows *= rows[d]
    print(
        f"uqdyn verify: {result.kind} forecast, {n_rows} row(s) by "
        f"{', '.join(result.kept) or 'nothing'}; wrote {args.out}/scores.csv, scores.nc, "
        f"report.html in {time.perf_counter() - start:.1f} s"
    )
    return 0


#: Measured run times, the same in ``--help`` and the README (2-core CPU, one thread).
DEMO_TIME = "about 30 s on a 2-core CPU"
QUICK_TIMES = "30 s to 1 min per study on an idle 2-core CPU"

#: Studies on a user's or a shipped real series, which take the data options.
DATA_STUDIES = ("forecast", "elnino", "co2")


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _data_overrides(args: argparse.Namespace) -> list[str]:
    """``--data/--var/--time-dim/--leads/--context`` as ``data.*`` overrides."""
    given = {
        "--data": args.data,
        "--var": args.var,
        "--time-dim": args.time_dim,
        "--leads": args.leads,
        "--context": args.context,
    }
    used = [flag for flag, value in given.items() if value is not None]
    if not used:
        return []
    if args.name not in DATA_STUDIES:
        raise ValueError(
            f"{', '.join(used)} apply to the studies {', '.join(DATA_STUDIES)}; study "
            f"{args.name!r} simulates its own data"
        )
    out = []
    if args.data is not None:
        out.append(f"data.source={_toml_string(args.data)}")
    if args.var is not None:
        out.append(f"data.var={_toml_string(args.var)}")
    if args.time_dim is not None:
        out.append(f"data.time_dim={_toml_string(args.time_dim)}")
    if args.leads is not None:
        items = [v.strip() for v in args.leads.split(",") if v.strip()]
        if not items:
            raise ValueError(f"--leads {args.leads!r}; expected e.g. 1,2,3 or 6h,12h,1D")
        parts = [v if v.lstrip("-").isdigit() else _toml_string(v) for v in items]
        kinds = {v.lstrip("-").isdigit() for v in items}
        if len(kinds) > 1:
            raise ValueError(
                f"--leads {args.leads!r} mixes steps and time offsets; expected one kind"
            )
        out.append("data.leads=[" + ", ".join(parts) + "]")
    if args.context is not None:
        if args.context.strip().isdigit():
            out.append(f"data.context={int(args.context)}")
        else:
            out.append(f"data.context_span={_toml_string(args.context.strip())}")
    return out


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``uqdyn: error: ...``."""

    def error(self, message: str) -> NoReturn:
        _print_error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``uqdyn`` command."""
    parser = _Parser(
        prog="uqdyn",
        description="Probabilistic modeling and uncertainty quantification of physical dynamics.",
    )
    parser.add_argument("--version", action="version", version=f"uqdyn {uqdyn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="versions of the core dependencies and devices seen")
    p_info.set_defaults(func=_cmd_info)
    p_demo = sub.add_parser(
        "demo", help=f"simulate, forecast and score a small ensemble forecast ({DEMO_TIME})"
    )
    p_demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--members", type=int, default=32, help="ensemble size")
    p_demo.set_defaults(func=_cmd_demo)
    p_study = sub.add_parser(
        "study",
        help="run a calibration study (simulate, fit, forecast, recalibrate, score, report)",
        description="Run a calibration study and write a report, forecasts and scores.",
    )
    p_study.add_argument("name", nargs="?", help="study name (see --list)")
    p_study.add_argument("--list", action="store_true", help="list the studies and exit")
    p_study.add_argument("--quick", action="store_true", help=f"reduced settings ({QUICK_TIMES})")
    p_study.add_argument(
        "--out", default=None, help="output directory (default uqdyn-out/NAME, git-ignored)"
    )
    p_study.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p_study.add_argument("--config", default=None, help="TOML file overriding the defaults")
    p_study.add_argument("--seed", type=int, default=None)
    p_study.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output directory"
    )
    p_study.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"override one configuration key (dotted, e.g. {OVERRIDE_EXAMPLE}); repeatable",
    )
    p_study.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default from config: 1)"
    )
    p_study.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or stage lines (stderr only for warnings and errors)",
    )
    p_study.add_argument("--no-progress", action="store_true", help="same as --quiet")
    data_opts = p_study.add_argument_group(
        "data options (studies forecast, elnino, co2)",
        "the forecast study runs on your own file: uqdyn study forecast --data FILE --var NAME",
    )
    data_opts.add_argument("--data", default=None, metavar="FILE", help="CSV, netCDF or zarr file")
    data_opts.add_argument("--var", default=None, metavar="NAME", help="variable or column")
    data_opts.add_argument(
        "--time-dim", default=None, metavar="NAME", help="time dim or CSV column (default time)"
    )
    data_opts.add_argument(
        "--leads",
        default=None,
        metavar="L1,L2",
        help="lead times: steps (1,2,3) or offsets (6h,1D)",
    )
    data_opts.add_argument(
        "--context",
        default=None,
        metavar="N|SPAN",
        help="context window: samples (12) or a span (30D)",
    )
    p_study.set_defaults(func=_cmd_study, argv=None)
    _add_verify_parser(sub)
    return parser


def _add_verify_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="score archived forecasts (ensemble, quantiles, Gaussian) against observations",
        description=(
            "Score a forecast archive against observations (netCDF or zarr) and write "
            "scores.csv, scores.nc, figures and report.html. The forecast is an ensemble "
            "(NAME with a member dim), quantiles (NAME with a 'quantile' dim holding the "
            "levels) or Gaussian (NAME_mean and NAME_std, or --mean-var/--std-var)."
        ),
    )
    p.add_argument("forecasts", metavar="FORECASTS", help="netCDF file or zarr store")
    p.add_argument("observations", metavar="OBSERVATIONS", help="netCDF file or zarr store")
    p.add_argument("--var", required=True, metavar="NAME", help="forecast variable")
    p.add_argument("--obs-var", default=None, metavar="NAME", help="observed variable (--var)")
    p.add_argument("--member-dim", default="member", metavar="DIM", help="default member")
    p.add_argument("--mean-var", default=None, metavar="NAME", help="Gaussian mean variable")
    p.add_argument("--std-var", default=None, metavar="NAME", help="Gaussian std variable")
    p.add_argument(
        "--dims", nargs="+", default=None, metavar="DIM",
        help="dims averaged over (default: every dim not in --by)",
    )  # fmt: skip
    p.add_argument(
        "--by", nargs="+", default=None, metavar="DIM",
        help="dims kept as rows, e.g. lead (with every dim not in --dims)",
    )  # fmt: skip
    p.add_argument(
        "--weights", default=None, metavar="KIND",
        help="reduction weights: coslat (cosine of the lat coordinate)",
    )  # fmt: skip
    p.add_argument(
        "--valid-time", action="store_true",
        help="take observations at time = init_time + lead (forecast coords init_time, lead)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="event obs > T for the CORP reliability diagram",
    )  # fmt: skip
    p.add_argument("--out", default="uqdyn-verify", help="output directory (uqdyn-verify)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous verify output")
    p.add_argument("--no-figures", action="store_true", help="tables and report only")
    p.set_defaults(func=_cmd_verify, argv=None)


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (like KeyboardInterrupt)."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    from uqdyn.study._interrupt import raise_interruption

    raise_interruption(Terminated if signum == signal.SIGTERM else KeyboardInterrupt)


def _print_error(message: str) -> None:
    """Write ``uqdyn: error: message`` as one line to stderr."""
    text = " ".join(str(message).split()) or "unknown error"
    print(f"uqdyn: error: {text}", file=sys.stderr, flush=True)


def _os_error_message(err: OSError) -> str:
    if err.strerror and err.filename is not None:
        return f"{err.strerror}: {err.filename!r}"
    return str(err) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uqdyn`` console script.

    Every failure ends in one line ``uqdyn: error: ...`` on stderr and a non-zero exit code:
    2 for bad arguments or configuration values (and an output directory that exists
    already), 1 for I/O and other errors, 130 on Ctrl-C
    (SIGINT) and 143 on SIGTERM; a study interrupted either way removes its temporary output
    directory. ``UQDYN_TRACEBACK=1`` shows the traceback of an unexpected error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: one line, SystemExit(2)
    if argv is not None and getattr(args, "command", None) in ("study", "verify"):
        args.argv = list(argv)[1:]
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if signum == signal.SIGINT and handler is not signal.default_int_handler:
            continue  # SIGINT ignored (a background job) or handled by the caller: keep that
        try:
            signal.signal(signum, _on_signal)
        except ValueError:  # not the main thread: leave the signals alone
            break
        previous[signum] = handler
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Terminated:
        _print_error("terminated (SIGTERM)")
        return 143
    except (ValueError, TypeError) as err:
        _print_error(str(err))
        return 2
    except FileExistsError as err:  # an output that is there already: a usage error
        _print_error(_os_error_message(err))
        return 2
    except OSError as err:
        _print_error(_os_error_message(err))
        return 1
    except ImportError as err:
        _print_error(str(err))
        return 1
    except Exception as err:
        if os.environ.get("UQDYN_TRACEBACK"):
            raise
        _print_error(
            f"{type(err).__name__}: {err} (set UQDYN_TRACEBACK=1 to see where it happened)"
        )
        return 1
    finally:
        from uqdyn.study._interrupt import clear

        clear()
        for number, old in previous.items():
            signal.signal(number, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
