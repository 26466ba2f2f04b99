"""Cross-validated choice between raw, global, local and grouped recalibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uqdyn.calibration import (
    GroupedRecalibrator,
    IsotonicRecalibrator,
    NoRecalibration,
    RecalibrationSelection,
    VarianceScaling,
    coverage,
    select_recalibration,
)
from uqdyn.predictive import Ensemble, GaussianMixture, Normal

F64 = torch.float64


def _cases(n_cases: int, spread: float, seed: int, points: int = 20):
    """(cases, leads=3, points) with a case-level shift shared by a case's points.

    Truth N(mu + c_case, spread^2 * (1 - rho) + ...): the forecast N(mu, 1) is calibrated
    for ``spread = 1`` (the case shift is part of its unit variance).
    """
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n_cases, 3, points, generator=g, dtype=F64)
    shared = math.sqrt(0.3) * torch.randn(n_cases, 1, 1, generator=g, dtype=F64)
    own = math.sqrt(0.7) * torch.randn(n_cases, 3, points, generator=g, dtype=F64)
    obs = mu + spread * (shared + own)
    return obs, Normal(mu, torch.ones_like(mu))


def test_calibrated_forecast_with_tiny_validation_set_keeps_raw():
    greedy = []
    for seed in range(4):
        obs, forecast = _cases(8, 1.0, seed)  # 8 cases x 60 correlated points
        sel = select_recalibration(obs, forecast, folds=4)
        assert sel.chosen == {None: "raw"}, (seed, sel.summary())
        assert isinstance(sel.recalibrator, NoRecalibration)
        assert sel.transform(forecast) is forecast
        greedy.append(select_recalibration(obs, forecast, folds=4, se_rule=0.0).chosen[None])
    # without the standard-error rule, noise in the held-out CRPS picks a map now and then
    assert any(name != "raw" for name in greedy), greedy


def test_mis_scaled_forecast_gets_recalibrated():
    obs, forecast = _cases(16, 2.0, 10)  # over-confident by a factor 2
    sel = select_recalibration(obs, forecast)
    choice = sel.choices[0]
    assert choice.chosen != "raw"
    assert choice.improvement[choice.chosen] > choice.standard_error[choice.chosen]
    assert choice.relative_improvement > 0.05
    obs_t, test = _cases(16, 2.0, 11)
    before = abs(float(coverage(obs_t, test, 0.9)) - 0.9)
    after = abs(float(coverage(obs_t, sel.transform(test), 0.9)) - 0.9)
    assert before > 0.2 and after < 0.05


def test_cv_scores_match_a_hand_written_loop():
    obs, forecast = _cases(10, 1.5, 12)
    sel = select_recalibration(obs, forecast, ["variance_scaling"], folds=3, se_rule=0.0)
    blocks = np.array_split(np.arange(10), 3)
    total_raw, total_vs, n = 0.0, 0.0, 0
    per_case = np.zeros(10)
    for block in blocks:
        train = np.setdiff1d(np.arange(10), block)
        fc_tr = Normal(forecast.loc[train], forecast.scale[train])
        fc_te = Normal(forecast.loc[block], forecast.scale[block])
        s = VarianceScaling().fit(obs[train], fc_tr).scale
        raw = fc_te.crps(obs[block])
        scaled = Normal(fc_te.loc, s * fc_te.scale).crps(obs[block])
        total_raw += float(raw.sum())
        total_vs += float(scaled.sum())
        n += raw.numel()
        per_case[block] = (raw - scaled).sum((1, 2)).numpy()
    c = sel.choices[0]
    assert c.cv_crps["raw"] == pytest.approx(total_raw / n, rel=1e-12)
    assert c.cv_crps["variance_scaling"] == pytest.approx(total_vs / n, rel=1e-12)
    assert c.cv_crps["raw"] == pytest.approx(float(forecast.crps(obs).mean()), rel=1e-12)
    d = (total_raw - total_vs) / n
    se = math.sqrt(10 / 9 * np.sum((per_case - d * 60) ** 2)) / n
    assert c.improvement["variance_scaling"] == pytest.approx(d, rel=1e-10)
    assert c.standard_error["variance_scaling"] == pytest.approx(se, rel=1e-10)
    assert c.n_points == 600 and c.n_cases == 10 and sel.folds == 3


def test_per_lead_choice_keeps_recalibration_only_where_it_helps():
    obs, forecast = _cases(16, 1.0, 13)
    obs[:, 2] = forecast.loc[:, 2] + 3.0 * (obs[:, 2] - forecast.loc[:, 2])  # lead 2 too sharp
    sel = select_recalibration(obs, forecast, group_axis=1)
    assert sel.chosen[0] == "raw" and sel.chosen[1] == "raw"
    assert sel.chosen[2] != "raw"
    assert [c.group for c in sel.choices] == [0, 1, 2]
    assert isinstance(sel.recalibrator, GroupedRecalibrator)
    out = sel.transform(forecast)
    # raw leads are exactly the raw forecast; lead 2 is what its choice gives on its own
    torch.testing.assert_close(out.crps(obs)[:, :2], forecast.crps(obs)[:, :2])
    assert float(out.crps(obs)[:, 2].mean()) < float(forecast.crps(obs)[:, 2].mean())
    record = sel.to_xarray(group_dim="lead")
    assert record["cv_crps"].dims == ("lead", "candidate")
    assert list(record["chosen"].values[:2]) == ["raw", "raw"]
    assert record["cv_crps"].sel(lead=2, candidate=sel.chosen[2]) < record["cv_crps"].sel(
        lead=2, candidate="raw"
    )
    assert "raw" in sel.summary()


def test_label_groups_and_custom_candidates_on_ensembles():
    g = torch.Generator().manual_seed(14)
    truth = torch.randn(12, 40, generator=g, dtype=F64)
    region = np.array(["a"] * 20 + ["b"] * 20)
    widen = torch.as_tensor(np.where(region == "a", 1.0, 0.3), dtype=F64)
    members = widen * torch.randn(16, 12, 40, generator=g, dtype=F64)  # 'b' far too sharp
    candidates = {
        "per_region_scaling": GroupedRecalibrator(VarianceScaling(), min_points=20),
        "isotonic": IsotonicRecalibrator(n_nodes=101),
    }
    sel = select_recalibration(
        truth, Ensemble(members), candidates, groups=region, generator=torch.Generator()
    )
    assert sel.candidates == ("raw", "per_region_scaling", "isotonic")
    assert sel.chosen["b"] != "raw"
    out = sel.transform(Ensemble(members), groups=region)
    assert out.batch_shape == (12, 40)
    with pytest.raises(ValueError, match="expected groups="):
        sel.transform(Ensemble(members))


def test_selection_validation_errors():
    obs, forecast = _cases(6, 1.0, 15)
    with pytest.raises(ValueError, match="unknown candidate 'magic'"):
        select_recalibration(obs, forecast, ["magic"])
    with pytest.raises(TypeError, match="is a string"):
        select_recalibration(obs, forecast, "isotonic")
    with pytest.raises(ValueError, match="needs groups"):
        select_recalibration(obs, forecast, ["grouped_isotonic"])
    with pytest.raises(ValueError, match="only 'raw'"):
        select_recalibration(obs, forecast, ["raw"])
    with pytest.raises(ValueError, match="group_axis=0 is the case axis"):
        select_recalibration(obs, forecast, group_axis=0)
    with pytest.raises(ValueError, match="folds=1"):
        select_recalibration(obs, forecast, folds=1)
    with pytest.raises(ValueError, match="at least 2 cases"):
        select_recalibration(obs[:1], Normal(forecast.loc[:1], forecast.scale[:1]))
    with pytest.raises(ValueError, match="axis=5 is out of range"):
        select_recalibration(obs, forecast, axis=5)
    with pytest.raises(ValueError, match="se_rule=-1"):
        select_recalibration(obs, forecast, se_rule=-1)
    with pytest.raises(TypeError, match="expected a uqdyn recalibrator"):
        select_recalibration(obs, forecast, {"mine": object()})
    assert isinstance(select_recalibration(obs, forecast, folds=50), RecalibrationSelection)


def test_masked_nan_points_of_a_mixture_are_left_alone() -> None:
    """Forecasts are NaN where nothing was observed (land): masked out, never refused."""
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(2, 30, 3, 4, generator=g)
    loc[:, :, :, 0] = float("nan")  # a land column
    mix = GaussianMixture(torch.ones(2), loc, torch.ones(2, 30, 3, 4), validate=False)
    obs = 2.0 * torch.randn(30, 3, 4, generator=g)
    keep = torch.isfinite(mix.mean)
    obs = torch.where(keep, obs, torch.zeros(()))
    for candidates in (["raw", "variance_scaling", "grouped_variance_scaling"], None):
        sel = select_recalibration(
            obs, mix, candidates=candidates, group_axis=1, mask=keep, generator=g
        )
        out = sel.transform(mix)
        assert torch.isfinite(out.mean[keep]).all()
        assert torch.isnan(out.mean[~keep]).all()
