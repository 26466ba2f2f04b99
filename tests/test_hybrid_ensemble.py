"""Deep ensembles and the latent hybrid: Ensemble Predictive shapes and calibration."""

from __future__ import annotations

import math

import pytest
import torch

from uqdyn.calibration import coverage
from uqdyn.models.hybrid import (
    HybridDynamics,
    HybridEnsemble,
    LatentHybridDynamics,
    MLPAugmentation,
    fit_aphynity,
    fit_hybrid_ensemble,
)
from uqdyn.physics import DampedPendulum, simulate
from uqdyn.predictive import Ensemble


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid thread contention
    yield
    torch.set_num_threads(previous)


def test_ensemble_forecast_stacks_member_rollouts_members_first(device):
    omegas = (0.9, 1.0, 1.2)
    members = [HybridDynamics(DampedPendulum(omega0=w, alpha=0.1), None) for w in omegas]
    ensemble = HybridEnsemble(members).to(device)
    state0 = torch.tensor([[1.0, 0.0], [0.2, 0.5]], device=device)
    times = torch.linspace(0.0, 3.0, 7, device=device)
    forecast = ensemble.forecast(state0, times)
    assert isinstance(forecast, Ensemble)
    assert forecast.members.shape == (3, 2, 7, 2)
    assert forecast.crps(simulate(members[0], state0, times).detach()).shape == (2, 7, 2)
    for index, member in enumerate(members):
        torch.testing.assert_close(forecast.members[index], simulate(member, state0, times))
    torch.testing.assert_close(
        ensemble.parameters_of("omega0"), torch.tensor(omegas, device=device)
    )
    with pytest.raises(ValueError, match="name must be a physical parameter"):
        ensemble.parameters_of("gravity")


def test_fit_hybrid_ensemble_members_differ_and_fit():
    torch.manual_seed(0)
    times = torch.arange(8, dtype=torch.float64) * 0.5
    state0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [-0.7, 0.3], [0.2, -0.9]], dtype=torch.float64)
    with torch.no_grad():
        data = simulate(DampedPendulum(alpha=0.2).double(), state0, times)

    def make():
        physics = DampedPendulum(omega0=1.2, alpha=0.0).double()
        physics.alpha.requires_grad_(False)
        return HybridDynamics(physics, MLPAugmentation(2, hidden=8).double())

    ensemble, results = fit_hybrid_ensemble(
        make, data, times, members=3, bootstrap=True, epochs=3, steps_per_epoch=5, lr=1e-2
    )
    assert len(ensemble) == len(results) == 3
    first_layers = [m.augmentation.net[0].weight for m in ensemble.members]
    assert not torch.equal(first_layers[0], first_layers[1])  # different seeds
    for result in results:
        assert result.trajectory_loss[-1] < result.trajectory_loss[0] * 1.5
    forecast = ensemble.forecast(data[:, 0], times)
    assert forecast.members.shape == (3, 4, 8, 2)
    assert float(forecast.stddev[:, 1:].mean()) > 0.0


def test_latent_hybrid_is_calibrated_on_a_random_forcing_toy():
    """Truth ``x' = -0.5 x + c`` with ``c ~ N(0, 0.3^2)`` per trajectory (unknown to the model).

    The latent model trained by the fair CRPS must put the test trajectories inside its
    90% intervals about 90% of the time (the binomial standard error with 400 trajectories
    is 0.015; members' quantiles of 64 samples cover slightly less than nominal).
    """
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(6, dtype=torch.float64) * 0.5

    def draw(n):
        x0 = torch.randn(n, 1, generator=generator, dtype=torch.float64)
        c = 0.3 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
        # exact solution of x' = -0.5 x + c
        decay = torch.exp(-0.5 * times)
        return (x0 * decay + 2.0 * c * (1.0 - decay)).unsqueeze(-1)

    train, test = draw(128), draw(400)
    torch.manual_seed(0)
    model = LatentHybridDynamics(
        None, MLPAugmentation(1, hidden=16, input_dim=2).double(), 1, state_shape=(1,)
    )
    fit_aphynity(model, train, times, epochs=60, steps_per_epoch=10, lr=3e-2, samples=8)
    forecast = model.forecast(
        test[:, 0], times, samples=64, generator=torch.Generator().manual_seed(1)
    )
    assert forecast.members.shape == (64, 400, 6, 1)
    observed = float(coverage(test[:, -1], Ensemble(forecast.members[:, :, -1]), 0.9))
    assert 0.8 <= observed <= 0.95
    # a model without latent spread (z fixed at 0) badly under-covers: the check has power
    with torch.no_grad():
        extended = model.extend(test[:, 0], torch.zeros(400, 1, dtype=torch.float64))
        mean_path = simulate(model, extended, times)[:, -1, :1]
    assert float(((mean_path - test[:, -1]).abs() < 1e-3).double().mean()) < 0.2
    # the learned spread matches the truth: std of x(T) given x0 is 2 * 0.3 * (1 - e^{-T/2})
    spread = forecast.members[:, :, -1, 0].std(dim=0).mean()
    expected = 2 * 0.3 * (1 - math.exp(-0.5 * float(times[-1])))
    assert float(spread) == pytest.approx(expected, rel=0.25)


def test_calibrate_recovers_known_observation_noise():
    """Identical members (no spread) and data = their rollout + N(0, s(t)^2) per point.

    The fitted scale must match ``s(t)`` within sampling error (4000 residuals per lead time
    and component: relative standard error of a standard deviation ~ 1 / sqrt(2 * 4000)).
    """
    generator = torch.Generator().manual_seed(3)
    times = torch.arange(6, dtype=torch.float64) * 0.5
    physics = DampedPendulum(omega0=1.0, alpha=0.1).double()
    ensemble = HybridEnsemble([HybridDynamics(physics, None) for _ in range(2)])
    state0 = torch.randn(4000, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        clean = simulate(physics, state0, times)
    scale = torch.tensor([0.0, 0.05, 0.1, 0.15, 0.2, 0.25], dtype=torch.float64)
    noisy = clean + scale.reshape(1, -1, 1) * torch.randn(
        clean.shape, generator=generator, dtype=torch.float64
    )
    noisy[:, 0] = clean[:, 0]
    sigma = ensemble.calibrate(noisy, times)
    assert sigma.shape == (6, 2)
    torch.testing.assert_close(sigma, scale.reshape(-1, 1).expand(6, 2), rtol=0.05, atol=1e-12)
    # interpolation in lead time, and the range check
    scale, half = ensemble.noise_at(torch.tensor([0.25, 1.25], dtype=torch.float64))
    torch.testing.assert_close(half, 0.5 * (sigma[[0, 2]] + sigma[[1, 3]]))
    torch.testing.assert_close(scale, torch.ones_like(scale))  # no member spread to rescale
    with pytest.raises(ValueError, match="calibrated lead times"):
        ensemble.forecast(state0[:3], torch.arange(8, dtype=torch.float64) * 0.5)
    forecast = ensemble.forecast(
        state0[:3], times, draws=5, generator=torch.Generator().manual_seed(0)
    )
    assert forecast.members.shape == (10, 3, 6, 2)
    torch.testing.assert_close(forecast.members[:, :, 0], state0[:3].expand(10, 3, 2))
    with pytest.raises(ValueError, match="draws=0; expected an int >= 1"):
        ensemble.forecast(state0[:3], times, draws=0)
    with pytest.raises(ValueError, match="trajectories must have shape"):
        ensemble.calibrate(noisy[..., :1], times)
    # the calibration travels with the state: a fresh ensemble loads it and forecasts alike
    fresh = HybridEnsemble([HybridDynamics(physics, None) for _ in range(2)])
    assert not fresh.calibrated
    fresh.load_state_dict(ensemble.state_dict())
    assert fresh.calibrated
    torch.testing.assert_close(fresh.noise_std, ensemble.noise_std)
    again = fresh.forecast(state0[:3], times, draws=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.members, forecast.members)


def test_calibrated_deep_ensemble_covers_90_percent_on_a_random_forcing_toy():
    """Truth ``x' = -0.5 x + c`` with ``c ~ N(0, 0.3^2)`` per trajectory, hidden from the model.

    Three data-only members trained on the same data agree with each other, so the raw
    ensemble under-covers badly; calibrated on 300 held-out trajectories, its 90% intervals
    must cover the final state of 400 test trajectories 90% of the time (binomial standard
    error 0.015; tolerance 0.05).
    """
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(6, dtype=torch.float64) * 0.5

    def draw(n):
        x0 = torch.randn(n, 1, generator=generator, dtype=torch.float64)
        c = 0.3 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
        decay = torch.exp(-0.5 * times)  # exact solution of x' = -0.5 x + c
        return (x0 * decay + 2.0 * c * (1.0 - decay)).unsqueeze(-1)

    train, validation, test = draw(128), draw(300), draw(400)
    ensemble, _ = fit_hybrid_ensemble(
        lambda: HybridDynamics(None, MLPAugmentation(1, hidden=16).double(), state_shape=(1,)),
        train,
        times,
        members=3,
        bootstrap=True,
        validation=validation,
        epochs=15,
        steps_per_epoch=10,
        lr=3e-2,
    )
    assert ensemble.calibrated
    raw = Ensemble(ensemble.rollouts(test[:, 0], times)[:, :, -1])
    assert float(coverage(test[:, -1], raw, 0.9)) < 0.4  # members agree: the check has power
    forecast = ensemble.forecast(test[:, 0], times, generator=torch.Generator().manual_seed(1))
    assert forecast.members.shape == (3 * 32, 400, 6, 1)
    observed = float(coverage(test[:, -1], Ensemble(forecast.members[:, :, -1]), 0.9))
    assert abs(observed - 0.9) <= 0.05
    # the fitted scale at the last lead time matches the true conditional spread
    expected = 2 * 0.3 * (1 - math.exp(-0.5 * float(times[-1])))
    assert float(ensemble.noise_std[-1, 0]) == pytest.approx(expected, rel=0.2)


def test_calibrate_shrinks_members_whose_spread_exceeds_the_error():
    """Members at omega0 = 0.8 and 1.2 around a truth at 1.0: spread >> error.

    The mixture variance ``s^2 v + sigma^2`` must equal the validation MSE (computed here
    directly from the rollouts), with the kernel taking ``kernel_fraction`` of it.
    """
    times = torch.arange(5, dtype=torch.float64) * 0.5
    members = [HybridDynamics(DampedPendulum(omega0=w).double(), None) for w in (0.8, 1.2)]
    ensemble = HybridEnsemble(members)
    state0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        data = simulate(DampedPendulum(omega0=1.0).double(), state0, times)
        paths = torch.stack([simulate(m, state0, times) for m in members])
    error = (data - paths.mean(0)).square().mean(0)  # (time, 2)
    spread = paths.var(0, unbiased=False).mean(0)
    assert bool((spread[1:] > error[1:]).all())
    sigma = ensemble.calibrate(data, times, kernel_fraction=0.3)
    torch.testing.assert_close(sigma[1:] ** 2, 0.3 * error[1:])
    scale = ensemble.member_scale
    assert bool((scale[1:] < 1).all())
    torch.testing.assert_close(scale[1:] ** 2 * spread[1:] + sigma[1:] ** 2, error[1:])
    with pytest.raises(ValueError, match=r"kernel_fraction=1.5; expected a float in \[0, 1\]"):
        ensemble.calibrate(data, times, kernel_fraction=1.5)
