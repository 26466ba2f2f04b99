"""Ranked probability score and fair Brier score against xskillscore, scoringrules and sums."""

import numpy as np
import pytest
import scoringrules as sr
import torch
import xarray as xr
import xskillscore as xs

from uqdyn.scoring.categorical import fair_brier_score, rps, rps_probabilities
from uqdyn.scoring.threshold import threshold_brier_score


def _ensemble(seed=0, n=40, m=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(size=(n, m))


def test_rps_is_sum_of_threshold_brier_scores():
    y, x = _ensemble()
    edges = np.array([-1.0, -0.2, 0.3, 1.1])
    expected = threshold_brier_score(y, x, edges).sum(-1)
    np.testing.assert_allclose(rps(y, x, edges), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("fair", [False, True])
def test_rps_matches_xskillscore(fair):
    y, x = _ensemble(1)
    edges = np.array([-0.5, 0.0, 0.7])
    x[0, :3] = 0.0  # members on an edge: the < / <= convention matters
    y[0] = 0.1
    obs = xr.DataArray(y, dims="case")
    fc = xr.DataArray(x, dims=("case", "member"))
    ref = xs.rps(obs, fc, edges, dim=[], fair=fair, member_dim="member")
    got = rps(obs, fc, edges, fair=fair, inclusive=False)
    np.testing.assert_allclose(got.values, ref.values, rtol=0, atol=1e-12)
    assert not np.allclose(rps(y, x, edges, fair=fair)[0], ref.values[0])  # edge convention
    mean = rps(obs, fc, edges, fair=fair, inclusive=False, dim="case")
    np.testing.assert_allclose(float(mean), float(ref.mean()), rtol=1e-12)


def test_rps_probabilities_matches_scoringrules():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), size=30)
    k = rng.integers(0, 5, size=30)
    # scoringrules numbers the categories 1..K, uqdyn 0..K-1
    np.testing.assert_allclose(rps_probabilities(k, p), sr.rps_score(k + 1, p), atol=1e-12)
    onehot = np.eye(5)[k]
    np.testing.assert_allclose(
        rps_probabilities(onehot, p, onehot=True), sr.rps_score(onehot, p, onehot=True), atol=1e-12
    )
    # ensemble RPS equals RPS of the member category frequencies
    y, x = _ensemble(3)
    edges = np.array([-0.5, 0.5])
    cats = np.searchsorted(edges, x, side="left")  # category of x in (-inf,e1], (e1,e2], ...
    freq = np.stack([(cats == c).mean(-1) for c in range(3)], -1)
    np.testing.assert_allclose(
        rps(y, x, edges), rps_probabilities(np.searchsorted(edges, y), freq), atol=1e-12
    )
    with pytest.raises(ValueError, match="category indices"):
        rps_probabilities(np.array([5]), p[:1])


def test_fair_rps_is_unbiased_for_the_parent_distribution():
    """E over M-member ensembles of the fair RPS = RPS of the parent (here N(0,1))."""
    gen = torch.Generator().manual_seed(4)
    edges = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64)
    y = torch.full((20000,), 0.3, dtype=torch.float64)
    x = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    cdf = torch.distributions.Normal(0.0, 1.0).cdf(edges)
    truth = float(((cdf - (0.3 <= edges).double()) ** 2).sum())
    fair = float(rps(y, x, edges, fair=True, reduction="mean"))
    plain = float(rps(y, x, edges, reduction="mean"))
    assert abs(fair - truth) < 0.01 < abs(plain - truth)


def test_fair_brier_score_formula_and_unbiasedness():
    gen = torch.Generator().manual_seed(5)
    m, q = 4, 0.3
    members = (torch.rand(50000, m, generator=gen, dtype=torch.float64) < q).double()
    obs = torch.ones(50000, dtype=torch.float64)
    fbs = fair_brier_score(obs, members)
    p = members.mean(-1)
    torch.testing.assert_close(fbs, (p - 1) ** 2 - p * (1 - p) / (m - 1))
    # mean fair score -> (q - 1)^2 = 0.49; the plain Brier score of p is 0.49 + q(1-q)/M
    assert abs(float(fbs.mean()) - 0.49) < 0.006
    assert abs(float(((p - 1) ** 2).mean()) - (0.49 + q * (1 - q) / m)) < 0.006
    # the threshold form: event {value > t}
    vals = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    yv = torch.randn(6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        fair_brier_score(yv, vals, 0.2),
        fair_brier_score((yv > 0.2).double(), (vals > 0.2).double()),
    )


def test_categorical_errors_and_nan_policy():
    y, x = _ensemble(6, n=5, m=4)
    with pytest.raises(ValueError, match="strictly increasing"):
        rps(y, x, [0.5, 0.0])
    with pytest.raises(ValueError, match="not 0 or 1"):
        fair_brier_score(np.array([0.5]), np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="M >= 2"):
        fair_brier_score(np.array([1.0]), np.array([[1.0]]))
    x[0, 1] = np.nan
    assert np.isnan(rps(y, x, [0.0])[0])
    omitted = rps(y, x, [0.0], nan_policy="omit", fair=True)
    np.testing.assert_allclose(omitted[0], rps(y[:1], x[:1, [0, 2, 3]], [0.0], fair=True)[0])
    with pytest.raises(ValueError, match="forecasts has 1 NaN"):
        rps(y, x, [0.0], nan_policy="raise")
    w = np.array([1.0, 2.0, 0.0, 1.0, 1.0])
    s = rps(y, x, [0.0], nan_policy="omit")
    np.testing.assert_allclose(
        rps(y, x, [0.0], dim=0, weights=w, nan_policy="omit"), (w * s).sum() / w.sum()
    )


def test_categorical_scores_follow_the_device(device):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(8, generator=gen, dtype=torch.float64)
    edges = torch.tensor([-0.5, 0.5], dtype=torch.float64)
    for fn, args in ((rps, (edges,)), (fair_brier_score, (0.1,))):
        ref = fn(y, x, *args)
        out = fn(
            y.to(device), x.to(device), *[a.to(device) if torch.is_tensor(a) else a for a in args]
        )
        assert out.device.type == torch.device(device).type
        torch.testing.assert_close(out.cpu(), ref)


def test_fair_brier_matches_xskillscore_and_scores():
    import operator

    from scores.probability import brier_score_for_ensemble

    y, x = _ensemble(13, n=30, m=6)
    obs = xr.DataArray(y, dims="case")
    fc = xr.DataArray(x, dims=("case", "member"))
    got = fair_brier_score(obs, fc, 0.2)
    ref_xs = xs.brier_score(obs > 0.2, fc > 0.2, member_dim="member", fair=True, dim=[])
    np.testing.assert_allclose(got.values, ref_xs.values, atol=1e-12)
    ref_scores = brier_score_for_ensemble(
        fc, obs, "member", 0.2, preserve_dims=["case"], event_threshold_operator=operator.gt
    )
    np.testing.assert_allclose(got.values, ref_scores.squeeze().values, atol=1e-12)
