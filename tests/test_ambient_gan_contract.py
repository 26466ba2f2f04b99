"""The AmbientGAN models run the shared model contract (tests/_contract.py).

A batch is ``(measurements, truth)``: what ``loss`` trains on (it never reads ``truth``)
and what ``predict_batch`` scores against. Padding is the unobserved entries of the
measurements, holding arbitrary values and noise levels.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.models.ambient_gan import AmbientGAN, ConditionalAmbientGAN, Measured, MeasurementModel
from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
from uqdyn.predictive import Ensemble

SHAPE = (2, 8, 8)
Batch = tuple[Measured, torch.Tensor]


def _op() -> Compose:
    return Compose(RandomPixelMask(drop=0.5), GaussianNoise(sigma=0.1))


def _batch(dtype: torch.dtype) -> Batch:
    g = torch.Generator().manual_seed(2)
    grid = torch.arange(8.0) * 2 * math.pi / 8
    a = torch.randn(4, 2, 3, generator=g)
    x = (
        a[..., 0, None, None] * torch.sin(grid).view(8, 1)
        + a[..., 1, None, None] * torch.cos(grid).view(1, 8)
        + a[..., 2, None, None]
    )
    y = MeasurementModel(_op(), SHAPE)(x, generator=g)
    return y.to(dtype), x.to(dtype)


class _GANContract(ModelContract):
    predictive_type: ClassVar[type] = Ensemble

    def batch(self, dtype: torch.dtype = torch.float32) -> Batch:
        return _batch(dtype)

    def padded(self, batch: Batch) -> Batch:
        y, truth = batch
        hidden = ~y.mask
        values = torch.where(hidden, torch.full_like(y.values, 123.0), y.values)
        noise = torch.where(hidden, torch.full_like(y.noise_std, 7.0), y.noise_std)
        values[0, 0, hidden[0, 0]] = float("nan")  # NaN means not observed, too
        return Measured(values, y.mask, noise), truth

    def non_finite(self, batch: Batch) -> Batch:
        y, truth = batch
        values = y.values.clone()
        i, j = y.mask[0, 0].nonzero()[0].tolist()
        values[0, 0, i, j] = float("nan")
        return Measured(values, y.mask, y.noise_std), truth

    def prediction(self, model: nn.Module, batch: Any) -> Any:
        with uqdyn.seeded(5):  # the members come from the global RNG: draw them seeded
            return model.predict_batch(batch)[0]  # type: ignore[operator]

    def test_masked_padding_never_changes_the_loss(self) -> None:
        """What the discriminator sees of a measurement is its observed entries only."""
        batch = self.batch(torch.float64)
        losses = []
        for given in (batch, self.padded(batch)):
            model = self.build(torch.float64)  # fresh: a forward pass moves spectral norms
            with uqdyn.seeded(3):
                losses.append(model.loss(given))  # type: ignore[operator]
        loss, padded = losses
        assert torch.isfinite(loss)
        torch.testing.assert_close(padded, loss, rtol=1e-12, atol=0.0)


class TestAmbientGANContract(_GANContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return AmbientGAN(_op(), SHAPE, latent_dim=4, base_channels=8, val_members=6).to(dtype)

    def test_prediction_is_the_learned_marginal_for_every_case(self) -> None:
        model = self.build().eval()
        with torch.no_grad(), uqdyn.seeded(5):
            prediction, truth, mask = model.predict_batch(self.batch())
        assert mask is None and prediction.members.shape == (6, 4, *SHAPE)
        # unconditional: one set of generated fields, the same for every case
        assert torch.equal(
            prediction.members, prediction.members[:, :1].expand_as(prediction.members)
        )
        with uqdyn.seeded(5):
            samples = model.predict(6).members
        torch.testing.assert_close(prediction.members[:, 0], samples)


class TestConditionalAmbientGANContract(_GANContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            model = ConditionalAmbientGAN(
                _op(), SHAPE, latent_channels=2, base_channels=8, consistency_weight=0.5,
                diversity_weight=0.2, score_weight=0.5, score_samples=2, val_members=6,
            )  # fmt: skip
            return model.to(dtype)
