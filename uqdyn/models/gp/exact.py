"""Exact Gaussian-process regression on gpytorch, with independent outputs."""

from __future__ import annotations

import warnings
from typing import Any

import gpytorch
import torch
from gpytorch.kernels import Kernel
from gpytorch.means import Mean
from gpytorch.utils.warnings import GPInputWarning
from torch import Tensor, nn

from uqdyn._checks import as_float
from uqdyn.predictive import MultivariateNormal, Normal

from ._common import (
    _check_like,
    _check_noise,
    _check_points,
    _check_positive_int,
    _check_training_data,
    _joint_predictive,
    _leave_one_out,
    _linalg,
    _marginal_predictive,
    _point_batch,
    _to_like,
)
from .kernels import make_kernel

__all__ = ["ExactGP"]


def _make_mean(mean: str | Mean, batch_shape: torch.Size) -> Mean:
    if isinstance(mean, Mean):
        return mean
    if mean == "zero":
        return gpytorch.means.ZeroMean(batch_shape=batch_shape)
    if mean == "constant":
        return gpytorch.means.ConstantMean(batch_shape=batch_shape)
    raise ValueError(f"mean={mean!r}; expected 'zero', 'constant' or a gpytorch Mean")


def _noise_constraint(min_noise: float) -> gpytorch.constraints.Interval:
    min_noise = as_float(min_noise, "min_noise", nonnegative=True, finite=False)
    if min_noise == 0:
        return gpytorch.constraints.Positive()
    return gpytorch.constraints.GreaterThan(float(min_noise))


def _make_likelihood(y_dim: int, min_noise: float) -> gpytorch.likelihoods.Likelihood:
    constraint = _noise_constraint(min_noise)
    if y_dim == 1:
        return gpytorch.likelihoods.GaussianLikelihood(noise_constraint=constraint)
    return gpytorch.likelihoods.MultitaskGaussianLikelihood(
        num_tasks=y_dim, rank=0, has_global_noise=False, noise_constraint=constraint
    )


def _set_noise(likelihood: gpytorch.likelihoods.Likelihood, noise: float | Tensor) -> None:
    """Set the noise variance: one value for all outputs, or a ``(y_dim,)`` tensor."""
    if isinstance(likelihood, gpytorch.likelihoods.MultitaskGaussianLikelihood):
        current = likelihood.task_noises
    else:
        current = likelihood.noise
    value = torch.as_tensor(noise, dtype=current.dtype, device=current.device)
    value = value.expand_as(current).contiguous()
    if isinstance(likelihood, gpytorch.likelihoods.MultitaskGaussianLikelihood):
        likelihood.task_noises = value
    else:
        likelihood.noise = value


def _noise_floor(likelihood: gpytorch.likelihoods.Likelihood) -> float:
    """The lower bound of the likelihood's noise constraint (0 when only positive)."""
    bounds = [
        float(c.lower_bound.max())
        for _, c in likelihood.named_constraints()
        if isinstance(c, gpytorch.constraints.Interval)
    ]
    return max(bounds, default=0.0)


def _data_variance(y: Tensor) -> Tensor:
    """Per-output variance of ``y (N, y_dim)``, at least 1e-6 (ones for a single point)."""
    if y.shape[0] < 2:
        return y.new_ones(y.shape[1])
    return y.var(0, unbiased=False).clamp_min(1e-6)


def _init_from_data(
    kernel: Kernel,
    x: Tensor,
    y: Tensor,
    *,
    span: Tensor | None = None,
    variance: Tensor | None = None,
) -> None:
    """Data-based starting values of a kernel's hyperparameters.

    Lengthscales a tenth of each input range ``span`` (default: the range of ``x (N,
    x_dim)``), periodic lengthscales 1, output scales ``variance`` (default: the per-output
    variance of ``y (N, y_dim)``; a scalar output scale takes the mean), linear-kernel
    variances ``1 / mean |x|^2`` (so that a scaled linear term starts at ``variance`` too)
    and coregionalization matrices ``B_q`` of an LCM with ``sum_q s_q B_q[j, j] =
    variance[j]`` (half on the diagonal, half on the low-rank factor, whose random
    directions are kept). Spectral mixtures use gpytorch's own ``initialize_from_data``.
    """
    span = (x.amax(0) - x.amin(0)).clamp_min(1e-3) if span is None else span
    variance = _data_variance(y.reshape(y.shape[0], -1)) if variance is None else variance
    index_kernels = [m for m in kernel.modules() if isinstance(m, gpytorch.kernels.IndexKernel)]
    for module in kernel.modules():
        if isinstance(module, gpytorch.kernels.SpectralMixtureKernel):
            module.initialize_from_data(x, y[:, 0] if y.dim() == 2 else y)
        elif isinstance(module, gpytorch.kernels.PeriodicKernel):
            module.lengthscale = torch.ones_like(module.lengthscale)
        elif getattr(module, "has_lengthscale", False):
            module.lengthscale = (span / 10.0).expand_as(module.lengthscale).contiguous()
        if isinstance(module, gpytorch.kernels.LinearKernel):
            level = x.square().sum(-1).mean().clamp_min(1e-6)
            module.variance = (1.0 / level).expand_as(module.variance).contiguous()
        if isinstance(module, gpytorch.kernels.ScaleKernel):
            scale = variance.mean() if module.outputscale.dim() == 0 else variance
            module.outputscale = scale.expand_as(module.outputscale).contiguous()
        if isinstance(module, gpytorch.kernels.IndexKernel):
            # outputs j: B_jj = variance_j / (mean variance * Q), the latent scales being the mean
            share = (variance / variance.mean() / len(index_kernels)).to(module.raw_var)
            with torch.no_grad():
                factor = module.covar_factor
                norms = factor.norm(dim=-1, keepdim=True)
                unit = torch.where(
                    norms > 0,
                    factor / norms.clamp_min(1e-12),
                    factor.new_ones(()) / factor.shape[-1] ** 0.5,
                )
                factor.copy_(unit * (0.5 * share).sqrt().unsqueeze(-1))
            module.var = (0.5 * share).expand_as(module.var).contiguous()


def _init_mean(mean: Mean, y: Tensor) -> None:
    """Constant means (also inside a ``MultitaskMean``) start at the mean of ``y (N, y_dim)``."""
    level = y.mean(0)
    with torch.no_grad():
        if isinstance(mean, gpytorch.means.ConstantMean):
            c = mean.constant
            value = level.reshape(c.shape) if c.numel() == level.numel() else level.mean()
            c.copy_(value.expand_as(c))
        elif isinstance(mean, gpytorch.means.MultitaskMean):
            for j, base in enumerate(mean.base_means):
                if isinstance(base, gpytorch.means.ConstantMean) and j < level.numel():
                    base.constant.copy_(level[j].expand_as(base.constant))


class _ExactModel(gpytorch.models.ExactGP):
    """gpytorch exact GP; ``output`` is "single", "batch" (independent outputs over a batch
    dimension) or "multitask" (a multitask kernel over the outputs)."""

    def __init__(
        self, mean: Mean, kernel: Kernel, likelihood: gpytorch.likelihoods.Likelihood, output: str
    ) -> None:
        super().__init__(None, None, likelihood)
        self.mean_module = mean
        self.covar_module = kernel
        self.output = output

    def forward(self, x: Tensor) -> Any:
        mean, covar = self.mean_module(x), self.covar_module(x)
        if self.output == "multitask":
            return gpytorch.distributions.MultitaskMultivariateNormal(mean, covar)
        dist = gpytorch.distributions.MultivariateNormal(mean, covar)
        if self.output == "single":
            return dist
        return gpytorch.distributions.MultitaskMultivariateNormal.from_batch_mvn(dist, task_dim=-1)


class ExactGP(nn.Module):
    r"""Exact GP regression :math:`y_j = f_j(x) + \varepsilon_j`, one GP per output ``j``.

    Each output has its own mean, kernel hyperparameters and Gaussian noise variance
    :math:`\sigma_j^2` (independent outputs; see :class:`MultitaskGP` for correlated ones).
    Hyperparameters are fit by maximising the exact log marginal likelihood
    :math:`\log p(y) = -\tfrac12 (y - m)^\top (K + \sigma^2 I)^{-1} (y - m)
    - \tfrac12 \log|K + \sigma^2 I| - \tfrac n2 \log 2\pi` with gpytorch. Predictions are the
    usual posterior :math:`\mu_* = m_* + K_{*n} (K + \sigma^2 I)^{-1} (y - m)`,
    :math:`\Sigma_* = K_{**} - K_{*n} (K + \sigma^2 I)^{-1} K_{n*}` for the latent ``f``, plus
    :math:`\sigma^2 I` for noisy ``y``.

    The model follows the device and dtype of the data given to :meth:`fit` /
    :meth:`condition`. A Cholesky that fails gets jitter ``jitter * 10**i``, ``i <
    max_jitter_tries``, with a ``NumericalWarning`` each time, then a ``ValueError``.

    **Training contract.** A batch is a tuple ``(x, y)`` or ``(x, y, mask)``: ``x (N,
    x_dim)``, ``y (N, y_dim)`` and a boolean ``mask (N,)`` whose ``False`` rows (padding,
    points not observed) may hold anything and are left out. :meth:`loss` conditions the GP
    on the batch's observed points and returns their negative log marginal likelihood per
    value; :meth:`predict_batch` returns the leave-one-out predictive of each observed point
    given the batch's others. :meth:`fit` is the recipe ``uqdyn.train.fit(gp, [(x, y)])``.
    The conditioning data are the buffers ``train_x (N, x_dim)`` and ``train_y (N, y_dim)``,
    so a state dict (and a checkpoint of :func:`uqdyn.train.fit`) carries them.

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    kernel : str or gpytorch Kernel
        A :func:`make_kernel` specification (e.g. ``"matern52 + periodic"``); a Kernel
        instance must have batch shape ``(y_dim,)`` when ``y_dim > 1``.
    mean : {"zero", "constant"} or gpytorch Mean
        Prior mean, e.g. a :class:`PhysicsMean` (it must return ``(y_dim, N)`` when
        ``y_dim > 1``).
    noise : float, optional
        Initial noise variance; default from the data at the first fit (1% of ``var(y)``,
        averaged over the outputs).
    min_noise : float
        Lower bound of the noise variance (default ``1e-4``; 0 allows any positive value).
    learn_noise : bool
        Fit the noise variance (default) or keep it fixed.
    num_mixtures : int
        Components of a spectral-mixture kernel.
    jitter : float, optional
        First diagonal jitter tried when a Cholesky fails (default 1e-6 in float32, 1e-8 in
        float64).
    max_jitter_tries : int
        Number of jitter escalations (x10 each) before raising.
    max_cholesky_size : int
        Up to this many points gpytorch uses Cholesky; above, conjugate gradients.

    References
    ----------
    C. E. Rasmussen and C. K. I. Williams, *Gaussian Processes for Machine Learning*, 2006,
    ch. 2 and 5. J. Gardner et al., "GPyTorch: blackbox matrix-matrix Gaussian process
    inference with GPU acceleration", NeurIPS 2018.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import ExactGP
    >>> x = torch.linspace(0, 1, 20).unsqueeze(-1)
    >>> y = torch.sin(6 * x)
    >>> gp = ExactGP(x_dim=1, kernel="matern52")
    >>> losses = gp.fit(x, y, steps=50, progress=False)
    >>> gp.predict(torch.rand(5, 1)).batch_shape
    torch.Size([5, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 1,
        *,
        kernel: str | Kernel = "rbf",
        mean: str | Mean = "zero",
        noise: float | None = None,
        min_noise: float = 1e-4,
        learn_noise: bool = True,
        num_mixtures: int = 4,
        jitter: float | None = None,
        max_jitter_tries: int = 3,
        max_cholesky_size: int = 4096,
    ) -> None:
        super().__init__()
        self.x_dim = x_dim = _check_positive_int(x_dim, "x_dim")
        self.y_dim = y_dim = _check_positive_int(y_dim, "y_dim")
        min_noise = as_float(min_noise, "min_noise", nonnegative=True, finite=False)
        num_mixtures = _check_positive_int(num_mixtures, "num_mixtures")
        likelihood = _make_likelihood(y_dim, min_noise)
        if noise is not None:
            _set_noise(likelihood, _check_noise(noise, min_noise))
        if not learn_noise:
            for p in likelihood.parameters():
                p.requires_grad_(False)
        self._noise_given = noise is not None
        mean_module, covar_module, output = self._build_prior(kernel, mean, num_mixtures)
        self.gp = _ExactModel(mean_module, covar_module, likelihood, output)
        self.jitter = None if jitter is None else as_float(jitter, "jitter")
        self.max_jitter_tries = _check_positive_int(max_jitter_tries, "max_jitter_tries", 0)
        self.max_cholesky_size = _check_positive_int(max_cholesky_size, "max_cholesky_size", 0)
        self._fitted = False
        self.train_x: Tensor
        self.train_y: Tensor
        self.register_buffer("train_x", torch.zeros(0, self.x_dim))
        self.register_buffer("train_y", torch.zeros(0, self.y_dim))

    def _set_data(self, x: Tensor, y: Tensor, *, keep: bool = True) -> None:
        """Condition the gpytorch model on checked ``x (N, x_dim)``, ``y (N, y_dim)``; with
        ``keep`` also store them in the buffers ``train_x``, ``train_y`` (the state dict)."""
        self.gp.set_train_data(x, y[:, 0] if self.y_dim == 1 else y, strict=False)
        if keep:
            self.train_x, self.train_y = x, y

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
        # the conditioning data take the stored shapes; a state dict without them (saved
        # before they were buffers) leaves the GP unconditioned
        for name in ("train_x", "train_y"):
            key = prefix + name
            current = getattr(self, name)
            if key in state_dict:
                setattr(self, name, current.new_empty(state_dict[key].shape))
            else:
                state_dict[key] = current.new_zeros((0, current.shape[-1]))
                setattr(self, name, state_dict[key])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.train_x.shape[0] > 0:
            self._set_data(self.train_x, self.train_y)
        else:
            self.gp.train_inputs, self.gp.train_targets = None, None
            self.gp.prediction_strategy = None

    def _build_prior(
        self, kernel: str | Kernel, mean: str | Mean, num_mixtures: int
    ) -> tuple[Mean, Kernel, str]:
        """Mean and covariance modules, and how outputs are laid out."""
        batch = torch.Size([self.y_dim]) if self.y_dim > 1 else torch.Size([])
        return (
            _make_mean(mean, batch),
            make_kernel(kernel, self.x_dim, batch_shape=batch, num_mixtures=num_mixtures),
            "batch" if self.y_dim > 1 else "single",
        )

    @property
    def likelihood(self) -> gpytorch.likelihoods.Likelihood:
        """The gpytorch Gaussian likelihood (noise variances)."""
        return self.gp.likelihood

    def _settings(self, dtype: torch.dtype) -> Any:
        return _linalg(dtype, self.jitter, self.max_jitter_tries, self.max_cholesky_size)

    def condition(self, x: Tensor, y: Tensor) -> ExactGP:
        """Condition on ``x (N, x_dim)``, ``y (N, y_dim)`` without changing hyperparameters.

        Returns
        -------
        ExactGP
            ``self``, moved to the device and dtype of ``x``.
        """
        x, y = _check_training_data(x, y, self.x_dim, self.y_dim)
        _to_like(self, x)
        self._set_data(x, y)
        return self

    def _start_from_data(
        self,
        x: Tensor,
        y: Tensor,
        *,
        span: Tensor | None = None,
        variance: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> None:
        """Data-based starting hyperparameters from ``x (N, x_dim)``, ``y (N, y_dim)``.

        Kernel as :func:`_init_from_data` (``span`` and ``variance`` override the data's
        input range and per-output variance), constant means at ``mean(y)`` and, unless
        ``noise`` was given to the constructor, the noise variance of every output at 1% of
        the mean over outputs of ``noise`` (default ``variance``), at least twice the
        ``min_noise`` floor and 1e-6.
        """
        variance = _data_variance(y) if variance is None else variance
        _init_from_data(self.gp.covar_module, x, y, span=span, variance=variance)
        _init_mean(self.gp.mean_module, y)
        if not self._noise_given:
            floor = max(2.0 * _noise_floor(self.likelihood), 1e-6)
            level = (variance if noise is None else noise).mean()
            _set_noise(self.likelihood, (0.01 * level).clamp_min(floor))

    def log_marginal_likelihood(self) -> Tensor:
        r"""Exact :math:`\log p(y)` of the conditioning data, summed over outputs; shape ``()``."""
        if self.gp.train_inputs is None:
            raise ValueError("the GP has no data; call fit(x, y) or condition(x, y) first")
        self.gp.train()
        self.likelihood.train()
        x = self.gp.train_inputs[0]
        with self._settings(x.dtype):
            out = self.likelihood(self.gp(x))
            return out.log_prob(self.gp.train_targets)

    def loss(self, batch: Any) -> Tensor:
        r"""Negative log marginal likelihood per value of a batch's observed points.

        Conditions the GP on them (they become ``train_x``, ``train_y``) and returns
        :math:`-\log p(y \mid x) / (n\, y_{dim})`, what :meth:`fit` minimises.

        Parameters
        ----------
        batch : tuple
            ``(x (N, x_dim), y (N, y_dim))`` or ``(x, y, mask (N,))``; rows with ``mask``
            ``False`` are left out. Same dtype and device as the model.

        Returns
        -------
        Tensor, shape ()
        """
        x, y = _point_batch(batch, self.x_dim, self.y_dim)
        _check_like(self, x, "x")
        self._set_data(x, y)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.gp)
        self.gp.train()
        self.likelihood.train()
        with self._settings(x.dtype):
            return -mll(self.gp(x), self.gp.train_targets).sum()

    def predict_batch(self, batch: Any) -> tuple[Normal, Tensor, None]:
        """Leave-one-out predictive of a batch's observed points, for validation.

        Each observed point of ``batch`` (as for :meth:`loss`) is predicted (noisy) from the
        batch's other observed points with the current hyperparameters; the stored
        conditioning data are neither used nor changed.

        Returns
        -------
        tuple
            ``(Normal (n, y_dim), y (n, y_dim), None)`` over the ``n`` observed points.
        """
        x, y = _point_batch(batch, self.x_dim, self.y_dim)
        _check_like(self, x, "x")
        with self._settings(x.dtype):
            prior = self.likelihood(self.gp.forward(x))
            return _leave_one_out(prior, y, self.jitter, self.max_jitter_tries), y, None

    def fit(
        self,
        x: Tensor,
        y: Tensor,
        *,
        steps: int = 100,
        lr: float = 0.1,
        optimizer: str = "adam",
        init_from_data: bool = True,
        progress: bool = True,
    ) -> list[float]:
        """Fit hyperparameters to ``x (N, x_dim)``, ``y (N, y_dim)`` by marginal likelihood.

        Conditions on the data, starts the hyperparameters from them (see
        ``init_from_data``), then runs ``uqdyn.train.fit(self, [(x, y)], steps=steps,
        optimizer=optimizer, lr=lr, device=x.device)`` on :meth:`loss` (seed 0: the fit
        draws no random numbers unless gpytorch switches to its stochastic solvers above
        ``max_cholesky_size`` points).

        Parameters
        ----------
        x : Tensor, shape (N, x_dim)
        y : Tensor, shape (N, y_dim) (or (N,) when ``y_dim == 1``)
        steps : int
            Optimiser steps (Adam) or iterations (L-BFGS); 0 only conditions.
        lr : float
            Learning rate.
        optimizer : {"adam", "lbfgs"} or a factory
            As for :func:`uqdyn.train.fit` (``"lbfgs"``: one strong-Wolfe L-BFGS iteration
            per step).
        init_from_data : bool
            At the first fit, start lengthscales at a tenth of each input range, output
            scales at each output's ``var(y)`` (coregionalization matrices of a
            :class:`MultitaskGP` accordingly), a constant mean at ``mean(y)`` and the noise
            (unless given) at 1% of ``var(y)`` (averaged over the outputs); ``False`` keeps
            the values set
            (gpytorch's defaults: lengthscales, output scales and noise about 0.69).
        progress : bool
            Report progress (see :func:`uqdyn.train.fit`).

        Returns
        -------
        list of float
            The negative log marginal likelihood per data point at each step (before it).
        """
        from uqdyn.train import fit

        steps = _check_positive_int(steps, "steps", 0)
        self.condition(x, y)
        x, y = self.train_x, self.train_y
        if init_from_data and not self._fitted:
            self._start_from_data(x, y)
        self._fitted = True
        if steps == 0 or not any(p.requires_grad for p in self.parameters()):
            return []
        result = fit(
            self,
            [(x, y)],
            steps=steps,
            optimizer=optimizer,
            lr=lr,
            device=x.device,
            progress=progress,
            desc=f"{type(self).__name__} fit",
        )
        return [float(row["loss"]) for row in result.history]  # type: ignore[arg-type]

    def predict(
        self, x: Tensor, *, noisy: bool = True, joint: bool = False
    ) -> Normal | MultivariateNormal:
        """Posterior predictive at ``x (M, x_dim)``.

        Parameters
        ----------
        x : Tensor, shape (M, x_dim)
        noisy : bool
            ``True``: observations ``y = f + noise``; ``False``: the latent ``f``.
        joint : bool
            ``False``: marginal :class:`~uqdyn.predictive.Normal` of shape ``(M, y_dim)``;
            ``True``: joint :class:`~uqdyn.predictive.MultivariateNormal` over the ``M * y_dim``
            values flattened point-major (output fastest), batch shape ``(M * y_dim,)``.

        Returns
        -------
        Normal or MultivariateNormal
        """
        if self.gp.train_inputs is None:
            raise ValueError("the GP has no data; call fit(x, y) or condition(x, y) first")
        train_x = self.gp.train_inputs[0]
        x = _check_points(x, "x", self.x_dim)
        if x.device != train_x.device or x.dtype != train_x.dtype:
            raise TypeError(
                f"x is {x.dtype} on {x.device} but the GP was conditioned on {train_x.dtype} "
                f"on {train_x.device}; expected the same"
            )
        self.gp.eval()
        self.likelihood.eval()
        with (
            self._settings(x.dtype),
            gpytorch.settings.fast_pred_var(False),
            warnings.catch_warnings(),
        ):
            # predicting at the training inputs is legitimate (e.g. smoothing)
            warnings.simplefilter("ignore", GPInputWarning)
            dist = self.gp(x)
            if noisy:
                dist = self.likelihood(dist)
            if joint:
                return _joint_predictive(dist, self.y_dim, self.jitter, self.max_jitter_tries)
            return _marginal_predictive(dist, self.y_dim)

    def forward(
        self, x: Tensor, *, noisy: bool = True, joint: bool = False
    ) -> Normal | MultivariateNormal:
        """Same as :meth:`predict`."""
        return self.predict(x, noisy=noisy, joint=joint)
