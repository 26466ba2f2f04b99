"""uqdyn.study end to end: the advection-diffusion study on CPU, its files and the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import properscoring as ps
import pytest
import torch
import xarray as xr
from scipy.stats import norm

from uqdyn.cli import main
from uqdyn.study import CALIBRATIONS, load_config, run

# Smaller than --quick so that the end-to-end test stays within a few seconds on one core.
TINY_AD = [
    "data.size=8",
    "data.n_train=16",
    "data.n_valid=6",
    "data.n_test=6",
    "data.lead_frames=3",
    "model.convcnp.width=8",
    "model.convcnp.steps=10",
    "model.cnp.width=16",
    "model.cnp.steps=20",
    "model.cnp.context_points=64",
    "model.cnp.target_points=64",
    "model.gp.steps=8",
    "model.physics_ensemble.particles=32",
    "model.physics_ensemble.members=16",
    "evaluation.isotonic_nodes=51",
    "evaluation.rank_members=9",
]
MODELS = ["convcnp", "climatology", "cnp", "gp", "physics_ensemble"]


def _cli(args: list[str]) -> int:
    return main(["study", *args])


@pytest.fixture(scope="module")
def ad_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the quick advection-diffusion study (tiny overrides) through the CLI."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("study") / "ad"
    args = ["advection-diffusion", "--quick", "--out", str(out), "--device", "cpu"]
    args += ["--seed", "5", "--no-progress"]
    for item in TINY_AD:
        args += ["--set", item]
    try:
        assert _cli(args) == 0
    finally:
        torch.set_num_threads(previous)
    return out


def test_outputs_exist_and_parse(ad_run: Path) -> None:
    for name in ("report.md", "report.html", "scores.csv", "scores.nc", "config.toml"):
        assert (ad_run / name).is_file(), name
    assert not list(ad_run.parent.glob(".ad.*")), "temporary directories were left behind"
    with open(ad_run / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], r["calibration"]) for r in rows] == [
        (m, c) for m in MODELS for c in CALIBRATIONS
    ]
    for row in rows:
        for key in ("crps", "rmse", "coverage90", "spread_skill", "miscalibration_area"):
            assert math.isfinite(float(row[key])), (row["model"], key)
    scores = xr.load_dataset(ad_run / "scores.nc")
    assert list(scores["model"].values) == MODELS
    assert scores["crps_by_lead"].dims == ("model", "calibration", "lead_time")
    assert scores.sizes["lead_time"] == 3
    np.testing.assert_allclose(
        [float(r["crps"]) for r in rows], scores["crps"].values.reshape(-1), rtol=1e-5
    )
    # the report names every model, embeds every figure and links none from outside
    md = (ad_run / "report.md").read_text()
    page = (ad_run / "report.html").read_text()
    figures = sorted(p.name for p in (ad_run / "figures").glob("*.png"))
    for expected in (
        "reliability.png",
        "pit_histogram.png",
        "rank_histogram.png",
        "coverage.png",
        "spread_skill.png",
        "crps_lead.png",
        "field_maps_case0.png",
    ):
        assert expected in figures
        assert f"figures/{expected}" in md
    assert page.count('src="data:image/png;base64,') == len(figures)
    assert 'src="figures/' not in page
    for model in MODELS:
        assert model in md and model in page
    # the recorded configuration reloads to the same settings
    cfg = load_config(
        "advection-diffusion", config_file=ad_run / "config.toml", out=str(ad_run), seed=5
    )
    assert cfg.get("data.size") == 8 and cfg.get("model.cnp.steps") == 20


def test_scores_match_properscoring_on_the_written_forecasts(ad_run: Path) -> None:
    """Raw CRPS and coverage recomputed from forecasts/*.nc with properscoring and scipy."""
    scores = xr.load_dataset(ad_run / "scores.nc")
    for model in ("cnp", "gp"):
        fc = xr.load_dataset(ad_run / "forecasts" / f"{model}.nc")
        assert fc.attrs["Conventions"] == "CF-1.8"
        assert fc["forecast_quantile"].dims[:2] == ("calibration", "quantile")
        obs = fc["observation"].values.astype(np.float64)
        mu = fc["mean"].sel(calibration="raw").values.astype(np.float64)
        sd = fc["stddev"].sel(calibration="raw").values.astype(np.float64)
        crps = ps.crps_gaussian(obs, mu, sd).mean()
        assert float(scores["crps"].sel(model=model, calibration="raw")) == pytest.approx(
            crps, rel=1e-4
        )
        z = norm.ppf(0.95)
        inside = np.mean((obs >= mu - z * sd) & (obs <= mu + z * sd))
        got = float(scores["coverage90"].sel(model=model, calibration="raw"))
        assert got == pytest.approx(inside, abs=2.0 / obs.size)
        q = fc["forecast_quantile"].sel(calibration="raw")
        np.testing.assert_allclose(
            q.sel(quantile=0.95).values, mu + norm.ppf(0.95) * sd, rtol=1e-4, atol=1e-5
        )
    fc = xr.load_dataset(ad_run / "forecasts" / "physics_ensemble.nc")
    members = fc["ensemble_member"].values.astype(np.float64)  # (member, case, lead, y, x)
    assert fc["ensemble_member"].dims[0] == "member"
    crps = ps.crps_ensemble(fc["observation"].values, np.moveaxis(members, 0, -1)).mean()
    got = float(scores["crps"].sel(model="physics_ensemble", calibration="raw"))
    assert got == pytest.approx(crps, rel=1e-4)


def test_same_seed_same_scores_other_seed_differs(ad_run: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    reference = xr.load_dataset(ad_run / "scores.nc")
    cfg = load_config(
        "advection-diffusion",
        quick=True,
        overrides=[*TINY_AD, "evaluation.figures=false"],
        seed=5,
        device="cpu",
        out=tmp_path / "again",
        progress=False,
    )
    again = run(cfg)
    for name in ("crps", "rmse", "coverage", "pit_histogram", "rank_histogram", "variance_scale"):
        np.testing.assert_array_equal(again[name].values, reference[name].values, err_msg=name)
    other = load_config(
        "advection-diffusion",
        quick=True,
        overrides=[*TINY_AD, "models=['physics_ensemble']", "evaluation.figures=false"],
        seed=6,
        device="cpu",
        out=tmp_path / "other",
        progress=False,
    )
    changed = run(other)["crps"].sel(model="physics_ensemble")
    assert not np.array_equal(
        changed.values, reference["crps"].sel(model="physics_ensemble").values
    )


def test_existing_output_is_never_overwritten_without_flag(
    ad_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "previous"
    out.mkdir()
    (out / "keep.txt").write_text("old results")
    rc = _cli(["advection-diffusion", "--quick", "--out", str(out), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "not empty" in err
    assert (out / "keep.txt").read_text() == "old results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]
