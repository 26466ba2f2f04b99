"""Uncertainty for a new environment: the CoDA context Laplace posterior, ensembles, the
context-to-parameter map."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uqdyn.models.hybrid import MLPAugmentation
from uqdyn.models.multienv import (
    LEADS,
    CoDA,
    EnvironmentBatch,
    context_ensemble,
    context_laplace,
    ensemble_forecast,
    fit_parameter_map,
)
from uqdyn.predictive import Ensemble


def _linear_coda(lam: float) -> tuple[CoDA, EnvironmentBatch, float]:
    dtype = torch.float64
    dt, d = 0.1, 3
    model = CoDA(
        lambda: nn.Linear(2, 2, bias=False), 1, (2,), context_dim=d, context_penalty=lam,
        hyper_init_std=1.0, method="euler", seed=3,
    ).to(dtype)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 2, generator=g, dtype=dtype)
    y = x0 + 0.3 * torch.randn(6, 2, generator=g, dtype=dtype)
    times = torch.tensor([0.0, dt], dtype=dtype)
    batch = EnvironmentBatch(times, torch.stack([x0, y], 1), torch.zeros(6, dtype=torch.int64))
    return model, batch, dt


def test_laplace_covariance_equals_the_linear_gaussian_posterior() -> None:
    """Residuals linear in the context: the Gauss-Newton Laplace approximation is exact,
    ``sigma^2 (G^T G + lam N I)^-1`` with ``sigma^2`` the mean squared residual at the fit."""
    lam = 1e-2
    model, batch, dt = _linear_coda(lam)
    env = model.adapt(batch, steps=30, lr=1.0, optimizer="lbfgs")
    post = context_laplace(model, env, batch)
    x0, y = batch.trajectories[:, 0], batch.trajectories[:, 1]
    theta = model.net.weight.detach()
    basis = model.hyper.detach().T.reshape(3, 2, 2)
    G = (dt * torch.einsum("kij,bj->bik", basis, x0)).reshape(-1, 3)
    c = model.contexts[env].detach()
    r = (x0 + dt * x0 @ theta.T - y).reshape(-1) + G @ c
    sigma2 = float(r.pow(2).mean())
    expected = sigma2 * torch.linalg.inv(G.T @ G + lam * r.numel() * torch.eye(3, dtype=G.dtype))
    assert post.n_points == 12
    assert post.noise_var == pytest.approx(sigma2, rel=1e-10)
    torch.testing.assert_close(post.covariance, expected, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(post.mean, c)


def test_posterior_samples_have_the_posterior_moments() -> None:
    model, batch, _ = _linear_coda(1e-3)
    env = model.adapt(batch, steps=30, lr=1.0, optimizer="lbfgs")
    post = context_laplace(model, env, batch)
    draws = post.sample(20000, seed=1)
    chol = torch.linalg.cholesky(post.covariance)
    white = torch.linalg.solve_triangular(chol, (draws - post.mean).T, upper=False).T
    # whitened draws: mean 0 and identity covariance up to sampling error (1/sqrt(20000))
    torch.testing.assert_close(white.mean(0), torch.zeros(3, dtype=white.dtype), atol=0.03, rtol=0)
    torch.testing.assert_close(
        torch.cov(white.T), torch.eye(3, dtype=white.dtype), atol=0.04, rtol=0
    )
    assert torch.equal(draws, post.sample(20000, seed=1))  # seeded


def test_context_ensemble_rolls_out_posterior_draws() -> None:
    model, batch, _ = _linear_coda(1e-3)
    env = model.adapt(batch, steps=30, lr=1.0, optimizer="lbfgs")
    post = context_laplace(model, env, batch)
    ens = context_ensemble(model, post, batch.initial_state, batch.times, members=7, seed=2)
    assert isinstance(ens, Ensemble) and ens.members.shape == (7, 6, 1, 2)
    c = post.sample(7, seed=2)[3]
    theta = model.net.weight.detach() + (model.hyper.detach() @ c).reshape(2, 2)
    x0 = batch.initial_state
    torch.testing.assert_close(ens.members[3, :, 0], x0 + 0.1 * x0 @ theta.T)


def test_ensemble_forecast_stacks_each_models_rollout() -> None:
    times = torch.linspace(0.0, 1.0, 4)
    models = [LEADS(lambda: MLPAugmentation(2, hidden=8), 2, (2,), seed=s) for s in range(3)]
    x0 = torch.rand(5, 2) + 0.5
    env = torch.tensor([0, 1, 0, 1, 1])
    ens = ensemble_forecast(models, x0, times, env)
    assert ens.members.shape == (3, 5, 3, 2)
    torch.testing.assert_close(ens.members[2], models[2].rollout(x0, times, env)[:, 1:])
    with pytest.raises(ValueError, match="models"):
        ensemble_forecast([], x0, times, env)
    with pytest.raises(ValueError, match="env"):
        ensemble_forecast(models, x0, times, [env, env])


def test_parameter_map_recovers_an_affine_map() -> None:
    g = torch.Generator().manual_seed(0)
    contexts = torch.randn(9, 2, generator=g, dtype=torch.float64)
    weight = torch.tensor([[0.3, -0.2], [0.1, 0.5]], dtype=torch.float64)
    bias = torch.tensor([0.75, 0.75], dtype=torch.float64)
    params = contexts @ weight + bias
    pmap = fit_parameter_map(contexts, params, ["beta", "delta"])
    torch.testing.assert_close(pmap.weight, weight)
    torch.testing.assert_close(pmap.bias, bias)
    new = torch.randn(4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(pmap(new), new @ weight + bias)
    assert pmap.names == ("beta", "delta")
    with pytest.raises(ValueError, match="environments"):
        fit_parameter_map(contexts[:2], params[:2])
    with pytest.raises(ValueError, match="contexts"):
        pmap(torch.zeros(3, 5))


def test_laplace_names_bad_arguments() -> None:
    model, batch, _ = _linear_coda(1e-3)
    with pytest.raises(ValueError, match="env"):
        context_laplace(model, 4, batch)
    with pytest.raises(TypeError, match="CoDA"):
        context_laplace(LEADS(lambda: MLPAugmentation(2, hidden=4), 1, (2,)), 0, batch)  # type: ignore[arg-type]
