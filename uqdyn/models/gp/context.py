"""Neural-process style context/target interface for GPs: fit on the context, predict targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import torch
from gpytorch.means import Mean
from torch import Tensor, nn

from uqdyn.predictive import MultivariateNormal, Normal

from ._common import _check_positive_int, _check_tensor
from .exact import ExactGP

__all__ = ["ContextGP"]

MeanSpec: TypeAlias = str | Mean | Callable[[], Mean]


def _check_finite_points(value: Tensor, mask: Tensor, name: str) -> None:
    """``ValueError`` naming the first real (unmasked) point of ``value (B, N, d)`` that has a
    NaN or infinite entry; masked points may hold anything."""
    bad = ~torch.isfinite(value).all(dim=-1) & mask
    if bool(bad.any()):
        b, n = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} point(s) with NaN or infinite values (first: task {b}, "
            f"point {n}); expected finite values at every real (unmasked) point: mask missing "
            "points instead"
        )


def _task_arrays(
    x_context: Any,
    y_context: Any,
    x_target: Any,
    mask_context: Any,
    x_dim: int,
    y_dim: int,
    part: str = "context",
    check_targets: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate a padded batch of tasks; a :class:`uqdyn.data.Task` may be passed first.

    ``part="target"`` validates ``(x_target, y_target, x_target, mask_target)`` instead, with
    those names in the messages (the target inputs then are checked at real points only);
    ``check_targets=False`` leaves ``x_target`` unchecked (a loss checks it with its mask).
    Masked points may hold anything, NaN included; they are never used. Returns the arrays
    and the mask ``(B, N)`` as given (callers select the real points with it).
    """
    xn, yn, mn = f"x_{part}", f"y_{part}", f"mask_{part}"
    if hasattr(x_context, "x_context") and hasattr(x_context, "mask_context"):
        task = x_context
        if y_context is not None or x_target is not None:
            raise TypeError("a Task was given; expected no y_context or x_target with it")
        x_context, y_context = task.x_context, task.y_context
        x_target, mask_context = task.x_target, task.mask_context
    xc = _check_tensor(x_context, xn)
    yc = _check_tensor(y_context, yn)
    xt = _check_tensor(x_target, "x_target")
    if xc.dim() != 3 or xc.shape[-1] != x_dim:
        raise ValueError(f"{xn} has shape {tuple(xc.shape)}; expected (B, N, {x_dim})")
    b, nc = xc.shape[:2]
    if yc.shape != (b, nc, y_dim):
        raise ValueError(f"{yn} has shape {tuple(yc.shape)}; expected ({b}, {nc}, {y_dim})")
    if xt.dim() != 3 or xt.shape[0] != b or xt.shape[-1] != x_dim:
        raise ValueError(f"x_target has shape {tuple(xt.shape)}; expected ({b}, Nt, {x_dim})")
    for name, t in ((yn, yc), ("x_target", xt)):
        if t.dtype != xc.dtype or t.device != xc.device:
            raise TypeError(
                f"{name} is {t.dtype} on {t.device} but {xn} is {xc.dtype} on "
                f"{xc.device}; expected the same as {xn}"
            )
    if mask_context is None:
        mask = torch.ones(b, nc, dtype=torch.bool, device=xc.device)
    else:
        if not isinstance(mask_context, Tensor) or mask_context.dtype != torch.bool:
            raise TypeError(
                f"{mn} is {getattr(mask_context, 'dtype', type(mask_context).__name__)}; "
                "expected a boolean tensor"
            )
        if mask_context.shape != (b, nc):
            raise ValueError(f"{mn} has shape {tuple(mask_context.shape)}; expected ({b}, {nc})")
        mask = mask_context.to(xc.device)
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel() and part == "context":
        raise ValueError(
            f"tasks {empty.tolist()} have no {part} points ({mn} all False); expected "
            "at least one per task"
        )
    _check_finite_points(xc, mask, xn)
    _check_finite_points(yc, mask, yn)
    if part == "context" and check_targets:
        _check_finite_points(
            xt, torch.ones(xt.shape[:2], dtype=torch.bool, device=xt.device), "x_target"
        )
    return xc, yc, xt, mask


def _stack_predictives(parts: list[Normal | MultivariateNormal], joint: bool) -> Any:
    if joint:
        return MultivariateNormal(
            torch.stack([p.mean for p in parts]),
            scale_tril=torch.stack([p.scale_tril for p in parts]),  # type: ignore[union-attr]
        )
    return Normal(
        torch.stack([p.mean for p in parts]), torch.stack([p.stddev for p in parts]), validate=False
    )


def _targets(
    predictive: Normal | MultivariateNormal, task: Any, joint: bool, y_dim: int
) -> tuple[Normal | MultivariateNormal, Tensor, Tensor]:
    """``(predictive, y_target, mask_target)`` of a task batch in matching shapes: a joint
    predictive over ``Nt * y_dim`` values gets the targets and the mask flattened alike."""
    y, mask = task.y_target, task.mask_target
    if joint:
        y = y.reshape(y.shape[0], -1)
        mask = mask.repeat_interleave(y_dim, dim=1)
    return predictive, y, mask


class ContextGP(nn.Module):
    r"""A GP with the neural-process interface: each task is fit on its context, then predicts.

    For task ``b`` a fresh :class:`ExactGP` (independent outputs) fits its hyperparameters
    by marginal likelihood on the real context points :math:`(x_c, y_c)` (``mask_context``),
    starting from that context's data (lengthscales a tenth of its input range, output
    scales its ``var(y)``, noise 1% of it, a constant mean its ``mean(y)``; see
    :meth:`ExactGP.fit`), and returns :math:`p(y_t | x_t, x_c, y_c)` at the targets. Masked
    context points (padding, or NaN where nothing was observed) are left out, so they never
    change a prediction; a NaN at a real point is an error naming the task and the point.
    The same study code thus runs GPs and neural processes; for hyperparameters shared
    across tasks see :class:`MetaGP`. :meth:`predict_batch` scores it like a trainable model
    in validation; it has no shared parameters, so it has no ``loss`` and
    :func:`uqdyn.train.fit` has nothing to train (each task's GP is fitted inside
    :meth:`forward`, with :meth:`ExactGP.fit`).

    Parameters
    ----------
    x_dim, y_dim : int
        Input and output dimensions.
    kernel : str
        :func:`make_kernel` specification.
    mean : {"zero", "constant"}, gpytorch Mean, or callable returning a Mean
        A callable (e.g. building a fresh :class:`PhysicsMean`) is called once per task, so
        each task learns its own physical parameters; a Mean instance would be shared and
        refitted task after task.
    steps, lr, optimizer :
        Per-task hyperparameter fit (see :meth:`ExactGP.fit`).
    noisy : bool
        Predict noisy observations (default) or the latent function.
    joint : bool
        ``False``: marginal ``Normal (B, Nt, y_dim)``; ``True``: ``MultivariateNormal`` over the
        ``Nt * y_dim`` target values of each task (point-major), batch shape
        ``(B, Nt * y_dim)``, for the energy score.
    **gp_kwargs
        Passed to :class:`ExactGP` (``min_noise``, ``noise``, ``jitter``, ...).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import ContextGP
    >>> xc = torch.rand(2, 10, 1); yc = torch.sin(6 * xc); xt = torch.rand(2, 7, 1)
    >>> ContextGP(x_dim=1, steps=30)(xc, yc, xt).batch_shape
    torch.Size([2, 7, 1])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 1,
        *,
        kernel: str = "rbf",
        mean: MeanSpec = "zero",
        steps: int = 100,
        lr: float = 0.1,
        optimizer: str = "adam",
        noisy: bool = True,
        joint: bool = False,
        **gp_kwargs: Any,
    ) -> None:
        super().__init__()
        self.x_dim = _check_positive_int(x_dim, "x_dim")
        self.y_dim = _check_positive_int(y_dim, "y_dim")
        self.kernel = kernel
        self.mean = mean
        self.steps = _check_positive_int(steps, "steps", 0)
        self.lr = lr
        self.optimizer = optimizer
        self.noisy = bool(noisy)
        self.joint = bool(joint)
        self.gp_kwargs = gp_kwargs
        ExactGP(x_dim, y_dim, kernel=kernel, **gp_kwargs)  # validate the options early

    def _new_gp(self) -> ExactGP:
        mean = self.mean
        if callable(mean) and not isinstance(mean, (str, Mean)):
            mean = mean()
        return ExactGP(self.x_dim, self.y_dim, kernel=self.kernel, mean=mean, **self.gp_kwargs)

    def forward(
        self,
        x_context: Any,
        y_context: Tensor | None = None,
        x_target: Tensor | None = None,
        *,
        mask_context: Tensor | None = None,
    ) -> Normal | MultivariateNormal:
        """Predict the targets of each task from its context.

        Parameters
        ----------
        x_context : Tensor, shape (B, Nc, x_dim), or a :class:`uqdyn.data.Task`
        y_context : Tensor, shape (B, Nc, y_dim)
        x_target : Tensor, shape (B, Nt, x_dim)
        mask_context : Tensor of bool, shape (B, Nc), optional
            ``True`` for real context points (default: all).

        Returns
        -------
        Normal of shape (B, Nt, y_dim), or MultivariateNormal of shape (B, Nt * y_dim)
            Padded target rows get predictions too; mask them when scoring.
        """
        xc, yc, xt, mask = _task_arrays(
            x_context, y_context, x_target, mask_context, self.x_dim, self.y_dim
        )
        parts = []
        for b in range(xc.shape[0]):
            gp = self._new_gp()
            with torch.enable_grad():  # the per-task fit needs gradients, even under no_grad
                gp.fit(
                    xc[b][mask[b]],
                    yc[b][mask[b]],
                    steps=self.steps,
                    lr=self.lr,
                    optimizer=self.optimizer,
                    progress=False,
                )
            with torch.no_grad():
                parts.append(gp.predict(xt[b], noisy=self.noisy, joint=self.joint))
        return _stack_predictives(parts, self.joint)

    def predict_batch(self, task: Any) -> tuple[Normal | MultivariateNormal, Tensor, Tensor]:
        """Predictive of a task batch's targets (each task's GP fitted on its context).

        Returns
        -------
        tuple
            ``(Normal (B, Nt, y_dim), y_target, mask_target (B, Nt))`` or, with
            ``joint=True``, ``(MultivariateNormal (B, Nt * y_dim), y_target (B, Nt * y_dim),
            mask (B, Nt * y_dim))``.
        """
        return _targets(self(task), task, self.joint, self.y_dim)
