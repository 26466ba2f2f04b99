"""Energy and variogram scores against scoringrules and direct float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.scoring import crps_ensemble
from uqdyn.scoring.multivariate import energy_score, variogram_score

sr = pytest.importorskip("scoringrules")


def _es_loop(y: np.ndarray, x: np.ndarray, fair: bool = False) -> np.ndarray:
    out = np.empty(y.shape[0])
    for b in range(y.shape[0]):
        m = x.shape[1]
        skill = sum(np.linalg.norm(x[b, i] - y[b]) for i in range(m)) / m
        pairs = sum(np.linalg.norm(x[b, i] - x[b, j]) for i in range(m) for j in range(m))
        out[b] = skill - pairs / (2 * (m * (m - 1) if fair else m * m))
    return out


def _vs_loop(y: np.ndarray, x: np.ndarray, p: float, w: np.ndarray | None = None) -> np.ndarray:
    n, m, d = x.shape
    w = np.ones((d, d)) if w is None else w
    out = np.zeros(n)
    for b in range(n):
        for i in range(d):
            for j in range(d):
                vf = np.mean([abs(x[b, k, i] - x[b, k, j]) ** p for k in range(m)])
                out[b] += w[i, j] * (abs(y[b, i] - y[b, j]) ** p - vf) ** 2
    return out


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 3)), rng.standard_normal((20, 6, 3))


@pytest.mark.parametrize("estimator", ["nrg", "fair"])
def test_energy_score_matches_scoringrules_and_loop(data, estimator):
    y, x = data
    got = energy_score(y, x, estimator=estimator)
    np.testing.assert_allclose(got, _es_loop(y, x, fair=estimator == "fair"), atol=1e-12)
    ref = sr.es_ensemble(y, x, estimator=estimator, backend="numpy")
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_energy_score_weights_and_one_dimension(data):
    y, x = data
    w = np.random.default_rng(1).uniform(0.1, 1.0, (20, 6))
    for est in ("nrg", "fair"):
        got = energy_score(y, x, member_weights=w, estimator=est)
        ref = sr.es_ensemble(y, x, ens_w=w, estimator=est, backend="numpy")
        np.testing.assert_allclose(got, ref, atol=1e-12)
    # with one variable the energy score is the ensemble CRPS
    np.testing.assert_allclose(
        energy_score(y[:, :1], x[:, :, :1]), crps_ensemble(y[:, 0], x[:, :, 0]), atol=1e-12
    )


def test_energy_score_layouts_and_xarray(data):
    y, x = data
    ref = energy_score(y, x)
    np.testing.assert_allclose(
        energy_score(y, np.transpose(x, (1, 0, 2)), member_dim=0, event_dim=-1), ref
    )
    np.testing.assert_allclose(
        energy_score(y, np.transpose(x, (0, 2, 1)), member_dim=-1, event_dim=-2), ref
    )
    fc = xr.DataArray(x, dims=("time", "member", "var"), coords={"time": np.arange(20)})
    obs = xr.DataArray(y, dims=("time", "var"), coords={"time": np.arange(20)})
    out = energy_score(obs, fc, event_dim="var")
    assert isinstance(out, xr.DataArray) and out.dims == ("time",)
    np.testing.assert_allclose(out.values, ref, atol=1e-12)
    np.testing.assert_allclose(
        variogram_score(obs, fc, event_dim="var").values, variogram_score(y, x), atol=1e-12
    )


def test_energy_score_device_nan_and_gradient(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, 2, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(5, 2, generator=gen, dtype=torch.float64).to(device)
    ref = energy_score(y.cpu(), x.cpu())
    torch.testing.assert_close(energy_score(y, x).cpu(), ref)
    x_nan = x.clone()
    x_nan[2, 1, 0] = math.nan
    out = energy_score(y, x_nan)
    assert torch.isnan(out[2]) and not torch.isnan(out[[0, 1, 3, 4]]).any()
    xg = x.clone().requires_grad_(True)
    energy_score(y, xg, reduction="sum").backward()
    assert torch.isfinite(xg.grad).all()


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_variogram_score_matches_scoringrules_and_loop(data, p):
    y, x = data
    got = variogram_score(y, x, p=p)
    np.testing.assert_allclose(got, _vs_loop(y, x, p), atol=1e-10)
    np.testing.assert_allclose(got, sr.vs_ensemble(y, x, p=p, backend="numpy"), atol=1e-10)
    w = np.random.default_rng(3).uniform(0, 1, (3, 3))
    got_w = variogram_score(y, x, p=p, pair_weights=w)
    np.testing.assert_allclose(got_w, _vs_loop(y, x, p, w), atol=1e-10)
    np.testing.assert_allclose(got_w, sr.vs_ensemble(y, x, w, p=p, backend="numpy"), atol=1e-10)


def test_variogram_score_device(device):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 5, 4)), rng.standard_normal((6, 4))
    got = variogram_score(torch.tensor(y, device=device), torch.tensor(x, device=device), p=1.0)
    np.testing.assert_allclose(got.cpu().numpy(), _vs_loop(y, x, 1.0), atol=1e-10)


def test_multivariate_errors(data):
    y, x = data
    with pytest.raises(ValueError, match=r"\(20, 2\).*\(20, 3\)"):
        energy_score(y[:, :2], x)
    with pytest.raises(ValueError, match="estimator"):
        energy_score(y, x, estimator="pwm")
    with pytest.raises(ValueError, match="distinct"):
        energy_score(y, x, member_dim=-1, event_dim=-1)
    with pytest.raises(ValueError, match="p="):
        variogram_score(y, x, p=0.0)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        variogram_score(y, x, pair_weights=np.ones((2, 2)))
    with pytest.raises(ValueError, match="member"):
        energy_score(y, x[:, :0])


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_variogram_fair_and_member_weights_match_scoringrules(data, p):
    y, x = data
    ens_w = np.random.default_rng(5).uniform(0.1, 1.0, (20, 6))
    pw = np.random.default_rng(6).uniform(0, 1, (3, 3))
    for est in ("nrg", "fair"):
        ref = sr.vs_ensemble(y, x, p=p, estimator=est, backend="numpy")
        np.testing.assert_allclose(variogram_score(y, x, p=p, estimator=est), ref, atol=1e-10)
        ref_w = sr.vs_ensemble(y, x, pw, ens_w=ens_w, p=p, estimator=est, backend="numpy")
        got_w = variogram_score(y, x, p=p, estimator=est, pair_weights=pw, member_weights=ens_w)
        np.testing.assert_allclose(got_w, ref_w, atol=1e-10)


def test_fair_variogram_is_unbiased():
    """Mean fair VS over 3-member ensembles = VS of the parent (from a 4000-member ensemble)."""
    gen = torch.Generator().manual_seed(7)
    cov = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.5], [0.2, 0.5, 1.0]], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    y = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
    big = torch.randn(1, 4000, 3, generator=gen, dtype=torch.float64) @ chol.T
    truth = float(variogram_score(y[None], big, estimator="fair"))
    small = torch.randn(4000, 3, 3, generator=gen, dtype=torch.float64) @ chol.T
    ys = y.expand(4000, 3)
    fair = float(variogram_score(ys, small, estimator="fair", reduction="mean"))
    plain = float(variogram_score(ys, small, reduction="mean"))
    assert abs(fair - truth) < 0.03 < plain - truth


def test_member_weights_shape_error_and_nan_policy(data):
    y, x = data
    with pytest.raises(ValueError, match=r"member_weights has shape \(5,\).*\(20, 6, 3\)"):
        energy_score(y, x, member_weights=np.ones(5))
    with pytest.raises(ValueError, match=r"member_weights has shape \(20, 7\)"):
        variogram_score(y, x, member_weights=np.ones((20, 7)))
    with pytest.raises(ValueError, match="weights= are reduction weights"):
        energy_score(y, x, weights=np.ones(20))
    x = x.copy()
    x[0, 2, 1] = np.nan
    keep = [0, 1, 3, 4, 5]
    for score in (energy_score, variogram_score):
        for est in ("nrg", "fair"):
            out = score(y, x, estimator=est, nan_policy="omit")
            np.testing.assert_allclose(out[0], score(y[:1], x[:1, keep], estimator=est)[0])
            np.testing.assert_allclose(out[1:], score(y[1:], x[1:], estimator=est))
            assert np.isnan(score(y, x, estimator=est)[0])
        with pytest.raises(ValueError, match="forecasts has 1 NaN"):
            score(y, x, nan_policy="raise")
    lat = np.cos(np.linspace(0, 1.2, 20))
    s = energy_score(y[1:], x[1:])
    np.testing.assert_allclose(
        energy_score(y[1:], x[1:], dim=0, weights=lat[1:]), (lat[1:] * s).sum() / lat[1:].sum()
    )


def test_energy_score_never_forms_pairwise_difference_tensor():
    """N M^2 D float64 would be 1 GiB here; no single op may allocate more than 64 MiB."""
    from torch.profiler import ProfilerActivity, profile

    def peak_op_bytes(fn):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return max(e.cpu_memory_usage for e in prof.events())

    gen = torch.Generator().manual_seed(8)
    # the detector sees a naive pairwise difference (8 x 64 x 64 x 64 float64 = 16 MiB)
    xs = torch.randn(8, 64, 64, generator=gen, dtype=torch.float64)
    assert peak_op_bytes(lambda: (xs[:, :, None] - xs[:, None]).norm(dim=-1)) >= 16 * 2**20
    n, m, d = 8, 256, 256
    x = torch.randn(n, m, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    assert n * m * m * d * 8 == 2**30
    assert peak_op_bytes(lambda: energy_score(y, x, estimator="fair")) <= 64 * 2**20
