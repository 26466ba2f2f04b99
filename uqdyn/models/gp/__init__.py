"""Gaussian-process baselines on gpytorch, returning uqdyn Predictives.

* :class:`ExactGP`: exact GP regression (independent outputs) with kernels built by
  :func:`make_kernel` (RBF, Matérn 1/2, 3/2, 5/2, periodic, spectral mixture, sums and
  products), hyperparameters fit by marginal likelihood;
* :class:`MultitaskGP`: correlated outputs, linear model of coregionalization;
* :class:`SparseGP`: sparse variational GP with inducing points and minibatches (1e5 to 1e6
  points);
* :class:`GridGP`: exact GP on complete space-time grids via Kronecker algebra;
* :class:`PhysicsMean`: a simulated :mod:`uqdyn.physics` model as the GP mean, its physical
  parameters learned with the kernel;
* :class:`ContextGP` and :class:`MetaGP`: the neural-process context/target interface, with
  per-task or meta-learned (shared) hyperparameters.

Every ``predict``/``forward`` returns a marginal :class:`uqdyn.predictive.Normal` or, with
``joint=True``, a :class:`uqdyn.predictive.MultivariateNormal`; ``noisy=True`` (default)
predicts observations ``y = f + noise``, ``noisy=False`` the latent ``f``.
"""

from .context import ContextGP
from .exact import ExactGP
from .grid import GridGP
from .kernels import KERNELS, make_kernel
from .meta import MetaGP
from .multitask import MultitaskGP
from .physics_mean import PhysicsMean
from .sparse import SparseGP

__all__ = [
    "KERNELS",
    "make_kernel",
    "ExactGP",
    "MultitaskGP",
    "SparseGP",
    "GridGP",
    "PhysicsMean",
    "ContextGP",
    "MetaGP",
]
