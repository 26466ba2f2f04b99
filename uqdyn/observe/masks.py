"""Masking operators: random pixels, cloud-like correlated masks and rectangular blocks.

A mask hides locations: a grid point ``(y, x)`` of every channel of a gridded state, one
component of a vector state, or one station of a station observation. Hidden entries are
set to 0 in ``values`` and ``False`` in ``mask``; observed entries pass through unchanged,
so the operators are linear and differentiable with respect to the state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from uqdyn._checks import as_int, describe_type, is_integer_scalar
from uqdyn.observe.base import (
    ObservationOperator,
    Observed,
    _check_range,
    _pick,
    _rand,
    _randn,
    _uniform_per_sample,
)

__all__ = ["RandomPixelMask", "CloudMask", "BlockMask"]


def _location_shape(values: Tensor) -> tuple[int, ...]:
    """Shape of the location mask: ``values`` without its channel axis (if it has one)."""
    if values.dim() >= 3:  # (B, C, H, W) or (B, C, S)
        return (values.shape[0], *values.shape[2:])
    return tuple(values.shape)  # (B, D) or (B, S)


def _apply_mask(obs: Observed, keep: Tensor) -> Observed:
    """Hide the entries where ``keep`` is False; ``keep`` has the location or values shape."""
    if keep.dim() < obs.values.dim():
        keep = keep.unsqueeze(1)  # broadcast over channels
    keep = keep.expand(obs.values.shape)

    def stage(values: Tensor, index: int | None) -> Tensor:
        k = _pick(keep, index)
        return torch.where(k, values, torch.zeros((), dtype=values.dtype, device=values.device))

    values = stage(obs.values, None)
    mask = obs.mask & keep
    return obs.then(values, mask, obs.noise_std, stage)


def _require_grid(obs: Observed, name: str) -> tuple[int, int]:
    if obs.layout != "grid":
        raise ValueError(
            f"{name} needs gridded values (batch, channels, height, width); received "
            f"{obs.layout} values of shape {tuple(obs.values.shape)}"
        )
    return int(obs.values.shape[-2]), int(obs.values.shape[-1])


class RandomPixelMask(ObservationOperator):
    """Hide each location independently with probability ``drop``.

    For sample ``b`` a drop probability ``p_b ~ Uniform(lo, hi)`` is drawn (``p_b = drop``
    when ``drop`` is a number); then each location is observed independently with
    probability ``1 - p_b``, so the number of observed locations is
    ``Binomial(n_locations, 1 - p_b)``. A location is a grid point shared by all channels
    (or each entry separately with ``per_channel=True``), a vector component, or a station.

    Parameters
    ----------
    drop:
        Drop probability in ``[0, 1]``, or a ``(lo, hi)`` range sampled per sample.
    per_channel:
        Draw a separate mask for every channel.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import RandomPixelMask
    >>> obs = RandomPixelMask(drop=0.9)(torch.randn(8, 2, 32, 32))
    >>> obs.mask.shape  # about 10% True
    torch.Size([8, 2, 32, 32])
    """

    def __init__(self, drop: float | Sequence[float] = 0.9, *, per_channel: bool = False) -> None:
        super().__init__()
        self.drop = _check_range(drop, "drop", low=0.0, high=1.0)
        self.per_channel = bool(per_channel)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        values = obs.values
        shape = tuple(values.shape) if self.per_channel else _location_shape(values)
        p_drop = _uniform_per_sample(self.drop, shape[0], generator, values.device)
        u = _rand(shape, generator, values.device, torch.float64)
        keep = u >= p_drop.view(-1, *([1] * (len(shape) - 1)))
        return _apply_mask(obs, keep)

    def extra_repr(self) -> str:
        return f"drop={self.drop}, per_channel={self.per_channel}"


def _gaussian_random_field(
    batch: int,
    height: int,
    width: int,
    length_scale: Tensor,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Stationary periodic Gaussian random fields ``(batch, height, width)``.

    White noise filtered in Fourier space by the transfer function
    ``exp(-2 pi^2 l^2 |f|^2)`` of a Gaussian kernel with standard deviation ``l`` grid cells
    (``f`` in cycles per cell), i.e. a squared-exponential covariance of length ``l sqrt(2)``.
    """
    noise = _randn((batch, height, width), generator, device, torch.float64)
    fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(width, device=device, dtype=torch.float64)
    f2 = fy[:, None].square() + fx[None, :].square()
    transfer = torch.exp(-2.0 * torch.pi**2 * length_scale.view(-1, 1, 1).square() * f2)
    return torch.fft.irfft2(torch.fft.rfft2(noise) * transfer, s=(height, width))


class CloudMask(ObservationOperator):
    """Spatially correlated, cloud-like masks on gridded states.

    For sample ``b``: draw a cloud cover ``c_b ~ Uniform(lo, hi)`` and a length scale
    ``l_b ~ Uniform(l_lo, l_hi)`` (grid cells); draw a periodic Gaussian random field ``g_b``
    by filtering white noise with a Gaussian kernel of standard deviation ``l_b``; hide the
    ``round(c_b * H * W)`` grid points with the largest ``g_b`` (an excursion set of the
    field, so hidden points form smooth blobs). All channels share the mask.

    Parameters
    ----------
    cover:
        Hidden fraction in ``[0, 1]``, or a ``(lo, hi)`` range sampled per sample.
    length_scale:
        Correlation length in grid cells (``> 0``), or a ``(lo, hi)`` range sampled per sample.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import CloudMask
    >>> obs = CloudMask(cover=(0.3, 0.6), length_scale=4.0)(torch.randn(2, 1, 64, 64))
    >>> bool(((obs.mask.float().mean(dim=(1, 2, 3)) - 0.55).abs() <= 0.15).all())
    True
    """

    def __init__(
        self,
        cover: float | Sequence[float] = (0.2, 0.8),
        length_scale: float | Sequence[float] = 4.0,
    ) -> None:
        super().__init__()
        self.cover = _check_range(cover, "cover", low=0.0, high=1.0)
        self.length_scale = _check_range(
            length_scale, "length_scale", low=0.0, high=float("inf"), low_open=True
        )

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        height, width = _require_grid(obs, "CloudMask")
        batch, device = obs.values.shape[0], obs.values.device
        cover = _uniform_per_sample(self.cover, batch, generator, device)
        scale = _uniform_per_sample(self.length_scale, batch, generator, device)
        field = _gaussian_random_field(batch, height, width, scale, generator, device)
        n_hidden = torch.round(cover * height * width).long()
        order = field.flatten(1).argsort(dim=1, descending=True)
        rank = torch.empty_like(order)
        positions = torch.arange(height * width, device=device).expand(batch, -1)
        rank.scatter_(1, order, positions)
        keep = (rank >= n_hidden[:, None]).view(batch, height, width)
        return _apply_mask(obs, keep)

    def extra_repr(self) -> str:
        return f"cover={self.cover}, length_scale={self.length_scale}"


class BlockMask(ObservationOperator):
    """Hide random rectangles (patches) of gridded states.

    For sample ``b``: draw a number of blocks ``K_b`` uniformly from the integers in
    ``[k_lo, k_hi]``; for each block draw a height ``round(U(h_lo, h_hi) * H)`` and a width
    ``round(U(w_lo, w_hi) * W)`` (fractions of the grid), and a corner uniformly on the grid;
    blocks wrap around the periodic boundaries and may overlap. With ``K`` blocks of a fixed
    size ``h x w`` a grid point stays observed with probability ``(1 - h w / (H W))^K``.

    Parameters
    ----------
    n_blocks:
        Number of blocks (``>= 0``), or an integer ``(lo, hi)`` range.
    height:
        Block height as a fraction of the grid height in ``[0, 1]``, or a ``(lo, hi)`` range.
    width:
        Block width as a fraction of the grid width; ``None`` uses ``height``'s setting (a
        separate draw).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import BlockMask
    >>> obs = BlockMask(n_blocks=(1, 3), height=(0.1, 0.3))(torch.randn(4, 1, 32, 32))
    >>> obs.mask.shape
    torch.Size([4, 1, 32, 32])
    """

    def __init__(
        self,
        n_blocks: int | Sequence[int] = (1, 4),
        height: float | Sequence[float] = (0.1, 0.3),
        width: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if is_integer_scalar(n_blocks):
            lo = hi = as_int(n_blocks, "n_blocks", minimum=0)
        elif (
            isinstance(n_blocks, Sequence) and not isinstance(n_blocks, str) and len(n_blocks) == 2
        ):
            lo, hi = (as_int(n_blocks[i], f"n_blocks[{i}]", minimum=0) for i in range(2))
        else:
            raise TypeError(
                f"n_blocks={n_blocks!r} is a {describe_type(n_blocks)}; expected an int or a "
                "(low, high) pair of ints"
            )
        if lo > hi:
            raise ValueError(f"n_blocks={n_blocks!r}; expected low <= high")
        self.n_blocks = (lo, hi)
        self.height = _check_range(height, "height", low=0.0, high=1.0)
        self.width = (
            self.height if width is None else _check_range(width, "width", low=0.0, high=1.0)
        )

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        height, width = _require_grid(obs, "BlockMask")
        batch, device = obs.values.shape[0], obs.values.device
        k_lo, k_hi = self.n_blocks
        if k_hi == 0:
            return _apply_mask(
                obs, torch.ones((batch, height, width), dtype=torch.bool, device=device)
            )
        u = _rand((batch,), generator, device, torch.float64)
        n = k_lo + torch.floor(u * (k_hi - k_lo + 1)).long().clamp(max=k_hi - k_lo)
        shape = (batch, k_hi)
        h_frac = self.height[0] + (self.height[1] - self.height[0]) * _rand(
            shape, generator, device, torch.float64
        )
        w_frac = self.width[0] + (self.width[1] - self.width[0]) * _rand(
            shape, generator, device, torch.float64
        )
        h = torch.round(h_frac * height).long()
        w = torch.round(w_frac * width).long()
        y0 = torch.floor(_rand(shape, generator, device, torch.float64) * height).long()
        x0 = torch.floor(_rand(shape, generator, device, torch.float64) * width).long()
        iy = torch.arange(height, device=device)
        ix = torch.arange(width, device=device)
        rows = torch.remainder(iy - y0[..., None], height) < h[..., None]  # (B, K, H)
        cols = torch.remainder(ix - x0[..., None], width) < w[..., None]  # (B, K, W)
        active = torch.arange(k_hi, device=device) < n[:, None]  # (B, K)
        blocks = rows[..., :, None] & cols[..., None, :] & active[..., None, None]
        keep = ~blocks.any(dim=1)
        return _apply_mask(obs, keep)

    def extra_repr(self) -> str:
        return f"n_blocks={self.n_blocks}, height={self.height}, width={self.width}"
