"""Two-dimensional advection-diffusion of a passive tracer on a periodic grid."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uqdyn._checks import as_float
from uqdyn.physics.dynamics import (
    _CHECKED_METHODS,
    _GridDynamics,
    _stable_step_from_spectrum,
    _uniform,
    positive_parameter,
)
from uqdyn.physics.grid import face_average, flux_divergence, laplacian

__all__ = ["AdvectionDiffusion"]

VelocityLike = Tensor | Callable[[Tensor], Tensor] | tuple[float, float]


class AdvectionDiffusion(_GridDynamics):
    r"""Advection-diffusion ``dI/dt + div(w I) = D lap(I)`` on a doubly periodic grid.

    The tracer ``I`` has state shape ``(1, height, width)``. The equation is solved in
    conservative flux form, which equals the advective form ``dI/dt + (w . grad) I = D lap I``
    whenever ``div w = 0`` (for example a constant velocity). Face fluxes
    ``F_{j+1/2} = w_{j+1/2} (I_j + I_{j+1}) / 2`` (face velocities averaged from the cell
    centres) and the five-point Laplacian make the scheme second-order accurate in space and
    conserve total tracer mass ``sum(I)`` to round-off.

    Parameters
    ----------
    size : tuple of int
        ``(height, width)`` of the grid (each >= 3). Default ``(64, 64)``.
    length : float or tuple of float
        Domain length ``L`` or ``(Ly, Lx)``; spacing ``dy = Ly / height``,
        ``dx = Lx / width``. Default ``1.0``.
    diffusion : float or Tensor, shape () or (batch,)
        Diffusion coefficient ``D > 0`` (stored through its logarithm; the attribute
        ``raw_diffusion`` is the learnable ``log D``). Default ``0.01``.
    velocity : Tensor or tuple or callable
        Velocity ``w = (w_x, w_y)`` in domain units per time; channel 0 is the
        ``x`` (width) component and channel 1 the ``y`` (height) component. Either a
        spatially uniform vector of shape ``(2,)`` or ``(batch, 2)``, a field of shape
        ``(2, height, width)`` or ``(batch, 2, height, width)`` (stored as the learnable
        ``nn.Parameter`` ``velocity``), or a callable ``velocity(t) -> Tensor`` returning one
        of those shapes for a time-varying field (not a parameter; an ``nn.Module`` callable
        has its own parameters). Default ``(1.0, 0.5)``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    Attributes
    ----------
    state_shape : tuple
        ``(1, height, width)``.
    parameter_names : tuple of str
        ``("diffusion", "velocity")``, or ``("diffusion",)`` for a callable velocity.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import AdvectionDiffusion, simulate
    >>> system = AdvectionDiffusion(size=(32, 32), diffusion=0.01, velocity=(1.0, 0.0))
    >>> state0 = system.initial_state(4, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 0.1, 5)).shape
    torch.Size([4, 5, 1, 32, 32])
    """

    component_names = ("I (tracer)",)

    def __init__(
        self,
        size: tuple[int, int] = (64, 64),
        length: float | tuple[float, float] = 1.0,
        *,
        diffusion: float | Tensor = 0.01,
        velocity: VelocityLike = (1.0, 0.5),
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_grid(size, length)
        self.state_shape = (1, *self.size)
        self.raw_diffusion = self.log_parameter(diffusion, "diffusion", dtype=dtype)
        if callable(velocity) and not isinstance(velocity, Tensor):
            self.velocity_fn: Callable[[Tensor], Tensor] | None = velocity
            self.velocity = None
            self.parameter_names = ("diffusion",)
        else:
            self.velocity_fn = None
            self.velocity = nn.Parameter(self._check_velocity(velocity, "velocity", dtype))
            self.parameter_names = ("diffusion", "velocity")

    diffusion = positive_parameter(
        "Diffusion coefficient ``D = exp(raw_diffusion)``, shape () or (batch,)."
    )

    def _check_velocity(self, velocity: Any, name: str, dtype: torch.dtype | None = None) -> Tensor:
        target = dtype or torch.get_default_dtype()
        if isinstance(velocity, (tuple, list)):
            velocity = torch.tensor(
                [as_float(v, f"{name}[{i}]") for i, v in enumerate(velocity)], dtype=target
            )
        elif isinstance(velocity, np.ndarray) and velocity.dtype.kind in "iuf":
            velocity = torch.from_numpy(velocity.astype(np.float64)).to(target)
        elif isinstance(velocity, Tensor) and dtype is not None and velocity.is_floating_point():
            velocity = velocity.to(dtype)
        if not isinstance(velocity, Tensor) or not velocity.is_floating_point():
            raise TypeError(
                f"{name} must be a floating tensor, a pair of floats or a callable of t, "
                f"got {type(velocity).__name__}"
            )
        shape = tuple(velocity.shape)
        ok = (
            shape == (2,)
            or (len(shape) == 2 and shape[1] == 2)
            or (len(shape) in (3, 4) and shape[-3:] == (2, *self.size))
        )
        if not ok:
            height, width = self.size
            raise ValueError(
                f"{name} must have shape (2,), (batch, 2), (2, {height}, {width}) or "
                f"(batch, 2, {height}, {width}), got {shape}"
            )
        if name != "velocity":  # a callable's output: checked for shape only (no host sync)
            return velocity
        if not bool(torch.isfinite(velocity).all()):
            raise ValueError(f"velocity must be finite, got non-finite entries in shape {shape}")
        return velocity.detach().clone()

    def _velocity_at(self, t: Tensor) -> Tensor:
        if self.velocity_fn is not None:
            return self._check_velocity(self.velocity_fn(t), "velocity(t)")
        if self.velocity is None:  # pragma: no cover - one of the two is always set
            raise RuntimeError("AdvectionDiffusion has neither a velocity nor a velocity_fn")
        return self.velocity

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """``dI/dt = D lap(I) - div(w I)``.

        Parameters
        ----------
        t : Tensor, shape ()
            Time (used only by a callable velocity).
        state : Tensor, shape (batch, 1, height, width)

        Returns
        -------
        Tensor, shape (batch, 1, height, width)
        """
        diffusion = self.per_sample(self.diffusion, state)
        velocity = self._velocity_at(t).to(dtype=state.dtype, device=state.device)
        if velocity.ndim <= 2:  # uniform velocity: (2,) or (batch, 2)
            velocity = velocity.reshape(-1, 2, 1, 1)
            wx, wy = velocity[:, 0:1], velocity[:, 1:2]
        else:
            velocity = velocity.reshape(-1, 2, *self.size)
            wx = face_average(velocity[:, 0:1], "x")
            wy = face_average(velocity[:, 1:2], "y")
        if velocity.shape[0] not in (1, state.shape[0]):
            raise ValueError(
                f"velocity has a batch of {velocity.shape[0]} but the state has "
                f"{state.shape[0]} samples (state shape {tuple(state.shape)})"
            )
        flux_x = wx * face_average(state, "x")
        flux_y = wy * face_average(state, "y")
        return diffusion * laplacian(state, self.spacing) - flux_divergence(
            flux_x, flux_y, self.spacing
        )

    def max_speeds(self) -> tuple[float, float]:
        """Largest ``|w_x|`` and ``|w_y|`` (a callable velocity is evaluated at ``t = 0``)."""
        velocity = self._velocity_at(torch.zeros(())).detach()
        velocity = (
            velocity.reshape(-1, 2, *velocity.shape[-2:])
            if velocity.ndim > 2
            else (velocity.reshape(-1, 2))
        )
        return float(velocity[:, 0].abs().max()), float(velocity[:, 1].abs().max())

    def stable_dt(self, method: str = "rk4") -> float:
        r"""Largest stable fixed step (von Neumann analysis with the largest ``D`` and ``|w|``).

        With ``A = 4 D (1/dx^2 + 1/dy^2)`` and ``b = |w_x|/dx + |w_y|/dy`` the spectrum lies
        in ``{-A <= Re <= 0, |Im| <= b}``; rk4 needs ``dt <= 2.6 / hypot(A, b)``. For the
        lower-order explicit methods, ``dt <= 2 / (A + |w|^2 / D)`` (the forward-Euler
        condition for centred advection, sufficient for midpoint/Heun). A callable velocity
        is evaluated at ``t = 0``.

        Returns
        -------
        float
        """
        dy, dx = self.spacing
        diffusion = float(self.diffusion.detach().max())
        speed_x, speed_y = self.max_speeds()
        decay = 4.0 * diffusion * (1.0 / dx**2 + 1.0 / dy**2)
        if method == "rk4":
            return _stable_step_from_spectrum(method, decay, speed_x / dx + speed_y / dy)
        if method not in _CHECKED_METHODS:
            return math.inf
        diffusion_min = float(self.diffusion.detach().min())
        return 2.0 / (decay + (speed_x**2 + speed_y**2) / diffusion_min)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Sums of 1 to 3 periodic Gaussian blobs.

        Each blob has a centre uniform on the domain, a width uniform in
        ``[0.05, 0.15] * min(Ly, Lx)`` and an amplitude uniform in ``[0.5, 1]``; distances
        are measured to the nearest periodic image.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
            Source of randomness (on ``device``); fixed seeds give reproducible states.
        device, dtype : optional
            Default: CPU and the default dtype.

        Returns
        -------
        Tensor, shape (batch, 1, height, width)
        """
        batch = self._check_batch(batch)
        dtype = dtype or torch.get_default_dtype()
        y, x = self.coordinates(device=device, dtype=dtype)
        ly, lx = self.length
        blobs = 3
        centre_y = _uniform((batch, blobs, 1, 1), generator, device, dtype) * ly
        centre_x = _uniform((batch, blobs, 1, 1), generator, device, dtype) * lx
        width = (0.05 + 0.1 * _uniform((batch, blobs, 1, 1), generator, device, dtype)) * min(
            ly, lx
        )
        amplitude = 0.5 + 0.5 * _uniform((batch, blobs, 1, 1), generator, device, dtype)
        count = torch.randint(1, blobs + 1, (batch, 1, 1, 1), generator=generator, device=device)
        active = (torch.arange(blobs, device=device).reshape(1, blobs, 1, 1) < count).to(dtype)
        dy = torch.remainder(y.reshape(1, 1, -1, 1) - centre_y + ly / 2, ly) - ly / 2
        dx = torch.remainder(x.reshape(1, 1, 1, -1) - centre_x + lx / 2, lx) - lx / 2
        fields = amplitude * active * torch.exp(-(dx**2 + dy**2) / (2.0 * width**2))
        return fields.sum(dim=1, keepdim=True)
