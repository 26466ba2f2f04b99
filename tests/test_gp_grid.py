"""Kronecker-structured grid GP against a dense float64 computation on the full grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _gp_reference import (
    _np,
    _perturb_hyperparameters,
    _scalar,
    _single_thread,  # noqa: F401  (autouse)
    kernel_matrix,
    posterior,
)

from uqdyn.models.gp import GridGP


def _dense_kernel(gp: GridGP, axes_a, axes_b) -> np.ndarray:
    """Product kernel evaluated point by point on the flattened (row-major) grids."""
    pa = np.stack(np.meshgrid(*[_np(a) for a in axes_a], indexing="ij"), -1).reshape(-1, 3)
    pb = np.stack(np.meshgrid(*[_np(a) for a in axes_b], indexing="ij"), -1).reshape(-1, 3)
    out = np.ones((pa.shape[0], pb.shape[0]))
    for d, k in enumerate(gp.axis_kernels):
        out *= kernel_matrix(k, pa[:, d : d + 1], pb[:, d : d + 1])
    return out


def test_grid_gp_matches_dense(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    opts = {"dtype": torch.float64, "device": device}
    axes = [
        torch.linspace(0, 2, 5, **opts),
        torch.linspace(0, 1, 4, **opts),
        torch.linspace(0, 1, 6, **opts),
    ]
    t, yy, xx = torch.meshgrid(*axes, indexing="ij")
    values = torch.sin(2 * t + 3 * xx) * torch.cos(2 * yy) + 0.05 * torch.randn(
        t.shape, generator=g, dtype=torch.float64
    ).to(device)
    gp = GridGP(3, kernel=["matern32", "rbf", "periodic"])
    gp.fit(axes, values, steps=3, progress=False)
    _perturb_hyperparameters(gp, seed=3)
    noise, c = _scalar(gp.noise), _scalar(gp.mean_constant)
    new_axes = [
        torch.tensor([1.5, 2.5, 3.0], **opts),
        torch.tensor([0.2, 0.9], **opts),
        torch.linspace(-0.1, 1.1, 4, **opts),
    ]
    mean, cov, lml = posterior(
        _dense_kernel(gp, axes, axes),
        _dense_kernel(gp, new_axes, axes),
        _dense_kernel(gp, new_axes, new_axes),
        _np(values).reshape(-1),
        noise,
        c,
        c,
    )
    np.testing.assert_allclose(float(gp.log_marginal_likelihood().detach()), lml, rtol=1e-8)
    latent = gp.predict(new_axes, noisy=False)
    assert latent.batch_shape == (3, 2, 4)
    np.testing.assert_allclose(_np(latent.mean).reshape(-1), mean, atol=1e-6)
    np.testing.assert_allclose(_np(latent.variance).reshape(-1), np.diag(cov), atol=1e-6)
    noisy = gp.predict(new_axes)
    np.testing.assert_allclose(_np(noisy.variance).reshape(-1), np.diag(cov) + noise, atol=1e-6)
    joint = gp.predict(new_axes, noisy=False, joint=True)
    np.testing.assert_allclose(_np(joint.covariance_matrix), cov, atol=1e-6)
    # smoothing at the training grid
    mean_tr, cov_tr, _ = posterior(
        _dense_kernel(gp, axes, axes),
        _dense_kernel(gp, axes, axes),
        _dense_kernel(gp, axes, axes),
        _np(values).reshape(-1),
        noise,
        c,
        c,
    )
    train_pred = gp.predict(noisy=False)
    np.testing.assert_allclose(_np(train_pred.mean).reshape(-1), mean_tr, atol=1e-6)
    np.testing.assert_allclose(_np(train_pred.variance).reshape(-1), np.diag(cov_tr), atol=1e-6)


def test_grid_gp_fit_improves_and_rejects_bad_grids() -> None:
    g = torch.Generator().manual_seed(1)
    axes = [torch.linspace(0, 3, 12), torch.linspace(0, 1, 10), torch.linspace(0, 1, 10)]
    t, yy, xx = torch.meshgrid(*axes, indexing="ij")
    values = torch.sin(2 * t - 4 * xx) + 0.05 * torch.randn(t.shape, generator=g)
    gp = GridGP(3, kernel="rbf")
    history = gp.fit(axes, values, steps=40, progress=False)
    assert history[-1] < history[0]
    pred = gp.predict()
    assert float((pred.mean - torch.sin(2 * t - 4 * xx)).abs().mean()) < 0.05
    bad = values.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="values contains 1 NaN"):
        gp.fit(axes, bad, steps=1, progress=False)
    with pytest.raises(
        ValueError, match=r"values has shape \(12, 10, 9\); expected \(12, 10, 10\)"
    ):
        gp.fit(axes, values[..., :9], steps=1, progress=False)
    big = [torch.linspace(0, 1, 30), torch.linspace(0, 1, 20), torch.linspace(0, 1, 20)]
    with pytest.raises(ValueError, match="joint=True on 12000 grid points"):
        gp.predict(big, joint=True)


def test_predict_batch_is_the_dense_leave_one_out_predictive() -> None:
    g = torch.Generator().manual_seed(2)
    axes = [
        torch.linspace(0, 2, 4, dtype=torch.float64),
        torch.linspace(0, 1, 3, dtype=torch.float64),
        torch.linspace(0, 1, 5, dtype=torch.float64),
    ]
    values = torch.randn(4, 3, 5, generator=g, dtype=torch.float64).cumsum(0)
    gp = GridGP(3, kernel=["matern32", "rbf", "rbf"]).double()
    _perturb_hyperparameters(gp, seed=3)
    prediction, y_true, mask = gp.predict_batch((axes, values))
    assert mask is None and torch.equal(y_true, values)
    assert prediction.batch_shape == (4, 3, 5)
    # dense reference: condition each value on all the others (Gaussian conditioning)
    cov = _dense_kernel(gp, axes, axes) + _scalar(gp.noise) * np.eye(60)
    y = _np(values).reshape(-1) - _scalar(gp.mean_constant)
    mean, sd = np.empty(60), np.empty(60)
    for i in range(60):
        o = np.arange(60) != i
        w = np.linalg.solve(cov[np.ix_(o, o)], cov[o, i])
        mean[i] = _scalar(gp.mean_constant) + w @ y[o]
        sd[i] = np.sqrt(cov[i, i] - w @ cov[o, i])
    np.testing.assert_allclose(_np(prediction.mean).reshape(-1), mean, atol=1e-8)
    np.testing.assert_allclose(_np(prediction.stddev).reshape(-1), sd, rtol=1e-7)


def test_a_state_dict_carries_the_grid() -> None:
    t, s = torch.linspace(0, 1, 6), torch.linspace(0, 1, 4)
    field = torch.sin(3 * t)[:, None] + torch.cos(2 * s)[None, :]
    gp = GridGP(2)
    gp.fit([t, s], field, steps=3, progress=False)
    fresh = GridGP(2)
    fresh.load_state_dict(gp.state_dict())
    a, b = gp.predict([t[:3], s]), fresh.predict([t[:3], s])
    assert torch.equal(a.mean, b.mean) and torch.equal(a.stddev, b.stddev)
