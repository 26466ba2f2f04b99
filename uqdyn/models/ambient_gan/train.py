"""Training AmbientGAN models with the one fit loop of uqdyn (:func:`uqdyn.train.fit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from uqdyn._checks import as_float, as_int
from uqdyn.models.ambient_gan.measurement import Measured, as_measured
from uqdyn.models.ambient_gan.model import AmbientGAN, ConditionalAmbientGAN
from uqdyn.observe import Observed
from uqdyn.train import FitResult, fit

__all__ = ["fit_ambient_gan", "gan_optimizer", "measurement_statistics"]


def gan_optimizer(
    model: AmbientGAN | ConditionalAmbientGAN,
    lr_g: float = 2e-4,
    lr_d: float = 4e-4,
    betas: tuple[float, float] = (0.0, 0.9),
) -> Callable[[list[nn.Parameter]], Optimizer]:
    """An optimizer factory for :func:`uqdyn.train.fit`: Adam with one group per player.

    Group 0 holds the generator's parameters (``lr_g``), group 1 the discriminator's
    (``lr_d``, the two-time-scale rule of Heusel et al. 2017), both with ``betas``.
    """
    lr_g = as_float(lr_g, "lr_g", positive=True, finite=False)
    lr_d = as_float(lr_d, "lr_d", positive=True, finite=False)

    def make(params: list[nn.Parameter]) -> Optimizer:
        gen = {id(p) for p in model.generator.parameters()}
        disc = {id(p) for p in model.discriminator.parameters()}
        g_params = [p for p in params if id(p) in gen]
        d_params = [p for p in params if id(p) in disc]
        other = [p for p in params if id(p) not in gen and id(p) not in disc]
        if other:
            raise ValueError(
                f"model has {len(other)} trainable parameters outside its generator and "
                "discriminator; expected none"
            )
        return Adam(
            [{"params": g_params, "lr": float(lr_g)}, {"params": d_params, "lr": float(lr_d)}],
            betas=betas,
        )

    return make


def measurement_statistics(y: Measured) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation ``(C,)`` over the observed entries of ``y``."""
    mask = y.mask.to(y.values.dtype)
    zeros = torch.zeros_like(y.values)
    count = mask.sum(dim=(0, 2, 3)).clamp_min(1.0)
    mean = torch.where(y.mask, y.values, zeros).sum(dim=(0, 2, 3)) / count
    deviation = (y.values - mean.view(1, -1, 1, 1)).square()
    var = torch.where(y.mask, deviation, zeros).sum(dim=(0, 2, 3)) / count
    std = var.sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _sampler(data: Measured | Tensor, batch_size: int) -> Callable[[torch.Generator], Any]:
    n = data.batch_size if isinstance(data, Measured) else int(data.shape[0])

    def draw(generator: torch.Generator) -> Any:
        index = torch.randint(n, (batch_size,), generator=generator)
        return data.rows(index) if isinstance(data, Measured) else data[index]

    return draw


def fit_ambient_gan(
    model: AmbientGAN | ConditionalAmbientGAN,
    data: Measured | Observed | Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 32,
    lr_g: float = 2e-4,
    lr_d: float = 4e-4,
    betas: tuple[float, float] = (0.0, 0.9),
    normalize: bool = True,
    val_data: tuple[Measured | Observed, Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **fit_kwargs: Any,
) -> FitResult:
    """Train an AmbientGAN with :func:`uqdyn.train.fit`: the recipe.

    Sets the model's standardisation from ``data`` (with ``normalize``), then
    ``fit(model, sampler, optimizer=gan_optimizer(model, lr_g, lr_d, betas), ...)`` on
    batches of ``batch_size`` samples drawn with replacement; the model's own
    ``loss(batch)`` and ``predict_batch(batch)`` do the rest.

    Parameters
    ----------
    model:
        An :class:`AmbientGAN` or :class:`ConditionalAmbientGAN`.
    data:
        The training measurements: a :class:`Measured` or a gridded
        :class:`~uqdyn.observe.Observed` ``(N, C, H, W)`` (AmbientGAN training; the models
        never see clean fields). For a :class:`ConditionalAmbientGAN` a tensor of fields
        ``(N, C, H, W)`` instead trains the *baseline* conditional GAN on those fields taken
        as clean (e.g. naively inpainted measurements), see
        :meth:`ConditionalAmbientGAN.supervised_loss`.
    steps, batch_size:
        Optimisation steps (each updates both players) and samples per step, drawn with
        replacement.
    lr_g, lr_d, betas:
        Adam settings of the generator and the discriminator (:func:`gan_optimizer`).
    normalize:
        Set the model's per-channel standardisation from ``data`` (observed entries of the
        measurements, or all entries of fields) before training.
    val_data:
        Optional ``(measurements, true fields)``: fit then reports ``val_crps`` of the
        model's :meth:`~ConditionalAmbientGAN.predict_batch` (``model.val_members``
        members; for the unconditional model the learned marginal distribution against
        the true fields) and monitors it (true fields are used for validation only).
    seed, device, progress:
        As in :func:`uqdyn.train.fit`.
    **fit_kwargs:
        Further :func:`uqdyn.train.fit` options (``checkpoint_dir``, ``resume``,
        ``checkpoint_every``, ``log_every``, ``grad_clip``, ``scheduler``, ``val_every``).

    Returns
    -------
    FitResult
        ``loss`` in its history is the sum of the discriminator loss, the generator loss
        and the weighted consistency term; the separate terms of every step are in
        ``model.loss_log``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.ambient_gan import MeasurementModel
    >>> from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
    >>> op = Compose(RandomPixelMask(drop=0.5), GaussianNoise(sigma=0.1))
    >>> y = MeasurementModel(op, (1, 8, 8))(torch.randn(6, 1, 8, 8))
    >>> gan = ConditionalAmbientGAN(op, (1, 8, 8), base_channels=8)
    >>> fit_ambient_gan(gan, y, steps=2, batch_size=4).steps_done
    2
    """
    if not isinstance(model, (AmbientGAN, ConditionalAmbientGAN)):
        raise TypeError(
            f"model is a {type(model).__name__}; expected an AmbientGAN or ConditionalAmbientGAN"
        )
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    train = _training_data(model, data)
    if normalize:
        stats = Measured.identity(train) if isinstance(train, Tensor) else train
        model.set_normalization(*measurement_statistics(stats))
    if val_data is not None:
        fit_kwargs.update(val_data=[_validation_pair(model, val_data)], monitor="val_crps")
    return fit(
        model,
        _sampler(train, batch_size),
        steps=steps,
        optimizer=gan_optimizer(model, lr_g, lr_d, betas),
        seed=seed,
        device=device,
        progress=progress,
        **fit_kwargs,
    )


def _training_data(
    model: AmbientGAN | ConditionalAmbientGAN, data: Measured | Observed | Tensor
) -> Measured | Tensor:
    """Checked training data on the CPU: measurements, or clean fields for the baseline."""
    if not isinstance(data, Tensor):
        return as_measured(data, field_shape=model.field_shape, name="data").to("cpu")
    if not isinstance(model, ConditionalAmbientGAN):
        raise TypeError(
            "data is a Tensor of fields, which only trains the conditional baseline; "
            "expected Measured or Observed measurements for an AmbientGAN"
        )
    if data.dim() != 4 or tuple(data.shape[1:]) != model.field_shape:
        raise ValueError(f"data has shape {tuple(data.shape)}; expected (N, *{model.field_shape})")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data has NaN or infinite entries; expected finite fields")
    return data.detach().cpu()


def _validation_pair(
    model: AmbientGAN | ConditionalAmbientGAN, val_data: tuple[Measured | Observed, Tensor]
) -> tuple[Measured, Tensor]:
    if not isinstance(val_data, (tuple, list)) or len(val_data) != 2:
        raise ValueError(
            f"val_data is a {type(val_data).__name__}; expected (measurements, true fields)"
        )
    y_val, truth = val_data
    y_val_m = as_measured(y_val, field_shape=model.field_shape, name="val_data[0]")
    if not isinstance(truth, Tensor) or truth.shape != y_val_m.values.shape:
        raise ValueError(
            f"val_data[1] has shape {tuple(getattr(truth, 'shape', ()))}; expected the "
            f"measurements' shape {tuple(y_val_m.values.shape)}"
        )
    return y_val_m, truth
