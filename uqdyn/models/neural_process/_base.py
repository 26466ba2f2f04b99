"""Input validation and the two shared bases: conditional (Gaussian) and latent (mixture) NPs."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.predictive import GaussianMixture, Normal

from ._modules import _MLP, _bounded_scale

__all__: list[str] = []

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    return as_int(value, name, minimum=minimum)


def _check_min_std(min_std: Any) -> float:
    value = as_float(min_std, "min_std", finite=False)
    if not 0.0 < value < 1.0:
        raise ValueError(f"min_std={min_std!r}; expected a float in (0, 1)")
    return value


def _check_points(value: Any, name: str, dtype: torch.dtype) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} is a {type(value).__name__}; expected a torch.Tensor (batch, points, dim)"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} has dtype {value.dtype}; expected a floating dtype")
    if value.dim() != 3:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}; expected 3 axes (batch, points, dim)"
        )
    if value.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype} but the model parameters are {dtype}; convert the "
            f"inputs or the model (e.g. model.to({value.dtype}))"
        )
    return value


def _check_mask(mask: Any, name: str, shape: tuple[int, int], device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"{name} is {getattr(mask, 'dtype', type(mask).__name__)}; expected a bool tensor "
            f"of shape {shape}"
        )
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected {shape}")
    return mask


def _check_finite_points(value: Tensor, mask: Tensor, name: str) -> None:
    bad = ~torch.isfinite(value).all(dim=-1) & mask
    if bool(bad.any()):
        b, n = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} point(s) with NaN or infinite values (first: task {b}, "
            f"point {n}); expected finite values at every real (unmasked) point"
        )


class _NeuralProcessBase(nn.Module):
    """Shared validation of ``(x_context, y_context, x_target, mask_context)`` and of tasks."""

    decoder: _MLP

    def __init__(self, x_dim: int, y_dim: int, min_std: float, min_context: int) -> None:
        super().__init__()
        self.x_dim = _positive_int(x_dim, "x_dim")
        self.y_dim = _positive_int(y_dim, "y_dim")
        self.min_std = _check_min_std(min_std)
        self.min_context = _positive_int(min_context, "min_context", minimum=0)

    def _build_decoder(self, in_dim: int, width: int, depth: Any) -> None:
        """Set ``self.decoder``: an MLP from ``in_dim`` features to ``2 * y_dim`` outputs."""
        self.decoder = _MLP(in_dim, 2 * self.y_dim, width, _positive_int(depth, "decoder_depth"))

    def _gaussian_head(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``loc, scale`` from the decoder on ``features (..., in_dim)``; each ``(..., y_dim)``.

        The scale is bounded below by ``min_std``.
        """
        loc, raw = self.decoder(features).split(self.y_dim, dim=-1)
        return loc, _bounded_scale(raw, self.min_std)

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _prepare(
        self,
        x_context: Any,
        y_context: Any,
        x_target: Any,
        mask_context: Any,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Validate the inputs; return them with masked context points zeroed, plus the mask.

        Masked context points may hold anything, NaN included: they are replaced by zeros
        before any computation, so they never change a prediction. Real context points and
        every target input must be finite (a ``ValueError`` names the first bad one).
        """
        dtype = self._param_dtype()
        xc = _check_points(x_context, "x_context", dtype)
        yc = _check_points(y_context, "y_context", dtype)
        xt = _check_points(x_target, "x_target", dtype)
        batch, n_context = xc.shape[0], xc.shape[1]
        if yc.shape[:2] != xc.shape[:2]:
            raise ValueError(
                f"y_context has shape {tuple(yc.shape)} and x_context {tuple(xc.shape)}; expected "
                "the same (batch, points)"
            )
        if xt.shape[0] != batch:
            raise ValueError(
                f"x_target has batch size {xt.shape[0]} and x_context {batch}; expected the same"
            )
        for name, t, want, what in (
            ("x_context", xc, self.x_dim, "x_dim"),
            ("x_target", xt, self.x_dim, "x_dim"),
            ("y_context", yc, self.y_dim, "y_dim"),
        ):
            if t.shape[-1] != want:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)} with last axis {t.shape[-1]}; the model "
                    f"was built with {what}={want}"
                )
        if xt.shape[1] < 1:
            raise ValueError(f"x_target has shape {tuple(xt.shape)}; expected at least one point")
        mask = _check_mask(mask_context, "mask_context", (batch, n_context), xc.device)
        counts = mask.sum(dim=1)
        if batch and int(counts.min()) < self.min_context:
            b = int(counts.argmin())
            raise ValueError(
                f"task {b} has {int(counts[b])} real context point(s) (x_context shape "
                f"{tuple(xc.shape)}); {type(self).__name__} was built with "
                f"min_context={self.min_context}"
            )
        _check_finite_points(xc, mask, "x_context")
        _check_finite_points(yc, mask, "y_context")
        _check_finite_points(xt, torch.ones_like(xt[..., 0], dtype=torch.bool), "x_target")
        keep = mask.unsqueeze(-1)
        xc = torch.where(keep, xc, torch.zeros((), dtype=xc.dtype, device=xc.device))
        yc = torch.where(keep, yc, torch.zeros((), dtype=yc.dtype, device=yc.device))
        return xc, yc, xt, mask

    def _prepare_task(self, task: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Validate a :class:`~uqdyn.data.Task`; return (xc, yc, mc, xt, yt, mt).

        Masked context and target points are zeroed (inputs and outputs), so whatever they
        hold (NaN included) changes neither the loss nor its gradients.
        """
        for attr in ("x_context", "y_context", "x_target", "y_target"):
            if not hasattr(task, attr):
                raise TypeError(
                    f"task is a {type(task).__name__} without {attr!r}; expected a uqdyn.data.Task"
                )
        x_target = _check_points(task.x_target, "x_target", self._param_dtype())
        mt = _check_mask(
            getattr(task, "mask_target", None),
            "mask_target",
            (x_target.shape[0], x_target.shape[1]),
            x_target.device,
        )
        # masked targets: zero inputs (NaN allowed there), so they change nothing
        zero = torch.zeros((), dtype=x_target.dtype, device=x_target.device)
        x_target = torch.where(mt.unsqueeze(-1), x_target, zero)
        xc, yc, xt, mc = self._prepare(
            task.x_context, task.y_context, x_target, getattr(task, "mask_context", None)
        )
        yt = _check_points(task.y_target, "y_target", xt.dtype)
        if yt.shape[:2] != xt.shape[:2] or yt.shape[-1] != self.y_dim:
            raise ValueError(
                f"y_target has shape {tuple(yt.shape)}; expected ({xt.shape[0]}, {xt.shape[1]}, "
                f"{self.y_dim}) to match x_target {tuple(xt.shape)} and y_dim={self.y_dim}"
            )
        counts = mt.sum(dim=1)
        if int(counts.min()) < 1:
            raise ValueError(
                f"task {int(counts.argmin())} has no real target point; the loss needs at least "
                "one target per task"
            )
        _check_finite_points(yt, mt, "y_target")
        yt = torch.where(mt.unsqueeze(-1), yt, torch.zeros((), dtype=yt.dtype, device=yt.device))
        return xc, yc, mc, xt, yt, mt

    @staticmethod
    def _gaussian_loglik(y: Tensor, loc: Tensor, scale: Tensor, mask: Tensor) -> Tensor:
        """Sum over channels and real targets of the Gaussian log density; ``(..., B)``."""
        z = (y - loc) / scale
        logp = (-0.5 * z.square() - scale.log() - _LOG_SQRT_2PI).sum(-1)
        return (logp * mask.to(logp.dtype)).sum(-1)

    def predict(self, task: Any, **kwargs: Any) -> Any:
        """Predictive at the targets of ``task`` (a :class:`~uqdyn.data.Task`).

        Equivalent to ``self(task.x_context, task.y_context, task.x_target,
        mask_context=task.mask_context, **kwargs)``.
        """
        return self(
            task.x_context,
            task.y_context,
            task.x_target,
            mask_context=getattr(task, "mask_context", None),
            **kwargs,
        )

    def predict_batch(self, task: Any) -> tuple[Any, Tensor, Tensor]:
        """``(predict(task), y_target, mask_target)`` for validation by :func:`uqdyn.train.fit`.

        The Predictive has ``batch_shape (B, Nt, y_dim)``, ``y_target`` the same shape and
        ``mask_target (B, Nt)`` keeps the real targets (padded targets hold zeros).
        """
        return self.predict(task), task.y_target, task.mask_target


class _ConditionalNP(_NeuralProcessBase):
    """Base of the deterministic models: Gaussian predictive, likelihood loss."""

    def _predict_params(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor
    ) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        x_context: Tensor,
        y_context: Tensor,
        x_target: Tensor,
        *,
        mask_context: Tensor | None = None,
    ) -> Normal:
        """Predictive ``Normal`` with ``batch_shape = (batch, targets, y_dim)``.

        Parameters
        ----------
        x_context : Tensor, shape (batch, context, x_dim)
        y_context : Tensor, shape (batch, context, y_dim)
        x_target : Tensor, shape (batch, targets, x_dim)
        mask_context : bool Tensor, shape (batch, context), optional
            ``True`` for real context points. Masked points (padding, or NaN where nothing
            was observed) are replaced by zeros before anything is computed, so they never
            change the prediction; a NaN or infinite value at a real point is an error naming
            the task and the point.

        Returns
        -------
        Normal
            ``loc`` and ``scale`` of shape ``(batch, targets, y_dim)``.
        """
        xc, yc, xt, mc = self._prepare(x_context, y_context, x_target, mask_context)
        loc, scale = self._predict_params(xc, yc, mc, xt)
        return Normal(loc, scale)

    def loss(self, task: Any) -> Tensor:
        """Negative conditional log-likelihood per target, averaged over the tasks.

        ``-(1/B) sum_b (1/|T_b|) sum_{t in T_b} sum_c log N(y_tc; mu_tc, sigma_tc^2)`` over the
        real targets ``T_b`` of each task (``mask_target``); a scalar tensor.
        """
        xc, yc, mc, xt, yt, mt = self._prepare_task(task)
        loc, scale = self._predict_params(xc, yc, mc, xt)
        loglik = self._gaussian_loglik(yt, loc, scale, mt)
        return -(loglik / mt.sum(dim=1).to(loglik.dtype)).mean()


class _LatentNP(_NeuralProcessBase):
    """Base of the latent-variable models: global Gaussian latent ``z``, mixture predictive."""

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        min_std: float,
        min_context: int,
        num_samples: int,
        num_train_samples: int,
        kl_warmup: int = 0,
    ) -> None:
        super().__init__(x_dim, y_dim, min_std, min_context)
        self.num_samples = _positive_int(num_samples, "num_samples")
        self.num_train_samples = _positive_int(num_train_samples, "num_train_samples")
        self.kl_warmup = _positive_int(kl_warmup, "kl_warmup", minimum=0)
        # training steps taken so far (counts loss calls in training mode with gradients);
        # a buffer, so checkpoints carry it and a resumed run continues the warm-up exactly
        self.kl_steps: Tensor
        self.register_buffer("kl_steps", torch.zeros((), dtype=torch.long))

    def kl_weight(self) -> float:
        """Weight of the KL term in the next training loss: ``min(1, (s + 1) / kl_warmup)``.

        ``s`` is the number of training losses computed so far (buffer ``kl_steps``); 1.0
        when ``kl_warmup = 0``.
        """
        if self.kl_warmup == 0:
            return 1.0
        return min(1.0, (int(self.kl_steps) + 1) / self.kl_warmup)

    def _latent(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``q(z | points)``; each ``(B, z_dim)``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _decode(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor, z: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Gaussian parameters at the targets for latent draws ``z (K, B, z_dim)``.

        Returns ``loc, scale`` of shape ``(K, B, targets, y_dim)``.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def _draw(self, mu: Tensor, sigma: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + sigma * eps

    def forward(
        self,
        x_context: Tensor,
        y_context: Tensor,
        x_target: Tensor,
        *,
        mask_context: Tensor | None = None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> GaussianMixture:
        """Predictive mixture over ``K`` draws of ``z ~ q(z | context)``, equal weights.

        Parameters
        ----------
        x_context : Tensor, shape (batch, context, x_dim)
        y_context : Tensor, shape (batch, context, y_dim)
        x_target : Tensor, shape (batch, targets, x_dim)
        mask_context : bool Tensor, shape (batch, context), optional
            ``True`` for real context points; masked points (padding, NaN) never change the
            prediction, as for the conditional models.
        num_samples : int, optional
            Number of latent draws ``K``; default ``self.num_samples``.
        generator : torch.Generator, optional
            Generator (on the inputs' device) for reproducible latent draws.

        Returns
        -------
        GaussianMixture
            Components first: ``loc`` and ``scale`` of shape ``(K, batch, targets, y_dim)``,
            weights ``1 / K``.
        """
        k = self.num_samples if num_samples is None else _positive_int(num_samples, "num_samples")
        xc, yc, xt, mc = self._prepare(x_context, y_context, x_target, mask_context)
        mu, sigma = self._latent(xc, yc, mc)
        z = self._draw(mu, sigma, k, generator)
        loc, scale = self._decode(xc, yc, mc, xt, z)
        weights = torch.ones(k, device=loc.device, dtype=loc.dtype)
        return GaussianMixture(weights, loc, scale)

    def loss(
        self, task: Any, *, num_samples: int | None = None, kl_weight: float | None = None
    ) -> Tensor:
        """Negative ELBO per target with the context posterior as prior (Garnelo et al. 2018b).

        For each task, with ``q`` the latent encoder,

        ``ELBO = E_{z ~ q(z | C u T)} [sum_{t in T} log p(y_t | x_t, z, C)]
        - beta KL(q(z | C u T) || q(z | C))``,

        estimated with ``num_samples`` reparameterised draws (default
        ``self.num_train_samples``), divided by the number of real targets ``|T|`` and
        averaged over the tasks; returns ``-mean ELBO`` (a scalar tensor). ``C u T`` is
        encoded as the concatenation of the context and target sets.

        ``beta`` is ``kl_weight`` when given; otherwise, in training mode with gradients
        enabled, the KL warm-up weight :meth:`kl_weight` (``beta`` rises linearly from
        ``1 / kl_warmup`` to 1 over the first ``kl_warmup`` training losses, which counters
        the collapse of the posterior onto the prior early in training; each such call
        advances the ``kl_steps`` buffer), and 1 (the true ELBO) in evaluation.
        """
        k = (
            self.num_train_samples
            if num_samples is None
            else _positive_int(num_samples, "num_samples")
        )
        if kl_weight is not None:
            beta = as_float(kl_weight, "kl_weight", finite=False)
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"kl_weight={kl_weight!r}; expected a float in [0, 1]")
        elif self.training and torch.is_grad_enabled():
            beta = self.kl_weight()
        else:
            beta = 1.0
        xc, yc, mc, xt, yt, mt = self._prepare_task(task)
        mu_prior, sigma_prior = self._latent(xc, yc, mc)
        mu_post, sigma_post = self._latent(
            torch.cat([xc, xt], dim=1), torch.cat([yc, yt], dim=1), torch.cat([mc, mt], dim=1)
        )
        z = self._draw(mu_post, sigma_post, k, None)
        loc, scale = self._decode(xc, yc, mc, xt, z)
        expected = self._gaussian_loglik(yt, loc, scale, mt).mean(0)  # (B,)
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu_post, sigma_post),
            torch.distributions.Normal(mu_prior, sigma_prior),
        ).sum(-1)
        elbo = (expected - beta * kl) / mt.sum(dim=1).to(expected.dtype)
        if kl_weight is None and self.training and torch.is_grad_enabled():
            self.kl_steps += 1
        return -elbo.mean()
