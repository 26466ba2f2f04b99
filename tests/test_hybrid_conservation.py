"""A trained shallow-water hybrid keeps total mass over a 500-step rollout only when projected."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqdyn.models.hybrid import ConvAugmentation, HybridDynamics, fit_aphynity
from uqdyn.physics import ShallowWater, simulate
from uqdyn.physics.shallow_water import LinearDragViscosity


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
