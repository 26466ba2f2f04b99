"""A small full-batch optimisation loop with a progress bar, for GP hyperparameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm


def _optimize(
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[], Tensor],
    *,
    steps: int,
    lr: float,
    optimizer: str,
    progress: bool,
    desc: str,
) -> list[float]:
    """Minimise ``loss_fn()`` over ``parameters``; return the loss after each step.

    ``optimizer`` is ``"adam"`` (``steps`` Adam steps) or ``"lbfgs"`` (``steps`` L-BFGS
    iterations with a strong-Wolfe line search). A non-finite loss raises a ValueError.
    """
    params = [p for p in parameters if p.requires_grad]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r}; expected an int >= 0")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r}; expected a positive number")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer={optimizer!r}; expected 'adam' or 'lbfgs'")
    history: list[float] = []
    if not params or steps == 0:
        return history

    def _checked_loss() -> Tensor:
        loss = loss_fn()
        if not bool(torch.isfinite(loss)):
            raise ValueError(
                f"the training loss became {float(loss)} at step {len(history)}; lower lr or "
                "check the data scale"
            )
        return loss

    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
        for _ in bar:
            opt.zero_grad(set_to_none=True)
            loss = _checked_loss()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    else:
        opt = torch.optim.LBFGS(
            params, lr=lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            loss = _checked_loss()
            loss.backward()
            return loss

        for _ in bar:
            loss = opt.step(closure)
            history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    bar.close()
    return history
