"""Right-hand sides of the systems against independent references, and their interfaces."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from uqdyn.physics import (
    AdvectionDiffusion,
    DampedPendulum,
    Dynamics,
    FitzHughNagumo,
    GrayScott,
    Lorenz96,
    NavierStokes,
    ShallowWater,
    simulate,
)

F64 = torch.float64
T0 = torch.zeros((), dtype=F64)
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


def _t(value):
    return torch.tensor(value, dtype=F64)


def _random(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_fitzhugh_nagumo_rhs_matches_scipy_laplacian():
    a, b, k, length, n = 1e-3, 5e-3, 5e-3, 2.0, 10
    system = FitzHughNagumo((n, n), length, a=_t(a), b=_t(b), k=_t(k))
    state = _random((2, 2, n, n))
    got = system(T0, state).detach().numpy()
    s = state.numpy()
    lap_u = np.stack([ndimage.laplace(s[i, 0], mode="wrap") for i in range(2)]) / (length / n) ** 2
    lap_v = np.stack([ndimage.laplace(s[i, 1], mode="wrap") for i in range(2)]) / (length / n) ** 2
    u, v = s[:, 0], s[:, 1]
    np.testing.assert_allclose(got[:, 0], a * lap_u + u - u**3 - k - v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[:, 1], b * lap_v + u - v, rtol=1e-12, atol=1e-12)


def test_gray_scott_rhs_matches_scipy_laplacian():
    du_, dv_, feed, kill, length, (h, w) = 2e-5, 1e-5, 0.04, 0.06, 2.5, (8, 8)
    system = GrayScott(
        (h, w), length, diffusion_u=_t(du_), diffusion_v=_t(dv_), feed=_t(feed), kill=_t(kill)
    )
    state = _random((3, 2, h, w), seed=1)
    got = system(T0, state).detach().numpy()
    s = state.numpy()
    scale = (length / h) ** 2
    for i in range(3):
        u, v = s[i, 0], s[i, 1]
        lap_u = ndimage.laplace(u, mode="wrap") / scale
        lap_v = ndimage.laplace(v, mode="wrap") / scale
        np.testing.assert_allclose(got[i, 0], du_ * lap_u - u * v * v + feed * (1 - u), atol=1e-12)
        np.testing.assert_allclose(
            got[i, 1], dv_ * lap_v + u * v * v - (feed + kill) * v, atol=1e-12
        )


def test_lorenz96_rhs_matches_loop_and_energy_identity():
    dim, forcing = 7, 8.0
    system = Lorenz96(dim, forcing=_t(forcing))
    state = 3.0 * torch.randn(4, dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = system(T0, state).detach()
    x = state.numpy()
    expected = np.empty_like(x)
    for i in range(dim):
        expected[:, i] = (x[:, (i + 1) % dim] - x[:, i - 2]) * x[:, i - 1] - x[:, i] + forcing
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=1e-12)
    # the quadratic term conserves energy: sum x dx/dt = -sum x^2 + F sum x
    energy_rate = (state * got).sum(dim=1)
    torch.testing.assert_close(energy_rate, -(state**2).sum(dim=1) + forcing * state.sum(dim=1))


def test_advection_diffusion_rhs_matches_loop_flux_form():
    h, w, length, diffusion = 5, 6, (1.0, 1.5), 0.03
    velocity = torch.randn(2, h, w, generator=torch.Generator().manual_seed(3), dtype=F64)
    system = AdvectionDiffusion((h, w), length, diffusion=_t(diffusion), velocity=velocity)
    state = _random((1, 1, h, w), seed=4)
    got = system(T0, state)[0, 0].detach().numpy()
    c, wx, wy = state[0, 0].numpy(), velocity[0].numpy(), velocity[1].numpy()
    dy, dx = length[0] / h, length[1] / w
    expected = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            east = 0.5 * (wx[i, j] + wx[i, (j + 1) % w]) * 0.5 * (c[i, j] + c[i, (j + 1) % w])
            west = 0.5 * (wx[i, j - 1] + wx[i, j]) * 0.5 * (c[i, j - 1] + c[i, j])
            north = 0.5 * (wy[i, j] + wy[(i + 1) % h, j]) * 0.5 * (c[i, j] + c[(i + 1) % h, j])
            south = 0.5 * (wy[i - 1, j] + wy[i, j]) * 0.5 * (c[i - 1, j] + c[i, j])
            lap = (c[i, (j + 1) % w] - 2 * c[i, j] + c[i, j - 1]) / dx**2 + (
                c[(i + 1) % h, j] - 2 * c[i, j] + c[i - 1, j]
            ) / dy**2
            expected[i, j] = diffusion * lap - (east - west) / dx - (north - south) / dy
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_shallow_water_rhs_matches_loop_c_grid():
    h, w, length, f, g, depth = 4, 5, (2.0, 3.0), 0.8, 9.81, 2.0

    class NoForcing(torch.nn.Module):
        def forward(self, state):
            return torch.zeros_like(state[:, :2])

    system = ShallowWater(
        (h, w), length, coriolis=_t(f), gravity=_t(g), mean_depth=_t(depth), forcing=NoForcing()
    )
    state = 0.3 * torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(5), dtype=F64)
    got = system(T0, state)[0].detach().numpy()
    u, v, eta = (state[0, c].numpy() for c in range(3))
    dy, dx = length[0] / h, length[1] / w

    def at(a, i, j):
        return a[i % h, j % w]

    def zeta(i, j):  # corner (i + 1/2, j + 1/2)
        return (at(v, i, j + 1) - at(v, i, j)) / dx - (at(u, i + 1, j) - at(u, i, j)) / dy

    def bernoulli(i, j):
        kinetic = 0.25 * (
            at(u, i, j) ** 2 + at(u, i, j - 1) ** 2 + at(v, i, j) ** 2 + at(v, i - 1, j) ** 2
        )
        return g * at(eta, i, j) + kinetic

    du, dv, dh = np.empty((h, w)), np.empty((h, w)), np.empty((h, w))
    for i in range(h):
        for j in range(w):
            q_u = f + 0.5 * (zeta(i, j) + zeta(i - 1, j))
            v_u = 0.25 * (at(v, i, j) + at(v, i - 1, j) + at(v, i, j + 1) + at(v, i - 1, j + 1))
            du[i, j] = q_u * v_u - (bernoulli(i, j + 1) - bernoulli(i, j)) / dx
            q_v = f + 0.5 * (zeta(i, j) + zeta(i, j - 1))
            u_v = 0.25 * (at(u, i, j) + at(u, i, j - 1) + at(u, i + 1, j) + at(u, i + 1, j - 1))
            dv[i, j] = -q_v * u_v - (bernoulli(i + 1, j) - bernoulli(i, j)) / dy

            def flux_x(i, j):
                return at(u, i, j) * (depth + 0.5 * (at(eta, i, j) + at(eta, i, j + 1)))

            def flux_y(i, j):
                return at(v, i, j) * (depth + 0.5 * (at(eta, i, j) + at(eta, i + 1, j)))

            dh[i, j] = (
                -(flux_x(i, j) - flux_x(i, j - 1)) / dx - (flux_y(i, j) - flux_y(i - 1, j)) / dy
            )
    np.testing.assert_allclose(got[0], du, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], dv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[2], dh, rtol=1e-12, atol=1e-12)


def test_undamped_pendulum_conserves_energy():
    omega0 = 1.7
    system = DampedPendulum(omega0=_t(omega0), alpha=_t(0.0))
    state0 = system.initial_state(5, generator=torch.Generator().manual_seed(6), dtype=F64)
    times = torch.linspace(0.0, 10.0, 21, dtype=F64)
    with torch.no_grad():
        trajectory = simulate(system, state0, times, "dopri5", rtol=1e-11, atol=1e-12)
    angle, velocity = trajectory[..., 0], trajectory[..., 1]
    energy = 0.5 * velocity**2 + omega0**2 * (1 - torch.cos(angle))
    torch.testing.assert_close(energy, energy[:, :1].expand_as(energy), rtol=1e-8, atol=1e-10)


def _all_systems(batch_parameters=None):
    p = batch_parameters
    return [
        AdvectionDiffusion((8, 8), diffusion=p if p is not None else 0.01),
        FitzHughNagumo((8, 8), k=p if p is not None else 5e-3),
        GrayScott((8, 8), feed=p if p is not None else 0.04),
        ShallowWater((8, 8), coriolis=p if p is not None else 1.0),
        Lorenz96(6, forcing=p if p is not None else 8.0),
        DampedPendulum(omega0=p if p is not None else 1.0),
        NavierStokes((8, 8), viscosity=p if p is not None else 1e-3),
    ]


@pytest.mark.parametrize("index", range(7))
def test_interface_shapes_and_reproducible_initial_states(index):
    system = _all_systems()[index]
    assert isinstance(system, Dynamics)
    first = system.initial_state(3, generator=torch.Generator().manual_seed(7))
    again = system.initial_state(3, generator=torch.Generator().manual_seed(7))
    other = system.initial_state(3, generator=torch.Generator().manual_seed(8))
    assert first.shape == (3, *system.state_shape)
    assert first.dtype == torch.get_default_dtype()
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert system.initial_state(2, dtype=F64).dtype == F64
    for name in system.parameter_names:
        assert isinstance(getattr(system, name), torch.Tensor)
    assert system.stable_dt() > 0
    derivative = system(torch.zeros(()), first)
    assert derivative.shape == first.shape and derivative.dtype == first.dtype


@pytest.mark.parametrize("index", range(7))
def test_per_sample_parameters_match_separate_runs(index):
    values = [0.02, 0.05]
    batched = _all_systems(_t(values))[index].double()
    state0 = batched.initial_state(2, generator=torch.Generator().manual_seed(9), dtype=F64)
    step = 0.5 * min(batched.stable_dt(), 0.1)
    times = torch.arange(5, dtype=F64) * step
    with torch.no_grad():
        together = simulate(batched, state0, times)
        for i, value in enumerate(values):
            alone_system = _all_systems(_t(value))[index].double()
            alone = simulate(alone_system, state0[i : i + 1], times)
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_simulate_follows_device_and_dtype(device):
    system = ShallowWater((16, 16)).to(device)
    state0 = system.initial_state(
        2, generator=torch.Generator(device).manual_seed(0), device=device
    )
    times = torch.linspace(0.0, 1.0, 6)
    trajectory = simulate(system, state0, times)
    assert trajectory.device.type == torch.device(device).type
    assert trajectory.dtype == torch.float32 and trajectory.shape == (2, 6, 3, 16, 16)
    # a float64 state runs the float32 module in float64 and agrees with a float64 module
    reference = simulate(system.double(), state0.double(), times.double())
    float64_run = simulate(system, state0.double(), times)
    assert float64_run.dtype == F64
    torch.testing.assert_close(float64_run, reference)
    torch.testing.assert_close(trajectory.double(), reference, rtol=1e-4, atol=1e-5)
    system.zero_grad()
    simulate(system, state0.double(), times)[:, -1].square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in system.parameters())


def test_time_varying_velocity_callable():
    size = (12, 12)

    def velocity(t):
        return torch.stack([torch.cos(t), torch.sin(t)])

    moving = AdvectionDiffusion(size, diffusion=_t(0.01), velocity=velocity)
    assert moving.parameter_names == ("diffusion",)
    state0 = moving.initial_state(1, generator=torch.Generator().manual_seed(1), dtype=F64)
    # at t = 0 the callable agrees with the constant field (1, 0)
    frozen = AdvectionDiffusion(size, diffusion=_t(0.01), velocity=_t([1.0, 0.0]))
    torch.testing.assert_close(moving(T0, state0), frozen(T0, state0))
    later = torch.tensor(math.pi / 2, dtype=F64)
    turned = AdvectionDiffusion(size, diffusion=_t(0.01), velocity=_t([0.0, 1.0]))
    torch.testing.assert_close(moving(later, state0), turned(later, state0), atol=1e-12, rtol=0)
