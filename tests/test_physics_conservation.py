"""Mass conservation and linear wave dynamics of the gridded systems."""

import math

import torch
from torch import nn

from uqdyn.physics import AdvectionDiffusion, ShallowWater, simulate

F64 = torch.float64


def _tensor(value):
    return torch.tensor(value, dtype=F64)


class _NeuralForcing(nn.Module):
    """A small random network (pointwise layer, periodic shift, tanh) as a learned forcing."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(2, 3, generator=generator, dtype=F64))
        self.bias = nn.Parameter(torch.randn(2, 1, 1, generator=generator, dtype=F64))

    def forward(self, state):
        mixed = torch.einsum("oc,bchw->bohw", self.weight, state) + self.bias
        return 0.01 * torch.tanh(mixed + mixed.roll(1, dims=-1))


def _relative_mass_drift(total):
    return float(((total - total[:, :1]).abs() / total[:, :1].abs()).max())


def test_shallow_water_conserves_mass_to_round_off():
    for forcing in (None, _NeuralForcing()):
        system = ShallowWater(
            (32, 32),
            coriolis=_tensor(1.0),
            gravity=_tensor(1.0),
            mean_depth=_tensor(1.0),
            forcing=forcing,
        ).double()
        state0 = system.initial_state(2, generator=torch.Generator().manual_seed(3), dtype=F64)
        state0[:, 0:2] = 0.05 * torch.randn(
            2, 2, 32, 32, generator=torch.Generator().manual_seed(4), dtype=F64
        )
        dt = 0.5 * system.stable_dt("rk4")
        times = torch.arange(201, dtype=F64) * dt
        with torch.no_grad():
            trajectory = simulate(system, state0, times, "rk4")
        mass = (1.0 + trajectory[:, :, 2]).sum(dim=(-1, -2))
        # the flow did evolve, yet the mass did not change beyond round-off
        assert float((trajectory[:, -1] - state0).abs().max()) > 1e-3
        assert _relative_mass_drift(mass) < 1e-10


def test_advection_diffusion_conserves_mass_with_divergent_velocity():
    size = (24, 32)
    generator = torch.Generator().manual_seed(5)
    y = torch.arange(size[0], dtype=F64).reshape(-1, 1) / size[0]
    x = torch.arange(size[1], dtype=F64).reshape(1, -1) / size[1]
    # a smooth velocity with div w != 0 (the flow compresses and expands the tracer)
    wx = 0.5 * torch.sin(2 * math.pi * y) + 0.3 * torch.cos(2 * math.pi * x)
    wy = 0.4 * torch.cos(2 * math.pi * x) + 0.2 * torch.sin(2 * math.pi * y)
    velocity = torch.stack([torch.stack([wx, wy]), torch.stack([-wy, wx])])
    assert float(velocity[:, 0].diff(dim=-1).abs().max()) > 0.01
    system = AdvectionDiffusion(
        size, (1.0, 1.5), diffusion=_tensor([0.01, 0.003]), velocity=velocity
    )
    state0 = system.initial_state(2, generator=generator, dtype=F64)
    times = torch.arange(201, dtype=F64) * 0.5 * system.stable_dt("rk4")
    with torch.no_grad():
        trajectory = simulate(system, state0, times)
    assert float((trajectory[:, -1] - state0).abs().max()) > 1e-2
    assert _relative_mass_drift(trajectory.sum(dim=(-1, -2, -3))) < 1e-10


class _NoForcing(nn.Module):
    def forward(self, state):
        return torch.zeros_like(state[:, :2])


def test_shallow_water_linear_waves_follow_c_grid_dispersion():
    """Eigenvalues of the Jacobian at rest equal the C-grid inertia-gravity frequencies.

    omega^2 = f^2 cos^2(kx dx/2) cos^2(ky dy/2) + g H (4 sin^2(kx dx/2)/dx^2 + 4 sin^2(ky dy/2)/dy^2)
    for every resolved wavenumber, plus one steady (geostrophic) mode per wavenumber.
    """
    height, width, length = 6, 8, (3.0, 4.0)
    f, g, depth = 0.7, 2.0, 1.5
    system = ShallowWater(
        (height, width),
        length,
        coriolis=_tensor(f),
        gravity=_tensor(g),
        mean_depth=_tensor(depth),
        forcing=_NoForcing(),
    )
    rest = torch.zeros(1, 3, height, width, dtype=F64)
    jacobian = torch.autograd.functional.jacobian(
        lambda s: system(torch.zeros((), dtype=F64), s), rest
    ).reshape(3 * height * width, 3 * height * width)
    eigenvalues = torch.linalg.eigvals(jacobian)
    assert float(eigenvalues.real.abs().max()) < 1e-10  # no damping, no growth
    dy, dx = system.spacing
    expected = []
    for m in range(height):
        for n in range(width):
            ky, kx = 2 * math.pi * m / length[0], 2 * math.pi * n / length[1]
            omega2 = f**2 * math.cos(kx * dx / 2) ** 2 * math.cos(ky * dy / 2) ** 2 + g * depth * (
                4 * math.sin(kx * dx / 2) ** 2 / dx**2 + 4 * math.sin(ky * dy / 2) ** 2 / dy**2
            )
            expected += [math.sqrt(omega2), -math.sqrt(omega2), 0.0]
    got = torch.sort(eigenvalues.imag).values
    want = torch.sort(torch.tensor(expected, dtype=F64)).values
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_shallow_water_energy_at_rest_is_the_potential_energy():
    system = ShallowWater((8, 8), gravity=_tensor(2.0), mean_depth=_tensor(1.0)).double()
    state = torch.zeros(1, 3, 8, 8, dtype=F64)
    state[0, 2] = 0.1 * torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    cell = (2 * math.pi / 8) ** 2
    expected = float(0.5 * 2.0 * state[0, 2].square().sum() * cell)
    with torch.no_grad():
        energy, mass = float(system.energy(state)[0]), float(system.mass(state)[0])
    assert abs(energy - expected) < 1e-12 * expected
    assert abs(mass - float((1.0 + state[0, 2]).sum() * cell)) < 1e-12


def test_shallow_water_energy_is_conserved_by_the_inviscid_tendency_and_lost_to_drag():
    class _NoForcing(nn.Module):
        def forward(self, state):
            return state.new_zeros(state.shape[0], 2, *state.shape[2:])

    inviscid = ShallowWater((32, 32), forcing=_NoForcing()).double()
    damped = ShallowWater((32, 32)).double()  # default drag and viscosity
    state = inviscid.initial_state(2, generator=torch.Generator().manual_seed(3), dtype=F64)
    state[:, 0:2] = 0.05 * torch.randn(
        2, 2, 32, 32, generator=torch.Generator().manual_seed(4), dtype=F64
    )
    x = state.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(inviscid.energy(x).sum(), x)
    t = torch.zeros((), dtype=F64)
    with torch.no_grad():
        tendency = inviscid(t, state)
        rate_inviscid = (gradient * tendency).sum(dim=(1, 2, 3))
        rate_damped = (gradient * damped(t, state)).sum(dim=(1, 2, 3))
    scale = gradient.flatten(1).norm(dim=1) * tendency.flatten(1).norm(dim=1)
    # dE/dt of the semi-discrete inviscid scheme: only a discretisation residual
    assert bool((rate_inviscid.abs() < 1e-3 * scale).all())
    # drag and viscosity remove energy, far beyond that residual
    assert bool((rate_damped < -20 * rate_inviscid.abs()).all())
