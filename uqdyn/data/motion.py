"""Transported fields with hidden velocities: the data and the true-physics forecast.

The training and test data of the motion-field forecasters (:mod:`uqdyn.models.motion`):
:func:`simulate_transport` moves random smooth tracers with random divergence-free
velocities (:class:`~uqdyn.physics.AdvectionDiffusion`) and returns the frames with the
hidden parameters; :func:`physics_rollout` is the true-physics forecast from them.

Units are those of the observed (coarse) grid: one cell per unit length and one frame per
unit time, so a velocity of 1 moves a feature one cell per frame and a diffusion of ``D``
spreads it by a variance of ``2 D`` cells^2 per frame, the units of
:class:`~uqdyn.models.motion.MotionFieldForecaster` with its defaults.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from uqdyn._checks import as_float, as_int, describe_type
from uqdyn.physics import AdvectionDiffusion, simulate

__all__ = [
    "TransportData",
    "random_smooth_field",
    "divergence_free_velocity",
    "simulate_transport",
    "physics_rollout",
]


class TransportData(NamedTuple):
    """Simulated sequences and their hidden parameters.

    ``frames``: (n, time, 1, height, width); ``velocity``: (n, 2, height, width) (cells per
    frame, channel 0 along ``x``); ``diffusion``: (n,) (cells^2 per frame).
    """

    frames: Tensor
    velocity: Tensor
    diffusion: Tensor


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)):
        raise TypeError(
            f"size={size!r} is a {describe_type(size)}; expected a pair of ints >= 4 "
            "(height, width)"
        )
    if len(size) != 2:
        raise ValueError(f"size must be a pair of ints >= 4 (height, width), got {size!r}")
    return as_int(size[0], "size[0]", minimum=4), as_int(size[1], "size[1]", minimum=4)


def _check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low = as_float(value[0], f"{name}[0]", finite=False)
    high = as_float(value[1], f"{name}[1]", finite=False)
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
        raise ValueError(f"{name} must satisfy 0 <= low <= high (finite), got {value!r}")
    return low, high


def _check_wavenumber(value: Any) -> float:
    number = as_float(value, "max_wavenumber", finite=False)
    if not number >= 1:
        raise ValueError(f"max_wavenumber must be a number >= 1, got {value!r}")
    return number


def _wavenumbers(size: tuple[int, int], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    height, width = size
    ky = torch.fft.fftfreq(height, d=1.0 / height, dtype=dtype).reshape(-1, 1)
    kx = torch.fft.fftfreq(width, d=1.0 / width, dtype=dtype).reshape(1, -1)
    return ky, kx


def _random_spectrum(
    batch: int,
    size: tuple[int, int],
    max_wavenumber: float,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> Tensor:
    ky, kx = _wavenumbers(size, dtype)
    radius = torch.sqrt(kx * kx + ky * ky)
    envelope = torch.where(
        (radius > 0) & (radius <= max_wavenumber), 1.0 / radius.clamp_min(1.0), 0.0
    )
    real = torch.randn((batch, *size), generator=generator, dtype=dtype)
    imag = torch.randn((batch, *size), generator=generator, dtype=dtype)
    return torch.complex(real, imag) * envelope


def random_smooth_field(
    batch: int,
    size: tuple[int, int],
    *,
    max_wavenumber: float = 4.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random periodic fields made of Fourier modes up to ``max_wavenumber`` waves per domain.

    Each mode ``0 < |k| <= max_wavenumber`` gets a complex Gaussian amplitude scaled by
    ``1 / |k|``; the real part of the inverse FFT is standardised to zero mean and unit
    standard deviation per sample.

    Parameters
    ----------
    batch : int
    size : (height, width)
    max_wavenumber : float
        Largest ``|k|`` (>= 1).
    generator : torch.Generator, optional
    dtype : torch.dtype

    Returns
    -------
    Tensor, shape (batch, 1, height, width)
    """
    size = _check_size(size)
    max_wavenumber = _check_wavenumber(max_wavenumber)
    field = torch.fft.ifft2(_random_spectrum(batch, size, max_wavenumber, generator, dtype)).real
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    field = field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return field.unsqueeze(1)


def divergence_free_velocity(
    batch: int,
    size: tuple[int, int],
    *,
    rms_speed: Tensor | float = 1.0,
    max_wavenumber: float = 2.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Random smooth divergence-free velocities ``w = (d psi / dy, -d psi / dx)``.

    The stream function ``psi`` is a random field of :func:`random_smooth_field`'s spectrum;
    its derivatives are exact in Fourier space, so the spectral divergence is zero. Each
    sample is scaled to the given root-mean-square speed ``sqrt(<w_x^2 + w_y^2>)``.

    Parameters
    ----------
    batch : int
    size : (height, width)
        Grid of unit cells.
    rms_speed : float or Tensor, shape (batch,)
    max_wavenumber : float
        Largest wavenumber of ``psi`` (>= 1).
    generator : torch.Generator, optional
    dtype : torch.dtype

    Returns
    -------
    Tensor, shape (batch, 2, height, width)
        Channel 0 ``w_x`` (along width), channel 1 ``w_y``.
    """
    size = _check_size(size)
    max_wavenumber = _check_wavenumber(max_wavenumber)
    psi = _random_spectrum(batch, size, max_wavenumber, generator, dtype)
    ky, kx = _wavenumbers(size, dtype)
    scale_y, scale_x = 2.0 * math.pi / size[0], 2.0 * math.pi / size[1]
    w_x = torch.fft.ifft2(1j * scale_y * ky * psi).real
    w_y = torch.fft.ifft2(-1j * scale_x * kx * psi).real
    velocity = torch.stack([w_x, w_y], dim=1)
    rms = velocity.square().sum(dim=1).mean(dim=(-2, -1)).sqrt().clamp_min(1e-12)
    target = torch.as_tensor(rms_speed, dtype=dtype).reshape(-1)
    return velocity * (target / rms).reshape(batch, 1, 1, 1)


def _stable_substeps(system: AdvectionDiffusion) -> float:
    limit = 0.9 * system.stable_dt("rk4")
    return 1.0 / math.ceil(1.0 / limit)


def simulate_transport(
    n: int,
    frames: int,
    *,
    size: tuple[int, int] = (32, 32),
    refine: int = 2,
    rms_speed: tuple[float, float] = (0.4, 0.8),
    drift: tuple[float, float] = (0.0, 0.5),
    diffusion: tuple[float, float] = (0.02, 0.1),
    field_wavenumber: float = 4.0,
    velocity_wavenumber: float = 2.0,
    seed: int = 0,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
) -> TransportData:
    """Advection-diffusion sequences under random hidden velocity fields.

    For each sample: a divergence-free velocity (:func:`divergence_free_velocity`, RMS speed
    uniform in ``rms_speed``) plus a uniform drift (uniform direction, magnitude uniform in
    ``drift``), a diffusion coefficient uniform in ``diffusion`` and a random smooth initial
    field (:func:`random_smooth_field`). The tracer is integrated with
    :class:`~uqdyn.physics.AdvectionDiffusion` (rk4, the largest stable step that divides a
    frame interval) on a grid ``refine`` times finer than ``size`` and every frame is
    averaged over ``refine x refine`` blocks (the observed coarse frames). The returned
    velocity is the block average of the fine one: the "true physics" at the coarse
    resolution, see :func:`physics_rollout`.

    Parameters
    ----------
    n, frames : int
        Number of sequences and frames per sequence (the first is the initial field).
    size : (height, width)
        Observed grid.
    refine : int
        Refinement factor of the simulation grid (>= 1).
    rms_speed, drift, diffusion : (low, high)
        Ranges in cells per frame and cells^2 per frame.
    field_wavenumber, velocity_wavenumber : float
        Largest wavenumbers of the initial field and of the stream function.
    seed : int
        Seed of every random draw.
    batch_size : int
        Sequences simulated together.
    dtype : torch.dtype

    Returns
    -------
    TransportData
        ``frames`` (n, frames, 1, height, width), ``velocity`` (n, 2, height, width),
        ``diffusion`` (n,).
    """
    size = _check_size(size)
    n = as_int(n, "n", minimum=1)
    frames = as_int(frames, "frames", minimum=1)
    refine = as_int(refine, "refine", minimum=1)
    seed = as_int(seed, "seed")
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    speed_range = _check_range(rms_speed, "rms_speed")
    drift_range = _check_range(drift, "drift")
    diffusion_range = _check_range(diffusion, "diffusion")
    if diffusion_range[0] <= 0:
        raise ValueError(f"diffusion must be > 0, got the range {diffusion!r}")
    fine = (size[0] * refine, size[1] * refine)
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(
            shape, generator=generator, dtype=dtype
        )

    speed = uniform((n,), speed_range)
    drift_speed = uniform((n,), drift_range)
    angle = uniform((n,), (0.0, 2.0 * math.pi))
    coefficient = uniform((n,), diffusion_range)
    velocity = divergence_free_velocity(
        n,
        fine,
        rms_speed=speed,
        max_wavenumber=velocity_wavenumber,
        generator=generator,
        dtype=dtype,
    )
    velocity = velocity + (
        drift_speed.unsqueeze(1) * torch.stack([angle.cos(), angle.sin()], dim=1)
    ).reshape(n, 2, 1, 1)
    initial = random_smooth_field(
        n, fine, max_wavenumber=field_wavenumber, generator=generator, dtype=dtype
    )
    times = torch.arange(frames, dtype=dtype)
    chunks = []
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        system = AdvectionDiffusion(
            size=fine,
            length=(float(size[0]), float(size[1])),
            diffusion=coefficient[part],
            velocity=velocity[part],
        )
        with torch.no_grad():
            trajectory = simulate(
                system, initial[part], times, "rk4", step_size=_stable_substeps(system)
            )
        chunks.append(F.avg_pool2d(trajectory.flatten(0, 1), refine).unflatten(0, (-1, frames)))
    coarse_velocity = F.avg_pool2d(velocity, refine)
    return TransportData(torch.cat(chunks), coarse_velocity, coefficient)


def physics_rollout(frame: Tensor, velocity: Tensor, diffusion: Tensor, steps: int) -> Tensor:
    """True-physics forecast: :class:`~uqdyn.physics.AdvectionDiffusion` on the observed grid.

    Integrates ``dI/dt + div(w I) = D lap I`` (rk4, stable sub-steps) with the hidden
    velocity and diffusion, in the units of :func:`simulate_transport` (cells, frames).

    Parameters
    ----------
    frame : Tensor, shape (batch, 1, height, width)
        The last observed frame.
    velocity : Tensor, shape (batch, 2, height, width)
    diffusion : Tensor, shape (batch,)
    steps : int
        Frames to forecast (>= 1).

    Returns
    -------
    Tensor, shape (batch, steps, 1, height, width)
    """
    if not isinstance(frame, Tensor) or frame.ndim != 4 or frame.shape[1] != 1:
        raise ValueError(
            "frame must have shape (batch, 1, height, width), got "
            f"{tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__}"
        )
    steps = as_int(steps, "steps", minimum=1)
    height, width = frame.shape[-2:]
    system = AdvectionDiffusion(
        size=(height, width),
        length=(float(height), float(width)),
        diffusion=diffusion.to(frame),
        velocity=velocity.to(frame),
    )
    times = torch.arange(steps + 1, dtype=frame.dtype)
    with torch.no_grad():
        trajectory = simulate(system, frame, times, "rk4", step_size=_stable_substeps(system))
    return trajectory[:, 1:]
