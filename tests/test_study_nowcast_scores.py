"""Nowcasting scores per lead: against hand counts, uqdyn's FSS, properscoring and numpy."""

from __future__ import annotations

import numpy as np
import properscoring as ps
import pytest
import torch

from uqdyn.scoring import fss
from uqdyn.study.nowcast_scores import (
    balanced_weights,
    contingency_counts,
    exceedance,
    fss_terms,
    nowcast_scores,
)


def test_contingency_counts_match_a_hand_counted_table() -> None:
    obs = torch.tensor([[[[0.0, 3.0, 5.0], [2.0, float("nan"), 0.4]]]])  # (1, 1, 2, 3)
    fc = torch.tensor([[[[True, True, False], [False, True, True]]]])
    c = contingency_counts(obs, fc, 2.0)
    # events obs >= 2: (0,1), (0,2), (1,0); NaN pixel not counted
    # forecast events at observed pixels: (0,0), (0,1), (1,2)
    assert [float(c[k]) for k in ("hits", "misses", "false_alarms", "correct_negatives")] == [
        1.0,
        2.0,
        2.0,
        0.0,
    ]


def test_balanced_weights_follow_the_hko7_steps() -> None:
    obs = torch.tensor([0.0, 1.99, 2.0, 4.9, 5.0, 9.99, 10.0, 29.9, 30.0, 80.0])
    w = balanced_weights(obs)
    assert w.tolist() == [1, 1, 2, 2, 5, 5, 10, 10, 30, 30]


def test_fss_terms_equal_uqdyn_fss_for_a_deterministic_forecast() -> None:
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(3, 2, 20, 20, generator=g, dtype=torch.float64) * 6
    fc = torch.rand(3, 2, 20, 20, generator=g, dtype=torch.float64) * 6
    for window in (1, 5, 11):
        num, den = fss_terms(obs, (fc >= 2.0).double(), 2.0, window)
        pooled = 1.0 - float(num.sum() / den.sum())
        ref = float(fss(obs, fc, 2.0, window, reduction="mean"))
        assert pooled == pytest.approx(ref, abs=1e-12)


def test_fss_terms_leave_out_windows_with_unobserved_pixels() -> None:
    obs = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    obs[..., 0, 0] = float("nan")
    prob = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    num, den = fss_terms(obs, prob, 1.0, 3)
    # 16 windows of 3x3, one contains the NaN pixel: 15 windows with F = 1, O = 0
    assert float(num) == pytest.approx(15.0)
    assert float(den) == pytest.approx(15.0)


def test_nowcast_scores_against_direct_computations() -> None:
    g = torch.Generator().manual_seed(1)
    n, lead, h, w, m = 6, 3, 16, 16, 5
    obs = torch.relu(torch.randn(n, lead, h, w, generator=g, dtype=torch.float64) * 4 - 1)
    obs[:, :, :2, :2] = float("nan")
    noise = torch.randn(m, n, lead, h, w, generator=g, dtype=torch.float64)
    a = torch.relu(obs.nan_to_num(0.0) + 2 * noise)
    b = torch.relu(torch.randn(m, n, lead, h, w, generator=g, dtype=torch.float64) * 4 - 1)
    ds = nowcast_scores(
        obs,
        {"a": a, "b": b},
        lead_minutes=[5, 10, 15],
        thresholds=[2.0],
        fss_thresholds=[2.0],
        fss_windows=[1, 5],
        reliability_thresholds=[2.0],
        reference="b",
        n_boot=100,
    )
    seen = np.isfinite(obs.numpy())
    o = obs.numpy()
    for model, ens in (("a", a), ("b", b)):
        e = ens.numpy()
        for j in range(lead):
            ev_f = (e[:, :, j] >= 2.0).mean(0) >= 0.5
            ev_o = o[:, j] >= 2.0
            s = seen[:, j]
            hits = (ev_f & ev_o & s).sum()
            misses = (~ev_f & ev_o & s).sum()
            fa = (ev_f & ~ev_o & s).sum()
            csi = ds["csi"].sel(model=model, lead_time=5 * (j + 1), threshold=2.0)
            assert float(csi.sel(bound="value")) == pytest.approx(hits / (hits + misses + fa))
            lo, hi = float(csi.sel(bound="lower")), float(csi.sel(bound="upper"))
            assert lo <= float(csi.sel(bound="value")) <= hi
            crps = ps.crps_ensemble(o[:, j][s], np.moveaxis(e[:, :, j], 0, -1)[s])
            got = float(ds["crps"].sel(model=model, lead_time=5 * (j + 1), bound="value"))
            assert got == pytest.approx(crps.mean(), rel=1e-10)
    ref = ps.crps_ensemble(o[seen], np.moveaxis(b.numpy(), 0, -1)[seen])
    mine = ps.crps_ensemble(o[seen], np.moveaxis(a.numpy(), 0, -1)[seen])
    # CRPS skill per lead against b, checked at the pooled level through lead 1
    s0 = seen[:, 0]
    ref0 = ps.crps_ensemble(o[:, 0][s0], np.moveaxis(b.numpy()[:, :, 0], 0, -1)[s0]).mean()
    mine0 = ps.crps_ensemble(o[:, 0][s0], np.moveaxis(a.numpy()[:, :, 0], 0, -1)[s0]).mean()
    skill = float(ds["crps_skill"].sel(model="a", lead_time=5, bound="value"))
    assert skill == pytest.approx(1.0 - mine0 / ref0, rel=1e-10)
    assert mine.mean() < ref.mean()
    assert float(ds["crps_skill"].sel(model="b", lead_time=5, bound="value")) == pytest.approx(0.0)
    diff = ds["csi_diff"].sel(model="b", threshold=2.0, bound="value").values
    np.testing.assert_allclose(diff, 0.0, atol=1e-12)
    # the CORP decomposition adds up to the Brier score
    for model in ("a", "b"):
        sel = {"model": model, "reliability_threshold": 2.0}
        bs = float(ds["brier"].sel(**sel))
        parts = float(
            ds["corp_mcb"].sel(**sel) - ds["corp_dsc"].sel(**sel) + ds["corp_unc"].sel(**sel)
        )
        assert bs == pytest.approx(parts, abs=1e-10)
        p = exceedance(torch.as_tensor({"a": a, "b": b}[model]), 2.0).numpy()
        assert bs == pytest.approx(float(((p - (o >= 2.0)) ** 2)[seen].mean()), rel=1e-10)
    # rank histograms are relative frequencies averaging one
    np.testing.assert_allclose(ds["rank_histogram"].mean("rank").values, 1.0)


def test_nowcast_scores_reject_mismatched_forecasts() -> None:
    obs = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="forecast 'x' has shape"):
        nowcast_scores(obs, {"x": torch.zeros(4, 2, 2, 8, 8)}, lead_minutes=[5, 10, 15])
    with pytest.raises(ValueError, match="lead_minutes has 2 values"):
        nowcast_scores(obs, {"x": torch.zeros(4, 2, 3, 8, 8)}, lead_minutes=[5, 10])
    with pytest.raises(ValueError, match="reference='y'"):
        nowcast_scores(
            obs, {"x": torch.zeros(4, 2, 3, 8, 8)}, lead_minutes=[5, 10, 15], reference="y"
        )
