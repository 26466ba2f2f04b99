"""Ensembles of the studies: tempered resampling of physics particles, noisy members."""

from __future__ import annotations

import torch
from torch import Tensor

from uqdyn.predictive import Ensemble, Normal

__all__ = ["tempered_resample", "stack_normals", "noisy_ensemble", "log_gaussian_fit"]


def stack_normals(parts: list[Normal]) -> Normal:
    """Stack Normals of equal batch shape along a new leading axis."""
    return Normal(torch.stack([p.mean for p in parts]), torch.stack([p.stddev for p in parts]))


def tempered_resample(
    loglik: Tensor, members: int, *, ess_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    r"""Resample particles by tempered likelihood weights.

    For each case the weights are :math:`w_p \propto \exp(\beta \ell_p)` with the largest
    :math:`\beta \in (0, 1]` whose effective sample size
    :math:`(\sum w)^2 / \sum w^2` is at least ``ess_fraction * P`` (found by bisection on
    :math:`\log \beta`): likelihood tempering as in sequential Monte Carlo, so that a
    sharply peaked likelihood does not collapse the ensemble onto one particle.
    ``members`` particles are then drawn with replacement by weight.

    Parameters
    ----------
    loglik:
        ``(B, P)`` log likelihood of each particle's fit to the context, finite.
    members:
        Ensemble size ``M``.

    Returns
    -------
    indices ``(B, M)`` into the particle axis and the tempering exponents ``(B,)``.
    """
    if not bool(torch.isfinite(loglik).all()):
        raise ValueError("loglik has non-finite entries; expected finite particle log likelihoods")
    b, p = loglik.shape
    target = ess_fraction * p
    ll = loglik.double()

    def ess(beta: Tensor) -> Tensor:
        w = torch.softmax(beta[:, None] * ll, dim=1)
        return 1.0 / w.square().sum(1)

    betas = torch.ones(b, dtype=torch.float64)
    low = torch.full((b,), -30.0, dtype=torch.float64)  # log beta
    high = torch.zeros(b, dtype=torch.float64)
    need = ess(betas) < target
    for _ in range(60):
        mid = (low + high) / 2
        ok = ess(mid.exp()) >= target
        low = torch.where(ok, mid, low)
        high = torch.where(ok, high, mid)
    betas = torch.where(need, low.exp(), betas)
    weights = torch.softmax(betas[:, None] * ll, dim=1)
    idx = torch.multinomial(weights.float(), members, replacement=True, generator=generator)
    return idx, betas


def noisy_ensemble(members: Tensor, noise_std: float, generator: torch.Generator) -> Ensemble:
    """Ensemble of predicted observations: members ``(M, ...)`` plus observation noise."""
    noise = torch.randn(members.shape, generator=generator, dtype=members.dtype)
    return Ensemble(members + noise_std * noise)


def log_gaussian_fit(pred: Tensor, obs: Tensor, noise_std: float, dims: int) -> Tensor:
    """Gaussian log likelihood summed over the trailing ``dims`` axes (up to a constant)."""
    sq = (pred - obs).square().flatten(-dims).sum(-1)
    return -0.5 * sq / noise_std**2
