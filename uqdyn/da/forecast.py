"""``ForecastOperator``: a uqdyn model as the forecast step of an ensemble filter."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn._device import resolve_device
from uqdyn._rk4 import rk4_classic
from uqdyn.physics.dynamics import _FIXED_STEP_METHODS
from uqdyn.physics.integrate import _ADAPTIVE_METHODS, simulate
from uqdyn.predictive import Predictive

__all__ = ["DEFAULT_MAX_STEP", "ForecastOperator", "ModelError", "rk4_classic"]

#: ``model_error(state, forecast, dt) -> Predictive`` of the additive error over one step.
ModelError = Callable[[Tensor, Tensor, float], Predictive]

# Relative slack when comparing a step with a limit (times given in decimal floats).
_STEP_TOLERANCE = 1e-9
# Most solver steps one call may take before we call the time step unreasonable.
_MAX_SUBSTEPS = 100_000
#: Largest fixed solver step used for a dynamics that declares no step limit
#: (``stable_dt`` missing or ``inf``) when neither ``substeps`` nor ``max_step`` is given.
#: RK4 with steps of 0.01 integrates Lorenz-96 (F = 8) over 0.5 time units to within
#: 2e-5 of a tight-tolerance reference; systems with faster time scales need their own
#: ``stable_dt`` or an explicit ``max_step``.
DEFAULT_MAX_STEP = 0.01


def _positive_float(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    return as_float(value, name, positive=True)


def _positive(value: Any, name: str) -> float:
    """``value`` as a positive finite float, or a TypeError/ValueError naming ``name``."""
    checked = _positive_float(value, name)
    assert checked is not None
    return checked


def _infer_state_dim(dynamics: nn.Module, state_dim: int | None) -> int:
    declared = getattr(dynamics, "state_shape", None)
    if state_dim is None:
        if isinstance(declared, tuple) and len(declared) == 1:
            return int(declared[0])
        raise ValueError(
            f"state_dim=None but {type(dynamics).__name__} declares state_shape={declared!r}; "
            "expected a dynamics with a 1-d state_shape or an explicit state_dim"
        )
    state_dim = as_int(state_dim, "state_dim", minimum=1)
    if isinstance(declared, tuple) and len(declared) >= 1 and math.prod(declared) != state_dim:
        raise ValueError(
            f"state_dim={state_dim} does not match state_shape={declared} of "
            f"{type(dynamics).__name__}; expected state_dim = {math.prod(declared)}"
        )
    return state_dim


class ForecastOperator:
    """A uqdyn model as the forecast step ``E -> M(E)`` of an ensemble data-assimilation code.

    Wraps any dynamics ``forward(t, state) -> d(state)/dt`` (a physics solver, a hybrid
    model, a neural ODE or a learned surrogate) as :meth:`step` on numpy ensembles: numpy in
    and out (float64), torch inside on ``device``. Each call integrates every member from
    ``t`` to ``t + dt`` with ``substeps`` fixed solver steps and, for a stochastic forecast,
    adds one draw per member from the Predictive returned by ``model_error``.

    The state of the dynamics is flattened: a dynamics with ``state_shape`` (e.g. ``(C, H,
    W)``) is stepped on ``E.reshape(N, *state_shape)`` and returned as ``(N, Nx)`` with
    ``Nx = prod(state_shape)``, the vector layout of DA codes.

    Parameters
    ----------
    dynamics : nn.Module
        ``forward(t, state)`` returning the time derivative of ``state (batch, *state_shape)``.
        A deep copy is moved to ``device`` and ``dtype`` and put in eval mode; the caller's
        module is not changed.
    state_dim : int, optional
        ``Nx``; default ``prod(dynamics.state_shape)`` for a dynamics with a 1-d
        ``state_shape``.
    method : str
        ``"rk4"`` (torchdiffeq's 3/8-rule RK4 through :func:`uqdyn.physics.simulate`, default),
        ``"rk4_classic"`` (:func:`rk4_classic`, DAPPER's scheme), another fixed-step
        torchdiffeq method, or an adaptive one (``"dopri5"``, ...; ``rtol``/``atol`` apply).
    substeps : int, optional
        Fixed number of solver steps per call (checked against the stability limit).
        Default: the fewest equal steps no longer than the *step limit*:

        * ``min(max_step, dynamics.stable_dt(method))`` when ``max_step`` is given;
        * else ``min(dynamics.stable_dt(method), dynamics.accurate_dt(method))`` when the
          dynamics declares a finite one: its stability limit (e.g. the CFL-type limit of a
          gridded solver) or the step that resolves it accurately (Lorenz-63 and Lorenz-96:
          0.01 with rk4, about 1e-5 relative error against a converged integration);
        * else :data:`DEFAULT_MAX_STEP` (0.01 time units), with a ``UserWarning`` once, at
          construction, saying so: a dynamics without a declared limit is never stepped
          over a whole ``dt`` in one unresolved step.

        Adaptive methods choose their own steps (``rtol``, ``atol``).
    max_step : float, optional
        Largest solver step (used when ``substeps`` is not given); must not exceed the
        stability limit.
    model_error : callable or "dynamics", optional
        ``model_error(state (N, *state_shape), forecast (N, *state_shape), dt) -> Predictive``
        with ``batch_shape == (N, *state_shape)``: the distribution of the additive model
        error over one call (its mean is a bias correction). ``"dynamics"`` uses
        ``dynamics.model_error``. ``None`` (default): a deterministic forecast. An
        ``nn.Module`` is copied to ``device`` and ``dtype`` like ``dynamics``.
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU; default), ``"cpu"`` or ``"cuda[:N]"``.
    dtype : torch.dtype
        Floating dtype of the torch computation; default ``torch.float64`` (DA codes are
        float64).
    seed : int, optional
        Seed of the generator of model-error draws (on ``device``); default: non-reproducible.
    rtol, atol : float
        Tolerances of adaptive methods.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it. :meth:`step` raises ``ValueError`` for an ensemble
        with the wrong state size or non-finite members, a time step the solver cannot take,
        and a forecast that becomes non-finite; it never returns NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from uqdyn.physics import Lorenz96
    >>> from uqdyn.da import ForecastOperator
    >>> op = ForecastOperator(Lorenz96(40), device="cpu")
    >>> E = 8.0 + np.random.default_rng(0).standard_normal((24, 40))
    >>> op.step(E, 0.0, 0.05).shape, op.step(E[0], 0.0, 0.05).shape
    ((24, 40), (40,))
    """

    def __init__(
        self,
        dynamics: nn.Module,
        *,
        state_dim: int | None = None,
        method: str = "rk4",
        substeps: int | None = None,
        max_step: float | None = None,
        model_error: ModelError | str | None = None,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        rtol: float = 1e-7,
        atol: float = 1e-9,
    ) -> None:
        if not isinstance(dynamics, nn.Module):
            raise TypeError(
                f"dynamics is a {type(dynamics).__name__}; expected an nn.Module with "
                "forward(t, state) -> d(state)/dt"
            )
        methods = ("rk4_classic", *_FIXED_STEP_METHODS, *_ADAPTIVE_METHODS)
        if method not in methods:
            raise ValueError(f"method={method!r}; expected one of {methods}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype={dtype!r}; expected a floating torch.dtype")
        if substeps is not None:
            substeps = as_int(substeps, "substeps", minimum=1)
        if seed is not None:
            seed = as_int(seed, "seed")
        self.state_dim = _infer_state_dim(dynamics, state_dim)
        declared = getattr(dynamics, "state_shape", None)
        self.state_shape: tuple[int, ...] = (
            tuple(declared)
            if isinstance(declared, tuple) and len(declared) >= 1
            else (self.state_dim,)
        )
        self.method = method
        self.substeps = substeps
        self.max_step = _positive_float(max_step, "max_step", optional=True)
        self.rtol = _positive(rtol, "rtol")
        self.atol = _positive(atol, "atol")
        self.device = resolve_device(device)
        self.dtype = dtype

        self.dynamics = copy.deepcopy(dynamics).to(device=self.device, dtype=dtype).eval()
        stable_dt = getattr(self.dynamics, "stable_dt", None)
        solver = "rk4" if method == "rk4_classic" else method
        self.stable_step = float(stable_dt(solver)) if callable(stable_dt) else math.inf
        if not self.stable_step > 0:
            raise ValueError(
                f"{type(dynamics).__name__}.stable_dt({solver!r}) = {self.stable_step}; the "
                f"method {method!r} cannot integrate it, expected another method"
            )
        if self.max_step is not None and self.max_step > self.stable_step * (1 + _STEP_TOLERANCE):
            raise ValueError(
                f"max_step={self.max_step:.6g} exceeds the stability limit "
                f"{self.stable_step:.6g} of {type(dynamics).__name__} for method {method!r}; "
                f"expected max_step <= {self.stable_step:.6g}"
            )
        accurate_dt = getattr(self.dynamics, "accurate_dt", None)
        accurate = float(accurate_dt(solver)) if callable(accurate_dt) else self.stable_step
        #: The largest solver step of a call when ``substeps`` is not given (see above).
        self.step_limit = min(self.stable_step, self.max_step or accurate)
        if math.isinf(self.step_limit) and substeps is None and method not in _ADAPTIVE_METHODS:
            self.step_limit = DEFAULT_MAX_STEP
            warnings.warn(
                f"{type(dynamics).__name__} declares no step limit (stable_dt({solver!r}) is "
                f"{'missing' if not callable(stable_dt) else 'inf'}); ForecastOperator "
                f"integrates each call with {method!r} steps of at most {DEFAULT_MAX_STEP} "
                "time units. Pass max_step= or substeps= to choose the step, or give the "
                "dynamics a stable_dt(method) method",
                UserWarning,
                stacklevel=2,
            )

        self.model_error: ModelError | None
        if model_error is None:
            self.model_error = None
        elif isinstance(model_error, str):
            if model_error != "dynamics":
                raise ValueError(
                    f"model_error={model_error!r}; expected None, 'dynamics' or a callable "
                    "(state, forecast, dt) -> Predictive"
                )
            if not callable(getattr(self.dynamics, "model_error", None)):
                raise ValueError(
                    f"model_error='dynamics' but {type(dynamics).__name__} has no method "
                    "model_error(state, forecast, dt) -> Predictive"
                )
            self.model_error = cast(ModelError, self.dynamics.model_error)
        elif isinstance(model_error, nn.Module):
            module = copy.deepcopy(model_error).to(device=self.device, dtype=dtype).eval()
            self.model_error = module
        elif callable(model_error):
            self.model_error = model_error
        else:
            raise TypeError(
                f"model_error is a {type(model_error).__name__}; expected None, 'dynamics' or "
                "a callable (state, forecast, dt) -> Predictive"
            )
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()

    # ------------------------------------------------------------------ properties
    @property
    def stochastic(self) -> bool:
        """Whether :meth:`step` adds model-error draws."""
        return self.model_error is not None

    def __repr__(self) -> str:
        return (
            f"ForecastOperator({type(self.dynamics).__name__}, state_dim={self.state_dim}, "
            f"method={self.method!r}, stochastic={self.stochastic}, device={self.device})"
        )

    # ------------------------------------------------------------------ validation
    def _check_ensemble(self, E: Any) -> tuple[Tensor, bool]:
        """``E`` as a ``(N, Nx)`` tensor on the device, and whether it was a single state."""
        if isinstance(E, Tensor):
            array = E.detach().cpu().numpy()
        else:
            try:
                array = np.asarray(E)
            except Exception as error:  # noqa: BLE001 - reported as a TypeError below
                raise TypeError(
                    f"E is a {type(E).__name__}; expected a float array (Nx,) or (N, Nx)"
                ) from error
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise TypeError(
                f"E has dtype {array.dtype}; expected a real float array (Nx,) or (N, Nx)"
            )
        single = array.ndim == 1
        if array.ndim not in (1, 2):
            raise ValueError(
                f"E has shape {array.shape}; expected a state (Nx,) or an ensemble (N, Nx) "
                f"with Nx = {self.state_dim}"
            )
        if array.shape[-1] != self.state_dim or (array.ndim == 2 and array.shape[0] < 1):
            raise ValueError(
                f"E has shape {array.shape}; expected (Nx,) or (N, Nx) with Nx = "
                f"{self.state_dim} (the state size of {type(self.dynamics).__name__})"
            )
        finite = np.isfinite(array)
        if not finite.all():
            if single:
                bad = np.flatnonzero(~finite)[:10].tolist()
                raise ValueError(
                    f"E holds non-finite values at state components {bad}; expected a finite "
                    "state (the filter has probably diverged)"
                )
            members = np.flatnonzero(~finite.all(axis=1))[:10].tolist()
            raise ValueError(
                f"E holds non-finite values in members {members} of {array.shape[0]}; expected "
                "finite members (the filter has probably diverged)"
            )
        tensor = torch.as_tensor(np.atleast_2d(array), dtype=self.dtype).to(self.device)
        return tensor, single

    def solver_steps(self, dt: float) -> int:
        """Number of solver steps for one call over ``dt`` (1 for adaptive methods).

        Raises
        ------
        ValueError
            If ``dt`` is not positive and finite, if a fixed ``substeps`` makes the step
            exceed the stability limit of the dynamics, or if more than 100000 steps would
            be needed.
        """
        value = _positive(dt, "dt")
        if self.method in _ADAPTIVE_METHODS:
            return 1
        limit = self.step_limit
        if self.substeps is not None:
            step = value / self.substeps
            if step > self.stable_step * (1 + _STEP_TOLERANCE):
                raise ValueError(
                    f"dt={value:.6g} with substeps={self.substeps} gives solver steps of "
                    f"{step:.6g}, above the stability limit {self.stable_step:.6g} of "
                    f"{type(self.dynamics).__name__} for {self.method!r}; expected dt <= "
                    f"{self.substeps * self.stable_step:.6g} or more substeps"
                )
            return self.substeps
        steps = max(1, math.ceil(value / limit * (1 - _STEP_TOLERANCE)))
        if steps > _MAX_SUBSTEPS:
            raise ValueError(
                f"dt={value:.6g} needs {steps} solver steps of at most {limit:.6g} "
                f"(the step limit of {type(self.dynamics).__name__}); expected dt <= "
                f"{_MAX_SUBSTEPS * limit:.6g}"
            )
        return steps

    # ------------------------------------------------------------------ forecasting
    def forecast_tensor(self, state: Tensor, t: float, dt: float) -> Tensor:
        """Deterministic forecast of a ``(N, Nx)`` tensor on the device (no checks of ``state``).

        Returns
        -------
        Tensor, shape (N, Nx)
        """
        steps = self.solver_steps(dt)
        x = state.reshape(state.shape[0], *self.state_shape)
        if self.method == "rk4_classic":
            out = rk4_classic(self.dynamics, x, float(t), float(dt), steps)
        else:
            times = (
                float(t)
                + float(dt)
                * torch.arange(steps + 1, dtype=torch.float64, device=self.device)
                / steps
            )
            out = simulate(
                self.dynamics,
                x,
                times.to(self.dtype),
                self.method,
                rtol=self.rtol,
                atol=self.atol,
            )[:, -1]
        return out.reshape(state.shape[0], self.state_dim)

    def _add_model_error(self, state: Tensor, forecast: Tensor, dt: float) -> Tensor:
        assert self.model_error is not None
        n = state.shape[0]
        shaped = (n, *self.state_shape)
        predictive = self.model_error(state.reshape(shaped), forecast.reshape(shaped), float(dt))
        if not isinstance(predictive, Predictive):
            raise TypeError(
                f"model_error returned a {type(predictive).__name__}; expected a "
                "uqdyn.predictive.Predictive"
            )
        if tuple(predictive.batch_shape) != shaped:
            raise ValueError(
                f"model_error returned a Predictive with batch_shape "
                f"{tuple(predictive.batch_shape)}; expected {shaped} (one error per member)"
            )
        draw = predictive.sample(1, generator=self.generator)[0]
        return forecast + draw.to(dtype=forecast.dtype).reshape(n, self.state_dim)

    def step(self, E: Any, t: float, dt: float) -> np.ndarray:
        """Forecast every member of ``E`` from time ``t`` to ``t + dt``.

        Parameters
        ----------
        E : array, shape (Nx,) or (N, Nx)
            One state or an ensemble (members first); numpy (or torch) floats, finite.
        t : float
            Start time (passed to time-dependent dynamics).
        dt : float
            Time step, > 0.

        Returns
        -------
        numpy.ndarray, float64, the shape of ``E``
            The forecast, plus one model-error draw per member when :attr:`stochastic`.

        Raises
        ------
        ValueError
            Wrong state size, non-finite members, a bad ``dt``, or a non-finite forecast.
        """
        t = as_float(t, "t")
        dt = _positive(dt, "dt")
        state, single = self._check_ensemble(E)
        with torch.no_grad():
            try:
                forecast = self.forecast_tensor(state, float(t), dt)
            except ValueError as error:
                raise ValueError(
                    f"the forecast from t={float(t):.6g} over dt={dt:.6g} failed: {error}"
                ) from error
            if self.model_error is not None:
                forecast = self._add_model_error(state, forecast, dt)
        result = forecast.detach().to("cpu", torch.float64).numpy()
        finite = np.isfinite(result)
        if not finite.all():
            members = np.flatnonzero(~finite.all(axis=1))[:10].tolist()
            raise ValueError(
                f"the forecast from t={float(t):.6g} over dt={dt:.6g} is non-finite in members "
                f"{members}; expected finite values (reduce dt or max_step, or check the model)"
            )
        return result[0] if single else result

    __call__ = step

    def jacobian(self, x: Any, t: float, dt: float) -> np.ndarray:
        """Jacobian ``d step(x, t, dt) / dx`` of the deterministic forecast (the TLM).

        Parameters
        ----------
        x : array, shape (Nx,)

        Returns
        -------
        numpy.ndarray, shape (Nx, Nx), float64
            Entry ``[i, j]`` is ``d forecast_i / d x_j``.
        """
        dt = _positive(dt, "dt")
        state, single = self._check_ensemble(x)
        if not single:
            raise ValueError(f"x has shape {np.shape(x)}; expected one state ({self.state_dim},)")

        def forward(vector: Tensor) -> Tensor:
            return self.forecast_tensor(vector.unsqueeze(0), float(t), dt)[0]

        jac = torch.autograd.functional.jacobian(forward, state[0])
        return jac.detach().to("cpu", torch.float64).numpy()
