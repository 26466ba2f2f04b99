"""Conditional neural process (Garnelo et al., 2018a)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import _ConditionalNP, _positive_int
from ._modules import _MLP, _masked_mean

__all__ = ["CNP"]


class CNP(_ConditionalNP):
    r"""Conditional neural process: mean-aggregated encoder, Gaussian decoder.

    Each context point is encoded ``r_i = h([x_i, y_i])``; the representation is the mean
    over the real context points ``r = (1/|C|) sum_i r_i`` (permutation invariant); each
    target is decoded ``[mu, rho] = g([x_t, r])`` with standard deviation
    ``sigma = min_std + (1 - min_std) softplus(rho)``:

    .. math:: p(y_t \mid x_t, C) = \mathcal N(y_t; \mu(x_t, r), \sigma(x_t, r)^2).

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    width : int
        Width of the hidden layers and of the representation ``r``. Default 128.
    encoder_depth, decoder_depth : int
        Number of linear layers of ``h`` and ``g``. Default 3 each.
    min_std : float
        Lower bound of the predictive standard deviation (in units of ``y``). Default 0.01.
    min_context : int
        Smallest number of real context points a task may have. Default 1; with 0, an
        empty context aggregates to ``r = 0``.

    References
    ----------
    M. Garnelo, D. Rosenbaum, C. Maddison, T. Ramalho, D. Saxton, M. Shanahan, Y. W. Teh,
    D. J. Rezende, S. M. A. Eslami, "Conditional Neural Processes", ICML 2018.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import CNP
    >>> model = CNP(x_dim=1, y_dim=2, width=32)
    >>> xc, yc, xt = torch.randn(4, 10, 1), torch.randn(4, 10, 2), torch.randn(4, 7, 1)
    >>> model(xc, yc, xt).batch_shape
    torch.Size([4, 7, 2])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        width: int = 128,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        min_std: float = 0.01,
        min_context: int = 1,
    ) -> None:
        super().__init__(x_dim, y_dim, min_std, min_context)
        width = _positive_int(width, "width")
        self.encoder = _MLP(
            self.x_dim + self.y_dim, width, width, _positive_int(encoder_depth, "encoder_depth")
        )
        self._build_decoder(self.x_dim + width, width, decoder_depth)

    def _predict_params(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor
    ) -> tuple[Tensor, Tensor]:
        r = _masked_mean(self.encoder(torch.cat([xc, yc], dim=-1)), mc)  # (B, width)
        r = r.unsqueeze(1).expand(-1, xt.shape[1], -1)
        return self._gaussian_head(torch.cat([xt, r], dim=-1))
