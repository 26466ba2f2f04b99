"""The learned Lorenz-96 surrogate: training pairs (uqdyn.data.pairs), the periodic tendency
network and its model error (uqdyn.models.surrogate), and their use in uqdyn.da."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from uqdyn.da import ForecastOperator, rk4_classic
from uqdyn.data.pairs import lorenz96_pairs
from uqdyn.models.surrogate import (
    DiagonalNormalError,
    ModelErrorFit,
    PeriodicConvTendency,
    fit_model_error,
    fit_tendency_surrogate,
    one_step_loss,
    one_step_residuals,
)
from uqdyn.physics import Lorenz96
from uqdyn.predictive import Normal
from uqdyn.train import Trainable, Validatable, fit

pytestmark = pytest.mark.filterwarnings("ignore:.* declares no step limit:UserWarning")


def test_lorenz96_pairs_are_one_step_apart() -> None:
    x0, x1 = lorenz96_pairs(3, 20, 0.05, spinup=5.0, generator=torch.Generator().manual_seed(0))
    assert x0.shape == x1.shape == (60, 40) and x0.dtype == torch.float64
    # consecutive pairs of one trajectory chain up
    torch.testing.assert_close(x1[:19], x0[1:20])
    # x1 is one classical RK4 step of x0, as numpy computes it (DAPPER's discrete model)
    a = x0.numpy()

    def f(y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1, -1) - np.roll(y, 2, -1)) * np.roll(y, 1, -1) - y + 8.0

    k1 = f(a)
    k2 = f(a + 0.025 * k1)
    k3 = f(a + 0.025 * k2)
    k4 = f(a + 0.05 * k3)
    np.testing.assert_allclose(x1.numpy(), a + 0.05 / 6 * (k1 + 2 * k2 + 2 * k3 + k4), rtol=1e-13)
    fine_pairs = lorenz96_pairs(
        3, 2, 0.05, spinup=0.0, substeps=10, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        fine = rk4_classic(Lorenz96(40).double(), fine_pairs[0], 0.0, 0.05, 50)
    assert float((fine - fine_pairs[1]).abs().max()) < 1e-6  # converged to the flow
    # on the attractor after the spin-up: mean about 2.3, standard deviation about 3.6
    assert 1.5 < float(x0.mean()) < 3.2 and 3.0 < float(x0.std()) < 4.2
    with pytest.raises(ValueError, match="n_steps="):
        lorenz96_pairs(2, 0)


def test_periodic_network_shapes_equivariance_and_any_ring_length() -> None:
    torch.manual_seed(0)
    net = PeriodicConvTendency(40, width=8, loc=2.0, scale=3.5, tendency_scale=10.0)
    x = torch.randn(5, 40)
    out = net(torch.tensor(0.0), x)
    assert out.shape == (5, 40)
    shifted = net(torch.tensor(0.0), x.roll(7, dims=-1))
    torch.testing.assert_close(shifted, out.roll(7, dims=-1), rtol=1e-5, atol=1e-5)
    assert net(torch.tensor(0.0), torch.randn(2, 12)).shape == (2, 12)
    assert net.initial_state(3).shape == (3, 40)
    with pytest.raises(ValueError, match="kernel_size="):
        PeriodicConvTendency(40, kernel_size=4)
    with pytest.raises(ValueError, match="scale="):
        PeriodicConvTendency(40, scale=0.0)


def test_the_network_can_represent_lorenz96_exactly() -> None:
    # Set the weights by hand: a = x_i terms, b * c = (x_{i+1} - x_{i-2}) x_{i-1}. With
    # loc = 0, scale = 1 the output must equal the true tendency (a test of the architecture).
    net = PeriodicConvTendency(40, width=1, kernel_size=5).double()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        # kernel taps k = 0..4 read x_{i-2}, x_{i-1}, x_i, x_{i+1}, x_{i+2}
        net.local.weight[0, 0, 2] = 1.0  # a = x_i
        net.local.bias[0] = -8.0  # a = x_i - F
        net.local.weight[1, 0, 3] = 1.0  # b = x_{i+1} - x_{i-2}
        net.local.weight[1, 0, 0] = -1.0
        net.local.weight[2, 0, 1] = 1.0  # c = x_{i-1}
        net.linear.weight[0, 0, 0] = -1.0  # -(x_i - F)
        net.linear.weight[0, 1, 0] = 1.0  # + b * c
    x = 8.0 + torch.randn(4, 40, dtype=torch.float64)
    truth = Lorenz96(40).double()(torch.tensor(0.0), x)
    torch.testing.assert_close(net(torch.tensor(0.0), x), truth)


@pytest.mark.usefixtures("one_thread")
def test_training_beats_persistence_and_the_model_error_fits_the_residuals() -> None:
    generator = torch.Generator().manual_seed(0)
    train = lorenz96_pairs(8, 60, 0.05, generator=generator)
    held_out = lorenz96_pairs(4, 60, 0.05, generator=generator)
    net = PeriodicConvTendency.from_data(train, 0.05, width=8)
    before = float(one_step_residuals(net, held_out, 0.05).square().mean().sqrt())
    result = fit_tendency_surrogate(net, train, 0.05, val_pairs=held_out, steps=150, lr=1e-2)
    assert result.steps_done == 150
    residuals = one_step_residuals(net, held_out, 0.05)
    after = float(residuals.square().mean().sqrt())
    persistence = float((held_out[1] - held_out[0]).square().mean().sqrt())
    assert after < 0.2 * before and after < 0.1 * persistence

    error = DiagonalNormalError(40, 0.05, sigma=float(residuals.std()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged fit does not warn
        fitted = fit_model_error(error, residuals.float())
    assert isinstance(fitted, ModelErrorFit) and fitted.converged
    assert fitted.relative_change <= fitted.tolerance == 1e-6 and fitted.window == 10
    # the maximum-likelihood Normal: per-variable sample mean and (biased) std
    torch.testing.assert_close(
        error.bias.detach(), residuals.mean(0).float(), rtol=0, atol=0.02 * after
    )
    torch.testing.assert_close(
        error.sigma.detach(), residuals.std(0, unbiased=False).float(), rtol=0.02, atol=0
    )


def test_diagonal_error_scales_like_a_random_walk_and_drives_a_stochastic_forecast() -> None:
    error = DiagonalNormalError(40, 0.05, sigma=0.2)
    with torch.no_grad():
        error.raw_bias.fill_(0.05)  # in units of the initial sigma: bias 0.01
    forecast = torch.zeros(6, 40)
    one = error(forecast, forecast, 0.05)
    four = error(forecast, forecast, 0.2)
    assert isinstance(one, Normal) and one.batch_shape == (6, 40)
    torch.testing.assert_close(four.stddev, 2 * one.stddev)
    torch.testing.assert_close(four.mean, 4 * one.mean)
    with pytest.raises(ValueError, match="forecast has shape"):
        error(forecast, torch.zeros(6, 39), 0.05)

    operator = ForecastOperator(Lorenz96(40), model_error=error, seed=0, device="cpu")
    deterministic = ForecastOperator(Lorenz96(40), device="cpu")
    E = 8.0 + np.random.default_rng(0).standard_normal((300, 40))
    draws = operator.step(E, 0.0, 0.05) - deterministic.step(E, 0.0, 0.05)
    assert abs(draws.std() - 0.2) < 0.01 and abs(draws.mean() - 0.01) < 0.01
    with pytest.raises(ValueError, match="dt_ref="):
        DiagonalNormalError(40, -1.0)
    with pytest.raises(ValueError, match="residuals has shape"):
        fit_model_error(error, torch.zeros(5, 39))
    assert math.isclose(float(error.sigma[0].detach()), 0.2, rel_tol=1e-6)


def test_the_surrogates_follow_the_training_contract() -> None:
    generator = torch.Generator().manual_seed(1)
    pairs = lorenz96_pairs(2, 30, 0.05, spinup=5.0, generator=generator)
    net = PeriodicConvTendency.from_data(pairs, 0.05, width=4)
    assert isinstance(net, Trainable) and float(net.pair_dt) == 0.05
    batch = (pairs[0].float(), pairs[1].float())
    torch.testing.assert_close(net.loss(batch), one_step_loss(net, batch, 0.05))
    assert "pair_dt" in net.state_dict()  # checkpointed with the weights
    before = float(net.loss(batch).detach())
    result = fit(net, [batch], steps=20, lr=1e-2, progress=False, device="cpu")
    assert result.steps_done == 20 and float(net.loss(batch).detach()) < before
    with pytest.raises(ValueError, match="pair_dt is not set"):
        PeriodicConvTendency(40, width=4).loss(batch)

    error = DiagonalNormalError(40, 0.05, sigma=0.1)
    assert isinstance(error, Trainable) and isinstance(error, Validatable)
    residuals = 0.02 + 0.1 * torch.randn(500, 40, generator=generator)
    predictive, y, mask = error.predict_batch(residuals)
    assert isinstance(predictive, Normal) and predictive.batch_shape == (500, 40) and mask is None
    # the loss is the mean negative log density, as torch.distributions computes it
    reference = torch.distributions.Normal(0.0, 0.1).log_prob(residuals).mean()
    torch.testing.assert_close(error.loss(residuals), -reference)
    result = fit(error, [residuals], steps=30, optimizer="lbfgs", lr=1.0, val_data=[residuals],
                 val_every=10, progress=False, device="cpu")  # fmt: skip
    assert result.best_score is not None and result.metric("val_crps")[1]
    with pytest.raises(ValueError, match=r"batch has shape \(500, 39\)"):
        error.loss(residuals[:, :39])


def test_model_error_fit_reports_non_convergence() -> None:
    residuals = 0.3 + 0.05 * torch.randn(400, 40, generator=torch.Generator().manual_seed(2))
    error = DiagonalNormalError(40, 0.05, sigma=1.0)  # far from the optimum
    with pytest.warns(RuntimeWarning, match="did not converge in steps=2"):
        early = fit_model_error(error, residuals, steps=2, window=1)
    assert not early.converged and early.relative_change > early.tolerance
    with pytest.warns(RuntimeWarning, match="did not converge"):
        too_short = fit_model_error(DiagonalNormalError(40, 0.05), residuals, steps=5)
    assert not too_short.converged and math.isnan(too_short.relative_change)
    with pytest.raises(ValueError, match="window="):
        fit_model_error(error, residuals, window=0)


def test_old_imports_from_uqdyn_da_surrogate_still_work() -> None:
    import uqdyn.da.surrogate as old
    import uqdyn.models.surrogate as new

    assert old.PeriodicConvTendency is new.PeriodicConvTendency
    assert old.fit_model_error is new.fit_model_error
    assert old.lorenz96_pairs is lorenz96_pairs
