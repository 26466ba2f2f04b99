"""Run a whole study: simulate, fit, forecast, evaluate, recalibrate, write the outputs."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import xarray as xr

import uqdyn
from uqdyn._device import resolve_device
from uqdyn._progress import stage

from ._interrupt import checkpoint
from .base import StudyData
from .config import STUDIES, StudyConfig, load_config
from .evaluate import evaluate
from .figures import make_figures
from .outputs import _public, atomic_write_text, write_forecasts, write_scores
from .report import build_blocks, write_report

__all__ = [
    "run",
    "study_function",
    "check_output_dir",
    "clean_stale_partials",
    "git_unignored",
    "PARTIAL_MARKER",
]

#: File in a study's temporary ``.partial`` directory naming the process that writes it.
PARTIAL_MARKER = ".uqdyn-partial"

_FUNCTIONS = {
    "advection-diffusion": ("uqdyn.study.advection_diffusion", "run_advection_diffusion"),
    "pendulum": ("uqdyn.study.pendulum", "run_pendulum"),
    "lorenz96": ("uqdyn.study.lorenz96", "run_lorenz96"),
    "shallow-water-inverse": ("uqdyn.study.shallow_water_inverse", "run_shallow_water_inverse"),
    "forecast": ("uqdyn.study.forecast", "run_forecast"),
    "elnino": ("uqdyn.study.forecast", "run_forecast"),
    "co2": ("uqdyn.study.forecast", "run_forecast"),
    "multi-environment": ("uqdyn.study.multi_environment", "run_multi_environment"),
}


def study_function(name: str) -> Callable[[StudyConfig, torch.device], StudyData]:
    """The function that simulates and forecasts study ``name``."""
    if name not in _FUNCTIONS:
        raise ValueError(f"study name {name!r} is unknown; expected one of {sorted(STUDIES)}")
    module, attr = _FUNCTIONS[name]
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


#: Files that mark a directory as the output of a previous study (which --overwrite may replace).
_STUDY_MARKERS = ("report.md", "scores.csv")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Check that ``out`` may receive a study's results.

    A missing or empty directory is fine. An existing non-empty one is refused unless
    ``overwrite`` is set, and even then only when it holds a previous study's results
    (``report.md`` or ``scores.csv``), so that ``--overwrite`` never replaces an unrelated
    directory. The working directory and its parents are always refused.
    """
    if not str(out).strip():
        raise ValueError("out is empty; expected an output directory path")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(
            f"out={str(out)!r} is the working directory or one of its parents; expected a "
            "dedicated output directory"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"out={str(out)!r} exists and is not a directory; expected a directory"
        )
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # missing parents are created (like mkdir -p)
    if not ancestor.is_dir():
        raise NotADirectoryError(
            f"out={str(out)!r} lies under {str(ancestor)!r}, which is a file; expected a "
            "path under a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"out={str(out)!r}: the directory {str(ancestor)!r} is not writable; expected a "
            "writable location (choose another --out)"
        )
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"out={str(out)!r} already exists and is not empty; expected a new or empty "
                "directory (pass --overwrite / overwrite=True to replace a previous study's "
                "results)"
            )
        if not any((out / marker).is_file() for marker in _STUDY_MARKERS):
            raise FileExistsError(
                f"out={str(out)!r} is not empty and holds no previous study results (no "
                f"{' or '.join(_STUDY_MARKERS)}); expected a new, empty or study output "
                "directory, even with --overwrite"
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def clean_stale_partials(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.*.partial`` directories that an interrupted study left in ``directory``.

    A directory is removed only when it holds :data:`PARTIAL_MARKER` (so it was made by
    :func:`run`), the marker names this host, and its process is no longer alive; anything
    else (another live run, a directory of other software) is left alone. Returns the removed
    paths.
    """
    removed: list[Path] = []
    base = Path(directory)
    if not base.is_dir():
        return removed
    host = socket.gethostname()
    for path in base.glob(".*.partial"):
        marker = path / PARTIAL_MARKER
        try:
            owner = json.loads(marker.read_text("utf-8"))
            pid, owner_host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owner_host != host or pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def _make_partial(out: Path) -> Path:
    """Create the temporary ``.NAME.*.partial`` directory next to ``out``, with its marker."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as err:
        reason = err.strerror or str(err)
        raise type(err)(
            f"out={str(out)!r}: cannot create a directory in {str(out.parent)!r} ({reason}); "
            "expected a writable location (choose another --out)"
        ) from None
    try:
        _public(tmp, directory=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (tmp / PARTIAL_MARKER).write_text(json.dumps(owner), "utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def git_unignored(path: str | os.PathLike[str]) -> Path | None:
    """The git work tree that ``path`` lies in when git would track it, else ``None``.

    ``None`` too when git is missing, ``path`` is outside any work tree, or it is ignored
    (``git check-ignore``). Never raises for git's sake.
    """
    target = Path(path).absolute()
    anchor = target
    while not anchor.is_dir() and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=anchor,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if top.returncode != 0 or not top.stdout.strip():
            return None
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(target)],
            cwd=anchor,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if ignored.returncode != 1:  # 0: ignored; 128: an error (e.g. outside the tree)
        return None
    return Path(top.stdout.strip())


def _as_config(config: StudyConfig | Mapping[str, Any]) -> StudyConfig:
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, Mapping):
        values = dict(config)
        if "name" not in values:
            raise ValueError(
                f"config has keys {sorted(values)}; expected a 'name' among {sorted(STUDIES)}"
            )
        name = values.pop("name")
        quick = bool(values.pop("quick", False))
        overwrite = bool(values.pop("overwrite", False))
        progress = bool(values.pop("progress", True))
        return load_config(
            name, quick=quick, overrides=values, overwrite=overwrite, progress=progress
        )
    raise TypeError(
        f"config is a {type(config).__name__}; expected a StudyConfig (see load_config) or a "
        "mapping with a 'name'"
    )


def _silent(message: str) -> None:
    """Drop a progress line (``progress=False``); still a point to stop at when interrupted."""
    checkpoint()


def _say(message: str) -> None:
    """A progress line, after stopping here if an interruption is pending."""
    checkpoint()
    stage(message)


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out``, replacing an old ``out`` last."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def run(config: StudyConfig | Mapping[str, Any], *, command: str | None = None) -> xr.Dataset:
    """Run a study and write its report, forecasts and scores into ``config.out``.

    Mirrors ``uqdyn study``: the data are simulated, the configured models fitted and used
    to forecast validation and test cases, each forecast recalibrated on the validation
    cases (variance scaling and isotonic) and scored raw and recalibrated on the test cases.
    Everything is written first to a temporary directory next to ``out`` which replaces
    ``out`` only when the whole study succeeded, so a failed run leaves a previous study's
    results as they were. An existing non-empty ``out`` is refused unless
    ``config.overwrite``. The temporary directory (``.NAME.*.partial``) holds a marker with
    this process's id: an interrupted run (Ctrl-C, SIGTERM under ``uqdyn study``) removes it,
    and a later run removes those whose process is gone (:func:`clean_stale_partials`). With
    ``config.progress`` every stage reports one line on stderr (model, training, scoring,
    writing) with the time.

    Parameters
    ----------
    config:
        A :class:`StudyConfig` from :func:`load_config`, or a mapping with ``name`` and
        optional ``quick``, ``overwrite``, ``progress`` and configuration keys (nested or
        dotted), e.g. ``{"name": "pendulum", "quick": True, "out": "runs/p", "seed": 1}``.
    command:
        The command line to record in the report.

    Returns
    -------
    xarray.Dataset
        The scores (see :func:`uqdyn.study.evaluate.evaluate`), also written as
        ``scores.nc``; dims ``model`` and ``calibration`` (``raw``, ``variance_scaling``,
        ``isotonic``).
    """
    cfg = _as_config(config)
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite)
    device = resolve_device(cfg.device)
    clean_stale_partials(out.parent)
    say = _say if cfg.progress else _silent
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    study = study_function(cfg.name)  # its imports, before anything is written
    tmp = _make_partial(out)
    try:
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            say(
                f"study {cfg.name}{' (quick)' if cfg.quick else ''}: models "
                f"{', '.join(cfg.models)} on {device}, writing to {tmp.name}"
            )
            data = study(cfg, device)
            evaluation = cfg.section("evaluation")
            say(
                f"scoring {len(data.forecasts)} models on {data.obs_test.shape[0]} test cases: "
                f"recalibration, bootstrap intervals ({evaluation['n_boot']} resamples)"
            )
            scores, predictives = evaluate(data, evaluation, cfg.seed)
        scores.attrs.update(
            {
                "study": cfg.name,
                "seed": cfg.seed,
                "quick": int(cfg.quick),
                "device": str(device),
                "uqdyn_version": uqdyn.__version__,
            }
        )
        say(f"writing forecasts/*.nc and scores ({len(predictives)} models)")
        write_forecasts(tmp, data, predictives, [float(q) for q in evaluation["quantiles"]])
        write_scores(tmp, scores)
        if evaluation["figures"]:
            say("drawing figures")
        figures = (
            make_figures(
                tmp,
                data,
                scores,
                predictives,
                seed=cfg.seed,
                example_cases=int(evaluation["example_cases"]),
            )
            if evaluation["figures"]
            else []
        )
        atomic_write_text(tmp / "config.toml", cfg.to_toml() + "\n")
        command = command or f"uqdyn study {cfg.name}" + (" --quick" if cfg.quick else "")
        blocks = build_blocks(
            cfg,
            data,
            scores,
            figures,
            tmp,
            command=command,
            wall_seconds=time.perf_counter() - start,
            device=str(device),
        )
        say("writing report")
        write_report(tmp, blocks)
        check_output_dir(out, cfg.overwrite)  # nothing appeared meanwhile
        checkpoint()
        (tmp / PARTIAL_MARKER).unlink()
        _swap_in(tmp, out)
        if cfg.progress:
            stage(f"done in {time.perf_counter() - start:.1f} s: {out}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    return scores
