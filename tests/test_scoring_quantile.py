"""Weighted interval score and the dim/weights/nan_policy options of the quantile scores."""

import numpy as np
import pytest
import scoringrules as sr
import torch
import xarray as xr
from scores.continuous import interval_score as scores_interval_score

from uqdyn.scoring.quantile import (
    crps_quantile,
    interval_score,
    quantile_score,
    weighted_interval_score,
)


def _intervals(seed=0, n=50):
    rng = np.random.default_rng(seed)
    alpha = np.array([0.02, 0.1, 0.2, 0.5, 0.8])
    from scipy.stats import norm

    mu, sd = rng.normal(size=n), rng.uniform(0.5, 2.0, size=n)
    lower = mu[:, None] + sd[:, None] * norm.ppf(alpha / 2)
    upper = mu[:, None] + sd[:, None] * norm.ppf(1 - alpha / 2)
    y = rng.normal(size=n) * 1.5
    return y, mu, lower, upper, alpha


def test_wis_matches_scoringrules_and_crps_quantile():
    y, m, lo, hi, alpha = _intervals()
    got = weighted_interval_score(y, m, lo, hi, alpha)
    ref = sr.weighted_interval_score(y, m, lo, hi, alpha, backend="numba")
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    # canonical weights: WIS = 2/(2K+1) sum of pinball losses of the 2K+1 quantiles
    levels = np.concatenate([alpha / 2, [0.5], 1 - alpha / 2])
    quantiles = np.concatenate([lo, m[:, None], hi], -1)
    np.testing.assert_allclose(got, crps_quantile(y, quantiles, levels), rtol=1e-12)
    w = np.array([1.0, 0.0, 2.0, 1.0, 1.0])
    got_w = weighted_interval_score(y, m, lo, hi, alpha, w_median=1.0, w_alpha=w)
    ref_w = sr.weighted_interval_score(y, m, lo, hi, alpha, 1.0, w, backend="numba")
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-12)


def test_interval_score_matches_scores_package_with_dim_and_weights():
    y, m, lo, hi, _ = _intervals(1, n=24)
    yd = xr.DataArray(y.reshape(4, 6), dims=("lat", "time"))
    lod = xr.DataArray(lo[:, 1].reshape(4, 6), dims=("lat", "time"))
    hid = xr.DataArray(hi[:, 1].reshape(4, 6), dims=("lat", "time"))
    w = xr.DataArray(np.cos(np.deg2rad([0.0, 30.0, 60.0, 80.0])), dims="lat")
    ref = scores_interval_score(lod, hid, yd, 0.9, reduce_dims=["lat"], weights=w)["total"]
    got = interval_score(yd, lod, hid, 0.9, dim="lat", weights=w)
    assert got.dims == ("time",)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-12)


def test_quantile_scores_nan_policy_and_errors():
    y, m, lo, hi, alpha = _intervals(2, n=10)
    y[0] = np.nan
    s = weighted_interval_score(y, m, lo, hi, alpha)
    assert np.isnan(s[0]) and not np.isnan(s[1:]).any()
    mean = weighted_interval_score(y, m, lo, hi, alpha, nan_policy="omit", reduction="mean")
    np.testing.assert_allclose(mean, s[1:].mean())
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        quantile_score(y, m, 0.5, nan_policy="raise")
    with pytest.raises(ValueError, match="alpha has shape"):
        weighted_interval_score(y, m, lo, hi, alpha[:3])
    with pytest.raises(ValueError, match="lower > upper"):
        weighted_interval_score(y, m, hi, lo, alpha)
    t = torch.tensor(np.nan_to_num(y))
    assert (
        weighted_interval_score(
            t, torch.tensor(m), torch.tensor(lo), torch.tensor(hi), alpha, dim=0
        ).shape
        == ()
    )


def test_wis_follows_the_device(device):
    y, m, lo, hi, alpha = (torch.tensor(a) for a in _intervals(3, n=12))
    ref = weighted_interval_score(y, m, lo, hi, alpha)
    out = weighted_interval_score(
        y.to(device), m.to(device), lo.to(device), hi.to(device), alpha.to(device)
    )
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), ref)
