"""The multi-environment study end to end at a tiny budget: CoDA adapts to new environments
from one trajectory better than the unadapted one-for-all model, fine-tuning helps the
one-for-all model, and the recalibrated forecasts are scored and written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from uqdyn.study import load_config, run
from uqdyn.study.multi_environment import Settings, parameter_rmse, run_environments


@pytest.fixture(scope="module")
def lv_results():
    settings = Settings(members=2, steps=120, adapt_steps=40, hidden=16, laplace_draws=3, n_test=4)
    return run_environments(
        "lotka_volterra", models=("coda", "one_for_all", "fine_tune"), settings=settings
    )


def test_adaptation_ordering_and_shapes(lv_results) -> None:
    r = lv_results
    assert r.obs_adapt.shape == (16, 20, 2) and r.obs_calib.shape == (16, 20, 2)
    coda, ofa, ft = (float(np.mean(r.mse_adapt[m])) for m in ("coda", "one_for_all", "fine_tune"))
    assert coda < ofa, (coda, ofa)
    assert ft < ofa, (ft, ofa)
    # one_for_all and fine_tune share their trained networks: the same in-domain error
    assert r.mse_in["one_for_all"] == r.mse_in["fine_tune"]
    # CoDA: 2 seeds x (1 rollout + 3 Laplace draws) mixture components; the others 2
    assert r.forecasts_adapt["coda"].loc.shape == (8, 16, 20, 2)
    assert r.forecasts_adapt["fine_tune"].loc.shape == (2, 16, 20, 2)
    assert len(r.adapt_seconds["coda"]) == 2 * 8 and not r.adapt_seconds["one_for_all"]


def test_parameter_map_estimates_the_adaptation_parameters(lv_results) -> None:
    names, rmse = parameter_rmse(lv_results.param_error)
    assert names == ["beta", "delta"] and rmse.shape == (2, 2)
    # the parameters span [0.625, 1.125]; a constant guess (0.875) has RMSE 0.25
    assert float(rmse.mean()) < 0.25


def test_study_runs_and_scores_the_new_environments(tmp_path: Path) -> None:
    cfg = load_config(
        "multi-environment",
        quick=True,
        out=str(tmp_path / "me"),
        overrides={
            "models": ["coda", "one_for_all"],
            "training.steps": 60,
            "training.adapt_steps": 20,
            "training.hidden": 16,
            "data.n_test": 3,
            "evaluation.figures": False,
            "evaluation.n_boot": 50,
        },
    )
    scores = run(cfg)
    crps = scores["crps"].sel(calibration="raw")
    assert float(crps.sel(model="coda")) < float(crps.sel(model="one_for_all"))
    written = xr.load_dataset(tmp_path / "me" / "scores.nc")
    assert set(written["model"].values) == {"coda", "one_for_all"}
    md = (tmp_path / "me" / "report.md").read_text()
    assert "coda MSE in-domain / adaptation" in md and "parameter RMSE" in md
