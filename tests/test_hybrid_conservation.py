"""A trained shallow-water hybrid keeps total mass over a 500-step rollout only when projected."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqdyn.models.hybrid import ConvAugmentation, HybridDynamics, fit_aphynity
from uqdyn.physics import ShallowWater, simulate
from uqdyn.physics.shallow_water import LinearDragViscosity

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small grids: avoid thread contention
    yield
    torch.set_num_threads(previous)


class _NoForcing(nn.Module):
    def forward(self, state):
        return state.new_zeros(state.shape[0], 2, *state.shape[2:])


def _hybrid(size, conserve):
    physics = ShallowWater((size, size), forcing=_NoForcing()).double()
    for parameter in physics.parameters():
        parameter.requires_grad_(False)
    torch.manual_seed(0)  # same network in both variants
    network = ConvAugmentation(3, hidden=8, depth=1).double()
    return HybridDynamics(physics, network, conserve=(2,) if conserve else None)


def test_trained_hybrid_conserves_mass_over_500_steps_only_with_the_projection():
    size, dt = 8, 0.2
    spacing = (2 * math.pi / size, 2 * math.pi / size)
    truth = ShallowWater(
        (size, size), forcing=LinearDragViscosity(spacing, drag=0.05, viscosity=5e-3)
    ).double()
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(6, dtype=torch.float64) * dt
    with torch.no_grad():
        state0 = truth.initial_state(4, generator=generator, dtype=torch.float64)
        data = simulate(truth, state0, times, step_size=dt / 4)
    rollout_times = torch.arange(501, dtype=torch.float64) * dt
    test0 = truth.initial_state(3, generator=generator, dtype=torch.float64)
    drift = {}
    for conserve in (True, False):
        model = _hybrid(size, conserve)
        result = fit_aphynity(model, data, times, epochs=3, steps_per_epoch=5, lr=1e-2)
        assert result.trajectory_loss[-1] < result.trajectory_loss[0]  # it did train
        with torch.no_grad():
            path = simulate(model, test0, rollout_times, step_size=dt)
        mass = (1.0 + path[:, :, 2]).sum(dim=(-1, -2))
        drift[conserve] = float(((mass - mass[:, :1]).abs() / mass[:, :1]).max())
        assert bool(torch.isfinite(path).all())
    # projected: mass is exact to round-off (float64, 64 cells, 2000 rk4 stages)
    assert drift[True] < 1e-12
    # unprojected: the trained network's mean depth tendency accumulates over the rollout
    assert drift[False] > 1e-6


def _energy_rate(physics, state, tendency):
    x = state.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(physics.energy(x).sum(), x)
    return (gradient * tendency).sum(dim=(1, 2, 3))


def _random_network(scale=0.3):
    torch.manual_seed(0)
    network = ConvAugmentation(3, hidden=8, depth=1).double()
    with torch.no_grad():  # an untrained network that injects energy
        for parameter in network.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return network


def test_dissipate_projection_removes_only_energy_gain_and_keeps_mass():
    physics = _inviscid()
    network = _random_network()
    model = HybridDynamics(physics, network, conserve=(2,), dissipate=physics.energy)
    mass_only = HybridDynamics(physics, network, conserve=(2,))
    state = physics.initial_state(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    state[:, :2] = 0.1 * torch.randn(6, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        projected = model.augmentation_part(state)
        raw = mass_only.augmentation_part(state)
    before, after = _energy_rate(physics, state, raw), _energy_rate(physics, state, projected)
    assert bool((before > 0).any()) and bool((before < 0).any())  # both cases occur
    gaining = before > 0
    assert bool((after[gaining].abs() < 1e-10 * before[gaining]).all())  # gain removed
    assert torch.equal(projected[~gaining], raw[~gaining])  # losses untouched
    assert float(projected[:, 2].mean(dim=(-1, -2)).abs().max()) < 1e-15  # mass kept
    # gradients reach the network through the projection
    model.augmentation_part(state).square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in network.parameters())


def _inviscid(size=8):
    physics = ShallowWater((size, size), forcing=_NoForcing()).double()
    for parameter in physics.parameters():
        parameter.requires_grad_(False)
    return physics


def test_energy_constraint_bounds_a_500_step_rollout_that_diverges_without_it():
    physics = _inviscid()
    state0 = physics.initial_state(3, generator=torch.Generator().manual_seed(5), dtype=F64)
    times = torch.arange(501, dtype=F64) * 0.2
    free = HybridDynamics(physics, _random_network(0.03), conserve=(2,))
    with pytest.raises(ValueError, match="non-positive"), torch.no_grad():
        simulate(free, state0, times, step_size=0.2)  # the depth collapses: it diverges
    bounded = HybridDynamics(
        physics, _random_network(0.03), conserve=(2,), dissipate=physics.energy
    )
    with torch.no_grad():
        path = simulate(bounded, state0, times, step_size=0.2)
    assert bool(torch.isfinite(path).all())
    assert float(path.abs().max()) <= 1.5 * float(state0.abs().max())
    mass = physics.mass(path.flatten(0, 1)).view(3, -1)
    assert float(((mass - mass[:, :1]).abs() / mass[:, :1]).max()) < 1e-12


def test_energy_never_grows_in_the_continuous_time_limit():
    # the guarantee is for the ODE; a fine rk4 step resolves it (coarse steps add their error)
    physics = _inviscid()
    state0 = physics.initial_state(3, generator=torch.Generator().manual_seed(5), dtype=F64)
    model = HybridDynamics(physics, _random_network(0.03), conserve=(2,), dissipate=physics.energy)
    times = torch.arange(801, dtype=F64) * 0.0125  # t up to 10
    with torch.no_grad():
        path = simulate(model, state0, times, step_size=0.0125)
    energy = physics.energy(path.flatten(0, 1)).view(3, -1)
    assert float((energy / energy[:, :1]).max()) < 1.001


def test_dissipate_must_be_a_callable_returning_one_energy_per_sample():
    physics = ShallowWater((8, 8), forcing=_NoForcing()).double()
    with pytest.raises(TypeError, match="dissipate"):
        HybridDynamics(physics, _random_network(), dissipate=1.0)
    model = HybridDynamics(physics, _random_network(), dissipate=lambda s: s.sum(dim=(2, 3)))
    state = physics.initial_state(2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match=r"dissipate must return one energy per sample"):
        model(torch.zeros((), dtype=F64), state)


def test_latent_hybrid_takes_the_same_energy_constraint():
    from uqdyn.models.hybrid import LatentHybridDynamics

    physics = _inviscid()
    torch.manual_seed(0)
    network = nn.Conv2d(3 + 2, 3, 3, padding=1, padding_mode="circular").double()
    model = LatentHybridDynamics(physics, network, 2, conserve=(2,), dissipate=physics.energy)
    state = physics.initial_state(5, generator=torch.Generator().manual_seed(1), dtype=F64)
    state[:, :2] = 0.1 * torch.randn(5, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    latent = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    free = LatentHybridDynamics(physics, network, 2, conserve=(2,))
    with torch.no_grad():
        projected = model.augmentation_part(state, latent)
        raw = free.augmentation_part(state, latent)
    assert bool((_energy_rate(physics, state, raw) > 0).any())  # the network adds energy
    rate = _energy_rate(physics, state, projected)
    assert bool((rate <= 1e-12).all())
    assert float(projected[:, 2].mean(dim=(-1, -2)).abs().max()) < 1e-15
    with pytest.raises(TypeError, match="dissipate"):
        LatentHybridDynamics(physics, network, 2, dissipate="energy")
