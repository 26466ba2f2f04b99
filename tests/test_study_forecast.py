"""The forecast study on real and user data: quality claims, coordinates, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from uqdyn.cli import main
from uqdyn.study import run

needs_statsmodels = pytest.mark.skipif(
    importlib.util.find_spec("statsmodels") is None, reason="statsmodels not installed"
)

TINY = {
    "evaluation.n_boot": 100,
    "evaluation.figures": False,
    "evaluation.isotonic_nodes": 51,
    "evaluation.selection_candidates": ["raw", "variance_scaling", "grouped_variance_scaling"],
    "model.gp.steps": 15,
    "model.gp.max_points": 300,
}


@needs_statsmodels
def test_elnino_references_and_gp_skill(tmp_path: Path, one_thread) -> None:
    scores = run(
        {
            "name": "elnino",
            "quick": True,
            "out": str(tmp_path / "elnino"),
            "device": "cpu",
            "progress": False,
            "models": ["climatology", "persistence", "damped_persistence", "gp"],
            **TINY,
        }
    )
    skill = scores["skill"].sel(reference="climatology")
    lower = scores["skill_lower"].sel(reference="climatology")
    # damped anomaly persistence: skill about +0.6 at one month against the monthly
    # climatology, significantly positive; raw persistence is worse than climatology
    assert 0.45 < float(skill.sel(model="damped_persistence", lead=1)) < 0.7
    assert float(lower.sel(model="damped_persistence", lead=1)) > 0
    assert (
        float(scores["skill_upper"].sel(model="persistence", reference="climatology", lead=6)) < 0
    )
    assert float(skill.sel(model="gp", lead=1)) > 0.45
    cover = float(scores["coverage90"].sel(model="damped_persistence", calibration="raw"))
    assert 0.8 < cover < 0.95
    report = (tmp_path / "elnino" / "report.md").read_text()
    assert "**persistence is worse than climatology**" in report
    assert "CRPS skill against damped_persistence" in report
    fc = xr.load_dataset(tmp_path / "elnino" / "forecasts" / "gp.nc")
    assert fc["mean"].dims == ("calibration", "origin", "lead", "variable")
    assert np.issubdtype(fc["origin"].dtype, np.datetime64)
    assert pd.Timestamp(fc["origin"].values[0]) == pd.Timestamp("1995-12-01")
    assert pd.Timestamp(fc["valid_time"].values[0, 0]) == pd.Timestamp("1996-01-01")


def _csv(path: Path, n: int = 900, gaps: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2001-01-01", periods=n, freq="D")
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = 0.7 * x[i - 1] + rng.normal()
    if gaps:
        x[rng.random(n) < 0.05] = np.nan
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "level": x + 50.0}).to_csv(path, index=False)
    return path


def test_forecast_study_on_a_user_csv_with_gaps(tmp_path: Path, one_thread) -> None:
    data = _csv(tmp_path / "gauge.csv")
    out = tmp_path / "study"
    args = ["study", "forecast", "--data", str(data), "--leads", "1,2", "--context", "5"]
    args += ["--quick", "--out", str(out), "--no-progress", "--device", "cpu"]
    args += [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    args += ['--set=models=["climatology", "persistence", "damped_persistence", "gp"]']
    assert main(args) == 0
    scores = xr.load_dataset(out / "scores.nc")
    skill = scores["skill"].sel(model="gp", reference="climatology")
    assert float(skill.sel(lead=1)) > 0.2  # an AR(1) at 0.7: one step ahead is predictable
    assert scores.attrs["n_test_unscored"] > 0  # the gaps are left out, not filled
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--leads", "5000"], r"largest lead \(5000 steps\)"),
        (["--var", "levl"], r"did you mean 'level'"),
        (["--leads", "1,2h"], "mixes steps and time offsets"),
        (["--set", "data.split=[0.98, 0.01, 0.01]"], "only .* forecast origin"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, capsys, extra, match) -> None:
    data = _csv(tmp_path / "gauge.csv")
    args = ["study", "forecast", "--quiet", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uqdyn: error:") and err.count("\n") == 1
    assert pytest.importorskip("re").search(match, err), err


def test_data_problems_are_named(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.csv"
    pd.DataFrame(
        {"date": pd.date_range("2000", periods=50).strftime("%Y-%m-%d"), "v": np.nan}
    ).to_csv(empty, index=False)
    assert (
        main(
            ["study", "forecast", "--data", str(empty), "--var", "v", "--out", str(tmp_path / "a")]
        )
        == 2
    )
    assert "no observed value" in capsys.readouterr().err
    shuffled = tmp_path / "shuffled.csv"
    dates = pd.date_range("2000", periods=50).strftime("%Y-%m-%d").tolist()
    dates[10], dates[11] = dates[11], dates[10]
    pd.DataFrame({"date": dates, "v": np.arange(50.0)}).to_csv(shuffled, index=False)
    assert main(["study", "forecast", "--data", str(shuffled), "--out", str(tmp_path / "b")]) == 2
    assert "not increasing at position 11" in capsys.readouterr().err
    assert main(["study", "forecast", "--out", str(tmp_path / "c")]) == 2
    assert "--data FILE" in capsys.readouterr().err
    assert main(["study", "pendulum", "--leads", "1,2"]) == 2
    assert "simulates its own data" in capsys.readouterr().err


def _anomaly_netcdf(path: Path, n_days: int = 260, size: int = 12, seed: int = 1) -> Path:
    """The gridded anomaly field of ``examples/forecast_own_data.py`` (land, missing maps)."""
    spec = importlib.util.spec_from_file_location(
        "forecast_own_data",
        Path(__file__).resolve().parents[1] / "examples" / "forecast_own_data.py",
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.write_anomaly_netcdf(path, n_days, seed=seed, size=size)
    return path


def test_forecast_study_on_a_gridded_netcdf_with_land(tmp_path: Path, one_thread) -> None:
    data = _anomaly_netcdf(tmp_path / "anomaly.nc")
    out = tmp_path / "study"
    args = ["study", "forecast", "--data", str(data), "--var", "sst_anomaly"]
    args += ["--leads", "1,2", "--context", "3", "--quick", "--out", str(out)]
    args += ["--no-progress", "--device", "cpu"]
    args += [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    args += ['--set=models=["climatology", "damped_persistence", "np"]', "--set=model.np.steps=200"]
    assert main(args) == 0
    scores = xr.load_dataset(out / "scores.nc")
    # the ConvCNP sees the eastward drift that a pointwise AR(1) cannot: it beats damped
    # persistence at one day, with the whole bootstrap interval above zero
    vs_damped = scores.sel(model="np", reference="damped_persistence", lead=1)
    assert float(vs_damped["skill_lower"]) > 0, float(vs_damped["skill"])
    land = xr.load_dataset(data)["sst_anomaly"].isnull().all("time").values
    assert 0 < land.sum() < land.size
    fc = xr.load_dataset(out / "forecasts" / "np.nc")
    mean = fc["mean"].sel(calibration="raw").isel(origin=0, lead=0)
    assert mean.dims == ("lat", "lon")
    assert bool(np.isnan(mean.values[land]).all())  # land is never forecast
    assert bool(np.isfinite(mean.values[~land]).all())
