"""Model fitters shared by the studies: CNP on point sets, GPs, tempered physics ensembles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from uqdyn.data import Task
from uqdyn.models.neural_process import CNP, ConvCNP, GridTask
from uqdyn.predictive import Ensemble, Normal
from uqdyn.train import fit

__all__ = [
    "field_points",
    "vector_points",
    "fit_cnp",
    "predict_cnp",
    "tempered_resample",
    "stack_normals",
    "noisy_ensemble",
    "log_gaussian_fit",
    "fit_convcnp",
    "predict_convcnp",
]


def field_points(
    frames: Tensor, times: Tensor, grid: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Point sets of field frames.

    Parameters
    ----------
    frames:
        ``(B, T, C, H, W)``.
    times:
        ``(T,)`` times of the frames.
    grid:
        ``(y (H,), x (W,))`` coordinates.

    Returns
    -------
    x ``(B, T*H*W, 3)`` with columns ``(t, y, x)`` (time-major) and y ``(B, T*H*W, C)``.
    """
    b, t, c, h, w = frames.shape
    tt, yy, xx = torch.meshgrid(times, grid[0], grid[1], indexing="ij")
    x = torch.stack([tt, yy, xx], dim=-1).reshape(1, t * h * w, 3).expand(b, -1, -1)
    y = frames.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
    return x.to(frames), y


def vector_points(values: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
    """Point sets of vector trajectories: x ``(B, T, 1)`` the times, y ``(B, T, D)``."""
    b = values.shape[0]
    return times.to(values).reshape(1, -1, 1).expand(b, -1, -1), values


def _cnp_loss(model: Any, task: Task) -> Tensor:
    return model.loss(task)  # type: ignore[no-any-return]


def fit_cnp(
    sample_task: Callable[[torch.Generator], Task],
    x_dim: int,
    y_dim: int,
    settings: dict[str, Any],
    *,
    device: torch.device,
    seed: int,
    progress: bool,
) -> CNP:
    """Train a :class:`CNP` by maximum likelihood on tasks drawn by ``sample_task(generator)``.

    ``settings`` holds ``width``, ``steps``, ``lr``. Returns the model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CNP(x_dim, y_dim, width=int(settings["width"]), min_std=1e-3)
    fit(
        model,
        sample_task,
        loss_fn=_cnp_loss,
        steps=int(settings["steps"]),
        lr=float(settings["lr"]),
        grad_clip=10.0,
        val_data=None,
        device=device,
        seed=seed,
        progress=progress,
    )
    return model.eval()


def predict_cnp(model: CNP, xc: Tensor, yc: Tensor, xt: Tensor, *, batch_size: int = 8) -> Normal:
    """CNP predictive ``(B, Nt, y_dim)`` for full context/target sets, in batches."""
    device = next(model.parameters()).device
    locs, scales = [], []
    with torch.no_grad():
        for start in range(0, xc.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            pred = model(xc[sl].to(device), yc[sl].to(device), xt[sl].to(device))
            locs.append(pred.mean.cpu())
            scales.append(pred.stddev.cpu())
    return Normal(torch.cat(locs), torch.cat(scales))


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


def fit_convcnp(
    sample: Callable[[torch.Generator], GridTask],
    in_channels: int,
    out_channels: int,
    settings: dict[str, Any],
    *,
    device: torch.device,
    seed: int,
    progress: bool,
) -> ConvCNP:
    """Train a circular-padded :class:`ConvCNP` on ``sample(generator)`` batches.

    ``settings`` holds ``width``, ``depth``, ``kernel_size``, ``architecture``, ``steps``,
    ``lr``; the weights are initialised from ``seed`` and the batches drawn from ``seed``, so
    the same settings give the same model. Returns the model in eval mode.
    """
    model = ConvCNP(
        in_channels,
        out_channels,
        width=int(settings["width"]),
        depth=int(settings["depth"]),
        kernel_size=int(settings["kernel_size"]),
        architecture=str(settings["architecture"]),
        padding="circular",
        min_std=1e-3,
        seed=seed,
    )
    fit(
        model,
        sample,
        loss_fn=_convcnp_loss,
        steps=int(settings["steps"]),
        lr=float(settings["lr"]),
        scheduler="cosine",
        grad_clip=10.0,
        val_data=None,
        device=device,
        seed=seed,
        progress=progress,
    )
    return model.eval()


def _convcnp_loss(model: Any, task: GridTask) -> torch.Tensor:
    return model.loss(task)  # type: ignore[no-any-return]


def predict_convcnp(
    model: ConvCNP, y: torch.Tensor, mask: torch.Tensor | None = None, *, batch_size: int = 16
) -> Normal:
    """ConvCNP predictive ``(B, C_out, H, W)`` on the CPU for contexts ``y (B, C_in, H, W)``."""
    device = next(model.parameters()).device
    locs, scales = [], []
    with torch.no_grad():
        for start in range(0, y.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            m = None if mask is None else mask[sl].to(device)
            pred = model(y[sl].to(device), mask_context=m)
            locs.append(pred.mean.cpu())
            scales.append(pred.stddev.cpu())
    return Normal(torch.cat(locs), torch.cat(scales))
