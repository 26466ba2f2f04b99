"""The classical fourth-order Runge-Kutta scheme, shared by data generation, surrogates and DA.

It lives below :mod:`uqdyn.data`, :mod:`uqdyn.models` and :mod:`uqdyn.da` because all three
step states with it; the public name is :func:`uqdyn.da.rk4_classic`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["rk4_classic"]


def rk4_classic(dynamics: nn.Module, state: Tensor, t: float, dt: float, steps: int) -> Tensor:
    """``steps`` steps of the classical fourth-order Runge-Kutta scheme (the 1/6, 1/3 rule).

    This is the scheme of DAPPER's ``dapper.mods.integration.rk4`` (torchdiffeq's ``"rk4"``
    is the 3/8 rule, which differs by a local error of order ``h^5``).

    Parameters
    ----------
    dynamics : nn.Module
        ``forward(t, state) -> d(state)/dt``.
    state : Tensor, shape (batch, *state_shape)
    t, dt : float
        Start time and total time span; each step is ``h = dt / steps``.
    steps : int
        Number of steps, >= 1.

    Returns
    -------
    Tensor, shape (batch, *state_shape)
        The state at ``t + dt``.
    """
    h = dt / steps
    x = state
    for k in range(steps):
        tk = t + k * h
        time = torch.tensor(tk, dtype=x.dtype, device=x.device)
        half = torch.tensor(tk + h / 2, dtype=x.dtype, device=x.device)
        end = torch.tensor(tk + h, dtype=x.dtype, device=x.device)
        k1 = dynamics(time, x)
        k2 = dynamics(half, x + (h / 2) * k1)
        k3 = dynamics(half, x + (h / 2) * k2)
        k4 = dynamics(end, x + h * k3)
        x = x + (h / 6) * (k1 + 2 * (k2 + k3) + k4)
    return x
