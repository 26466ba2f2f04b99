"""Measurements of gridded fields: the only thing an AmbientGAN discriminator ever sees.

:class:`Measured` holds a batch of measurements ``y = f_theta(x)`` of gridded fields
``x (B, C, H, W)``: the measured values (zero where unobserved), the boolean mask of
observed entries and the standard deviation of the additive noise. It is built only by
:class:`MeasurementModel` (which wraps a :mod:`uqdyn.observe` operator and draws its random
parameters per sample) or by :func:`as_measured` from data that were measured elsewhere;
both check that hidden entries hold zeros, so a clean field can reach a discriminator only
through an explicit identity measurement (:meth:`Measured.identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from uqdyn._checks import as_int
from uqdyn.observe import (
    Blur,
    Compose,
    ObservationOperator,
    Observed,
)

__all__ = ["Measured", "MeasurementModel", "as_measured", "check_field_shape"]


def check_field_shape(
    field_shape: Sequence[int], name: str = "field_shape"
) -> tuple[int, int, int]:
    """Validate ``(channels, height, width)`` with height and width divisible by 4."""
    if isinstance(field_shape, (str, bytes)) or not isinstance(field_shape, Sequence):
        raise TypeError(f"{name}={field_shape!r}; expected a (channels, height, width) tuple")
    shape = tuple(as_int(s, f"{name}[{i}]") for i, s in enumerate(field_shape))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name}={field_shape!r}; expected (channels, height, width) > 0")
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"{name}={field_shape!r}; expected height and width divisible by 4 (the networks "
            "downsample twice by 2)"
        )
    return cast(tuple[int, int, int], shape)


@dataclass(frozen=True, eq=False)
class Measured:
    """A batch of measurements of gridded fields.

    Attributes
    ----------
    values:
        ``(B, C, H, W)`` measured values; exactly ``0`` where unobserved.
    mask:
        ``(B, C, H, W)`` boolean, ``True`` where an entry is observed.
    noise_std:
        ``(B, C, H, W)`` standard deviation of the additive Gaussian noise of each entry
        (``0`` for noise-free entries).
    """

    values: Tensor
    mask: Tensor
    noise_std: Tensor

    def __post_init__(self) -> None:
        v, m, s = self.values, self.mask, self.noise_std
        for name, t in (("values", v), ("mask", m), ("noise_std", s)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} is a {type(t).__name__}; expected a torch.Tensor")
        if v.dim() != 4 or not v.dtype.is_floating_point:
            raise ValueError(
                f"values has shape {tuple(v.shape)} and dtype {v.dtype}; expected floating "
                "(batch, channels, height, width)"
            )
        if m.dtype != torch.bool or m.shape != v.shape:
            raise ValueError(
                f"mask has shape {tuple(m.shape)} and dtype {m.dtype}; expected a bool tensor "
                f"of the shape of values {tuple(v.shape)}"
            )
        if s.shape != v.shape:
            raise ValueError(
                f"noise_std has shape {tuple(s.shape)}; expected the shape of values "
                f"{tuple(v.shape)}"
            )

    @property
    def batch_size(self) -> int:
        """Number of measurements ``B``."""
        return int(self.values.shape[0])

    @property
    def field_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the measured fields."""
        return cast(tuple[int, int, int], tuple(self.values.shape[1:]))

    def as_input(self) -> Tensor:
        """Network input ``(B, 2C, H, W)``: values, then the mask as 0/1 channels."""
        return torch.cat([self.values, self.mask.to(self.values.dtype)], dim=1)

    def to(self, *args: Any, **kwargs: Any) -> Measured:
        """Move the tensors (e.g. ``.to(device)``); the mask stays boolean."""
        values = self.values.to(*args, **kwargs)
        return Measured(
            values,
            self.mask.to(values.device),
            self.noise_std.to(device=values.device, dtype=values.dtype),
        )

    def rows(self, index: Tensor | slice) -> Measured:
        """The measurements of the samples ``index`` (a slice or an index tensor)."""
        return Measured(self.values[index], self.mask[index], self.noise_std[index])

    def repeat(self, times: int) -> Measured:
        """``times`` copies stacked along the batch: ``(times * B, C, H, W)``, copy-major."""
        rep = (times, 1, 1, 1)
        return Measured(self.values.repeat(rep), self.mask.repeat(rep), self.noise_std.repeat(rep))

    def affine(self, shift: Tensor, scale: Tensor) -> Measured:
        """Per-channel ``(values - shift) / scale`` at observed entries (``shift, scale: (C,)``)."""
        shift = shift.to(self.values).view(1, -1, 1, 1)
        scale = scale.to(self.values).view(1, -1, 1, 1)
        values = torch.where(
            self.mask, (self.values - shift) / scale, torch.zeros_like(self.values)
        )
        return Measured(values, self.mask, self.noise_std / scale)

    @staticmethod
    def identity(fields: Tensor) -> Measured:
        """The noise-free, fully observed measurement of ``fields (B, C, H, W)``.

        Only the inpainting baseline (a GAN trained on pseudo-clean fields) uses it; the
        AmbientGAN models never do.
        """
        return Measured(fields, torch.ones_like(fields, dtype=torch.bool), torch.zeros_like(fields))


def _check_observed_somewhere(mask: Tensor, name: str) -> None:
    counts = mask.flatten(1).sum(1)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise ValueError(
            f"{name} removes every pixel of sample(s) {empty[:8].tolist()} (of {mask.shape[0]}); "
            "expected at least one observed entry per sample"
        )


def as_measured(
    values: Tensor | Observed | Measured,
    mask: Tensor | None = None,
    noise_std: Tensor | float | None = None,
    *,
    field_shape: Sequence[int] | None = None,
    name: str = "y",
) -> Measured:
    """Check and wrap an observation as a :class:`Measured`.

    Parameters
    ----------
    values:
        ``(B, C, H, W)`` measured values, or an :class:`~uqdyn.observe.Observed` of gridded
        states (its mask and noise are used), or a :class:`Measured`.
    mask:
        Boolean ``(B, C, H, W)``, or ``(B, 1, H, W)`` / ``(B, H, W)`` shared by the channels;
        required with a plain tensor ``values``.
    noise_std:
        Noise standard deviation, a number or a tensor broadcastable to ``values``
        (default 0).
    field_shape:
        Expected ``(C, H, W)``; a measurement of another shape raises ``ValueError``.
    name:
        Argument name used in error messages.

    Returns
    -------
    Measured
        Unobserved entries are set to 0 (whatever they held, NaN included).

    Raises
    ------
    ValueError
        When the shapes of values, mask and ``field_shape`` disagree, values or noise are not
        finite at observed entries, or a sample has no observed entry.
    """
    if isinstance(values, (Measured, Observed)):
        if isinstance(values, Observed) and values.layout != "grid":
            raise ValueError(
                f"{name} is a {values.layout} observation of shape {tuple(values.values.shape)}; "
                "expected gridded measurements (batch, channels, height, width)"
            )
        given = Measured(values.values, values.mask, values.noise_std.to(values.values))
        seen = given.mask
        if not bool(torch.isfinite(given.values[seen]).all()):
            raise ValueError(f"{name} has NaN or infinite observed entries; expected finite")
        if not bool(torch.isfinite(given.noise_std[seen]).all()):
            raise ValueError(f"{name} has NaN or infinite noise_std at observed entries")
        zeros = torch.zeros_like(given.values)
        out = Measured(torch.where(seen, given.values, zeros), seen, given.noise_std)
    else:
        if not isinstance(values, Tensor):
            raise TypeError(
                f"{name} is a {type(values).__name__}; expected a Tensor, Observed or Measured"
            )
        if values.dim() != 4 or not values.dtype.is_floating_point:
            raise ValueError(
                f"{name} has shape {tuple(values.shape)} and dtype {values.dtype}; expected "
                "floating (batch, channels, height, width)"
            )
        if mask is None:
            raise ValueError(f"{name} is a plain tensor; expected its mask too (mask=None given)")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"mask is a {getattr(mask, 'dtype', type(mask).__name__)}; expected a bool tensor"
            )
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        if (
            mask.dim() != 4
            or mask.shape[0] != values.shape[0]
            or tuple(mask.shape[2:]) != tuple(values.shape[2:])
            or mask.shape[1] not in (1, values.shape[1])
        ):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but {name} has shape "
                f"{tuple(values.shape)}; expected {tuple(values.shape)}, "
                f"({values.shape[0]}, 1, {values.shape[2]}, {values.shape[3]}) or "
                f"({values.shape[0]}, {values.shape[2]}, {values.shape[3]})"
            )
        mask = mask.expand(values.shape).to(values.device)
        std = torch.as_tensor(0.0 if noise_std is None else noise_std).to(values)
        try:
            std = torch.broadcast_to(std, values.shape).clone()
        except RuntimeError:
            raise ValueError(
                f"noise_std has shape {tuple(std.shape)}; expected a number or a tensor "
                f"broadcastable to {tuple(values.shape)}"
            ) from None
        if bool((std < 0).any()):
            raise ValueError("noise_std has negative entries; expected >= 0")
        if not bool(torch.isfinite(values[mask]).all()):
            raise ValueError(f"{name} has NaN or infinite observed entries; expected finite")
        clean = torch.where(mask, values, torch.zeros_like(values))
        out = Measured(clean, mask, std)
    if field_shape is not None and out.field_shape != tuple(field_shape):
        raise ValueError(
            f"{name} has field shape {out.field_shape} (channels, height, width) but the model "
            f"expects {tuple(field_shape)}"
        )
    _check_observed_somewhere(out.mask, "mask" if mask is not None else f"{name}.mask")
    return out


def _flatten_ops(op: ObservationOperator) -> list[ObservationOperator]:
    if isinstance(op, Compose):
        return [o for sub in op.operators for o in _flatten_ops(cast(ObservationOperator, sub))]
    return [op]


def _stations_on_grid(obs: Observed, shape: torch.Size) -> Observed:
    """Station observations ``(B, C, S)`` at grid indices put back on the grid ``shape``."""
    b, c, h, w = shape
    coords = cast(Tensor, obs.coordinates)
    index = (coords[..., 0] * w + coords[..., 1])[:, None, :].expand(b, c, -1)

    def scatter(v: Tensor) -> Tensor:
        return v.new_zeros(b, c, h * w).scatter(2, index, v).view(b, c, h, w)

    return Observed(
        scatter(obs.values),
        scatter(obs.mask),
        scatter(obs.noise_std.to(obs.values)),
        state_shape=obs.state_shape,
        layout="grid",
    )


class MeasurementModel(nn.Module):
    """The measurement process ``y = f_theta(x)`` of an AmbientGAN.

    Wraps an :mod:`uqdyn.observe` operator on gridded fields (masks, blur, noise, and
    station subsampling at grid points, whose station values are put back on the grid with
    a mask of the stations). Every call draws new random
    parameters ``theta`` (masks, cloud shapes, noise) per sample, as the operators
    document; the result is differentiable with respect to the fields, so generator
    gradients flow through the measurement.

    Parameters
    ----------
    operator:
        An :class:`~uqdyn.observe.ObservationOperator`, e.g.
        ``Compose(RandomPixelMask(drop=0.9), GaussianNoise(sigma=0.05))``.
    field_shape:
        ``(C, H, W)`` of the measured fields, or ``None`` to accept any gridded shape.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
    >>> f = MeasurementModel(Compose(RandomPixelMask(drop=0.9), GaussianNoise(sigma=0.05)))
    >>> y = f(torch.randn(4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> y.values.shape, y.mask.dtype
    (torch.Size([4, 3, 32, 32]), torch.bool)
    """

    def __init__(
        self, operator: ObservationOperator, field_shape: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(operator, ObservationOperator):
            raise TypeError(
                f"operator is a {type(operator).__name__}; expected a uqdyn.observe "
                "ObservationOperator"
            )
        ops = _flatten_ops(operator)
        self.operator = operator
        self._blurs = [op for op in ops if isinstance(op, Blur)]
        self.field_shape = None if field_shape is None else check_field_shape(field_shape)

    def _check_fields(self, x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} is a {type(x).__name__}; expected a torch.Tensor")
        if x.dim() != 4:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (batch, channels, height, width)"
            )
        if self.field_shape is not None and tuple(x.shape[1:]) != self.field_shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (batch, *{self.field_shape}), the "
                "field_shape of the measurement model"
            )

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Measured:
        """Measure fields with freshly drawn random parameters.

        Parameters
        ----------
        x:
            ``(B, C, H, W)`` fields.
        generator:
            Source of the random parameters (the global RNG when ``None``).

        Returns
        -------
        Measured
            ``(B, C, H, W)`` values, mask and noise standard deviation.

        Raises
        ------
        ValueError
            When ``x`` does not have ``field_shape``, or a drawn mask removes every pixel of
            a sample.
        """
        self._check_fields(x, "x")
        obs = self.operator(x, generator=generator)
        if obs.layout == "stations":
            obs = _stations_on_grid(obs, x.shape)
        _check_observed_somewhere(obs.mask, "the operator's mask")
        return Measured(obs.values, obs.mask, obs.noise_std.to(obs.values))

    @property
    def fixed_blur(self) -> bool:
        """True when every :class:`~uqdyn.observe.Blur` of the operator has a fixed sigma."""
        return all(op.sigma[0] == op.sigma[1] for op in self._blurs)

    def blur(self, x: Tensor) -> Tensor:
        """The operator's (fixed-sigma) blurs applied to fields ``x (B, C, H, W)``.

        The deterministic, linear part of a measurement that blurs before masking and
        noise; ``x`` unchanged without blur. Raises ``ValueError`` when a blur draws its
        sigma at random (its realization is not known from a measurement).
        """
        if not self.fixed_blur:
            raise ValueError(
                "operator contains a Blur with a random sigma range; expected a fixed sigma, "
                "e.g. Blur(1.5)"
            )
        for op in self._blurs:
            x = op(x).values
        return x

    @staticmethod
    def remeasure(
        x: Tensor, like: Measured, mask: Tensor, generator: torch.Generator | None = None
    ) -> Measured:
        """Measure ``x`` with a given (realized) mask and the noise level of ``like``.

        ``values = mask * (x + like.noise_std * eps)`` with fresh ``eps ~ N(0, I)``: the
        measurement of ``x`` on the entries ``mask`` by the instrument that produced
        ``like``. Valid for masking + noise operators; with a blur, pass the blurred
        fields (:meth:`blur`).

        Parameters
        ----------
        x:
            ``(B, C, H, W)`` fields.
        like:
            A :class:`Measured` of the same shape (its ``noise_std`` is used).
        mask:
            Boolean ``(B, C, H, W)``, a subset of the entries to observe.

        Returns
        -------
        Measured
        """
        if x.shape != like.values.shape or mask.shape != x.shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, like.values {tuple(like.values.shape)} and mask "
                f"{tuple(mask.shape)}; expected equal shapes"
            )
        where = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
        noisy = x + like.noise_std * eps
        values = torch.where(mask, noisy, torch.zeros_like(noisy))
        return Measured(values, mask, torch.where(mask, like.noise_std, torch.zeros_like(x)))

    def extra_repr(self) -> str:
        return f"field_shape={self.field_shape}"
