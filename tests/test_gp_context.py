"""Context/target interface (per-task fits) and meta-learned shared hyperparameters."""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from _gp_reference import (
    _np,
    _scalar,
    _single_thread,  # noqa: F401  (autouse)
)

from uqdyn.data import Task, TaskSampler
from uqdyn.models.gp import ContextGP, ExactGP, MetaGP
from uqdyn.predictive import MultivariateNormal, Normal


def _padded_task(device: torch.device) -> Task:
    g = torch.Generator().manual_seed(0)
    opts = {"dtype": torch.float64}
    xc = 4 * torch.rand(3, 9, 1, generator=g, **opts)
    yc = torch.cat([torch.sin(2 * xc), torch.cos(xc)], dim=-1)
    mask_c = torch.ones(3, 9, dtype=torch.bool)
    mask_c[0, 6:] = False
    mask_c[2, 4:] = False
    xc = torch.where(mask_c[..., None], xc, torch.zeros_like(xc))  # padding rows hold 0
    yc = torch.where(mask_c[..., None], yc, torch.zeros_like(yc))
    xt = 4 * torch.rand(3, 5, 1, generator=g, **opts)
    yt = torch.cat([torch.sin(2 * xt), torch.cos(xt)], dim=-1)
    mask_t = torch.ones(3, 5, dtype=torch.bool)
    return Task(xc, yc, mask_c, xt, yt, mask_t).to(device)


def test_context_gp_fits_each_task_on_its_real_context(device: torch.device) -> None:
    task = _padded_task(device)
    model = ContextGP(1, 2, kernel="matern52", steps=20)
    pred = model(task.x_context, task.y_context, task.x_target, mask_context=task.mask_context)
    assert isinstance(pred, Normal) and pred.batch_shape == (3, 5, 2)
    same = model(task)
    torch.testing.assert_close(same.mean, pred.mean)
    for b in range(3):
        keep = task.mask_context[b]
        gp = ExactGP(1, 2, kernel="matern52")
        gp.fit(task.x_context[b][keep], task.y_context[b][keep], steps=20, progress=False)
        ref = gp.predict(task.x_target[b])
        torch.testing.assert_close(pred.mean[b], ref.mean.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(pred.stddev[b], ref.stddev.detach(), rtol=1e-9, atol=1e-9)
    joint = ContextGP(1, 2, kernel="matern52", steps=20, joint=True)(task)
    assert isinstance(joint, MultivariateNormal) and joint.batch_shape == (3, 10)
    torch.testing.assert_close(joint.stddev, pred.stddev.reshape(3, 10), rtol=1e-6, atol=1e-9)


def test_meta_loss_is_mean_log_marginal_likelihood_per_point() -> None:
    task = _padded_task(torch.device("cpu"))
    model = MetaGP(1, 2, kernel="rbf").double()
    loss = float(model.loss(task).detach())
    kernel = model.gp.gp.covar_module
    scales = _np(kernel.outputscale)
    ells = _np(kernel.base_kernel.lengthscale).reshape(-1)
    noises = _np(model.gp.likelihood.task_noises)
    expected = 0.0
    for b in range(3):
        x = np.concatenate([_np(task.x_context[b][task.mask_context[b]]), _np(task.x_target[b])])
        y = np.concatenate([_np(task.y_context[b][task.mask_context[b]]), _np(task.y_target[b])])
        total = 0.0
        for j in range(2):
            k = scales[j] * np.exp(-0.5 * (x - x.T) ** 2 / ells[j] ** 2)
            cov = k + noises[j] * np.eye(x.shape[0])
            total += scipy.stats.multivariate_normal(np.zeros(x.shape[0]), cov).logpdf(y[:, j])
        expected -= total / (2 * x.shape[0])
    np.testing.assert_allclose(loss, expected / 3, rtol=1e-8)


def test_meta_gp_learns_shared_lengthscale_from_many_small_tasks() -> None:
    rng = np.random.default_rng(0)
    times = np.linspace(0, 6, 40)
    ell, scale, noise = 0.6, 1.0, 0.01
    k = scale * np.exp(-0.5 * (times[:, None] - times[None, :]) ** 2 / ell**2)
    factor = np.linalg.cholesky(k + 1e-8 * np.eye(40))
    values = factor @ rng.standard_normal((40, 64)) + np.sqrt(noise) * rng.standard_normal((40, 64))
    values = torch.as_tensor(values.T[..., None], dtype=torch.float32)  # (64, 40, 1)
    sampler = TaskSampler(
        values, torch.as_tensor(times, dtype=torch.float32), num_context=(3, 8), num_target=12
    )
    model = MetaGP(1, kernel="rbf")
    result = model.fit(
        lambda g: sampler.sample(8, generator=g), steps=150, lr=0.05, progress=False, device="cpu"
    )
    assert result.steps_done == 150
    learned = _scalar(model.gp.gp.covar_module.base_kernel.lengthscale)
    assert abs(learned - ell) < 0.2 * ell, learned
    assert abs(_scalar(model.gp.gp.covar_module.outputscale) - scale) < 0.35 * scale
    # shared hyperparameters beat per-task fits on 3-point contexts (held-out CRPS)
    test = sampler.sample(16, generator=torch.Generator().manual_seed(123))
    small = Task(
        test.x_context[:, :3],
        test.y_context[:, :3],
        test.mask_context[:, :3].clone().fill_(True),
        test.x_target,
        test.y_target,
        test.mask_target,
    )
    with torch.no_grad():
        crps_meta = model(small).crps(small.y_target)[small.mask_target].mean()
    crps_task = (
        ContextGP(1, kernel="rbf", steps=50)(small).crps(small.y_target)[small.mask_target].mean()
    )
    assert float(crps_meta) < float(crps_task)
