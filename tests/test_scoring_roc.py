"""ROC curve and area against sklearn, scipy's Mann-Whitney U, xskillscore and scores."""

import numpy as np
import pytest
import torch
import xarray as xr
import xskillscore as xs
from scipy.stats import mannwhitneyu
from scores.probability import roc_auc as scores_roc_auc
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from uqdyn.scoring.roc import roc_auc, roc_curve


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    o = (rng.random(n) < 0.4).astype(float)
    p = np.clip(0.3 * o + rng.random(n) * 0.7, 0, 1).round(2)  # rounded: many ties
    return o, p


def test_auc_matches_sklearn_mannwhitney_and_scores():
    o, p = _data()
    got = float(roc_auc(o, p))
    np.testing.assert_allclose(got, roc_auc_score(o, p), rtol=0, atol=1e-12)
    u = mannwhitneyu(p[o == 1], p[o == 0]).statistic
    np.testing.assert_allclose(got, u / ((o == 1).sum() * (o == 0).sum()), atol=1e-12)
    ref = scores_roc_auc(xr.DataArray(p, dims="t"), xr.DataArray(o, dims="t"))
    np.testing.assert_allclose(got, float(ref), atol=1e-12)
    far, hit, thr = roc_curve(o, p)
    np.testing.assert_allclose(np.trapezoid(hit, far), got, atol=1e-12)
    sk_far, sk_hit, sk_thr = sk_roc_curve(o, p, drop_intermediate=False)
    np.testing.assert_allclose(far, sk_far, atol=1e-12)
    np.testing.assert_allclose(hit, sk_hit, atol=1e-12)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_auc_weighted_and_by_dim():
    o, p = _data(1, n=240)
    w = np.random.default_rng(3).random(240)
    np.testing.assert_allclose(
        float(roc_auc(o, p, weights=w)), roc_auc_score(o, p, sample_weight=w), atol=1e-12
    )
    o2, p2 = o.reshape(4, 60), p.reshape(4, 60)
    per_row = roc_auc(torch.tensor(o2), torch.tensor(p2), dim=1)
    assert per_row.shape == (4,)
    expected = [roc_auc_score(a, b) for a, b in zip(o2, p2, strict=True)]
    np.testing.assert_allclose(per_row, expected, atol=1e-12)
    oda = xr.DataArray(o2, dims=("site", "time"), coords={"site": list("abcd")})
    pda = xr.DataArray(p2, dims=("site", "time"), coords={"site": list("abcd")})
    da = roc_auc(oda, pda, dim="time")
    assert da.dims == ("site",)
    ref = xs.roc(oda.astype(bool), pda, bin_edges="continuous", dim="time")
    np.testing.assert_allclose(da.values, ref.values, atol=1e-12)


def test_binned_auc_matches_xskillscore():
    o, p = _data(2)
    edges = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    od, pd_ = xr.DataArray(o.astype(bool), dims="t"), xr.DataArray(p, dims="t")
    ref = xs.roc(od, pd_, bin_edges=edges, dim="t")
    got = roc_auc(o, p, thresholds=edges)
    np.testing.assert_allclose(float(got), float(ref), atol=1e-12)


def test_roc_nan_policy_and_errors():
    o, p = _data(4, n=50)
    p[3] = np.nan
    assert np.isnan(roc_auc(o, p))
    keep = ~np.isnan(p)
    np.testing.assert_allclose(roc_auc(o, p, nan_policy="omit"), roc_auc_score(o[keep], p[keep]))
    with pytest.raises(ValueError, match="prob has 1 NaN"):
        roc_auc(o, p, nan_policy="raise")
    with pytest.raises(ValueError, match="not 0 or 1"):
        roc_auc(np.array([0.0, 2.0]), np.array([0.1, 0.2]))
    assert np.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))  # no non-event


def test_roc_follows_the_device(device):
    o, p = _data(5, n=64)
    ot, pt = torch.tensor(o, device=device), torch.tensor(p, device=device)
    auc = roc_auc(ot.reshape(4, 16), pt.reshape(4, 16), dim=1)
    assert auc.device.type == torch.device(device).type
    torch.testing.assert_close(
        auc.cpu(), roc_auc(torch.tensor(o).reshape(4, 16), torch.tensor(p).reshape(4, 16), dim=1)
    )
    far, hit, thr = roc_curve(ot, pt)
    assert far.device.type == torch.device(device).type


def test_roc_curve_matches_scores_roc_curve_data():
    from scores.probability import roc_curve_data

    o, p = _data(6, n=200)
    thr = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    ref = roc_curve_data(xr.DataArray(p, dims="t"), xr.DataArray(o, dims="t"), thr)
    far, hit, got_thr = roc_curve(o, p, thresholds=thr)
    assert np.isinf(ref["threshold"].values[-1])  # scores appends +inf, the (0, 0) point
    np.testing.assert_allclose(hit, ref["POD"].values[:-1], atol=1e-12)
    np.testing.assert_allclose(far, ref["POFD"].values[:-1], atol=1e-12)
    np.testing.assert_allclose(got_thr, thr)
    # scores' AUC integrates the given points only; with 0 and 1 among the thresholds the
    # curve reaches (1, 1) and (0, 0) and the binned area agrees
    np.testing.assert_allclose(float(roc_auc(o, p, thresholds=thr)), float(ref["AUC"]), atol=1e-12)
