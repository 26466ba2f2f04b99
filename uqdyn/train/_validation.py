"""Validation metrics of the fit loop: mean loss, CRPS and NLL over masked points."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn.predictive import Predictive

from ._data import move_to_device


def check_scalar_loss(loss: Any, where: str) -> Tensor:
    """Raise unless ``loss`` is a 0-d floating Tensor."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss_fn returned a {type(loss).__name__} {where}; expected a 0-d Tensor")
    if loss.ndim != 0 or not loss.is_floating_point():
        raise ValueError(
            f"loss_fn returned a Tensor of shape {tuple(loss.shape)} and dtype {loss.dtype} "
            f"{where}; expected a 0-d floating Tensor (reduce it, e.g. with .mean())"
        )
    return loss


def _expand_mask(mask: Any, shape: torch.Size, device: torch.device) -> Tensor | None:
    """The boolean mask ``(batch, points)`` broadcast over trailing axes to ``shape``."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"predict_fn returned a mask of type {type(mask).__name__}"
            f"{'' if not isinstance(mask, Tensor) else ' and dtype ' + str(mask.dtype)}; "
            "expected a boolean Tensor or None"
        )
    if mask.ndim > len(shape) or tuple(mask.shape) != tuple(shape[: mask.ndim]):
        raise ValueError(
            f"predict_fn returned a mask of shape {tuple(mask.shape)}; expected the leading "
            f"axes of the predicted shape {tuple(shape)}"
        )
    mask = mask.to(device)
    return mask.reshape(tuple(mask.shape) + (1,) * (len(shape) - mask.ndim)).expand(shape)


def _nll_sum_and_count(
    log_prob: Tensor, shape: torch.Size, mask: Tensor | None
) -> tuple[float, int]:
    """Sum of ``-log p`` and number of points covered, for elementwise or joint densities."""
    if log_prob.shape == shape:  # elementwise density
        if mask is None:
            return -float(log_prob.double().sum()), log_prob.numel()
        return -float(log_prob[mask].double().sum()), int(mask.sum())
    if len(shape) >= 1 and log_prob.shape == shape[:-1]:  # joint density over the last axis
        points = int(shape[-1])
        if mask is None:
            return -float(log_prob.double().sum()), log_prob.numel() * points
        rows_all = mask.all(dim=-1)
        partial = mask.any(dim=-1) & ~rows_all
        if bool(partial.any()):
            raise ValueError(
                f"predict_fn returned a joint density over the last axis (log_prob shape "
                f"{tuple(log_prob.shape)}) with a mask that keeps only part of "
                f"{int(partial.sum())} rows; expected each row fully kept or fully masked "
                "(restrict the Predictive to the kept points instead)"
            )
        return -float(log_prob[rows_all].double().sum()), int(rows_all.sum()) * points
    raise ValueError(
        f"Predictive.log_prob returned shape {tuple(log_prob.shape)}; expected the predicted "
        f"shape {tuple(shape)} or, for a joint density, {tuple(shape[:-1])}"
    )


def evaluate(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batches: Iterable[Any],
    predict_fn: Callable[[nn.Module, Any], tuple[Any, Any, Any]] | None,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> tuple[dict[str, float | None], bool]:
    """Validation metrics over all batches, with gradients off and the model in eval mode.

    ``val_loss`` is the mean of ``loss_fn`` over batches; ``val_crps`` and ``val_nll`` are
    means over all kept (masked-in) points of all batches: ``sum(score * mask) / sum(mask)``.
    ``val_nll`` is NaN when the Predictive has no density; the second value says whether it
    had one. ``reduce`` (data-parallel fits) sums the per-rank sums and counts over the
    ranks before the means are taken, so the metrics are those of all ranks' batches.
    """
    was_training = model.training
    model.eval()
    loss_sum, n_batches = 0.0, 0
    crps_sum, crps_count = 0.0, 0
    nll_sum, nll_count, nll_defined = 0.0, 0, True
    try:
        with torch.no_grad():
            for raw in batches:
                batch = move_to_device(raw, device)
                with autocast():
                    loss = check_scalar_loss(loss_fn(model, batch), "on a validation batch")
                loss_sum += float(loss.detach())
                n_batches += 1
                if predict_fn is None:
                    continue
                with autocast():
                    out = predict_fn(model, batch)
                if not isinstance(out, tuple) or len(out) != 3:
                    raise TypeError(
                        f"predict_fn returned a {type(out).__name__}; expected a tuple "
                        "(Predictive, y_true, mask_or_None)"
                    )
                pred, y_true, mask = out
                if not isinstance(pred, Predictive):
                    raise TypeError(
                        f"predict_fn returned a {type(pred).__name__} first; expected a "
                        "uqdyn.predictive.Predictive"
                    )
                if not isinstance(y_true, Tensor):
                    raise TypeError(
                        f"predict_fn returned y_true of type {type(y_true).__name__}; "
                        "expected a Tensor"
                    )
                if pred.dtype in (torch.float16, torch.bfloat16):
                    pred = pred.to(torch.float32)
                y = y_true.to(device=pred.device, dtype=pred.dtype)
                crps = pred.crps(y)
                keep = _expand_mask(mask, crps.shape, crps.device)
                if keep is None:
                    crps_sum += float(crps.double().sum())
                    crps_count += crps.numel()
                else:
                    crps_sum += float(crps[keep].double().sum())
                    crps_count += int(keep.sum())
                if nll_defined:
                    try:
                        log_prob = pred.log_prob(y)
                    except NotImplementedError:
                        nll_defined = False
                        continue
                    batch_sum, batch_count = _nll_sum_and_count(log_prob, crps.shape, keep)
                    nll_sum += batch_sum
                    nll_count += batch_count
    finally:
        model.train(was_training)
    if reduce is not None:
        totals = reduce(
            [loss_sum, n_batches, crps_sum, crps_count, nll_sum, nll_count, not nll_defined]
        )
        loss_sum, crps_sum, nll_sum = totals[0], totals[2], totals[4]
        n_batches, crps_count, nll_count = int(totals[1]), int(totals[3]), int(totals[5])
        nll_defined = totals[6] == 0
    if n_batches == 0:
        raise ValueError("val_data yielded no batches; expected at least one validation batch")
    metrics: dict[str, float | None] = {
        "val_loss": loss_sum / n_batches,
        "val_crps": None,
        "val_nll": None,
    }
    if predict_fn is not None:
        if crps_count == 0:
            raise ValueError("predict_fn masks kept no validation points; expected at least one")
        metrics["val_crps"] = crps_sum / crps_count
        metrics["val_nll"] = nll_sum / nll_count if nll_defined and nll_count else math.nan
    return metrics, nll_defined
