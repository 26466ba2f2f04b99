"""Sparse variational GP (SVGP) with inducing points and minibatch training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gpytorch
import torch
from gpytorch.kernels import Kernel
from gpytorch.means import Mean
from torch import Tensor, nn
from torch.optim import Optimizer

from uqdyn._checks import as_float
from uqdyn.predictive import MultivariateNormal, Normal

from ._common import (
    _check_like,
    _check_noise,
    _check_points,
    _check_positive_int,
    _check_training_data,
    _joint_predictive,
    _linalg,
    _marginal_predictive,
    _point_batch,
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


class _NaturalAdam(torch.optim.Adam):
    """Natural-gradient steps (as gpytorch ``NGD``) on the groups marked ``natural`` and Adam
    on the others: one optimizer, so that one state dict checkpoints both."""

    def __init__(
        self,
        natural: list[nn.Parameter],
        others: list[nn.Parameter],
        *,
        lr: float,
        ngd_lr: float,
        num_data: int,
    ) -> None:
        groups: list[dict[str, Any]] = []
        if others:
            groups.append({"params": others, "natural": False})
        if natural:
            groups.append({"params": natural, "lr": ngd_lr, "natural": True})
        super().__init__(groups, lr=lr)
        self.num_data = num_data

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["natural"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"] * self.num_data)
        adam = [g for g in self.param_groups if not g["natural"]]
        if adam:
            groups, self.param_groups = self.param_groups, adam
            try:
                super().step()
            finally:
                self.param_groups = groups
        return loss


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

    **Training contract.** A batch is a tuple ``(x, y)`` or ``(x, y, mask)`` of rows ``x (B,
    x_dim)``, ``y (B, y_dim)`` and a boolean ``mask (B,)`` (``False`` rows are left out).
    :meth:`loss` is the negative ELBO per point of the batch's observed rows, scaled to the
    data set of ``num_data`` points (the buffer set by :meth:`fit`; 0 means the batch is the
    whole data set); :meth:`predict_batch` returns :math:`q(y)` at the observed rows. Before
    :func:`uqdyn.train.fit` can train it directly, the inducing inputs must be set: given
    to the constructor or chosen by :meth:`fit` (buffer ``initialized``). :meth:`fit` is the
    recipe ``uqdyn.train.fit(gp, draw, optimizer=gp.optimizer(lr, ngd_lr))`` with ``draw(g)``
    a minibatch of rows drawn with the generator ``g``.

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
        self.x_dim = x_dim = _check_positive_int(x_dim, "x_dim")
        self.y_dim = y_dim = _check_positive_int(y_dim, "y_dim")
        min_noise = as_float(min_noise, "min_noise", nonnegative=True, finite=False)
        num_mixtures = _check_positive_int(num_mixtures, "num_mixtures")
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
            _set_noise(self.likelihood, _check_noise(noise, min_noise))
        self._noise_given = noise is not None
        self.jitter = None if jitter is None else as_float(jitter, "jitter")
        self.max_jitter_tries = _check_positive_int(max_jitter_tries, "max_jitter_tries", 0)
        self.initialized: Tensor
        self.num_data: Tensor
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("num_data", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # a state dict saved before these buffers existed comes from a fitted model
        state_dict.setdefault(prefix + "initialized", torch.ones((), dtype=torch.bool))
        state_dict.setdefault(prefix + "num_data", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_ready(self) -> None:
        if not (self._inducing_given or bool(self.initialized)):
            raise ValueError(
                "the SparseGP has no inducing inputs yet; call fit(x, y) first or pass "
                "inducing_points to the constructor"
            )

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
        self.initialized.fill_(True)

    def elbo(self, x: Tensor, y: Tensor, num_data: int | None = None) -> Tensor:
        """ELBO per data point of ``x (B, x_dim)``, ``y (B, y_dim)``, shape ``()``.

        ``num_data`` is the size of the full data set the batch is drawn from (default ``B``).
        """
        x, y = _check_training_data(x, y, self.x_dim, self.y_dim)
        return self._elbo(x, y, num_data or x.shape[0])

    def _elbo(self, x: Tensor, y: Tensor, num_data: int) -> Tensor:
        target = y[:, 0] if self.y_dim == 1 else y
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=num_data)
        self.gp.train()
        self.likelihood.train()
        with self._settings(x.dtype):
            return mll(self.gp(x), target).sum()

    def loss(self, batch: Any) -> Tensor:
        """Negative ELBO per point of a minibatch's observed rows, shape ``()``.

        Parameters
        ----------
        batch : tuple
            ``(x (B, x_dim), y (B, y_dim))`` or ``(x, y, mask (B,))``. The KL term is scaled
            to ``num_data`` points (the buffer; 0: the batch's ``n`` observed rows), so that
            minibatch losses are unbiased estimates of the full-data negative ELBO per point.
        """
        self._check_ready()
        x, y = _point_batch(batch, self.x_dim, self.y_dim)
        _check_like(self, x, "x")
        return -self._elbo(x, y, int(self.num_data) or x.shape[0])

    def predict_batch(self, batch: Any) -> tuple[Normal, Tensor, None]:
        """Approximate predictive :math:`q(y)` at a batch's observed rows (as for :meth:`loss`).

        Returns
        -------
        tuple
            ``(Normal (n, y_dim), y (n, y_dim), None)``.
        """
        self._check_ready()
        x, y = _point_batch(batch, self.x_dim, self.y_dim)
        _check_like(self, x, "x")
        prediction = self.predict(x)
        assert isinstance(prediction, Normal)
        return prediction, y, None

    def optimizer(
        self, lr: float = 0.01, ngd_lr: float = 0.1, num_data: int | None = None
    ) -> Callable[[list[nn.Parameter]], Optimizer]:
        """An optimizer factory for :func:`uqdyn.train.fit`.

        With ``natural_gradient=True``: natural-gradient steps of size ``ngd_lr`` (gpytorch
        ``NGD``, scaled by ``num_data``, default the buffer ``num_data`` or 1) on
        :math:`q(u)` and Adam with ``lr`` on the other parameters, in one optimizer (group
        0 Adam, then the natural group). Otherwise Adam with ``lr`` on all of them.
        """
        lr = as_float(lr, "lr", positive=True, finite=False)
        ngd_lr = as_float(ngd_lr, "ngd_lr", positive=True, finite=False)
        n = int(num_data or int(self.num_data) or 1)

        def make(params: list[nn.Parameter]) -> Optimizer:
            if not self.natural_gradient:
                return torch.optim.Adam(params, lr=lr)
            variational = {id(p) for p in self.gp.variational_parameters()}
            natural = [p for p in params if id(p) in variational]
            others = [p for p in params if id(p) not in variational]
            return _NaturalAdam(natural, others, lr=lr, ngd_lr=ngd_lr, num_data=n)

        return make

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
        seed: int = 0,
        progress: bool = True,
    ) -> list[float]:
        """Maximise the ELBO on random minibatches of ``x (N, x_dim)``, ``y (N, y_dim)``.

        The recipe: store ``num_data = N``, choose the inducing inputs and starting values
        at the first fit, then ``uqdyn.train.fit(self, draw, steps=..., optimizer=
        self.optimizer(lr, ngd_lr), seed=seed, device=x.device)`` where ``draw(g)`` returns
        ``batch_size`` rows drawn uniformly with replacement with the generator ``g`` (all
        rows, in order, when ``batch_size >= N``).

        Parameters
        ----------
        x : Tensor, shape (N, x_dim)
        y : Tensor, shape (N, y_dim)
        epochs : int
            Passes over the data: ``epochs * ceil(N / batch_size)`` steps.
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
            Stop after this many minibatch steps (0: only the initialisation).
        generator : torch.Generator, optional
            Randomness of the inducing-point initialisation (default: a generator seeded
            with ``seed``).
        seed : int
            Seed of :func:`uqdyn.train.fit` (its generator draws the minibatches).
        progress : bool
            Report progress (see :func:`uqdyn.train.fit`).

        Returns
        -------
        list of float
            Negative ELBO per data point at each minibatch step (before it).
        """
        from uqdyn.train import fit

        x, y = _check_training_data(x, y, self.x_dim, self.y_dim)
        epochs = _check_positive_int(epochs, "epochs")
        batch_size = _check_positive_int(batch_size, "batch_size")
        if max_steps is not None:
            max_steps = _check_positive_int(max_steps, "max_steps", 0)
        if not bool(self.initialized):
            if generator is None:
                generator = torch.Generator().manual_seed(seed)
            self._initialise(x, y, generator, init_from_data)
        _to_like(self, x)
        n = x.shape[0]
        self.num_data.fill_(n)
        steps = epochs * ((n + batch_size - 1) // batch_size)
        steps = steps if max_steps is None else min(max_steps, steps)
        if steps == 0:
            return []

        def draw(g: torch.Generator) -> tuple[Tensor, Tensor]:
            if batch_size >= n:
                return x, y
            idx = torch.randint(n, (batch_size,), generator=g).to(x.device)
            return x[idx], y[idx]

        variational = {id(p) for p in self.gp.variational_parameters()}
        frozen = []
        if not learn_hyperparameters:
            frozen = [p for p in self.parameters() if p.requires_grad and id(p) not in variational]
        for p in frozen:
            p.requires_grad_(False)
        try:
            result = fit(
                self,
                draw,
                steps=steps,
                optimizer=self.optimizer(lr, ngd_lr, n),
                lr=lr,
                seed=seed,
                device=x.device,
                progress=progress,
                desc="SparseGP fit",
            )
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return [float(row["loss"]) for row in result.history]  # type: ignore[arg-type]

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
        self._check_ready()
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
