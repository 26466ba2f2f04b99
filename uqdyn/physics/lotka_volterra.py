"""The Lotka-Volterra predator-prey system."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uqdyn.physics.dynamics import Dynamics, _stable_step_from_spectrum, positive_parameter

__all__ = ["LotkaVolterra"]


class LotkaVolterra(Dynamics):
    r"""Lotka-Volterra: ``x' = alpha x - beta x y``, ``y' = delta x y - gamma y``.

    ``x`` is the prey and ``y`` the predator population; the state batch is ``(batch, 2)``
    and populations must stay positive. Every orbit is closed: the quantity
    ``V = delta x - gamma ln x + beta y - alpha ln y`` (:meth:`invariant`) is conserved,
    and small oscillations about the coexistence point ``(gamma / delta, alpha / beta)``
    have angular frequency ``sqrt(alpha gamma)``.

    Parameters
    ----------
    alpha : float or Tensor, shape () or (batch,)
        Prey growth rate ``> 0``. Default ``1.0``.
    beta : float or Tensor, shape () or (batch,)
        Predation rate ``> 0``. Default ``0.5``.
    delta : float or Tensor, shape () or (batch,)
        Predator growth per prey eaten ``> 0``. Default ``0.5``.
    gamma : float or Tensor, shape () or (batch,)
        Predator death rate ``> 0``. Default ``1.0``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters (all four stored through their logarithm, taken in
        this dtype). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Lotka, "Elements of Physical Biology", 1925. Volterra, "Variazioni e fluttuazioni del
    numero d'individui in specie animali conviventi", 1926.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import LotkaVolterra, simulate
    >>> system = LotkaVolterra()
    >>> state0 = system.initial_state(3, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 10.0, 201)).shape
    torch.Size([3, 201, 2])
    """

    parameter_names = ("alpha", "beta", "delta", "gamma")
    component_names = ("prey", "predator")
    state_shape = (2,)

    def __init__(
        self,
        alpha: float | Tensor = 1.0,
        beta: float | Tensor = 0.5,
        delta: float | Tensor = 0.5,
        gamma: float | Tensor = 1.0,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.raw_alpha = self.log_parameter(alpha, "alpha", dtype=dtype)
        self.raw_beta = self.log_parameter(beta, "beta", dtype=dtype)
        self.raw_delta = self.log_parameter(delta, "delta", dtype=dtype)
        self.raw_gamma = self.log_parameter(gamma, "gamma", dtype=dtype)

    alpha = positive_parameter("Prey growth rate ``alpha``, shape () or (batch,).")

    beta = positive_parameter("Predation rate ``beta``, shape () or (batch,).")

    delta = positive_parameter("Predator growth per prey ``delta``, shape () or (batch,).")

    gamma = positive_parameter("Predator death rate ``gamma``, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(prey, predator)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 2)

        Returns
        -------
        Tensor, shape (batch, 2)
        """
        x, y = state[:, 0:1], state[:, 1:2]
        alpha = self.per_sample(self.alpha, state)
        beta = self.per_sample(self.beta, state)
        delta = self.per_sample(self.delta, state)
        gamma = self.per_sample(self.gamma, state)
        return torch.cat([x * (alpha - beta * y), y * (delta * x - gamma)], dim=1)

    def invariant(self, state: Tensor) -> Tensor:
        """The conserved ``V = delta x - gamma ln x + beta y - alpha ln y``.

        Parameters
        ----------
        state : Tensor, shape (batch, 2) or (batch, time, 2)
            Positive populations.

        Returns
        -------
        Tensor, shape (batch,) or (batch, time)
        """
        x, y = state[..., 0], state[..., 1]
        shape = (-1,) + (1,) * (x.ndim - 1)

        def per(parameter: Tensor) -> Tensor:
            parameter = parameter.to(dtype=state.dtype, device=state.device)
            return parameter if parameter.ndim == 0 else parameter.reshape(shape)

        return (
            per(self.delta) * x
            - per(self.gamma) * torch.log(x)
            + per(self.beta) * y
            - per(self.alpha) * torch.log(y)
        )

    def stable_dt(self, method: str = "rk4") -> float:
        """Largest stable fixed step of the linearisation about the coexistence point.

        Its eigenvalues are ``+- i sqrt(alpha gamma)``: rk4 needs
        ``dt <= 2.6 / sqrt(alpha gamma)``; forward Euler and the 2nd/3rd-order methods have
        no stable step (the discrete orbit spirals outwards), so ``0`` is returned for them.
        Large oscillations, far from the coexistence point, need smaller steps.

        Returns
        -------
        float
        """
        frequency = math.sqrt(float((self.alpha * self.gamma).detach().max()))
        return _stable_step_from_spectrum(method, 0.0, frequency)

    def check_state(self, state: Tensor, name: str = "state") -> Tensor:
        """Validate shape and finiteness, and require positive populations."""
        state = super().check_state(state, name)
        if bool((state.detach() <= 0).any()):
            column = int((state.detach() <= 0).any(dim=0).nonzero()[0, 0])
            raise ValueError(
                f"{name} has a non-positive {self.describe_component(column)} population "
                f"(min {float(state[:, column].min()):.4g}); populations must be > 0"
            )
        return state

    def check_trajectory(self, trajectory: Tensor, times: Tensor) -> None:
        """Require the populations to stay positive; name the first time they do not."""
        bad = (trajectory.detach() <= 0).flatten(2).any(dim=2).any(dim=0)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"a population became non-positive at time {float(times[index]):.6g} (time "
                f"index {index}); reduce the step size"
            )

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Populations ``(gamma / delta, alpha / beta) * exp(u)``, ``u ~ Uniform(-0.5, 0.5)``.

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
        prey = self.per_sample((self.gamma / self.delta).detach(), uniform)
        predator = self.per_sample((self.alpha / self.beta).detach(), uniform)
        centre = torch.cat([prey.expand(batch, 1), predator.expand(batch, 1)], dim=1)
        return centre * uniform.exp()
