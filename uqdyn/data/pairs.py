"""One-step training pairs ``(x(t), x(t + dt))`` from simulated trajectories.

:func:`lorenz96_pairs` makes the data a learned Lorenz-96 tendency model is trained on
(:mod:`uqdyn.models.surrogate`): trajectories spun up onto the attractor, then advanced by
classical RK4 steps, cut into consecutive pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn._rk4 import rk4_classic
from uqdyn.physics import Lorenz96, simulate

__all__ = ["lorenz96_pairs", "check_pairs"]

# Step of the spin-up integration (RK4 through uqdyn.physics.simulate).
_SPINUP_STEP = 0.01


def _positive_int(value: object, name: str) -> int:
    return as_int(value, name, minimum=1)


def _positive_float(value: object, name: str) -> float:
    return as_float(value, name, positive=True)


def check_pairs(pairs: object, name: str = "pairs") -> tuple[Tensor, Tensor]:
    """Validate one-step pairs: two equal-shape finite ``(samples, dim)`` tensors.

    Parameters
    ----------
    pairs : (Tensor, Tensor)
        ``(x0, x1)``, each of shape ``(samples, dim)``.
    name : str
        The argument name used in error messages.

    Returns
    -------
    (Tensor, Tensor)
        ``pairs`` unchanged.

    Raises
    ------
    TypeError
        If ``pairs`` is not a pair of tensors.
    ValueError
        For mismatched or non-2-d shapes, no samples, or non-finite values.
    """
    if (
        not isinstance(pairs, (tuple, list))
        or len(pairs) != 2
        or not all(isinstance(p, Tensor) for p in pairs)
    ):
        raise TypeError(
            f"{name} is a {type(pairs).__name__}; expected a pair of tensors (x0, x1), each "
            "(samples, dim)"
        )
    x0, x1 = pairs
    if x0.ndim != 2 or x0.shape != x1.shape or x0.shape[0] < 1:
        raise ValueError(
            f"{name} has shapes {tuple(x0.shape)} and {tuple(x1.shape)}; expected two equal "
            "(samples, dim) tensors"
        )
    if not (bool(torch.isfinite(x0).all()) and bool(torch.isfinite(x1).all())):
        raise ValueError(f"{name} holds non-finite values; expected finite states")
    return x0, x1


def lorenz96_pairs(
    n_trajectories: int,
    n_steps: int,
    dt: float = 0.05,
    *,
    dim: int = 40,
    forcing: float = 8.0,
    spinup: float = 10.0,
    substeps: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One-step pairs ``(x(t), x(t + dt))`` from simulated Lorenz-96 trajectories (float64).

    Each trajectory starts from :meth:`~uqdyn.physics.Lorenz96.initial_state`, is spun up
    for ``spinup`` time units onto the attractor (:func:`uqdyn.physics.simulate`, RK4 steps
    of 0.01), then advanced ``n_steps`` times by ``substeps`` classical RK4 steps over ``dt``
    (:func:`uqdyn.da.rk4_classic`). The default ``substeps=1`` gives the discrete model of
    DAPPER's Lorenz-96 benchmarks (one classical RK4 step of ``dt``), i.e. the truth of the
    twin experiment a surrogate is meant to replace; more substeps approach the flow.

    Parameters
    ----------
    n_trajectories, n_steps : int
        Number of trajectories and of pairs per trajectory (>= 1).
    dt : float
        Time between the two states of a pair.
    dim, forcing : int, float
        Size and forcing ``F`` of the Lorenz-96 ring.
    spinup : float
        Time units integrated before the first pair (>= 0).
    substeps : int
        Classical RK4 steps per ``dt``.
    generator : torch.Generator, optional
        Source of the initial states.

    Returns
    -------
    (x0, x1) : Tensor, Tensor, each shape (n_trajectories * n_steps, dim), float64
        Consecutive pairs, trajectory by trajectory (pair ``k + 1`` of a trajectory starts
        where pair ``k`` ends).

    Raises
    ------
    ValueError
        For a bad count, step or spin-up, or trajectories that become non-finite.
    """
    n_trajectories = _positive_int(n_trajectories, "n_trajectories")
    n_steps = _positive_int(n_steps, "n_steps")
    substeps = _positive_int(substeps, "substeps")
    dt = _positive_float(dt, "dt")
    spinup = as_float(spinup, "spinup", nonnegative=True)
    system = Lorenz96(dim, forcing=forcing).double()
    state = system.initial_state(n_trajectories, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        if spinup > 0:
            n_spin = max(1, round(spinup / _SPINUP_STEP))
            times = torch.linspace(0.0, n_spin * _SPINUP_STEP, n_spin + 1, dtype=torch.float64)
            state = simulate(system, state, times)[:, -1]
        states = [state]
        for k in range(n_steps):
            states.append(rk4_classic(system, states[-1], k * dt, dt, substeps))
        trajectory = torch.stack(states, dim=1)
    if not bool(torch.isfinite(trajectory).all()):
        raise ValueError(
            f"the Lorenz-96 trajectories became non-finite with dt={dt} and substeps="
            f"{substeps}; expected a smaller dt or more substeps"
        )
    return trajectory[:, :-1].reshape(-1, dim), trajectory[:, 1:].reshape(-1, dim)
