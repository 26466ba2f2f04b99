"""Build gpytorch kernels from short specifications such as ``"rbf*periodic + matern12"``."""

from __future__ import annotations

import gpytorch
import torch
from gpytorch.kernels import Kernel

from uqdyn._checks import as_int

__all__ = ["make_kernel", "KERNELS"]

#: The base kernel names understood by :func:`make_kernel`.
KERNELS = (
    "rbf",
    "matern12",
    "matern32",
    "matern52",
    "periodic",
    "linear",
    "spectral_mixture",
)


def _base_kernel(name: str, x_dim: int, batch_shape: torch.Size, num_mixtures: int) -> Kernel:
    if name == "rbf":
        return gpytorch.kernels.RBFKernel(ard_num_dims=x_dim, batch_shape=batch_shape)
    if name in ("matern12", "matern32", "matern52"):
        nu = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}[name]
        return gpytorch.kernels.MaternKernel(nu=nu, ard_num_dims=x_dim, batch_shape=batch_shape)
    if name == "periodic":
        return gpytorch.kernels.PeriodicKernel(ard_num_dims=x_dim, batch_shape=batch_shape)
    if name == "linear":
        return gpytorch.kernels.LinearKernel(ard_num_dims=x_dim, batch_shape=batch_shape)
    if name == "spectral_mixture":
        return gpytorch.kernels.SpectralMixtureKernel(
            num_mixtures=num_mixtures, ard_num_dims=x_dim, batch_shape=batch_shape
        )
    raise ValueError(f"kernel name {name!r} is unknown; expected one of {', '.join(KERNELS)}")


def make_kernel(
    spec: str | Kernel,
    x_dim: int,
    *,
    batch_shape: tuple[int, ...] | torch.Size = (),
    num_mixtures: int = 4,
) -> Kernel:
    r"""Build a gpytorch covariance function from a specification string.

    ``spec`` is a sum of products of base kernels, e.g. ``"rbf"``, ``"matern32 + periodic"``
    or ``"rbf * periodic + matern12"`` (``*`` binds tighter than ``+``). Each product term gets
    its own output scale (a ``ScaleKernel``), so ``"a*b + c"`` is
    :math:`s_1 k_a k_b + s_2 k_c`; a term containing ``spectral_mixture`` carries its scale in
    the mixture weights. Base kernels (all with one lengthscale per input dimension):

    * ``rbf``: :math:`\exp(-\lVert (x - x') / \ell \rVert^2 / 2)`;
    * ``matern12``, ``matern32``, ``matern52``: Matérn with :math:`\nu = 1/2, 3/2, 5/2`;
    * ``periodic``: :math:`\exp(-2 \sum_i \sin^2(\pi (x_i - x'_i) / p) / \ell)`;
    * ``linear``: :math:`x^\top x'` times a variance (Bayesian linear regression; with ``+ rbf``
      an autoregression with a smooth non-linear correction);
    * ``spectral_mixture``: Wilson & Adams (2013), ``num_mixtures`` components.

    Parameters
    ----------
    spec : str or gpytorch.kernels.Kernel
        The specification; a ``Kernel`` instance is returned unchanged.
    x_dim : int
        Input dimension (number of lengthscales).
    batch_shape : tuple of int
        Batch shape of the hyperparameters, e.g. ``(y_dim,)`` for independent outputs.
    num_mixtures : int
        Components of a spectral mixture kernel.

    Returns
    -------
    gpytorch.kernels.Kernel
        Evaluated on ``x1 (*batch, N, x_dim)`` and ``x2 (*batch, M, x_dim)`` it gives a
        ``(*batch, N, M)`` covariance.

    References
    ----------
    C. E. Rasmussen and C. K. I. Williams, *Gaussian Processes for Machine Learning*, MIT Press,
    2006, ch. 4. A. G. Wilson and R. P. Adams, "Gaussian process kernels for pattern discovery
    and extrapolation", ICML 2013.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import make_kernel
    >>> k = make_kernel("rbf * periodic + matern12", x_dim=1)
    >>> k(torch.zeros(4, 1), torch.ones(3, 1)).to_dense().shape
    torch.Size([4, 3])
    """
    if isinstance(spec, Kernel):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"kernel is a {type(spec).__name__}; expected a str or a gpytorch Kernel")
    x_dim = as_int(x_dim, "x_dim", minimum=1)
    num_mixtures = as_int(num_mixtures, "num_mixtures", minimum=1)
    batch = torch.Size(batch_shape)
    terms: list[Kernel] = []
    for term in spec.replace(" ", "").lower().split("+"):
        names = [n for n in term.split("*")]
        if not term or any(not n for n in names):
            raise ValueError(
                f"kernel spec {spec!r} has an empty term; expected e.g. 'rbf*periodic'"
            )
        factors = [_base_kernel(n, x_dim, batch, num_mixtures) for n in names]
        product = factors[0] if len(factors) == 1 else gpytorch.kernels.ProductKernel(*factors)
        if "spectral_mixture" in names:
            terms.append(product)
        else:
            terms.append(gpytorch.kernels.ScaleKernel(product, batch_shape=batch))
    return terms[0] if len(terms) == 1 else gpytorch.kernels.AdditiveKernel(*terms)
