"""Physics-informed mean: analytic trajectory, joint learning, and the CRPS comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _gp_reference import _single_thread  # noqa: F401  (autouse)

from uqdyn.models.gp import ContextGP, ExactGP, PhysicsMean
from uqdyn.physics import DampedPendulum, simulate


@pytest.mark.parametrize(("method", "max_step"), [("rk4", 0.02), ("dopri5", None)])
def test_physics_mean_is_the_analytic_linear_oscillator(
    method: str, max_step: float | None, device: torch.device
) -> None:
    omega0, alpha, a0 = 1.3, 0.2, 0.4
    mean = PhysicsMean(
        DampedPendulum(omega0=omega0, alpha=alpha, linear=True),
        torch.tensor([a0, 0.0], dtype=torch.float64),
        components=(0, 1),
        method=method,
        max_step=max_step,
    ).to(device)
    t = torch.tensor(
        [3.0, 0.5, 2.0, 0.5, 7.0], dtype=torch.float64, device=device
    )  # unsorted, repeated
    out = mean(t.unsqueeze(-1))
    assert out.shape == (2, 5)
    wd = math.sqrt(omega0**2 - alpha**2 / 4)
    tn = t.cpu().numpy()
    angle = a0 * np.exp(-alpha * tn / 2) * (np.cos(wd * tn) + alpha / (2 * wd) * np.sin(wd * tn))
    np.testing.assert_allclose(out[0].detach().cpu().numpy(), angle, atol=1e-6)
    # derivative of the angle is the angular velocity
    velocity = -a0 * np.exp(-alpha * tn / 2) * (omega0**2 / wd) * np.sin(wd * tn)
    np.testing.assert_allclose(out[1].detach().cpu().numpy(), velocity, atol=1e-6)
    assert mean(torch.zeros(1, 1, dtype=torch.float64, device=device)).shape == (2, 1)


def _pendulum_tasks(n_traj: int = 3):
    """Trajectories of the (nonlinear, large-amplitude) pendulum; context = first half."""
    system = DampedPendulum(omega0=1.4, alpha=0.12)
    angles = torch.tensor([1.5, -1.2, 1.0, 1.3])[:n_traj]
    state0 = torch.stack([angles, torch.zeros(n_traj)], dim=-1).double()
    times = torch.linspace(0, 14, 57, dtype=torch.float64)
    with torch.no_grad():
        states = simulate(system.double(), state0, times, "dopri5", rtol=1e-9, atol=1e-10)
    g = torch.Generator().manual_seed(0)
    y = states[..., :1] + 0.05 * torch.randn(
        states[..., :1].shape, generator=g, dtype=torch.float64
    )
    x = times.expand(n_traj, -1).unsqueeze(-1)
    split = 25  # context t <= 6, targets beyond
    return x[:, :split], y[:, :split], x[:, split:], states[:, split:, :1]


def test_physics_mean_gp_beats_zero_mean_gp_in_crps() -> None:
    xc, yc, xt, truth = _pendulum_tasks(2)

    def physics_mean() -> PhysicsMean:
        # mis-specified: small-angle linearisation, wrong frequency and damping, guessed start
        return PhysicsMean(
            DampedPendulum(omega0=1.1, alpha=0.3, linear=True),
            torch.tensor([1.0, 0.0], dtype=torch.float64),
        )

    zero = ContextGP(1, kernel="rbf", steps=100, lr=0.05)(xc, yc, xt)
    physics = ContextGP(1, kernel="rbf", mean=physics_mean, steps=100, lr=0.05)(xc, yc, xt)
    crps_zero = float(zero.crps(truth).mean())
    crps_physics = float(physics.crps(truth).mean())
    assert crps_physics < 0.5 * crps_zero, (crps_physics, crps_zero)


def test_physical_parameters_are_learned_jointly_with_the_kernel() -> None:
    """Exact data from a linear pendulum: the physics-mean GP recovers omega0 and alpha."""
    system = DampedPendulum(omega0=1.2, alpha=0.25, linear=True).double()
    times = torch.linspace(0, 8, 40, dtype=torch.float64)
    with torch.no_grad():
        angle = simulate(system, torch.tensor([[0.8, 0.0]], dtype=torch.float64), times, "dopri5")
    mean = PhysicsMean(
        DampedPendulum(omega0=1.05, alpha=0.1, linear=True),
        torch.tensor([0.7, 0.0], dtype=torch.float64),
    )
    gp = ExactGP(1, kernel="rbf", mean=mean)
    gp.fit(times.unsqueeze(-1), angle[0, :, :1], steps=100, lr=0.05, progress=False)
    assert float(mean.dynamics.omega0) == pytest.approx(1.2, rel=0.02)
    assert float(mean.dynamics.alpha) == pytest.approx(0.25, abs=0.03)
    assert set(n for n, _ in gp.named_parameters()) >= {
        "gp.mean_module.dynamics.raw_omega0",
        "gp.mean_module.dynamics.alpha",
        "gp.mean_module.state0",
        "gp.covar_module.raw_outputscale",
    }
