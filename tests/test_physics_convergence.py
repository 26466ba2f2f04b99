"""Observed orders of convergence of uqdyn.physics against analytic solutions."""

import math

import numpy as np
import pytest
import torch

from uqdyn.physics import AdvectionDiffusion, DampedPendulum, simulate


def _periodic_gaussian(y, x, centre, variance, length):
    """Periodic Gaussian (sum over the nearest images) of unit peak-times-variance mass."""
    total = torch.zeros(y.shape[0], x.shape[0], dtype=torch.float64)
    for image_y in (-2, -1, 0, 1, 2):
        for image_x in (-2, -1, 0, 1, 2):
            dy = y.reshape(-1, 1) - centre[0] - image_y * length
            dx = x.reshape(1, -1) - centre[1] - image_x * length
            total += torch.exp(-(dx**2 + dy**2) / (2.0 * variance))
    return total


def _blob_error(points: int) -> float:
    length, diffusion, velocity, width0, final = 1.0, 0.01, (0.8, -0.4), 0.08, 0.25
    system = AdvectionDiffusion(
        (points, points),
        length,
        diffusion=torch.tensor(diffusion, dtype=torch.float64),
        velocity=torch.tensor(velocity, dtype=torch.float64),
    )
    y, x = system.coordinates(dtype=torch.float64)
    centre = (0.5, 0.5)
    state0 = _periodic_gaussian(y, x, centre, width0**2, length).reshape(1, 1, points, points)
    # rk4 at half the stability limit: its O(dt^4) error is negligible against O(dx^2)
    steps = math.ceil(final / (0.5 * system.stable_dt("rk4")))
    times = torch.linspace(0.0, final, steps + 1, dtype=torch.float64)
    with torch.no_grad():
        numeric = simulate(system, state0, times, "rk4")[0, -1, 0]
    variance = width0**2 + 2.0 * diffusion * final
    moved = (centre[0] + velocity[1] * final, centre[1] + velocity[0] * final)
    exact = (width0**2 / variance) * _periodic_gaussian(y, x, moved, variance, length)
    return float((numeric - exact).abs().max())


def test_advection_diffusion_spatial_order_is_two():
    sizes = [24, 48, 96]
    errors = [_blob_error(n) for n in sizes]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert abs(orders[-1] - 2.0) < 0.2, (errors, orders)
    assert errors[-1] < 1e-2


def _oscillator_exact(t, omega0, alpha, x0, v0):
    damped = math.sqrt(omega0**2 - alpha**2 / 4)
    envelope = np.exp(-alpha * t / 2)
    b = (v0 + alpha * x0 / 2) / damped
    return envelope * (x0 * np.cos(damped * t) + b * np.sin(damped * t))


@pytest.mark.parametrize(
    ("method", "nominal", "steps"),
    [("rk4", 4, (0.2, 0.1, 0.05)), ("euler", 1, (0.02, 0.01, 0.005))],
)
def test_linear_oscillator_temporal_order(method, nominal, steps):
    omega0, alpha, final = 1.3, 0.5, 4.0
    # float64 parameters: python floats would be rounded to the float32 default dtype
    as64 = lambda value: torch.tensor(value, dtype=torch.float64)  # noqa: E731
    system = DampedPendulum(omega0=as64(omega0), alpha=as64(alpha), linear=True)
    state0 = torch.tensor([[0.7, -0.2]], dtype=torch.float64)
    errors = []
    for step in steps:
        count = round(final / step)
        times = torch.arange(count + 1, dtype=torch.float64) * step
        with torch.no_grad():
            angle = simulate(system, state0, times, method)[0, :, 0].numpy()
        exact = _oscillator_exact(times.numpy(), omega0, alpha, 0.7, -0.2)
        errors.append(float(np.abs(angle - exact).max()))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert abs(orders[-1] - nominal) < 0.2, (errors, orders)
