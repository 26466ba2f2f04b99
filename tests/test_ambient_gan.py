"""AmbientGAN: measurement statistics, measurement-only discriminator, shapes, training."""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
import torch

import uqdyn
from uqdyn.models.ambient_gan import (
    AmbientGAN,
    ConditionalAmbientGAN,
    ConditionalGenerator,
    Generator,
    Measured,
    MeasurementDiscriminator,
    MeasurementModel,
    as_measured,
    fit_ambient_gan,
)
from uqdyn.observe import Blur, CloudMask, Compose, GaussianNoise, RandomPixelMask
from uqdyn.predictive import Ensemble
from uqdyn.train import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 16, 16)


def _op(drop: float = 0.9, sigma: float = 0.1) -> Compose:
    return Compose(RandomPixelMask(drop=drop), GaussianNoise(sigma=sigma))


def _fields(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth periodic test fields (sums of a few Fourier modes)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(16.0) * 2 * math.pi / 16, torch.arange(16.0) * 2 * math.pi / 16, indexing="ij"
    )
    a = torch.randn(n, 3, 4, generator=g)
    return (
        a[..., 0, None, None] * torch.sin(yy)
        + a[..., 1, None, None] * torch.cos(xx)
        + a[..., 2, None, None] * torch.sin(xx + yy)
        + a[..., 3, None, None]
    )


def _measure(x: torch.Tensor, op=None, seed: int = 1) -> Measured:
    return MeasurementModel(op or _op(), SHAPE)(x, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- measurement statistics
def test_pixel_drop_fraction_and_noise_variance_match_the_operator() -> None:
    drop, sigma = 0.9, 0.2
    x = torch.zeros(16, *SHAPE)
    y = _measure(x, _op(drop, sigma), seed=3)
    locations = y.mask[:, 0]
    assert torch.equal(y.mask, locations.unsqueeze(1).expand_as(y.mask))  # shared by channels
    n = locations.numel()
    frac = float(locations.float().mean())
    assert abs(frac - (1 - drop)) < 4 * math.sqrt(drop * (1 - drop) / n)  # binomial, 4 sd
    assert bool((y.values[~y.mask] == 0).all())
    observed = y.values[y.mask].double()
    k = observed.numel()
    var = float(observed.square().mean())  # the fields are 0: values are pure noise
    assert abs(var / sigma**2 - 1) < 4 * math.sqrt(2 / k)  # chi-square, 4 sd
    assert torch.allclose(y.noise_std[y.mask], torch.full((k,), sigma))


def test_remeasure_uses_the_given_mask_and_noise_level() -> None:
    x = torch.zeros(32, *SHAPE)
    like = Measured(x, torch.ones_like(x, dtype=torch.bool), torch.full_like(x, 0.3))
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    y = MeasurementModel.remeasure(x, like, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y.mask, mask)
    assert bool((y.values[~mask] == 0).all())
    std = float(y.values[mask].double().std())
    assert abs(std / 0.3 - 1) < 4 / math.sqrt(2 * int(mask.sum()))


def test_split_is_disjoint_covers_the_measurement_and_follows_the_split_range() -> None:
    model = ConditionalAmbientGAN(_op(drop=0.5), SHAPE, base_channels=8, split=(0.6, 0.6))
    y = _measure(_fields(64), _op(drop=0.5))
    y_a, y_b = model.split_measurement(y, generator=torch.Generator().manual_seed(2))
    assert not bool((y_a.mask & y_b.mask).any())
    assert torch.equal(y_a.mask | y_b.mask, y.mask)
    assert torch.equal(y_a.values + y_b.values, y.values)
    n = int(y.mask[:, 0].sum())
    frac = float(y_a.mask[:, 0].sum()) / n
    assert abs(frac - 0.6) < 4 * math.sqrt(0.24 / n)


# ---------------------------------------------------------------- the discriminator sees measurements only
def _capture(model) -> tuple[list, list]:
    measured, tensors = [], []
    model.discriminator.register_forward_pre_hook(lambda m, args: measured.append(args))
    model.discriminator.features.register_forward_pre_hook(
        lambda m, args: tensors.append(args[0].detach())
    )
    return measured, tensors


@pytest.mark.parametrize("conditional", [False, True])
def test_discriminator_never_receives_clean_fields(conditional: bool) -> None:
    torch.manual_seed(0)
    x = _fields(8)
    y = _measure(x)
    cls = ConditionalAmbientGAN if conditional else AmbientGAN
    model = cls(_op(), SHAPE, base_channels=8)
    model.set_normalization(torch.zeros(3), torch.ones(3))
    measured, tensors = _capture(model)
    model.loss(y)
    assert measured and tensors
    for args in measured:
        for m in args:
            assert isinstance(m, Measured)
            assert bool((m.values[~m.mask] == 0).all())
            assert float(m.mask.float().mean()) < 0.25  # 90% dropped: never a whole field
            # observed entries carry noise or come from the generator, never the clean field
            assert not torch.allclose(
                m.values[m.mask], x.repeat(2, 1, 1, 1)[: len(m.values)][m.mask]
            )
    c = SHAPE[0]
    for t in tensors:  # what enters the network: (values, 0/1 mask) channel groups
        for j in range(t.shape[1] // (2 * c)):
            v, mk = t[:, 2 * c * j : 2 * c * j + c], t[:, 2 * c * j + c : 2 * c * (j + 1)]
            assert bool(((mk == 0) | (mk == 1)).all())
            assert bool((v[mk == 0] == 0).all())
            assert float(mk.mean()) < 0.25
    if conditional:
        # the real pairs are exactly the split entries of y; fakes live on held-out entries
        cond, target = measured[0]
        n = y.batch_size
        assert torch.equal(cond.mask[:n] | target.mask[:n], y.mask)
        assert torch.equal(cond.values[:n] + target.values[:n], y.values)
        assert not bool((target.mask[n:] & cond.mask[n:]).any())
        assert torch.equal(target.mask[n:], target.mask[:n])
    else:
        (both,) = measured[0]
        assert torch.equal(both.values[: y.batch_size], y.values)


def test_diversity_term_draws_two_samples_per_condition_for_the_critic() -> None:
    torch.manual_seed(0)
    y = _measure(_fields(4))
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8, diversity_weight=0.5)
    measured, _ = _capture(model)
    model.train()
    with torch.enable_grad():
        model.loss(y)
    cond, target = measured[0]
    assert cond.batch_size == target.batch_size == 3 * y.batch_size  # real + 2 fakes each
    assert torch.equal(target.mask[4:8], target.mask[8:12])  # same held-out entries
    assert not torch.equal(target.values[4:8], target.values[8:12])  # different samples
    assert model.loss_log[-1]["diversity"] > 0
    with pytest.raises(ValueError, match="diversity_weight"):
        ConditionalAmbientGAN(_op(), SHAPE, diversity_weight=-1.0)


def test_discriminator_rejects_raw_tensors() -> None:
    d = MeasurementDiscriminator(1, 3, 8)
    with pytest.raises(TypeError, match="accepts only Measured"):
        d(torch.randn(2, 3, 16, 16))  # type: ignore[arg-type]


# ---------------------------------------------------------------- shapes and the Ensemble
def test_generator_output_shapes() -> None:
    g = Generator(SHAPE, latent_dim=10, base_channels=8)
    assert g(torch.randn(5, 10)).shape == (5, *SHAPE)
    cg = ConditionalGenerator(SHAPE, latent_channels=2, base_channels=8)
    assert cg.latent_shape == (2, 4, 4)
    y = _measure(_fields(5))
    assert cg(y, torch.randn(5, 2, 4, 4)).shape == (5, *SHAPE)
    with pytest.raises(ValueError, match="z has shape"):
        cg(y, torch.randn(5, 2, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator((3, 10, 16))
    assert AmbientGAN(_op(), SHAPE, base_channels=8).sample(3).shape == (3, *SHAPE)


def test_predict_returns_an_ensemble_of_clean_fields_members_first() -> None:
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8)
    model.set_normalization(torch.tensor([10.0, 0.0, -5.0]), torch.tensor([2.0, 1.0, 0.5]))
    x = _fields(4)
    y = _measure(x)
    ens = model.predict(y, members=7, generator=torch.Generator().manual_seed(0), chunk_size=8)
    assert isinstance(ens, Ensemble)
    assert ens.members.shape == (7, 4, *SHAPE)
    assert ens.batch_shape == (4, *SHAPE)
    assert bool((ens.variance > 0).all())  # different latents give different fields
    again = model.predict(y, members=7, generator=torch.Generator().manual_seed(0), chunk_size=8)
    assert torch.equal(ens.members, again.members)
    # physical units: the generator's standardised output is shifted and scaled back
    z = torch.zeros(4, *model.generator.latent_shape)
    raw = model.generator(y.affine(model.field_mean, model.field_std), z)
    assert torch.allclose(model._to_physical(raw)[:, 0], raw[:, 0] * 2.0 + 10.0, atol=1e-6)
    # the ensemble CRPS is the member-based CRPS (properscoring as the reference)
    crps = ens.crps(x).numpy()
    ref = properscoring.crps_ensemble(x.numpy(), np.moveaxis(ens.members.numpy(), 0, -1))
    np.testing.assert_allclose(crps, ref, rtol=1e-4, atol=1e-5)
    # tensor + mask input gives the same answer as the Measured
    same = model.predict(
        y.values,
        y.mask[:, :1],
        noise_std=0.1,
        members=7,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(same.members, ens.members, atol=1e-5)


# ---------------------------------------------------------------- training
def _mean_losses(log: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in log])) for k in log[0]}


def test_a_few_training_steps_move_the_losses_as_expected() -> None:
    y = _measure(_fields(64), _op(drop=0.7))
    frozen = 1e-12  # a learning rate that leaves a player effectively fixed

    # the critic alone: its hinge loss falls from ~2 (an untrained critic scores ~0) and
    # it scores the measured samples lower (the generator's loss -D(fake) rises)
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(_op(drop=0.7), SHAPE, base_channels=8, consistency_weight=1.0)
    result = fit_ambient_gan(model, y, steps=40, batch_size=16, lr_g=frozen, lr_d=2e-3)
    assert len(model.loss_log) == 40 and result.steps_done == 40
    first, last = _mean_losses(model.loss_log[:3]), _mean_losses(model.loss_log[-10:])
    assert abs(first["d_loss"] - 2.0) < 0.3
    assert last["d_loss"] < first["d_loss"] - 0.02
    assert last["g_loss"] > first["g_loss"] + 0.3
    assert all(math.isfinite(h["loss"]) for h in result.history)

    # the generator alone: its samples move towards the observed values
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(_op(drop=0.7), SHAPE, base_channels=8, consistency_weight=1.0)
    fit_ambient_gan(model, y, steps=40, batch_size=16, lr_g=2e-3, lr_d=frozen)
    first, last = _mean_losses(model.loss_log[:3]), _mean_losses(model.loss_log[-10:])
    assert last["consistency"] < 0.75 * first["consistency"]

    # the unconditional model: the critic separates measurements of G(z) from real ones
    torch.manual_seed(0)
    uncond = AmbientGAN(_op(drop=0.7), SHAPE, latent_dim=8, base_channels=8)
    fit_ambient_gan(uncond, y, steps=30, batch_size=16, lr_g=frozen, lr_d=2e-3)
    first, last = _mean_losses(uncond.loss_log[:3]), _mean_losses(uncond.loss_log[-10:])
    assert abs(first["d_loss"] - 2.0) < 0.3 and last["d_loss"] < first["d_loss"] - 0.5


def test_checkpoint_round_trip_and_exact_resume(tmp_path) -> None:
    y = _measure(_fields(16))

    def new() -> ConditionalAmbientGAN:
        torch.manual_seed(0)
        return ConditionalAmbientGAN(_op(), SHAPE, base_channels=8, consistency_weight=0.5)

    full = new()
    fit_ambient_gan(full, y, steps=4, batch_size=4, checkpoint_dir=tmp_path / "a")
    part = new()
    fit_ambient_gan(part, y, steps=2, batch_size=4, checkpoint_dir=tmp_path / "b")
    resumed = new()
    fit_ambient_gan(resumed, y, steps=4, batch_size=4, checkpoint_dir=tmp_path / "b", resume=True)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    ckpt = load_checkpoint(tmp_path / "a" / "last.pt")
    loaded = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8)
    loaded.load_state_dict(ckpt["model"])
    assert torch.equal(loaded.field_std, full.field_std)
    a = full.predict(y, members=3, generator=torch.Generator().manual_seed(5))
    b = loaded.predict(y, members=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.members, b.members)


def test_fit_on_fields_trains_the_inpainting_baseline() -> None:
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8)
    result = fit_ambient_gan(model, _fields(8), steps=2, batch_size=4)
    assert result.steps_done == 2 and "consistency" in model.last_losses
    with pytest.raises(TypeError, match="only trains the conditional baseline"):
        fit_ambient_gan(AmbientGAN(_op(), SHAPE, base_channels=8), _fields(8), steps=1)


@pytest.mark.parametrize("conditional", [False, True])
def test_fit_validates_with_the_models_own_predict_batch(conditional: bool) -> None:
    y = _measure(_fields(16))
    truth = _fields(4, seed=5)
    y_val = _measure(truth, seed=6)
    torch.manual_seed(0)
    if conditional:
        model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8, val_members=5)
    else:
        model = AmbientGAN(_op(), SHAPE, latent_dim=4, base_channels=8, val_members=5)
    result = fit_ambient_gan(
        model, y, steps=3, batch_size=4, val_data=(y_val, truth), val_every=3, seed=2
    )
    assert result.monitor == "val_crps" and result.best_step == 3
    # fit validates in eval mode with the global RNG seeded with seed + 1: loss, then
    # predict_batch; the members' CRPS against the truth, with properscoring as reference
    model.eval()
    with torch.no_grad(), uqdyn.seeded(3):
        model.loss((y_val, truth))
        prediction, target, mask = model.predict_batch((y_val, truth))
    assert isinstance(prediction, Ensemble) and target is truth and mask is None
    assert prediction.members.shape == (5, 4, *SHAPE)
    members = np.moveaxis(prediction.members.double().numpy(), 0, -1)
    reference = properscoring.crps_ensemble(truth.double().numpy(), members).mean()
    assert result.history[-1]["val_crps"] == pytest.approx(float(reference), rel=1e-5)
    with pytest.raises(ValueError, match="truth has shape"):
        model.predict_batch((y_val, truth[:2]))


# ---------------------------------------------------------------- bad input
def test_measurement_and_field_shapes_that_disagree_raise() -> None:
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8)
    y = _measure(_fields(2))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3, 8, 8\)"):
        model.predict(y.values, torch.ones(2, 3, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"field shape \(2, 16, 16\).*expects \(3, 16, 16\)"):
        model.predict(y.values[:, :2], y.mask[:, :2])
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 8, 8\)"):
        MeasurementModel(_op(), SHAPE)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="expected its mask"):
        model.predict(y.values)
    with pytest.raises(ValueError, match="field_shape"):
        ConditionalAmbientGAN(MeasurementModel(_op(), (3, 8, 8)), SHAPE)


def test_a_mask_that_removes_every_pixel_raises() -> None:
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8)
    values = torch.zeros(3, *SHAPE)
    mask = torch.ones(3, *SHAPE, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"removes every pixel of sample\(s\) \[1\]"):
        model.predict(values, mask)
    with pytest.raises(ValueError, match="removes every pixel"):
        MeasurementModel(_op(drop=1.0), SHAPE)(torch.zeros(2, *SHAPE))
    with pytest.raises(ValueError, match="removes every pixel"):
        as_measured(values, torch.zeros(3, 16, 16, dtype=torch.bool))


def test_unsupported_operators_raise() -> None:
    with pytest.raises(ValueError, match="Blur with a random sigma range"):
        ConditionalAmbientGAN(Compose(Blur((0.5, 2.0)), CloudMask(0.5), GaussianNoise(0.1)), SHAPE)
    AmbientGAN(
        Compose(Blur((0.5, 2.0)), CloudMask(0.5), GaussianNoise(0.1)), SHAPE, base_channels=8
    )
    with pytest.raises(TypeError, match="ObservationOperator"):
        MeasurementModel(torch.nn.Identity())  # type: ignore[arg-type]


def test_held_out_score_is_the_fair_ensemble_crps_on_observed_entries() -> None:
    scoringrules = pytest.importorskip("scoringrules")
    generator = torch.Generator().manual_seed(0)
    k, b = 5, 3
    samples = torch.randn(k * b, *SHAPE, generator=generator, dtype=torch.float64)
    target = torch.randn(b, *SHAPE, generator=generator, dtype=torch.float64)
    mask = torch.rand(b, *SHAPE, generator=generator) < 0.3
    noise = torch.zeros(b, *SHAPE, dtype=torch.float64)
    score = ConditionalAmbientGAN.held_out_score(
        Measured(samples, mask.repeat(k, 1, 1, 1), noise.repeat(k, 1, 1, 1)),
        Measured(torch.where(mask, target, 0.0), mask, noise),
    )
    members = samples.view(k, b, *SHAPE).movedim(0, -1)[mask].numpy()  # (entries, k)
    reference = scoringrules.crps_ensemble(target[mask].numpy(), members, estimator="fair")
    assert abs(float(score) - float(reference.mean())) < 1e-12
    with pytest.raises(ValueError, match="k >= 2"):
        ConditionalAmbientGAN.held_out_score(
            Measured(target, mask, noise), Measured(target, mask, noise)
        )


def test_score_term_draws_k_samples_per_condition_and_is_logged() -> None:
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(_op(), SHAPE, base_channels=8, score_weight=1.0, score_samples=3)
    y = _op()(torch.randn(4, *SHAPE), generator=torch.Generator().manual_seed(1))
    seen: list[int] = []
    hook = model.generator.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    model.train()
    model.loss(y).backward()
    hook.remove()
    assert seen == [12]
    assert model.loss_log[-1]["score"] > 0
    with pytest.raises(ValueError, match="score_samples"):
        ConditionalAmbientGAN(_op(), SHAPE, score_weight=1.0, score_samples=1)
    with pytest.raises(ValueError, match="score_weight"):
        ConditionalAmbientGAN(_op(), SHAPE, score_weight=-1.0)


def test_station_measurements_are_put_back_on_the_grid() -> None:
    from uqdyn.observe import StationSubsample

    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    f = MeasurementModel(Compose(StationSubsample(n_stations=7), GaussianNoise(0.2)), SHAPE)
    y = f(x, generator=torch.Generator().manual_seed(1))
    assert y.values.shape == x.shape
    # 7 stations per sample, every channel observed there
    assert y.mask[:, 0].flatten(1).sum(1).tolist() == [7, 7, 7, 7]
    assert torch.equal(y.mask, y.mask[:, :1].expand_as(y.mask))
    assert bool((y.values[~y.mask] == 0).all())
    assert bool((y.noise_std[y.mask] == 0.2).all()) and bool((y.noise_std[~y.mask] == 0).all())
    residual = (y.values - x)[y.mask]
    assert 0.1 < float(residual.std()) < 0.3  # the noise sits at the station values
    # a conditional model trains on station measurements
    torch.manual_seed(0)
    model = ConditionalAmbientGAN(f, SHAPE, base_channels=8, score_weight=1.0, score_samples=2)
    assert math.isfinite(float(model.loss(y).detach()))


def test_conditional_model_remeasures_through_a_fixed_blur() -> None:
    op = Compose(Blur(1.5), RandomPixelMask(drop=0.5), GaussianNoise(0.0))
    model = ConditionalAmbientGAN(op, SHAPE, base_channels=8, consistency_weight=1.0)
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    blurred = model.measurement.blur(x)
    assert torch.allclose(blurred, Blur(1.5)(x).values)
    y = model.measurement(x)
    assert torch.allclose(y.values[y.mask], blurred[y.mask])
    # a generator that returned the true fields would be exactly consistent with y
    assert float(model._consistency(model.measurement.blur(x), y)) < 1e-12
    assert float(model._consistency(x, y)) > 1e-3  # the unblurred fields are not
    torch.manual_seed(0)
    model.train()
    model.loss(y).backward()
    assert all(p.grad is not None for p in model.generator.parameters())


class _LinearGenerator(torch.nn.Module):
    """``G(z) = A z`` reshaped to ``(1, 4, 4)``: a generator with a Gaussian prior on fields."""

    latent_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(
            torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.A.T).view(-1, 1, 4, 4)


def test_unconditional_posterior_matches_the_linear_gaussian_posterior() -> None:
    op = Compose(RandomPixelMask(drop=0.5), GaussianNoise(0.5))
    gan = AmbientGAN(op, (1, 4, 4), base_channels=8).double()
    gan.generator = _LinearGenerator()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = gan.generator(torch.randn(1, 3, generator=generator, dtype=torch.float64))
    y = gan.measurement(x, generator=generator)
    ensemble = gan.posterior(
        y, members=4000, steps=3000, step_size=1e-3, generator=torch.Generator().manual_seed(2)
    )
    # dense float64 reference: z | y ~ N(m, S), S = (I + A' M A / s^2)^-1, m = S A' M y / s^2
    a = gan.generator.A.detach()
    observed = y.mask.reshape(-1)
    a_obs = a[observed]
    precision = torch.eye(3, dtype=torch.float64) + a_obs.T @ a_obs / 0.25
    cov_z = torch.linalg.inv(precision)
    mean_z = cov_z @ a_obs.T @ y.values.reshape(-1)[observed] / 0.25
    mean_x, var_x = a @ mean_z, torch.diagonal(a @ cov_z @ a.T)
    members = ensemble.members.reshape(4000, 16)
    # Monte Carlo error of the mean: sd / sqrt(4000) = 0.016 sd; the chain's bias is O(eps)
    assert float(((members.mean(0) - mean_x) / var_x.sqrt()).abs().max()) < 0.08
    assert float((members.var(0) / var_x - 1).abs().max()) < 0.08
    # the data moved the samples far from the prior (posterior variance << prior variance)
    assert float(var_x.sum()) < 0.1 * float(torch.diagonal(a @ a.T).sum())


def test_posterior_needs_noise_at_the_observed_entries() -> None:
    gan = AmbientGAN(Compose(RandomPixelMask(drop=0.5), GaussianNoise(0.1)), SHAPE, base_channels=8)
    values = torch.zeros(1, *SHAPE)
    mask = torch.ones(1, *SHAPE, dtype=torch.bool)
    with pytest.raises(ValueError, match="positive noise"):
        gan.posterior(values, mask, noise_std=0.0, steps=1)
    with pytest.raises(ValueError, match="step_size"):
        gan.posterior(values, mask, noise_std=0.1, step_size=0.0)
    assert gan.posterior(values, mask, noise_std=0.1, members=3, steps=2).members.shape == (
        3,
        1,
        *SHAPE,
    )


def test_operator_split_holds_out_the_gaps_of_a_fresh_measurement() -> None:
    op = Compose(CloudMask(cover=(0.3, 0.6), length_scale=(2, 4)), GaussianNoise(0.1))
    model = ConditionalAmbientGAN(op, SHAPE, base_channels=8, split_by="operator")
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = model.measurement(x, generator=torch.Generator().manual_seed(1))
    y_a, y_b = model.split_measurement(y, generator=torch.Generator().manual_seed(2))
    fresh = model.measurement(torch.zeros_like(x), generator=torch.Generator().manual_seed(2))
    assert torch.equal(y_a.mask, y.mask & fresh.mask)
    assert torch.equal(y_b.mask, y.mask & ~fresh.mask)
    assert bool(y_b.mask.any()) and not bool((y_a.mask & y_b.mask).any())
    with pytest.raises(ValueError, match="split_by"):
        ConditionalAmbientGAN(op, SHAPE, split_by="clouds")
