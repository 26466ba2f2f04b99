"""Sparse variational GP (SVGP) with inducing points and minibatch training."""

from __future__ import annotations

from typing import Any

import gpytorch
import torch
from gpytorch.kernels import Kernel
from gpytorch.means import Mean
from torch import Tensor, nn
from tqdm.auto import tqdm

from uqdyn.predictive import MultivariateNormal, Normal

from ._common import (
    _check_points,
    _check_positive_int,
    _check_training_data,
    _joint_predictive,
    _linalg,
    _marginal_predictive,
    _to_like,
)
from .exact import (
    _data_variance,
    _init_from_data,
    _init_mean,
    _make_likelihood,
    _make_mean,
    _noise_floor,
    _set_noise,
)
from .kernels import make_kernel

__all__ = ["SparseGP"]


class _SVGPModel(gpytorch.models.ApproximateGP):
    def __init__(
        self, mean: Mean, kernel: Kernel, inducing: Tensor, y_dim: int, natural: bool, learn: bool
    ) -> None:
        batch = torch.Size([y_dim]) if y_dim > 1 else torch.Size([])
        num_inducing = inducing.shape[-2]
        dist_cls = (
            gpytorch.variational.NaturalVariationalDistribution
            if natural
            else gpytorch.variational.CholeskyVariationalDistribution
        )
        variational = dist_cls(num_inducing, batch_shape=batch)
        strategy: Any = gpytorch.variational.VariationalStrategy(
            self, inducing, variational, learn_inducing_locations=learn
        )
        if y_dim > 1:
            strategy = gpytorch.variational.IndependentMultitaskVariationalStrategy(
                strategy, num_tasks=y_dim
            )
        super().__init__(strategy)
        self.mean_module = mean
        self.covar_module = kernel

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SparseGP(nn.Module):
    r"""Sparse variational GP (SVGP) for large data sets, trained on minibatches.

    ``num_inducing`` inducing inputs :math:`Z` carry a Gaussian :math:`q(u) = \mathcal N(m, S)`
    over :math:`u = f(Z)`; the approximate posterior is :math:`q(f_*) = \int p(f_* | u) q(u)
    du`. Hyperparameters, :math:`Z` and :math:`q(u)` maximise the evidence lower bound

    .. math:: \mathcal L = \sum_{n} \mathbb E_{q(f_n)}[\log p(y_n | f_n)]
       - \mathrm{KL}(q(u) \,\|\, p(u)),

    estimated without bias on minibatches (sum rescaled by ``N / batch``). With
    ``natural_gradient=True`` (default) :math:`q(u)` takes natural-gradient steps (gpytorch
    ``NGD``) and the rest Adam steps; with one full batch and ``ngd_lr=1`` a single natural
    step reaches the optimal :math:`q(u)` of a Gaussian likelihood. Outputs are independent
    (one SVGP per output). Cost per step :math:`O(B M^2 + M^3)` for batch ``B``.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    num_inducing : int
        Number ``M`` of inducing points (ignored when ``inducing_points`` is given).
    inducing_points : Tensor, shape (M, x_dim), optional
        Initial inducing inputs; default a random subset of the first training data.
    learn_inducing : bool
        Optimise the inducing inputs.
    kernel, mean, noise, min_noise, num_mixtures, jitter, max_jitter_tries :
        As for :class:`ExactGP`.
    natural_gradient : bool
        Natural-gradient steps for :math:`q(u)`.

    References
    ----------
    J. Hensman, N. Fusi and N. D. Lawrence, "Gaussian processes for big data", UAI 2013.
    H. Salimbeni, S. Eleftheriadis and J. Hensman, "Natural gradients in practice:
    non-conjugate variational inference in Gaussian process models", AISTATS 2018.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import SparseGP
    >>> x = torch.rand(2000, 1)
    >>> y = torch.sin(6 * x) + 0.1 * torch.randn(2000, 1)
    >>> gp = SparseGP(x_dim=1, num_inducing=32)
    >>> _ = gp.fit(x, y, epochs=2, batch_size=256, progress=False)
    >>> gp.predict(torch.rand(5, 1)).batch_shape
    torch.Size([5, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 1,
        *,
        num_inducing: int = 128,
        inducing_points: Tensor | None = None,
        learn_inducing: bool = True,
        kernel: str | Kernel = "rbf",
        mean: str | Mean = "zero",
        noise: float | None = None,
        min_noise: float = 1e-4,
        num_mixtures: int = 4,
        natural_gradient: bool = True,
        jitter: float | None = None,
        max_jitter_tries: int = 3,
    ) -> None:
        super().__init__()
        self.x_dim = _check_positive_int(x_dim, "x_dim")
        self.y_dim = _check_positive_int(y_dim, "y_dim")
        if inducing_points is not None:
            z = _check_points(inducing_points, "inducing_points", x_dim)
            self._inducing_given = True
        else:
            z = torch.zeros(_check_positive_int(num_inducing, "num_inducing"), x_dim)
            self._inducing_given = False
        batch = torch.Size([y_dim]) if y_dim > 1 else torch.Size([])
        if y_dim > 1:
            z = z.unsqueeze(0).repeat(y_dim, 1, 1)
        self.natural_gradient = bool(natural_gradient)
        self.gp = _SVGPModel(
            _make_mean(mean, batch),
            make_kernel(kernel, x_dim, batch_shape=batch, num_mixtures=num_mixtures),
            z,
            y_dim,
            self.natural_gradient,
            bool(learn_inducing),
        )
        self.likelihood = _make_likelihood(y_dim, min_noise)
        if noise is not None:
            if not isinstance(noise, (int, float)) or not noise > min_noise:
                raise ValueError(f"noise={noise!r}; expected a number > min_noise={min_noise}")
            _set_noise(self.likelihood, float(noise))
        self._noise_given = noise is not None
        self.jitter = jitter
        self.max_jitter_tries = _check_positive_int(max_jitter_tries, "max_jitter_tries", 0)
        self._initialised = False

    @property
    def inducing_points(self) -> Tensor:
        """Inducing inputs, shape ``(M, x_dim)`` (``(y_dim, M, x_dim)`` for several outputs)."""
        strategy = self.gp.variational_strategy
        base: Any = getattr(strategy, "base_variational_strategy", strategy)
        return base.inducing_points

    def _settings(self, dtype: torch.dtype) -> Any:
        return _linalg(dtype, self.jitter, self.max_jitter_tries, 0)

    def _initialise(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None, from_data: bool
    ) -> None:
        _to_like(self, x)
        if not self._inducing_given:
            m = self.inducing_points.shape[-2]
            idx = torch.randperm(x.shape[0], generator=generator)[:m].to(x.device)
            picked = x[idx]
            if picked.shape[0] < m:  # fewer data than inducing points: repeat with a wobble
                extra = x[torch.randint(x.shape[0], (m - picked.shape[0],), generator=generator)]
                picked = torch.cat([picked, extra + 1e-3 * x.std(0).clamp_min(1e-3)])
            with torch.no_grad():
                self.inducing_points.copy_(picked.expand_as(self.inducing_points))
        if from_data:
            variance = _data_variance(y)
            _init_from_data(self.gp.covar_module, x, y, variance=variance)
            _init_mean(self.gp.mean_module, y)
            if not self._noise_given:
                floor = max(2.0 * _noise_floor(self.likelihood), 1e-6)
                _set_noise(self.likelihood, (0.01 * variance.mean()).clamp_min(floor))
        self._initialised = True

    def elbo(self, x: Tensor, y: Tensor, num_data: int | None = None) -> Tensor:
        """ELBO per data point of ``x (B, x_dim)``, ``y (B, y_dim)``, shape ``()``.

        ``num_data`` is the size of the full data set the batch is drawn from (default ``B``).
        """
        x, y = _check_training_data(x, y, self.x_dim, self.y_dim)
        target = y[:, 0] if self.y_dim == 1 else y
        mll = gpytorch.mlls.VariationalELBO(
            self.likelihood, self.gp, num_data=num_data or x.shape[0]
        )
        self.gp.train()
        self.likelihood.train()
        with self._settings(x.dtype):
            return mll(self.gp(x), target).sum()

    def fit(
        self,
        x: Tensor,
        y: Tensor,
        *,
        epochs: int = 10,
        batch_size: int = 1024,
        lr: float = 0.01,
        ngd_lr: float = 0.1,
        learn_hyperparameters: bool = True,
        init_from_data: bool = True,
        max_steps: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> list[float]:
        """Maximise the ELBO on shuffled minibatches of ``x (N, x_dim)``, ``y (N, y_dim)``.

        Parameters
        ----------
        x : Tensor, shape (N, x_dim)
        y : Tensor, shape (N, y_dim)
        epochs : int
            Passes over the data.
        batch_size : int
            Minibatch size ``B``.
        lr : float
            Adam learning rate (hyperparameters, inducing inputs and, without natural
            gradients, :math:`q(u)`).
        ngd_lr : float
            Natural-gradient step size for :math:`q(u)`.
        learn_hyperparameters : bool
            ``False`` keeps kernel, mean, noise and inducing inputs fixed (only :math:`q(u)`).
        init_from_data : bool
            At the first fit, start lengthscales, output scales, a constant mean and the
            noise from the data (as :meth:`ExactGP.fit`: a tenth of each input range, each
            output's ``var(y)`` and ``mean(y)``, 1% of ``var(y)`` averaged over the
            outputs); ``False`` keeps the values already set.
        max_steps : int, optional
            Stop after this many minibatch steps.
        generator : torch.Generator, optional
            Randomness of the shuffling and the inducing-point initialisation.
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        list of float
            Negative ELBO per data point after each minibatch step.
        """
        x, y = _check_training_data(x, y, self.x_dim, self.y_dim)
        _check_positive_int(epochs, "epochs")
        _check_positive_int(batch_size, "batch_size")
        if not self._initialised:
            self._initialise(x, y, generator, init_from_data)
        _to_like(self, x)
        n = x.shape[0]
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=n)
        variational = list(self.gp.variational_parameters())
        others = [p for p in self.parameters() if all(p is not v for v in variational)]
        optimizers: list[torch.optim.Optimizer] = []
        if self.natural_gradient:
            optimizers.append(gpytorch.optim.NGD(variational, num_data=n, lr=ngd_lr))
        else:
            others = others + variational if learn_hyperparameters else variational
        if learn_hyperparameters or not self.natural_gradient:
            trainable = [p for p in others if p.requires_grad]
            if trainable:
                optimizers.append(torch.optim.Adam(trainable, lr=lr))
        self.gp.train()
        self.likelihood.train()
        steps_per_epoch = (n + batch_size - 1) // batch_size
        total = (
            epochs * steps_per_epoch
            if max_steps is None
            else min(max_steps, epochs * steps_per_epoch)
        )
        history: list[float] = []
        bar = tqdm(total=total, desc="SparseGP fit", disable=not progress, leave=False)
        target = y[:, 0] if self.y_dim == 1 else y
        with self._settings(x.dtype):
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator).to(x.device)
                for start in range(0, n, batch_size):
                    if len(history) >= total:
                        break
                    idx = order[start : start + batch_size]
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    loss = -mll(self.gp(x[idx]), target[idx]).sum()
                    if not bool(torch.isfinite(loss)):
                        raise ValueError(
                            f"the negative ELBO became {float(loss)} at step {len(history)}; "
                            "lower lr / ngd_lr or check the data scale"
                        )
                    loss.backward()
                    for opt in optimizers:
                        opt.step()
                    history.append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix(loss=f"{history[-1]:.4g}")
        bar.close()
        return history

    def predict(
        self, x: Tensor, *, noisy: bool = True, joint: bool = False, chunk_size: int = 16384
    ) -> Normal | MultivariateNormal:
        """Approximate posterior predictive at ``x (M, x_dim)``.

        Parameters
        ----------
        x : Tensor, shape (M, x_dim)
        noisy : bool
            ``True``: noisy observations ``y``; ``False``: the latent ``f``.
        joint : bool
            ``False``: marginal ``Normal`` of shape ``(M, y_dim)`` (computed in chunks of
            ``chunk_size`` points); ``True``: ``MultivariateNormal`` over the ``M * y_dim``
            values, point-major, batch shape ``(M * y_dim,)``.
        chunk_size : int
            Points per chunk of the marginal prediction.

        Returns
        -------
        Normal or MultivariateNormal
        """
        if not self._initialised:
            raise ValueError("the SparseGP is not fitted; call fit(x, y) first")
        z = self.inducing_points
        x = _check_points(x, "x", self.x_dim)
        if x.device != z.device or x.dtype != z.dtype:
            raise TypeError(
                f"x is {x.dtype} on {x.device} but the model is {z.dtype} on {z.device}; "
                "expected the same"
            )
        self.gp.eval()
        self.likelihood.eval()
        with self._settings(x.dtype):
            if joint:
                dist = self.gp(x)
                dist = self.likelihood(dist) if noisy else dist
                return _joint_predictive(dist, self.y_dim, self.jitter, self.max_jitter_tries)
            locs, scales = [], []
            for start in range(0, x.shape[0], _check_positive_int(chunk_size, "chunk_size")):
                dist = self.gp(x[start : start + chunk_size])
                dist = self.likelihood(dist) if noisy else dist
                part = _marginal_predictive(dist, self.y_dim)
                locs.append(part.loc)
                scales.append(part.scale)
            return Normal(torch.cat(locs), torch.cat(scales), validate=False)

    def forward(
        self, x: Tensor, *, noisy: bool = True, joint: bool = False
    ) -> Normal | MultivariateNormal:
        """Same as :meth:`predict`."""
        return self.predict(x, noisy=noisy, joint=joint)
