"""The spectral convolution of a Fourier neural operator, in any floating dtype."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_int

__all__ = ["SpectralConv2d", "kept_modes"]


def _modes_pair(modes: Any) -> tuple[int, int]:
    if isinstance(modes, (tuple, list)):
        if len(modes) != 2:
            raise ValueError(f"modes must be an int or a pair (modes_y, modes_x), got {modes!r}")
        return as_int(modes[0], "modes[0]", minimum=1), as_int(modes[1], "modes[1]", minimum=1)
    m = as_int(modes, "modes", minimum=1)
    return m, m


def kept_modes(modes: int | tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The largest wavenumbers ``(k_y, k_x)`` a layer with ``modes`` keeps on a grid ``size``.

    A layer keeps the integer wavenumbers ``|k_y| <= modes_y - 1`` and ``|k_x| <= modes_x - 1``
    (waves per domain), but never the Nyquist wavenumber or above: on a grid of ``n`` points
    at most ``(n - 1) // 2``. On fine enough grids the kept set, hence the operator, is the
    same at every resolution.

    Examples
    --------
    >>> kept_modes(12, (64, 64)), kept_modes(12, (16, 9))
    ((11, 11), (7, 4))
    """
    my, mx = _modes_pair(modes)
    height, width = size
    return min(my - 1, (height - 1) // 2), min(mx - 1, (width - 1) // 2)


class SpectralConv2d(nn.Module):
    r"""Fourier-space channel mixing over the lowest modes of a periodic 2-D field.

    For ``x`` of shape ``(batch, in_channels, H, W)`` on a periodic grid,

    .. math::

        y = \mathcal F^{-1}\big[\, R(k)\, \hat x(k) \ \text{for}\ |k_y| < m_y,\ |k_x| < m_x;
            \ 0\ \text{otherwise} \,\big]

    with :math:`\hat x = \mathcal F x` the 2-D DFT and :math:`R(k)` a learned complex
    ``(out_channels, in_channels)`` matrix per kept wavenumber :math:`k` (waves per domain,
    Li et al. 2021). The wavenumbers are physical ones, so the same weights define the same
    operator at every resolution that resolves them (see :func:`kept_modes`): the layer is
    resolution-free. Only the half-plane ``k_x >= 0`` carries weights (the output is real);
    on the ``k_x = 0`` column the layer acts through the real part of the inverse transform.

    The complex weights are stored as one real parameter ``weight`` of shape
    ``(2, in_channels, out_channels, 2 * modes_y - 1, modes_x)`` (real and imaginary parts;
    rows in FFT order ``k_y = 0, 1, ..., m_y - 1, -(m_y - 1), ..., -1``), so ``.to(dtype)``
    converts the layer like any other and it computes in the dtype of its input.

    Parameters
    ----------
    in_channels, out_channels : int
    modes : int or (modes_y, modes_x)
        Number of wavenumbers kept per axis, counting ``k = 0`` (``|k| <= modes - 1``).

    Examples
    --------
    >>> import torch
    >>> layer = SpectralConv2d(2, 3, modes=4)
    >>> layer(torch.randn(5, 2, 16, 16)).shape, layer(torch.randn(5, 2, 32, 24)).shape
    (torch.Size([5, 3, 16, 16]), torch.Size([5, 3, 32, 24]))
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | tuple[int, int]) -> None:
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.modes = _modes_pair(modes)
        my, mx = self.modes
        std = (2.0 * self.in_channels) ** -0.5  # keeps the variance of each mode
        self.weight = nn.Parameter(
            std * torch.randn(2, self.in_channels, self.out_channels, 2 * my - 1, mx)
        )

    @property
    def complex_weight(self) -> Tensor:
        """``R(k)``, complex, shape ``(in_channels, out_channels, 2 * modes_y - 1, modes_x)``."""
        return torch.complex(self.weight[0], self.weight[1])

    def forward(self, x: Tensor) -> Tensor:
        """``y`` of shape ``(batch, out_channels, H, W)`` for ``x`` of ``(batch, in_channels, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, height, width), got "
                f"{tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        ky, kx = kept_modes(self.modes, (height, width))
        rows = 2 * self.modes[0] - 1
        spectrum = torch.fft.rfft2(x, norm="forward")
        weight = self.complex_weight
        out = spectrum.new_zeros(x.shape[0], self.out_channels, height, width // 2 + 1)
        out[:, :, : ky + 1, : kx + 1] = torch.einsum(
            "bixy,ioxy->boxy", spectrum[:, :, : ky + 1, : kx + 1], weight[:, :, : ky + 1, : kx + 1]
        )
        if ky > 0:
            out[:, :, height - ky :, : kx + 1] = torch.einsum(
                "bixy,ioxy->boxy",
                spectrum[:, :, height - ky :, : kx + 1],
                weight[:, :, rows - ky :, : kx + 1],
            )
        return torch.fft.irfft2(out, s=(height, width), norm="forward")

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"
