"""Bad input to uqdyn.physics raises clear errors naming the quantity and its allowed range."""

import math

import pytest
import torch
from torch import nn

from uqdyn.physics import (
    AdvectionDiffusion,
    DampedPendulum,
    FitzHughNagumo,
    GrayScott,
    Lorenz96,
    ShallowWater,
    simulate,
)

F64 = torch.float64


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AdvectionDiffusion(diffusion=-0.1), r"diffusion must be > 0, got \[?-0.1"),
        (lambda: AdvectionDiffusion(diffusion=torch.tensor([0.1, 0.0])), "diffusion must be > 0"),
        (lambda: AdvectionDiffusion(diffusion=math.nan), "diffusion must be finite"),
        (
            lambda: AdvectionDiffusion((8, 8), velocity=torch.zeros(3, 8, 8)),
            r"velocity must have shape",
        ),
        (lambda: AdvectionDiffusion(size=(8,)), r"size must be \(height, width\)"),
        (lambda: AdvectionDiffusion(length=-1.0), "length must be positive"),
        (lambda: ShallowWater(mean_depth=-1.0), "mean_depth must be > 0"),
        (lambda: ShallowWater(gravity=0.0), "gravity must be > 0"),
        (lambda: FitzHughNagumo(a=-1e-3), "a must be > 0"),
        (lambda: GrayScott(feed=-0.01), "feed must be > 0"),
        (lambda: DampedPendulum(omega0=0.0), "omega0 must be > 0"),
        (lambda: DampedPendulum(alpha=-0.1), "alpha must be >= 0"),
        (lambda: Lorenz96(dim=3), "dim=3; expected an int >= 4"),
        (
            lambda: Lorenz96(forcing=torch.ones(2, 2)),
            r"forcing must be a scalar or have shape \(batch,\)",
        ),
    ],
)
def test_constructors_reject_bad_parameters(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="diffusion='0.1' is a str; expected a float or a tensor"):
        AdvectionDiffusion(diffusion="0.1")
    with pytest.raises(TypeError, match="forcing must be an nn.Module"):
        ShallowWater(forcing=lambda state: state)
    with pytest.raises(TypeError, match="velocity must be a floating tensor"):
        AdvectionDiffusion(velocity=torch.zeros(2, dtype=torch.long))


def test_simulate_rejects_a_step_beyond_the_stability_limit():
    system = AdvectionDiffusion((16, 16), diffusion=0.05)
    limit = system.stable_dt("rk4")
    state0 = system.initial_state(1)
    with pytest.raises(
        ValueError, match=r"step_size = .* exceeds the stability limit .* must be in \(0, "
    ):
        simulate(system, state0, torch.tensor([0.0, 1.0]), step_size=2 * limit)
    with pytest.raises(
        ValueError, match="the largest spacing of times = .* exceeds the stability limit"
    ):
        simulate(system, state0, torch.tensor([0.0, 0.5 * limit, 3 * limit]))
    # just below the limit is fine, and euler has its own (smaller) limit
    simulate(system, state0, torch.tensor([0.0, 0.99 * limit]))
    with pytest.raises(ValueError, match="method 'euler'"):
        simulate(system, state0, torch.tensor([0.0, 0.99 * limit]), "euler")
    # the adaptive solver has no fixed step to check
    simulate(system, state0, torch.tensor([0.0, 3 * limit]), "dopri5")


def test_stability_limit_is_real_not_decorative():
    """Beyond twice the limit the fixed-step solution does blow up; below it, it does not."""
    system = AdvectionDiffusion(
        (16, 16),
        diffusion=torch.tensor(0.05, dtype=F64),
        velocity=torch.tensor((0.0, 0.0), dtype=F64),
    )
    state0 = system.initial_state(1, generator=torch.Generator().manual_seed(0), dtype=F64)
    state0 = state0 + 1e-3 * torch.randn(
        state0.shape, generator=torch.Generator().manual_seed(1), dtype=F64
    )
    limit = system.stable_dt("rk4")
    with torch.no_grad():
        calm = simulate(system, state0, torch.arange(200, dtype=F64) * limit)
        wild = simulate(
            system, state0, torch.arange(200, dtype=F64) * 1.2 * limit, check_stability=False
        )
    assert float(calm[:, -1].abs().max()) <= float(state0.abs().max())
    assert not bool(torch.isfinite(wild[:, -1]).all()) or float(wild[:, -1].abs().max()) > 1e3


def test_simulate_names_time_and_quantity_when_the_solution_blows_up():
    system = FitzHughNagumo((8, 8))
    state0 = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    state0[1, 0, 3, 3] = 1e3  # u^3 overflows within a few steps
    times = torch.arange(20) * 0.1
    with pytest.raises(ValueError, match=r"non-finite at time \d.* in u \(activator\)"):
        simulate(system, state0, times)
    lorenz = Lorenz96(8)
    with pytest.raises(ValueError, match=r"non-finite at time .* in x\[\d\]"):
        simulate(lorenz, lorenz.initial_state(1) * 1e6, torch.arange(30) * 0.5)


class _Divergence(nn.Module):
    """A forcing that drives fluid out of the left half of the domain."""

    def forward(self, state):
        width = state.shape[-1]
        phase = torch.arange(width, dtype=state.dtype) * (2 * math.pi / width)
        du = 2.0 * torch.sin(phase).expand_as(state[:, :1])
        return torch.cat([du, torch.zeros_like(du)], dim=1)


def test_shallow_water_depth_checks():
    system = ShallowWater((16, 16), mean_depth=1.0)
    state0 = system.initial_state(1)
    bad = state0.clone()
    bad[0, 2, 4, 4] = -1.5
    with pytest.raises(ValueError, match=r"non-positive layer depth H \+ h"):
        simulate(system, bad, torch.linspace(0.0, 0.1, 3))
    draining = ShallowWater((16, 16), mean_depth=1.0, forcing=_Divergence())
    with pytest.raises(ValueError, match=r"h \(layer depth\) became non-positive .* at time"):
        simulate(draining, state0, torch.linspace(0.0, 6.0, 61))


@pytest.mark.parametrize(
    ("state0", "times", "error", "message"),
    [
        (
            torch.zeros(2, 1, 8, 9),
            [0.0, 0.01],
            ValueError,
            r"state0 must have shape \(batch, 1, 8, 8\)",
        ),
        (torch.zeros(1, 8, 8), [0.0, 0.01], ValueError, r"got \(1, 8, 8\)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.long), [0.0, 0.01], TypeError, "floating dtype"),
        (
            torch.full((2, 1, 8, 8), math.inf),
            [0.0, 0.01],
            ValueError,
            r"non-finite values in I \(tracer\)",
        ),
        (torch.zeros(2, 1, 8, 8), [0.0, 0.0], ValueError, "strictly increasing"),
        (torch.zeros(2, 1, 8, 8), [[0.0, 0.01]], ValueError, "non-empty 1-d"),
        (torch.zeros(2, 1, 8, 8), [0.0, math.nan], ValueError, "times must be finite"),
    ],
)
def test_simulate_rejects_bad_states_and_times(state0, times, error, message):
    system = AdvectionDiffusion((8, 8))
    with pytest.raises(error, match=message):
        simulate(system, state0, times)


def test_simulate_rejects_bad_options():
    system = DampedPendulum()
    state0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="method must be one of"):
        simulate(system, state0, [0.0, 1.0], method="rk5")
    with pytest.raises(ValueError, match=r"step_size=-0.1; expected a finite float > 0"):
        simulate(system, state0, [0.0, 1.0], step_size=-0.1)
    with pytest.raises(TypeError, match="dynamics must be an nn.Module"):
        simulate(lambda t, x: x, state0, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"rtol=0.0; expected a finite float > 0"):
        simulate(system, state0, [0.0, 1.0], "dopri5", rtol=0.0)
    with pytest.raises(ValueError, match="batch=0; expected an int >= 1"):
        system.initial_state(0)
    # a single output time returns the initial state
    assert simulate(system, state0, [0.0]).shape == (1, 1, 2)


def test_per_sample_parameters_must_match_the_batch():
    system = DampedPendulum(omega0=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(
        ValueError,
        match=r"per-sample parameter of shape \(3,\) does not match the state batch of 2",
    ):
        system(torch.zeros(()), torch.zeros(2, 2))
