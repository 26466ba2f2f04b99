"""Run a whole study: simulate, fit, forecast, evaluate, recalibrate, write the outputs."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import xarray as xr

import uqdyn
from uqdyn._device import resolve_device

from .base import StudyData
from .config import STUDIES, StudyConfig, load_config
from .evaluate import evaluate
from .figures import make_figures
from .outputs import _public, atomic_write_text, write_forecasts, write_scores
from .report import build_blocks, write_report

__all__ = ["run", "study_function", "check_output_dir"]

_FUNCTIONS = {
    "advection-diffusion": ("uqdyn.study.advection_diffusion", "run_advection_diffusion"),
    "pendulum": ("uqdyn.study.pendulum", "run_pendulum"),
    "lorenz96": ("uqdyn.study.lorenz96", "run_lorenz96"),
    "shallow-water-inverse": ("uqdyn.study.shallow_water_inverse", "run_shallow_water_inverse"),
    "forecast": ("uqdyn.study.forecast", "run_forecast"),
    "elnino": ("uqdyn.study.forecast", "run_forecast"),
    "co2": ("uqdyn.study.forecast", "run_forecast"),
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
    ``config.overwrite``.

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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    _public(tmp, directory=True)
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            data = study_function(cfg.name)(cfg, device)
            evaluation = cfg.section("evaluation")
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
        write_forecasts(tmp, data, predictives, [float(q) for q in evaluation["quantiles"]])
        write_scores(tmp, scores)
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
        write_report(tmp, blocks)
        check_output_dir(out, cfg.overwrite)  # nothing appeared meanwhile
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    return scores
