"""Correlated outputs: the linear model of coregionalization on gpytorch multitask kernels."""

from __future__ import annotations

import gpytorch
import torch
from gpytorch.kernels import Kernel
from gpytorch.means import Mean

from uqdyn._checks import as_int, is_integer_scalar

from ._common import _check_positive_int
from .exact import ExactGP, _make_mean
from .kernels import make_kernel

__all__ = ["MultitaskGP"]


class MultitaskGP(ExactGP):
    r"""Exact multi-output GP with the linear model of coregionalization (LMC).

    The ``y_dim`` outputs are linear mixtures of ``num_latents`` independent latent GPs, so
    the covariance between output ``i`` at ``x`` and output ``j`` at ``x'`` is

    .. math:: \operatorname{cov}(f_i(x), f_j(x')) = \sum_{q=1}^{Q} B^{(q)}_{ij} k_q(x, x'),
       \qquad B^{(q)} = W_q W_q^\top + \operatorname{diag}(v_q),

    with ``W_q`` of shape ``(y_dim, rank)`` (gpytorch ``LCMKernel`` of ``IndexKernel`` s;
    ``num_latents = 1`` is the intrinsic coregionalization model). Each output has its own
    Gaussian noise. Fitting, conditioning and prediction are those of :class:`ExactGP`; the
    joint predictive couples all ``M * y_dim`` values (point-major, output fastest).

    At the first :meth:`~ExactGP.fit` the hyperparameters start from the data (unless
    ``init_from_data=False``): lengthscales at a tenth of the input range, the latent output
    scales at the mean output variance and each ``B_q`` such that the prior variance of
    output ``j`` is its ``var(y_j)`` (half in ``diag(v_q)``, half in ``W_q``, whose random
    initial directions from the construction are kept), constant means at ``mean(y_j)`` and
    the noise at 1% of the mean output variance.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions (``y_dim >= 2``).
    num_latents : int
        Number ``Q`` of latent GPs (each with its own kernel hyperparameters).
    rank : int
        Rank of each coregionalization matrix ``W_q``.
    kernel : str or gpytorch Kernel
        :func:`make_kernel` specification of every latent kernel ``k_q``.
    mean : {"zero", "constant"} or gpytorch Mean
        Per-output mean; a Mean instance must map ``(N, x_dim)`` to ``(N, y_dim)``.
    **kwargs
        ``noise``, ``min_noise``, ``learn_noise``, ``num_mixtures``, ``jitter``,
        ``max_jitter_tries``, ``max_cholesky_size`` as for :class:`ExactGP`.

    References
    ----------
    M. A. Álvarez, L. Rosasco and N. D. Lawrence, "Kernels for vector-valued functions: a
    review", Foundations and Trends in Machine Learning 4(3), 2012.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import MultitaskGP
    >>> x = torch.linspace(0, 1, 25).unsqueeze(-1)
    >>> y = torch.cat([torch.sin(6 * x), torch.sin(6 * x) + 0.1 * x], dim=-1)
    >>> gp = MultitaskGP(x_dim=1, y_dim=2, num_latents=2)
    >>> _ = gp.fit(x, y, steps=30, progress=False)
    >>> gp.predict(torch.rand(4, 1), joint=True).batch_shape
    torch.Size([8])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        num_latents: int = 1,
        rank: int = 1,
        kernel: str | Kernel = "rbf",
        mean: str | Mean = "zero",
        **kwargs: object,
    ) -> None:
        self._num_latents = _check_positive_int(num_latents, "num_latents")
        self._rank = _check_positive_int(rank, "rank")
        if is_integer_scalar(y_dim) and as_int(y_dim, "y_dim") < 2:
            raise ValueError(f"y_dim={y_dim!r}; expected >= 2 (use ExactGP for one output)")
        super().__init__(x_dim, y_dim, kernel=kernel, mean=mean, **kwargs)  # type: ignore[arg-type]

    def _build_prior(
        self, kernel: str | Kernel, mean: str | Mean, num_mixtures: int
    ) -> tuple[Mean, Kernel, str]:
        if isinstance(kernel, Kernel) and self._num_latents > 1:
            raise ValueError(
                "kernel is a Kernel instance but num_latents > 1; pass a specification string "
                "so that each latent GP gets its own kernel"
            )
        latents = [
            make_kernel(kernel, self.x_dim, num_mixtures=num_mixtures)
            for _ in range(self._num_latents)
        ]
        covar = gpytorch.kernels.LCMKernel(latents, num_tasks=self.y_dim, rank=self._rank)
        if isinstance(mean, Mean):
            mean_module = mean
        else:
            mean_module = gpytorch.means.MultitaskMean(
                _make_mean(mean, torch.Size([])), num_tasks=self.y_dim
            )
        return mean_module, covar, "multitask"
