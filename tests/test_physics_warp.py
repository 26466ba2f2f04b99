"""The semi-Lagrangian warping step against exact solutions."""

import math

import pytest
import torch

from uqdyn.physics import warp

F64 = torch.float64
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def _field(batch=2, channels=2, height=12, width=16, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator, dtype=F64).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_velocity_and_vanishing_diffusion_is_the_identity(device):
    field = _field(device=device)
    velocity = torch.zeros(2, 2, 12, 16, dtype=F64, device=device)
    for diffusion in (0.0, 1e-9):
        torch.testing.assert_close(warp(field, velocity, diffusion), field, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_constant_whole_cell_velocity_is_a_periodic_roll(device):
    field = _field(device=device)
    spacing, dt = (0.5, 0.25), 0.5
    velocity = torch.zeros(1, 2, 12, 16, dtype=F64, device=device)
    velocity[:, 0] = 1.0  # x: 1.0 * 0.5 / 0.25 = 2 cells
    velocity[:, 1] = -3.0  # y: -3.0 * 0.5 / 0.5 = -3 cells
    moved = warp(field, velocity, 0.0, dt, spacing=spacing)
    torch.testing.assert_close(moved, field.roll(shifts=(-3, 2), dims=(-2, -1)), rtol=0, atol=1e-12)


def test_zero_velocity_equals_the_exact_periodic_heat_kernel():
    """Compare with exp(-D |k|^2 dt) applied in Fourier space (the continuum heat flow)."""
    height, width, spacing = 32, 40, (0.2, 0.25)
    field = _field(1, 1, height, width, seed=1)
    diffusion, dt = 0.5, 0.4  # sigma = sqrt(2 D dt) = 0.63: 3.2 cells in y, 2.5 in x
    velocity = torch.zeros(1, 2, height, width, dtype=F64)
    smoothed = warp(field, velocity, diffusion, dt, spacing=spacing, truncate=9.0)
    ky = 2 * math.pi * torch.fft.fftfreq(height, d=spacing[0], dtype=F64).reshape(-1, 1)
    kx = 2 * math.pi * torch.fft.fftfreq(width, d=spacing[1], dtype=F64).reshape(1, -1)
    exact = torch.fft.ifft2(torch.fft.fft2(field) * torch.exp(-diffusion * dt * (kx**2 + ky**2)))
    torch.testing.assert_close(smoothed, exact.real, rtol=0, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_uniform_velocity_conserves_mass(device):
    field = _field(device=device)
    velocity = torch.empty(2, 2, 12, 16, dtype=F64, device=device)
    velocity[:, 0], velocity[:, 1] = 1.37, -0.61
    moved = warp(field, velocity, torch.tensor([0.3, 0.05], dtype=F64, device=device), 1.3)
    mass, moved_mass = field.sum(dim=(-1, -2)), moved.sum(dim=(-1, -2))
    torch.testing.assert_close(moved_mass, mass, rtol=1e-12, atol=0)
    assert float((moved - field).abs().max()) > 0.1


def test_half_cell_shift_of_a_linear_profile_interpolates():
    """Departure points half-way between nodes: a vanishing kernel weighs both nodes equally;
    a kernel wide against the cell reproduces the smoothed sine at the departure point."""
    width = 64
    x = torch.arange(width, dtype=F64)
    field = torch.sin(2 * math.pi * x / width).reshape(1, 1, 1, width).expand(1, 1, 4, width)
    velocity = torch.zeros(1, 2, 4, width, dtype=F64)
    velocity[:, 0] = 0.5
    moved = warp(field.contiguous(), velocity, 1e-6)
    torch.testing.assert_close(moved, 0.5 * (field + field.roll(1, -1)), rtol=0, atol=1e-12)
    wide = warp(field.contiguous(), velocity, 2.0, truncate=8.0)  # sigma = 2 cells
    exact = torch.sin(2 * math.pi * (x - 0.5) / width) * math.exp(
        -0.5 * 4.0 * (2 * math.pi / width) ** 2
    )
    torch.testing.assert_close(wide[0, 0, 0], exact, rtol=0, atol=1e-6)


def test_per_sample_diffusion_matches_separate_calls():
    field = _field()
    velocity = 0.7 * torch.randn(
        2, 2, 12, 16, generator=torch.Generator().manual_seed(4), dtype=F64
    )
    # the window follows the largest D of the batch: truncate far out so windows agree
    together = warp(field, velocity, torch.tensor([0.2, 0.9], dtype=F64), truncate=8.0)
    for index, diffusion in enumerate((0.2, 0.9)):
        alone = warp(field[index : index + 1], velocity[index : index + 1], diffusion, truncate=8.0)
        torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=1e-12)


def test_warp_rejects_bad_input():
    field = _field()
    velocity = torch.zeros(2, 2, 12, 16, dtype=F64)
    with pytest.raises(ValueError, match="diffusion must be finite and >= 0"):
        warp(field, velocity, -0.1)
    with pytest.raises(ValueError, match=r"velocity must have shape \(2, 2, 12, 16\)"):
        warp(field, velocity[:, :, :6], 0.1)
    with pytest.raises(ValueError, match="field must have shape"):
        warp(field[0], velocity, 0.1)
    with pytest.raises(TypeError, match="field must be a floating tensor"):
        warp(field.long(), velocity, 0.1)
    with pytest.raises(ValueError, match=r"dt=0.0; expected a finite float > 0"):
        warp(field, velocity, 0.1, dt=0.0)
    with pytest.raises(ValueError, match=r"diffusion must be a scalar or have shape \(2,\)"):
        warp(field, velocity, torch.ones(3))
