"""crps_normal's blocked CPU kernel and plain path, and the shared conventions of the
closed-form CRPS functions (dim, weights, nan_policy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from uqdyn.predictive import Normal
from uqdyn.scoring.crps_closed import _BLOCK, crps, crps_mixture, crps_normal


def _reference(y, mu, sigma):
    """Float64 closed form through scipy's ndtr and the normal density."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    z = (y - mu) / sigma
    return sigma * (
        z * (2.0 * special.ndtr(z) - 1.0) + 2.0 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
    )


def _data(n, seed=0, dtype=torch.float64, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, generator=gen, dtype=torch.float64) * spread
    mu = torch.randn(n, generator=gen, dtype=torch.float64)
    sigma = torch.rand(n, generator=gen, dtype=torch.float64) + 0.05
    return y.to(dtype), mu.to(dtype), sigma.to(dtype)


@pytest.mark.parametrize("n", [7, _BLOCK - 1, 5 * _BLOCK + 123])
def test_crps_normal_float64_matches_scipy_to_1e13(n):
    # spread 10 puts |z| up to ~ 800: the tails, where erf saturates.
    y, mu, sigma = _data(n, spread=10.0)
    got = crps_normal(y, mu, sigma).numpy()
    ref = _reference(y, mu, sigma)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)


def test_crps_normal_float32_matches_float64():
    y, mu, sigma = _data(3 * _BLOCK, seed=1, dtype=torch.float32)
    got = crps_normal(y, mu, sigma)
    assert got.dtype == torch.float32
    ref = _reference(y.double(), mu.double(), sigma.double())
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=2e-6, atol=1e-7)


def test_blocked_kernel_equals_plain_path_and_is_thread_independent():
    y, mu, sigma = _data(6 * _BLOCK + 5, seed=2)
    fast = crps_normal(y, mu, sigma)
    plain = crps_normal(y.requires_grad_(), mu, sigma).detach()  # autograd: plain path
    torch.testing.assert_close(fast, plain, rtol=1e-15, atol=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = crps_normal(y.detach(), mu, sigma)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, fast)


def test_crps_normal_broadcast_on_the_blocked_path():
    y, mu, _ = _data(2 * _BLOCK, seed=3)
    got = crps_normal(y.reshape(2, -1), mu.reshape(2, -1)[0], 1.5)
    ref = _reference(y.reshape(2, -1), mu.reshape(2, -1)[0], 1.5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13, atol=0)


def test_crps_normal_gradients_are_analytic():
    y, mu, sigma = _data(40, seed=4)
    mu.requires_grad_()
    sigma.requires_grad_()
    crps_normal(y, mu, sigma).sum().backward()
    z = ((y - mu) / sigma).detach().numpy()
    # dCRPS/dmu = -(2 Phi(z) - 1), dCRPS/dsigma = 2 phi(z) - 1/sqrt(pi)
    np.testing.assert_allclose(mu.grad.numpy(), -(2 * special.ndtr(z) - 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        sigma.grad.numpy(), 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi), rtol=1e-12, atol=1e-15
    )
    assert torch.autograd.gradcheck(
        lambda m, s: crps_normal(y[:5], m, s),
        (mu[:5].detach().requires_grad_(), sigma[:5].detach().requires_grad_()),
    )


def test_crps_normal_sigma_checked_in_every_block_and_nan_propagates():
    y, mu, sigma = _data(5 * _BLOCK, seed=5)
    bad = sigma.clone()
    bad[4 * _BLOCK + 7] = 0.0
    with pytest.raises(ValueError, match=r"sigma has 1 non-positive"):
        crps_normal(y, mu, bad)
    with pytest.raises(ValueError, match="sigma"):
        crps_normal(y[:10], mu[:10], -sigma[:10])
    nan = sigma.clone()
    nan[3] = math.nan
    out = crps_normal(y, mu, nan)
    assert torch.isnan(out[3]) and int(torch.isnan(out).sum()) == 1


def test_crps_normal_dim_weights_and_nan_policy():
    y, mu, sigma = _data(60, seed=6)
    y, mu, sigma = y.reshape(3, 20), mu.reshape(3, 20), sigma.reshape(3, 20)
    point = _reference(y, mu, sigma)
    w = np.cos(np.linspace(0, 1.2, 3))[:, None]
    got = crps_normal(y, mu, sigma, dim=0, weights=torch.tensor(w))
    np.testing.assert_allclose(got.numpy(), (w * point).sum(0) / w.sum(), rtol=1e-13)
    np.testing.assert_allclose(
        crps_normal(y, mu, sigma, dim=(0, 1)).item(), point.mean(), rtol=1e-13
    )
    with pytest.raises(ValueError, match="dim|reduction"):
        crps_normal(y, mu, sigma, weights=torch.tensor(w))
    y_nan = y.clone()
    y_nan[1, 4] = math.nan
    keep = np.ones_like(point, dtype=bool)
    keep[1, 4] = False
    omit = crps_normal(y_nan, mu, sigma, dim=1, nan_policy="omit").numpy()
    np.testing.assert_allclose(omit[1], point[1][keep[1]].mean(), rtol=1e-13)
    assert math.isnan(crps_normal(y_nan, mu, sigma, dim=1)[1].item())
    with pytest.raises(ValueError, match=r"obs has 1 NaN"):
        crps_normal(y_nan, mu, sigma, nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy"):
        crps_normal(y, mu, sigma, nan_policy="drop")


def test_crps_normal_xarray_dim_by_name():
    xr = pytest.importorskip("xarray")
    y, mu, sigma = (t.reshape(4, 5).numpy() for t in _data(20, seed=7))
    da = xr.DataArray(y, dims=("lat", "lon"))
    w = xr.DataArray(np.cos(np.linspace(0, 1, 4)), dims=("lat",))
    got = crps_normal(
        da,
        xr.DataArray(mu, dims=("lat", "lon")),
        xr.DataArray(sigma, dims=("lat", "lon")),
        dim="lat",
        weights=w,
    )
    assert got.dims == ("lon",)
    point = _reference(y, mu, sigma)
    np.testing.assert_allclose(
        got.values, (w.values[:, None] * point).sum(0) / w.values.sum(), rtol=1e-13
    )


def test_crps_mixture_component_weights_and_reduction_weights():
    gen = np.random.default_rng(8)
    y = gen.normal(size=(6,))
    mu = gen.normal(size=(6, 3))
    sigma = gen.uniform(0.3, 2.0, size=(6, 3))
    cw = gen.uniform(0.1, 1.0, size=(6, 3))
    point = crps_mixture(y, cw, mu, sigma)
    # one component: the Gaussian closed form
    np.testing.assert_allclose(
        crps_mixture(y, np.ones(1), mu[:, :1], sigma[:, :1]),
        _reference(y, mu[:, 0], sigma[:, 0]),
        rtol=1e-13,
    )
    w = gen.uniform(0.5, 1.5, size=(6,))
    got = crps_mixture(y, cw, mu, sigma, dim=0, weights=w)
    np.testing.assert_allclose(got, (w * point).sum() / w.sum(), rtol=1e-13)
    y_nan = y.copy()
    y_nan[2] = np.nan
    np.testing.assert_allclose(
        crps_mixture(y_nan, cw, mu, sigma, reduction="mean", nan_policy="omit"),
        np.delete(point, 2).mean(),
        rtol=1e-13,
    )
    with pytest.raises(ValueError, match="component_weights has 1 NaN"):
        cw_nan = cw.copy()
        cw_nan[0, 0] = np.nan
        crps_mixture(y, cw_nan, mu, sigma, nan_policy="raise")


def test_crps_of_predictive_with_conventions():
    y, mu, sigma = _data(12, seed=9)
    pred = Normal(mu.reshape(3, 4), sigma.reshape(3, 4))
    point = _reference(y, mu, sigma).reshape(3, 4)
    torch.testing.assert_close(crps(y.reshape(3, 4), pred), torch.tensor(point))
    got = crps(y.reshape(3, 4), pred, dim=1, weights=torch.arange(1.0, 5.0, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), (point * np.arange(1, 5)).sum(1) / 10, rtol=1e-13)
    y_nan = y.reshape(3, 4).clone()
    y_nan[0, 0] = math.nan
    with pytest.raises(ValueError, match="obs has 1 NaN"):
        crps(y_nan, pred, nan_policy="raise")
    omit = crps(y_nan, pred, reduction="mean", nan_policy="omit")
    np.testing.assert_allclose(omit.item(), point.reshape(-1)[1:].mean(), rtol=1e-13)
