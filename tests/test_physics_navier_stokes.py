"""The pseudo-spectral Navier-Stokes solver against exact properties."""

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from uqdyn.physics import NavierStokes, simulate

F64 = torch.float64


def _t(value):
    return torch.tensor(value, dtype=F64)


def test_taylor_green_vortex_decays_exactly():
    """w = sin(2 pi x) sin(2 pi y) is steady for Euler; viscosity damps it as exp(-8 pi^2 nu t)."""
    nu = 0.01
    system = NavierStokes((16, 16), viscosity=_t(nu), forcing_amplitude=_t(0.0))
    y, x = system.coordinates(dtype=F64)
    vortex = torch.sin(2 * math.pi * x).reshape(1, -1) * torch.sin(2 * math.pi * y).reshape(-1, 1)
    state0 = vortex.reshape(1, 1, 16, 16)
    times = torch.linspace(0.0, 1.0, 5, dtype=F64)
    with torch.no_grad():
        trajectory = simulate(system, state0, times, "dopri5", rtol=1e-11, atol=1e-13)
    decay = torch.exp(-8 * math.pi**2 * nu * times).reshape(1, -1, 1, 1, 1)
    torch.testing.assert_close(trajectory, decay * state0.unsqueeze(1), rtol=0, atol=1e-9)


def test_inviscid_advection_conserves_energy_and_enstrophy():
    size = 32
    system = NavierStokes((size, size), viscosity=_t(1e-30), forcing_amplitude=_t(0.0))
    state = system.initial_state(2, generator=torch.Generator().manual_seed(0), dtype=F64)
    # keep modes inside the 2/3 dealiasing band so the truncated product is exact Galerkin
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=F64).abs()
    band = (k.reshape(-1, 1) < size / 3 - 1) & (k.reshape(1, -1) < size / 3 - 1)
    state = torch.fft.ifft2(torch.fft.fft2(state) * band).real
    rate = system(torch.zeros((), dtype=F64), state)
    enstrophy_rate = (state * rate).sum(dim=(-1, -2, -3))
    ky = 2 * math.pi * torch.fft.fftfreq(size, d=1.0 / size, dtype=F64).reshape(-1, 1)
    kx = 2 * math.pi * torch.fft.fftfreq(size, d=1.0 / size, dtype=F64).reshape(1, -1)
    k2 = kx**2 + ky**2
    psi = torch.fft.ifft2(torch.fft.fft2(state) / torch.where(k2 > 0, k2, 1.0) * (k2 > 0)).real
    energy_rate = (psi * rate).sum(dim=(-1, -2, -3))
    scale = (state.abs() * rate.abs()).sum(dim=(-1, -2, -3))
    assert float(scale.detach().min()) > 1.0  # the flow is genuinely nonlinear
    assert float((enstrophy_rate / scale).detach().abs().max()) < 1e-12
    assert float((energy_rate / scale).detach().abs().max()) < 1e-12


def test_forcing_drives_the_fluid_at_rest():
    system = NavierStokes((8, 8), forcing_amplitude=_t(0.1))
    rest = torch.zeros(1, 1, 8, 8, dtype=F64)
    y, x = system.coordinates(dtype=F64)
    phase = 2 * math.pi * (x.reshape(1, -1) + y.reshape(-1, 1))
    expected = 0.1 * (torch.sin(phase) + torch.cos(phase))
    torch.testing.assert_close(system(torch.zeros((), dtype=F64), rest)[0, 0].detach(), expected)


def test_navier_stokes_gradcheck():
    system = NavierStokes((8, 8)).double()
    names = [name for name, _ in system.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in system.parameters())
    state = system.initial_state(2, generator=torch.Generator().manual_seed(1), dtype=F64)
    state.requires_grad_(True)

    def rhs(state, *params):
        return functional_call(
            system, dict(zip(names, params, strict=True)), (torch.zeros(()), state)
        )

    assert gradcheck(rhs, (state, *values), eps=1e-6, atol=1e-7)


def test_navier_stokes_rejects_bad_input():
    with pytest.raises(ValueError, match="size must be even"):
        NavierStokes((9, 8))
    with pytest.raises(ValueError, match="viscosity must be > 0"):
        NavierStokes(viscosity=-1e-3)


def test_rhs_matches_analytic_advection_of_a_two_mode_flow():
    """psi = sin(px) cos(qy) + b cos(r(x + y)); u = d psi/dy, v = -d psi/dx, w = -lap psi."""
    nu, b = 0.01, 0.5
    p, q, r = 2 * math.pi, 4 * math.pi, 2 * math.pi
    system = NavierStokes((32, 32), viscosity=_t(nu), forcing_amplitude=_t(0.0))
    yy, xx = system.coordinates(dtype=F64)
    y, x = yy.reshape(-1, 1), xx.reshape(1, -1)
    k1, k2 = p**2 + q**2, 2 * r**2
    w = k1 * torch.sin(p * x) * torch.cos(q * y) + b * k2 * torch.cos(r * (x + y))
    u = -q * torch.sin(p * x) * torch.sin(q * y) - b * r * torch.sin(r * (x + y))
    v = -p * torch.cos(p * x) * torch.cos(q * y) + b * r * torch.sin(r * (x + y))
    w_x = k1 * p * torch.cos(p * x) * torch.cos(q * y) - b * k2 * r * torch.sin(r * (x + y))
    w_y = -k1 * q * torch.sin(p * x) * torch.sin(q * y) - b * k2 * r * torch.sin(r * (x + y))
    lap_w = -(k1**2) * torch.sin(p * x) * torch.cos(q * y) - b * k2**2 * torch.cos(r * (x + y))
    expected = -(u * w_x + v * w_y) + nu * lap_w
    got = system(torch.zeros((), dtype=F64), w.reshape(1, 1, 32, 32))[0, 0].detach()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9 * float(expected.abs().max()))
