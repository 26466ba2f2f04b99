"""APHYNITY training: parameter recovery, minimal augmentation, the multiplier schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqdyn.models.hybrid import (
    Aphynity,
    HybridDynamics,
    MLPAugmentation,
    TrajectoryBatch,
    augmentation_norm,
    fit_aphynity,
    trajectory_loss,
)
from uqdyn.physics import DampedPendulum, simulate
from uqdyn.train import fit

OMEGA0 = 2 * math.pi / 6


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid thread contention
    yield
    torch.set_num_threads(previous)


def _data(n=6, steps=16, dt=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    radius = 0.5 + torch.rand(n, generator=generator, dtype=torch.float64)
    state0 = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    times = torch.arange(steps, dtype=torch.float64) * dt
    truth = DampedPendulum(omega0=OMEGA0, alpha=0.2).double()
    with torch.no_grad():
        data = simulate(truth, state0, times, "dopri5", rtol=1e-10, atol=1e-12)
    return data, times


def test_hybrid_recovers_omega0_of_incomplete_pendulum():
    """Frictionless physics + MLP: omega0 is identified, the MLP takes the damping."""
    torch.manual_seed(0)
    data, times = _data()
    physics = DampedPendulum(omega0=1.3, alpha=0.0).double()
    physics.alpha.requires_grad_(False)
    model = HybridDynamics(physics, MLPAugmentation(2, hidden=16).double())
    result = fit_aphynity(model, data, times, epochs=30, steps_per_epoch=10, lr=1e-2, step_size=0.5)
    assert abs(float(model.physics.omega0.detach()) - OMEGA0) / OMEGA0 < 0.05
    assert result.trajectory_loss[-1] < 1e-3
    # the augmentation approximates the missing friction -alpha * velocity
    states = data.reshape(-1, 2)
    with torch.no_grad():
        correction = model.augmentation_part(states)
    friction = -0.2 * states[:, 1]
    assert float((correction[:, 1] - friction).square().mean()) < 0.3 * float(
        friction.square().mean()
    )


def test_augmentation_vanishes_when_physics_is_complete():
    """With the true physics, the constraint drives ||F_aug||^2 towards zero."""
    torch.manual_seed(1)
    data, times = _data()
    physics = DampedPendulum(omega0=OMEGA0, alpha=0.2).double()
    network = MLPAugmentation(2, hidden=16).double()
    nn.init.normal_(network.net[-1].weight, std=0.05)
    model = HybridDynamics(physics, network)
    states = data.reshape(-1, 2)
    with torch.no_grad():
        initial = float(augmentation_norm(model, states))
    result = fit_aphynity(model, data, times, epochs=20, steps_per_epoch=10, lr=1e-2, step_size=0.5)
    assert initial > 1e-4
    assert result.augmentation_norm[-1] < 0.02 * initial
    assert abs(float(model.physics.omega0.detach()) - OMEGA0) / OMEGA0 < 0.01
    assert abs(float(model.physics.alpha.detach()) - 0.2) < 0.01


def test_multiplier_follows_the_adaptive_lagrangian_schedule():
    """lambda_{j+1} = lambda_j + tau_2 L_traj(theta_{j+1}), L_traj on the whole training set."""
    torch.manual_seed(2)
    data, times = _data(n=4, steps=8)
    physics = DampedPendulum(omega0=0.9, alpha=0.0).double()
    physics.alpha.requires_grad_(False)
    model = HybridDynamics(physics, MLPAugmentation(2, hidden=8).double())
    result = fit_aphynity(
        model,
        data,
        times,
        epochs=4,
        steps_per_epoch=3,
        batch_size=2,
        lr=1e-2,
        multiplier=0.5,
        multiplier_rate=3.0,
        step_size=0.5,
    )
    assert len(result.multipliers) == 5 and result.multipliers[0] == 0.5
    for j in range(4):
        step = result.multipliers[j + 1] - result.multipliers[j]
        assert step == pytest.approx(3.0 * result.trajectory_loss[j], rel=1e-12)
    # the recorded loss is the MSE of rollouts of the final model (independent recomputation)
    with torch.no_grad():
        rollout = simulate(model, data[:, 0], times, "rk4", step_size=0.5)
        mse = float((rollout[:, 1:] - data[:, 1:]).square().mean())
        assert result.trajectory_loss[-1] == pytest.approx(mse, rel=1e-12)
        assert float(trajectory_loss(model, data, times, step_size=0.5)) == pytest.approx(mse)
    # one fit call of epochs x steps_per_epoch steps, a history row per epoch
    assert result.fit is not None and result.fit.steps_done == 12
    assert [row["step"] for row in result.fit.history] == [3, 6, 9, 12]


def test_physics_lr_sets_the_step_of_the_physical_parameters_only():
    """Adam's first step moves every parameter by its learning rate (sign of the gradient)."""
    torch.manual_seed(0)
    data, times = _data(n=3, steps=6)
    physics = DampedPendulum(omega0=1.3, alpha=0.0).double()
    physics.alpha.requires_grad_(False)
    network = MLPAugmentation(2, hidden=8).double()
    model = HybridDynamics(physics, network)
    raw_before = float(physics.raw_omega0.detach())
    net_before = [p.detach().clone() for p in network.parameters()]
    fit_aphynity(model, data, times, epochs=1, steps_per_epoch=1, lr=1e-6, physics_lr=0.1)
    # omega0 is stored through its log: one step of 0.1 in log space
    assert abs(abs(float(physics.raw_omega0.detach()) - raw_before) - 0.1) < 1e-6
    moved = max(
        float((p.detach() - q).abs().max())
        for p, q in zip(network.parameters(), net_before, strict=True)
    )
    assert 0 < moved <= 1e-6 * (1 + 1e-6)
    with pytest.raises(ValueError, match="physics_lr"):
        fit_aphynity(model, data, times, epochs=1, physics_lr=0.0)


def test_one_fit_call_reproduces_the_alternation_of_one_fit_per_epoch():
    """The schedule inside fit_aphynity's single fit call equals the algorithm written out:
    per epoch, a fit call with seed ``seed + j`` on one persistent Adam, then the update
    ``lambda += tau_2 * MSE`` on the whole training set (bit for bit)."""
    data, times = _data(n=5, steps=6)

    def make():
        torch.manual_seed(4)
        physics = DampedPendulum(omega0=1.2, alpha=0.0).double()
        physics.alpha.requires_grad_(False)
        return HybridDynamics(physics, MLPAugmentation(2, hidden=8).double())

    settings = {"multiplier": 0.5, "multiplier_rate": 2.0, "step_size": 0.5}
    model = make()
    result = fit_aphynity(
        model, data, times, epochs=3, steps_per_epoch=2, batch_size=3, lr=1e-2, seed=7, **settings
    )

    reference = make()
    objective = Aphynity(reference, steps_per_epoch=2, **settings)
    adam: list[torch.optim.Optimizer] = []

    def persistent(params):
        if not adam:
            adam.append(torch.optim.Adam(params, lr=1e-2))
        return adam[0]

    def draw(generator):
        order = torch.randperm(len(data), generator=generator)[:3]
        return TrajectoryBatch(times, data[order])

    multipliers, losses = [0.5], []
    for epoch in range(3):
        fit(objective, draw, steps=2, optimizer=persistent, seed=7 + epoch, progress=False)
        with torch.no_grad():
            rollout = simulate(reference, data[:, 0], times, "rk4", step_size=0.5)
        losses.append(float((rollout[:, 1:] - data[:, 1:]).square().mean()))
        objective.multiplier += 2.0 * losses[-1]
        multipliers.append(float(objective.multiplier))

    assert result.multipliers == multipliers and result.trajectory_loss == losses
    fitted, expected = model.state_dict(), reference.state_dict()
    for key in expected:
        if key != "log_noise":  # fit_aphynity also sets the observation noise
            assert torch.equal(fitted[key], expected[key]), key
    # the noise is the root mean square residual per component of the final rollout
    residual = rollout[:, 1:] - data[:, 1:]
    torch.testing.assert_close(model.noise_std.detach(), residual.square().mean(dim=(0, 1)).sqrt())
