"""``simulate``: integrate a :class:`~uqdyn.physics.Dynamics` with torchdiffeq, safely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from uqdyn._checks import as_float
from uqdyn.physics.dynamics import _FIXED_STEP_METHODS, Dynamics, _first_bad_component

__all__ = ["simulate"]

# Relative slack when comparing a step with the stability limit (time grids built in float32).
_STEP_TOLERANCE = 1e-5
_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def _as_times(times: Any, like: Tensor) -> Tensor:
    if isinstance(times, Tensor):
        values = times.to(dtype=like.dtype, device=like.device)
    elif isinstance(times, Sequence) or hasattr(times, "__array__"):
        values = torch.as_tensor(times, dtype=like.dtype, device=like.device)
    else:
        raise TypeError(
            f"times must be a 1-d tensor or sequence of floats, got {type(times).__name__}"
        )
    if values.ndim != 1 or values.numel() < 1:
        raise ValueError(f"times must be a non-empty 1-d sequence, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"times must be finite, got {values.tolist()}")
    if values.numel() > 1 and not bool((values[1:] > values[:-1]).all()):
        raise ValueError(f"times must be strictly increasing, got {values.tolist()}")
    return values


def _check_initial_state(dynamics: nn.Module, state0: Any) -> Tensor:
    if isinstance(dynamics, Dynamics):
        return dynamics.check_state(state0, "state0")
    if not isinstance(state0, Tensor) or not state0.is_floating_point():
        raise TypeError(f"state0 must be a floating tensor, got {type(state0).__name__}")
    if state0.ndim < 2:
        raise ValueError(
            f"state0 must be batch-first (batch, ...), got shape {tuple(state0.shape)}"
        )
    if not bool(torch.isfinite(state0).all()):
        raise ValueError("state0 holds non-finite values; initial states must be finite")
    return state0


def _component_name(dynamics: nn.Module, index: int) -> str:
    describe = getattr(dynamics, "describe_component", None)
    return describe(index) if callable(describe) else f"state component {index}"


def simulate(
    dynamics: nn.Module,
    state0: Tensor,
    times: Tensor | Sequence[float],
    method: str = "rk4",
    *,
    step_size: float | None = None,
    adjoint: bool = False,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    check_stability: bool = True,
) -> Tensor:
    """Integrate ``d(state)/dt = dynamics(t, state)`` and return the states at ``times``.

    A thin layer over :func:`torchdiffeq.odeint` (or :func:`torchdiffeq.odeint_adjoint`,
    which back-propagates by solving the adjoint equation with constant memory). Before
    integrating it validates the inputs and, for fixed-step methods, compares the step with
    ``dynamics.stable_dt(method)``; afterwards it checks every output time for non-finite
    values (and calls ``dynamics.check_trajectory`` where defined, e.g. the positive layer
    depth of shallow water), raising a ``ValueError`` that names the first bad time and the
    state component instead of returning NaN fields. Gradients flow to the parameters of
    ``dynamics`` and to ``state0``.

    Parameters
    ----------
    dynamics : nn.Module
        ``forward(t, state) -> d(state)/dt``, usually a :class:`~uqdyn.physics.Dynamics`.
    state0 : Tensor, shape (batch, *state_shape)
        Initial states (finite).
    times : Tensor or sequence of float, shape (time,)
        Strictly increasing output times; ``times[0]`` is the time of ``state0``. Cast to the
        dtype and device of ``state0``.
    method : str
        A torchdiffeq method: fixed step ``"rk4"`` (default), ``"euler"``, ``"midpoint"``,
        ``"heun2"``, ``"heun3"``, ``"explicit_adams"``, ``"implicit_adams"``, or adaptive
        ``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``.
    step_size : float, optional
        Fixed step; default: the spacing of ``times`` (each interval one step). Ignored by
        adaptive methods.
    adjoint : bool
        Use the adjoint method for gradients. Default ``False``.
    rtol, atol : float
        Tolerances of adaptive methods.
    check_stability : bool
        Check the fixed step against ``stable_dt`` and the solution for non-finite values.
        Default ``True``.

    Returns
    -------
    Tensor, shape (batch, time, *state_shape)
        The states at ``times``, time right after batch.

    Raises
    ------
    ValueError
        For bad inputs, a fixed step above the stability limit, or a solution that becomes
        non-finite (naming the first such time and state component).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> pendulum = DampedPendulum(omega0=1.0, alpha=0.1)
    >>> trajectory = simulate(pendulum, torch.tensor([[1.0, 0.0]]), torch.linspace(0, 5, 51))
    >>> trajectory.shape
    torch.Size([1, 51, 2])
    """
    if not isinstance(dynamics, nn.Module):
        raise TypeError(
            f"dynamics must be an nn.Module with forward(t, state), got {type(dynamics).__name__}"
        )
    if method not in _FIXED_STEP_METHODS + _ADAPTIVE_METHODS:
        raise ValueError(
            f"method must be one of {_FIXED_STEP_METHODS + _ADAPTIVE_METHODS}, got {method!r}"
        )
    state0 = _check_initial_state(dynamics, state0)
    times = _as_times(times, state0)
    if times.numel() == 1:
        return state0.unsqueeze(1)
    rtol = as_float(rtol, "rtol", positive=True)
    atol = as_float(atol, "atol", positive=True)

    options: dict[str, Any] = {}
    if method in _FIXED_STEP_METHODS:
        if step_size is not None:
            step_size = as_float(step_size, "step_size", positive=True)
            options["step_size"] = step_size
            largest_step = step_size
        else:
            largest_step = float((times[1:] - times[:-1]).max())
        stable_dt = getattr(dynamics, "stable_dt", None)
        if check_stability and callable(stable_dt):
            limit = float(stable_dt(method))
            if largest_step > limit * (1.0 + _STEP_TOLERANCE):
                what = "step_size" if step_size is not None else "the largest spacing of times"
                raise ValueError(
                    f"{what} = {largest_step:.6g} exceeds the stability limit of "
                    f"{type(dynamics).__name__} for method {method!r}: the step must be in "
                    f"(0, {limit:.6g}] (CFL/diffusion limit); pass a smaller step_size"
                )

    integrator = odeint_adjoint if adjoint else odeint
    try:
        solution = integrator(
            dynamics, state0, times, rtol=rtol, atol=atol, method=method, options=options
        )
    except AssertionError as error:  # torchdiffeq signals step underflow / NaNs by assert
        raise ValueError(
            f"integration with {method!r} failed ({error}); the solution of "
            f"{type(dynamics).__name__} most likely became non-finite or stiff: "
            "reduce the time span or use a fixed-step method with a smaller step"
        ) from error

    trajectory = solution.movedim(0, 1)
    if check_stability:
        finite = torch.isfinite(trajectory.detach())
        per_time = finite.transpose(0, 1).reshape(times.numel(), -1).all(dim=1)
        check_trajectory = getattr(dynamics, "check_trajectory", None)
        if not bool(per_time.all()):
            index = int((~per_time).nonzero()[0, 0])
            if callable(check_trajectory) and index > 0:  # report an earlier violation first
                check_trajectory(trajectory[:, :index], times[:index])
            component = _component_name(dynamics, _first_bad_component(finite[:, index]))
            raise ValueError(
                f"the solution became non-finite at time {float(times[index]):.6g} "
                f"(time index {index}) in {component}; all values must stay finite: reduce "
                "the step size or check the parameters"
            )
        if callable(check_trajectory):
            check_trajectory(trajectory, times)
    return trajectory
