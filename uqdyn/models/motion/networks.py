"""A small periodic U-Net: the encoder-decoder shared by the motion and plain forecasters."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uqdyn._checks import as_float, as_int

__all__ = ["PeriodicUNet"]


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="circular"),
        nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, padding_mode="circular"),
        nn.GELU(),
    )


class PeriodicUNet(nn.Module):
    """Convolutional encoder-decoder with skip connections on a doubly periodic grid.

    ``depth`` times: two 3x3 convolutions (circular padding, GELU) then 2x2 average
    pooling, doubling the width each level; a bottleneck block; then ``depth`` times
    nearest upsampling, concatenation with the encoder features of that level and a block;
    finally a 1x1 convolution to ``out_channels``. The output head starts with weights
    scaled by ``head_scale`` (a small value starts near a zero output while keeping every
    gradient non-zero).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    width : int
        Channels of the first level (level ``l`` has ``width * 2**l``). Default 16.
    depth : int
        Number of pooling levels (``height`` and ``width`` of the input must be multiples of
        ``2**depth``). Default 2.
    head_scale : float
        Multiplier of the initial output-head weights. Default ``0.1``.

    Attributes
    ----------
    bottleneck_channels : int
        Channels of the coarsest features, ``width * 2**depth``.

    Examples
    --------
    >>> import torch
    >>> net = PeriodicUNet(4, 2, width=8, depth=2)
    >>> out, code = net(torch.randn(3, 4, 16, 12))
    >>> tuple(out.shape), tuple(code.shape)
    ((3, 2, 16, 12), (3, 32, 4, 3))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int = 16,
        depth: int = 2,
        head_scale: float = 0.1,
    ) -> None:
        super().__init__()
        in_channels = as_int(in_channels, "in_channels", minimum=1)
        out_channels = as_int(out_channels, "out_channels", minimum=1)
        width = as_int(width, "width", minimum=1)
        depth = as_int(depth, "depth", minimum=0)
        self.depth = depth
        widths = [width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for channels in widths[:-1]:
            self.encoder.append(_block(previous, channels))
            previous = channels
        self.bottleneck = _block(previous, widths[-1])
        self.decoder = nn.ModuleList(
            _block(widths[level + 1] + widths[level], widths[level])
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.head.weight.data.mul_(as_float(head_scale, "head_scale"))
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)
        self.bottleneck_channels = widths[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x`` to the output and the bottleneck features.

        Parameters
        ----------
        x : Tensor, shape (batch, in_channels, height, width)

        Returns
        -------
        output : Tensor, shape (batch, out_channels, height, width)
        code : Tensor, shape (batch, bottleneck_channels, height / 2**depth, width / 2**depth)
        """
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        code = self.bottleneck(x)
        x = code
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x), code
