"""Attentive conditional and latent neural processes (Kim et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import _ConditionalNP, _LatentNP, _positive_int
from ._modules import _MLP, _AttentionBlock
from .latent import _LatentEncoder

__all__ = ["AttentiveCNP", "AttentiveNP"]


class _AttentivePath(nn.Module):
    """Deterministic path of Kim et al.: point encoder, optional self-attention over the
    context, multi-head cross-attention from the targets to the context.

    Maps context ``(B, Nc, x_dim)``, ``(B, Nc, y_dim)``, mask ``(B, Nc)`` and targets
    ``(B, Nt, x_dim)`` to target-specific representations ``(B, Nt, width)``.
    """

    def __init__(
        self, x_dim: int, y_dim: int, width: int, depth: int, heads: int, self_attention: int
    ) -> None:
        super().__init__()
        self.points = _MLP(x_dim + y_dim, width, width, depth)
        self.self_attention = nn.ModuleList(
            _AttentionBlock(width, width, width, width, heads) for _ in range(self_attention)
        )
        self.embed_x = _MLP(x_dim, width, width, 2)  # shared query/key embedding of inputs
        self.cross_attention = _AttentionBlock(width, width, width, width, heads)

    def forward(self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor) -> Tensor:
        values = self.points(torch.cat([xc, yc], dim=-1))
        for block in self.self_attention:
            values = block(values, values, values, mc)
        return self.cross_attention(self.embed_x(xt), self.embed_x(xc), values, mc)


def _check_heads(width: int, num_heads: int) -> tuple[int, int]:
    width = _positive_int(width, "width")
    num_heads = _positive_int(num_heads, "num_heads")
    if width % num_heads:
        raise ValueError(f"width={width} is not divisible by num_heads={num_heads}")
    return width, num_heads


class AttentiveCNP(_ConditionalNP):
    r"""Attentive conditional neural process: each target attends to the context.

    Context points are encoded ``v_i = h([x_i, y_i])``, optionally refined by
    ``self_attention`` layers of masked multi-head self-attention; each target gets its own
    representation by multi-head cross-attention with queries ``e(x_t)``, keys ``e(x_i)`` and
    values ``v_i`` (padded context points get zero attention weight), followed by residual
    connections, layer norms and a position-wise MLP. The decoder maps ``[x_t, r_t]`` to a
    Gaussian with standard deviation ``min_std + (1 - min_std) softplus(.)``.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    width : int
        Hidden width (divisible by ``num_heads``). Default 128.
    num_heads : int
        Attention heads. Default 8.
    self_attention : int
        Number of self-attention layers over the context (0 disables). Default 2.
    encoder_depth, decoder_depth : int
        Linear layers of the point encoder and decoder. Default 3 each.
    min_std : float
        Lower bound of the predictive standard deviation. Default 0.01.
    min_context : int
        Smallest number of real context points per task (0 allowed: the attention output of
        an empty context is the zero vector). Default 1.

    References
    ----------
    H. Kim, A. Mnih, J. Schwarz, M. Garnelo, A. Eslami, D. Rosenbaum, O. Vinyals, Y. W. Teh,
    "Attentive Neural Processes", ICLR 2019.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import AttentiveCNP
    >>> model = AttentiveCNP(x_dim=2, y_dim=1, width=32, num_heads=4)
    >>> xc, yc, xt = torch.randn(3, 8, 2), torch.randn(3, 8, 1), torch.randn(3, 5, 2)
    >>> model(xc, yc, xt).batch_shape
    torch.Size([3, 5, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        width: int = 128,
        num_heads: int = 8,
        self_attention: int = 2,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        min_std: float = 0.01,
        min_context: int = 1,
    ) -> None:
        super().__init__(x_dim, y_dim, min_std, min_context)
        width, num_heads = _check_heads(width, num_heads)
        self.path = _AttentivePath(
            self.x_dim,
            self.y_dim,
            width,
            _positive_int(encoder_depth, "encoder_depth"),
            num_heads,
            _positive_int(self_attention, "self_attention", minimum=0),
        )
        self._build_decoder(self.x_dim + width, width, decoder_depth)

    def _predict_params(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor
    ) -> tuple[Tensor, Tensor]:
        r = self.path(xc, yc, mc, xt)
        return self._gaussian_head(torch.cat([xt, r], dim=-1))


class AttentiveNP(_LatentNP):
    r"""Attentive neural process: the attentive deterministic path plus a global latent ``z``.

    The deterministic path is that of :class:`AttentiveCNP`; the latent path is that of
    :class:`LatentNP` (mean-aggregated, ``q(z | C) = N(mu, sigma^2)``). Targets are decoded
    from ``[x_t, r_t, z]``; the predictive is the equal-weight mixture over ``K`` latent
    draws and :meth:`loss` is the negative ELBO per target with ``q(z | C)`` as prior.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    width : int
        Hidden width (divisible by ``num_heads``). Default 128.
    z_dim : int
        Size of the latent. Default 128.
    num_heads, self_attention, encoder_depth, decoder_depth, min_std, min_context
        As in :class:`AttentiveCNP`.
    num_samples : int
        Latent draws ``K`` of the predictive mixture. Default 16.
    num_train_samples : int
        Latent draws of the Monte Carlo ELBO. Default 1.
    kl_warmup : int
        Number of training steps over which the weight of the KL term of :meth:`loss` rises
        linearly to 1 (0: no warm-up, the plain ELBO). Default 0.

    References
    ----------
    H. Kim, A. Mnih, J. Schwarz, M. Garnelo, A. Eslami, D. Rosenbaum, O. Vinyals, Y. W. Teh,
    "Attentive Neural Processes", ICLR 2019.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import AttentiveNP
    >>> model = AttentiveNP(x_dim=1, y_dim=1, width=32, z_dim=8, num_heads=4, num_samples=3)
    >>> xc, yc, xt = torch.randn(2, 6, 1), torch.randn(2, 6, 1), torch.randn(2, 9, 1)
    >>> model(xc, yc, xt).loc.shape
    torch.Size([3, 2, 9, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        width: int = 128,
        z_dim: int = 128,
        num_heads: int = 8,
        self_attention: int = 2,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        num_samples: int = 16,
        num_train_samples: int = 1,
        kl_warmup: int = 0,
        min_std: float = 0.01,
        min_context: int = 1,
    ) -> None:
        super().__init__(
            x_dim, y_dim, min_std, min_context, num_samples, num_train_samples, kl_warmup
        )
        width, num_heads = _check_heads(width, num_heads)
        z_dim = _positive_int(z_dim, "z_dim")
        encoder_depth = _positive_int(encoder_depth, "encoder_depth")
        self.path = _AttentivePath(
            self.x_dim,
            self.y_dim,
            width,
            encoder_depth,
            num_heads,
            _positive_int(self_attention, "self_attention", minimum=0),
        )
        self.latent_encoder = _LatentEncoder(self.x_dim + self.y_dim, width, z_dim, encoder_depth)
        self._build_decoder(self.x_dim + width + z_dim, width, decoder_depth)

    def _latent(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.latent_encoder(x, y, mask)

    def _decode(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor, z: Tensor
    ) -> tuple[Tensor, Tensor]:
        k, n_target = z.shape[0], xt.shape[1]
        r = self.path(xc, yc, mc, xt)  # (B, Nt, width)
        features = torch.cat(
            [
                xt.unsqueeze(0).expand(k, -1, -1, -1),
                r.unsqueeze(0).expand(k, -1, -1, -1),
                z.unsqueeze(2).expand(-1, -1, n_target, -1),
            ],
            dim=-1,
        )
        return self._gaussian_head(features)
