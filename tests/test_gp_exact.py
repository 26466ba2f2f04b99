"""Exact GP: agreement with a dense float64 Cholesky computation, and hyperparameter fits."""

from __future__ import annotations

import gpytorch
import numpy as np
import pytest
import scipy.stats
import torch
from _gp_reference import (
    _np,
    _perturb_hyperparameters,
    _scalar,
    _single_thread,  # noqa: F401  (autouse)
    kernel_matrix,
    posterior,
)

from uqdyn.models.gp import ExactGP, MultitaskGP, make_kernel
from uqdyn.predictive import MultivariateNormal, Normal

SPECS = [
    "rbf",
    "matern12",
    "matern32",
    "matern52",
    "periodic",
    "spectral_mixture",
    "rbf + periodic",
    "matern52 * periodic",
    "rbf * periodic + matern12",
]


@pytest.mark.parametrize("spec", SPECS)
def test_exact_gp_matches_dense_cholesky(spec: str, device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    x = (3 * torch.rand(25, 1, generator=g, dtype=torch.float64)).to(device)
    y = torch.sin(2 * x) + 0.1 * torch.randn(25, 1, generator=g, dtype=torch.float64).to(device)
    xs = (4 * torch.rand(9, 1, generator=g, dtype=torch.float64) - 0.5).to(device)
    gp = ExactGP(1, kernel=spec, mean="constant", num_mixtures=2).condition(x, y)
    _perturb_hyperparameters(gp, seed=2)
    kernel = gp.gp.covar_module
    noise = _scalar(gp.likelihood.noise)
    c = _scalar(gp.gp.mean_module.constant)
    xn, xsn = _np(x), _np(xs)
    mean, cov, lml = posterior(
        kernel_matrix(kernel, xn, xn),
        kernel_matrix(kernel, xsn, xn),
        kernel_matrix(kernel, xsn, xsn),
        _np(y)[:, 0],
        noise,
        c,
        c,
    )
    latent = gp.predict(xs, noisy=False, joint=True)
    assert isinstance(latent, MultivariateNormal)
    np.testing.assert_allclose(_np(latent.mean), mean, atol=1e-6)
    np.testing.assert_allclose(_np(latent.covariance_matrix), cov, atol=1e-6)
    noisy = gp.predict(xs)
    assert isinstance(noisy, Normal) and noisy.batch_shape == (9, 1)
    np.testing.assert_allclose(_np(noisy.variance)[:, 0], np.diag(cov) + noise, atol=1e-6)
    np.testing.assert_allclose(float(gp.log_marginal_likelihood().detach()), lml, rtol=1e-8)


def test_independent_outputs_match_dense(device: torch.device) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20, 2, generator=g, dtype=torch.float64).to(device)
    y = torch.stack([torch.sin(3 * x[:, 0]), torch.cos(2 * x.sum(-1))], dim=-1)
    xs = torch.rand(6, 2, generator=g, dtype=torch.float64).to(device)
    gp = ExactGP(2, 2, kernel="matern32").condition(x, y)
    _perturb_hyperparameters(gp, seed=4)
    joint = gp.predict(xs, joint=True)
    assert joint.batch_shape == (12,)
    marg = gp.predict(xs)
    assert marg.batch_shape == (6, 2)
    noises = _np(gp.likelihood.task_noises)
    scale = _np(gp.gp.covar_module.outputscale)
    ell = _np(gp.gp.covar_module.base_kernel.lengthscale)
    jcov = _np(joint.covariance_matrix)
    for j in range(2):
        kern = make_kernel("matern32", 2).double()
        kern.outputscale = float(scale[j])
        kern.base_kernel.lengthscale = torch.as_tensor(ell[j])
        xn, xsn = _np(x), _np(xs)
        mean, cov, _ = posterior(
            kernel_matrix(kern, xn, xn),
            kernel_matrix(kern, xsn, xn),
            kernel_matrix(kern, xsn, xsn),
            _np(y)[:, j],
            float(noises[j]),
        )
        np.testing.assert_allclose(_np(marg.mean)[:, j], mean, atol=1e-6)
        # point-major flattening: output j of point i is entry 2 i + j
        np.testing.assert_allclose(jcov[j::2, j::2], cov + noises[j] * np.eye(6), atol=1e-6)
    np.testing.assert_allclose(jcov[0::2, 1::2], 0.0, atol=1e-12)


def _gp_data(seed: int, n: int, ell: float, scale: float, noise: float):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 8, n))[:, None]
    k = scale * np.exp(-0.5 * (x - x.T) ** 2 / ell**2)
    f = np.linalg.cholesky(k + 1e-9 * np.eye(n)) @ rng.standard_normal(n)
    return x, f + np.sqrt(noise) * rng.standard_normal(n)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_fitted_hyperparameters_within_two_percent_of_truth(optimizer: str) -> None:
    ell, scale, noise = 0.8, 1.5, 0.2
    x, y = _gp_data(0, 500, ell, scale, noise)
    train = np.arange(500) % 5 != 0
    xt, yt, xs, ys = x[train], y[train], x[~train], y[~train]
    # reference: the GP with the true hyperparameters, dense numpy
    kern = lambda a, b: scale * np.exp(-0.5 * (a - b.T) ** 2 / ell**2)  # noqa: E731
    mean, cov, _ = posterior(kern(xt, xt), kern(xs, xt), kern(xs, xs), yt, noise)
    ll_true = scipy.stats.norm.logpdf(ys, mean, np.sqrt(np.diag(cov) + noise)).mean()

    gp = ExactGP(1, kernel="rbf")
    steps, lr = (30, 1.0) if optimizer == "lbfgs" else (150, 0.1)
    gp.fit(
        torch.as_tensor(xt),
        torch.as_tensor(yt),
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        progress=False,
    )
    pred = gp.predict(torch.as_tensor(xs))
    ll_fit = float(pred.log_prob(torch.as_tensor(ys)[:, None]).mean())
    print(optimizer, ll_fit, ll_true)
    assert abs(ll_fit - ll_true) <= 0.02 * abs(ll_true), (ll_fit, ll_true)
    lengthscale = float(gp.gp.covar_module.base_kernel.lengthscale)
    assert 0.5 * ell < lengthscale < 2 * ell


def test_fit_reduces_loss_and_follows_float32() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, 1, generator=g)
    y = torch.sin(6 * x) + 0.05 * torch.randn(40, 1, generator=g)
    gp = ExactGP(1, kernel="matern52")
    history = gp.fit(x, y, steps=60, progress=False)
    assert history[-1] < history[0]
    pred = gp.predict(torch.rand(5, 1, generator=g))
    assert pred.dtype == torch.float32
    # the fitted model explains the data far better than the prior's noise level
    assert float((gp.predict(x).mean - y).abs().max()) < 0.2


def test_joint_samples_have_the_predictive_covariance() -> None:
    g = torch.Generator().manual_seed(7)
    x = 3 * torch.rand(15, 1, generator=g, dtype=torch.float64)
    gp = ExactGP(1, kernel="rbf").condition(x, torch.sin(2 * x))
    xs = torch.linspace(-1, 4, 5, dtype=torch.float64).unsqueeze(-1)
    joint = gp.predict(xs, joint=True)
    draws = joint.sample(20000, generator=torch.Generator().manual_seed(8))
    assert draws.shape == (20000, 5)
    cov = _np(joint.covariance_matrix)
    np.testing.assert_allclose(np.cov(_np(draws).T), cov, atol=0.04 * np.abs(cov).max())
    assert gp.predict(xs).sample(3).shape == (3, 5, 1)


class _ReferenceGP(gpytorch.models.ExactGP):
    """A textbook gpytorch exact GP: zero mean, scaled RBF, Gaussian likelihood."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=1))

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_fit_takes_the_steps_of_a_plain_gpytorch_loop(optimizer: str) -> None:
    """ExactGP.fit (through uqdyn.train.fit) == the gpytorch tutorial loop, step for step."""
    g = torch.Generator().manual_seed(9)
    x = 4 * torch.rand(30, 1, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(30, generator=g, dtype=torch.float64)
    steps, lr = (25, 0.05) if optimizer == "adam" else (8, 0.5)
    gp = ExactGP(1, kernel="rbf")
    history = gp.fit(
        x, y, steps=steps, lr=lr, optimizer=optimizer, init_from_data=False, progress=False
    )

    ref = _ReferenceGP(x, y).double()
    ref.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(ref.likelihood, ref)
    params = [p for p in ref.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    else:
        opt = torch.optim.LBFGS(
            params, lr=lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe"
        )
    losses = []
    for _ in range(steps):

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -mll(ref(x), y)
            loss.backward()
            return loss

        if optimizer == "adam":
            loss = closure()
            opt.step()
        else:
            loss = opt.step(closure)
        losses.append(float(loss))
    np.testing.assert_allclose(history, losses, rtol=1e-12)
    fitted = {
        "noise": gp.likelihood.noise,
        "outputscale": gp.gp.covar_module.outputscale,
        "lengthscale": gp.gp.covar_module.base_kernel.lengthscale,
    }
    reference = {
        "noise": ref.likelihood.noise,
        "outputscale": ref.covar_module.outputscale,
        "lengthscale": ref.covar_module.base_kernel.lengthscale,
    }
    for name, value in fitted.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-10, atol=0, msg=name)
    # the fit did move: the loss fell and the noise left gpytorch's default (0.6932)
    assert history[-1] < history[0] - 0.1 and abs(float(reference["noise"]) - 0.6932) > 0.1


@pytest.mark.parametrize("y_dim", [1, 2])
def test_predict_batch_is_the_leave_one_out_predictive(y_dim: int) -> None:
    """Each observed point from the others: the closed form against conditioning n times."""
    g = torch.Generator().manual_seed(4)
    x = 3 * torch.rand(11, 1, generator=g, dtype=torch.float64)
    y = torch.cat([torch.sin(2 * x), torch.cos(3 * x)], dim=-1)[:, :y_dim]
    mask = torch.ones(11, dtype=torch.bool)
    mask[5] = False
    if y_dim == 1:
        gp: ExactGP = ExactGP(1, kernel="matern52", mean="constant").double()
    else:
        torch.manual_seed(0)
        gp = MultitaskGP(1, 2, num_latents=2).double()
    _perturb_hyperparameters(gp, seed=6)
    prediction, y_true, keep = gp.predict_batch((x, y, mask))
    assert keep is None and torch.equal(y_true, y[mask])
    xs, ys = x[mask], y[mask]
    for i in range(xs.shape[0]):
        others = torch.arange(xs.shape[0]) != i
        ref = gp.condition(xs[others], ys[others]).predict(xs[i : i + 1])
        torch.testing.assert_close(prediction.mean[i], ref.mean[0], rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(prediction.stddev[i], ref.stddev[0], rtol=1e-7, atol=1e-9)


def test_a_state_dict_carries_the_conditioning_data() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(15, 2, generator=g)
    y = torch.sin(3 * x).sum(-1, keepdim=True)
    gp = ExactGP(2, kernel="matern32")
    gp.fit(x, y, steps=5, progress=False)
    fresh = ExactGP(2, kernel="matern32")
    fresh.load_state_dict(gp.state_dict())
    xs = torch.rand(4, 2, generator=g)
    a, b = gp.predict(xs), fresh.predict(xs)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.stddev, b.stddev)
    empty = ExactGP(2, kernel="matern32").state_dict()
    fresh.load_state_dict(empty)  # the data go with the state: none now
    with pytest.raises(ValueError, match="no data; call fit"):
        fresh.predict(xs)
