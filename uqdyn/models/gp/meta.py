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

from ._common import _check_positive_int
from .context import _stack_predictives, _task_arrays
from .exact import ExactGP

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
    mask_context=...)`` or ``model(task)``, and ``model.loss(task)`` for
    :func:`uqdyn.train.fit`.

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

    def loss(self, task: Any) -> Tensor:
        """Negative mean (over tasks) log marginal likelihood per point of all real points.

        Parameters
        ----------
        task : uqdyn.data.Task
            Padded batch with ``x_* (B, N, x_dim)``, ``y_* (B, N, y_dim)``, masks ``(B, N)``.

        Returns
        -------
        Tensor, shape ()
        """
        xc, yc, _, mask_c = _task_arrays(
            task.x_context, task.y_context, task.x_target, task.mask_context, self.x_dim, self.y_dim
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
        self.gp.to(device=xc.device, dtype=xc.dtype)
        total = xc.new_zeros(())
        for b in range(xc.shape[0]):
            x = torch.cat([xc[b][mask_c[b]], xt[b][mask_t[b]]])
            y = torch.cat([yc[b][mask_c[b]], yt[b][mask_t[b]]])
            x, keep = _unique_rows(x)
            self.gp.condition(x, y[keep])
            total = total - self.gp.log_marginal_likelihood() / (x.shape[0] * self.y_dim)
        return total / xc.shape[0]

    def fit(
        self,
        train_data: Callable[[torch.Generator], Any] | Iterable[Any],
        *,
        steps: int = 200,
        lr: float = 0.05,
        val_data: Callable[[torch.Generator], Any] | Iterable[Any] | None = None,
        progress: bool = True,
        **fit_kwargs: Any,
    ) -> FitResult:
        """Meta-learn the shared hyperparameters with :func:`uqdyn.train.fit` on :meth:`loss`.

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
        progress : bool
            Show a tqdm progress bar.
        **fit_kwargs
            Further options of :func:`uqdyn.train.fit` (``optimizer``, ``scheduler``,
            ``early_stopping``, ``checkpoint_dir``, ``device``, ``seed``, ...).

        Returns
        -------
        uqdyn.train.FitResult
        """
        from uqdyn.train import fit

        fit_kwargs.setdefault("predict_fn", _predict_targets if val_data is not None else None)
        return fit(
            self,
            _meta_loss,
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
            self.gp.condition(xc[b][mask[b]], yc[b][mask[b]])
            parts.append(self.gp.predict(xt[b], noisy=self.noisy, joint=self.joint))
        return _stack_predictives(parts, self.joint)


def _meta_loss(model: nn.Module, task: Any) -> Tensor:
    if not isinstance(model, MetaGP):
        raise TypeError(f"model is a {type(model).__name__}; expected a MetaGP")
    return model.loss(task)


def _predict_targets(model: nn.Module, task: Any) -> tuple[Any, Tensor, Tensor]:
    """Predictive, observed targets and mask in matching shapes (for validation)."""
    if not isinstance(model, MetaGP):
        raise TypeError(f"model is a {type(model).__name__}; expected a MetaGP")
    predictive = model(task)
    y, mask = task.y_target, task.mask_target
    if model.joint:
        y = y.reshape(y.shape[0], -1)
        mask = mask.repeat_interleave(model.y_dim, dim=1)
    return predictive, y, mask


def _unique_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Drop repeated rows of ``x (N, d)`` (targets that repeat context points); keep order."""
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), x.shape[0], device=x.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(x.shape[0], device=x.device), "amin")
    keep = torch.sort(first).values
    return x[keep], keep
