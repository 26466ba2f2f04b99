"""Differentiable physical solvers.

Every system is a :class:`Dynamics`: an ``nn.Module`` whose ``forward(t, state)`` returns
``d(state)/dt``, with learnable physical parameters, batched over a leading batch dimension
and running on the device of its tensors; strictly positive parameters are stored through
their logarithm and read through :class:`positive_parameter`. :func:`simulate` integrates
any of them with torchdiffeq and returns trajectories of shape ``(batch, time, *state_shape)``;
:func:`warp` is the semi-Lagrangian transport step of learned motion-field models.
Finite-difference operators on periodic grids live in :mod:`uqdyn.physics.grid`.
"""

from uqdyn.physics.advection_diffusion import AdvectionDiffusion
from uqdyn.physics.dynamics import Dynamics, positive_parameter
from uqdyn.physics.integrate import simulate
from uqdyn.physics.kuramoto_sivashinsky import KuramotoSivashinsky
from uqdyn.physics.lorenz63 import Lorenz63
from uqdyn.physics.lorenz96 import Lorenz96
from uqdyn.physics.lotka_volterra import LotkaVolterra
from uqdyn.physics.navier_stokes import NavierStokes
from uqdyn.physics.pendulum import DampedPendulum
from uqdyn.physics.reaction_diffusion import FitzHughNagumo, GrayScott
from uqdyn.physics.shallow_water import LinearDragViscosity, ShallowWater
from uqdyn.physics.warp import warp

__all__ = [
    "Dynamics",
    "positive_parameter",
    "AdvectionDiffusion",
    "FitzHughNagumo",
    "GrayScott",
    "ShallowWater",
    "LinearDragViscosity",
    "Lorenz63",
    "Lorenz96",
    "LotkaVolterra",
    "KuramotoSivashinsky",
    "DampedPendulum",
    "NavierStokes",
    "simulate",
    "warp",
]
