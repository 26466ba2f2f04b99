"""The :class:`Dynamics` interface shared by every physical system in :mod:`uqdyn.physics`.

A dynamics is an :class:`torch.nn.Module` whose ``forward(t, state)`` returns the time
derivative ``d(state)/dt`` with the shape of ``state``, so that :func:`torchdiffeq.odeint`
(and :func:`uqdyn.physics.simulate`) integrates it. States are batch-first: ``(batch, dim)``
for ODE systems and ``(batch, channels, height, width)`` for gridded systems.

Physical parameters are :class:`torch.nn.Parameter` s. Strictly positive ones are stored
through their logarithm (attribute ``raw_<name>``) and exposed as properties, so gradient
descent can never make them non-positive. Each parameter is a scalar or has shape
``(batch,)``, in which case sample ``b`` of the state batch uses entry ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Dynamics"]

_FIXED_STEP_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
)
# Methods whose step is checked against a stability limit (the Adams methods are not).
_CHECKED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")

# Largest radius r such that the closed left half-disc {|z| <= r, Re z <= 0} lies inside the
# stability region of the classical Runge-Kutta method (the region reaches 2.83 on the
# imaginary axis and 2.785 on the real axis; the half-disc of radius 2.6 fits inside).
_RK4_HALF_DISC = 2.6


class positive_parameter:  # noqa: N801 - used like ``property``
    """Read-only attribute ``exp(raw_<name>)`` of a parameter stored through its logarithm.

    Declared in a class body as ``diffusion = positive_parameter("doc")``; reading
    ``module.diffusion`` returns ``module.raw_diffusion.exp()`` (shape () or (batch,)), so the
    value follows functional calls and optimisation of ``raw_diffusion``.
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.raw = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.raw = f"raw_{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(instance, self.raw).exp()


class Dynamics(nn.Module):
    """Base class of a system ``d(state)/dt = forward(t, state)``.

    Subclasses implement :meth:`forward` and :meth:`initial_state` and set
    :attr:`state_shape` (the state shape without the batch dimension),
    :attr:`parameter_names` (the names of the physical parameters, readable as attributes)
    and :attr:`component_names` (one readable name per entry of the first state axis, used in
    error messages). :meth:`stable_dt` returns the largest stable fixed step.

    Examples
    --------
    >>> import torch
    >>> class Decay(Dynamics):
    ...     state_shape = (1,)
    ...     parameter_names = ("rate",)
    ...     def __init__(self, rate=1.0):
    ...         super().__init__()
    ...         self.raw_rate = self._positive_parameter(rate, "rate")
    ...     rate = positive_parameter("Decay rate, shape () or (batch,).")
    ...     def forward(self, t, state):
    ...         return -self._per_sample(self.rate, state) * state
    >>> Decay(2.0)(torch.tensor(0.0), torch.ones(3, 1)).shape
    torch.Size([3, 1])
    """

    state_shape: tuple[int, ...] = ()
    parameter_names: tuple[str, ...] = ()
    component_names: tuple[str, ...] = ()

    def forward(self, t: Tensor, state: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Time derivative of ``state`` (same shape) at time ``t`` (a scalar tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(t, state)")

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:  # pragma: no cover - abstract
        """Random initial states of shape ``(batch, *state_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement initial_state")

    def stable_dt(self, method: str = "rk4") -> float:
        """Largest stable fixed step of ``method``; ``inf`` where no limit is known."""
        return math.inf

    # ------------------------------------------------------------------ validation helpers
    def check_state(self, state: Any, name: str = "state") -> Tensor:
        """Validate a state tensor of shape ``(batch, *state_shape)`` and return it.

        Raises
        ------
        TypeError
            If ``state`` is not a floating-point tensor.
        ValueError
            If its shape does not end with :attr:`state_shape`, or it holds non-finite
            values (the first offending component is named).
        """
        if not isinstance(state, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(state).__name__}")
        if not state.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {state.dtype}")
        expected = tuple(self.state_shape)
        if not expected:  # a subclass that does not declare its state shape: batch-first only
            if state.ndim < 1:
                raise ValueError(f"{name} must be batch-first (batch, ...), got a 0-d tensor")
        elif state.ndim != len(expected) + 1 or tuple(state.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, expected))}) for "
                f"{type(self).__name__}, got {tuple(state.shape)}"
            )
        finite = torch.isfinite(state)
        if not bool(finite.all()):
            component = self.describe_component(_first_bad_component(finite))
            raise ValueError(
                f"{name} holds non-finite values in {component}; initial states must be finite"
            )
        return state

    def check_trajectory(self, trajectory: Tensor, times: Tensor) -> None:
        """Physical checks of a solution (batch, time, *state_shape); raise ``ValueError``.

        Called by :func:`uqdyn.physics.simulate` after the finiteness check. The base class
        checks nothing; :class:`~uqdyn.physics.ShallowWater` requires a positive depth.
        """

    def describe_component(self, index: int) -> str:
        """Readable name of entry ``index`` along the first state axis (for error messages)."""
        if index < len(self.component_names):
            return self.component_names[index]
        return f"state component {index}"

    # ------------------------------------------------------------------ parameter helpers
    @staticmethod
    def _as_tensor(value: Any, name: str) -> Tensor:
        if isinstance(value, Tensor):
            tensor = value.detach().clone()
            if not tensor.is_floating_point():
                tensor = tensor.to(torch.get_default_dtype())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            tensor = torch.tensor(float(value), dtype=torch.get_default_dtype())
        elif (
            isinstance(value, Sequence)
            and not isinstance(value, (str, bytes))
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            tensor = torch.tensor([float(v) for v in value], dtype=torch.get_default_dtype())
        else:
            raise TypeError(
                f"{name} must be a float or a tensor of shape () or (batch,), "
                f"got {type(value).__name__}"
            )
        if tensor.ndim > 1:
            raise ValueError(
                f"{name} must be a scalar or have shape (batch,), got {tuple(tensor.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
        return tensor

    @classmethod
    def _positive_parameter(cls, value: Any, name: str) -> nn.Parameter:
        """Store a strictly positive parameter through its logarithm."""
        tensor = cls._as_tensor(value, name)
        if bool((tensor <= 0).any()):
            raise ValueError(f"{name} must be > 0, got {tensor.tolist()}")
        return nn.Parameter(tensor.log())

    @classmethod
    def _real_parameter(
        cls, value: Any, name: str, *, minimum: float | None = None
    ) -> nn.Parameter:
        """Store an unconstrained parameter (optionally checked against a lower bound once)."""
        tensor = cls._as_tensor(value, name)
        if minimum is not None and bool((tensor < minimum).any()):
            raise ValueError(f"{name} must be >= {minimum}, got {tensor.tolist()}")
        return nn.Parameter(tensor)

    @staticmethod
    def _per_sample(parameter: Tensor, state: Tensor) -> Tensor:
        """Cast ``parameter`` (shape () or (batch,)) to broadcast against ``state``."""
        parameter = parameter.to(dtype=state.dtype, device=state.device)
        if parameter.ndim == 0:
            return parameter
        if parameter.shape[0] not in (1, state.shape[0]):
            raise ValueError(
                f"a per-sample parameter of shape {tuple(parameter.shape)} does not match the "
                f"state batch of {state.shape[0]} (state shape {tuple(state.shape)})"
            )
        return parameter.reshape(parameter.shape[0], *([1] * (state.ndim - 1)))

    @staticmethod
    def _max_abs(parameter: Tensor) -> float:
        return float(parameter.detach().abs().max())

    @staticmethod
    def _check_batch(batch: Any) -> int:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        return batch

    def extra_repr(self) -> str:
        parts = []
        for name in self.parameter_names:
            value = getattr(self, name).detach()
            text = f"{value.item():.4g}" if value.numel() == 1 else f"shape {tuple(value.shape)}"
            parts.append(f"{name}={text}")
        return ", ".join(parts)


class _GridDynamics(Dynamics):
    """A system on a doubly periodic ``height x width`` grid of a ``Ly x Lx`` domain."""

    def _setup_grid(self, size: Any, length: Any) -> None:
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 3 for s in size)
        ):
            raise ValueError(f"size must be (height, width) with ints >= 3, got {size!r}")
        if isinstance(length, (int, float)) and not isinstance(length, bool):
            lengths = (float(length), float(length))
        elif isinstance(length, Sequence) and len(length) == 2:
            lengths = (float(length[0]), float(length[1]))
        else:
            raise ValueError(f"length must be a float or (length_y, length_x), got {length!r}")
        if not all(math.isfinite(v) and v > 0 for v in lengths):
            raise ValueError(f"length must be positive and finite, got {length!r}")
        self.size = (int(size[0]), int(size[1]))
        self.length = lengths
        self.spacing = (lengths[0] / self.size[0], lengths[1] / self.size[1])

    def coordinates(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cell-centre coordinates ``(y (height,), x (width,))``: ``y_i = i dy``, ``x_j = j dx``."""
        dtype = dtype or torch.get_default_dtype()
        y = torch.arange(self.size[0], device=device, dtype=dtype) * self.spacing[0]
        x = torch.arange(self.size[1], device=device, dtype=dtype) * self.spacing[1]
        return y, x


def _uniform(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> Tensor:
    """Uniform ``[0, 1)`` samples of ``shape``."""
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def _first_bad_component(finite: Tensor) -> int:
    """Index along axis 1 of the first entry that is not finite (``finite`` is (batch, ...))."""
    if finite.ndim < 2:
        return 0
    per_component = finite.transpose(0, 1).reshape(finite.shape[1], -1).all(dim=1)
    return int((~per_component).nonzero()[0, 0])


def _stable_step_from_spectrum(method: str, decay: float, oscillation: float) -> float:
    """Largest stable step for eigenvalues inside ``{-decay <= Re <= 0, |Im| <= oscillation}``.

    For rk4 the spectrum must fit in the left half-disc of radius 2.6 (sufficient). For the
    other explicit methods we require the whole box inside the disc ``|1 + z| <= 1``
    (the forward-Euler region, contained in the regions of the 2nd- and 3rd-order methods),
    which allows purely oscillatory spectra only through damping:
    ``dt <= 2 a / (a^2 + b^2)`` evaluated at the worst corner.
    """
    if method not in _CHECKED_METHODS:
        return math.inf
    if method == "rk4":
        radius = math.hypot(decay, oscillation)
        return math.inf if radius == 0 else _RK4_HALF_DISC / radius
    if oscillation == 0.0:
        return math.inf if decay == 0 else 2.0 / decay
    if decay == 0.0:
        return 0.0
    return 2.0 * decay / (decay**2 + oscillation**2)
