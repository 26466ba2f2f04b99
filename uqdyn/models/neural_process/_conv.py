"""Building blocks of the convolutional neural processes: set convolutions and CNNs.

* :class:`_GridSetConv`: the on-the-grid set convolution of Gordon et al. (2020): a Gaussian
  smoothing of the observed values and of the observation mask with a learnable length scale
  per channel, giving a *density* channel and a density-normalised *data* channel;
* :func:`_gaussian_weights`: the off-the-grid set convolution weights between point sets;
* :class:`_ConvStack`: a translation-equivariant CNN on 1-D or 2-D grids, plain, residual or
  U-Net, with circular or zero padding.

Every block is translation equivariant: shifting its input along a grid axis shifts its output
(exactly for circular padding; away from the edges for zero padding; for the U-Net, shifts by a
multiple of ``2**levels`` grid points).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int

__all__: list[str] = []

#: added to the density before dividing by it (the density of an observed point is O(1))
_DENSITY_EPS = 1e-5

ARCHITECTURES = ("cnn", "resnet", "unet")
PADDINGS = ("circular", "zeros")


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Within the block, torch's global CPU RNG is seeded with ``seed`` (when not ``None``).

    The caller's RNG state is restored afterwards (:func:`torch.random.fork_rng`), so building
    a seeded model never changes the random numbers drawn after it.
    """
    if seed is None:
        yield
        return
    seed = as_int(seed, "seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {list(choices)}")
    return value


def _check_positive_float(value: Any, name: str) -> float:
    return as_float(value, name, positive=True)


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class _GridSetConv(nn.Module):
    r"""Set convolution onto the grid the data live on (Gordon et al., 2020, on-the-grid case).

    For each input channel ``c`` with observed values ``y_c`` and mask ``m_c`` (1 observed,
    0 not; unobserved values are zero), with ``G_c`` a normalised Gaussian kernel of length
    scale ``l_c`` (grid points, learnable):

    .. math:: d_c = G_c * m_c, \qquad h_c = \frac{G_c * (m_c y_c)}{d_c + \epsilon},

    and the output stacks the density channels ``d`` and the data channels ``h``:
    ``forward(y (B, C, *grid), mask (B, C, *grid)) -> (B, 2C, *grid)``. The kernel is
    truncated at ``ceil(3 l_c)`` points and, on a circular grid, periodised.
    """

    def __init__(self, channels: int, dim: int, init_lengthscale: float, padding: str) -> None:
        super().__init__()
        self.channels = channels
        self.dim = dim
        self.padding = padding
        raw = _inverse_softplus(init_lengthscale)
        self.raw_lengthscale = nn.Parameter(torch.full((channels,), raw))

    @property
    def lengthscale(self) -> Tensor:
        """Length scales ``(C,)`` in grid points."""
        return F.softplus(self.raw_lengthscale) + 1e-3

    def _smooth(self, x: Tensor, lengthscale: Tensor) -> Tensor:
        """Separable Gaussian smoothing of ``x (B, C, *grid)`` along every grid axis."""
        radius = max(1, math.ceil(3.0 * float(lengthscale.detach().max())))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / lengthscale[:, None]).square())
        kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (C, 2r+1)
        weight = kernel[:, None, :]
        for axis in range(2, 2 + self.dim):
            others = [a for a in range(2, 2 + self.dim) if a != axis]
            perm = [0, *others, 1, axis]  # (B, *other axes, C, this axis)
            moved = x.permute(perm)
            flat = moved.reshape(-1, self.channels, x.shape[axis])
            if self.padding == "circular":  # a kernel longer than the axis wraps around it
                out = F.conv1d(_circular_pad(flat, radius), weight, groups=self.channels)
            else:
                out = F.conv1d(flat, weight, padding=radius, groups=self.channels)
            inverse = [perm.index(a) for a in range(x.dim())]
            x = out.reshape(moved.shape).permute(inverse)
        return x

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(y.dtype)
        ls = self.lengthscale.to(y.dtype)
        density = self._smooth(m, ls)
        signal = self._smooth(m * y, ls)
        return torch.cat([density, signal / (density + _DENSITY_EPS)], dim=1)


def _circular_pad(x: Tensor, r: int) -> Tensor:
    """Pad the last axis of ``x (N, C, L)`` periodically by ``r`` on each side (any ``r``)."""
    size = x.shape[-1]
    idx = torch.arange(-r, size + r, device=x.device) % size
    return x.index_select(-1, idx)


def _gaussian_weights(x_from: Tensor, x_to: Tensor, lengthscale: Tensor) -> Tensor:
    """Off-the-grid set-convolution weights ``exp(-(x_to - x_from)^2 / (2 l^2))``.

    ``x_from (B, N, 1)``, ``x_to (B, M, 1)`` (or ``(M, 1)``), ``lengthscale`` a scalar;
    returns ``(B, M, N)``.
    """
    d = x_to[..., :, None, 0] - x_from[..., None, :, 0]
    return torch.exp(-0.5 * (d / lengthscale).square())


def _conv(dim: int, cin: int, cout: int, kernel: int, padding: str, stride: int = 1) -> nn.Module:
    mode: Literal["zeros", "circular"] = "circular" if padding == "circular" else "zeros"
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode=mode)


class _ConvStack(nn.Module):
    """Translation-equivariant CNN ``(B, in_channels, *grid) -> (B, width, *grid)``.

    * ``"cnn"``: ``depth`` convolutions of size ``kernel`` with ReLU between them;
    * ``"resnet"``: a first convolution, then ``depth - 1`` residual layers
      ``h <- h + conv(relu(h))``, and a final ReLU (same receptive field as ``"cnn"``);
    * ``"unet"``: ``depth`` levels, each a stride-2 convolution down and, on the way up,
      nearest-neighbour upsampling and a convolution of the skip-concatenated features (every
      grid axis must be divisible by ``2**depth``).

    The receptive field of ``"cnn"``/``"resnet"`` is ``depth * (kernel - 1) + 1`` grid points.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        width: int,
        depth: int,
        kernel: int,
        architecture: str,
        padding: str,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.architecture = architecture
        self.depth = depth
        self.kernel = kernel
        if architecture == "unet":
            self.first = _conv(dim, in_channels, width, kernel, padding)
            self.down = nn.ModuleList(
                _conv(dim, width, width, kernel, padding, stride=2) for _ in range(depth)
            )
            self.up = nn.ModuleList(
                _conv(dim, 2 * width, width, kernel, padding) for _ in range(depth)
            )
        else:
            self.first = _conv(dim, in_channels, width, kernel, padding)
            self.layers = nn.ModuleList(
                _conv(dim, width, width, kernel, padding) for _ in range(depth - 1)
            )

    @property
    def multiple(self) -> int:
        """Every grid axis must be a multiple of this many points."""
        return 2**self.depth if self.architecture == "unet" else 1

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(x)
        if self.architecture == "unet":
            h = F.relu(h)
            skips = []
            for down in self.down:
                skips.append(h)
                h = F.relu(down(h))
            for up, skip in zip(reversed(self.up), reversed(skips), strict=True):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = F.relu(up(torch.cat([h, skip], dim=1)))
            return h
        for layer in self.layers:
            if self.architecture == "resnet":
                h = h + layer(F.relu(h))
            else:
                h = layer(F.relu(h))
        return F.relu(h)


def _kernel_for_receptive_field(points: float, depth: int) -> int:
    """Odd kernel size whose ``depth``-layer stack sees at least ``points`` grid points."""
    kernel = math.ceil(1 + (points - 1) / depth)
    return kernel + 1 if kernel % 2 == 0 else kernel
