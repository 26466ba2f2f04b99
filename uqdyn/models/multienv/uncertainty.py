"""Predictive uncertainty for a new environment: context posteriors and deep ensembles.

A new environment is seen through one or a few trajectories, so what is learned of it is
uncertain. Two sources are turned into :class:`~uqdyn.predictive.Ensemble` forecasts:

* :func:`context_laplace`: a Laplace (Gauss-Newton) approximation of the posterior of a
  :class:`~uqdyn.models.multienv.CoDA` context, whose samples are rolled out
  (:func:`context_ensemble`);
* :func:`ensemble_forecast`: the rollouts of several independently trained (and adapted)
  models, a deep ensemble.

The spread of either is then calibrated on held-out environments with
:mod:`uqdyn.calibration` (e.g. :class:`~uqdyn.calibration.VarianceScaling`).
:func:`fit_parameter_map` maps context vectors to physical parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn.physics import simulate
from uqdyn.predictive import Ensemble

from ..hybrid.batch import later_mask, observed_or_zero
from .base import MultiEnvironmentModel, _Field
from .batch import EnvironmentBatch, check_environment_batch
from .coda import CoDA

__all__ = [
    "ContextPosterior",
    "context_laplace",
    "context_ensemble",
    "ensemble_forecast",
    "ParameterMap",
    "fit_parameter_map",
]


@dataclass(frozen=True)
class ContextPosterior:
    """A Gaussian posterior ``N(mean, covariance)`` of one environment's context.

    Attributes
    ----------
    env : int
        The environment of the model the posterior belongs to.
    mean : Tensor, shape (context_dim,)
        The fitted (MAP) context.
    covariance : Tensor, shape (context_dim, context_dim)
    noise_var : float
        The residual variance ``sigma^2`` used as the likelihood's noise.
    n_points : int
        Observed numbers the posterior was computed from.
    """

    env: int
    mean: Tensor
    covariance: Tensor
    noise_var: float
    n_points: int

    def sample(self, n: int, *, seed: int = 0) -> Tensor:
        """``n`` contexts drawn from the posterior (a seeded CPU generator), shape ``(n, d)``."""
        n = as_int(n, "n", minimum=1)
        g = torch.Generator().manual_seed(as_int(seed, "seed", minimum=0))
        cov = self.covariance.detach().cpu().double()
        chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(cov.shape[0], dtype=cov.dtype))
        z = torch.randn(n, cov.shape[0], generator=g, dtype=torch.float64)
        draws = self.mean.detach().cpu().double() + z @ chol.T
        return draws.to(self.mean)


def _context_rollout(model: CoDA, context: Tensor, state0: Tensor, times: Tensor) -> Tensor:
    field = _Field(model._field_for(context), model.physics)
    return simulate(field, state0, times, model.method, step_size=model.step_size)


def context_laplace(model: CoDA, env: int, batch: EnvironmentBatch) -> ContextPosterior:
    r"""Gauss-Newton Laplace approximation of the posterior of environment ``env``'s context.

    CoDA fits a context ``c`` by minimising ``mean_i r_i(c)^2 + lambda ||c||^2`` over the
    ``N`` observed later states (residuals ``r``). Read as a Gaussian likelihood with noise
    variance ``sigma^2`` (the mean squared residual at the fit) and the prior
    ``N(0, sigma^2 / (lambda N) I)`` that makes the objective the negative log posterior
    (up to ``2 sigma^2 / N``), the Laplace approximation around the fitted context is
    ``N(c, sigma^2 (J^T J + lambda N I)^{-1})`` with ``J = dr/dc`` (``N x d``), computed
    column by column with Jacobian-vector products. With ``lambda = 0`` the prior is flat.

    Parameters
    ----------
    model : CoDA
    env : int
        Environment whose context is the posterior mean (e.g. the index :meth:`CoDA.adapt`
        returned).
    batch : EnvironmentBatch
        The trajectories the context was fitted on (``batch.env`` is ignored).

    Returns
    -------
    ContextPosterior
    """
    if not isinstance(model, CoDA):
        raise TypeError(f"model is a {type(model).__name__}; expected a CoDA model")
    env = as_int(env, "env", minimum=0)
    if env >= model.n_envs:
        raise ValueError(f"env={env}; expected an environment of the model, in [0, {model.n_envs})")
    label = torch.zeros(batch.trajectories.shape[0], dtype=torch.int64)
    batch = check_environment_batch(
        EnvironmentBatch(batch.times, batch.trajectories, label, batch.mask),
        model,
        model.state_shape,
        None,
    )
    device = model.contexts.device
    batch = batch.to(device)
    target = observed_or_zero(batch.trajectory_batch())
    mask = later_mask(batch.trajectory_batch())
    keep = mask.expand_as(target) if mask is not None else torch.ones_like(target, dtype=torch.bool)
    mean = model.contexts[env].detach().clone()

    def residuals(c: Tensor) -> Tensor:
        rollout = _context_rollout(model, c, batch.initial_state, batch.times)[:, 1:]
        return (rollout - target)[keep]

    with torch.no_grad():
        r0 = residuals(mean)
    n = int(r0.numel())
    if n == 0:
        raise ValueError("batch has no observed later state; nothing to fit a posterior on")
    noise_var = float(r0.double().pow(2).mean())
    columns = []
    for k in range(mean.shape[0]):
        direction = torch.zeros_like(mean)
        direction[k] = 1.0
        _, jv = torch.autograd.functional.jvp(residuals, mean, direction)
        columns.append(jv.detach().double())
    jac = torch.stack(columns, dim=1)  # (N, d)
    precision = jac.T @ jac + model.context_penalty * n * torch.eye(
        mean.shape[0], dtype=torch.float64, device=jac.device
    )
    covariance = noise_var * torch.linalg.inv(precision)
    covariance = 0.5 * (covariance + covariance.T)
    return ContextPosterior(env, mean, covariance.to(mean), noise_var, n)


@torch.no_grad()
def context_ensemble(
    model: CoDA,
    posterior: ContextPosterior,
    state0: Tensor,
    times: Tensor,
    *,
    members: int = 32,
    seed: int = 0,
) -> Ensemble:
    """Roll out ``members`` contexts drawn from ``posterior``: an ensemble forecast.

    Parameters
    ----------
    model : CoDA
    posterior : ContextPosterior
    state0 : Tensor, shape (batch, *state_shape)
    times : Tensor, shape (time,)
    members, seed : int
        Ensemble size and the seed of the context draws.

    Returns
    -------
    Ensemble
        Members ``(members, batch, time - 1, *state_shape)``: the later times.
    """
    contexts = posterior.sample(members, seed=seed)
    outs = [_context_rollout(model, c, state0, times)[:, 1:] for c in contexts]
    return Ensemble(torch.stack(outs))


@torch.no_grad()
def ensemble_forecast(
    models: Sequence[MultiEnvironmentModel],
    state0: Tensor,
    times: Tensor,
    env: Tensor | Sequence[Tensor],
) -> Ensemble:
    """The rollouts of several models as one ensemble (a deep ensemble).

    Parameters
    ----------
    models : sequence of MultiEnvironmentModel
        Independently trained (and, for a new environment, adapted) models.
    state0 : Tensor, shape (batch, *state_shape)
    times : Tensor, shape (time,)
    env : Tensor of int64, shape (batch,), or one such tensor per model
        Each row's environment in each model (an adapted environment can have a different
        index in different models).

    Returns
    -------
    Ensemble
        Members ``(len(models), batch, time - 1, *state_shape)``.
    """
    if not models:
        raise ValueError("models is empty; expected at least one model")
    envs: list[Tensor] = list(env) if isinstance(env, (list, tuple)) else [env] * len(models)  # type: ignore[list-item]
    if len(envs) != len(models):
        raise ValueError(f"env has {len(envs)} entries for {len(models)} models; expected one each")
    outs = [m.rollout(state0, times, e)[:, 1:] for m, e in zip(models, envs, strict=True)]
    return Ensemble(torch.stack(outs))


@dataclass(frozen=True)
class ParameterMap:
    """An affine map ``params = contexts @ weight + bias`` from contexts to parameters.

    Attributes
    ----------
    weight : Tensor, shape (context_dim, n_params)
    bias : Tensor, shape (n_params,)
    names : tuple of str
        Parameter names, in column order.
    """

    weight: Tensor
    bias: Tensor
    names: tuple[str, ...]

    def __call__(self, contexts: Tensor) -> Tensor:
        """Parameters of ``contexts`` ``(n, context_dim)``, shape ``(n, n_params)``."""
        c = torch.as_tensor(contexts).to(self.weight)
        if c.ndim != 2 or c.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"contexts has shape {tuple(c.shape)}; expected (n, {self.weight.shape[0]})"
            )
        return c @ self.weight + self.bias


def fit_parameter_map(
    contexts: Tensor, params: Tensor, names: Sequence[str] | None = None, *, ridge: float = 0.0
) -> ParameterMap:
    """Least-squares affine map from labelled environments' contexts to their parameters.

    Parameters
    ----------
    contexts : Tensor, shape (n_envs, context_dim)
    params : Tensor, shape (n_envs, n_params)
        True physical parameters of the same environments.
    names : sequence of str, optional
        Parameter names (default ``p0, p1, ...``).
    ridge : float
        Ridge penalty on the weight (not the bias), >= 0.

    Returns
    -------
    ParameterMap
    """
    c = torch.as_tensor(contexts).detach().double().cpu()
    p = torch.as_tensor(params).detach().double().cpu()
    if c.ndim != 2 or p.ndim != 2 or c.shape[0] != p.shape[0]:
        raise ValueError(
            f"contexts {tuple(c.shape)} and params {tuple(p.shape)}; expected (n_envs, d) and "
            "(n_envs, n_params) with the same n_envs"
        )
    if c.shape[0] < c.shape[1] + 1 and ridge == 0.0:
        raise ValueError(
            f"{c.shape[0]} environments for a {c.shape[1]}-dim context; expected at least "
            f"{c.shape[1] + 1} (or ridge > 0)"
        )
    ridge = as_float(ridge, "ridge", nonnegative=True)
    design = torch.cat([c, torch.ones(c.shape[0], 1, dtype=c.dtype)], dim=1)
    penalty = ridge * torch.eye(design.shape[1], dtype=c.dtype)
    penalty[-1, -1] = 0.0
    coef = torch.linalg.solve(design.T @ design + penalty, design.T @ p)
    out_names = tuple(names) if names is not None else tuple(f"p{i}" for i in range(p.shape[1]))
    if len(out_names) != p.shape[1]:
        raise ValueError(f"names has {len(out_names)} entries; expected {p.shape[1]}")
    like = torch.as_tensor(contexts)
    dtype = like.dtype if like.is_floating_point() else torch.float64
    return ParameterMap(coef[:-1].to(dtype), coef[-1].to(dtype), out_names)
