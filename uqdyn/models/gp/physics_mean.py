"""A gpytorch mean function given by a simulated physical model (the "physics + data" GP)."""

from __future__ import annotations

from collections.abc import Sequence

import gpytorch
import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.physics import simulate

from ._common import _check_finite, _check_tensor

__all__ = ["PhysicsMean"]

_FIXED_STEP = ("rk4", "euler", "midpoint", "heun3")
_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


class PhysicsMean(gpytorch.means.Mean):
    r"""Mean function :math:`m(t) = C\, s(t)` from a simulated ODE :math:`\dot s = F_\theta(t, s)`.

    The trajectory :math:`s(t)` of a :class:`uqdyn.physics.Dynamics` (e.g.
    :class:`~uqdyn.physics.DampedPendulum`) from the initial state ``state0`` at time ``t0`` is
    integrated with :func:`uqdyn.physics.simulate` at the distinct input times and the chosen
    state ``components`` are returned. The physical parameters :math:`\theta` of ``dynamics``
    and (optionally) ``state0`` are learnable, so a GP with this mean fits them jointly with
    its kernel hyperparameters: the GP then models the residual of the physics, and a
    mis-specified solver is corrected by the data where there are data and trusted elsewhere.

    Parameters
    ----------
    dynamics : nn.Module
        ``forward(t, state (batch, state_dim)) -> (batch, state_dim)``; its parameters are
        learned.
    state0 : Tensor, shape (state_dim,)
        Initial state at ``t0``.
    t0 : float
        Time of ``state0``; inputs must not precede it.
    components : sequence of int
        State components returned, ``k`` of them (default ``(0,)``).
    learn_state0 : bool
        Make ``state0`` a learnable parameter.
    time_index : int
        Column of the inputs holding time (default 0).
    task_last : bool
        Output layout for ``k > 1``: ``False`` gives ``(k, N)`` (for :class:`ExactGP` with
        ``y_dim = k`` independent outputs), ``True`` gives ``(N, k)`` (for
        :class:`MultitaskGP`).
    method : str
        torchdiffeq method passed to :func:`~uqdyn.physics.simulate`: fixed-step ``"rk4"``
        (default), ``"euler"``, ``"midpoint"``, ``"heun3"``, or adaptive ``"dopri5"``, ...
    max_step : float, optional
        Fixed-step methods: each interval between input times is split into equal steps of
        at most ``max_step`` (default a tenth of ``dynamics.stable_dt("rk4")``).
    rtol, atol : float
        Tolerances of adaptive methods.

    Shapes
    ------
    Called on inputs ``x (*batch, N, x_dim)`` it returns ``(*batch, N)`` for one component,
    ``(*batch, k, N)`` or ``(*batch, N, k)`` for ``k`` components.

    References
    ----------
    Y. Yin, V. Le Guen, J. Dona et al., "Augmenting physical models with deep networks for
    complex dynamics forecasting", ICLR 2021 (physics + data decomposition). C. E. Rasmussen
    and C. K. I. Williams, *Gaussian Processes for Machine Learning*, 2006, sec. 2.7 (explicit
    basis/mean functions).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum
    >>> from uqdyn.models.gp import ExactGP, PhysicsMean
    >>> mean = PhysicsMean(DampedPendulum(omega0=1.0, alpha=0.1, linear=True),
    ...                    torch.tensor([0.5, 0.0]))
    >>> mean(torch.linspace(0, 5, 11).unsqueeze(-1)).shape
    torch.Size([11])
    >>> gp = ExactGP(x_dim=1, mean=mean)  # physics + GP residual
    """

    def __init__(
        self,
        dynamics: nn.Module,
        state0: Tensor,
        *,
        t0: float = 0.0,
        components: Sequence[int] = (0,),
        learn_state0: bool = True,
        time_index: int = 0,
        task_last: bool = False,
        method: str = "rk4",
        max_step: float | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
    ) -> None:
        super().__init__()
        if not isinstance(dynamics, nn.Module):
            raise TypeError(f"dynamics is a {type(dynamics).__name__}; expected an nn.Module")
        state0 = _check_tensor(state0, "state0")
        if state0.dim() != 1 or state0.shape[0] < 1:
            raise ValueError(f"state0 has shape {tuple(state0.shape)}; expected (state_dim,)")
        _check_finite(state0, "state0")
        comps = tuple(as_int(c, f"components[{i}]") for i, c in enumerate(components))
        if not comps or any(not 0 <= c < state0.shape[0] for c in comps):
            raise ValueError(
                f"components={components!r}; expected indices in [0, {state0.shape[0]})"
            )
        self.dynamics = dynamics
        self.state0 = nn.Parameter(state0.clone(), requires_grad=bool(learn_state0))
        self.t0 = as_float(t0, "t0")
        self.components = comps
        self.time_index = as_int(time_index, "time_index")
        self.task_last = bool(task_last)
        if method not in _FIXED_STEP and method not in _ADAPTIVE:
            raise ValueError(
                f"method={method!r}; expected one of {', '.join(_FIXED_STEP + _ADAPTIVE)}"
            )
        if max_step is None and method in _FIXED_STEP:
            stable = getattr(dynamics, "stable_dt", None)
            if stable is None:
                raise ValueError(
                    f"max_step is None and {type(dynamics).__name__} has no stable_dt; pass "
                    "max_step for the fixed-step method or an adaptive method such as 'dopri5'"
                )
            max_step = float(stable("rk4")) / 10.0
        if max_step is not None:
            max_step = as_float(max_step, "max_step", positive=True, finite=False)
        self.method = method
        self.max_step = max_step
        self.rtol = rtol
        self.atol = atol

    def trajectory(self, times: Tensor) -> Tensor:
        """Simulated states at ``times (T,)`` (any order, repeats allowed), shape ``(T, state_dim)``."""
        flat = times.reshape(-1)
        uniq, inverse = torch.unique(flat.detach(), sorted=True, return_inverse=True)
        if float(uniq[0]) < self.t0:
            raise ValueError(
                f"input time {float(uniq[0])} precedes t0={self.t0}; expected times >= t0"
            )
        prepend = float(uniq[0]) > self.t0
        grid = torch.cat([uniq.new_tensor([self.t0]), uniq]) if prepend else uniq
        # fixed-step methods: refine every interval to steps of at most max_step
        index = torch.arange(grid.shape[0], device=grid.device)
        if self.method in _FIXED_STEP and grid.shape[0] > 1 and self.max_step is not None:
            pieces = torch.ceil(grid.diff() / self.max_step).clamp_min(1).long()
            frac = torch.cat(
                [
                    torch.arange(int(p), dtype=grid.dtype, device=grid.device) / p
                    for p in pieces.tolist()
                ]
            )
            left = torch.repeat_interleave(grid[:-1], pieces)
            width = torch.repeat_interleave(grid.diff(), pieces)
            fine = torch.cat([left + frac * width, grid[-1:]])
            index = torch.cat([pieces.new_zeros(1), pieces.cumsum(0)])
            grid = fine
        state0 = self.state0.to(device=times.device, dtype=times.dtype).unsqueeze(0)
        if grid.shape[0] == 1:
            states = state0
        else:
            states = simulate(
                self.dynamics, state0, grid, self.method, rtol=self.rtol, atol=self.atol
            )[0]
        states = states[index]
        if prepend:
            states = states[1:]
        return states[inverse]

    def forward(self, x: Tensor) -> Tensor:
        """Mean at inputs ``x (*batch, N, x_dim)``; see the class docstring for the shape."""
        times = x[..., self.time_index]
        states = self.trajectory(times).reshape(*times.shape, -1)
        values = states[..., list(self.components)]
        if len(self.components) == 1:
            return values[..., 0]
        return values if self.task_last else values.movedim(-1, -2)
