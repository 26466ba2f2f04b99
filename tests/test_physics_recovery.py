"""Recovering physical parameters from simulated trajectories by gradient descent."""

import math

import torch

from uqdyn.physics import AdvectionDiffusion, DampedPendulum, simulate

F64 = torch.float64


def _fit(parameters, loss_fn, iterations=60):
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(loss_fn())


def test_recover_diffusion_and_constant_velocity_of_advection_diffusion():
    size, true_diffusion, true_velocity = (20, 20), 0.02, (0.8, -0.5)
    truth = AdvectionDiffusion(
        size,
        diffusion=torch.tensor(true_diffusion, dtype=F64),
        velocity=torch.tensor(true_velocity, dtype=F64),
    )
    state0 = truth.initial_state(3, generator=torch.Generator().manual_seed(0), dtype=F64)
    times = torch.linspace(0.0, 0.2, 11, dtype=F64)
    step = 0.5 * truth.stable_dt()
    with torch.no_grad():
        observed = simulate(truth, state0, times, step_size=step)

    model = AdvectionDiffusion(
        size, diffusion=torch.tensor(0.03, dtype=F64), velocity=torch.tensor((0.6, -0.3), dtype=F64)
    )

    def loss():
        return ((simulate(model, state0, times, step_size=step) - observed) ** 2).mean()

    with torch.no_grad():
        initial_loss = float(loss())
    final_loss = _fit(list(model.parameters()), loss)
    assert final_loss < 1e-6 * initial_loss
    assert abs(float(model.diffusion.detach()) / true_diffusion - 1.0) < 0.02
    velocity = model.velocity.detach()
    for got, want in zip(velocity.tolist(), true_velocity, strict=True):
        assert abs(got / want - 1.0) < 0.02


def test_recover_omega0_and_alpha_of_the_pendulum():
    true_omega0, true_alpha = 2.0 * math.pi / 6.0, 0.3
    truth = DampedPendulum(
        omega0=torch.tensor(true_omega0, dtype=F64), alpha=torch.tensor(true_alpha, dtype=F64)
    )
    state0 = truth.initial_state(4, generator=torch.Generator().manual_seed(1), dtype=F64)
    times = torch.linspace(0.0, 8.0, 41, dtype=F64)
    with torch.no_grad():
        observed = simulate(truth, state0, times, step_size=0.05)
    # noise-free observations, a start 20% away from the truth
    model = DampedPendulum(
        omega0=torch.tensor(1.2 * true_omega0, dtype=F64),
        alpha=torch.tensor(0.8 * true_alpha, dtype=F64),
    )

    def loss():
        return ((simulate(model, state0, times, step_size=0.05) - observed) ** 2).mean()

    with torch.no_grad():
        initial_loss = float(loss())
    final_loss = _fit(list(model.parameters()), loss)
    assert final_loss < 1e-6 * initial_loss
    assert abs(float(model.omega0.detach()) / true_omega0 - 1.0) < 0.02
    assert abs(float(model.alpha.detach()) / true_alpha - 1.0) < 0.02


def test_recover_pendulum_parameters_with_adam_from_noisy_data():
    true_omega0, true_alpha = 1.1, 0.25
    truth = DampedPendulum(
        omega0=torch.tensor(true_omega0, dtype=F64), alpha=torch.tensor(true_alpha, dtype=F64)
    )
    generator = torch.Generator().manual_seed(2)
    state0 = truth.initial_state(8, generator=generator, dtype=F64)
    times = torch.linspace(0.0, 8.0, 33, dtype=F64)
    with torch.no_grad():
        clean = simulate(truth, state0, times, step_size=0.25)
    observed = clean + 0.01 * torch.randn(clean.shape, generator=generator, dtype=F64)
    model = DampedPendulum(omega0=torch.tensor(1.3, dtype=F64), alpha=torch.tensor(0.2, dtype=F64))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss = ((simulate(model, state0, times) - observed) ** 2).mean()
        loss.backward()
        optimizer.step()
    assert abs(float(model.omega0.detach()) / true_omega0 - 1.0) < 0.02
    assert abs(float(model.alpha.detach()) / true_alpha - 1.0) < 0.02
