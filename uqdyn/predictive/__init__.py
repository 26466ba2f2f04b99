"""Predictive distributions: the one output type of every uqdyn model.

``Normal`` (independent Gaussians), ``MultivariateNormal`` (joint Gaussian over the last
axis; full, Cholesky or low-rank covariance; converts gpytorch's), ``GaussianMixture``
(components first) and ``Ensemble`` (members first). Each gives ``mean``, ``variance``,
``stddev``, ``sample``, ``quantile``, ``cdf``, ``log_prob`` (where a density exists),
``interval``, ``crps`` and ``to_xarray``. :func:`affine_transform` maps any of them to
``shift + scale * Y`` (back from normalised units).
"""

from .affine import affine_transform
from .base import Predictive
from .ensemble import Ensemble
from .mixture import GaussianMixture
from .mvn import MultivariateNormal
from .normal import Normal

__all__ = [
    "Predictive",
    "Normal",
    "MultivariateNormal",
    "GaussianMixture",
    "Ensemble",
    "affine_transform",
]
