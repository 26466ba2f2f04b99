"""Rotating shallow-water equations on a doubly periodic Arakawa C-grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float
from uqdyn.physics.dynamics import (
    Dynamics,
    _GridDynamics,
    _stable_step_from_spectrum,
    _uniform,
    positive_parameter,
)
from uqdyn.physics.grid import face_average, flux_divergence, forward_difference, laplacian, shift

__all__ = ["ShallowWater", "LinearDragViscosity"]


def _momentum_shape(state: Tensor) -> torch.Size:
    """Shape ``(batch, 2, height, width)`` of the momentum tendencies of ``state``."""
    return torch.Size((state.shape[0], 2, *state.shape[2:]))


class LinearDragViscosity(nn.Module):
    r"""Default forcing/dissipation ``theta(u, v, h) = -r (u, v) + nu lap(u, v)``.

    Parameters
    ----------
    spacing : tuple of float
        Grid spacing ``(dy, dx)`` of the shallow-water grid.
    drag : float
        Linear (Rayleigh) drag ``r > 0`` (stored through its logarithm). Default ``0.01``.
    viscosity : float
        Kinematic viscosity ``nu > 0`` (stored through its logarithm). Default ``1e-3``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    Examples
    --------
    >>> import torch
    >>> theta = LinearDragViscosity((0.1, 0.1), drag=0.1, viscosity=1e-3)
    >>> theta(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 2, 8, 8])
    """

    def __init__(
        self,
        spacing: tuple[float, float],
        *,
        drag: float = 0.01,
        viscosity: float = 1e-3,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not isinstance(spacing, Sequence) or isinstance(spacing, str) or len(spacing) != 2:
            raise ValueError(f"spacing={spacing!r}; expected a pair (dy, dx) of floats > 0")
        self.spacing = (
            as_float(spacing[0], "spacing[0]", positive=True),
            as_float(spacing[1], "spacing[1]", positive=True),
        )
        self.raw_drag = Dynamics.log_parameter(drag, "drag", dtype=dtype)
        self.raw_viscosity = Dynamics.log_parameter(viscosity, "viscosity", dtype=dtype)

    drag = positive_parameter("Linear drag ``r``, shape () or (batch,).")

    viscosity = positive_parameter("Viscosity ``nu``, shape () or (batch,).")

    def forward(self, state: Tensor) -> Tensor:
        """Momentum tendencies ``(du, dv)`` of shape ``(batch, 2, height, width)``.

        Parameters
        ----------
        state : Tensor, shape (batch, 3, height, width)
            Channels ``(u, v, h)``.

        Returns
        -------
        Tensor, shape (batch, 2, height, width)
        """
        velocity = state[:, 0:2]
        drag = Dynamics._per_sample(self.drag, state)
        viscosity = Dynamics._per_sample(self.viscosity, state)
        return viscosity * laplacian(velocity, self.spacing) - drag * velocity

    def damping_rate(self) -> float:
        """Largest decay rate ``r + 4 nu (1/dx^2 + 1/dy^2)`` (for stability limits)."""
        dy, dx = self.spacing
        return float(self.drag.detach().max()) + 4.0 * float(self.viscosity.detach().max()) * (
            1.0 / dx**2 + 1.0 / dy**2
        )


class ShallowWater(_GridDynamics):
    r"""Rotating shallow water in vector-invariant form on a periodic C-grid.

    .. math::

        \partial_t u &= (f + \zeta)\, v - \partial_x (g h + K) + \theta_u \\
        \partial_t v &= -(f + \zeta)\, u - \partial_y (g h + K) + \theta_v \\
        \partial_t h &= -\partial_x \big((H + h) u\big) - \partial_y \big((H + h) v\big)

    with relative vorticity ``zeta = dv/dx - du/dy``, kinetic energy
    ``K = (u^2 + v^2) / 2``, Coriolis parameter ``f``, gravity ``g`` and mean depth ``H``;
    ``h`` is the deviation of the layer depth from ``H`` (total depth ``H + h > 0``).
    State shape ``(3, height, width)`` with channels ``(u, v, h)``, staggered on the
    Arakawa C-grid: ``h[i, j]`` at the cell centre ``(y_i, x_j)``, ``u[i, j]`` on the east
    face ``(y_i, x_{j+1/2})``, ``v[i, j]`` on the north face ``(y_{i+1/2}, x_j)``.

    The continuity equation is the divergence of face fluxes, so total mass
    ``sum(H + h) dx dy`` is conserved to round-off. The forcing/dissipation ``theta`` acts
    on the momentum equations only (it never touches ``h``, so it cannot break mass
    conservation): ``theta = forcing(state)`` with ``state (batch, 3, height, width)`` and
    output ``(batch, 2, height, width)`` read as ``(theta_u, theta_v)`` at the u- and
    v-points. Any ``nn.Module`` works, e.g. a neural network (Brajard et al. 2021).

    Parameters
    ----------
    size : tuple of int
        ``(height, width)``. Default ``(64, 64)``.
    length : float or tuple of float
        Domain length. Default ``2 pi``.
    coriolis : float or Tensor, shape () or (batch,)
        Coriolis parameter ``f`` (any sign). Default ``1.0``.
    gravity : float or Tensor, shape () or (batch,)
        ``g > 0`` (stored through its logarithm). Default ``1.0``.
    mean_depth : float or Tensor, shape () or (batch,)
        ``H > 0`` (stored through its logarithm). Default ``1.0``.
    forcing : nn.Module, optional
        ``theta``; default :class:`LinearDragViscosity` with drag ``0.01`` and viscosity
        ``1e-3``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters (and of the default forcing's); numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Sadourny, "The dynamics of finite-difference models of the shallow-water equations",
    J. Atmos. Sci. 32, 1975. Brajard, Carrassi, Bocquet, Bertino, "Combining data
    assimilation and machine learning to infer unresolved scale parametrization",
    Phil. Trans. R. Soc. A 379, 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import ShallowWater, simulate
    >>> system = ShallowWater(size=(16, 16))
    >>> state0 = system.initial_state(2, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 1.0, 5)).shape
    torch.Size([2, 5, 3, 16, 16])
    """

    parameter_names = ("coriolis", "gravity", "mean_depth")
    component_names = ("u (x-velocity)", "v (y-velocity)", "h (layer depth)")

    def __init__(
        self,
        size: tuple[int, int] = (64, 64),
        length: float | tuple[float, float] = 2.0 * math.pi,
        *,
        coriolis: float | Tensor = 1.0,
        gravity: float | Tensor = 1.0,
        mean_depth: float | Tensor = 1.0,
        forcing: nn.Module | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_grid(size, length)
        self.state_shape = (3, *self.size)
        self.coriolis = self.physical_parameter(coriolis, "coriolis", dtype=dtype)
        self.raw_gravity = self.log_parameter(gravity, "gravity", dtype=dtype)
        self.raw_mean_depth = self.log_parameter(mean_depth, "mean_depth", dtype=dtype)
        if forcing is None:
            forcing = LinearDragViscosity(self.spacing, dtype=dtype)
        if not isinstance(forcing, nn.Module):
            raise TypeError(
                f"forcing must be an nn.Module mapping (batch, 3, H, W) -> (batch, 2, H, W), "
                f"got {type(forcing).__name__}"
            )
        self.forcing = forcing

    gravity = positive_parameter("Gravity ``g``, shape () or (batch,).")

    mean_depth = positive_parameter("Mean layer depth ``H``, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(u, v, h)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 3, height, width)

        Returns
        -------
        Tensor, shape (batch, 3, height, width)
        """
        dy, dx = self.spacing
        u, v, h = state[:, 0:1], state[:, 1:2], state[:, 2:3]
        coriolis = self.per_sample(self.coriolis, state)
        gravity = self.per_sample(self.gravity, state)
        depth = self.per_sample(self.mean_depth, state) + h
        # continuity: divergence of the face mass fluxes (telescopes to zero in sum)
        dh = -flux_divergence(
            face_average(depth, "x") * u, face_average(depth, "y") * v, self.spacing
        )
        # absolute vorticity at cell corners (y_{i+1/2}, x_{j+1/2})
        absolute_vorticity = (
            coriolis + forward_difference(v, dx, "x") - forward_difference(u, dy, "y")
        )
        kinetic = 0.25 * (u * u + shift(u * u, -1, "x") + v * v + shift(v * v, -1, "y"))
        bernoulli = gravity * h + kinetic
        v_at_u = 0.5 * face_average(v + shift(v, -1, "y"), "x")
        u_at_v = 0.5 * face_average(u + shift(u, -1, "x"), "y")
        q_at_u = 0.5 * (absolute_vorticity + shift(absolute_vorticity, -1, "y"))
        q_at_v = 0.5 * (absolute_vorticity + shift(absolute_vorticity, -1, "x"))
        theta = self.forcing(state)
        if theta.shape != _momentum_shape(state):
            raise ValueError(
                f"forcing must return shape (batch, 2, height, width) = "
                f"{tuple(_momentum_shape(state))}, got {tuple(theta.shape)}"
            )
        du = q_at_u * v_at_u - forward_difference(bernoulli, dx, "x") + theta[:, 0:1]
        dv = -q_at_v * u_at_v - forward_difference(bernoulli, dy, "y") + theta[:, 1:2]
        return torch.cat([du, dv, dh], dim=1)

    def mass(self, state: Tensor) -> Tensor:
        """Total mass ``sum (H + h) dx dy`` per sample.

        Parameters
        ----------
        state : Tensor, shape (batch, 3, height, width)

        Returns
        -------
        Tensor, shape (batch,)
        """
        dy, dx = self.spacing
        depth = self.per_sample(self.mean_depth, state) + state[:, 2:3]
        return depth.sum(dim=(1, 2, 3)) * (dx * dy)

    def energy(self, state: Tensor) -> Tensor:
        """Total energy ``sum ((H + h) K + g h^2 / 2) dx dy`` per sample.

        ``K`` is the cell-centred kinetic energy of :meth:`forward` (the average of
        ``u^2 / 2`` over the cell's two u-faces plus that of ``v^2 / 2`` over its two
        v-faces). Without forcing the dynamics conserve it up to the discretisation error
        (exactly in the continuum); dissipation lowers it. Differentiable, e.g. for
        :class:`~uqdyn.models.hybrid.HybridDynamics`'s ``dissipate`` constraint.

        Parameters
        ----------
        state : Tensor, shape (batch, 3, height, width)

        Returns
        -------
        Tensor, shape (batch,)
        """
        dy, dx = self.spacing
        u, v, h = state[:, 0:1], state[:, 1:2], state[:, 2:3]
        depth = self.per_sample(self.mean_depth, state) + h
        kinetic = 0.25 * (u * u + shift(u * u, -1, "x") + v * v + shift(v * v, -1, "y"))
        density = depth * kinetic + 0.5 * self.per_sample(self.gravity, state) * h * h
        return density.sum(dim=(1, 2, 3)) * (dx * dy)

    def stable_dt(self, method: str = "rk4") -> float:
        r"""Largest stable fixed step of the linearised dynamics about rest.

        Gravity waves oscillate at up to ``2 sqrt(g H) sqrt(1/dx^2 + 1/dy^2) + |f|``; the
        default forcing damps at up to ``r + 4 nu (1/dx^2 + 1/dy^2)``. Strong currents
        lower the true limit (advection is not included); :func:`simulate` still checks
        the solution for non-finite values.

        Returns
        -------
        float
        """
        dy, dx = self.spacing
        wave_speed = math.sqrt(
            float(self.gravity.detach().max()) * float(self.mean_depth.detach().max())
        )
        oscillation = 2.0 * wave_speed * math.sqrt(1.0 / dx**2 + 1.0 / dy**2) + self._max_abs(
            self.coriolis
        )
        damping = getattr(self.forcing, "damping_rate", None)
        decay = float(damping()) if callable(damping) else 0.0
        return _stable_step_from_spectrum(method, decay, oscillation)

    def check_state(self, state: Tensor, name: str = "state") -> Tensor:
        """Validate shape and finiteness, and require a positive depth ``H + h``."""
        state = super().check_state(state, name)
        depth = self.per_sample(self.mean_depth.detach(), state) + state[:, 2:3].detach()
        if bool((depth <= 0).any()):
            raise ValueError(
                f"{name} has a non-positive layer depth H + h (min {float(depth.min()):.4g}); "
                "h must be > -mean_depth everywhere"
            )
        return state

    def check_trajectory(self, trajectory: Tensor, times: Tensor) -> None:
        """Raise ``ValueError`` at the first time where ``H + h <= 0`` (trajectory (B, T, 3, H, W))."""
        depth = trajectory[:, :, 2].detach() + self.per_sample(
            self.mean_depth.detach(), trajectory
        ).reshape(-1, 1, 1, 1)
        bad = (depth <= 0).flatten(2).any(dim=2).any(dim=0)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"h (layer depth) became non-positive (H + h <= 0, allowed range > 0) at "
                f"time {float(times[index]):.6g} (time index {index}); reduce the step, the "
                "initial perturbation or strengthen the dissipation"
            )

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Fluid at rest with 1 to 3 Gaussian bumps on the layer depth.

        ``u = v = 0``; ``h`` is a sum of periodic Gaussian bumps with centres uniform on the
        domain, widths uniform in ``[0.05, 0.1] * min(Ly, Lx)`` and amplitudes uniform in
        ``[-0.1, 0.1] * H`` (the geostrophic adjustment problem).

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 3, height, width)
        """
        batch = self._check_batch(batch)
        dtype = dtype or torch.get_default_dtype()
        y, x = self.coordinates(device=device, dtype=dtype)
        ly, lx = self.length
        bumps = 3
        centre_y = _uniform((batch, bumps, 1, 1), generator, device, dtype) * ly
        centre_x = _uniform((batch, bumps, 1, 1), generator, device, dtype) * lx
        width = (0.05 + 0.05 * _uniform((batch, bumps, 1, 1), generator, device, dtype)) * min(
            ly, lx
        )
        depth = self.mean_depth.detach().to(device=device, dtype=dtype)
        depth = depth.reshape(-1, 1, 1, 1) if depth.ndim else depth
        amplitude = (0.2 * _uniform((batch, bumps, 1, 1), generator, device, dtype) - 0.1) * depth
        count = torch.randint(1, bumps + 1, (batch, 1, 1, 1), generator=generator, device=device)
        active = (torch.arange(bumps, device=device).reshape(1, bumps, 1, 1) < count).to(dtype)
        dy = torch.remainder(y.reshape(1, 1, -1, 1) - centre_y + ly / 2, ly) - ly / 2
        dx = torch.remainder(x.reshape(1, 1, 1, -1) - centre_x + lx / 2, lx) - lx / 2
        h = (amplitude * active * torch.exp(-(dx**2 + dy**2) / (2.0 * width**2))).sum(
            dim=1, keepdim=True
        )
        zeros = torch.zeros_like(h)
        return torch.cat([zeros, zeros, h], dim=1)
