"""The :class:`Dynamics` interface shared by every physical system in :mod:`uqdyn.physics`.

A dynamics is an :class:`torch.nn.Module` whose ``forward(t, state)`` returns the time
derivative ``d(state)/dt`` with the shape of ``state``, so that :func:`torchdiffeq.odeint`
(and :func:`uqdyn.physics.simulate`) integrates it. States are batch-first: ``(batch, dim)``
for ODE systems and ``(batch, channels, height, width)`` for gridded systems.

Physical parameters are :class:`torch.nn.Parameter` s. Strictly positive ones are stored
through their logarithm (attribute ``raw_<name>``) and exposed by :class:`positive_parameter`,
so gradient descent can never make them non-positive. Each parameter is a scalar or has shape
``(batch,)``, in which case sample ``b`` of the state batch uses entry ``b``.

Parameters given as numbers are converted once, straight to the constructor's ``dtype``
(default: :func:`torch.get_default_dtype`), and the logarithm of a positive one is taken in
that dtype: ``Lorenz96(forcing=8.1, dtype=torch.float64).forcing`` is exactly ``8.1``.
Casting a module later (``.double()``) casts the values it holds, so a float32-built system
keeps its float32-rounded parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int, describe_type, is_real_scalar

__all__ = ["Dynamics", "positive_parameter"]

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
    """Read-only attribute ``exp(raw_<name>)``: a strictly positive physical parameter.

    Declare it in the class body of a :class:`Dynamics` as
    ``rate = positive_parameter("doc")`` and store the learnable logarithm in ``__init__``
    as ``self.raw_rate = self.log_parameter(rate, "rate", dtype=dtype)``. Reading
    ``module.rate`` returns ``module.raw_rate.exp()`` (shape () or (batch,)), so the value
    follows optimisation of ``raw_rate``, functional calls and ``.to(device)``, and can never
    become zero or negative. Assigning ``module.rate = ...`` is an error; change
    ``raw_rate`` instead.

    Parameters
    ----------
    doc : str
        Docstring of the attribute (what it is, its shape).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import Dynamics, positive_parameter
    >>> class Decay(Dynamics):
    ...     state_shape = (1,)
    ...     parameter_names = ("rate",)
    ...     rate = positive_parameter("Decay rate ``k > 0``, shape () or (batch,).")
    ...     def __init__(self, rate=1.0, *, dtype=None):
    ...         super().__init__()
    ...         self.raw_rate = self.log_parameter(rate, "rate", dtype=dtype)
    ...     def forward(self, t, state):
    ...         return -self.per_sample(self.rate, state) * state
    >>> system = Decay(0.5, dtype=torch.float64)
    >>> system.raw_rate  # the learnable log(k)
    Parameter containing:
    tensor(-0.6931, dtype=torch.float64, requires_grad=True)
    >>> float(system.rate.detach())
    0.5
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""
        self.raw = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.raw = f"raw_{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(instance, self.raw).exp()

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(
            f"{self.name} of {type(instance).__name__} is exp({self.raw}); assign "
            f"{self.raw} (the logarithm) instead, e.g. with log_parameter(value, {self.name!r})"
        )


class Dynamics(nn.Module):
    """Base class of a system ``d(state)/dt = forward(t, state)``.

    Subclasses implement :meth:`forward` and :meth:`initial_state` and set
    :attr:`state_shape` (the state shape without the batch dimension),
    :attr:`parameter_names` (the names of the physical parameters, readable as attributes)
    and :attr:`component_names` (one readable name per entry of the first state axis, used in
    error messages). :meth:`stable_dt` returns the largest stable fixed step; it is the
    stability hook that :func:`~uqdyn.physics.simulate` checks fixed steps against and that
    forecast operators take their substep from.

    Physical parameters are made with :meth:`physical_parameter` (unconstrained) and
    :meth:`log_parameter` (strictly positive, read through a :class:`positive_parameter`);
    :meth:`per_sample` broadcasts a parameter of shape () or (batch,) against the state.
    The guide "Write your own Dynamics" in the documentation walks through a complete system.

    Examples
    --------
    >>> import torch
    >>> class Decay(Dynamics):
    ...     state_shape = (1,)
    ...     parameter_names = ("rate",)
    ...     def __init__(self, rate=1.0, *, dtype=None):
    ...         super().__init__()
    ...         self.raw_rate = self.log_parameter(rate, "rate", dtype=dtype)
    ...     rate = positive_parameter("Decay rate, shape () or (batch,).")
    ...     def forward(self, t, state):
    ...         return -self.per_sample(self.rate, state) * state
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

    #: The rk4 step that resolves the system accurately, for systems whose stability limit is
    #: not known in advance (chaotic ones with a state-dependent Jacobian); ``inf`` if none.
    resolved_rk4_dt: float = math.inf

    def accurate_dt(self, method: str = "rk4") -> float:
        """Largest fixed step of ``method`` that also resolves the dynamics accurately.

        ``min(stable_dt(method), resolved_rk4_dt)`` for rk4, and a tenth of
        :attr:`resolved_rk4_dt` for the lower-order fixed-step methods. The forecast
        operators of :mod:`uqdyn.da` take their default substep from it.
        """
        resolved = self.resolved_rk4_dt
        if method not in ("rk4", "rk4_classic"):
            resolved = resolved / 10
        return min(self.stable_dt(method), resolved)

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
    def _as_tensor(value: Any, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """A parameter value as a detached tensor of shape () or (batch,).

        Numbers (Python, NumPy scalars, 0-d arrays), sequences of numbers and 1-d NumPy
        arrays become ``dtype`` (default: the default dtype) in one conversion from their
        exact value; tensors keep their floating dtype unless ``dtype`` is given.
        """
        if dtype is not None and (
            not isinstance(dtype, torch.dtype) or not dtype.is_floating_point
        ):
            raise TypeError(f"dtype={dtype!r}; expected a floating torch.dtype")
        target = dtype or torch.get_default_dtype()
        if isinstance(value, Tensor):
            if value.dtype == torch.bool or value.is_complex():
                raise TypeError(
                    f"{name} is a {describe_type(value)}; expected a real float or a tensor of "
                    "shape () or (batch,)"
                )
            tensor = value.detach().clone()
            if dtype is not None or not tensor.is_floating_point():
                tensor = tensor.to(target)
        elif is_real_scalar(value):
            tensor = torch.tensor(as_float(value, name, finite=False), dtype=target)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
            tensor = torch.from_numpy(value.astype(np.float64)).to(target)
        elif (
            isinstance(value, Sequence)
            and not isinstance(value, (str, bytes))
            and all(is_real_scalar(v) for v in value)
        ):
            tensor = torch.tensor([as_float(v, name, finite=False) for v in value], dtype=target)
        else:
            raise TypeError(
                f"{name}={value!r} is a {describe_type(value)}; expected a float or a tensor "
                "of shape () or (batch,)"
            )
        if tensor.ndim > 1:
            raise ValueError(
                f"{name} must be a scalar or have shape (batch,), got {tuple(tensor.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
        return tensor

    @classmethod
    def log_parameter(
        cls, value: Any, name: str, *, dtype: torch.dtype | None = None
    ) -> nn.Parameter:
        """A strictly positive parameter stored through its logarithm.

        Store the result as ``self.raw_<name>`` and declare
        ``<name> = positive_parameter(...)`` in the class body to read ``exp(raw_<name>)``.

        Parameters
        ----------
        value : float, NumPy scalar or array, sequence of floats, or Tensor of shape () or (batch,)
            The positive value(s).
        name : str
            Parameter name, for error messages.
        dtype : torch.dtype, optional
            Dtype of the parameter; numbers are converted straight to it and the logarithm is
            taken in it. Default: a tensor's own floating dtype, else the default dtype.

        Returns
        -------
        nn.Parameter, shape () or (batch,)
            ``log(value)``.

        Raises
        ------
        TypeError
            If ``value`` is not a number, sequence of numbers or real tensor.
        ValueError
            If it has more than one dimension, is not finite, or is not ``> 0``.
        """
        tensor = cls._as_tensor(value, name, dtype)
        if bool((tensor <= 0).any()):
            raise ValueError(f"{name} must be > 0, got {tensor.tolist()}")
        return nn.Parameter(tensor.log())

    @classmethod
    def physical_parameter(
        cls,
        value: Any,
        name: str,
        *,
        minimum: float | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Parameter:
        """An unconstrained parameter (optionally checked once against a lower bound).

        Parameters
        ----------
        value : float, NumPy scalar or array, sequence of floats, or Tensor of shape () or (batch,)
        name : str
            Parameter name, for error messages.
        minimum : float, optional
            Lower bound checked at construction only (optimisation may cross it).
        dtype : torch.dtype, optional
            Dtype of the parameter (see :meth:`log_parameter`).

        Returns
        -------
        nn.Parameter, shape () or (batch,)
        """
        tensor = cls._as_tensor(value, name, dtype)
        if minimum is not None and bool((tensor < minimum).any()):
            raise ValueError(f"{name} must be >= {minimum}, got {tensor.tolist()}")
        return nn.Parameter(tensor)

    @classmethod
    def _positive_parameter(
        cls, value: Any, name: str, dtype: torch.dtype | None = None
    ) -> nn.Parameter:
        """Alias of :meth:`log_parameter`."""
        return cls.log_parameter(value, name, dtype=dtype)

    @classmethod
    def _real_parameter(
        cls,
        value: Any,
        name: str,
        *,
        minimum: float | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Parameter:
        """Alias of :meth:`physical_parameter`."""
        return cls.physical_parameter(value, name, minimum=minimum, dtype=dtype)

    @staticmethod
    def per_sample(parameter: Tensor, state: Tensor) -> Tensor:
        """Cast ``parameter`` (shape () or (batch,)) to broadcast against ``state``.

        Parameters
        ----------
        parameter : Tensor, shape () or (batch,)
        state : Tensor, shape (batch, ...)

        Returns
        -------
        Tensor, shape () or (batch, 1, ..., 1)
            On the device and in the dtype of ``state``.
        """
        parameter = parameter.to(dtype=state.dtype, device=state.device)
        if parameter.ndim == 0:
            return parameter
        if parameter.shape[0] not in (1, state.shape[0]):
            raise ValueError(
                f"a per-sample parameter of shape {tuple(parameter.shape)} does not match the "
                f"state batch of {state.shape[0]} (state shape {tuple(state.shape)})"
            )
        return parameter.reshape(parameter.shape[0], *([1] * (state.ndim - 1)))

    _per_sample = per_sample

    @staticmethod
    def _max_abs(parameter: Tensor) -> float:
        return float(parameter.detach().abs().max())

    @staticmethod
    def _check_batch(batch: Any) -> int:
        return as_int(batch, "batch", minimum=1)

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
        if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
            raise ValueError(f"size must be (height, width) with ints >= 3, got {size!r}")
        height, width = (as_int(s, f"size[{i}]", minimum=3) for i, s in enumerate(size))
        if is_real_scalar(length):
            lengths = (as_float(length, "length"),) * 2
        elif isinstance(length, Sequence) and not isinstance(length, str) and len(length) == 2:
            lengths = (as_float(length[0], "length"), as_float(length[1], "length"))
        else:
            raise ValueError(f"length must be a float or (length_y, length_x), got {length!r}")
        if not all(v > 0 for v in lengths):
            raise ValueError(f"length must be positive and finite, got {length!r}")
        self.size = (height, width)
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
