"""The Lorenz-96 model."""

from __future__ import annotations

import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.physics.dynamics import Dynamics

__all__ = ["Lorenz96"]


class Lorenz96(Dynamics):
    r"""Lorenz-96: ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` with cyclic indices.

    State shape ``(dim,)``; the state batch is ``(batch, dim)``.

    Parameters
    ----------
    dim : int
        Number of variables ``N >= 4``. Default ``40``.
    forcing : float or Tensor, shape () or (batch,)
        Forcing ``F`` (unconstrained). Default ``8.0`` (chaotic regime).
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Lorenz, "Predictability: a problem partly solved", ECMWF Seminar on Predictability, 1996.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import Lorenz96, simulate
    >>> system = Lorenz96(dim=10)
    >>> state0 = system.initial_state(3, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 1.0, 21)).shape
    torch.Size([3, 21, 10])
    """

    parameter_names = ("forcing",)

    def __init__(
        self,
        dim: int = 40,
        *,
        forcing: float | Tensor = 8.0,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dim = as_int(dim, "dim", minimum=4)
        self.dim = dim
        self.state_shape = (dim,)
        self.forcing = self.physical_parameter(forcing, "forcing", dtype=dtype)

    def describe_component(self, index: int) -> str:
        """``"x[index]"``."""
        return f"x[{index}]"

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of the ``N`` variables.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, dim)

        Returns
        -------
        Tensor, shape (batch, dim)
        """
        ahead = state.roll(-1, dims=-1)
        behind = state.roll(1, dims=-1)
        behind2 = state.roll(2, dims=-1)
        return (ahead - behind2) * behind - state + self.per_sample(self.forcing, state)

    #: On the attractor (``F = 8``), over 0.05 to 0.5 time units, rk4 steps of 0.01 agree with a
    #: converged DOP853 integration (rtol 1e-12) to a relative error of about 1e-5; steps of
    #: 0.05 to about 1e-3 to 1e-2 (see :meth:`Dynamics.accurate_dt`).
    resolved_rk4_dt = 0.01

    def stable_dt(self, method: str = "rk4") -> float:
        """No a-priori limit (``inf``): the Jacobian depends on the state.

        Steps of ``0.01`` to ``0.05`` are customary for ``F = 8`` with rk4; :func:`simulate`
        still checks the solution for non-finite values.
        """
        return float("inf")

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``x_i = F + e_i`` with independent standard normal ``e_i``.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, dim)
        """
        batch = self._check_batch(batch)
        noise = torch.randn(batch, self.dim, generator=generator, device=device, dtype=dtype)
        return noise + self.per_sample(self.forcing.detach(), noise)
