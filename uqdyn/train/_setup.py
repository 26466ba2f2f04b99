"""Argument checks and the optimizer / scheduler / device factories of the fit loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from uqdyn._checks import as_float, as_int

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "lbfgs": torch.optim.LBFGS,
}
SCHEDULERS = ("cosine", "step")
MONITORS = ("val_loss", "val_crps", "val_nll")


def check_int(value: Any, name: str, minimum: int, *, optional: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (``None`` allowed when ``optional``).

    NumPy integers and 0-d integer arrays/tensors are accepted (see :func:`uqdyn._checks.as_int`).
    """
    if value is None and optional:
        return None
    try:
        return as_int(value, name, minimum=minimum)
    except TypeError as error:
        if optional:
            raise TypeError(f"{error} or None") from None
        raise


def check_float(value: Any, name: str, *, positive: bool, optional: bool = False) -> float | None:
    """``value`` as a finite float, > 0 when ``positive`` else >= 0.

    NumPy scalars and 0-d arrays/tensors are accepted (see :func:`uqdyn._checks.as_float`).
    """
    if value is None and optional:
        return None
    try:
        return as_float(value, name, positive=positive, nonnegative=not positive)
    except TypeError as error:
        if optional:
            raise TypeError(f"{error} or None") from None
        raise


def make_optimizer(
    optimizer: str | Callable[[list[nn.Parameter]], Optimizer],
    params: list[nn.Parameter],
    lr: float,
    weight_decay: float,
) -> Optimizer:
    """A named optimizer (``adam``, ``adamw``, ``sgd``, ``lbfgs``) or the result of a factory."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
        if optimizer == "lbfgs":
            if weight_decay != 0:
                raise ValueError(
                    f"weight_decay={weight_decay} with optimizer='lbfgs'; expected 0 (L-BFGS "
                    "has no weight decay: add a penalty to the loss instead)"
                )
            # One iteration per fit step, with a strong-Wolfe line search: the full-batch
            # optimiser of GP hyperparameters.
            return torch.optim.LBFGS(
                params, lr=lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe"
            )
        return OPTIMIZERS[optimizer](params, lr=lr, weight_decay=weight_decay)
    if not callable(optimizer):
        raise TypeError(
            f"optimizer is a {type(optimizer).__name__}; expected one of {sorted(OPTIMIZERS)} "
            "or a callable params -> torch.optim.Optimizer"
        )
    made = optimizer(params)
    if not isinstance(made, Optimizer):
        raise TypeError(
            f"optimizer(params) returned a {type(made).__name__}; expected a torch.optim.Optimizer"
        )
    return made


def make_scheduler(
    scheduler: str | Callable[[Optimizer], Any] | None, optimizer: Optimizer, steps: int
) -> LRScheduler | ReduceLROnPlateau | None:
    """``None``, ``"cosine"`` (to 0 over ``steps``), ``"step"`` (x0.1 every ``steps // 3``) or
    the result of a factory ``optimizer -> scheduler``."""
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        if scheduler == "cosine":
            return CosineAnnealingLR(optimizer, T_max=steps)
        if scheduler == "step":
            return StepLR(optimizer, step_size=max(1, steps // 3), gamma=0.1)
        raise ValueError(
            f"scheduler={scheduler!r}; expected None, one of {list(SCHEDULERS)} or a callable "
            "optimizer -> LRScheduler"
        )
    if not callable(scheduler):
        raise TypeError(
            f"scheduler is a {type(scheduler).__name__}; expected None, one of "
            f"{list(SCHEDULERS)} or a callable optimizer -> LRScheduler"
        )
    made = scheduler(optimizer)
    if not isinstance(made, (LRScheduler, ReduceLROnPlateau)):
        raise TypeError(
            f"scheduler(optimizer) returned a {type(made).__name__}; expected a "
            "torch.optim.lr_scheduler.LRScheduler or ReduceLROnPlateau"
        )
    return made
