"""Trajectories of one physical system under several parameter settings ("environments").

:func:`multi_environment` simulates ``n_per_env`` trajectories for each setting of a
:mod:`uqdyn.physics` system with :func:`uqdyn.physics.simulate` and returns them as an
``xarray.Dataset`` with an ``env`` dim, the parameters of each environment as coordinates
along it. :data:`LOTKA_VOLTERRA_CODA` records the Lotka-Volterra settings of the CoDA
protocol (Kirchmeyer et al., ICML 2022) and :func:`coda_protocol_datasets` builds its
training, test and adaptation sets.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import xarray as xr
from torch import nn

from uqdyn._checks import as_float, as_int
from uqdyn.data.simulate import _grid_coordinates, _netcdf_attr, _resolve_system, _variable_names

__all__ = [
    "multi_environment",
    "EnvironmentProtocol",
    "LOTKA_VOLTERRA_CODA",
    "GRAY_SCOTT_CODA",
    "NAVIER_STOKES_CODA",
    "coda_protocol_datasets",
]


def _parse_params(params: Any) -> list[dict[str, float]]:
    """``params`` as a list of ``{name: value}``, one per environment (all with the same names)."""
    if isinstance(params, Mapping):
        names = list(params)
        columns = []
        for name in names:
            values = params[name]
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ValueError(
                    f"params[{name!r}]={values!r}; expected a sequence with one value per "
                    "environment"
                )
            columns.append(list(values))
        lengths = {len(c) for c in columns}
        if len(lengths) != 1:
            raise ValueError(
                f"params has sequences of lengths {[len(c) for c in columns]} for {names}; "
                "expected one value per environment for every parameter"
            )
        settings = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        settings = []
        for index, setting in enumerate(params):
            if not isinstance(setting, Mapping):
                raise TypeError(
                    f"params[{index}] is a {type(setting).__name__}; expected a mapping "
                    "{parameter name: value}"
                )
            settings.append(dict(setting))
    else:
        raise TypeError(
            f"params is a {type(params).__name__}; expected a sequence of mappings "
            "[{name: value}, ...] or a mapping {name: [value per environment]}"
        )
    if not settings:
        raise ValueError("params is empty; expected at least one environment")
    names = list(settings[0])
    out: list[dict[str, float]] = []
    for index, setting in enumerate(settings):
        if list(setting) != names:
            raise ValueError(
                f"params[{index}] has parameters {list(setting)}; expected the same names in "
                f"the same order as params[0]: {names}"
            )
        row = {}
        for name, value in setting.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"params[{index}] has key {name!r}; expected a parameter name")
            row[name] = as_float(value, f"params[{index}][{name!r}]")
        out.append(row)
    return out


def multi_environment(
    system: str | Callable[..., nn.Module],
    params: Sequence[Mapping[str, float]] | Mapping[str, Sequence[float]],
    *,
    n_per_env: int,
    horizon: float,
    dt: float,
    seed: int = 0,
    system_kwargs: Mapping[str, Any] | None = None,
    method: str = "rk4",
    step_size: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> xr.Dataset:
    """Simulate ``n_per_env`` trajectories of ``system`` in each environment of ``params``.

    Environment ``e`` is the system built with ``system_kwargs`` and the parameters
    ``params[e]``; its ``n_per_env`` initial states come from that system's
    ``initial_state`` with a generator seeded from ``(seed, e)``, and
    :func:`uqdyn.physics.simulate` integrates them to the times ``0, dt, 2 dt, ..., horizon``.
    Environment ``e``'s trajectories depend only on ``seed``, ``e`` and its own parameters.

    Parameters
    ----------
    system:
        A name in :data:`uqdyn.data.SYSTEMS` (e.g. ``"lotka_volterra"``, ``"gray_scott"``)
        or a factory ``(**kwargs) -> Dynamics``.
    params:
        The environments: a sequence of ``{name: value}`` (same names in each) or a mapping
        ``{name: [value per environment]}``.
    n_per_env:
        Trajectories per environment (>= 1).
    horizon, dt:
        Last output time (> 0) and output spacing (> 0, at most ``horizon``); the times are
        ``dt * arange(round(horizon / dt) + 1)``.
    seed:
        Seed of the initial states.
    system_kwargs:
        Constructor arguments shared by all environments (e.g. ``{"size": (32, 32)}`` or a
        fixed ``alpha``); must not repeat a name of ``params``.
    method, step_size:
        Passed to :func:`uqdyn.physics.simulate` (default rk4 with one step per ``dt``;
        give a smaller ``step_size`` for accuracy).
    dtype:
        Floating dtype of the simulation and of the stored states.
    device:
        Where to simulate (default CPU).

    Returns
    -------
    xarray.Dataset
        ODE systems: a variable ``state`` with dims ``(env, sample, time, dim)``; gridded
        systems: one variable per state channel with dims ``(env, sample, time, y, x)``.
        Every parameter of ``params`` is a coordinate with dim ``env``; attributes record
        the system, method, step size, seed, ``dt``, ``horizon`` and the shared settings
        (``setting_<name>``).

    Raises
    ------
    ValueError, TypeError
        For bad arguments (naming them) or a simulation that fails.

    Examples
    --------
    >>> from uqdyn.data import multi_environment
    >>> ds = multi_environment("lotka_volterra", {"beta": [0.5, 1.0], "delta": [0.5, 0.5]},
    ...                        n_per_env=3, horizon=2.0, dt=0.5)
    >>> ds["state"].dims, ds["state"].shape
    (('env', 'sample', 'time', 'dim'), (2, 3, 5, 2))
    """
    factory, system_name = _resolve_system(system)
    settings = _parse_params(params)
    n_per_env = as_int(n_per_env, "n_per_env", minimum=1)
    horizon = as_float(horizon, "horizon", positive=True)
    dt = as_float(dt, "dt", positive=True)
    if dt > horizon:
        raise ValueError(f"dt={dt} exceeds horizon={horizon}; expected 0 < dt <= horizon")
    n_steps = int(round(horizon / dt))
    if abs(n_steps * dt - horizon) > 1e-6 * horizon:
        raise ValueError(
            f"horizon={horizon} is not a whole number of steps dt={dt}; expected horizon / dt "
            "to be an integer"
        )
    seed = as_int(seed, "seed")
    if step_size is not None:
        step_size = as_float(step_size, "step_size", positive=True)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype={dtype!r}; expected a floating torch.dtype")
    device = torch.device("cpu" if device is None else device)
    fixed = dict(system_kwargs or {})
    clash = sorted(set(fixed) & set(settings[0]))
    if clash:
        raise ValueError(f"{clash} appear in both system_kwargs and params; expected one")
    attrs: dict[str, Any] = {f"setting_{k}": _netcdf_attr(v, k) for k, v in fixed.items()}
    try:
        takes_dtype = "dtype" in inspect.signature(factory).parameters and "dtype" not in fixed
    except (TypeError, ValueError):
        takes_dtype = False

    from uqdyn.physics import simulate

    times = torch.arange(n_steps + 1, dtype=torch.float64) * dt
    env_seeds = torch.randint(
        0, 2**62, (len(settings),), generator=torch.Generator().manual_seed(seed)
    ).tolist()
    chunks = []
    reference: Any = None
    for e, setting in enumerate(settings):
        kwargs: dict[str, Any] = {**fixed, **setting}
        if takes_dtype:
            kwargs["dtype"] = dtype
        try:
            dynamics = factory(**kwargs)
        except TypeError as err:
            raise TypeError(
                f"building {system_name} with parameters {sorted(kwargs)} failed: {err}"
            ) from err
        if not isinstance(dynamics, nn.Module) or not hasattr(dynamics, "initial_state"):
            raise TypeError(
                f"system {system_name!r} built a {type(dynamics).__name__}; expected a Dynamics"
            )
        reference = dynamics if reference is None else reference
        generator = torch.Generator().manual_seed(env_seeds[e])
        state0 = cast(Any, dynamics).initial_state(n_per_env, generator=generator, dtype=dtype)
        dynamics = dynamics.to(device=device, dtype=dtype)
        try:
            with torch.no_grad():
                trajectory = simulate(
                    dynamics,
                    state0.to(device),
                    times.to(device=device, dtype=dtype),
                    method,
                    step_size=step_size,
                )
        except ValueError as err:
            raise ValueError(f"environment {e} ({setting}): {err}") from err
        chunks.append(trajectory.cpu().numpy())
    values = np.stack(chunks)  # (env, sample, time, *state)

    coords: dict[str, Any] = {
        "env": np.arange(len(settings)),
        "sample": np.arange(n_per_env),
        "time": times.numpy(),
    }
    for name in settings[0]:
        coords[name] = ("env", np.array([s[name] for s in settings], dtype=np.float64))
    data: dict[str, Any] = {}
    if values.ndim == 6:
        height, width = values.shape[-2:]
        coords["y"], coords["x"] = _grid_coordinates(reference, height, width)
        names = _variable_names(reference, values.shape[3])
        for c, name in enumerate(names):
            data[name] = (("env", "sample", "time", "y", "x"), values[:, :, :, c])
    elif values.ndim == 4:
        coords["dim"] = np.arange(values.shape[3])
        names = ["state"]
        data["state"] = (("env", "sample", "time", "dim"), values)
        component_names = tuple(getattr(reference, "component_names", ()))
        if len(component_names) == values.shape[3]:
            attrs["component_names"] = ",".join(component_names)
    else:
        raise ValueError(
            f"system {system_name!r} produced trajectories of shape {values.shape[1:]}; "
            "expected (sample, time, C, H, W) or (sample, time, D)"
        )
    attrs.update(
        {
            "system": system_name,
            "state_variables": ",".join(names),
            "parameters": ",".join(settings[0]),
            "method": method,
            "seed": int(seed),
            "dt": float(dt),
            "horizon": float(horizon),
            "dtype": str(dtype).removeprefix("torch."),
        }
    )
    if step_size is not None:
        attrs["step_size"] = float(step_size)
    return xr.Dataset(data, coords=coords, attrs=attrs)


@dataclass(frozen=True)
class EnvironmentProtocol:
    """The settings of a multi-environment benchmark (training, test and adaptation sets).

    Attributes
    ----------
    system : str
        A name in :data:`uqdyn.data.SYSTEMS`.
    fixed : dict
        Constructor arguments shared by every environment.
    train_params, adapt_params : list of dict
        One ``{name: value}`` per training / adaptation environment.
    n_train, n_adapt, n_test : int
        Trajectories per environment: training, adaptation (what a new environment is
        fitted on) and test (per environment, for both kinds).
    horizon, dt : float
        Last output time and output spacing.
    method : str
    step_size : float or None
        Integration settings passed to :func:`multi_environment`.
    """

    system: str
    fixed: dict[str, Any]
    train_params: list[dict[str, float]]
    adapt_params: list[dict[str, float]]
    n_train: int
    n_adapt: int
    n_test: int
    horizon: float
    dt: float
    method: str = "rk4"
    step_size: float | None = None
    notes: str = field(default="", compare=False)


def _grid(**values: Sequence[float]) -> list[dict[str, float]]:
    names = list(values)
    return [dict(zip(names, row, strict=True)) for row in itertools.product(*values.values())]


#: The Lotka-Volterra protocol of CoDA (Kirchmeyer et al., ICML 2022, after LEADS):
#: ``alpha = gamma = 0.5``; 9 training environments ``beta, delta in {0.5, 0.75, 1.0}``
#: with 4 trajectories each; 4 adaptation environments ``beta, delta in {0.625, 1.125}``
#: with 1 trajectory each; 32 test trajectories per environment; horizon 10, ``dt = 0.5``.
#: Integration here: rk4 with steps of 0.05 (10 per output interval). Initial states are
#: those of :meth:`uqdyn.physics.LotkaVolterra.initial_state` (around the coexistence
#: point of each environment), not CoDA's own sampler.
LOTKA_VOLTERRA_CODA = EnvironmentProtocol(
    system="lotka_volterra",
    fixed={"alpha": 0.5, "gamma": 0.5},
    train_params=_grid(beta=(0.5, 0.75, 1.0), delta=(0.5, 0.75, 1.0)),
    adapt_params=_grid(beta=(0.625, 1.125), delta=(0.625, 1.125)),
    n_train=4,
    n_adapt=1,
    n_test=32,
    horizon=10.0,
    dt=0.5,
    method="rk4",
    step_size=0.05,
    notes="CoDA (Kirchmeyer et al., ICML 2022), Lotka-Volterra settings",
)


#: The Gray-Scott protocol of CoDA (Kirchmeyer et al., ICML 2022): a 32 x 32 periodic grid
#: with unit spacing, ``D_u = 0.2097``, ``D_v = 0.105``; 4 training environments
#: ``F in {0.030, 0.039}``, ``k in {0.058, 0.062}`` with 1 trajectory each; 4 adaptation
#: environments ``F in {0.033, 0.036}``, ``k in {0.059, 0.061}`` with 1 trajectory each; 32
#: test trajectories per environment; horizon 400, ``dt = 40``. Integration here: rk4 with
#: steps of 0.5. Initial states: :meth:`uqdyn.physics.GrayScott.initial_state`.
GRAY_SCOTT_CODA = EnvironmentProtocol(
    system="gray_scott",
    fixed={"size": (32, 32), "length": 32.0, "diffusion_u": 0.2097, "diffusion_v": 0.105},
    train_params=_grid(feed=(0.030, 0.039), kill=(0.058, 0.062)),
    adapt_params=_grid(feed=(0.033, 0.036), kill=(0.059, 0.061)),
    n_train=1,
    n_adapt=1,
    n_test=32,
    horizon=400.0,
    dt=40.0,
    method="rk4",
    step_size=0.5,
    notes="CoDA (Kirchmeyer et al., ICML 2022), Gray-Scott settings",
)


#: The Navier-Stokes protocol of CoDA (Kirchmeyer et al., ICML 2022): vorticity on a
#: 32 x 32 periodic unit square with the forcing ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))``;
#: 5 training environments ``viscosity in {8e-4, 9e-4, 1.0e-3, 1.1e-3, 1.2e-3}`` with 16
#: trajectories each; 4 adaptation environments ``viscosity in {8.5e-4, 9.5e-4, 1.05e-3,
#: 1.15e-3}`` with 1 trajectory each; 32 test trajectories per environment; horizon 10,
#: ``dt = 1``. Integration here: uqdyn's pseudo-spectral solver (rk4, steps of 0.01).
NAVIER_STOKES_CODA = EnvironmentProtocol(
    system="navier_stokes",
    fixed={"size": (32, 32), "length": 1.0, "forcing_amplitude": 0.1},
    train_params=_grid(viscosity=(8e-4, 9e-4, 1.0e-3, 1.1e-3, 1.2e-3)),
    adapt_params=_grid(viscosity=(8.5e-4, 9.5e-4, 1.05e-3, 1.15e-3)),
    n_train=16,
    n_adapt=1,
    n_test=32,
    horizon=10.0,
    dt=1.0,
    method="rk4",
    step_size=0.01,
    notes="CoDA (Kirchmeyer et al., ICML 2022), Navier-Stokes settings",
)


def coda_protocol_datasets(
    protocol: EnvironmentProtocol = LOTKA_VOLTERRA_CODA,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    calib_params: Sequence[Mapping[str, float]] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, xr.Dataset]:
    """The datasets of a protocol, each from :func:`multi_environment`.

    ``"train"`` and ``"test"`` cover the training environments, ``"adapt"`` and
    ``"adapt_test"`` the adaptation environments (``protocol.n_adapt`` trajectories to fit
    a new environment, ``protocol.n_test`` to score it); with ``calib_params``, ``"calib"``
    and ``"calib_test"`` hold further new environments seen the same way (e.g. to calibrate
    the spread of adapted forecasts). Set ``k`` in that order uses the seed ``6 seed + k``,
    so their initial states differ.

    Parameters
    ----------
    protocol:
        Default :data:`LOTKA_VOLTERRA_CODA`.
    seed:
        Base seed (>= 0).
    n_train, n_test:
        Override the trajectories per environment (e.g. for quick runs).
    calib_params:
        Calibration environments (``{name: value}`` each), or None for none.
    dtype, device:
        Passed to :func:`multi_environment`.

    Returns
    -------
    dict of str to xarray.Dataset
        Keys ``"train"``, ``"test"``, ``"adapt"``, ``"adapt_test"`` (and ``"calib"``,
        ``"calib_test"``).
    """
    if not isinstance(protocol, EnvironmentProtocol):
        raise TypeError(f"protocol is a {type(protocol).__name__}; expected an EnvironmentProtocol")
    seed = as_int(seed, "seed", minimum=0)
    n_train = protocol.n_train if n_train is None else as_int(n_train, "n_train", minimum=1)
    n_test = protocol.n_test if n_test is None else as_int(n_test, "n_test", minimum=1)
    common: dict[str, Any] = {
        "horizon": protocol.horizon,
        "dt": protocol.dt,
        "system_kwargs": protocol.fixed,
        "method": protocol.method,
        "step_size": protocol.step_size,
        "dtype": dtype,
        "device": device,
    }
    parts = {
        "train": (protocol.train_params, n_train),
        "test": (protocol.train_params, n_test),
        "adapt": (protocol.adapt_params, protocol.n_adapt),
        "adapt_test": (protocol.adapt_params, n_test),
    }
    if calib_params is not None:
        calib = [dict(q) for q in calib_params]
        parts["calib"] = (calib, protocol.n_adapt)
        parts["calib_test"] = (calib, n_test)
    return {
        key: multi_environment(protocol.system, params, n_per_env=n, seed=6 * seed + k, **common)
        for k, (key, (params, n)) in enumerate(parts.items())
    }
