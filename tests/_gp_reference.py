"""Dense float64 numpy references for the GP tests (kernel formulas written out)."""

from __future__ import annotations

import math

import gpytorch
import numpy as np
import pytest
import scipy.linalg
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The GP tests solve many small (tens of points) systems: on a shared 2-core machine
    intra-op threads only add synchronisation, so run them single-threaded, then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _scalar(t) -> float:
    return float(_np(t).reshape(-1)[0])


def kernel_matrix(kernel, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Evaluate a (non-batched) gpytorch kernel tree with explicit numpy formulas."""
    if isinstance(kernel, gpytorch.kernels.ScaleKernel):
        return _scalar(kernel.outputscale) * kernel_matrix(kernel.base_kernel, x1, x2)
    if isinstance(kernel, gpytorch.kernels.AdditiveKernel):
        return sum(kernel_matrix(k, x1, x2) for k in kernel.kernels)
    if isinstance(kernel, gpytorch.kernels.ProductKernel):
        out = np.ones((x1.shape[0], x2.shape[0]))
        for k in kernel.kernels:
            out = out * kernel_matrix(k, x1, x2)
        return out
    diff = x1[:, None, :] - x2[None, :, :]
    if isinstance(kernel, gpytorch.kernels.RBFKernel):
        ell = _np(kernel.lengthscale).reshape(-1)
        return np.exp(-0.5 * ((diff / ell) ** 2).sum(-1))
    if isinstance(kernel, gpytorch.kernels.MaternKernel):
        ell = _np(kernel.lengthscale).reshape(-1)
        r = np.sqrt(((diff / ell) ** 2).sum(-1))
        if kernel.nu == 0.5:
            return np.exp(-r)
        if kernel.nu == 1.5:
            return (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r)
        return (1 + math.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-math.sqrt(5) * r)
    if isinstance(kernel, gpytorch.kernels.PeriodicKernel):
        ell = _np(kernel.lengthscale).reshape(-1)
        period = _np(kernel.period_length).reshape(-1)
        return np.exp(-2 * (np.sin(np.pi * np.abs(diff) / period) ** 2 / ell).sum(-1))
    if isinstance(kernel, gpytorch.kernels.SpectralMixtureKernel):
        if x1.shape[1] != 1:
            raise NotImplementedError("reference spectral mixture in 1-D only")
        w = _np(kernel.mixture_weights).reshape(-1)
        mu = _np(kernel.mixture_means).reshape(-1)
        sc = _np(kernel.mixture_scales).reshape(-1)
        tau = diff[..., 0]
        return sum(
            w[q] * np.exp(-2 * np.pi**2 * tau**2 * sc[q] ** 2) * np.cos(2 * np.pi * tau * mu[q])
            for q in range(w.shape[0])
        )
    raise NotImplementedError(type(kernel))


def posterior(k_nn, k_sn, k_ss, y, noise, mean_n=0.0, mean_s=0.0):
    """Dense Cholesky GP posterior: latent mean, latent covariance, log marginal likelihood."""
    n = k_nn.shape[0]
    factor = scipy.linalg.cho_factor(k_nn + noise * np.eye(n), lower=True)
    resid = y - mean_n
    alpha = scipy.linalg.cho_solve(factor, resid)
    mean = mean_s + k_sn @ alpha
    cov = k_ss - k_sn @ scipy.linalg.cho_solve(factor, k_sn.T)
    logdet = 2 * np.log(np.diag(factor[0])).sum()
    lml = -0.5 * resid @ alpha - 0.5 * logdet - 0.5 * n * np.log(2 * np.pi)
    return mean, cov, lml


def _perturb_hyperparameters(module: torch.nn.Module, seed: int) -> None:
    """Move every raw hyperparameter away from its default, reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "raw" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
