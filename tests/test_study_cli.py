"""uqdyn study: configuration handling, CLI errors, output directories, evaluation, studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import properscoring as ps
import pytest
import torch
import xarray as xr

from uqdyn.cli import main
from uqdyn.predictive import Normal
from uqdyn.study import STUDIES, ModelForecast, StudyData, load_config, run
from uqdyn.study import runner as runner_module
from uqdyn.study._checks import rule_for
from uqdyn.study._particles import tempered_resample
from uqdyn.study.config import OVERRIDE_EXAMPLE, default_config, parse_override, valid_keys
from uqdyn.study.evaluate import evaluate
from uqdyn.study.outputs import forecast_dataset, write_netcdf

EVAL = {
    "coverage_levels": [0.5, 0.9],
    "rank_members": 9,
    "pit_bins": 10,
    "spread_bins": 5,
    "quantiles": [0.1, 0.5, 0.9],
    "example_cases": 1,
    "isotonic_nodes": 51,
    "figures": True,
}


def _synthetic(n: int = 400, scale: float = 0.5, kind: str = "vector") -> StudyData:
    """Observations N(0, 1); an over-confident Normal(0, scale) forecast and a calibrated one."""
    g = torch.Generator().manual_seed(0)
    shape = (n, 3, 2) if kind == "vector" else (n // 20, 2, 4, 4)
    obs_v, obs_t = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    zeros = torch.zeros(shape)
    narrow = ModelForecast(
        "narrow",
        Normal(zeros, scale * torch.ones(shape)),
        Normal(zeros, scale * torch.ones(shape)),
        0.0,
        "over-confident",
    )
    exact = ModelForecast(
        "exact",
        Normal(zeros, torch.ones(shape)),
        Normal(zeros, torch.ones(shape)),
        0.0,
        "calibrated",
    )
    if kind == "vector":
        dims = ("case", "lead_time", "component")
        coords = {"lead_time": np.array([0.1, 0.2, 0.3]), "component": np.arange(2)}
    else:
        dims = ("case", "lead_time", "y", "x")
        coords = {"lead_time": np.array([0.1, 0.2]), "y": np.arange(4.0), "x": np.arange(4.0)}
    return StudyData(
        obs_valid=obs_v,
        obs_test=obs_t,
        dims=dims,
        coords=coords,
        forecasts=[narrow, exact],
        kind=kind,
        variable="y",
        long_name="synthetic observation",
        title="synthetic",
        context_times=np.array([-0.1, 0.0]) if kind == "vector" else None,
        context_test=torch.zeros(shape[0], 2, *shape[2:]) if kind == "vector" else None,
    )


# ----------------------------------------------------------------------------- configuration
def test_list_names_every_study(capsys) -> None:
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    names = {"pendulum", "advection-diffusion", "shallow-water-inverse", "lorenz96"}
    names |= {"forecast", "elnino", "co2", "multi-environment"}
    for name in names:
        assert name in out
    assert set(STUDIES) == names


def test_unknown_study_lists_valid_names(capsys) -> None:
    assert main(["study", "advection"]) == 2
    err = capsys.readouterr().err
    assert "advection" in err
    for name in STUDIES:
        assert name in err
    with pytest.raises(ValueError, match="lorenz96"):
        load_config("lorenz-63")


def test_bad_config_keys_list_valid_keys(tmp_path: Path, capsys) -> None:
    assert main(["study", "pendulum", "--set", "model.cnp.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "model.cnp.stepz" in err and "model.cnp.steps" in err and "data.noise_std" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nn_trian = 3\n")
    assert main(["study", "pendulum", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "data.n_trian" in err and "data.n_train" in err
    with pytest.raises(ValueError, match="is a str; expected an int"):
        load_config("pendulum", overrides={"data.n_train": "many"})
    with pytest.raises(ValueError, match="models contains 'gan'"):
        load_config("pendulum", overrides=["models=['gp', 'gan']"])
    with pytest.raises(ValueError, match="is for study 'pendulum'"):
        other = tmp_path / "other.toml"
        other.write_text('name = "pendulum"\n')
        load_config("lorenz96", config_file=other)


def test_every_key_of_every_study_is_checked() -> None:
    for name in STUDIES:
        for key in valid_keys(name):
            if key not in ("name", "models"):
                assert rule_for(key) is not None, (name, key)


@pytest.mark.parametrize(
    ("study", "override", "message"),
    [
        ("pendulum", {"data.n_test": 0}, "data.n_test = 0 (an int); expected an int >= 1"),
        (
            "pendulum",
            {"data.context_steps": 1},
            "data.context_steps = 1 (an int); expected an int >= 2",
        ),
        ("pendulum", {"model.gp.lr": 0.0}, "model.gp.lr = 0.0 (a float); expected a float > 0"),
        ("pendulum", {"data.alpha_range": [0.3, 0.1]}, "data.alpha_range = [0.3, 0.1] (a list)"),
        ("lorenz96", {"model.physics_ensemble.ess_fraction": 1.5}, "ess_fraction = 1.5"),
        ("advection-diffusion", {"model.convcnp.architecture": "mlp"}, "one of 'unet'"),
        (
            "advection-diffusion",
            {"model.climatology.pooling": "global"},
            "model.climatology.pooling",
        ),
        ("advection-diffusion", {"evaluation.ci_level": 1.0}, "evaluation.ci_level = 1.0"),
        ("advection-diffusion", {"evaluation.quantiles": [0.0, 0.5]}, "evaluation.quantiles"),
        ("shallow-water-inverse", {"data.drop": 1.0}, "data.drop = 1.0 (a float)"),
        ("shallow-water-inverse", {"model.ambient_gan.scheduler": "step"}, "scheduler = 'step'"),
        ("elnino", {"data.split": [0.5, 0.5, 0.5]}, "data.split = [0.5, 0.5, 0.5]"),
        ("elnino", {"data.leads": [0, 1]}, "data.leads = [0, 1]"),
        ("elnino", {"data.split_dates": ["1990-01-01", "1980-01-01"]}, "data.split_dates"),
        ("co2", {"model.np.model": "gpt"}, "model.np.model = 'gpt'"),
        ("co2", {"evaluation.selection_candidates": ["raw", "magic"]}, "selection_candidates"),
        ("co2", {"data.context_span": "soon"}, "data.context_span = 'soon'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(study, override, message) -> None:
    with pytest.raises(ValueError) as exc:
        load_config(study, quick=True, overrides=override)
    assert message in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_bad_value_fails_before_any_compute(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    def never(name):
        raise AssertionError("the study started despite a bad configuration")

    monkeypatch.setattr(runner_module, "study_function", never)
    with pytest.raises(ValueError, match=r"data\.n_test = 0"):
        run({"name": "pendulum", "quick": True, "out": str(tmp_path / "o"), "data.n_test": 0})
    assert not any(tmp_path.iterdir())
    # a U-Net ConvCNP needs a grid divisible by 2**depth: refused at once, not after training
    with pytest.raises(ValueError, match=r"model\.convcnp\.depth = 3 with data\.size = 20"):
        load_config("advection-diffusion", overrides={"data.size": 20})


def test_grammar_of_type_errors() -> None:
    with pytest.raises(ValueError, match="'x' is a str; expected an int like the default"):
        load_config("pendulum", overrides={"model.gp.steps": "x"})
    with pytest.raises(ValueError, match="True is a bool; expected a float like the default"):
        load_config("pendulum", overrides={"model.gp.lr": True})
    with pytest.raises(ValueError, match="is an int; expected a list"):
        load_config("pendulum", overrides={"evaluation.quantiles": 3})


def test_the_override_example_is_a_valid_key_of_every_study(capsys) -> None:
    key, value = parse_override(OVERRIDE_EXAMPLE)
    for name in STUDIES:
        assert key in valid_keys(name), name
        if name != "forecast":  # the forecast study needs a data file
            assert load_config(name, overrides=[OVERRIDE_EXAMPLE]).get(key) == value
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert OVERRIDE_EXAMPLE in capsys.readouterr().out
    with pytest.raises(ValueError, match=OVERRIDE_EXAMPLE):
        parse_override("steps")


def test_config_layers_and_round_trip(tmp_path: Path) -> None:
    assert parse_override("model.cnp.lr=3e-4") == ("model.cnp.lr", 3e-4)
    assert parse_override("device=cpu") == ("device", "cpu")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("steps")
    full, quick = (
        default_config("advection-diffusion"),
        default_config("advection-diffusion", quick=True),
    )
    assert quick["data"]["size"] < full["data"]["size"]
    assert "quick" not in full and "data.size" in valid_keys("advection-diffusion")
    cfg = load_config("pendulum", quick=True, overrides={"model.gp.lr": 1}, seed=3)
    assert cfg.get("model.gp.lr") == 1.0 and isinstance(cfg.get("model.gp.lr"), float)
    assert cfg.get("data.n_train") == default_config("pendulum", quick=True)["data"]["n_train"]
    path = tmp_path / "cfg.toml"
    path.write_text(cfg.to_toml())
    again = load_config("pendulum", config_file=path)
    assert again.params == cfg.params and again.seed == 3 and again.models == cfg.models
    with pytest.raises(TypeError, match="mapping with a 'name'"):
        run(42)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- evaluation
def test_evaluation_against_independent_references() -> None:
    data = _synthetic()
    scores, predictives = evaluate(data, EVAL, seed=0)
    obs = data.obs_test.double().numpy()
    for model, sd in (("narrow", 0.5), ("exact", 1.0)):
        expected = ps.crps_gaussian(obs, 0.0, sd).mean()
        assert float(scores["crps"].sel(model=model, calibration="raw")) == pytest.approx(
            expected, rel=1e-5
        )
    # over-confident by 2: raw 90% interval covers P(|Z| < 1.645 / 2) = 0.59; variance scaling
    # fitted on the validation cases finds s close to 2 and restores the coverage
    raw = float(scores["coverage90"].sel(model="narrow", calibration="raw"))
    assert raw == pytest.approx(
        2 * 0.5 * (1 + torch.erf(torch.tensor(1.6449 / 2 / 2**0.5)).item()) - 1, abs=0.04
    )
    assert float(scores["variance_scale"].sel(model="narrow")) == pytest.approx(2.0, rel=0.06)
    for cal in ("variance_scaling", "isotonic"):
        cov = float(scores["coverage90"].sel(model="narrow", calibration=cal))
        assert abs(cov - 0.9) < 0.04, cal
        assert float(scores["crps"].sel(model="narrow", calibration=cal)) < float(
            scores["crps"].sel(model="narrow", calibration="raw")
        )
    ssr = float(scores["spread_skill"].sel(model="exact", calibration="raw"))
    assert ssr == pytest.approx(1.0, abs=0.06)
    # PIT of an over-confident forecast piles up in the outer bins; calibrated is flat
    pit_narrow = scores["pit_histogram"].sel(model="narrow", calibration="raw").values
    assert pit_narrow[0] > 2 and pit_narrow[-1] > 2
    assert (
        np.abs(scores["pit_histogram"].sel(model="exact", calibration="raw").values - 1).max()
        < 0.35
    )
    assert set(predictives["narrow"]) == {"raw", "variance_scaling", "isotonic", "selected"}
    # the per-lead cross-validated choice recalibrates the over-confident forecast at every
    # lead and keeps the calibrated one raw
    assert all(m != "raw" for m in scores["selected_method"].sel(model="narrow").values)
    assert all(m == "raw" for m in scores["selected_method"].sel(model="exact").values)
    cov = float(scores["coverage90"].sel(model="narrow", calibration="selected"))
    assert abs(cov - 0.9) < 0.04
    # every interval holds its estimate, and the CRPS interval of the calibrated forecast has
    # the width of the i.i.d. standard error over the 400 independent cases
    for name in ("crps", "rmse", "coverage90", "spread_skill"):
        lo, hi = scores[f"{name}_lower"], scores[f"{name}_upper"]
        assert bool(((lo <= scores[name]) & (scores[name] <= hi)).all()), name
    exact = scores.sel(model="exact", calibration="raw")
    per_case = ps.crps_gaussian(obs, 0.0, 1.0).mean(axis=(1, 2))
    expected_width = 2 * 1.645 * per_case.std(ddof=1) / np.sqrt(per_case.size)
    width = float(exact["crps_upper"] - exact["crps_lower"])
    assert width == pytest.approx(expected_width, rel=0.2)


def test_nan_observations_are_not_scored() -> None:
    data = _synthetic()
    obs = data.obs_test.clone()
    obs[::3, 0, 0] = float("nan")
    data.obs_test = obs
    scores, _ = evaluate(data, EVAL, seed=0)
    keep = np.isfinite(obs.numpy())
    expected = ps.crps_gaussian(obs.double().numpy()[keep], 0.0, 0.5).mean()
    assert float(scores["crps"].sel(model="narrow", calibration="raw")) == pytest.approx(
        expected, rel=1e-5
    )
    assert scores.attrs["n_test_points"] == int(keep.sum())
    assert np.isfinite(scores["crps_by_lead"].values).all()


def test_forecast_netcdf_round_trip(tmp_path: Path) -> None:
    for kind in ("vector", "field"):
        data = _synthetic(kind=kind)
        _, predictives = evaluate(data, EVAL, seed=1)
        ds = forecast_dataset(data, "narrow", predictives["narrow"], EVAL["quantiles"])
        path = tmp_path / f"{kind}.nc"
        write_netcdf(ds, path)
        back = xr.load_dataset(path)
        xr.testing.assert_identical(back, ds)
        assert back["forecast_quantile"].dims == ("calibration", "quantile", *data.dims)
        assert back["quantile"].attrs["long_name"].startswith("quantile level")
        median = back["forecast_quantile"].sel(calibration="raw", quantile=0.5).values
        np.testing.assert_allclose(median, 0.0, atol=1e-6)


def test_overwrite_swaps_atomically_and_failures_keep_old_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _synthetic(n=60)
    monkeypatch.setattr(runner_module, "study_function", lambda name: lambda cfg, device: data)
    out = tmp_path / "res"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    base = {"name": "pendulum", "out": str(out), "device": "cpu", "progress": False}
    base.update({f"evaluation.{k}": v for k, v in EVAL.items()})
    with pytest.raises(FileExistsError, match="overwrite"):
        run(base)
    # --overwrite replaces only a previous study's results, never an unrelated directory
    with pytest.raises(FileExistsError, match="no previous study results"):
        run({**base, "overwrite": True})
    with pytest.raises(ValueError, match="working directory"):
        run({**base, "out": ".", "overwrite": True})
    (out / "report.md").write_text("# an earlier study")

    def failing(name: str):
        def study(cfg, device):
            raise RuntimeError("simulated failure")

        return study

    monkeypatch.setattr(runner_module, "study_function", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run({**base, "overwrite": True})
    assert (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    monkeypatch.setattr(runner_module, "study_function", lambda name: lambda cfg, device: data)
    scores = run({**base, "overwrite": True})
    assert not (out / "keep.txt").exists() and (out / "report.html").is_file()
    assert (out / "figures" / "fan_chart_case0.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert list(scores["model"].values) == ["narrow", "exact"]


def test_tempered_resampling_keeps_the_effective_sample_size() -> None:
    g = torch.Generator().manual_seed(0)
    loglik = torch.stack([-500.0 * torch.rand(200, generator=g), torch.zeros(200)])
    idx, beta = tempered_resample(loglik, 50, ess_fraction=0.5, generator=g)
    assert idx.shape == (2, 50)
    w = torch.softmax(beta[0] * loglik[0].double(), 0)
    assert float(1 / w.square().sum()) == pytest.approx(100.0, rel=1e-3)
    assert float(beta[1]) == 1.0 and 0 < float(beta[0]) < 1
    with pytest.raises(ValueError, match="non-finite"):
        tempered_resample(torch.tensor([[0.0, float("nan")]]), 2, ess_fraction=0.5, generator=g)


# ----------------------------------------------------------------------------- other studies
TINY = {
    "pendulum": {
        "data.n_train": 16,
        "data.n_valid": 6,
        "data.n_test": 6,
        "data.context_steps": 5,
        "data.lead_steps": 4,
        "model.cnp.width": 16,
        "model.cnp.steps": 10,
        "model.gp.steps": 5,
        "model.physics_ensemble.particles": 32,
        "model.physics_ensemble.members": 8,
        "model.hybrid.members": 2,
        "model.hybrid.epochs": 1,
        "model.hybrid.steps_per_epoch": 2,
        "model.hybrid.hidden": 8,
    },
    "lorenz96": {
        "data.dim": 5,
        "data.spinup_steps": 10,
        "data.n_train": 16,
        "data.n_valid": 6,
        "data.n_test": 6,
        "data.context_steps": 4,
        "data.lead_steps": 3,
        "model.cnp.width": 16,
        "model.cnp.steps": 10,
        "model.gp.steps": 5,
        "model.physics_ensemble.particles": 32,
        "model.physics_ensemble.members": 8,
        "model.hybrid.members": 2,
        "model.hybrid.epochs": 1,
        "model.hybrid.steps_per_epoch": 2,
        "model.hybrid.hidden": 8,
    },
    "shallow-water-inverse": {
        "data.size": 8,
        "data.n_train": 16,
        "data.n_valid": 6,
        "data.n_test": 6,
        "data.drop": 0.7,
        "model.gp.steps": 5,
        "model.cnp.width": 16,
        "model.cnp.steps": 10,
    },
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_other_studies_run_with_tiny_settings(name: str, tmp_path: Path, one_thread) -> None:
    config = {
        "name": name,
        "quick": True,
        "out": str(tmp_path / name),
        "device": "cpu",
        "progress": False,
        "evaluation.isotonic_nodes": 51,
        "evaluation.figures": name == "pendulum",  # fan charts of a real study once
        **TINY[name],
    }
    scores = run(config)
    cfg = load_config(name, quick=True)
    assert list(scores["model"].values) == cfg.models
    assert np.isfinite(scores["crps"].values).all()
    assert (tmp_path / name / "report.html").is_file()
    if name == "pendulum":
        assert (tmp_path / name / "figures" / "fan_chart_case0.png").is_file()
    for model in cfg.models:
        assert xr.load_dataset(tmp_path / name / "forecasts" / f"{model}.nc").sizes["case"] == 6
