"""Parametric trajectory datasets: sample parameters and initial states, simulate, label.

:func:`simulate_dataset` draws the physical parameters of each sample from given ranges and
an initial state from the system's :meth:`~uqdyn.physics.Dynamics.initial_state`, simulates
the samples in batches with :func:`uqdyn.physics.simulate` (on the GPU when one is present)
and returns a labelled ``xarray.Dataset`` that survives a netCDF round trip unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.data.io import GRID_DIMS, VECTOR_DIMS

__all__ = ["simulate_dataset", "observe_dataset", "SYSTEMS"]

#: Names accepted by :func:`simulate_dataset` and the :mod:`uqdyn.physics` classes they mean.
SYSTEMS: dict[str, str] = {
    "advection_diffusion": "AdvectionDiffusion",
    "fitzhugh_nagumo": "FitzHughNagumo",
    "gray_scott": "GrayScott",
    "shallow_water": "ShallowWater",
    "lorenz63": "Lorenz63",
    "lorenz96": "Lorenz96",
    "lotka_volterra": "LotkaVolterra",
    "kuramoto_sivashinsky": "KuramotoSivashinsky",
    "damped_pendulum": "DampedPendulum",
    "navier_stokes": "NavierStokes",
}


def _resolve_system(system: str | Callable[..., nn.Module]) -> tuple[Callable[..., nn.Module], str]:
    if isinstance(system, str):
        key = system.lower().replace("-", "_")
        by_class = {v.lower(): v for v in SYSTEMS.values()}
        class_name = SYSTEMS.get(key) or by_class.get(key.replace("_", ""))
        if class_name is None:
            raise ValueError(f"system={system!r} is unknown; expected one of {sorted(SYSTEMS)}")
        physics = importlib.import_module("uqdyn.physics")
        factory = getattr(physics, class_name, None)
        if factory is None:
            raise ValueError(f"system={system!r}: uqdyn.physics has no {class_name}")
        return factory, class_name
    if callable(system):
        return system, getattr(system, "__name__", type(system).__name__)
    raise TypeError(
        f"system is a {type(system).__name__}; expected a system name or a callable "
        "returning a Dynamics"
    )


def _parse_ranges(
    parameter_ranges: Mapping[str, Any] | None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, spec in (parameter_ranges or {}).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameter_ranges key {name!r}; expected a parameter name")
        if not isinstance(spec, Sequence) or isinstance(spec, str) or len(spec) != 2:
            raise ValueError(
                f"parameter_ranges[{name!r}]={spec!r}; expected a (low, high) pair of numbers "
                "or of equal-shape sequences"
            )
        try:
            lo, hi = (np.asarray(v, dtype=np.float64) for v in spec)
        except (TypeError, ValueError):
            raise ValueError(
                f"parameter_ranges[{name!r}]={spec!r}; expected numbers for low and high"
            ) from None
        if lo.shape != hi.shape or lo.ndim > 1:
            raise ValueError(
                f"parameter_ranges[{name!r}] has low shape {lo.shape} and high shape {hi.shape}; "
                "expected equal shapes, () or (k,)"
            )
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (lo > hi).any():
            raise ValueError(f"parameter_ranges[{name!r}]={spec!r}; expected finite low <= high")
        ranges[name] = (lo, hi)
    return ranges


def _netcdf_attr(value: Any, name: str) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return "none"
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray, Tensor)):
        arr = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value)
        if arr.ndim == 1 and arr.dtype.kind in "iuf":
            return arr
    raise TypeError(
        f"system_kwargs[{name!r}]={value!r} cannot be stored as a netCDF attribute; expected "
        "numbers, strings, bools, None or 1-d numeric sequences"
    )


def _variable_names(dynamics: nn.Module, n_channels: int) -> list[str]:
    names = []
    component_names = tuple(getattr(dynamics, "component_names", ()))
    for c in range(n_channels):
        label = component_names[c] if c < len(component_names) else f"state_{c}"
        name = re.sub(r"\W", "_", label.split(" ")[0]) or f"state_{c}"
        if name in ("sample", "time", "y", "x", "dim") or name in names:
            name = f"state_{c}"
        names.append(name)
    return names


def _grid_coordinates(
    dynamics: nn.Module, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    coordinates = getattr(dynamics, "coordinates", None)
    if callable(coordinates):
        y, x = coordinates(dtype=torch.float64)
        return y.cpu().numpy(), x.cpu().numpy()
    return np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)


def simulate_dataset(
    system: str | Callable[..., nn.Module],
    n_samples: int,
    times: Tensor | Sequence[float],
    parameter_ranges: Mapping[str, Any] | None = None,
    *,
    system_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    method: str = "rk4",
    step_size: float | None = None,
) -> xr.Dataset:
    """Simulate trajectories of a parametric system into an ``xarray.Dataset``.

    For sample ``i``: each parameter ``p`` in ``parameter_ranges`` is drawn from
    ``Uniform(low_p, high_p)`` (elementwise for vector-valued parameters such as a
    velocity), an initial state is drawn by ``initial_state(1)`` of the system built with
    sample ``i``'s parameters, and ``simulate(dynamics, state0, times, method)`` gives the
    trajectory. Samples are simulated in batches whose parameters have shape ``(batch,)``.
    Sample ``i`` depends only on ``seed`` and ``i``: not on ``batch_size`` nor the device
    (up to floating-point round-off of the solver).

    Parameters
    ----------
    system:
        A name in :data:`SYSTEMS` (e.g. ``"advection_diffusion"``, ``"shallow_water"``,
        ``"damped_pendulum"``) or a factory ``(**kwargs) -> Dynamics`` such as a class.
    n_samples:
        Number of trajectories.
    times:
        ``(T,)`` increasing output times; ``times[0]`` is the time of the initial state.
    parameter_ranges:
        ``{name: (low, high)}``; ``low``/``high`` numbers or equal-length sequences.
    system_kwargs:
        Fixed constructor arguments (e.g. ``{"size": (32, 32), "length": 1.0}``), stored as
        attributes ``setting_<name>``.
    seed:
        Seed of all random draws.
    device:
        Where to simulate; default CUDA when available, else CPU.
    dtype:
        Floating dtype of the simulation and of the stored states.
    batch_size:
        Samples simulated together (default: all).
    method, step_size:
        Passed to :func:`uqdyn.physics.simulate`.

    Returns
    -------
    xarray.Dataset
        Gridded systems: one variable per state channel (named after the system's
        components, e.g. ``u``, ``v``, ``h``) with dims ``(sample, time, y, x)`` and
        coordinates ``y``, ``x`` in physical units. ODE systems: a variable ``state`` with
        dims ``(sample, time, dim)``. Sampled parameters are variables with dim ``sample``
        (vector parameters add a dim ``<name>_component``); attributes record the system,
        method, step size, seed, fixed settings and the parameter ranges
        (``range_<name>``). Save with :func:`uqdyn.data.save_dataset`.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.data import simulate_dataset
    >>> ds = simulate_dataset("damped_pendulum", 4, torch.linspace(0, 1, 11),
    ...                       {"omega0": (1.0, 2.0), "alpha": (0.1, 0.3)}, device="cpu")
    >>> ds["state"].dims
    ('sample', 'time', 'dim')
    """
    factory, system_name = _resolve_system(system)
    n_samples = as_int(n_samples, "n_samples", minimum=1)
    times_t = torch.as_tensor(times, dtype=torch.float64)
    if times_t.dim() != 1 or times_t.numel() < 1:
        raise ValueError(f"times has shape {tuple(times_t.shape)}; expected (T,) with T >= 1")
    if not bool(torch.isfinite(times_t).all()) or not bool((times_t.diff() > 0).all()):
        raise ValueError("times must be finite and strictly increasing")
    batch_size = n_samples if batch_size is None else as_int(batch_size, "batch_size", minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype={dtype!r}; expected a floating torch.dtype")
    seed = as_int(seed, "seed")
    if step_size is not None:
        step_size = as_float(step_size, "step_size", positive=True)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    ranges = _parse_ranges(parameter_ranges)
    fixed = dict(system_kwargs or {})
    clash = sorted(set(fixed) & set(ranges))
    if clash:
        raise ValueError(f"{clash} appear in both system_kwargs and parameter_ranges; expected one")
    attrs = {f"setting_{k}": _netcdf_attr(v, k) for k, v in fixed.items()}

    generator = torch.Generator().manual_seed(seed)
    params: dict[str, np.ndarray] = {}
    for name, (lo, hi) in ranges.items():
        u = torch.rand((n_samples, *lo.shape), generator=generator, dtype=torch.float64).numpy()
        params[name] = lo + (hi - lo) * u
    sample_seeds = torch.randint(0, 2**62, (n_samples,), generator=generator).tolist()

    from uqdyn.physics import simulate

    # Systems that take a ``dtype`` build their fixed parameters straight in it (a float64
    # dataset must not see float32-rounded settings).
    try:
        takes_dtype = "dtype" in inspect.signature(factory).parameters and "dtype" not in fixed
    except (TypeError, ValueError):
        takes_dtype = False

    def build(index: slice | int) -> Any:
        kwargs: dict[str, Any] = {
            k: torch.as_tensor(v[index], dtype=dtype) for k, v in params.items()
        }
        if takes_dtype:
            kwargs["dtype"] = dtype
        try:
            dynamics = factory(**fixed, **kwargs)
        except TypeError as err:
            raise TypeError(
                f"building {system_name} with system_kwargs {sorted(fixed)} and sampled "
                f"parameters {sorted(kwargs)} failed: {err}"
            ) from err
        if not isinstance(dynamics, nn.Module) or not hasattr(dynamics, "initial_state"):
            raise TypeError(
                f"system {system_name!r} built a {type(dynamics).__name__}; expected a Dynamics"
            )
        return dynamics

    reference = build(0)  # names, coordinates
    chunks: list[np.ndarray] = []
    for start in range(0, n_samples, batch_size):
        stop = min(start + batch_size, n_samples)
        states = []
        for i in range(start, stop):
            one = build(i)
            g = torch.Generator().manual_seed(sample_seeds[i])
            states.append(one.initial_state(1, generator=g, dtype=dtype))
        dynamics = build(slice(start, stop)).to(device=device, dtype=dtype)
        state0 = torch.cat(states).to(device)
        with torch.no_grad():
            trajectory = simulate(
                dynamics,
                state0,
                times_t.to(device=device, dtype=dtype),
                method,
                step_size=step_size,
            )
        chunks.append(trajectory.cpu().numpy())
    values = np.concatenate(chunks)

    coords: dict[str, Any] = {"sample": np.arange(n_samples), "time": times_t.numpy()}
    data: dict[str, Any] = {}
    if values.ndim == 5:
        height, width = values.shape[-2:]
        coords["y"], coords["x"] = _grid_coordinates(reference, height, width)
        names = _variable_names(reference, values.shape[2])
        for c, name in enumerate(names):
            data[name] = (GRID_DIMS, values[:, :, c])
    elif values.ndim == 3:
        coords["dim"] = np.arange(values.shape[2])
        names = ["state"]
        data["state"] = (VECTOR_DIMS, values)
        component_names = tuple(getattr(reference, "component_names", ()))
        if len(component_names) == values.shape[2]:
            attrs["component_names"] = ",".join(component_names)
    else:
        raise ValueError(
            f"system {system_name!r} produced trajectories of shape {values.shape}; expected "
            "(sample, time, C, H, W) or (sample, time, D)"
        )
    for name, value in params.items():
        if name in data or name in coords:
            raise ValueError(f"parameter name {name!r} clashes with a state variable or dim")
        dims = ("sample",) if value.ndim == 1 else ("sample", f"{name}_component")
        data[name] = (dims, value.astype(np.float64))
        attrs[f"range_{name}"] = np.concatenate([ranges[name][0].ravel(), ranges[name][1].ravel()])
    attrs.update(
        {
            "system": system_name,
            "state_variables": ",".join(names),
            "method": method,
            "seed": int(seed),
            "dtype": str(dtype).removeprefix("torch."),
        }
    )
    if step_size is not None:
        attrs["step_size"] = float(step_size)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def observe_dataset(
    dataset: xr.Dataset,
    operator: nn.Module,
    variables: Sequence[str] | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> xr.Dataset:
    """Add partial/noisy observations of the state variables to a trajectory dataset.

    The observation ``operator`` (from :mod:`uqdyn.observe`) is applied to every frame; the
    frames of sample ``i`` form one batch drawn with a generator seeded from ``(seed, i)``, so
    masks, stations and noise differ between frames and samples and are reproducible.

    Parameters
    ----------
    dataset:
        A trajectory dataset (see :func:`simulate_dataset`).
    operator:
        An :class:`uqdyn.observe.ObservationOperator`.
    variables:
        State variables to observe together (default: the ``state_variables`` attribute).
    seed:
        Seed of the observation randomness.
    device:
        Where to apply the operator (default CPU).

    Returns
    -------
    xarray.Dataset
        A copy of ``dataset`` with, for each observed variable ``v``: ``v_obs`` (observed
        values, 0 where hidden), ``v_mask`` (bool, ``True`` = observed) and, when noise was
        added, ``v_noise_std``. Their dims are those of ``v``, or ``(sample, time, station)``
        after station subsampling, with the station grid indices in ``station_row`` and
        ``station_col`` (``station_index`` for vector states), dims ``(sample, time,
        station)``. The attribute ``observation`` describes the operator.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.data import observe_dataset, simulate_dataset
    >>> from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
    >>> ds = simulate_dataset("damped_pendulum", 2, torch.linspace(0, 1, 5), device="cpu")
    >>> obs = observe_dataset(ds, Compose(RandomPixelMask(0.5), GaussianNoise(0.05)))
    >>> obs["state_obs"].dims
    ('sample', 'time', 'dim')
    """
    from uqdyn.data.io import _state_variables, dataset_to_tensor
    from uqdyn.observe import ObservationOperator

    if not isinstance(operator, ObservationOperator):
        raise TypeError(
            f"operator is a {type(operator).__name__}; expected a uqdyn.observe operator"
        )
    seed = as_int(seed, "seed")
    names = list(variables) if variables is not None else _state_variables(dataset)
    values = dataset_to_tensor(dataset, names, device=device)
    n_samples = int(values.shape[0])
    base = torch.Generator().manual_seed(seed)
    sample_seeds = torch.randint(0, 2**62, (n_samples,), generator=base).tolist()
    parts: dict[str, list[np.ndarray]] = {"values": [], "mask": [], "noise_std": [], "coords": []}
    layout = "grid"
    for i in range(n_samples):
        g = torch.Generator().manual_seed(sample_seeds[i])
        obs = operator(values[i], generator=g)
        layout = obs.layout
        parts["values"].append(obs.values.detach().cpu().numpy())
        parts["mask"].append(obs.mask.cpu().numpy())
        parts["noise_std"].append(obs.noise_std.detach().cpu().numpy())
        if obs.coordinates is not None:
            parts["coords"].append(obs.coordinates.cpu().numpy())
    stacked = {k: np.stack(v) for k, v in parts.items() if v}
    has_noise = bool((stacked["noise_std"] != 0).any())
    out = dataset.copy()
    is_grid = values.dim() == 5
    if layout == "stations":
        dims: tuple[str, ...] = ("sample", "time", "station")
        coords = stacked["coords"]
        if is_grid:
            out["station_row"] = (dims, coords[..., 0].astype(np.int64))
            out["station_col"] = (dims, coords[..., 1].astype(np.int64))
        else:
            out["station_index"] = (dims, coords[..., 0].astype(np.int64))
    else:
        dims = GRID_DIMS if is_grid else VECTOR_DIMS
    for c, name in enumerate(names if is_grid else names[:1]):
        pick = (slice(None), slice(None), c) if is_grid else (Ellipsis,)
        out[f"{name}_obs"] = (dims, stacked["values"][pick])
        out[f"{name}_mask"] = (dims, stacked["mask"][pick])
        if has_noise:
            out[f"{name}_noise_std"] = (dims, stacked["noise_std"][pick])
    out.attrs["observation"] = " ".join(repr(operator).split())
    out.attrs["observation_seed"] = int(seed)
    return out
