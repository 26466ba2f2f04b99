"""``verify_files``: open, align, score and write, atomically (what ``uqdyn verify`` runs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from uqdyn.study._interrupt import checkpoint
from uqdyn.study.runner import (
    PARTIAL_MARKER,
    _make_partial,
    _swap_in,
    check_output_dir,
    clean_stale_partials,
)

from .io import align, open_archive, read_forecast, read_observations
from .report import write_outputs
from .run import LEVELS, VerifyResult, verify

__all__ = ["verify_files"]


def verify_files(
    forecasts: str | os.PathLike[str],
    observations: str | os.PathLike[str],
    *,
    var: str,
    obs_var: str | None = None,
    member_dim: str = "member",
    mean_var: str | None = None,
    std_var: str | None = None,
    dims: Sequence[str] | None = None,
    by: Sequence[str] = (),
    weights: str | None = None,
    valid_time: bool = False,
    threshold: float | None = None,
    levels: Sequence[float] = LEVELS,
    out: str | os.PathLike[str] = "uqdyn-verify",
    overwrite: bool = False,
    figures: bool = True,
    command: str | None = None,
    seed: int = 0,
) -> VerifyResult:
    """Verify an archived forecast against observations and write the results to ``out``.

    Opens both archives lazily (:func:`uqdyn.verify.io.open_archive`), reads the forecast
    (:func:`~uqdyn.verify.io.read_forecast`), aligns the observations
    (:func:`~uqdyn.verify.io.align`), scores one slice at a time (:func:`uqdyn.verify.verify`)
    and writes ``scores.csv``, ``scores.nc``, ``figures/*.png``, ``report.md`` and
    ``report.html``. The archives, variables and coordinates are checked before anything is
    written; the results go into a temporary ``.NAME.*.partial`` directory next to ``out``
    (made before scoring starts, with this process's id in its marker) that replaces ``out``
    only when all succeeded: an error or an interruption leaves no half-written output.
    """
    out_path = Path(out)
    check_output_dir(out_path, overwrite)
    fc_ds = open_archive(forecasts, "forecasts")
    obs_ds = open_archive(observations, "observations")
    forecast = read_forecast(fc_ds, var, member_dim=member_dim, mean_var=mean_var, std_var=std_var)
    obs = read_observations(obs_ds, obs_var or var)
    forecast, obs = align(forecast, obs, valid_time=valid_time)
    checkpoint()
    clean_stale_partials(out_path.parent)
    tmp = _make_partial(out_path)
    try:
        result = verify(
            forecast, obs, dims=dims, by=by, weights=weights, levels=levels,
            threshold=threshold, seed=seed,
        )  # fmt: skip
        checkpoint()
        write_outputs(
            tmp,
            result,
            command=command or "uqdyn verify",
            sources={
                "forecasts": os.fspath(forecasts),
                "observations": os.fspath(observations),
            },
            threshold=threshold,
            figures=figures,
        )
        check_output_dir(out_path, overwrite)
        checkpoint()
        (tmp / PARTIAL_MARKER).unlink()
        _swap_in(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
