r"""AmbientGAN models: generative models of clean fields learned from corrupted measurements.

**Unconditional** (:class:`AmbientGAN`, Bora et al. 2018). A generator ``G(z)`` of clean
fields is trained so that *measurements* of its samples, ``f_theta(G(z))`` with random
``theta`` drawn afresh, are indistinguishable from the real measurements ``y``. The
discriminator never sees a clean field. When the measurement distribution determines the
field distribution (e.g. random pixel dropping with drop probability ``< 1``, Bora et al.,
Thm. 5.2), the optimum has ``G(z) ~ p(x)``. Given one measurement ``y``,
:meth:`AmbientGAN.posterior` samples clean fields from ``p(x | y)`` under that learned
prior (Langevin dynamics on ``z`` with the measurement's Gaussian likelihood).

**Conditional** (:class:`ConditionalAmbientGAN`). ``G(z, y)`` should sample
``p(x | y)``. With corrupted data only, no pair (measurement, clean field) exists, and
usually no second measurement of the same field either. The model therefore *splits* each
real measurement: every observed location goes, independently with probability
``q ~ Uniform(*split)`` (per sample), to a conditioning part ``y_a``, the rest to a held-out
part ``y_b``. Given the field and the masks, ``y_a`` and ``y_b`` are independent
measurements (disjoint entries, independent noise), so ``(y_a, y_b)`` is a sample of the
joint law of two measurements of one field. The generator gets ``y_a``; its sample is
measured on the held-out entries with the instrument's noise (after its blur, when the
instrument blurs with a fixed width), ``f_b(G(z, y_a))``; a paired
discriminator compares ``(y_a, f_b(G(z, y_a)))`` with ``(y_a, y_b)``. At the optimum the
measurements of generated fields have the conditional law of real held-out measurements,
``p(f_b(x) | y_a)``, which for random masks pins down ``p(x | y_a)`` as in the unconditional
case. At prediction time ``G`` gets the whole measurement ``y`` (a slightly denser
condition than in training, which ``split`` upper bounds close to 1 keep small). An
optional measurement-consistency term ``lambda * mean_{a}(G(z, y_a) - y_a)^2`` over the
observed entries speeds up learning the conditioning (it pulls samples towards noisy
values, so keep ``lambda`` small when the noise is large).
An optional diversity-sensitive term (Yang et al. 2019) rewards differences between two
samples of one condition, against conditional GANs' tendency to ignore ``z``.

An optional **held-out score** term adds a strictly proper scoring rule to the generator's
objective: the fair ensemble CRPS (Ferro 2014) of ``k`` re-measured samples
``f_b(G(z_i, y_a))`` against the held-out measurement ``y_b``, averaged over its entries.
It needs no clean field either (``y_b`` is a real measurement), it is minimised in
expectation exactly when the re-measured samples have the law of ``y_b`` given ``y_a``
(per entry), and its spread term rewards diversity where the data call for it, so it gives
the generator a direct, low-variance signal towards calibrated ensembles (the
scoring-rule training of generative forecasters, Pacchiardi et al. 2024) while the
adversarial term keeps the samples' joint structure.

Both models use the hinge loss with spectrally normalised discriminators (Miyato et al.
2018) and follow the training contract of :func:`uqdyn.train.fit`: ``loss(batch)`` is the
sum of both players' losses on a batch of measurements (one step = simultaneous updates of
``G`` and ``D``: the discriminator loss sees detached generator samples, the generator
loss a frozen discriminator), and ``predict_batch((measurements, truth))`` the
:class:`~uqdyn.predictive.Ensemble` that validation scores against clean fields.
:func:`uqdyn.models.ambient_gan.fit_ambient_gan` is the recipe: normalisation from the
measurements, a sampler of batches and the two-group Adam of :func:`gan_optimizer`.

Fields are standardised per channel with the buffers ``field_mean`` and ``field_std``
(set from the training measurements by ``fit_ambient_gan``); the public methods take and
return physical units.

References
----------
A. Bora, E. Price, A. G. Dimakis, "AmbientGAN: Generative models from lossy measurements",
ICLR 2018. T. Miyato et al., "Spectral normalization for generative adversarial networks",
ICLR 2018. A. Pajot, E. de Bezenac, P. Gallinari, "Unsupervised adversarial image
reconstruction", ICLR 2019. G. O. Roberts, R. L. Tweedie, "Exponential convergence of
Langevin distributions and their discrete approximations", Bernoulli 1996. D. Yang et al., "Diversity-sensitive conditional generative
adversarial networks", ICLR 2019. C. A. T. Ferro, "Fair scores for ensemble forecasts",
QJRMS 2014. L. Pacchiardi, R. Adewoyin, P. Dueben, R. Dutta, "Probabilistic forecasting with
generative networks via scoring rule minimization", JMLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.models.ambient_gan.measurement import (
    Measured,
    MeasurementModel,
    as_measured,
    check_field_shape,
)
from uqdyn.models.ambient_gan.networks import (
    ConditionalGenerator,
    Generator,
    MeasurementDiscriminator,
)
from uqdyn.observe import Blur, ObservationOperator, Observed
from uqdyn.predictive import Ensemble

__all__ = ["AmbientGAN", "ConditionalAmbientGAN"]


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` do not require grad inside the block (restored after)."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _cat(*measured: Measured) -> Measured:
    return Measured(
        torch.cat([m.values for m in measured]),
        torch.cat([m.mask for m in measured]),
        torch.cat([m.noise_std for m in measured]),
    )


def _detach(m: Measured) -> Measured:
    return Measured(m.values.detach(), m.mask, m.noise_std.detach())


def _check_members(members: int, name: str = "members") -> int:
    return as_int(members, name, minimum=1)


def _pair(batch: Any) -> tuple[Any, Tensor]:
    """``(measurements, truth)`` of a validation batch; ``truth`` a floating tensor."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"batch is a {type(batch).__name__}; expected a pair (measurements, truth) with the "
            "clean fields truth (B, C, H, W)"
        )
    y, truth = batch
    if not isinstance(truth, Tensor) or not truth.dtype.is_floating_point:
        raise TypeError(
            f"batch[1] (truth) is a {type(truth).__name__}; expected a floating tensor of "
            "clean fields (B, C, H, W)"
        )
    return y, truth


def _measurements(batch: Any) -> Any:
    """The measurements of a training batch, or of a ``(measurements, truth)`` pair."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _truth_mask(truth: Tensor, shape: tuple[int, ...]) -> Tensor | None:
    """Check ``truth`` against the prediction's shape; mask of its non-NaN entries or None."""
    if tuple(truth.shape) != shape:
        raise ValueError(
            f"truth has shape {tuple(truth.shape)}; expected the measurements' shape {shape}"
        )
    finite = torch.isfinite(truth)
    if bool(finite.all()):
        return None
    if bool(torch.isinf(truth).any()):
        raise ValueError("truth has infinite entries; expected finite values (NaN: not observed)")
    return finite


def _as_measurement_model(
    measurement: MeasurementModel | ObservationOperator, field_shape: tuple[int, int, int]
) -> MeasurementModel:
    if isinstance(measurement, MeasurementModel):
        if measurement.field_shape is not None and measurement.field_shape != field_shape:
            raise ValueError(
                f"measurement has field_shape {measurement.field_shape}; expected {field_shape}"
            )
        return measurement
    if isinstance(measurement, ObservationOperator):
        return MeasurementModel(measurement, field_shape)
    raise TypeError(
        f"measurement is a {type(measurement).__name__}; expected a MeasurementModel or a "
        "uqdyn.observe ObservationOperator"
    )


class _GANBase(nn.Module):
    """Shared state: normalisation buffers, the measurement model and the loss log."""

    field_mean: Tensor
    field_std: Tensor

    def __init__(
        self,
        measurement: MeasurementModel | ObservationOperator,
        field_shape: Sequence[int],
        val_members: int = 8,
    ) -> None:
        super().__init__()
        self.field_shape = check_field_shape(field_shape)
        self.measurement = _as_measurement_model(measurement, self.field_shape)
        #: Ensemble size of :meth:`predict_batch` (the forecast that validation scores).
        self.val_members = _check_members(val_members, "val_members")
        channels = self.field_shape[0]
        self.register_buffer("field_mean", torch.zeros(channels))
        self.register_buffer("field_std", torch.ones(channels))
        #: Losses of the latest training call: ``d_loss``, ``g_loss``, ``consistency``.
        self.last_losses: dict[str, float] = {}
        #: One entry of :attr:`last_losses` per training step (in training mode with grad).
        self.loss_log: list[dict[str, float]] = []

    def set_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel standardisation ``(x - mean) / std``; ``mean, std: (C,)``."""
        c = self.field_shape[0]
        mean = torch.as_tensor(mean, dtype=self.field_mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.field_std.dtype).reshape(-1)
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(
                f"mean and std have shapes {tuple(mean.shape)} and {tuple(std.shape)}; "
                f"expected ({c},) each"
            )
        if not bool(torch.isfinite(mean).all()) or not bool((std > 0).all()):
            raise ValueError("mean must be finite and std positive")
        self.field_mean.copy_(mean)
        self.field_std.copy_(std)

    def _normalize(self, y: Measured) -> Measured:
        return y.affine(self.field_mean, self.field_std)

    def _to_physical(self, x: Tensor) -> Tensor:
        return x * self.field_std.to(x).view(1, -1, 1, 1) + self.field_mean.to(x).view(1, -1, 1, 1)

    def _to_standard(self, x: Tensor) -> Tensor:
        return (x - self.field_mean.to(x).view(1, -1, 1, 1)) / self.field_std.to(x).view(
            1, -1, 1, 1
        )

    def _record(self, **losses: Tensor) -> None:
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        if self.training and torch.is_grad_enabled():
            self.loss_log.append(dict(self.last_losses))

    @staticmethod
    def _hinge(real: Tensor, fake: Tensor) -> Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


class AmbientGAN(_GANBase):
    """Unconditional AmbientGAN: ``G(z)`` learned from measurements ``f_theta(x)`` only.

    Parameters
    ----------
    measurement:
        The measurement process (a :class:`MeasurementModel` or an observation operator,
        e.g. ``Compose(RandomPixelMask(drop=0.9), GaussianNoise(sigma=0.05))``).
    field_shape:
        ``(C, H, W)`` of the clean fields; ``H`` and ``W`` divisible by 4.
    latent_dim:
        Size of ``z ~ N(0, I)``.
    base_channels:
        Width of the generator and the discriminator.
    val_members:
        Samples of :meth:`predict_batch`. Default 8.

    Notes
    -----
    The model is unconditional, so its validation forecast of a batch
    ``(measurements, truth)`` does not depend on the measurements (they are only checked):
    :meth:`predict_batch` returns ``val_members`` generated fields as the same
    :class:`~uqdyn.predictive.Ensemble` for every held-out clean field of ``truth``, so
    ``val_crps`` scores the learned marginal distribution of each entry against clean
    fields (like a climatology). Use :meth:`posterior` for fields given a measurement.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
    >>> gan = AmbientGAN(Compose(RandomPixelMask(drop=0.5), GaussianNoise(sigma=0.1)),
    ...                  (3, 16, 16), base_channels=8)
    >>> gan.sample(4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 3, 16, 16])
    """

    def __init__(
        self,
        measurement: MeasurementModel | ObservationOperator,
        field_shape: Sequence[int],
        *,
        latent_dim: int = 64,
        base_channels: int = 32,
        val_members: int = 8,
    ) -> None:
        super().__init__(measurement, field_shape, val_members)
        self.generator = Generator(self.field_shape, latent_dim, base_channels)
        self.discriminator = MeasurementDiscriminator(1, self.field_shape[0], base_channels)

    def _latent(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        where = generator.device if generator is not None else like.device
        z = torch.randn((n, self.generator.latent_dim), generator=generator, device=where)
        return z.to(like)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` clean fields ``(n, C, H, W)`` in physical units."""
        n = _check_members(n)
        z = self._latent(n, generator, self.field_mean)
        return self._to_physical(self.generator(z))

    def predict(self, members: int = 32, *, generator: torch.Generator | None = None) -> Ensemble:
        """The learned distribution of clean fields as an Ensemble ``(members, C, H, W)``."""
        with torch.no_grad():
            return Ensemble(self.sample(members, generator=generator))

    def posterior(
        self,
        y_obs: Measured | Any,
        mask: Tensor | None = None,
        *,
        noise_std: Tensor | float | None = None,
        members: int = 32,
        steps: int = 500,
        step_size: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> Ensemble:
        r"""Samples of clean fields given measurements, by Langevin dynamics on the latent.

        The learned prior ``x = G(z)``, ``z ~ N(0, I)``, and the measurement's Gaussian
        likelihood (its fixed blur ``B``, mask and noise ``sigma``) give the latent posterior
        ``log p(z | y) = -||z||^2 / 2 - sum_obs (y - B G(z))^2 / (2 sigma^2) + const``.
        ``members`` independent chains per measurement start from the prior and take
        ``steps`` unadjusted Langevin steps
        ``z <- z + eps grad log p(z | y) + sqrt(2 eps) xi`` (Roberts & Tweedie 1996); each
        chain's last state gives one member. The bias of the unadjusted chain is of order
        ``eps``: choose ``step_size`` well below ``sigma^2`` divided by the number of
        observed entries' squared generator gain, and check convergence by doubling
        ``steps``.

        Parameters
        ----------
        y_obs:
            ``(B, C, H, W)`` measured values with ``mask``, or an
            :class:`~uqdyn.observe.Observed` / :class:`Measured`; noise must be positive at
            every observed entry.
        mask, noise_std:
            As in :func:`as_measured` (with a tensor ``y_obs``).
        members:
            Chains (ensemble members) per measurement.
        steps, step_size:
            Langevin steps and ``eps > 0``.
        generator:
            Source of the initial latents and the Langevin noise.

        Returns
        -------
        Ensemble
            Members ``(members, B, C, H, W)`` in physical units.
        """
        members = _check_members(members)
        steps = as_int(steps, "steps", minimum=1)
        step_size = as_float(step_size, "step_size", positive=True)
        y = as_measured(y_obs, mask, noise_std, field_shape=self.field_shape, name="y_obs")
        device = self.field_mean.device
        y = y.to(device=device, dtype=self.field_mean.dtype)
        if bool((y.noise_std[y.mask] <= 0).any()):
            raise ValueError(
                "y_obs has observed entries without noise (noise_std 0); the posterior needs "
                "a positive noise standard deviation at every observed entry"
            )
        b = y.batch_size
        target = y.repeat(members)
        weight = torch.where(
            target.mask, target.noise_std.clamp_min(1e-30).pow(-2), torch.zeros_like(target.values)
        )
        z = self._latent(members * b, generator, self.field_mean)
        where = generator.device if generator is not None else z.device
        eps = float(step_size)
        was_training = self.training
        self.eval()
        try:
            for _ in range(steps):
                z = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    fields = self.measurement.blur(self._to_physical(self.generator(z)))
                    misfit = (target.values - fields).square() * weight
                    log_post = -0.5 * z.square().sum() - 0.5 * misfit.sum()
                    (grad,) = torch.autograd.grad(log_post, z)
                noise = torch.randn(z.shape, generator=generator, device=where).to(z)
                z = z.detach() + eps * grad + math.sqrt(2.0 * eps) * noise
            with torch.no_grad():
                samples = self._to_physical(self.generator(z))
        finally:
            self.train(was_training)
        return Ensemble(samples.view(members, b, *self.field_shape))

    def loss(self, y: Measured | Observed | tuple[Any, Tensor]) -> Tensor:
        """Discriminator plus generator hinge loss on a batch of real measurements ``y``.

        The discriminator compares ``y`` with ``f_theta(G(z))`` (fresh ``theta``, ``z``);
        its loss uses detached generator samples and the generator's loss a frozen
        discriminator, so one backward pass gives both players their own gradients.

        Parameters
        ----------
        y:
            Measurements ``(B, C, H, W)`` (:class:`Measured` or gridded
            :class:`~uqdyn.observe.Observed`), or a validation pair ``(measurements,
            truth)``, whose clean fields the loss never reads.

        Returns
        -------
        Tensor
            Shape ``()``.

        Raises
        ------
        ValueError
            When an observed entry is NaN or infinite, or the shape is not ``field_shape``.
        """
        y = as_measured(_measurements(y), field_shape=self.field_shape)
        real = self._normalize(y)
        z = self._latent(y.batch_size, None, real.values)
        fields = self._to_physical(self.generator(z))
        fake = self._normalize(self.measurement(fields))
        scores = self.discriminator(_cat(real, _detach(fake)))
        d_loss = self._hinge(scores[: y.batch_size], scores[y.batch_size :])
        with _frozen(self.discriminator):
            g_loss = -self.discriminator(fake).mean()
        self._record(d_loss=d_loss, g_loss=g_loss)
        return d_loss + g_loss

    def predict_batch(self, batch: tuple[Any, Tensor]) -> tuple[Ensemble, Tensor, Tensor | None]:
        """Validation forecast of a batch ``(measurements, truth)`` (see the class notes).

        Parameters
        ----------
        batch:
            Measurements ``(B, C, H, W)`` (checked, not used by the unconditional model)
            and held-out clean fields ``truth (B, C, H, W)``.

        Returns
        -------
        (Ensemble, truth, mask)
            ``val_members`` generated fields (global RNG), the same for every case:
            members ``(val_members, B, C, H, W)``; ``truth``; ``None``, or the mask of the
            non-NaN entries of ``truth`` where it has NaN (not observed).
        """
        y_obs, truth = _pair(batch)
        y = as_measured(y_obs, field_shape=self.field_shape, name="batch[0]")
        mask = _truth_mask(truth, tuple(y.values.shape))
        samples = self.predict(self.val_members).members
        members = samples.unsqueeze(1).expand(-1, y.batch_size, *self.field_shape)
        return Ensemble(members.to(truth.device)), truth, mask


class ConditionalAmbientGAN(_GANBase):
    """Conditional AmbientGAN ``G(z, y)``: samples of clean fields given one measurement.

    Trained from corrupted measurements alone by splitting each measurement into a
    condition ``y_a`` and a held-out part ``y_b`` (see the module documentation). The
    measurement operator may combine masks, station subsampling and noise, after a blur of
    fixed sigma (a random sigma is refused): a generated field is re-measured on the
    held-out entries by blurring it, then adding the instrument's noise there.

    Parameters
    ----------
    measurement:
        The measurement process (masks and :class:`~uqdyn.observe.GaussianNoise`).
    field_shape:
        ``(C, H, W)``; ``H`` and ``W`` divisible by 4.
    latent_channels:
        Channels of the spatial latent ``z (latent_channels, H/4, W/4)``.
    base_channels:
        Width of the generator and the discriminator.
    consistency_weight:
        ``lambda`` of the measurement-consistency term (0 disables it).
    diversity_weight:
        Weight of a diversity-sensitive term (Yang et al. 2019): with a positive weight
        every condition gets two latents per step and the loss subtracts
        ``diversity_weight * min(mean |G(z1, y) - G(z2, y)|, 1)`` (standardised units),
        against samples that ignore ``z``. 0 disables it.
    score_weight:
        Weight of the held-out score term: the fair CRPS of ``score_samples`` re-measured
        samples against the held-out measurement (0 disables it).
    score_samples:
        Samples per condition ``k >= 2`` for the held-out score term.
    split:
        ``(lo, hi)``: range of the per-sample probability that an observed location goes
        to the condition ``y_a`` in training (``split_by="location"``).
    split_by:
        ``"location"`` (independent locations, see ``split``) or ``"operator"`` (a fresh
        mask of the measurement operator decides, so held-out regions look like the real
        gaps, e.g. clouds); see :meth:`split_measurement`.
    val_members:
        Ensemble size of :meth:`predict_batch`, the forecast that validation scores.
        Default 8.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
    >>> op = Compose(RandomPixelMask(drop=0.9), GaussianNoise(sigma=0.05))
    >>> gan = ConditionalAmbientGAN(op, (3, 16, 16), base_channels=8)
    >>> y = op(torch.randn(2, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    >>> gan.predict(y, members=5).members.shape
    torch.Size([5, 2, 3, 16, 16])
    """

    def __init__(
        self,
        measurement: MeasurementModel | ObservationOperator,
        field_shape: Sequence[int],
        *,
        latent_channels: int = 8,
        base_channels: int = 32,
        consistency_weight: float = 0.0,
        diversity_weight: float = 0.0,
        score_weight: float = 0.0,
        score_samples: int = 4,
        split: tuple[float, float] = (0.5, 0.95),
        split_by: str = "location",
        val_members: int = 8,
    ) -> None:
        super().__init__(measurement, field_shape, val_members)
        if not self.measurement.fixed_blur:
            raise ValueError(
                f"measurement contains a {Blur.__name__} with a random sigma range; the "
                "conditional model re-measures generated fields on held-out entries and needs "
                "a fixed sigma (e.g. Blur(1.5)) besides masks and noise"
            )
        consistency_weight = as_float(
            consistency_weight, "consistency_weight", nonnegative=True, finite=False
        )
        lo, hi = (as_float(s, f"split[{i}]", finite=False) for i, s in enumerate(split))
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"split={split!r}; expected 0 < lo <= hi < 1")
        diversity_weight = as_float(
            diversity_weight, "diversity_weight", nonnegative=True, finite=False
        )
        score_weight = as_float(score_weight, "score_weight", nonnegative=True, finite=False)
        score_samples = as_int(score_samples, "score_samples", minimum=2)
        self.consistency_weight = float(consistency_weight)
        self.diversity_weight = float(diversity_weight)
        self.score_weight = float(score_weight)
        self.score_samples = score_samples
        self.split = (lo, hi)
        if split_by not in ("location", "operator"):
            raise ValueError(f"split_by={split_by!r}; expected 'location' or 'operator'")
        self.split_by = split_by
        self.generator = ConditionalGenerator(self.field_shape, latent_channels, base_channels)
        self.discriminator = MeasurementDiscriminator(2, self.field_shape[0], base_channels)

    def _latent(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        where = generator.device if generator is not None else like.device
        z = torch.randn((n, *self.generator.latent_shape), generator=generator, device=where)
        return z.to(like)

    def split_measurement(
        self, y: Measured, generator: torch.Generator | None = None
    ) -> tuple[Measured, Measured]:
        """Split ``y`` into a condition ``y_a`` and a held-out part ``y_b`` (disjoint).

        With ``split_by="location"`` each observed location (all its channels) goes to
        ``y_a`` with probability ``q ~ Uniform(*split)`` drawn per sample, otherwise to
        ``y_b``. With ``split_by="operator"`` the measurement operator draws a fresh mask
        (e.g. a new cloud field): observed entries it keeps go to ``y_a``, those it hides to
        ``y_b``, so the held-out part has the shapes of the real gaps. A sample whose
        ``y_a`` would be empty keeps all its entries in ``y_a``.

        Returns
        -------
        (y_a, y_b), each a :class:`Measured` of the shape of ``y``.
        """
        b = y.batch_size
        device = y.values.device
        where = generator.device if generator is not None else device
        if self.split_by == "operator":
            with torch.no_grad():
                fresh = self.measurement(torch.zeros_like(y.values), generator=generator)
            to_a = fresh.mask.to(device)
        else:
            lo, hi = self.split
            q = lo + (hi - lo) * torch.rand((b, 1, 1, 1), generator=generator, device=where)
            u = torch.rand((b, 1, *y.values.shape[2:]), generator=generator, device=where)
            to_a = (u < q).to(device).expand(y.values.shape)
        mask_a = y.mask & to_a
        empty = mask_a.flatten(1).sum(1) == 0
        mask_a = torch.where(empty.view(-1, 1, 1, 1), y.mask, mask_a)
        mask_b = y.mask & ~mask_a
        zeros = torch.zeros_like(y.values)
        y_a = Measured(torch.where(mask_a, y.values, zeros), mask_a, y.noise_std)
        y_b = Measured(torch.where(mask_b, y.values, zeros), mask_b, y.noise_std)
        return y_a, y_b

    def _sample_standard(self, y_std: Measured, generator: torch.Generator | None = None) -> Tensor:
        z = self._latent(y_std.batch_size, generator, y_std.values)
        return self.generator(y_std, z)

    def forward(self, y: Measured, *, generator: torch.Generator | None = None) -> Tensor:
        """One clean-field sample per measurement: ``(B, C, H, W)`` in physical units."""
        y = as_measured(y, field_shape=self.field_shape)
        return self._to_physical(self._sample_standard(self._normalize(y), generator))

    def _consistency(self, fields: Tensor, y: Measured) -> Tensor:
        count = y.mask.sum().clamp_min(1)
        diff = torch.where(y.mask, fields - y.values, torch.zeros_like(fields))
        return diff.square().sum() / count

    def _paired_loss(
        self,
        condition: Measured,
        real: Measured,
        fake: Measured,
        fields: Tensor,
        measured_fields: Tensor,
    ) -> Tensor:
        n = condition.batch_size
        k = fake.batch_size // n  # samples per condition (2 with the diversity term)
        cond_k = condition.repeat(k)
        scores = self.discriminator(_cat(condition, cond_k), _cat(real, _detach(fake)))
        d_loss = self._hinge(scores[:n], scores[n:])
        with _frozen(self.discriminator):
            g_loss = -self.discriminator(cond_k, fake).mean()
        consistency = self._consistency(measured_fields, cond_k)
        total = d_loss + g_loss + self.consistency_weight * consistency
        losses = {"d_loss": d_loss, "g_loss": g_loss, "consistency": consistency}
        if self.diversity_weight > 0:
            spread = (fields[:n] - fields[n : 2 * n]).abs().mean()
            losses["diversity"] = spread
            total = total - self.diversity_weight * spread.clamp(max=1.0)
        if self.score_weight > 0:
            score = self.held_out_score(fake, real)
            losses["score"] = score
            total = total + self.score_weight * score
        self._record(**losses)
        return total

    @staticmethod
    def held_out_score(samples: Measured, target: Measured) -> Tensor:
        """Fair ensemble CRPS of measured samples against a measurement, per entry.

        ``samples`` holds ``k`` measurements per condition, copy-major ``(k * B, C, H, W)``;
        ``target`` ``(B, C, H, W)``. Over the entries observed in ``target``:
        ``(1/k) sum_i |X_i - y| - 1/(k (k - 1)) sum_{i<j} |X_i - X_j|`` (Ferro 2014),
        averaged over those entries. Returns a scalar.
        """
        n = target.batch_size
        k = samples.batch_size // n
        if k < 2 or k * n != samples.batch_size:
            raise ValueError(
                f"samples has batch {samples.batch_size}; expected k * {n} with k >= 2"
            )
        x = samples.values.view(k, *target.values.shape)
        skill = (x - target.values).abs().mean(0)
        pairs = torch.zeros_like(skill)
        for i in range(k - 1):
            pairs = pairs + (x[i + 1 :] - x[i]).abs().sum(0)
        crps = skill - pairs / (k * (k - 1))
        mask = target.mask
        return torch.where(mask, crps, torch.zeros_like(crps)).sum() / mask.sum().clamp_min(1)

    def _samples_per_condition(self) -> int:
        k = 2 if self.diversity_weight > 0 else 1
        return max(k, self.score_samples) if self.score_weight > 0 else k

    def loss(self, y: Measured | Observed | Tensor | tuple[Any, Tensor]) -> Tensor:
        """AmbientGAN loss on real measurements ``y`` (``D`` sees measurements only).

        ``y`` is split into ``(y_a, y_b)``; the paired discriminator compares
        ``(y_a, y_b)`` with ``(y_a, f_b(G(z, y_a)))`` (hinge loss); plus the weighted
        consistency term on ``y_a``'s entries. Returns the scalar sum of the discriminator
        loss (detached samples), the generator loss (frozen discriminator) and the
        consistency term.

        Parameters
        ----------
        y:
            Measurements ``(B, C, H, W)`` (:class:`Measured` or gridded
            :class:`~uqdyn.observe.Observed`); a validation pair ``(measurements, truth)``,
            whose clean fields the loss never reads; or a plain tensor of fields
            ``(B, C, H, W)`` taken as clean, which trains the baseline conditional GAN of
            :meth:`supervised_loss` instead (a measurement always carries its mask).

        Returns
        -------
        Tensor
            Shape ``()``.

        Raises
        ------
        ValueError
            When an observed entry is NaN or infinite, or the shape is not ``field_shape``.
        """
        given = _measurements(y)
        if isinstance(given, Tensor):
            return self.supervised_loss(given)
        y = as_measured(given, field_shape=self.field_shape)
        y_std = self._normalize(y)
        y_a, y_b = self.split_measurement(y_std)
        k = self._samples_per_condition()
        fields = self._sample_standard(y_a.repeat(k))
        blurred = self.measurement.blur(fields)  # standardising commutes with a blur
        fake_b = MeasurementModel.remeasure(blurred, y_std.repeat(k), y_b.repeat(k).mask)
        return self._paired_loss(y_a, y_b, fake_b, fields, blurred)

    def supervised_loss(self, fields: Tensor) -> Tensor:
        """Conditional GAN loss on (pseudo-)clean fields: *not* AmbientGAN.

        Measures ``fields (B, C, H, W)`` with the measurement model (fresh parameters) and
        trains ``D`` on ``(y, fields)`` against ``(y, G(z, y))``, the fields seen whole
        (an identity measurement). This is the baseline that treats inpainted fields as
        clean data (Bora et al.'s "inpaint, then train a GAN"), or an oracle with clean data.
        """
        if not isinstance(fields, Tensor) or tuple(fields.shape[1:]) != self.field_shape:
            raise ValueError(
                f"fields has shape {tuple(getattr(fields, 'shape', ()))}; expected "
                f"(batch, *{self.field_shape})"
            )
        if not bool(torch.isfinite(fields).all()):
            raise ValueError("fields has NaN or infinite entries; expected finite clean fields")
        y_std = self._normalize(self.measurement(fields))
        target = self._to_standard(fields)
        sample = self._sample_standard(y_std.repeat(self._samples_per_condition()))
        return self._paired_loss(
            y_std,
            Measured.identity(target),
            Measured.identity(sample),
            sample,
            self.measurement.blur(sample),
        )

    def predict(
        self,
        y_obs: Measured | Any,
        mask: Tensor | None = None,
        *,
        noise_std: Tensor | float | None = None,
        members: int = 32,
        generator: torch.Generator | None = None,
        chunk_size: int = 512,
    ) -> Ensemble:
        """Ensemble of clean fields given measurements.

        Parameters
        ----------
        y_obs:
            ``(B, C, H, W)`` measured values with ``mask``, or an
            :class:`~uqdyn.observe.Observed` / :class:`Measured`.
        mask:
            Boolean mask of observed entries (with a tensor ``y_obs``): ``(B, C, H, W)``,
            ``(B, 1, H, W)`` or ``(B, H, W)``.
        noise_std:
            Noise standard deviation of the measurement (with a tensor ``y_obs``).
        members:
            Ensemble size ``K`` (one latent draw each).
        generator:
            Source of the latents.
        chunk_size:
            Most generator evaluations per forward pass.

        Returns
        -------
        Ensemble
            Members ``(K, B, C, H, W)`` in physical units.

        Raises
        ------
        ValueError
            When the measurement's shape differs from ``field_shape`` or from its mask's, or
            a sample has no observed entry.
        """
        members = _check_members(members)
        y = as_measured(y_obs, mask, noise_std, field_shape=self.field_shape, name="y_obs")
        device = self.field_mean.device
        y_std = self._normalize(y.to(device=device, dtype=self.field_mean.dtype))
        b = y.batch_size
        per_chunk = max(1, int(chunk_size) // b)
        was_training = self.training
        self.eval()
        out = []
        try:
            with torch.no_grad():
                done = 0
                while done < members:
                    k = min(per_chunk, members - done)
                    samples = self._sample_standard(y_std.repeat(k), generator)
                    out.append(self._to_physical(samples).view(k, b, *self.field_shape))
                    done += k
        finally:
            self.train(was_training)
        return Ensemble(torch.cat(out, dim=0))

    def predict_batch(self, batch: tuple[Any, Tensor]) -> tuple[Ensemble, Tensor, Tensor | None]:
        """Validation forecast of a batch ``(measurements, truth)``.

        Parameters
        ----------
        batch:
            Measurements ``(B, C, H, W)`` (:class:`Measured` or gridded
            :class:`~uqdyn.observe.Observed`) and their clean fields ``truth (B, C, H, W)``
            (used for scoring only).

        Returns
        -------
        (Ensemble, truth, mask)
            :meth:`predict` with ``members=val_members`` (latents from the global RNG, which
            :func:`uqdyn.train.fit` seeds for every validation): members
            ``(val_members, B, C, H, W)``; ``truth``; ``None``, or the mask of the non-NaN
            entries of ``truth`` where it has NaN (not observed).
        """
        y_obs, truth = _pair(batch)
        y = as_measured(y_obs, field_shape=self.field_shape, name="batch[0]")
        mask = _truth_mask(truth, tuple(y.values.shape))
        prediction = self.predict(y, members=self.val_members)
        return Ensemble(prediction.members.to(truth.device)), truth, mask
