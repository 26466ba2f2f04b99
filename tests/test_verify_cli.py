"""``uqdyn verify``: outputs, one-line errors (exit 2, no traceback, no partial output)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from uqdyn.cli import main
from uqdyn.study.runner import PARTIAL_MARKER

LAT = np.array([-20.0, 0.0, 10.0, 20.0, 40.0])
LON = np.array([0.0, 90.0, 180.0, 270.0])
INIT = pd.date_range("2021-03-01", periods=6, freq="D")
LEAD = pd.to_timedelta([1, 2], unit="D")
TIMES = pd.date_range("2021-03-01", periods=9, freq="D")


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    fc = xr.Dataset(
        {
            "z": (
                ("init_time", "lead", "lat", "lon", "member"),
                rng.standard_normal((6, 2, 5, 4, 8)),
            )
        },
        coords={"init_time": INIT, "lead": LEAD, "lat": LAT, "lon": LON},
    )
    obs = xr.Dataset(
        {"z": (("time", "lat", "lon"), rng.standard_normal((9, 5, 4)))},
        coords={"time": TIMES, "lat": LAT, "lon": LON},
    )
    fc_path, obs_path = tmp_path / "fc.zarr", tmp_path / "obs.nc"
    fc.to_zarr(fc_path, mode="w", zarr_format=2)
    obs.to_netcdf(obs_path)
    return fc_path, obs_path


def _args(archive: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    fc, obs = archive
    return ["verify", str(fc), str(obs), "--var", "z", "--valid-time", "--out", str(out), *extra]


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("uqdyn: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not list(tmp_path.glob(".*.partial")), sorted(p.name for p in tmp_path.iterdir())


def test_verify_writes_tables_figures_and_report(archive, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = _args(archive, out, "--by", "lead", "--dims", "init_time", "lat", "lon")
    assert main([*args, "--weights", "coslat", "--threshold", "0.5"]) == 0
    assert "2 row(s) by lead" in capsys.readouterr().out
    table = pd.read_csv(out / "scores.csv")
    assert list(table["lead"]) == ["1D", "2D"]
    assert {"crps", "crps_fair", "spread_skill", "coverage50", "coverage90"} <= set(table)
    for name in ("scores.nc", "report.html", "report.md", "figures/rank_histogram.png"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "crps_map.png").is_file()
    assert (out / "figures" / "scores_by_lead.png").is_file()
    assert (out / "figures" / "corp_reliability.png").is_file()
    html = (out / "report.html").read_text()
    assert "uqdyn verify" in html and "data:image/png;base64" in html
    assert not list(tmp_path.glob(".*.partial"))
    # a second run needs --overwrite, then replaces the previous output
    assert main(_args(archive, out, "--by", "lead")) == 2
    _one_error_line(capsys.readouterr().err, "--overwrite")
    assert main(_args(archive, out, "--by", "lead", "--overwrite", "--no-figures")) == 0
    assert not (out / "figures").exists()


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--var", "t2m"], ["no variable 't2m'", "variables: z"]),
        (["--obs-var", "sst"], ["observations have no variable 'sst'"]),
        (["--dims", "lat", "height"], ["--dims names 'height'", "init_time"]),
        (["--by", "step"], ["--by names 'step'"]),
        (["--by", "lead", "--dims", "lead", "lat"], ["'lead' is in both --dims and --by"]),
        (["--weights", "area"], ["--weights 'area'", "coslat"]),
        (["--member-dim", "ens"], ["member dim 'ens'", "quantiles"]),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    archive, tmp_path: Path, capsys, extra: list[str], needles: list[str]
) -> None:
    out = tmp_path / "out"
    assert main(_args(archive, out, *extra)) == 2
    _one_error_line(capsys.readouterr().err, *needles)
    _nothing_written(tmp_path, out)


def test_mismatched_coordinates_and_missing_files(archive, tmp_path: Path, capsys) -> None:
    fc, obs_path = archive
    shifted = xr.open_dataset(obs_path).load()
    shifted = shifted.assign_coords(lat=np.where(np.arange(5) == 3, LAT + 0.5, LAT))
    bad = tmp_path / "shifted.nc"
    shifted.to_netcdf(bad)
    out = tmp_path / "out"
    assert main(["verify", str(fc), str(bad), "--var", "z", "--valid-time", "--out", str(out)]) == 2
    _one_error_line(
        capsys.readouterr().err, "lat differs: forecasts 20.0, observations 20.5 at index 3"
    )
    assert main(["verify", str(fc), str(obs_path), "--var", "z", "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "observations have dims ['time']", "--valid-time")
    missing = tmp_path / "nope.nc"
    assert main(["verify", str(fc), str(missing), "--var", "z", "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "observations", "nope.nc", "does not exist")
    _nothing_written(tmp_path, out)


def test_missing_var_flag_is_a_usage_error(archive, tmp_path: Path, capsys) -> None:
    fc, obs = archive
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(fc), str(obs)])
    assert exc.value.code == 2
    _one_error_line(capsys.readouterr().err, "--var")


@pytest.mark.parametrize("kind", ["raised", "swallowed"])
def test_ctrl_c_while_writing_leaves_no_files(
    archive, tmp_path: Path, capsys, monkeypatch, kind: str
) -> None:
    """An interruption while the outputs are written removes the temporary directory.

    ``swallowed``: the signal was lost inside library code and is raised again at the next
    checkpoint of the writer.
    """
    import uqdyn.verify.report as report

    real = report.write_tables

    def interrupted(out_dir: Path, result):
        real(out_dir, result)  # scores.csv / scores.nc are in the temporary directory now
        assert (out_dir / "scores.csv").is_file()
        if kind == "raised":
            raise KeyboardInterrupt
        from uqdyn.study._interrupt import _pending

        _pending.append(KeyboardInterrupt)  # a signal swallowed by library code
        return real(out_dir, result)

    monkeypatch.setattr(report, "write_tables", interrupted)
    out = tmp_path / "out"
    assert main(_args(archive, out, "--by", "lead")) == 130
    _one_error_line(capsys.readouterr().err, "interrupted")
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize(
    ("signum", "code", "needle"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_scoring_exits_cleanly(tmp_path: Path, signum, code, needle) -> None:
    """The real console: Ctrl-C while scoring leaves neither ``out`` nor a ``.partial``."""
    rng = np.random.default_rng(0)
    init = pd.date_range("2021-01-01", periods=60, freq="D")
    fc = xr.Dataset(
        {
            "z": (
                ("init_time", "lead", "lat", "lon", "member"),
                rng.standard_normal((60, 3, 5, 4, 8)),
            )
        },
        coords={"init_time": init, "lead": [1, 2, 3], "lat": LAT, "lon": LON},
    )
    obs = fc["z"].mean("member").to_dataset()
    fc.to_netcdf(tmp_path / "fc.nc")
    obs.to_netcdf(tmp_path / "obs.nc")
    out = tmp_path / "out"
    args = ["verify", "fc.nc", "obs.nc", "--var", "z", "--dims", "lat", "lon", "--out", "out"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uqdyn.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f".out.*.partial/{PARTIAL_MARKER}")):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate()
                pytest.fail(f"verify never started scoring (rc {proc.returncode}): {err}")
            time.sleep(0.02)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    _one_error_line(stderr, needle)
    _nothing_written(tmp_path, out)
