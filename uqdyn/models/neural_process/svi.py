"""Training the latent neural processes through pyro's stochastic variational inference.

The ELBO of :meth:`LatentNP.loss` written as a pyro model/guide pair, so that
:class:`pyro.infer.SVI` (with any pyro ELBO, e.g. ``Trace_ELBO``) trains the same objective:

* model: ``z_b ~ q(z | C_b)`` (the context posterior serves as the prior) and
  ``y_bt ~ N(mu(x_bt, z_b, C_b), sigma^2)`` observed at the real targets;
* guide: ``z_b ~ q(z | C_b u T_b)``.

:func:`elbo_loss` gives that pyro objective as a ``loss_fn`` of :func:`uqdyn.train.fit`, so a
pyro ELBO trains through the one training loop (validation, checkpoints, exact resume);
:func:`make_svi` builds pyro's own :class:`~pyro.infer.SVI` instead.

Each task's sites are scaled by ``1 / (B |T_b|)``, so the pyro loss estimates the
torch-native :meth:`LatentNP.loss` (the negative ELBO per target averaged over tasks), with
the KL term estimated by Monte Carlo (``Trace_ELBO``) or in closed form
(``TraceMeanField_ELBO``) instead of the closed form of the native loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam  # type: ignore[attr-defined]

from uqdyn._checks import as_float

from ._base import _LatentNP

__all__ = ["model_guide", "make_svi", "elbo_loss"]


def _check_model(model: Any) -> _LatentNP:
    if not isinstance(model, _LatentNP):
        raise TypeError(
            f"model is a {type(model).__name__}; expected a latent neural process "
            "(LatentNP, AttentiveNP or NeuralODEProcess)"
        )
    return model


def model_guide(
    model: Any, name: str = "neural_process"
) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
    """Pyro ``(model_fn, guide_fn)`` of a latent NP; both take a :class:`~uqdyn.data.Task`.

    ``task`` holds ``x_context (B, Nc, x_dim)``, ``y_context (B, Nc, y_dim)``,
    ``mask_context (B, Nc)``, ``x_target (B, Nt, x_dim)``, ``y_target (B, Nt, y_dim)`` and
    ``mask_target (B, Nt)``. The network's parameters are registered in pyro's parameter
    store under ``name`` (:func:`pyro.module`); sample sites are ``"z"`` (batch ``(B,)``,
    event ``(z_dim,)``) and ``"y"`` (batch ``(B, Nt)``, event ``(y_dim,)``, masked by
    ``mask_target``).

    Examples
    --------
    >>> import torch, pyro
    >>> from uqdyn.data import Task
    >>> from uqdyn.models.neural_process import LatentNP
    >>> from uqdyn.models.neural_process.svi import model_guide
    >>> net = LatentNP(1, 1, width=8, z_dim=2)
    >>> ones = lambda n: torch.ones(2, n, dtype=torch.bool)
    >>> task = Task(torch.rand(2, 3, 1), torch.rand(2, 3, 1), ones(3),
    ...             torch.rand(2, 4, 1), torch.rand(2, 4, 1), ones(4))
    >>> model_fn, guide_fn = model_guide(net)
    >>> loss = pyro.infer.Trace_ELBO().loss(model_fn, guide_fn, task)
    """
    net = _check_model(model)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r}; expected a non-empty str")

    def _scales(mt: torch.Tensor) -> torch.Tensor:
        n_target = mt.sum(dim=1).to(torch.get_default_dtype())
        return 1.0 / (mt.shape[0] * n_target)  # (B,)

    def model_fn(task: Any) -> None:
        pyro.module(name, net)
        xc, yc, mc, xt, yt, mt = net._prepare_task(task)
        scale = _scales(mt).to(yt.dtype)
        mu, sigma = net._latent(xc, yc, mc)
        with pyro.plate("tasks", xt.shape[0], dim=-1), pyro.poutine.scale(scale=scale):
            z = pyro.sample("z", dist.Normal(mu, sigma).to_event(1))
        loc, std = net._decode(xc, yc, mc, xt, z.unsqueeze(0))
        likelihood = dist.Normal(loc[0], std[0]).to_event(1).mask(mt)
        with pyro.plate("tasks_y", xt.shape[0], dim=-2), pyro.poutine.scale(scale=scale[:, None]):
            with pyro.plate("targets", xt.shape[1], dim=-1):
                pyro.sample("y", likelihood, obs=yt)

    def guide_fn(task: Any) -> None:
        pyro.module(name, net)
        xc, yc, mc, xt, yt, mt = net._prepare_task(task)
        scale = _scales(mt).to(yt.dtype)
        mu, sigma = net._latent(
            torch.cat([xc, xt], dim=1), torch.cat([yc, yt], dim=1), torch.cat([mc, mt], dim=1)
        )
        with pyro.plate("tasks", xt.shape[0], dim=-1), pyro.poutine.scale(scale=scale):
            pyro.sample("z", dist.Normal(mu, sigma).to_event(1))

    return model_fn, guide_fn


def make_svi(
    model: Any,
    *,
    lr: float = 1e-3,
    loss: Any = None,
    name: str = "neural_process",
) -> SVI:
    """A :class:`pyro.infer.SVI` that trains a latent NP with pyro's Adam.

    ``svi.step(task)`` takes one gradient step on a :class:`~uqdyn.data.Task` batch and
    returns the loss estimate (negative ELBO per target, averaged over the tasks); ``loss``
    defaults to ``Trace_ELBO()``.
    """
    lr = as_float(lr, "lr", positive=True, finite=False)
    model_fn, guide_fn = model_guide(model, name)
    return SVI(model_fn, guide_fn, Adam({"lr": lr}), loss=loss or Trace_ELBO())


def elbo_loss(
    model: Any, elbo: Any = None, *, name: str = "neural_process"
) -> Callable[[Any, Any], torch.Tensor]:
    """A pyro ELBO of a latent NP as a ``loss_fn(model, task)`` for :func:`uqdyn.train.fit`.

    ``elbo`` is any pyro ELBO (default ``Trace_ELBO()``); the loss is its
    ``differentiable_loss`` on the pair of :func:`model_guide`, a scalar estimate of the
    negative ELBO per target averaged over the tasks of a :class:`~uqdyn.data.Task` batch.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.data import Task
    >>> from uqdyn.models.neural_process import LatentNP
    >>> from uqdyn.models.neural_process.svi import elbo_loss
    >>> from uqdyn.train import fit
    >>> net = LatentNP(1, 1, width=8, z_dim=2)
    >>> ones = lambda n: torch.ones(2, n, dtype=torch.bool)
    >>> task = Task(torch.rand(2, 3, 1), torch.rand(2, 3, 1), ones(3),
    ...             torch.rand(2, 4, 1), torch.rand(2, 4, 1), ones(4))
    >>> fit(net, [task], loss_fn=elbo_loss(net), steps=2, progress=False).steps_done
    2
    """
    net = _check_model(model)
    model_fn, guide_fn = model_guide(net, name)
    objective = elbo or Trace_ELBO()
    if not callable(getattr(objective, "differentiable_loss", None)):
        raise TypeError(
            f"elbo is a {type(objective).__name__}; expected a pyro ELBO with "
            "differentiable_loss (e.g. pyro.infer.Trace_ELBO())"
        )

    def loss_fn(fitted: Any, task: Any) -> torch.Tensor:
        if fitted is not net:
            raise ValueError("elbo_loss was built for another model; build it for this one")
        return objective.differentiable_loss(model_fn, guide_fn, task)  # type: ignore[no-any-return]

    return loss_fn
