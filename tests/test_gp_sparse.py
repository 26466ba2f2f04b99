"""The sparse variational GP approaches the exact GP as the inducing points grow."""

from __future__ import annotations

import copy

import gpytorch
import numpy as np
import torch
from _gp_reference import (
    _np,
    _single_thread,  # noqa: F401  (autouse)
)

from uqdyn.models.gp import ExactGP, SparseGP


def _data(n: int = 300):
    g = torch.Generator().manual_seed(0)
    x = 6 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    y = (
        torch.sin(2 * x)
        + 0.3 * torch.cos(5 * x)
        + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    )
    return x, y


def test_svgp_converges_to_exact_gp(device: torch.device) -> None:
    x, y = (t.to(device) for t in _data())
    xs = torch.linspace(-0.5, 6.5, 50, dtype=torch.float64, device=device).unsqueeze(-1)
    exact = ExactGP(1, kernel="rbf")
    exact.fit(x, y, steps=30, lr=1.0, optimizer="lbfgs", progress=False)
    lml = float(exact.log_marginal_likelihood().detach())
    ref = exact.predict(xs, noisy=False)
    gaps, mean_errs, sd_errs = [], [], []
    for m in (4, 8, 16, 32, 64):
        z = torch.linspace(0, 6, m, dtype=torch.float64, device=device).unsqueeze(-1)
        svgp = SparseGP(1, inducing_points=z, learn_inducing=False, kernel="rbf").to(x)
        svgp.gp.covar_module.load_state_dict(exact.gp.covar_module.state_dict())
        svgp.likelihood.load_state_dict(exact.likelihood.state_dict())
        # one full-batch natural-gradient step of size 1 gives the optimal q(u)
        svgp.fit(
            x,
            y,
            epochs=1,
            batch_size=x.shape[0],
            ngd_lr=1.0,
            learn_hyperparameters=False,
            init_from_data=False,
            progress=False,
        )
        elbo = float(svgp.elbo(x, y).detach()) * x.shape[0]
        gaps.append(lml - elbo)
        pred = svgp.predict(xs, noisy=False)
        mean_errs.append(float((pred.mean - ref.mean).abs().max().detach()))
        sd_errs.append(float((pred.stddev - ref.stddev).abs().max().detach()))
    # the ELBO bounds the log marginal likelihood and the bound tightens with M (Titsias 2009)
    assert min(gaps) > -1e-6, gaps
    assert all(a >= b - 1e-6 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[0] > 100.0 and gaps[-1] < 0.05, gaps
    assert mean_errs[0] > 10 * mean_errs[-1] and mean_errs[-1] < 5e-3, mean_errs
    assert sd_errs[-1] < 5e-3, sd_errs


def test_svgp_minibatch_training_fits() -> None:
    x, y = (t.float() for t in _data(2000))
    svgp = SparseGP(1, num_inducing=24)
    history = svgp.fit(
        x,
        y,
        epochs=6,
        batch_size=200,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert history[-1] < history[0]
    xs = torch.linspace(0.2, 5.8, 40).unsqueeze(-1)
    pred = svgp.predict(xs)
    truth = torch.sin(2 * xs) + 0.3 * torch.cos(5 * xs)
    assert float((pred.mean - truth).abs().mean()) < 0.1
    # the predictive noise level is the data's (0.1) within a factor 1.5
    assert 0.1 / 1.5 < float(pred.stddev.median()) < 0.1 * 1.5
    joint = svgp.predict(xs[:5], joint=True)
    np.testing.assert_allclose(_np(joint.stddev), _np(pred.stddev[:5, 0]), rtol=1e-4)


def test_svgp_independent_outputs_shapes() -> None:
    x, y = (t.float() for t in _data(400))
    y2 = torch.cat([y, -y], dim=-1)
    svgp = SparseGP(1, 2, num_inducing=16)
    svgp.fit(
        x,
        y2,
        epochs=3,
        batch_size=100,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert svgp.predict(x[:7]).batch_shape == (7, 2)
    assert svgp.predict(x[:7], joint=True).batch_shape == (14,)


def test_natural_gradient_fit_takes_the_steps_of_gpytorch_ngd_and_adam() -> None:
    """SparseGP.fit (one combined optimizer in uqdyn.train.fit) == NGD + Adam side by side."""
    x, y = _data(120)
    z = torch.linspace(0, 6, 10, dtype=torch.float64).unsqueeze(-1)
    svgp = SparseGP(1, inducing_points=z, kernel="matern52").double()
    ref = copy.deepcopy(svgp)
    history = svgp.fit(
        x, y, epochs=6, batch_size=200, lr=0.05, ngd_lr=0.2, init_from_data=False, progress=False
    )
    mll = gpytorch.mlls.VariationalELBO(ref.likelihood, ref.gp, num_data=120)
    variational = list(ref.gp.variational_parameters())
    others = [p for p in ref.parameters() if all(p is not v for v in variational)]
    ngd = gpytorch.optim.NGD(variational, num_data=120, lr=0.2)
    adam = torch.optim.Adam(others, lr=0.05)
    ref.gp.train()
    ref.likelihood.train()
    losses = []
    # gpytorch draws q(u)'s starting jitter from the global RNG at the first ELBO; fit seeds
    # that RNG with its seed (0)
    torch.manual_seed(0)
    for _ in range(6):
        ngd.zero_grad()
        adam.zero_grad()
        with ref._settings(torch.float64):  # the model's jitter and solver settings
            loss = -mll(ref.gp(x), y[:, 0])
            loss.backward()
        ngd.step()
        adam.step()
        losses.append(float(loss))
    np.testing.assert_allclose(history, losses, rtol=1e-12)
    for (name, a), b in zip(svgp.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert history[-1] < history[0]
    fresh = SparseGP(1, num_inducing=10, kernel="matern52").double()
    fresh.load_state_dict(svgp.state_dict())  # a state dict is enough to predict
    torch.testing.assert_close(fresh.predict(x[:5]).mean, svgp.predict(x[:5]).mean)
