"""Energy and variogram scores against scoringrules and direct float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn.scoring import crps_ensemble, energy_score, variogram_score

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
        got = energy_score(y, x, weights=w, estimator=est)
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
    got_w = variogram_score(y, x, p=p, weights=w)
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
        variogram_score(y, x, weights=np.ones((2, 2)))
    with pytest.raises(ValueError, match="member"):
        energy_score(y, x[:, :0])
