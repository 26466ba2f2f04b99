"""Neural-process models: shapes, masks, permutation invariance, gradients, likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

from uqdyn.data import Task
from uqdyn.models.neural_process import (
    CNP,
    AttentiveCNP,
    AttentiveNP,
    LatentNP,
    NeuralODEProcess,
)
from uqdyn.physics import DampedPendulum
from uqdyn.predictive import GaussianMixture, Normal

X_DIM, Y_DIM = 2, 3


def _make(name: str, x_dim: int = X_DIM, y_dim: int = Y_DIM, **kwargs):
    small = {"width": 16}
    if name == "cnp":
        return CNP(x_dim, y_dim, **small, **kwargs)
    if name == "acnp":
        return AttentiveCNP(x_dim, y_dim, num_heads=4, self_attention=1, **small, **kwargs)
    if name == "np":
        return LatentNP(x_dim, y_dim, z_dim=6, num_samples=5, **small, **kwargs)
    if name == "anp":
        return AttentiveNP(
            x_dim, y_dim, z_dim=6, num_heads=4, self_attention=1, num_samples=5, **small, **kwargs
        )
    if name == "ndp":
        return NeuralODEProcess(
            y_dim,
            latent_dim=3,
            control_dim=2,
            num_samples=5,
            method="rk4",
            options={"step_size": 0.1},
            **small,
            **kwargs,
        )
    raise KeyError(name)


MODELS = ["cnp", "acnp", "np", "anp", "ndp"]
LATENT = {"np", "anp", "ndp"}


def _inputs(name: str, batch=3, n_context=6, n_target=7, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(11)
    x_dim = 1 if name == "ndp" else X_DIM
    xc = torch.rand(batch, n_context, x_dim, generator=g, dtype=dtype)
    yc = torch.randn(batch, n_context, Y_DIM, generator=g, dtype=dtype)
    xt = torch.rand(batch, n_target, x_dim, generator=g, dtype=dtype)
    return xc.to(device), yc.to(device), xt.to(device)


def _predict(model, *args, **kwargs):
    if isinstance(model, (LatentNP, AttentiveNP, NeuralODEProcess)):
        kwargs["generator"] = torch.Generator(device=args[0].device).manual_seed(3)
    return model(*args, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_and_predictive_type(name, device):
    torch.manual_seed(0)
    model = _make(name).to(device)
    xc, yc, xt = _inputs(name, device=device)
    pred = _predict(model, xc, yc, xt)
    assert pred.batch_shape == (3, 7, Y_DIM)
    assert pred.mean.device.type == device.type
    if name in LATENT:
        assert isinstance(pred, GaussianMixture)
        assert pred.loc.shape == (5, 3, 7, Y_DIM)  # components first
        torch.testing.assert_close(pred.weights, torch.full_like(pred.weights, 0.2))
    else:
        assert isinstance(pred, Normal)
    assert bool((pred.stddev >= 0.01 - 1e-6).all())


@pytest.mark.parametrize("name", MODELS)
def test_padding_with_masked_points_leaves_predictions_unchanged(name, device):
    torch.manual_seed(0)
    model = _make(name).to(device)
    xc, yc, xt = _inputs(name, n_context=5, device=device)
    reference = _predict(model, xc, yc, xt)
    # pad every task with 4 garbage points (and one NaN), shuffled in between the real ones
    g = torch.Generator().manual_seed(5)
    pad_x = (100.0 * torch.randn(3, 4, xc.shape[-1], generator=g)).to(device)
    pad_y = (100.0 * torch.randn(3, 4, Y_DIM, generator=g)).to(device)
    pad_y[0, 0, 0] = float("nan")
    xp, yp = torch.cat([xc, pad_x], 1), torch.cat([yc, pad_y], 1)
    mask = torch.cat([torch.ones(3, 5, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)], 1)
    order = torch.randperm(9, generator=g)
    padded = _predict(model, xp[:, order], yp[:, order], xt, mask_context=mask[:, order].to(device))
    torch.testing.assert_close(padded.mean, reference.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded.stddev, reference.stddev, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_tasks_with_different_context_sizes_match_separate_calls(name):
    torch.manual_seed(0)
    model = _make(name)
    xc, yc, xt = _inputs(name, batch=2, n_context=6)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    together = _predict(model, xc, yc, xt, mask_context=mask)
    alone = _predict(model, xc[1:, :2], yc[1:, :2], xt[1:])
    if isinstance(together, GaussianMixture):
        # equal latent draws need equal randomness per task: compare the decoded latent means
        together = _predict(model, xc[1:], yc[1:], xt[1:], mask_context=mask[1:])
    else:
        together = Normal(together.loc[1:], together.scale[1:])
    torch.testing.assert_close(together.mean, alone.mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_permutation_invariance_over_the_context(name):
    torch.manual_seed(0)
    model = _make(name)
    xc, yc, xt = _inputs(name, n_context=8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    a = _predict(model, xc, yc, xt)
    b = _predict(model, xc[:, perm], yc[:, perm], xt)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.stddev, b.stddev, rtol=1e-5, atol=1e-6)
    # and the context matters: changing one context value changes the prediction
    yc2 = yc.clone()
    yc2[:, 0] += 1.0
    assert not torch.allclose(_predict(model, xc, yc2, xt).mean, a.mean, atol=1e-4)


def _task(name, batch=4, n_context=5, n_target=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_dim = 1 if name == "ndp" else X_DIM
    xc = torch.rand(batch, n_context, x_dim, generator=g)
    xt = torch.rand(batch, n_target, x_dim, generator=g)
    yc = torch.randn(batch, n_context, Y_DIM, generator=g)
    yt = torch.randn(batch, n_target, Y_DIM, generator=g)
    mc = torch.arange(n_context) < torch.randint(1, n_context + 1, (batch, 1), generator=g)
    mt = torch.arange(n_target) < torch.randint(1, n_target + 1, (batch, 1), generator=g)
    return Task(xc, yc, mc, xt, yt, mt)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    kwargs = {"physics": DampedPendulum(omega0=1.0, alpha=0.1)} if name == "ndp" else {}
    model = _make(name, **kwargs)
    model.loss(_task(name)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["cnp", "acnp"])
def test_conditional_loss_is_masked_gaussian_nll_per_target(name):
    torch.manual_seed(0)
    model = _make(name).double()
    task = _task(name, seed=1).to(dtype=torch.float64)
    pred = model.predict(task)
    reference = torch.distributions.Normal(pred.loc, pred.scale).log_prob(task.y_target).sum(-1)
    per_task = [
        reference[b][task.mask_target[b]].sum() / task.mask_target[b].sum()
        for b in range(task.batch_size)
    ]
    torch.testing.assert_close(model.loss(task), -torch.stack(per_task).mean())


@pytest.mark.parametrize("name", ["np", "anp", "ndp"])
def test_latent_loss_is_the_elbo_with_context_prior(name):
    torch.manual_seed(0)
    model = _make(name).double()
    task = _task(name, seed=2).to(dtype=torch.float64)
    torch.manual_seed(123)
    loss = model.loss(task, num_samples=3)
    # reference: draw the same eps, use torch.distributions for the densities and the KL
    torch.manual_seed(123)
    mc, mt = task.mask_context, task.mask_target
    xc = torch.where(mc[..., None], task.x_context, 0.0)
    yc = torch.where(mc[..., None], task.y_context, 0.0)
    prior = torch.distributions.Normal(*model._latent(xc, yc, mc))
    post = torch.distributions.Normal(
        *model._latent(
            torch.cat([xc, task.x_target], 1),
            torch.cat([yc, task.y_target], 1),
            torch.cat([mc, mt], 1),
        )
    )
    z = post.rsample((3,))
    loc, scale = model._decode(xc, yc, mc, task.x_target, z)
    logp = torch.distributions.Normal(loc, scale).log_prob(task.y_target).sum(-1)  # (K, B, Nt)
    expected = (logp * mt).sum(-1).mean(0)
    kl = torch.distributions.kl_divergence(post, prior).sum(-1)
    torch.testing.assert_close(loss, -((expected - kl) / mt.sum(1)).mean())
    assert bool((kl > 0).all())


@pytest.mark.parametrize("name", ["np", "ndp"])
def test_kl_warmup_weights_the_kl_term_linearly_then_gives_the_elbo(name):
    torch.manual_seed(0)
    model = _make(name, kl_warmup=4).double()
    task = _task(name, seed=5).to(dtype=torch.float64)

    def loss(**kwargs):
        torch.manual_seed(7)  # the same latent draw every time
        return model.loss(task, **kwargs)

    likelihood_only, elbo = loss(kl_weight=0.0), loss(kl_weight=1.0)
    assert float((elbo - likelihood_only).detach()) > 0  # the KL term is positive
    assert int(model.kl_steps) == 0  # an explicit weight does not advance the warm-up
    # training-mode calls with gradients: beta = 1/4, 2/4, 3/4, 1, 1
    for step, beta in enumerate([0.25, 0.5, 0.75, 1.0, 1.0]):
        assert model.kl_weight() == beta
        want = (1.0 - beta) * likelihood_only + beta * elbo
        torch.testing.assert_close(loss(), want)
        assert int(model.kl_steps) == step + 1
    model.kl_steps.zero_()
    with torch.no_grad():  # evaluation: always the true ELBO, warm-up untouched
        torch.testing.assert_close(loss(), elbo)
    model.eval()
    torch.testing.assert_close(loss(), elbo)
    assert int(model.kl_steps) == 0
    assert "kl_steps" in model.state_dict()  # checkpoints carry the warm-up position


def test_latent_predictive_is_equal_weight_mixture_of_decoded_draws():
    torch.manual_seed(0)
    model = _make("np").double()
    xc, yc, xt = _inputs("np", dtype=torch.float64)
    pred = model(xc, yc, xt, num_samples=400, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(3, 7, Y_DIM, dtype=torch.float64)
    comp = torch.distributions.Normal(pred.loc, pred.scale).log_prob(y)
    torch.testing.assert_close(pred.log_prob(y), comp.logsumexp(0) - math.log(400))
    # law of total variance over many draws: the spread of z must show in the variance
    assert bool((pred.variance > pred.scale.square().mean(0)).all())


@pytest.mark.parametrize("name", ["cnp", "acnp", "np"])
def test_empty_context_allowed_with_min_context_zero(name):
    torch.manual_seed(0)
    model = _make(name, min_context=0)
    xc, yc, xt = _inputs(name)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1] = False
    pred = _predict(model, xc, yc, xt, mask_context=mask)
    empty = _predict(model, xc[1:2, :0], yc[1:2, :0], xt[1:2])
    assert torch.isfinite(pred.mean).all()
    if name != "np":
        torch.testing.assert_close(pred.mean[1:2], empty.mean, rtol=1e-5, atol=1e-6)


def _oscillator(theta0, v0, omega, alpha, t):
    """Closed-form solution of theta'' + alpha theta' + omega^2 theta = 0 (underdamped)."""
    wd = math.sqrt(omega**2 - alpha**2 / 4.0)
    return torch.exp(-alpha * t / 2.0) * (
        theta0 * torch.cos(wd * t) + (v0 + alpha * theta0 / 2.0) / wd * torch.sin(wd * t)
    )


def test_ndp_latent_ode_with_physics_matches_the_analytic_oscillator():
    """Zero neural term: the latent path is a damped linear oscillator, integrated over the
    union of unsorted, repeated target times on both sides of t0."""
    torch.set_default_dtype(torch.float64)
    try:
        physics = DampedPendulum(omega0=1.3, alpha=0.4, linear=True)
        model = NeuralODEProcess(
            1,
            latent_dim=2,
            control_dim=1,
            width=8,
            t0=0.5,
            physics=physics,
            decoder_depth=1,
            method="dopri5",
            rtol=1e-9,
            atol=1e-11,
        )
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        model.ode.net[-1].weight.zero_()
        model.ode.net[-1].bias.zero_()
        model.decoder.net[0].weight.zero_()
        model.decoder.net[0].bias.zero_()
        model.decoder.net[0].weight[0, 0] = 1.0  # loc = latent angle
    times = torch.tensor([[2.0, -1.0, 0.5, 3.5], [0.1, 2.0, 2.0, 4.0]], dtype=torch.float64)
    z = torch.tensor([[[0.7, -0.2, 5.0], [-1.1, 0.4, 0.0]]], dtype=torch.float64)  # (K=1, B=2)
    xc = torch.zeros(2, 1, 1, dtype=torch.float64)
    mc = torch.ones(2, 1, dtype=torch.bool)
    loc, _ = model._decode(xc, xc, mc, times[..., None], z)
    for b in range(2):
        want = _oscillator(z[0, b, 0], z[0, b, 1], 1.3, 0.4, times[b] - 0.5)
        torch.testing.assert_close(loc[0, b, :, 0], want, rtol=1e-6, atol=1e-7)


def test_ndp_adjoint_gives_the_same_gradients():
    torch.manual_seed(0)
    task = _task("ndp", seed=3).to(dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = NeuralODEProcess(
            Y_DIM, latent_dim=3, control_dim=2, width=16, adjoint=adjoint, rtol=1e-10, atol=1e-12
        ).double()
        torch.manual_seed(1)
        model.loss(task).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-8)
