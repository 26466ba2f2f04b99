"""A stochastic hybrid model: the augmentation depends on a latent variable per trajectory."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_int
from uqdyn.physics import Dynamics, simulate
from uqdyn.predictive import Ensemble
from uqdyn.scoring import crps_ensemble

from .augmented import (
    _check_conserve,
    _check_dissipate,
    _project_zero_mean,
    _remove_energy_gain,
    _resolve_state_shape,
)
from .batch import TrajectoryBatch, check_batch, later_mask, masked_mean, observed_or_zero

__all__ = ["LatentHybridDynamics"]


class LatentHybridDynamics(Dynamics):
    r"""Hybrid dynamics with a random latent: ``dX/dt = F_phys(X) + F_aug(X, z)``.

    Each forecast trajectory draws ``z ~ N(0, I_k)`` once and integrates the resulting ODE,
    so the model is a distribution over trajectories: the spread of ``F_aug(X, z)`` over
    ``z`` carries the uncertainty the physics leaves. Trained with
    :func:`~uqdyn.models.hybrid.fit_aphynity` by the fair ensemble CRPS of sampled
    trajectories (a proper scoring rule, so its minimiser is the calibrated forecast) under
    APHYNITY's minimal-augmentation constraint.

    The latent is integrated as part of the state (its tendency is zero): the extended state
    is ``cat([X, z], dim=1)`` for ODE states ``(batch, dim)`` and ``cat([X, z maps], dim=1)``
    for gridded states (``z`` broadcast to constant ``(k, height, width)`` maps). The
    augmentation receives that extended state and returns a tendency of ``X``'s shape.

    **As a forecaster** (the :class:`uqdyn.train.Trainable` contract) it takes a
    :class:`TrajectoryBatch`: :meth:`loss` is the mean fair CRPS of sampled rollouts from the
    observed initial states at the observed later times, and :meth:`predict_batch` their
    :class:`~uqdyn.predictive.Ensemble`, so ``uqdyn.train.fit(model, batches)`` trains it
    without APHYNITY's constraint (:func:`fit_aphynity` adds it).

    Parameters
    ----------
    physics : Dynamics or None
        ``F_phys`` (``None``: data-only).
    augmentation : nn.Module
        Maps ``(batch, C + k, ...)`` (state channels then latent channels) to
        ``(batch, C, ...)``; e.g. ``MLPAugmentation(dim, input_dim=dim + k)``.
    latent_dim : int
        ``k >= 1``.
    state_shape : tuple of int, optional
        Needed when ``physics`` is ``None``.
    conserve : sequence of int, optional
        As in :class:`HybridDynamics`.
    dissipate : callable, optional
        An energy of the state (without the latent) that ``F_aug`` must not increase, as in
        :class:`HybridDynamics`.

    References
    ----------
    Yin et al., "Augmenting physical models with deep networks for complex dynamics
    forecasting", ICLR 2021 (the decomposition); Gneiting & Raftery, "Strictly proper
    scoring rules, prediction, and estimation", JASA 2007 (CRPS training).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum
    >>> from uqdyn.models.hybrid import MLPAugmentation
    >>> model = LatentHybridDynamics(DampedPendulum(), MLPAugmentation(2, 16, input_dim=3), 1)
    >>> model.forecast(torch.zeros(4, 2), torch.linspace(0, 1, 3), samples=5).members.shape
    torch.Size([5, 4, 3, 2])
    """

    physics: Dynamics | None
    augmentation: nn.Module

    def __init__(
        self,
        physics: Dynamics | None,
        augmentation: nn.Module,
        latent_dim: int,
        *,
        state_shape: Sequence[int] | None = None,
        conserve: Sequence[int] | None = None,
        dissipate: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(augmentation, nn.Module):
            raise TypeError(f"augmentation must be an nn.Module, got {type(augmentation).__name__}")
        latent_dim = as_int(latent_dim, "latent_dim", minimum=1)
        if physics is not None and not isinstance(physics, Dynamics):
            raise TypeError(
                f"physics must be a uqdyn.physics.Dynamics or None, got {type(physics).__name__}"
            )
        base = _resolve_state_shape(physics, state_shape)
        self.physics = physics
        self.augmentation = augmentation
        self.latent_dim = latent_dim
        self.conserve = _check_conserve(base, conserve)
        self.dissipate = _check_dissipate(dissipate)
        self.base_shape: tuple[int, ...] = base
        self.state_shape = (base[0] + latent_dim, *base[1:])

    def _check_base_state(self, state: Any, name: str) -> Tensor:
        """Validate a state ``(batch, *base_shape)`` (and the physics' own checks)."""
        if not isinstance(state, Tensor) or not state.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {type(state).__name__}")
        if state.ndim != len(self.base_shape) + 1 or tuple(state.shape[1:]) != self.base_shape:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.base_shape))}), got "
                f"{tuple(state.shape)}"
            )
        if not bool(torch.isfinite(state).all()):
            raise ValueError(f"{name} holds non-finite values; expected finite states")
        if self.physics is not None:
            self.physics.check_state(state, name)
        return state

    def _split(self, state: Tensor) -> tuple[Tensor, Tensor]:
        channels = self.base_shape[0]
        return state[:, :channels], state[:, channels:]

    def extend(self, state: Tensor, latent: Tensor) -> Tensor:
        """``cat([state, z], dim=1)``: state ``(batch, *base_shape)``, latent ``(batch, k)``."""
        maps = latent.reshape(*latent.shape, *([1] * (state.ndim - 2)))
        return torch.cat([state, maps.expand(-1, -1, *state.shape[2:])], dim=1)

    def augmentation_part(self, state: Tensor, latent: Tensor) -> Tensor:
        """``F_aug(X, z)``, shape ``(batch, *base_shape)`` (after the projection, if any)."""
        correction = self.augmentation(self.extend(state, latent))
        if not isinstance(correction, Tensor) or correction.shape != state.shape:
            got = tuple(correction.shape) if isinstance(correction, Tensor) else correction
            raise ValueError(
                f"augmentation must return a tendency of the state's shape "
                f"{tuple(state.shape)} from the extended state of "
                f"{state.shape[1] + latent.shape[1]} channels, got {got}"
            )
        if self.conserve:
            correction = _project_zero_mean(correction, self.conserve)
        if self.dissipate is not None:
            correction = _remove_energy_gain(self.dissipate, state, correction, self.conserve)
        return correction

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendency of the extended state ``(batch, C + k, ...)``; zero for the latent."""
        x, maps = self._split(state)
        latent = maps.reshape(maps.shape[0], self.latent_dim, -1)[..., 0]
        dx = self.augmentation_part(x, latent)
        if self.physics is not None:
            dx = dx + self.physics(t, x)
        return torch.cat([dx, torch.zeros_like(maps)], dim=1)

    def check_compatible(self, state: Any, name: str = "state") -> Tensor:
        """Raise ``ValueError`` unless physics and augmentation accept ``state`` (batch, *base_shape)."""
        state = self._check_base_state(state, name)
        latent = torch.zeros(state.shape[0], self.latent_dim, dtype=state.dtype)
        with torch.no_grad():
            if self.physics is not None:
                out = self.physics(torch.zeros((), dtype=state.dtype, device=state.device), state)
                if out.shape != state.shape:
                    raise ValueError(
                        f"physics {type(self.physics).__name__} returned a tendency of shape "
                        f"{tuple(out.shape)} for {name} of shape {tuple(state.shape)}; "
                        "expected the same shape"
                    )
            try:
                self.augmentation_part(state, latent.to(state.device))
            except RuntimeError as error:
                raise ValueError(
                    f"augmentation {type(self.augmentation).__name__} cannot take {name} of "
                    f"shape {tuple(state.shape)} extended by {self.latent_dim} latent channels "
                    f"({error}); expected input channels {self.state_shape[0]}"
                ) from error
        return state

    def stable_dt(self, method: str = "rk4") -> float:
        """The physics' stability limit (the network may lower it; not checked)."""
        return math.inf if self.physics is None else self.physics.stable_dt(method)

    def check_trajectory(self, trajectory: Tensor, times: Tensor) -> None:
        """The physics' checks on the state part of the extended trajectory."""
        if self.physics is not None:
            self.physics.check_trajectory(trajectory[:, :, : self.base_shape[0]], times)

    def sample(
        self,
        state0: Tensor,
        times: Tensor | Sequence[float],
        samples: int,
        *,
        generator: torch.Generator | None = None,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> Tensor:
        """Sample trajectories, each with its own latent ``z ~ N(0, I)``.

        Parameters
        ----------
        state0 : Tensor, shape (batch, *base_shape)
        times : Tensor or sequence of float, shape (time,)
        samples : int
            Trajectories per initial state, ``>= 1``.
        generator : torch.Generator, optional
            On the device of ``state0``.
        method, step_size
            As in :func:`uqdyn.physics.simulate`.

        Returns
        -------
        Tensor, shape (samples, batch, time, *base_shape)
            Differentiable in the model's parameters (reparameterised latents).
        """
        samples = as_int(samples, "samples", minimum=1)
        state0 = self._check_base_state(state0, "state0")
        batch = state0.shape[0]
        latent = torch.randn(
            samples * batch,
            self.latent_dim,
            generator=generator,
            device=state0.device,
            dtype=state0.dtype,
        )
        repeated = state0.repeat(samples, *([1] * (state0.ndim - 1)))
        extended = self.extend(repeated, latent)
        path = simulate(self, extended, times, method, step_size=step_size)
        path = path[:, :, : self.base_shape[0]]
        return path.reshape(samples, batch, *path.shape[1:])

    def forecast(
        self,
        state0: Tensor,
        times: Tensor | Sequence[float],
        samples: int = 32,
        *,
        generator: torch.Generator | None = None,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> Ensemble:
        """Ensemble Predictive of ``samples`` trajectories (members first).

        Returns
        -------
        Ensemble
            Members of shape ``(samples, batch, time, *base_shape)``.
        """
        with torch.no_grad():
            members = self.sample(
                state0, times, samples, generator=generator, method=method, step_size=step_size
            )
        return Ensemble(members)

    def loss(
        self,
        batch: TrajectoryBatch,
        *,
        samples: int = 8,
        generator: torch.Generator | None = None,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> Tensor:
        r"""Mean fair CRPS of ``samples`` sampled rollouts at the observed later times, shape ``()``.

        ``mean_{b, t > 0 observed, i} CRPS_fair(X_hat^{1..S}_bti, y_bti)`` (Ferro 2014), a
        proper score, with the rollouts ``X_hat^s`` from ``y_b0``, each with its own latent.

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *base_shape)`` with an optional mask ``(batch, time)``.
        samples : int
            Rollouts per trajectory, ``>= 2`` for a useful fair CRPS. Default 8.
        generator : torch.Generator, optional
            For the latent draws (default: torch's global RNG, seeded by ``fit``).
        method, step_size
            Integration, as in :func:`uqdyn.physics.simulate`.
        """
        batch = check_batch(batch, self, self.base_shape)
        paths = self.sample(
            batch.initial_state,
            batch.times,
            samples,
            generator=generator,
            method=method,
            step_size=step_size,
        )
        score = crps_ensemble(
            observed_or_zero(batch), paths[:, :, 1:], member_dim=0, estimator="fair"
        )
        return masked_mean(score, later_mask(batch))

    def predict_batch(
        self,
        batch: TrajectoryBatch,
        *,
        samples: int = 32,
        generator: torch.Generator | None = None,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> tuple[Ensemble, Tensor, Tensor | None]:
        """Forecast the later times of ``batch``: ``samples`` rollouts from its initial states.

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *base_shape)`` with an optional mask ``(batch, time)``.
        samples : int
            Members of the forecast. Default 32.
        generator, method, step_size
            As in :meth:`loss`.

        Returns
        -------
        predictive : Ensemble
            Members ``(samples, batch, time - 1, *base_shape)``.
        y_true : Tensor, shape (batch, time - 1, *base_shape)
            The observed later states (unobserved entries set to 0).
        mask : Tensor of bool, shape (batch, time - 1), or None
            ``batch.mask[:, 1:]``.
        """
        batch = check_batch(batch, self, self.base_shape)
        paths = self.sample(
            batch.initial_state,
            batch.times,
            samples,
            generator=generator,
            method=method,
            step_size=step_size,
        )
        return Ensemble(paths[:, :, 1:]), observed_or_zero(batch), later_mask(batch)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Initial states of the physics, shape ``(batch, *base_shape)``."""
        if self.physics is None:
            raise ValueError("initial_state needs physics; this data-only model has none")
        return self.physics.initial_state(batch, generator=generator, device=device, dtype=dtype)
