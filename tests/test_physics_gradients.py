"""Gradients of uqdyn.physics: gradcheck in float64 and adjoint/direct agreement."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from uqdyn.physics import (
    AdvectionDiffusion,
    DampedPendulum,
    FitzHughNagumo,
    GrayScott,
    Lorenz96,
    ShallowWater,
    simulate,
    warp,
)

F64 = torch.float64
T0 = torch.zeros((), dtype=F64)


def _float64(system):
    return system.to(F64)


def _systems():
    return [
        _float64(
            AdvectionDiffusion(
                (6, 7),
                diffusion=0.05,
                velocity=torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(9)),
            )
        ),
        _float64(AdvectionDiffusion((6, 6), diffusion=0.05, velocity=(0.3, -0.2))),
        _float64(FitzHughNagumo((5, 6))),
        _float64(GrayScott((6, 5), feed=0.05)),
        _float64(ShallowWater((6, 6), coriolis=0.5)),
        _float64(Lorenz96(6)),
        _float64(DampedPendulum(omega0=1.3, alpha=0.3)),
    ]


@pytest.mark.parametrize("system", _systems(), ids=lambda s: type(s).__name__)
def test_rhs_gradcheck_wrt_parameters_and_state(system):
    names = [name for name, _ in system.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in system.parameters())
    generator = torch.Generator().manual_seed(0)
    state = system.initial_state(2, generator=generator, dtype=F64)
    state = state + 0.1 * torch.randn(state.shape, generator=generator, dtype=F64)
    state.requires_grad_(True)

    def rhs(state, *params):
        return functional_call(system, dict(zip(names, params, strict=True)), (T0, state))

    assert gradcheck(rhs, (state, *values), eps=1e-6, atol=1e-7)


def test_simulate_gradcheck_advection_diffusion():
    system = _float64(AdvectionDiffusion((6, 6), diffusion=0.02, velocity=(0.4, -0.3)))
    state0 = system.initial_state(1, generator=torch.Generator().manual_seed(1), dtype=F64)
    state0.requires_grad_(True)
    times = torch.linspace(0.0, 0.05, 4, dtype=F64)
    raw = system.raw_diffusion.detach().clone().requires_grad_(True)
    velocity = system.velocity.detach().clone().requires_grad_(True)

    def run(state0, raw, velocity):
        params = {"raw_diffusion": raw, "velocity": velocity}
        wrapped = _Bound(system, params)
        return simulate(wrapped, state0, times, "rk4")

    assert gradcheck(run, (state0, raw, velocity), eps=1e-6, atol=1e-7)


class _Bound(torch.nn.Module):
    """Calls ``system`` with substituted parameter tensors (for gradcheck through simulate)."""

    def __init__(self, system, params):
        super().__init__()
        self.system = system
        self.params = params

    def forward(self, t, state):
        return functional_call(self.system, self.params, (t, state))


def test_simulate_gradcheck_pendulum_per_sample_parameters():
    system = DampedPendulum(
        omega0=torch.tensor([1.0, 1.4], dtype=F64), alpha=torch.tensor([0.1, 0.4], dtype=F64)
    )
    state0 = torch.tensor([[0.5, 0.0], [-0.3, 0.2]], dtype=F64, requires_grad=True)
    times = torch.linspace(0.0, 1.0, 6, dtype=F64)
    raw = system.raw_omega0.detach().clone().requires_grad_(True)
    alpha = system.alpha.detach().clone().requires_grad_(True)

    def run(state0, raw, alpha):
        wrapped = _Bound(system, {"raw_omega0": raw, "alpha": alpha})
        return simulate(wrapped, state0, times, "rk4", step_size=0.05)

    assert gradcheck(run, (state0, raw, alpha), eps=1e-6, atol=1e-7)


def test_adjoint_gradient_matches_direct_gradient():
    system = _float64(ShallowWater((8, 8), coriolis=0.7))
    state0 = system.initial_state(2, generator=torch.Generator().manual_seed(2), dtype=F64)
    times = torch.linspace(0.0, 1.0, 5, dtype=F64)
    gradients = []
    for adjoint in (False, True):
        system.zero_grad()
        start = state0.clone().requires_grad_(True)
        trajectory = simulate(
            system, start, times, "dopri5", adjoint=adjoint, rtol=1e-10, atol=1e-12
        )
        (trajectory[:, -1, 2] ** 2).sum().backward()
        gradients.append([start.grad] + [p.grad.clone() for p in system.parameters()])
    for direct, adjoint in zip(*gradients, strict=True):
        torch.testing.assert_close(adjoint, direct, rtol=1e-5, atol=1e-9)


def test_warp_gradcheck_wrt_field_velocity_and_diffusion():
    generator = torch.Generator().manual_seed(3)
    field = torch.rand(2, 1, 6, 7, generator=generator, dtype=F64, requires_grad=True)
    velocity = (0.8 * torch.randn(2, 2, 6, 7, generator=generator, dtype=F64)).requires_grad_(True)
    diffusion = torch.tensor([0.3, 0.6], dtype=F64, requires_grad=True)
    assert gradcheck(
        lambda f, w, d: warp(f, w, d, dt=0.7, spacing=(1.0, 0.9)),
        (field, velocity, diffusion),
        eps=1e-6,
        atol=1e-7,
    )
