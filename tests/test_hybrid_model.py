"""HybridDynamics: gradients through odeint, conservation projection, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqdyn.models.hybrid import (
    ConvAugmentation,
    HybridDynamics,
    LatentHybridDynamics,
    MLPAugmentation,
    fit_aphynity,
)
from uqdyn.physics import DampedPendulum, ShallowWater, simulate


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid thread contention
    yield
    torch.set_num_threads(previous)


def _pendulum_data(device, n=3, steps=6, dt=0.5):
    times = torch.arange(steps, dtype=torch.float64, device=device) * dt
    state0 = torch.tensor([[1.0, 0.0], [0.5, 0.4], [-0.8, 0.2]], dtype=torch.float64)[:n]
    truth = DampedPendulum(omega0=2 * math.pi / 6, alpha=0.2).double().to(device)
    with torch.no_grad():
        data = simulate(truth, state0.to(device), times, "dopri5", rtol=1e-10, atol=1e-12)
    return data, times


def _loss(model, data, times):
    prediction = simulate(model, data[:, 0], times, "rk4", step_size=0.25)
    return (prediction - data).square().mean()


def test_gradients_reach_physics_and_network_match_finite_differences(device):
    torch.manual_seed(0)
    data, times = _pendulum_data(device)
    physics = DampedPendulum(omega0=0.9, alpha=0.0).double()
    physics.alpha.requires_grad_(False)
    network = MLPAugmentation(2, hidden=8).double()
    nn.init.normal_(network.net[-1].weight, std=0.1)
    model = HybridDynamics(physics, network).to(device)
    _loss(model, data, times).backward()
    checked = {
        "physics.raw_omega0": model.physics.raw_omega0,
        "network output bias": network.net[-1].bias,
        "network first weight": network.net[0].weight,
    }
    assert model.physics.alpha.grad is None  # frozen parameter gets no gradient
    for name, parameter in checked.items():
        analytic = parameter.grad.reshape(-1)[0].item()
        assert analytic != 0.0, name
        with torch.no_grad():
            flat = parameter.view(-1)
            eps = 1e-6
            flat[0] += eps
            up = _loss(model, data, times).item()
            flat[0] -= 2 * eps
            down = _loss(model, data, times).item()
            flat[0] += eps
        numeric = (up - down) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-10), name


def test_physics_only_and_data_only_variants(device):
    data, times = _pendulum_data(device)
    truth = DampedPendulum(omega0=2 * math.pi / 6, alpha=0.2).double().to(device)
    physics_only = HybridDynamics(truth, None)
    expected = simulate(truth, data[:, 0], times)
    assert torch.equal(simulate(physics_only, data[:, 0], times), expected)
    assert physics_only.omega0 is not None  # physical parameters readable on the hybrid

    # a data-only model whose network is the exact tendency reproduces the physics
    class Exact(nn.Module):
        def forward(self, state):
            return truth(torch.zeros(()), state)

    data_only = HybridDynamics(None, Exact(), state_shape=(2,))
    torch.testing.assert_close(simulate(data_only, data[:, 0], times), expected)


def test_conservation_projection_keeps_total_mass_over_500_steps(device):
    """A biased augmentation drains mass linearly; the projection keeps it exact."""
    torch.manual_seed(0)
    water = ShallowWater(size=(8, 8), length=2 * math.pi).double().to(device)
    state0 = water.initial_state(2, generator=torch.Generator().manual_seed(1)).double()
    state0 = state0.to(device)
    times = torch.arange(0, 501, dtype=torch.float64, device=device) * 0.05

    def biased(random_depth_weights):
        network = ConvAugmentation(3, hidden=4).double()
        nn.init.normal_(network.net[-1].weight, std=1e-3)
        with torch.no_grad():
            if not random_depth_weights:  # the h tendency is then exactly the bias
                network.net[-1].weight[2] = 0.0
            network.net[-1].bias.copy_(torch.tensor([0.0, 0.0, -1e-3]))
        return network.to(device)

    projected = HybridDynamics(water, biased(True), conserve=(2,))
    free = HybridDynamics(water, biased(False))
    with torch.no_grad():
        kept = simulate(projected, state0, times)[:, :, 2].sum(dim=(-2, -1))
        drifted = simulate(free, state0, times)[:, :, 2].sum(dim=(-2, -1))
    mass0 = state0[:, 2].sum(dim=(-2, -1))
    assert (kept - mass0[:, None]).abs().max() < 1e-10
    # without the projection the mass changes by bias * cells * t (the physics conserves it)
    expected_drift = -1e-3 * 64 * times[None, :]
    torch.testing.assert_close(
        drifted - mass0[:, None], expected_drift.expand(2, -1), rtol=1e-6, atol=1e-9
    )


# ---------------------------------------------------------------------------- bad input
def test_state_shape_disagreeing_with_physics_is_rejected_before_training():
    model = HybridDynamics(DampedPendulum(), MLPAugmentation(2, hidden=4))
    times = torch.linspace(0, 1, 4)
    with pytest.raises(ValueError, match=r"trajectories must have shape \(batch, time, 2\).*"):
        fit_aphynity(model, torch.zeros(3, 4, 3), times, epochs=1)
    with pytest.raises(ValueError, match=r"state_shape \(3,\) disagrees .*\(2,\)"):
        HybridDynamics(DampedPendulum(), None, state_shape=(3,))
    with pytest.raises(ValueError, match="times must have one entry per time step"):
        fit_aphynity(model, torch.zeros(3, 5, 2), times, epochs=1)


def test_network_with_wrong_output_shape_is_rejected_before_training():
    wrong = HybridDynamics(DampedPendulum(), nn.Linear(2, 3))
    data = torch.zeros(2, 4, 2)
    before = [p.detach().clone() for p in wrong.parameters()]
    with pytest.raises(ValueError, match=r"augmentation must return .*\(2, 2\), got \(2, 3\)"):
        fit_aphynity(wrong, data, torch.linspace(0, 1, 4), epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, wrong.parameters(), strict=True))
    wrong_input = HybridDynamics(DampedPendulum(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"augmentation Linear cannot take state of shape"):
        wrong_input.check_compatible(torch.zeros(2, 2))
    latent = LatentHybridDynamics(DampedPendulum(), MLPAugmentation(2, 4), latent_dim=2)
    with pytest.raises(ValueError, match="latent channels"):
        latent.check_compatible(torch.zeros(2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"physics": None, "augmentation": None}, "both None"),
        ({"physics": nn.Linear(2, 2), "augmentation": None}, "physics must be a"),
        ({"physics": None, "augmentation": MLPAugmentation(2)}, "state_shape is needed"),
        ({"physics": DampedPendulum(), "augmentation": None, "conserve": (0,)}, "gridded"),
        (
            {"physics": ShallowWater(size=(4, 4)), "augmentation": None, "conserve": (3,)},
            r"conserve must list channel indices in \[0, 3\), got \(3,\)",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    physics = kwargs.pop("physics")
    augmentation = kwargs.pop("augmentation")
    error = TypeError if message == "physics must be a" else ValueError
    with pytest.raises(error, match=message):
        HybridDynamics(physics, augmentation, **kwargs)


def test_bad_training_arguments():
    model = HybridDynamics(DampedPendulum(), None)
    data, times = torch.zeros(2, 3, 2), torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\), got \[0, 5\]"):
        fit_aphynity(model, data, times, indices=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"multiplier_rate=-1\.0; expected a finite float >= 0"):
        fit_aphynity(model, data, times, multiplier_rate=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        fit_aphynity(model, torch.full((2, 3, 2), math.nan), times)
    with pytest.raises(TypeError, match="model must be a HybridDynamics"):
        fit_aphynity(DampedPendulum(), data, times)
