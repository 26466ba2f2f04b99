"""Latent neural process (Garnelo et al., 2018b) and the shared latent encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import _LatentNP, _positive_int
from ._modules import _MLP, _bounded_scale, _masked_mean

__all__ = ["LatentNP"]


class _LatentEncoder(nn.Module):
    """``q(z | points) = N(mu, sigma^2)`` from the mean of ``h([x_i, y_i])``.

    ``sigma = 0.01 + 0.99 softplus(.)``. Maps ``(B, N, x_dim)``, ``(B, N, y_dim)``, mask
    ``(B, N)`` to ``mu, sigma`` of shape ``(B, z_dim)``.
    """

    def __init__(self, in_dim: int, width: int, z_dim: int, depth: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.points = _MLP(in_dim, width, width, depth)
        self.head = _MLP(width, 2 * z_dim, width, 2)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        s = _masked_mean(self.points(torch.cat([x, y], dim=-1)), mask)
        mu, raw = self.head(s).split(self.z_dim, dim=-1)
        return mu, _bounded_scale(raw, 0.01)


class LatentNP(_LatentNP):
    r"""Neural process with a global Gaussian latent variable (and a deterministic path).

    A latent encoder gives ``q(z | C) = N(mu(C), sigma(C)^2)`` from the mean of
    ``h_z([x_i, y_i])`` over the real context points; with ``deterministic=True`` a second,
    deterministic path adds ``r = mean_i h_r([x_i, y_i])`` as in a :class:`CNP`. Each
    target is decoded from ``[x_t, r, z]`` to a Gaussian with standard deviation bounded
    below by ``min_std``. The predictive is the equal-weight mixture over ``K`` draws
    ``z_k ~ q(z | C)``; training maximises the ELBO of :meth:`loss`, in which
    ``q(z | C)`` serves as the prior and ``q(z | C u T)`` as the posterior.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    width : int
        Hidden width and size of ``r``. Default 128.
    z_dim : int
        Size of the latent ``z``. Default 128.
    encoder_depth, decoder_depth : int
        Linear layers of the point encoders and of the decoder. Default 3 each.
    deterministic : bool
        Add the deterministic path. Default ``True``.
    num_samples : int
        Latent draws ``K`` of the predictive mixture. Default 16.
    num_train_samples : int
        Latent draws of the Monte Carlo ELBO. Default 1.
    kl_warmup : int
        Number of training steps over which the weight of the KL term of :meth:`loss` rises
        linearly to 1 (0: no warm-up, the plain ELBO). Default 0.
    min_std : float
        Lower bound of each component's standard deviation. Default 0.01.
    min_context : int
        Smallest number of real context points per task (0 allowed: the empty set
        aggregates to the zero vector). Default 1.

    References
    ----------
    M. Garnelo, J. Schwarz, D. Rosenbaum, F. Viola, D. J. Rezende, S. M. A. Eslami,
    Y. W. Teh, "Neural Processes", ICML 2018 workshop on Theoretical Foundations and
    Applications of Deep Generative Models.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import LatentNP
    >>> model = LatentNP(x_dim=1, y_dim=1, width=32, z_dim=8, num_samples=5)
    >>> xc, yc, xt = torch.randn(2, 6, 1), torch.randn(2, 6, 1), torch.randn(2, 9, 1)
    >>> model(xc, yc, xt).loc.shape  # components first
    torch.Size([5, 2, 9, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        width: int = 128,
        z_dim: int = 128,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        deterministic: bool = True,
        num_samples: int = 16,
        num_train_samples: int = 1,
        kl_warmup: int = 0,
        min_std: float = 0.01,
        min_context: int = 1,
    ) -> None:
        super().__init__(
            x_dim, y_dim, min_std, min_context, num_samples, num_train_samples, kl_warmup
        )
        width = _positive_int(width, "width")
        z_dim = _positive_int(z_dim, "z_dim")
        encoder_depth = _positive_int(encoder_depth, "encoder_depth")
        self.latent_encoder = _LatentEncoder(self.x_dim + self.y_dim, width, z_dim, encoder_depth)
        self.deterministic_encoder = (
            _MLP(self.x_dim + self.y_dim, width, width, encoder_depth) if deterministic else None
        )
        r_dim = width if deterministic else 0
        self._build_decoder(self.x_dim + r_dim + z_dim, width, decoder_depth)

    def _latent(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.latent_encoder(x, y, mask)

    def _decode(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor, z: Tensor
    ) -> tuple[Tensor, Tensor]:
        k, n_target = z.shape[0], xt.shape[1]
        parts = [xt.unsqueeze(0).expand(k, -1, -1, -1)]
        if self.deterministic_encoder is not None:
            r = _masked_mean(self.deterministic_encoder(torch.cat([xc, yc], dim=-1)), mc)
            parts.append(r[None, :, None, :].expand(k, -1, n_target, -1))
        parts.append(z.unsqueeze(2).expand(-1, -1, n_target, -1))
        return self._gaussian_head(torch.cat(parts, dim=-1))
