"""The shallow-water gap-filling benchmark harness (benchmarks/): baselines and scores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import properscoring
import pytest
import torch

from uqdyn.models.ambient_gan import Measured, MeasurementModel
from uqdyn.observe import RandomPixelMask
from uqdyn.predictive import Normal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ambient_gan_harness import (  # noqa: E402
    deterministic,
    evaluate_predictive,
    gp_fill,
    interpolation_fill,
    make_inverse_problem_data,
    make_operator,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_interpolation_is_exact_for_affine_fields_inside_and_at_observed_pixels() -> None:
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    x = torch.stack([0.3 * rows - 0.2 * cols, 0.1 * cols + 1.0]).unsqueeze(0).repeat(3, 1, 1, 1)
    y = MeasurementModel(RandomPixelMask(drop=0.5), (2, 16, 16))(
        x, generator=torch.Generator().manual_seed(0)
    )
    filled = interpolation_fill(y)
    assert filled.shape == x.shape
    torch.testing.assert_close(filled[y.mask], x[y.mask])  # observed pixels kept
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12))
    torch.testing.assert_close(filled[inner], x[inner], atol=1e-5, rtol=0)  # affine: exact
    constant = torch.full((1, 1, 8, 8), 2.5)
    mask = torch.zeros_like(constant, dtype=torch.bool)
    mask[0, 0, 3, 5] = True  # a single observed pixel: nearest fill
    one = interpolation_fill(Measured(torch.where(mask, constant, 0.0), mask, 0 * constant))
    torch.testing.assert_close(one, constant)


def test_gp_fill_returns_a_normal_close_to_noise_free_observations() -> None:
    x = torch.randn(2, 2, 8, 8).cumsum(-1).cumsum(-2) * 0.1  # smooth-ish
    mask = torch.ones_like(x, dtype=torch.bool)
    pred = gp_fill(Measured(x, mask, torch.zeros_like(x)), steps=15)
    assert isinstance(pred, Normal) and pred.batch_shape == x.shape
    assert bool((pred.stddev > 0).all())
    err = float((pred.mean - x).abs().mean())
    assert err < 0.2 * float(x.abs().mean())


def test_evaluate_predictive_matches_independent_scores() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 2, 4, 4, generator=g)
    guess = truth + 0.5 * torch.randn(3, 2, 4, 4, generator=g)
    observed = torch.rand(3, 2, 4, 4, generator=g) < 0.3
    det = evaluate_predictive(deterministic(guess), truth, observed)
    mae = (guess - truth).abs()
    assert det["crps"] == pytest.approx(float(mae.mean()), rel=1e-5)
    assert det["crps_hidden"] == pytest.approx(float(mae[~observed].mean()), rel=1e-5)
    assert det["rmse"] == pytest.approx(float((guess - truth).square().mean().sqrt()), rel=1e-5)
    assert det["coverage"] == 0.0 and det["ssr"] == 0.0
    scale = torch.full_like(truth, 0.7)
    normal = evaluate_predictive(Normal(guess, scale), truth)
    ref = properscoring.crps_gaussian(truth.numpy(), guess.numpy(), scale.numpy()).mean()
    assert normal["crps"] == pytest.approx(float(ref), rel=1e-4)
    inside = (truth - guess).abs() <= 1.6448536 * 0.7
    assert normal["coverage"] == pytest.approx(float(inside.float().mean()), abs=1e-6)
    assert np.isnan(normal["crps_hidden"])
    with pytest.raises(ValueError, match="batch shape"):
        evaluate_predictive(deterministic(guess), truth[:2])


def test_make_inverse_problem_data_measures_each_field_once() -> None:
    x = torch.randn(6, 3, 8, 8)
    data = make_inverse_problem_data(x, x[:2], make_operator("clouds"), seed=3)
    assert data.train.values.shape == x.shape and data.field_shape == (3, 8, 8)
    assert torch.equal(data.test_fields, x[:2])
    hidden = 1 - data.train.mask[:, 0].float().mean()
    assert 0.3 - 0.02 <= float(hidden) <= 0.7 + 0.02  # cloud cover range
    with pytest.raises(ValueError, match="scenario"):
        make_operator("fog")
