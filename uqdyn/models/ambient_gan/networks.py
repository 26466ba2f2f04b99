"""Convolutional generators and the measurement discriminator of the AmbientGAN models.

All convolutions pad circularly: the fields live on periodic grids (as the
:mod:`uqdyn.physics` systems do). Heights and widths must be divisible by 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from uqdyn._checks import as_float, as_int
from uqdyn.models.ambient_gan.measurement import Measured, check_field_shape

__all__ = ["Generator", "ConditionalGenerator", "MeasurementDiscriminator"]


def _conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, padding_mode="circular"
    )


def _block(c_in: int, c_out: int) -> nn.Sequential:
    groups = 8 if c_out % 8 == 0 else 1
    return nn.Sequential(
        _conv(c_in, c_out),
        nn.GroupNorm(groups, c_out),
        nn.SiLU(),
        _conv(c_out, c_out),
        nn.SiLU(),
    )


def _check_latent(z: Tensor, expected: tuple[int, ...], name: str = "z") -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} is a {type(z).__name__}; expected a torch.Tensor")
    if tuple(z.shape[1:]) != expected:
        raise ValueError(f"{name} has shape {tuple(z.shape)}; expected (batch, *{expected})")


class Generator(nn.Module):
    """Unconditional generator ``G(z)``: a latent vector to a field.

    ``z (B, latent_dim)`` -> linear map to ``(4 base, H/4, W/4)`` -> two upsampling
    convolution stages -> ``(B, C, H, W)``.

    Parameters
    ----------
    field_shape:
        ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    latent_dim:
        Size of ``z``.
    base_channels:
        Width of the network.
    """

    def __init__(
        self, field_shape: tuple[int, int, int], latent_dim: int = 64, base_channels: int = 32
    ) -> None:
        super().__init__()
        c, h, w = check_field_shape(field_shape)
        self.field_shape = (c, h, w)
        self.latent_dim = as_int(latent_dim, "latent_dim", minimum=1)
        b = as_int(base_channels, "base_channels", minimum=1)
        self.start = (4 * b, h // 4, w // 4)
        self.project = nn.Linear(self.latent_dim, 4 * b * (h // 4) * (w // 4))
        self.body = nn.Sequential(
            nn.SiLU(),
            _block(4 * b, 4 * b),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _block(4 * b, 2 * b),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _block(2 * b, b),
            _conv(b, c, kernel=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Fields ``(B, C, H, W)`` from latents ``z (B, latent_dim)``."""
        _check_latent(z, (self.latent_dim,))
        return self.body(self.project(z).view(z.shape[0], *self.start))


class ConditionalGenerator(nn.Module):
    """Conditional generator ``G(z, y)``: a measurement and a spatial latent to a field.

    A small U-Net on the periodic grid. The measurement enters as values and mask channels
    ``(B, 2C, H, W)`` together with normalised-convolution fills and confidences at the
    ``fill_scales`` (:meth:`smooth_fill`); the latent ``z (B, latent_channels, H/4, W/4)``
    (standard normal) is concatenated at the bottleneck and, upsampled, at both decoder
    levels, so different ``z`` give spatially coherent variations of the field. The
    output is the fill at the second scale plus the network's correction (small at
    initialisation), so an untrained generator already interpolates.

    Parameters
    ----------
    field_shape:
        ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    latent_channels:
        Channels of ``z``.
    base_channels:
        Width of the network.
    fill_scales:
        Standard deviations (grid cells) of the normalised-convolution inputs.
    """

    def __init__(
        self,
        field_shape: tuple[int, int, int],
        latent_channels: int = 8,
        base_channels: int = 32,
        fill_scales: tuple[float, ...] = (1.0, 2.0, 4.0),
    ) -> None:
        super().__init__()
        c, h, w = check_field_shape(field_shape)
        self.field_shape = (c, h, w)
        self.latent_channels = as_int(latent_channels, "latent_channels", minimum=1)
        b = as_int(base_channels, "base_channels", minimum=1)
        self.scales = tuple(as_float(v, f"fill_scales[{i}]") for i, v in enumerate(fill_scales))
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"fill_scales={fill_scales!r}; expected positive numbers")
        n_in = 2 * c * (1 + len(self.scales))
        self.enc1 = _block(n_in, b)
        self.enc2 = nn.Sequential(_conv(b, 2 * b, 4, 2), nn.SiLU(), _block(2 * b, 2 * b))
        self.enc3 = nn.Sequential(_conv(2 * b, 4 * b, 4, 2), nn.SiLU(), _block(4 * b, 4 * b))
        lc = self.latent_channels
        self.mid = _block(4 * b + lc, 4 * b)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _block(4 * b + 2 * b + lc, 2 * b)
        self.dec1 = _block(2 * b + b + lc, b)
        self.out = _conv(b, c, kernel=1)
        self.base_scale = 1 if len(self.scales) > 1 else 0
        with torch.no_grad():  # start close to the fill: a small correction
            self.out.weight.mul_(0.1)
            if self.out.bias is not None:
                self.out.bias.zero_()

    def smooth_fill(self, y: Measured) -> tuple[Tensor, Tensor]:
        """Normalised-convolution fills of ``y`` at the ``fill_scales``.

        For each scale ``s`` (grid cells): ``G_s * values / (G_s * mask + eps)`` and the
        confidence ``G_s * mask``, with ``G_s`` a periodic Gaussian of standard deviation
        ``s`` (Knutsson & Westin 1993). Returns ``(fills, confidences)``, each
        ``(B, S * C, H, W)``, scales major.
        """
        v, m = y.values, y.mask.to(y.values.dtype)
        h, w = v.shape[-2:]
        fy = torch.fft.fftfreq(h, device=v.device, dtype=v.dtype)
        fx = torch.fft.rfftfreq(w, device=v.device, dtype=v.dtype)
        f2 = fy[:, None].square() + fx[None, :].square()
        spec_v, spec_m = torch.fft.rfft2(v), torch.fft.rfft2(m)
        fills, confs = [], []
        for s in self.scales:
            transfer = torch.exp(-2.0 * torch.pi**2 * s**2 * f2)
            num = torch.fft.irfft2(spec_v * transfer, s=(h, w))
            den = torch.fft.irfft2(spec_m * transfer, s=(h, w)).clamp_min(0.0)
            fills.append(num / (den + 1e-3))
            confs.append(den)
        return torch.cat(fills, dim=1), torch.cat(confs, dim=1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one latent ``z``: ``(latent_channels, H/4, W/4)``."""
        _, h, w = self.field_shape
        return (self.latent_channels, h // 4, w // 4)

    def forward(self, y: Measured, z: Tensor) -> Tensor:
        """Fields ``(B, C, H, W)`` from measurements ``y`` and latents ``z``."""
        if not isinstance(y, Measured):
            raise TypeError(f"y is a {type(y).__name__}; expected a Measured")
        _check_latent(z, self.latent_shape)
        fills, confs = self.smooth_fill(y)
        e1 = self.enc1(torch.cat([y.as_input(), fills, confs], dim=1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        z = z.to(e3)
        z2 = F.interpolate(z, scale_factor=2.0, mode="bilinear", align_corners=False)
        z1 = F.interpolate(z, scale_factor=4.0, mode="bilinear", align_corners=False)
        m = self.mid(torch.cat([e3, z], dim=1))
        d2 = self.dec2(torch.cat([self.up(m), e2, z2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1, z1], dim=1))
        c = self.field_shape[0]
        base = fills[:, c * self.base_scale : c * (self.base_scale + 1)]
        return base + self.out(d1)


class MeasurementDiscriminator(nn.Module):
    """A spectrally normalised convolutional critic of measurements.

    ``forward(*measured)`` takes one or more :class:`Measured` batches (e.g. the observed
    condition and a measurement of a generated field), stacks their values and masks as
    channels and returns one score per sample. Its signature accepts nothing but
    :class:`Measured` objects, so every input it sees has gone through a measurement
    (hidden entries are zeros and flagged in the mask channels).

    Parameters
    ----------
    n_measurements:
        How many :class:`Measured` inputs each call takes.
    channels:
        Field channels ``C`` of each measurement (the network sees ``2 C`` per input).
    base_channels:
        Width of the network.
    """

    def __init__(self, n_measurements: int, channels: int, base_channels: int = 32) -> None:
        super().__init__()
        self.n_measurements = as_int(n_measurements, "n_measurements", minimum=1)
        self.channels = as_int(channels, "channels", minimum=1)
        b = as_int(base_channels, "base_channels", minimum=1)
        c_in = 2 * self.channels * self.n_measurements
        act = nn.LeakyReLU(0.2)
        self.features = nn.Sequential(
            spectral_norm(_conv(c_in, b)),
            act,
            spectral_norm(_conv(b, 2 * b, 4, 2)),
            act,
            spectral_norm(_conv(2 * b, 2 * b)),
            act,
            spectral_norm(_conv(2 * b, 4 * b, 4, 2)),
            act,
            spectral_norm(_conv(4 * b, 4 * b)),
            act,
        )
        self.head = spectral_norm(nn.Linear(4 * b, 1))

    def forward(self, *measured: Measured) -> Tensor:
        """Scores ``(B,)`` of ``n_measurements`` :class:`Measured` inputs of equal shape."""
        if len(measured) != self.n_measurements:
            raise ValueError(
                f"received {len(measured)} inputs; expected {self.n_measurements} Measured"
            )
        for i, m in enumerate(measured):
            if not isinstance(m, Measured):
                raise TypeError(
                    f"input {i} is a {type(m).__name__}; the discriminator accepts only Measured "
                    "(measurements), never raw fields"
                )
            if m.values.shape[1] != self.channels or m.values.shape != measured[0].values.shape:
                raise ValueError(
                    f"input {i} has shape {tuple(m.values.shape)}; expected equal shapes with "
                    f"{self.channels} channels"
                )
        x = torch.cat([m.as_input() for m in measured], dim=1)
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(-1)
