"""The Lorenz-63 system."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uqdyn.physics.dynamics import Dynamics, positive_parameter

__all__ = ["Lorenz63"]


class Lorenz63(Dynamics):
    r"""Lorenz-63: ``x' = sigma (y - x)``, ``y' = x (rho - z) - y``, ``z' = x y - beta z``.

    State ``(x, y, z)``; the state batch is ``(batch, 3)``. With the classical parameters
    ``sigma = 10``, ``rho = 28``, ``beta = 8/3`` the solution settles on the chaotic
    "butterfly" attractor, whose largest Lyapunov exponent is about ``0.906``.

    Parameters
    ----------
    sigma : float or Tensor, shape () or (batch,)
        Prandtl number ``> 0`` (stored through its logarithm). Default ``10``.
    rho : float or Tensor, shape () or (batch,)
        Rayleigh-number ratio ``>= 0`` at construction (stored as is). Default ``28``.
    beta : float or Tensor, shape () or (batch,)
        Geometric factor ``> 0`` (stored through its logarithm). Default ``8/3``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 20, 1963. Sprott, "Chaos and
    Time-Series Analysis", Oxford University Press, 2003 (Lyapunov exponents).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import Lorenz63, simulate
    >>> system = Lorenz63()
    >>> state0 = system.initial_state(4, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 1.0, 101)).shape
    torch.Size([4, 101, 3])
    """

    parameter_names = ("sigma", "rho", "beta")
    component_names = ("x", "y", "z")
    state_shape = (3,)

    def __init__(
        self,
        sigma: float | Tensor = 10.0,
        rho: float | Tensor = 28.0,
        beta: float | Tensor = 8.0 / 3.0,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.raw_sigma = self.log_parameter(sigma, "sigma", dtype=dtype)
        self.rho = self.physical_parameter(rho, "rho", minimum=0.0, dtype=dtype)
        self.raw_beta = self.log_parameter(beta, "beta", dtype=dtype)

    sigma = positive_parameter("Prandtl number ``sigma``, shape () or (batch,).")

    beta = positive_parameter("Geometric factor ``beta``, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(x, y, z)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 3)

        Returns
        -------
        Tensor, shape (batch, 3)
        """
        x, y, z = state[:, 0:1], state[:, 1:2], state[:, 2:3]
        sigma = self.per_sample(self.sigma, state)
        rho = self.per_sample(self.rho, state)
        beta = self.per_sample(self.beta, state)
        return torch.cat([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], dim=1)

    #: On the attractor (classical parameters), over 0.01 to 0.2 time units, rk4 steps of 0.01 agree with a
    #: converged DOP853 integration (rtol 1e-12) to a relative error of about 1e-5; steps of
    #: 0.05 to about 1e-3 to 1e-2 (see :meth:`Dynamics.accurate_dt`).
    resolved_rk4_dt = 0.01

    def stable_dt(self, method: str = "rk4") -> float:
        """No a-priori limit (``inf``): the Jacobian depends on the state.

        rk4 steps of ``0.01`` are customary on the classical attractor. Along a trajectory
        on it the Jacobian's eigenvalues reach a modulus of about 23, so rk4 is stable for
        steps below about ``2.6 / 23 = 0.11`` and accurate only for much smaller ones;
        :func:`simulate` still checks the solution for non-finite values.

        Returns
        -------
        float
        """
        return math.inf

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Points scattered around the attractor: ``(x, y, z) = (0, 0, rho - 1) + 8 e``.

        ``e`` has independent standard normal entries.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 3)
        """
        batch = self._check_batch(batch)
        noise = 8.0 * torch.randn(batch, 3, generator=generator, device=device, dtype=dtype)
        rho = self.per_sample(self.rho.detach(), noise)
        offset = torch.cat([torch.zeros_like(noise[:, :2]), (rho - 1.0).expand(batch, 1)], dim=1)
        return noise + offset
