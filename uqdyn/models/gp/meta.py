"""Kernel hyperparameters meta-learned across many tasks, with the context/target interface."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from gpytorch.kernels import Kernel
from gpytorch.means import Mean
from torch import Tensor, nn

from uqdyn.predictive import MultivariateNormal, Normal
from uqdyn.train import FitResult

from ._common import _check_positive_int, _check_training_data
from .context import _stack_predictives, _targets, _task_arrays
from .exact import ExactGP, _data_variance, _init_mean

__all__ = ["MetaGP"]


class MetaGP(nn.Module):
    r"""GP whose hyperparameters are shared by, and learned from, many tasks.

    One set of kernel, mean and noise hyperparameters :math:`\theta` is fit by maximising the
    average log marginal likelihood of the tasks' points (context and targets),

    .. math:: \mathcal L(\theta) = \frac{1}{B} \sum_{b=1}^{B} \frac{1}{n_b}
       \log p_\theta(y^{(b)} \mid x^{(b)}),

    (empirical Bayes across tasks, "meta-learning" the prior). At prediction time the GP
    conditions on each task's context with the shared :math:`\theta`, which needs no per-task
    optimisation and is well defined even for a handful of context points. The interface is
    that of the neural processes: ``model(x_context, y_context, x_target,
    mask_context=...)`` or ``model(task)``; it follows the training contract of
    :func:`uqdyn.train.fit` with a :class:`uqdyn.data.Task` as the batch: ``model.loss(task)``
    and ``model.predict_batch(task)`` (the targets' predictive from the context). Masked
    points (padding, or NaN where nothing was observed) never enter a prediction or the loss.

    **Starting values from the data.** :meth:`initialize_from` sets :math:`\theta` from the
    pooled real points of training tasks, as :meth:`ExactGP.fit` does from its data:
    lengthscales at a tenth of the tasks' mean input range, a constant mean at the pooled
    mean, output scales at the pooled mean squared deviation from the prior mean (the
    variance for a constant mean, the second moment for a zero mean, the residual of a
    :class:`PhysicsMean`) and the noise (unless ``noise`` is given) at 1% of the pooled
    variance of the outputs. :meth:`fit` calls it on the first training batch (the batch of
    :func:`uqdyn.train.fit`'s first step) unless the model was initialised already or
    ``init_from_data=False``; the buffer ``initialized`` records it, so a state dict loaded
    from a trained model is not re-initialised. Without it the hyperparameters would start
    at gpytorch's defaults (lengthscales, output scale and noise about 0.69 whatever the
    units of the data).

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    kernel : str or gpytorch Kernel
        :func:`make_kernel` specification.
    mean : {"zero", "constant"} or gpytorch Mean
        Shared prior mean (e.g. a :class:`PhysicsMean` whose parameters are meta-learned).
    noisy, joint : bool
        As for :class:`ContextGP`.
    **gp_kwargs
        Passed to :class:`ExactGP`.

    References
    ----------
    J. Rothfuss, V. Fortuin, M. Josifoski and A. Krause, "PACOH: Bayes-optimal meta-learning
    with PAC-guarantees", ICML 2021 (meta-learned GP priors); M. Garnelo et al., "Neural
    processes", 2018 (the context/target interface).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.data import TaskSampler
    >>> from uqdyn.models.gp import MetaGP
    >>> t = torch.linspace(0, 5, 40)
    >>> values = torch.sin(t[None, :, None] + torch.rand(16, 1, 1) * 6)
    >>> sampler = TaskSampler(values, t, num_context=(4, 10), num_target=10)
    >>> model = MetaGP(x_dim=1)
    >>> result = model.fit(lambda g: sampler.sample(4, generator=g), steps=20, progress=False)
    >>> model(sampler.sample(2, generator=torch.Generator().manual_seed(1))).batch_shape
    torch.Size([2, 20, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 1,
        *,
        kernel: str | Kernel = "rbf",
        mean: str | Mean = "zero",
        noisy: bool = True,
        joint: bool = False,
        **gp_kwargs: Any,
    ) -> None:
        super().__init__()
        self.x_dim = _check_positive_int(x_dim, "x_dim")
        self.y_dim = _check_positive_int(y_dim, "y_dim")
        self.gp = ExactGP(x_dim, y_dim, kernel=kernel, mean=mean, **gp_kwargs)
        self.noisy = bool(noisy)
        self.joint = bool(joint)
        self.initialized: Tensor
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

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
        # a state dict saved before the flag existed comes from a trained model
        state_dict.setdefault(prefix + "initialized", torch.ones((), dtype=torch.bool))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _real_points(self, task: Any) -> list[tuple[Tensor, Tensor]]:
        """The real (unmasked) points ``(x (n_b, x_dim), y (n_b, y_dim))`` of each task of a
        batch, context and targets together, repeated inputs dropped."""
        xc, yc, _, mask_c = _task_arrays(
            task.x_context,
            task.y_context,
            task.x_target,
            task.mask_context,
            self.x_dim,
            self.y_dim,
            check_targets=False,
        )
        xt, yt, _, mask_t = _task_arrays(
            task.x_target,
            task.y_target,
            task.x_target,
            task.mask_target,
            self.x_dim,
            self.y_dim,
            part="target",
        )
        points = []
        for b in range(xc.shape[0]):
            x = torch.cat([xc[b][mask_c[b]], xt[b][mask_t[b]]])
            y = torch.cat([yc[b][mask_c[b]], yt[b][mask_t[b]]])
            x, keep = _unique_rows(x)
            points.append((x, y[keep]))
        return points

    def initialize_from(self, tasks: Any) -> MetaGP:
        r"""Start the shared hyperparameters from the pooled real points of training tasks.

        With :math:`r_d` the mean over the tasks of each task's input range in dimension
        ``d``, :math:`y_i` the pooled outputs and :math:`m` the prior mean (a constant mean
        is first set to the pooled mean :math:`\bar y`): lengthscales :math:`r_d / 10`
        (periodic kernels 1), output scales :math:`s_j = \overline{(y_{ij} - m(x_i))^2}`
        (the mean over the pooled points, at least 1e-6) and the noise (unless ``noise`` was
        given) 1% of the pooled variance of the outputs (averaged over outputs), as
        :meth:`ExactGP.fit` does for one data set.

        Parameters
        ----------
        tasks : uqdyn.data.Task or iterable of Task
            Padded batches ``x_* (B, N, x_dim)``, ``y_* (B, N, y_dim)``, masks ``(B, N)``;
            context and target points are pooled.

        Returns
        -------
        MetaGP
            ``self``, moved to the device and dtype of the tasks, with ``initialized`` set.
        """
        batches = [tasks] if hasattr(tasks, "x_context") else list(tasks)
        if not batches:
            raise ValueError("tasks is empty; expected a Task or a non-empty iterable of Tasks")
        points = [pair for task in batches for pair in self._real_points(task)]
        x_all = torch.cat([x for x, _ in points])
        y_all = torch.cat([y for _, y in points])
        self.gp.to(device=x_all.device, dtype=x_all.dtype)
        spans = [x.amax(0) - x.amin(0) for x, _ in points if x.shape[0] > 1]
        span = torch.stack(spans).mean(0) if spans else x_all.new_ones(self.x_dim)
        mean_module = self.gp.gp.mean_module
        _init_mean(mean_module, y_all)
        with torch.no_grad():
            prior = mean_module(x_all)
            prior = prior.unsqueeze(-1) if prior.dim() == 1 else prior.transpose(-1, -2)
            variance = (y_all - prior).square().mean(0).clamp_min(1e-6)
        self.gp._start_from_data(
            x_all, y_all, span=span.clamp_min(1e-3), variance=variance, noise=_data_variance(y_all)
        )
        self.gp._fitted = True
        self.initialized.fill_(True)
        return self

    def loss(self, task: Any) -> Tensor:
        """Negative mean (over tasks) log marginal likelihood per point of all real points.

        Parameters
        ----------
        task : uqdyn.data.Task
            Padded batch with ``x_* (B, N, x_dim)``, ``y_* (B, N, y_dim)``, masks ``(B, N)``;
            masked points (padding, NaN) are left out.

        Returns
        -------
        Tensor, shape ()
        """
        points = self._real_points(task)
        first = points[0][0]
        self.gp.to(device=first.device, dtype=first.dtype)
        total = first.new_zeros(())
        for x, y in points:
            self.gp._set_data(x, y, keep=False)
            total = total - self.gp.log_marginal_likelihood() / (x.shape[0] * self.y_dim)
        return total / len(points)

    def fit(
        self,
        train_data: Callable[[torch.Generator], Any] | Iterable[Any],
        *,
        steps: int = 200,
        lr: float = 0.05,
        val_data: Callable[[torch.Generator], Any] | Iterable[Any] | None = None,
        init_from_data: bool = True,
        progress: bool = True,
        **fit_kwargs: Any,
    ) -> FitResult:
        """Meta-learn the shared hyperparameters with :func:`uqdyn.train.fit` on :meth:`loss`.

        Unless the model is initialised already (buffer ``initialized``), the
        hyperparameters first start from the data of the first training batch, the one
        :func:`uqdyn.train.fit` draws for its first step (see :meth:`initialize_from`).

        Parameters
        ----------
        train_data : callable or iterable
            ``generator -> Task`` (e.g. ``lambda g: sampler.sample(8, generator=g)``) or an
            iterable of Tasks (cycled).
        steps : int
            Optimisation steps, one task batch each.
        lr : float
            Learning rate (Adam by default).
        val_data : callable or iterable, optional
            Validation tasks; validation also reports the CRPS and negative log likelihood of
            the target predictions.
        init_from_data : bool
            Start from the first training batch's data (default); ``False`` keeps the values
            set (gpytorch's defaults for a fresh model).
        progress : bool
            Report progress (see :func:`uqdyn.train.fit`).
        **fit_kwargs
            Further options of :func:`uqdyn.train.fit` (``optimizer``, ``scheduler``,
            ``early_stopping``, ``checkpoint_dir``, ``device``, ``seed``, ...).

        Returns
        -------
        uqdyn.train.FitResult
        """
        from uqdyn.train import fit

        if init_from_data and not bool(self.initialized):
            self.initialize_from(_first_batch(train_data, int(fit_kwargs.get("seed", 0))))
        return fit(
            self,
            train_data,
            steps=steps,
            lr=lr,
            val_data=val_data,
            progress=progress,
            **fit_kwargs,
        )

    def forward(
        self,
        x_context: Any,
        y_context: Tensor | None = None,
        x_target: Tensor | None = None,
        *,
        mask_context: Tensor | None = None,
    ) -> Normal | MultivariateNormal:
        """Condition on each task's context with the shared hyperparameters; predict targets.

        Parameters and returns are those of :meth:`ContextGP.forward`: ``Normal (B, Nt,
        y_dim)`` or, with ``joint=True``, ``MultivariateNormal (B, Nt * y_dim)``.
        """
        xc, yc, xt, mask = _task_arrays(
            x_context, y_context, x_target, mask_context, self.x_dim, self.y_dim
        )
        self.gp.to(device=xc.device, dtype=xc.dtype)
        parts = []
        for b in range(xc.shape[0]):
            x, y = _check_training_data(xc[b][mask[b]], yc[b][mask[b]], self.x_dim, self.y_dim)
            self.gp._set_data(x, y, keep=False)
            parts.append(self.gp.predict(xt[b], noisy=self.noisy, joint=self.joint))
        return _stack_predictives(parts, self.joint)

    def predict_batch(self, task: Any) -> tuple[Normal | MultivariateNormal, Tensor, Tensor]:
        """Predictive of a task batch's targets from its context, for validation.

        Returns
        -------
        tuple
            ``(Normal (B, Nt, y_dim), y_target, mask_target (B, Nt))`` or, with
            ``joint=True``, ``(MultivariateNormal (B, Nt * y_dim), y_target (B, Nt * y_dim),
            mask (B, Nt * y_dim))``.
        """
        return _targets(self(task), task, self.joint, self.y_dim)


def _first_batch(data: Callable[[torch.Generator], Any] | Iterable[Any], seed: int) -> Any:
    """The batch :func:`uqdyn.train.fit` uses at its first step with this ``seed``.

    A callable gets a generator seeded with ``seed``; an iterable's first batch is drawn
    with torch's global RNG seeded with ``seed`` (as ``fit`` does; a shuffling DataLoader
    draws its order from it), the caller's RNG state being restored afterwards.
    """
    if callable(data):
        return data(torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return next(iter(data))
        except StopIteration:
            raise ValueError("train_data yielded no batches; expected at least one") from None


def _unique_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Drop repeated rows of ``x (N, d)`` (targets that repeat context points); keep order."""
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), x.shape[0], device=x.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(x.shape[0], device=x.device), "amin")
    keep = torch.sort(first).values
    return x[keep], keep
