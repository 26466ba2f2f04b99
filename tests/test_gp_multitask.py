"""Linear model of coregionalization against a dense float64 Kronecker-sum computation."""

from __future__ import annotations

import numpy as np
import torch
from _gp_reference import (
    _np,
    _perturb_hyperparameters,
    _single_thread,  # noqa: F401  (autouse)
    kernel_matrix,
    posterior,
)

from uqdyn.models.gp import MultitaskGP


def test_lmc_matches_dense(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    n, m, t = 18, 7, 3
    x = (2 * torch.rand(n, 1, generator=g, dtype=torch.float64)).to(device)
    base = torch.sin(3 * x)
    y = torch.cat([base, -base + 0.2 * x, 0.5 * base + torch.cos(5 * x)], dim=-1)
    xs = (2.5 * torch.rand(m, 1, generator=g, dtype=torch.float64)).to(device)
    gp = MultitaskGP(1, t, num_latents=2, rank=2, kernel="matern52").condition(x, y)
    _perturb_hyperparameters(gp, seed=1)
    xn, xsn = _np(x), _np(xs)

    def lmc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        total = 0.0
        for mt in gp.gp.covar_module.covar_module_list:
            coreg = _np(mt.task_covar_module.covar_matrix.to_dense())
            total = total + np.kron(kernel_matrix(mt.data_covar_module, a, b), coreg)
        return total

    noise = np.tile(_np(gp.likelihood.task_noises), n)
    k_nn = lmc(xn, xn) + np.diag(noise)
    mean, cov, lml = posterior(k_nn, lmc(xsn, xn), lmc(xsn, xsn), _np(y).reshape(-1), 0.0)
    latent = gp.predict(xs, noisy=False, joint=True)
    assert latent.batch_shape == (m * t,)
    np.testing.assert_allclose(_np(latent.mean), mean, atol=1e-6)
    np.testing.assert_allclose(_np(latent.covariance_matrix), cov, atol=1e-6)
    marginal = gp.predict(xs)
    assert marginal.batch_shape == (m, t)
    np.testing.assert_allclose(_np(marginal.mean).reshape(-1), mean, atol=1e-6)
    np.testing.assert_allclose(
        _np(marginal.variance).reshape(-1),
        np.diag(cov) + np.tile(_np(gp.likelihood.task_noises), m),
        atol=1e-6,
    )
    np.testing.assert_allclose(float(gp.log_marginal_likelihood().detach()), lml, rtol=1e-8)


def test_lmc_learns_output_correlation() -> None:
    """Outputs f and -f + noise: the fitted coregionalization has correlation near -1."""
    g = torch.Generator().manual_seed(2)
    x = torch.linspace(0, 4, 60, dtype=torch.float64).unsqueeze(-1)
    f = torch.sin(2 * x)
    y = torch.cat([f, -f], dim=-1) + 0.05 * torch.randn(60, 2, generator=g, dtype=torch.float64)
    gp = MultitaskGP(1, 2, num_latents=1, rank=1, kernel="rbf")
    gp.fit(x, y, steps=100, progress=False)
    coreg = _np(gp.gp.covar_module.covar_module_list[0].task_covar_module.covar_matrix.to_dense())
    corr = coreg[0, 1] / np.sqrt(coreg[0, 0] * coreg[1, 1])
    assert corr < -0.9, corr
    # far from the data the joint predictive couples the two outputs the same way
    far = torch.full((1, 1), 30.0, dtype=torch.float64)
    cov = _np(gp.predict(far, noisy=False, joint=True).covariance_matrix)
    assert cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) < -0.9
