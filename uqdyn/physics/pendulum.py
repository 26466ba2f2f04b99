"""The damped pendulum."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uqdyn.physics.dynamics import Dynamics, _stable_step_from_spectrum, positive_parameter

__all__ = ["DampedPendulum"]


class DampedPendulum(Dynamics):
    r"""Damped pendulum ``theta'' + alpha theta' + omega0^2 sin(theta) = 0``.

    As a first-order system on the state ``(angle, angular velocity)``:
    ``d theta/dt = omega``, ``d omega/dt = -omega0^2 sin(theta) - alpha omega``.
    With ``linear=True`` the small-angle linearisation ``sin(theta) -> theta`` gives the
    damped linear oscillator, whose solution is known in closed form.

    Parameters
    ----------
    omega0 : float or Tensor, shape () or (batch,)
        Natural angular frequency ``> 0`` (stored through its logarithm).
        Default ``2 pi / 6``.
    alpha : float or Tensor, shape () or (batch,)
        Damping coefficient ``>= 0`` at construction (stored as is). Default ``0.2``.
    linear : bool
        Use ``theta`` instead of ``sin(theta)``. Default ``False``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Yin, Le Guen, Dona et al., "Augmenting physical models with deep networks for complex
    dynamics forecasting" (APHYNITY), ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> system = DampedPendulum(omega0=1.0, alpha=0.1)
    >>> state0 = system.initial_state(5, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 10.0, 101)).shape
    torch.Size([5, 101, 2])
    """

    parameter_names = ("omega0", "alpha")
    component_names = ("angle", "angular velocity")
    state_shape = (2,)

    def __init__(
        self,
        *,
        omega0: float | Tensor = 2.0 * math.pi / 6.0,
        alpha: float | Tensor = 0.2,
        linear: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.raw_omega0 = self.log_parameter(omega0, "omega0", dtype=dtype)
        self.alpha = self.physical_parameter(alpha, "alpha", minimum=0.0, dtype=dtype)
        self.linear = bool(linear)

    omega0 = positive_parameter("Natural angular frequency, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(angle, angular velocity)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 2)

        Returns
        -------
        Tensor, shape (batch, 2)
        """
        angle, velocity = state[:, 0:1], state[:, 1:2]
        omega0 = self.per_sample(self.omega0, state)
        alpha = self.per_sample(self.alpha, state)
        restoring = angle if self.linear else torch.sin(angle)
        return torch.cat([velocity, -omega0 * omega0 * restoring - alpha * velocity], dim=1)

    def stable_dt(self, method: str = "rk4") -> float:
        """Largest stable fixed step from the eigenvalues of the linearisation about rest.

        ``lambda = -alpha/2 +- i sqrt(omega0^2 - alpha^2/4)``: rk4 needs
        ``dt <= 2.6 / |lambda|``; forward Euler (and the 2nd/3rd-order methods, checked
        with Euler's region) need ``dt <= alpha / omega0^2``, so an undamped pendulum has no
        stable Euler step (its energy grows).

        Returns
        -------
        float
        """
        omega0, alpha = torch.broadcast_tensors(self.omega0.detach(), self.alpha.detach())
        steps = [
            _stable_step_from_spectrum(method, *_extreme_eigenvalue(float(w), float(a)))
            for w, a in zip(omega0.reshape(-1), alpha.reshape(-1), strict=True)
        ]
        return min(steps)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Angle uniform in ``[-pi/2, pi/2]``, angular velocity uniform in ``[-omega0/2, omega0/2]``.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 2)
        """
        batch = self._check_batch(batch)
        uniform = torch.rand(batch, 2, generator=generator, device=device, dtype=dtype) - 0.5
        omega0 = self.per_sample(self.omega0.detach(), uniform)
        return torch.cat([uniform[:, 0:1] * math.pi, uniform[:, 1:2] * omega0], dim=1)


def _extreme_eigenvalue(omega0: float, alpha: float) -> tuple[float, float]:
    """``(-Re, |Im|)`` of the largest eigenvalue of ``[[0, 1], [-omega0^2, -alpha]]``."""
    discriminant = alpha * alpha / 4.0 - omega0 * omega0
    if discriminant < 0:
        return alpha / 2.0, math.sqrt(-discriminant)
    return alpha / 2.0 + math.sqrt(discriminant), 0.0
