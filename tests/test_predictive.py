"""Predictive families against scipy / torch.distributions / numpy references (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal, Predictive

F64 = torch.float64
LEVELS = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ Normal
def test_normal_matches_scipy(device):
    g = _gen(1)
    loc = torch.randn(3, 4, dtype=F64, generator=g)
    scale = torch.rand(3, 4, dtype=F64, generator=g) + 0.2
    p = Normal(loc.to(device), scale.to(device))
    y = torch.randn(3, 4, dtype=F64, generator=g)
    ref = stats.norm(loc.numpy(), scale.numpy())
    np.testing.assert_allclose(p.cdf(y.to(device)).cpu(), ref.cdf(y.numpy()), rtol=1e-12)
    np.testing.assert_allclose(p.log_prob(y.to(device)).cpu(), ref.logpdf(y.numpy()), rtol=1e-12)
    q = p.quantile(LEVELS).cpu().numpy()
    np.testing.assert_allclose(q, ref.ppf(np.array(LEVELS)[:, None, None]), rtol=1e-10, atol=1e-12)
    lo, hi = p.interval(0.8)
    np.testing.assert_allclose(lo.cpu(), ref.ppf(0.1), rtol=1e-10)
    np.testing.assert_allclose(hi.cpu(), ref.ppf(0.9), rtol=1e-10)
    assert p.quantile(0.3).shape == (3, 4)
    assert p.mean.device.type == device.type


def test_normal_sample_moments():
    p = Normal(torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 3.0], dtype=F64))
    s = p.sample(200_000, generator=_gen(3))
    assert s.shape == (200_000, 2)
    np.testing.assert_allclose(s.mean(0), [1.0, -2.0], atol=4 * 3.0 / np.sqrt(2e5))
    np.testing.assert_allclose(s.std(0), [0.5, 3.0], rtol=0.01)


def test_normal_sample_is_reparameterised():
    loc = torch.zeros(5, requires_grad=True)
    Normal(loc, torch.ones(5)).sample(3).sum().backward()
    assert torch.allclose(loc.grad, torch.full((5,), 3.0))


@pytest.mark.parametrize(
    ("loc", "scale", "match"),
    [
        (torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), "scale"),
        (torch.zeros(3), -torch.ones(3), "scale"),
        (torch.tensor([0.0, float("nan"), 0.0]), torch.ones(3), "loc"),
        (torch.zeros(3), torch.ones(4), "shape"),
    ],
)
def test_normal_rejects_bad_input(loc, scale, match):
    with pytest.raises(ValueError, match=match):
        Normal(loc, scale)


@pytest.mark.parametrize("q", [0.0, 1.0, 1.5, [0.2, -0.1], []])
def test_quantile_levels_validated(q):
    with pytest.raises(ValueError, match="q"):
        Normal(torch.zeros(2), torch.ones(2)).quantile(q)


def test_interval_level_validated():
    with pytest.raises(ValueError, match="level"):
        Normal(torch.zeros(2), torch.ones(2)).interval(1.2)


# ------------------------------------------------------------------ Mixture
def _mixture(device, dtype=F64, k=3, shape=(4, 5), seed=2):
    g = _gen(seed)
    w = torch.rand(k, dtype=F64, generator=g) + 0.1
    loc = 3 * torch.randn(k, *shape, dtype=F64, generator=g)
    scale = torch.rand(k, *shape, dtype=F64, generator=g) + 0.05
    return GaussianMixture(w.to(device, dtype), loc.to(device, dtype), scale.to(device, dtype)), (
        (w / w.sum()).numpy(),
        loc.numpy(),
        scale.numpy(),
    )


def test_mixture_cdf_logpdf_moments(device):
    p, (w, loc, scale) = _mixture(device)
    y = np.linspace(-4, 4, 20).reshape(4, 5)
    cdf_ref = (w[:, None, None] * stats.norm.cdf(y, loc, scale)).sum(0)
    pdf_ref = (w[:, None, None] * stats.norm.pdf(y, loc, scale)).sum(0)
    yt = torch.as_tensor(y, device=device)
    np.testing.assert_allclose(p.cdf(yt).cpu(), cdf_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(p.log_prob(yt).cpu(), np.log(pdf_ref), rtol=1e-10)
    mean_ref = (w[:, None, None] * loc).sum(0)
    var_ref = (w[:, None, None] * (scale**2 + loc**2)).sum(0) - mean_ref**2
    np.testing.assert_allclose(p.mean.cpu(), mean_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.variance.cpu(), var_ref, rtol=1e-10)


def test_mixture_quantile_matches_brentq(device):
    p, (w, loc, scale) = _mixture(device)
    q = p.quantile(LEVELS).cpu().numpy()
    for i, level in enumerate(LEVELS):
        for j in range(4):
            for k in range(5):

                def f(x, j=j, k=k, level=level):
                    return (w * stats.norm.cdf(x, loc[:, j, k], scale[:, j, k])).sum() - level

                ref = optimize.brentq(f, -60, 60, xtol=1e-14, rtol=1e-14)
                assert abs(q[i, j, k] - ref) < 1e-9, (level, j, k)


def test_mixture_quantile_float32_accurate():
    p, _ = _mixture("cpu", dtype=torch.float32)
    q = p.quantile(LEVELS)
    levels = torch.tensor(LEVELS).reshape(-1, 1, 1)
    assert (p.cdf(q) - levels).abs().max() < 1e-5


def test_mixture_quantile_separated_components_and_point_levels():
    """Components 0.005 and 30 apart (a flat gap between modes), tail levels, per-point
    levels through ``quantile_each`` and a NaN point that stays NaN without stalling."""
    g = _gen(7)
    loc = torch.randn(3, 40, dtype=F64, generator=g) * torch.tensor([[0.1], [3.0], [30.0]])
    scale = torch.rand(3, 40, dtype=F64, generator=g) * torch.tensor([[0.01], [1], [5]]) + 1e-3
    w = torch.softmax(torch.randn(3, 40, dtype=F64, generator=g), 0)
    loc[:, 3] = torch.nan
    p = GaussianMixture(w, loc, scale, validate=False)
    levels = torch.rand(5, 40, dtype=F64, generator=g).clamp(1e-9, 1 - 1e-9)
    levels[0] = 1e-10
    q = p.quantile_each(levels)
    assert torch.isnan(q[:, 3]).all() and torch.isfinite(q[:, [0, 1, 2, 4]]).all()
    for i in (0, 1, 4, 17, 39):
        for j in range(5):

            def f(x, i=i, j=j):
                cdf = stats.norm.cdf(x, loc[:, i].numpy(), scale[:, i].numpy())
                return (w[:, i].numpy() * cdf).sum() - levels[j, i].item()

            ref = optimize.brentq(f, -500, 500, xtol=1e-15, rtol=1e-15)
            assert abs(q[j, i].item() - ref) < 1e-9 * scale[:, i].min().item(), (i, j)
    same = p.quantile(torch.tensor([0.05, 0.5], dtype=F64))
    each = p.quantile_each(torch.tensor([[0.05], [0.5]], dtype=F64).expand(2, 40))
    torch.testing.assert_close(same, each, equal_nan=True)


def test_std_normal_ppf_float32_tails():
    from uqdyn._normal import std_normal_ppf

    p = np.array([1e-30, 1e-10, 1e-4, 0.5, 1 - 1e-6])
    z = std_normal_ppf(torch.tensor(p, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(z, stats.norm.ppf(p), rtol=2e-3)
    z16 = std_normal_ppf(torch.tensor([1e-4, 0.5], dtype=torch.bfloat16))
    assert z16.dtype == torch.bfloat16 and abs(z16[0].item() + 3.719) < 0.02


def test_mixture_sampling_matches_cdf():
    p = GaussianMixture(
        torch.tensor([0.2, 0.8], dtype=F64),
        torch.tensor([-3.0, 2.0], dtype=F64),
        torch.tensor([0.5, 1.0], dtype=F64),
    )
    s = p.sample(20_000, generator=_gen(5)).numpy()
    ks = stats.kstest(s, lambda x: p.cdf(torch.as_tensor(x)).numpy())
    assert ks.pvalue > 0.01


def test_mixture_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([0.5, -0.5]), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.ones(3), torch.zeros(2, 3), torch.ones(2, 3))


# ------------------------------------------------------------------ MultivariateNormal
def _spd(n, seed=0, batch=()):
    g = _gen(seed)
    a = torch.randn(*batch, n, n, dtype=F64, generator=g)
    return a @ a.transpose(-1, -2) + n * torch.eye(n, dtype=F64)


def test_mvn_matches_scipy(device):
    cov = _spd(4)
    loc = torch.arange(4, dtype=F64)
    p = MultivariateNormal(loc.to(device), covariance_matrix=cov.to(device))
    y = torch.randn(4, dtype=F64, generator=_gen(9))
    ref = stats.multivariate_normal(loc.numpy(), cov.numpy())
    np.testing.assert_allclose(p.log_prob(y.to(device)).item(), ref.logpdf(y.numpy()), rtol=1e-12)
    np.testing.assert_allclose(p.variance.cpu(), np.diag(cov.numpy()), rtol=1e-12)
    sd = np.sqrt(np.diag(cov.numpy()))
    np.testing.assert_allclose(
        p.cdf(y.to(device)).cpu(), stats.norm.cdf(y.numpy(), loc.numpy(), sd)
    )


def test_mvn_low_rank_equals_dense():
    g = _gen(4)
    w = torch.randn(2, 6, 2, dtype=F64, generator=g)
    d = torch.rand(2, 6, dtype=F64, generator=g) + 0.1
    loc = torch.randn(2, 6, dtype=F64, generator=g)
    low = MultivariateNormal(loc, cov_factor=w, cov_diag=d)
    dense = MultivariateNormal(loc, covariance_matrix=w @ w.transpose(-1, -2) + torch.diag_embed(d))
    y = torch.randn(2, 6, dtype=F64, generator=g)
    torch.testing.assert_close(low.log_prob(y), dense.log_prob(y))
    torch.testing.assert_close(low.stddev, dense.stddev)


def test_mvn_samples_have_the_covariance():
    cov = _spd(3, seed=7)
    for kwargs in ({"covariance_matrix": cov}, {"scale_tril": torch.linalg.cholesky(cov)}):
        p = MultivariateNormal(torch.zeros(3, dtype=F64), **kwargs)
        s = p.sample(100_000, generator=_gen(1))
        emp = torch.cov(s.T)
        assert (emp - cov).abs().max() / cov.abs().max() < 0.03


def test_mvn_rejects_non_pd():
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        MultivariateNormal(torch.zeros(2), covariance_matrix=bad)
    with pytest.raises(ValueError, match="exactly one"):
        MultivariateNormal(torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        MultivariateNormal(torch.zeros(2), covariance_matrix=torch.eye(3))


def test_mvn_from_gpytorch():
    gpytorch = pytest.importorskip("gpytorch")
    cov = _spd(5)
    mean = torch.randn(5, dtype=F64, generator=_gen(1))
    d = gpytorch.distributions.MultivariateNormal(mean, cov)
    p = MultivariateNormal.from_gpytorch(d)
    y = torch.randn(5, dtype=F64)
    torch.testing.assert_close(p.log_prob(y), d.log_prob(y))

    # multitask: mean (n, t); compare the joint density under both orderings
    n, t = 3, 2
    cov6 = _spd(n * t, seed=3)
    mean_nt = torch.randn(n, t, dtype=F64)
    for interleaved in (True, False):
        mt = gpytorch.distributions.MultitaskMultivariateNormal(
            mean_nt, cov6, interleaved=interleaved
        )
        p = MultivariateNormal.from_gpytorch(mt)
        y = torch.randn(n, t, dtype=F64, generator=_gen(2))
        # dense reference: gpytorch stores the covariance point-major when interleaved and
        # task-major otherwise
        flat = (lambda a: a.reshape(-1)) if interleaved else (lambda a: a.T.reshape(-1))
        ref = torch.distributions.MultivariateNormal(flat(mean_nt), cov6).log_prob(flat(y))
        torch.testing.assert_close(p.log_prob(y.reshape(-1)), ref)
        torch.testing.assert_close(p.mean.reshape(n, t), mt.mean)
        torch.testing.assert_close(p.variance.reshape(n, t), mt.variance)


# ------------------------------------------------------------------ Ensemble
def test_ensemble_statistics_match_numpy(device):
    g = _gen(11)
    members = torch.randn(9, 3, 4, dtype=F64, generator=g)
    ens = Ensemble(members.to(device))
    m = members.numpy()
    np.testing.assert_allclose(ens.mean.cpu(), m.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ens.variance.cpu(), m.var(0, ddof=1), rtol=1e-12)
    q = ens.quantile(LEVELS).cpu().numpy()
    np.testing.assert_allclose(q, np.quantile(m, LEVELS, axis=0, method="inverted_cdf"))
    y = torch.randn(3, 4, dtype=F64, generator=g)
    np.testing.assert_allclose(ens.cdf(y.to(device)).cpu(), (m <= y.numpy()).mean(0))


def test_weighted_ensemble_matches_numpy():
    g = _gen(12)
    members = torch.randn(7, 5, dtype=F64, generator=g)
    w = torch.rand(7, dtype=F64, generator=g)
    ens = Ensemble(members, w)
    wn = (w / w.sum()).numpy()
    m = members.numpy()
    mean = (wn[:, None] * m).sum(0)
    np.testing.assert_allclose(ens.mean, mean, rtol=1e-12)
    var = (wn[:, None] * (m - mean) ** 2).sum(0) / (1 - (wn**2).sum())
    np.testing.assert_allclose(ens.variance, var, rtol=1e-12)
    for level in LEVELS:
        ref = np.array(
            [np.quantile(m[:, j], level, weights=wn, method="inverted_cdf") for j in range(5)]
        )
        np.testing.assert_allclose(ens.quantile(level), ref)


def test_ensemble_sample_draws_whole_members():
    members = torch.arange(12.0).reshape(4, 3)
    s = Ensemble(members).sample(10, generator=_gen(0))
    assert s.shape == (10, 3)
    assert torch.all(s[:, 1] - s[:, 0] == 1)  # rows are intact members


def test_ensemble_nan_member_gives_nan_at_that_point():
    members = torch.randn(5, 3, dtype=F64)
    members[2, 1] = float("nan")
    ens = Ensemble(members)
    assert torch.isnan(ens.quantile(0.5)[1]) and not torch.isnan(ens.quantile(0.5)[[0, 2]]).any()
    assert torch.isnan(ens.cdf(torch.zeros(3, dtype=F64))[1])
    assert torch.isnan(ens.mean[1])


def test_ensemble_rejects_bad_input():
    with pytest.raises(ValueError, match="members"):
        Ensemble(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="weights"):
        Ensemble(torch.zeros(4, 3), torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        Ensemble(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="estimator"):
        Ensemble(torch.zeros(4, 3), estimator="bogus")
    with pytest.raises(NotImplementedError, match="log_prob"):
        Ensemble(torch.zeros(4, 3)).log_prob(torch.zeros(3))


# ------------------------------------------------------------------ common behaviour
def _all_families(device):
    g = _gen(21)
    loc = torch.randn(2, 3, dtype=F64, generator=g)
    return [
        Normal(loc, torch.ones(2, 3, dtype=F64)),
        MultivariateNormal(loc, covariance_matrix=_spd(3, batch=(2,))),
        GaussianMixture(
            torch.ones(4, dtype=F64),
            torch.randn(4, 2, 3, dtype=F64, generator=g),
            torch.ones(4, 2, 3, dtype=F64),
        ),
        Ensemble(torch.randn(20, 2, 3, dtype=F64, generator=g)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_common_interface(index, device):
    p = _all_families("cpu")[index].to(device)
    assert isinstance(p, Predictive)
    assert p.batch_shape == (2, 3)
    assert p.sample(6).shape == (6, 2, 3)
    assert p.mean.device.type == device.type
    assert p.quantile([0.1, 0.9]).shape == (2, 2, 3)
    lo, hi = p.interval(0.5)
    assert torch.all(lo <= hi)
    # the median satisfies F(median) >= 0.5 and the CDF is monotone
    med = p.quantile(0.5)
    assert torch.all(p.cdf(med) >= 0.5 - 1e-9)
    ds = p.to_xarray(dims=["task", "point"], name="h")
    assert ds["mean"].dims == ("task", "point") and ds.attrs["name"] == "h"
    np.testing.assert_allclose(ds["stddev"].values, p.stddev.cpu().numpy())
    p32 = p.to(torch.float32)
    assert p32.mean.dtype == torch.float32


def test_to_xarray_rejects_wrong_dims():
    with pytest.raises(ValueError, match="dims"):
        Normal(torch.zeros(2, 3), torch.ones(2, 3)).to_xarray(dims=["a"])
