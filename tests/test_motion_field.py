"""Learned motion-field forecaster: shapes, identity, regularisers, gradients, learning, errors."""

import math

import numpy as np
import pytest
import torch

from uqdyn.models.motion import (
    ConvForecaster,
    ForecasterEnsemble,
    ForecastLoss,
    MotionFieldForecaster,
    divergence,
    divergence_free_velocity,
    fit_forecaster_ensemble,
    motion_penalties,
    physics_rollout,
    random_smooth_field,
    simulate_transport,
    window_sampler,
)
from uqdyn.predictive import Ensemble, Normal
from uqdyn.train import fit

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread avoids oversubscribing shared cores."""


def _tiny_motion(**kwargs):
    options = {"channels": 1, "history": 2, "width": 4, "depth": 1}
    options.update(kwargs)
    return MotionFieldForecaster(**options)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cls", [MotionFieldForecaster, ConvForecaster])
def test_shapes_of_step_rollout_and_stacked_input(cls):
    torch.manual_seed(0)
    model = cls(channels=2, history=3, width=4, depth=2)
    frames = torch.randn(5, 3, 2, 16, 12)  # non-square grids are fine
    assert model(frames).shape == (5, 2, 16, 12)
    rollout = model.rollout(frames, steps=4)
    assert rollout.frames.shape == (5, 4, 2, 16, 12)
    if cls is MotionFieldForecaster:
        assert rollout.velocity.shape == (5, 4, 2, 16, 12)
        assert rollout.diffusion.shape == (5, 4)
        assert bool((rollout.diffusion >= model.min_diffusion).all())
        assert bool((rollout.diffusion <= model.max_diffusion).all())
        velocity, diffusion = model.estimate(frames)
        assert velocity.shape == (5, 2, 16, 12) and diffusion.shape == (5,)
    else:
        assert rollout.velocity is None and rollout.diffusion is None
    # (batch, k * C, H, W) stacks the frames oldest first
    torch.testing.assert_close(model(frames.reshape(5, 6, 16, 12)), model(frames))


def test_rollout_feeds_predictions_back():
    torch.manual_seed(1)
    model = _tiny_motion(history=2)
    frames = torch.randn(3, 2, 1, 8, 8)
    rollout = model.rollout(frames, steps=3).frames
    first = model(frames)
    second = model(torch.stack([frames[:, 1], first], dim=1))
    torch.testing.assert_close(rollout[:, 0], first)
    torch.testing.assert_close(rollout[:, 1], second)


# --------------------------------------------------------------------------- identity


def test_zero_motion_field_gives_the_identity():
    torch.manual_seed(2)
    model = _tiny_motion(diffusion=1e-10).double()
    torch.nn.init.zeros_(model.unet.head.weight)
    torch.nn.init.zeros_(model.unet.head.bias)
    frames = torch.randn(4, 2, 1, 8, 12, dtype=F64)
    velocity, _ = model.estimate(frames)
    assert float(velocity.detach().abs().max()) == 0.0
    rollout = model.rollout(frames, steps=3).frames
    for step in range(3):
        torch.testing.assert_close(rollout[:, step], frames[:, -1], rtol=0, atol=1e-12)


def test_uniform_whole_cell_motion_is_a_roll():
    """A head that outputs a constant w_x = 1 moves the frame one cell along x."""
    torch.manual_seed(3)
    model = _tiny_motion(diffusion=1e-10).double()
    torch.nn.init.zeros_(model.unet.head.weight)
    with torch.no_grad():
        model.unet.head.bias.copy_(torch.tensor([math.atanh(0.25) * 4.0, 0.0]))  # tanh bound 4
    frames = torch.randn(2, 2, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(model(frames), frames[:, -1].roll(1, dims=-1), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- regularisers


def _numpy_penalties(wx, wy, h):
    """Dense float64 centred differences with explicit periodic indices."""
    n_y, n_x = wx.shape

    def d_dx(f):
        out = np.empty_like(f)
        for i in range(n_y):
            for j in range(n_x):
                out[i, j] = (f[i, (j + 1) % n_x] - f[i, (j - 1) % n_x]) / (2 * h)
        return out

    def d_dy(f):
        out = np.empty_like(f)
        for i in range(n_y):
            for j in range(n_x):
                out[i, j] = (f[(i + 1) % n_y, j] - f[(i - 1) % n_y, j]) / (2 * h)
        return out

    div = d_dx(wx) + d_dy(wy)
    grad = d_dx(wx) ** 2 + d_dy(wx) ** 2 + d_dx(wy) ** 2 + d_dy(wy) ** 2
    return div, np.mean(div**2), np.mean(wx**2 + wy**2), np.mean(grad)


def test_regularisers_match_dense_numpy_and_the_analytic_field():
    n = 32
    h = 2 * np.pi / n
    y, x = np.meshgrid(np.arange(n) * h, np.arange(n) * h, indexing="ij")
    # w = (sin x, cos y): div = cos x - sin y, |w|^2 = sin^2 x + cos^2 y, |grad w|^2 = cos^2 x
    # + sin^2 y. Centred differences scale each derivative by sin(h) / h exactly.
    wx, wy = np.sin(x), np.cos(y)
    w = torch.from_numpy(np.stack([wx, wy]))[None]
    penalties = motion_penalties(w, spacing=h)
    factor = (np.sin(h) / h) ** 2
    assert float(penalties.divergence) == pytest.approx(factor, rel=1e-12)
    assert float(penalties.magnitude) == pytest.approx(1.0, rel=1e-12)
    assert float(penalties.smoothness) == pytest.approx(factor, rel=1e-12)
    np.testing.assert_allclose(
        divergence(w, h)[0].numpy(), np.sin(h) / h * (np.cos(x) - np.sin(y)), atol=1e-12
    )
    # a field with mixed derivatives, rectangular grid, against the dense loops
    rng = np.random.default_rng(0)
    wx = np.sin(x[:, :24]) * np.cos(2 * y[:, :24]) + rng.normal(size=(32, 24))
    wy = np.cos(x[:, :24] + y[:, :24]) + rng.normal(size=(32, 24))
    w = torch.from_numpy(np.stack([wx, wy]))[None]
    div_ref, r_div, r_mag, r_grad = _numpy_penalties(wx, wy, h)
    penalties = motion_penalties(w, spacing=h)
    np.testing.assert_allclose(divergence(w, h)[0].numpy(), div_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([float(v) for v in penalties], [r_div, r_mag, r_grad], rtol=1e-12)


def test_loss_adds_the_weighted_regularisers():
    torch.manual_seed(4)
    model = _tiny_motion().double()
    history = torch.randn(3, 2, 1, 8, 8, dtype=F64)
    targets = torch.randn(3, 2, 1, 8, 8, dtype=F64)
    rollout = model.rollout(history, 2)
    penalties = motion_penalties(rollout.velocity)
    mse = (rollout.frames - targets).square().mean()
    weights = {"divergence": 0.7, "magnitude": 0.3, "smoothness": 1.9}
    expected = mse + sum(weights[k] * getattr(penalties, k) for k in weights)
    torch.testing.assert_close(ForecastLoss(**weights)(model, (history, targets)), expected)
    torch.testing.assert_close(ForecastLoss()(model, (history, targets)), mse)
    eps = 0.1
    charbonnier = (torch.sqrt((rollout.frames - targets).square() + eps**2) - eps).mean()
    torch.testing.assert_close(
        ForecastLoss("charbonnier", charbonnier_eps=eps)(model, (history, targets)), charbonnier
    )


def test_the_model_owns_its_loss_and_nan_targets_are_not_scored():
    torch.manual_seed(4)
    weights = {"divergence_weight": 0.7, "magnitude_weight": 0.3, "smoothness_weight": 1.9}
    model = _tiny_motion(**weights).double()
    history = torch.randn(3, 2, 1, 8, 8, dtype=F64)
    targets = torch.randn(3, 2, 1, 8, 8, dtype=F64)
    same = ForecastLoss(divergence=0.7, magnitude=0.3, smoothness=1.9)
    torch.testing.assert_close(model.loss((history, targets)), same(model, (history, targets)))
    # NaN = not observed: the frame term is the mean over the observed entries only
    gappy = targets.clone()
    gappy[0, 1, 0, :4] = float("nan")
    gappy[2, 0] = float("nan")
    rollout = model.rollout(history, 2)
    seen = ~torch.isnan(gappy)
    frame = (rollout.frames - gappy)[seen].square().sum() / seen.sum()
    penalties = motion_penalties(rollout.velocity)
    expected = frame + 0.7 * penalties.divergence + 0.3 * penalties.magnitude
    expected = expected + 1.9 * penalties.smoothness
    loss = model.loss((history, gappy))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    bad = targets.clone()
    bad[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="targets holds infinite"):
        model.loss((history, bad))
    with pytest.raises(ValueError, match="history holds non-finite"):
        model.loss((torch.full_like(history, float("nan")), targets))
    with pytest.raises(ValueError, match="pair \\(history, targets\\)"):
        model.loss(history)


def test_predictive_variance_is_the_tracked_training_error_growing_with_lead():
    torch.manual_seed(5)
    model = ConvForecaster(channels=2, history=2, width=4, depth=1, error_momentum=0.5).double()
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4, 2, 2, 8, 8, dtype=F64, generator=g),
         torch.randn(4, 3, 2, 8, 8, dtype=F64, generator=g))
        for _ in range(3)
    ]  # fmt: skip
    assert torch.equal(model.error_variance, torch.ones(2, dtype=F64))  # before training
    # the reference: per batch, the maximum-likelihood one-step variance under var_j = j s^2
    # (a dense numpy computation), then the running mean for 1 / momentum = 2 batches and
    # the exponential average after
    expected = None
    for index, (history, targets) in enumerate(batches):
        with torch.no_grad():
            error = (model.rollout(history, 3).frames - targets).numpy()
        estimate = np.array(
            [np.mean([np.mean(error[:, j, c] ** 2) / (j + 1) for j in range(3)]) for c in range(2)]
        )
        weight = max(0.5, 1.0 / (index + 1))
        expected = estimate if expected is None else (1 - weight) * expected + weight * estimate
        model.loss((history, targets))  # training mode, gradients on: the statistic moves
    np.testing.assert_allclose(model.error_variance.numpy(), expected, rtol=1e-10)
    with torch.no_grad():
        model.loss(batches[0])  # no gradients: validation leaves it alone
    model.eval()
    model.loss(batches[0])
    np.testing.assert_allclose(model.error_variance.numpy(), expected, rtol=1e-10)
    history, targets = batches[0]
    prediction, y_true, mask = model.predict_batch((history, targets))
    assert isinstance(prediction, Normal) and mask is None and y_true is targets
    assert prediction.batch_shape == targets.shape
    torch.testing.assert_close(prediction.mean, model.rollout(history, 3).frames)
    for lead in range(3):
        for channel in range(2):
            variance = prediction.variance[:, lead, channel]
            torch.testing.assert_close(
                variance, torch.full_like(variance, (lead + 1) * expected[channel])
            )
    gappy = targets.clone()
    gappy[1, 2] = float("nan")
    _, _, mask = model.predict_batch((history, gappy))
    assert torch.equal(mask, ~torch.isnan(gappy))


def test_fit_validates_a_forecaster_with_proper_scores():
    generator = torch.Generator().manual_seed(6)
    start = random_smooth_field(8, (8, 8), max_wavenumber=2, generator=generator)
    sequences = torch.stack([start.roll(t, dims=-1) for t in range(5)], dim=1)
    sampler = window_sampler(sequences, history=2, horizon=2, batch_size=4)
    batch = sampler(torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = _tiny_motion()
    result = fit(model, sampler, steps=4, val_data=[batch], val_every=4, progress=False)
    row = result.history[-1]
    model.eval()
    with torch.no_grad():
        forecast = model.forecast(batch[0], 2)
    assert row["val_crps"] == pytest.approx(float(forecast.crps(batch[1]).mean()), rel=1e-5)
    assert row["val_nll"] == pytest.approx(float(-forecast.log_prob(batch[1]).mean()), rel=1e-5)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("cls", [MotionFieldForecaster, ConvForecaster])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(5)
    model = cls(channels=1, history=2, width=4, depth=2)
    history, targets = torch.randn(4, 2, 1, 8, 8), torch.randn(4, 3, 1, 8, 8)
    ForecastLoss(divergence=1.0, magnitude=0.1, smoothness=0.1)(
        model, (history, targets)
    ).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert float(parameter.grad.abs().sum()) > 0, name


# --------------------------------------------------------------------------- learning


def test_learns_a_uniform_translation():
    """Frames move one cell along +x per frame; the learned w must point along +x."""
    generator = torch.Generator().manual_seed(6)
    start = random_smooth_field(24, (16, 16), max_wavenumber=3, generator=generator)
    sequences = torch.stack([start.roll(t, dims=-1) for t in range(6)], dim=1)
    sampler = window_sampler(sequences, history=2, horizon=1, batch_size=8)
    history, targets = sampler(torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    model = _tiny_motion(min_diffusion=0.02, max_diffusion=0.3, smoothness_weight=0.01)
    persistence = float((history[:, -1:] - targets).square().mean())
    result = fit(model, sampler, steps=120, lr=1e-2, device="cpu", progress=False)  # model.loss
    with torch.no_grad():
        final = float(ForecastLoss()(model, (history, targets)))
        velocity, _ = model.estimate(history)
    assert result.steps_done == 120
    assert final < 0.05 * persistence, (final, persistence)
    assert float(velocity[:, 0].mean()) == pytest.approx(1.0, abs=0.2)
    assert abs(float(velocity[:, 1].mean())) < 0.2


# --------------------------------------------------------------------------- data, physics


def test_velocity_is_divergence_free_and_physics_matches_the_data():
    generator = torch.Generator().manual_seed(8)
    velocity = divergence_free_velocity(3, (16, 16), rms_speed=0.7, generator=generator, dtype=F64)
    ky = np.fft.fftfreq(16, 1 / 16)[:, None]
    kx = np.fft.fftfreq(16, 1 / 16)[None, :]
    spectral_div = 1j * kx * np.fft.fft2(velocity[:, 0].numpy()) + 1j * ky * np.fft.fft2(
        velocity[:, 1].numpy()
    )
    assert np.abs(spectral_div).max() < 1e-10
    rms = velocity.square().sum(1).mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(rms, torch.full((3,), 0.7, dtype=F64))

    data = simulate_transport(4, 5, size=(16, 16), refine=2, seed=1, dtype=F64)
    assert data.frames.shape == (4, 5, 1, 16, 16)
    assert data.velocity.shape == (4, 2, 16, 16) and data.diffusion.shape == (4,)
    truth = physics_rollout(data.frames[:, 0], data.velocity, data.diffusion, 4)
    oracle_error = float((truth - data.frames[:, 1:]).square().mean())
    persistence_error = float((data.frames[:, :1] - data.frames[:, 1:]).square().mean())
    assert oracle_error < 0.05 * persistence_error


# --------------------------------------------------------------------------- ensemble


def test_ensemble_forecast_is_an_ensemble_with_members_first():
    generator = torch.Generator().manual_seed(9)
    sequences = (
        random_smooth_field(8, (8, 8), generator=generator).unsqueeze(1).repeat(1, 5, 1, 1, 1)
    )
    sampler = window_sampler(sequences, history=2, horizon=2, batch_size=4)
    ensemble, results = fit_forecaster_ensemble(
        lambda: _tiny_motion(divergence_weight=0.1),
        sampler,
        seeds=[0, 1, 2],
        steps=3,
        device="cpu",
        progress=False,
    )
    assert len(ensemble) == 3 and len(results) == 3
    forecast = ensemble.forecast(sequences[:5, :2], steps=4)
    assert isinstance(forecast, Ensemble)
    assert forecast.members.shape == (3, 5, 4, 1, 8, 8)
    assert forecast.mean.shape == (5, 4, 1, 8, 8)
    assert float(forecast.variance.max()) > 0  # members differ by their seeds
    for member, stacked in zip(ensemble.members, forecast.members, strict=True):
        torch.testing.assert_close(member.rollout(sequences[:5, :2], 4).frames.detach(), stacked)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (torch.randn(2, 3, 1, 8, 8), "3 frames, expected history = 2"),
        (torch.randn(2, 2, 3, 8, 8), "3 channels, expected channels = 1"),
        (torch.randn(2, 5, 8, 8), "5 stacked channels, expected history"),
        (torch.randn(2, 8, 8), "must have shape"),
        (torch.randn(2, 2, 1, 8, 6), "multiples of 2\\*\\*depth = 4"),
        (torch.full((2, 2, 1, 8, 8), float("nan")), "non-finite"),
    ],
)
def test_bad_frames_raise_value_error_naming_the_argument(frames, match):
    model = _tiny_motion(depth=2)
    with pytest.raises(ValueError, match="frames"):
        model(frames)
    with pytest.raises(ValueError, match=match):
        model.rollout(frames, 2)


def test_other_bad_arguments():
    model = _tiny_motion()
    with pytest.raises(TypeError, match="frames must be a floating tensor"):
        model(torch.zeros(2, 2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="steps"):
        model.rollout(torch.randn(1, 2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="diffusion"):
        MotionFieldForecaster(diffusion=-1.0)
    with pytest.raises(ValueError, match="min_diffusion"):
        MotionFieldForecaster(min_diffusion=0.5, max_diffusion=0.1)
    with pytest.raises(ValueError, match="reconstruction"):
        ForecastLoss("l1")
    with pytest.raises(ValueError, match="divergence"):
        ForecastLoss(divergence=-1.0)
    with pytest.raises(ValueError, match="targets has shape"):
        ForecastLoss()(model, (torch.randn(2, 2, 1, 8, 8), torch.randn(2, 3, 1, 8, 4)))
    with pytest.raises(ValueError, match="motion must have shape"):
        motion_penalties(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="history \\+ horizon"):
        window_sampler(torch.randn(4, 3, 1, 8, 8), history=2, horizon=2, batch_size=2)
    with pytest.raises(ValueError, match="members\\[1\\] has history 3"):
        ForecasterEnsemble([_tiny_motion(), _tiny_motion(history=3)])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        fit_forecaster_ensemble(_tiny_motion, lambda g: None, seeds=[1, 1])
