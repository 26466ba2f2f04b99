"""Fourier neural operator forecasters: the spectral layer against a dense DFT, the heat
equation's exact solution operator across resolutions, masks, seeds, training and the
shared model contract (tests/_contract.py)."""

from __future__ import annotations

import importlib.util
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.models.operator import (
    FieldPairBatch,
    FNOEnsemble,
    FNOForecaster,
    SpectralConv2d,
    fno_ensemble,
    kept_modes,
)
from uqdyn.predictive import GaussianMixture, Normal
from uqdyn.train import fit

HAS_NEURALOP = importlib.util.find_spec("neuralop") is not None

# --------------------------------------------------------------------------- references


def _dense_spectral_conv(x: np.ndarray, weight: np.ndarray, modes: tuple[int, int]) -> np.ndarray:
    """SpectralConv2d by explicit DFT sums in float64 (no FFT).

    ``x``: (batch, in, H, W); ``weight``: complex (in, out, 2 m_y - 1, m_x) with rows in FFT
    order. The output is the real field whose spectrum is ``R(k) x_hat(k)`` on the kept
    half-plane ``|k_y| <= K_y, 0 <= k_x <= K_x`` (counted twice for ``k_x > 0``, once for
    ``k_x = 0``, whose imaginary part a real inverse transform drops).
    """
    _, _, height, width = x.shape
    ky_max, kx_max = kept_modes(modes, (height, width))
    rows = weight.shape[2]
    ny, nx = np.arange(height), np.arange(width)
    out = np.zeros((x.shape[0], weight.shape[1], height, width))
    for ky in range(-ky_max, ky_max + 1):
        ey = np.exp(2j * np.pi * ky * ny / height)
        for kx in range(0, kx_max + 1):
            ex = np.exp(2j * np.pi * kx * nx / width)
            wave = np.outer(ey, ex)  # (H, W)
            coefficient = np.einsum("biyx,yx->bi", x, wave.conj()) / (height * width)
            mixed = np.einsum("bi,io->bo", coefficient, weight[:, :, ky % rows, kx])
            factor = 1.0 if kx == 0 else 2.0
            out += factor * np.real(mixed[:, :, None, None] * wave)
    return out


NU_DT = 0.02  # nu * dt of the heat equation on the periodic domain [0, 2 pi)^2
BAND = 4  # the random fields hold wavenumbers |k_y|, |k_x| <= BAND


def _heat_pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Band-limited periodic fields and their exact heat-equation step, float64.

    ``u_t = nu (u_xx + u_yy)`` multiplies the Fourier mode ``k`` (waves per ``2 pi``) by
    ``exp(-nu |k|^2 dt)``. Fields are evaluated from their Fourier series on a ``size`` grid,
    so the same seed gives the same continuous fields at every resolution.
    """
    g = torch.Generator().manual_seed(seed)
    ky = torch.arange(-BAND, BAND + 1, dtype=torch.float64)
    kx = torch.arange(0, BAND + 1, dtype=torch.float64)
    shape = (n, 2 * BAND + 1, BAND + 1)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    coefficients = (
        torch.complex(
            torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randn(shape, generator=g, dtype=torch.float64),
        )
        / (1.0 + k2).sqrt()
    )
    grid = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    ey = torch.exp(1j * ky[:, None] * grid[None, :])
    ex = torch.exp(1j * kx[:, None] * grid[None, :])

    def evaluate(a: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkl,ky,lx->byx", a, ey, ex).real.unsqueeze(1)

    return evaluate(coefficients), evaluate(coefficients * torch.exp(-NU_DT * k2))


def _relative_error(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    return float(
        (prediction.double() - truth).square().mean().sqrt() / truth.square().mean().sqrt()
    )


# --------------------------------------------------------------------------- the spectral layer


@pytest.mark.parametrize("size", [(12, 10), (9, 16), (5, 7)])
def test_spectral_conv_matches_a_dense_dft(size: tuple[int, int]) -> None:
    """Full kept sets, odd and even grids, and a grid too coarse for the modes (truncated)."""
    with uqdyn.seeded(0):
        layer = SpectralConv2d(2, 3, modes=(4, 3)).double()
    x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)
    expected = _dense_spectral_conv(x.numpy(), layer.complex_weight.detach().numpy(), layer.modes)
    assert got.dtype == torch.float64 and got.shape == (2, 3, *size)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_kept_modes_exclude_the_nyquist_wavenumber() -> None:
    assert kept_modes(12, (64, 64)) == (11, 11)
    assert kept_modes((3, 5), (8, 8)) == (2, 3)  # (n - 1) // 2 = 3 on 8 points
    assert kept_modes(5, (8, 9)) == (3, 4)


def test_spectral_conv_set_to_the_heat_multiplier_is_the_exact_step_at_every_resolution() -> None:
    """R(k) = exp(-nu |k|^2 dt) by hand: the exact solution at 16, 32, 48 and 64 points."""
    layer = SpectralConv2d(1, 1, modes=BAND + 1).double()
    rows = 2 * (BAND + 1) - 1
    ky = torch.fft.fftfreq(rows, 1.0 / rows, dtype=torch.float64)
    kx = torch.arange(BAND + 1, dtype=torch.float64)
    multiplier = torch.exp(-NU_DT * (ky[:, None] ** 2 + kx[None, :] ** 2))
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0, 0] = multiplier
    for size in (16, 32, 48, 64):
        x, y = _heat_pairs(3, size, seed=2)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), y, rtol=0, atol=1e-12)


def test_spectral_conv_fitted_at_32_is_the_exact_heat_step_at_64(one_thread: None) -> None:
    """A briefly trained layer learns the multiplier on 32 x 32 fields and applies it at 64."""
    with uqdyn.seeded(0):
        layer = SpectralConv2d(1, 1, modes=BAND + 2).double()
    x, y = _heat_pairs(32, 32, seed=0)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = (layer(x) - y).square().mean()
        loss.backward()
        optimizer.step()
    x64, y64 = _heat_pairs(8, 64, seed=1)
    with torch.no_grad():
        error = _relative_error(layer(x64), y64)
    assert error < 1e-3, error


# --------------------------------------------------------------------------- the forecaster


def test_fno_fitted_at_32_forecasts_the_heat_equation_at_64(one_thread: None) -> None:
    """uqdyn.train.fit at 32 x 32; the 64 x 64 forecast is as good and close to the truth."""
    x, y = _heat_pairs(64, 32, seed=0)
    batches = [
        FieldPairBatch(x[i : i + 16].float(), y[i : i + 16].float()) for i in range(0, 64, 16)
    ]
    model = FNOForecaster(1, 1, modes=BAND + 2, width=8, depth=1, seed=0)
    fit(model, batches, steps=200, lr=3e-3, progress=False, seed=0)
    errors = {}
    with torch.no_grad():
        for size in (32, 64):
            xt, yt = _heat_pairs(16, size, seed=1)
            forecast = model.predict(xt.float())
            assert isinstance(forecast, Normal) and forecast.batch_shape == (16, 1, size, size)
            errors[size] = _relative_error(forecast.mean, yt)
            persistence = _relative_error(xt, yt)
    assert errors[64] < 0.25 * persistence, (errors, persistence)
    assert abs(errors[64] - errors[32]) < 0.02 * errors[32], errors


def _small(seed: int = 0, **options: object) -> FNOForecaster:
    settings: dict[str, object] = {"modes": 3, "width": 4, "depth": 1}
    settings.update(options)
    return FNOForecaster(1, 1, seed=seed, **settings)  # type: ignore[arg-type]


def _pair_batch(
    dtype: torch.dtype = torch.float32, channels: int = 1, size: int = 8
) -> FieldPairBatch:
    g = torch.Generator().manual_seed(5)
    inputs = torch.randn(3, channels, size, size, generator=g, dtype=dtype)
    targets = inputs.roll(1, dims=-1) + 0.1 * torch.randn(
        3, channels, size, size, generator=g, dtype=dtype
    )
    return FieldPairBatch(inputs, targets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes_at_several_resolutions(dtype: torch.dtype) -> None:
    model = FNOForecaster(2, 3, modes=4, width=6, depth=2).to(dtype)
    assert model.residual is False
    for size in ((8, 8), (16, 12), (5, 7)):
        forecast = model.predict(torch.randn(4, 2, *size, dtype=dtype))
        assert forecast.batch_shape == (4, 3, *size)
        assert forecast.mean.dtype == dtype and forecast.stddev.dtype == dtype
        assert bool((forecast.stddev >= model.min_scale).all())
    batch = _pair_batch(dtype, channels=1)
    square = _small().to(dtype)
    assert square.residual is True
    prediction, targets, mask = square.predict_batch(batch)
    assert prediction.batch_shape == targets.shape == (3, 1, 8, 8) and mask is None
    assert square.loss(batch).dtype == dtype and square.loss(batch).shape == ()


def test_residual_forecasts_the_input_plus_the_backbone() -> None:
    model = _small()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        loc, _ = model(x)
        raw = model.backbone(x)
    torch.testing.assert_close(loc, x + raw[:, :1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_follows_the_cuda_device_and_matches_the_cpu() -> None:
    batch = _pair_batch()
    model = _small()
    cuda = _small().cuda()
    with torch.no_grad():
        expected = model.predict(batch.inputs)
        got = cuda.predict(batch.inputs.cuda())
        loss = cuda.loss(batch.to("cuda"))
    assert got.mean.device.type == "cuda" and loss.device.type == "cuda"
    torch.testing.assert_close(got.mean.cpu(), expected.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.stddev.cpu(), expected.stddev, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_masked_targets_never_change_the_loss_or_its_gradient(per_channel: bool) -> None:
    batch = _pair_batch(torch.float64, channels=2)
    model = FNOForecaster(2, 2, modes=3, width=4, depth=1).double()
    g = torch.Generator().manual_seed(9)
    shape = batch.targets.shape if per_channel else (3, 8, 8)
    mask = torch.rand(shape, generator=g) < 0.6
    observed = mask if per_channel else mask.unsqueeze(1).expand_as(batch.targets)
    clean = FieldPairBatch(batch.inputs, batch.targets, mask)
    junk = batch.targets.clone()
    junk[~observed] = 1e6
    junk[~observed & (torch.rand(junk.shape, generator=g) < 0.5)] = float("nan")
    dirty = FieldPairBatch(batch.inputs, junk, mask)

    def loss_and_grads(b: FieldPairBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model.loss(b)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]

    loss, grads = loss_and_grads(clean)
    loss_dirty, grads_dirty = loss_and_grads(dirty)
    assert torch.isfinite(loss_dirty)
    torch.testing.assert_close(loss_dirty, loss, rtol=0, atol=0)
    for a, b in zip(grads, grads_dirty, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    # the loss is the mean Gaussian NLL of the observed entries (torch.distributions)
    with torch.no_grad():
        loc, scale = model(batch.inputs)
        nll = -torch.distributions.Normal(loc, scale).log_prob(batch.targets)
        torch.testing.assert_close(loss, nll[observed].mean(), rtol=1e-12, atol=0)
        _, _, returned = model.predict_batch(dirty)
    assert returned is not None and returned.shape == batch.targets.shape
    assert torch.equal(returned, observed)


def test_bad_batches_are_refused_with_clear_errors() -> None:
    model = _small()
    batch = _pair_batch()
    with pytest.raises(TypeError, match="FieldPairBatch"):
        model.loss((batch.inputs, batch.targets))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 1"):
        model.predict(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="targets must have shape"):
        model.loss(FieldPairBatch(batch.inputs, batch.targets[..., :4]))
    with pytest.raises(ValueError, match="mask must have shape"):
        model.loss(
            FieldPairBatch(batch.inputs, batch.targets, torch.ones(3, 8, 4, dtype=torch.bool))
        )
    with pytest.raises(TypeError, match="bool"):
        model.loss(FieldPairBatch(batch.inputs, batch.targets, torch.ones(3, 8, 8)))
    with pytest.raises(ValueError, match="observes no target"):
        model.loss(
            FieldPairBatch(batch.inputs, batch.targets, torch.zeros(3, 8, 8, dtype=torch.bool))
        )
    with pytest.raises(TypeError, match="float64"):
        model.predict(batch.inputs.double())
    targets = batch.targets.clone()
    targets[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.loss(FieldPairBatch(batch.inputs, targets))
    mask = torch.ones(3, 8, 8, dtype=torch.bool)
    mask[0, 1, 1] = False
    assert torch.isfinite(model.loss(FieldPairBatch(batch.inputs, targets, mask)))
    with pytest.raises(ValueError, match="head"):
        FNOForecaster(1, 1, head="quantile")
    with pytest.raises(ValueError, match="residual=True"):
        FNOForecaster(1, 2, residual=True)
    with pytest.raises(ValueError, match="backbone"):
        FNOForecaster(1, 1, backbone="jax")
    with pytest.raises(ValueError, match="modes"):
        FNOForecaster(1, 1, modes=0)


def test_same_seed_same_weights_and_the_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = _small(seed=4), _small(seed=4), _small(seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert any(
        not torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


def test_a_short_fit_reduces_the_loss(one_thread: None) -> None:
    batch = _pair_batch(size=16)
    model = FNOForecaster(1, 1, modes=4, width=8, depth=2, seed=0)
    with torch.no_grad():
        before = float(model.loss(batch))
    fit(model, [batch], steps=60, lr=1e-2, progress=False, seed=0)
    with torch.no_grad():
        after = float(model.loss(batch))
    assert after < before - 0.5, (before, after)


def test_the_ensemble_is_a_mixture_of_its_members() -> None:
    ensemble = fno_ensemble(3, 1, 1, modes=3, width=4, depth=1, seed=2)
    assert len(ensemble) == 3
    batch = _pair_batch()
    with torch.no_grad():
        mixture, targets, mask = ensemble.predict_batch(batch)
        members = [FNOForecaster(1, 1, modes=3, width=4, depth=1, seed=s) for s in (2, 3, 4)]
        forecasts = [m.predict(batch.inputs) for m in members]
        loss = ensemble.loss(batch)
        expected = sum(m.loss(batch) for m in members)
    assert isinstance(mixture, GaussianMixture) and mixture.batch_shape == targets.shape
    assert mask is None
    torch.testing.assert_close(mixture.mean, torch.stack([f.mean for f in forecasts]).mean(0))
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="at least one"):
        FNOEnsemble([])
    with pytest.raises(ValueError, match="members\\[1\\]"):
        FNOEnsemble([_small(), FNOForecaster(2, 2)])


# --------------------------------------------------------------------------- neuralop backbone


@pytest.mark.skipif(not HAS_NEURALOP, reason="neuraloperator is not installed")
def test_the_neuralop_backbone_is_resolution_free_and_trains(one_thread: None) -> None:
    model = FNOForecaster(1, 1, modes=4, width=8, depth=2, backbone="neuralop", seed=0)
    assert type(model.backbone).__module__.startswith("neuralop")
    again = FNOForecaster(1, 1, modes=4, width=8, depth=2, backbone="neuralop", seed=0)
    state = model.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())  # no "_metadata"
    for p, q in zip(state.values(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    for size in (16, 24):
        assert model.predict(torch.randn(2, 1, size, size)).batch_shape == (2, 1, size, size)
    batch = _pair_batch(size=16)
    with torch.no_grad():
        before = float(model.loss(batch))
    fit(model, [batch], steps=60, lr=1e-2, progress=False, seed=0)
    with torch.no_grad():
        after = float(model.loss(batch))
    assert after < before - 0.5, (before, after)
    with pytest.raises(TypeError, match="float32 only"):
        model.double().predict(batch.inputs.double())


# --------------------------------------------------------------------------- the model contract


class _OperatorContract(ModelContract):
    """A batch: complete 8 x 8 input fields; padding: masked target pixels holding junk."""

    def batch(self, dtype: torch.dtype = torch.float32) -> FieldPairBatch:
        return _pair_batch(dtype)

    def padded(self, batch: FieldPairBatch) -> FieldPairBatch:
        mask = torch.ones(3, 8, 8, dtype=torch.bool)
        mask[:, :2] = False
        targets = batch.targets.clone()
        targets[:, :, :2] = 1e3
        return FieldPairBatch(batch.inputs, targets, mask)

    def non_finite(self, batch: FieldPairBatch) -> FieldPairBatch:
        inputs = batch.inputs.clone()
        inputs[1, 0, 2, 3] = float("inf")
        return FieldPairBatch(inputs, batch.targets)


class TestFNOForecasterContract(_OperatorContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return _small(seed=0).to(dtype)


class TestFNOEnsembleContract(_OperatorContract):
    predictive_type: ClassVar[type] = GaussianMixture

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fno_ensemble(2, 1, 1, modes=3, width=4, depth=1, seed=0).to(dtype)


if HAS_NEURALOP:  # defined only where importable: the fresh-process fingerprints build it too
    # the shared fingerprint sums parameters in float64, which takes the real part of the
    # complex spectral weights (and says so)
    @pytest.mark.filterwarnings("ignore:Casting complex values to real:UserWarning")
    class TestNeuralopFNOForecasterContract(_OperatorContract):
        """The neuralop backbone: the whole contract, except that it computes in float32 only."""

        predictive_type: ClassVar[type] = Normal

        def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
            model = FNOForecaster(1, 1, modes=3, width=4, depth=1, backbone="neuralop", seed=0)
            # .to(dtype) would cast the complex spectral weights (refused); .double() does not
            return model if dtype == torch.float32 else model.double()

        def test_follows_the_dtype_of_its_inputs(self) -> None:
            model = self.build(torch.float64)
            with pytest.raises(TypeError, match="float32 only"):
                model.loss(self.batch(torch.float64))  # type: ignore[operator]
            with pytest.raises(TypeError, match="imaginary parts"):
                self.build().to(torch.float32)
            ensemble = FNOEnsemble([self.build(), self.build()])  # type: ignore[list-item]
            with pytest.raises(TypeError, match="imaginary parts"):
                ensemble.to(torch.float64)

        def test_masked_padding_never_changes_a_prediction(self) -> None:
            batch = self.batch()
            model = self.build().eval()
            with torch.no_grad():
                expected = model.predict_batch(batch)[0]  # type: ignore[operator]
                got = model.predict_batch(self.padded(batch))[0]  # type: ignore[operator]
            torch.testing.assert_close(got.mean, expected.mean, rtol=0, atol=0)
            torch.testing.assert_close(got.stddev, expected.stddev, rtol=0, atol=0)
