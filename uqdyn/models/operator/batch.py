"""The batch of the operator forecasters: pairs of gridded fields, the later one masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["FieldPairBatch"]


@dataclass(frozen=True)
class FieldPairBatch:
    """Input fields and the fields one step later: what ``loss`` and ``predict_batch`` take.

    Attributes
    ----------
    inputs : Tensor, shape (batch, in_channels, height, width)
        Complete fields on a periodic grid (an operator needs every pixel; a non-finite input
        is refused).
    targets : Tensor, shape (batch, out_channels, height, width)
        The fields to forecast, on the same grid. Entries outside ``mask`` may hold anything
        (NaN included); they never change a loss or a score.
    mask : Tensor of bool, shape (batch, height, width) or (batch, out_channels, height, width), optional
        ``True`` where a target is observed (a pixel mask applies to every channel).
        ``None`` (default): every target observed.

    Examples
    --------
    >>> import torch
    >>> batch = FieldPairBatch(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    >>> batch.to("cpu").targets.shape
    torch.Size([2, 1, 8, 8])
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor | None = None

    def to(self, device: torch.device | str) -> FieldPairBatch:
        """The batch on ``device`` (what :func:`uqdyn.train.fit` calls)."""
        mask = None if self.mask is None else self.mask.to(device)
        return FieldPairBatch(self.inputs.to(device), self.targets.to(device), mask)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def check_fields(inputs: Any, in_channels: int, dtype: torch.dtype | None) -> Tensor:
    """``inputs`` checked: a finite floating ``(batch, in_channels, H, W)`` tensor of ``dtype``."""
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise TypeError(
            "inputs must be a floating torch.Tensor of shape (batch, in_channels, height, "
            f"width), got {_describe(inputs)}"
        )
    if inputs.ndim != 4 or inputs.shape[1] != in_channels or inputs.shape[0] < 1:
        raise ValueError(
            f"inputs must have shape (batch, {in_channels}, height, width) for this model, got "
            f"{tuple(inputs.shape)}"
        )
    if dtype is not None and inputs.dtype != dtype:
        raise TypeError(
            f"inputs are {inputs.dtype} but the model's parameters are {dtype}; expected the "
            f"same dtype (convert the model with .to({inputs.dtype}) or the data)"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(
            "inputs hold NaN or infinite values; an operator needs complete, finite input "
            "fields (fill or drop the samples with gaps first)"
        )
    return inputs


def check_batch(
    batch: Any, in_channels: int, out_channels: int, dtype: torch.dtype | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(inputs, targets, observed)`` of a :class:`FieldPairBatch`, checked.

    ``observed`` is the boolean mask expanded to the targets' shape ``(batch, out_channels,
    H, W)``, or ``None`` when every target is observed. Raises ``TypeError`` for wrong types
    or dtypes and ``ValueError`` (naming NaN / non-finite values) for wrong shapes,
    non-finite inputs or observed targets, or a mask that observes nothing.
    """
    if not isinstance(batch, FieldPairBatch):
        raise TypeError(
            "batch must be a uqdyn.models.operator.FieldPairBatch(inputs, targets, mask), got "
            f"{type(batch).__name__}"
        )
    inputs = check_fields(batch.inputs, in_channels, dtype)
    targets = batch.targets
    if not isinstance(targets, Tensor) or targets.dtype != inputs.dtype:
        raise TypeError(
            f"batch.targets must be a Tensor of the inputs' dtype {inputs.dtype}, got "
            f"{_describe(targets)}"
        )
    expected = (inputs.shape[0], out_channels, *inputs.shape[-2:])
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"batch.targets must have shape {expected} (batch, out_channels, height, width) "
            f"for these inputs, got {tuple(targets.shape)}"
        )
    mask = batch.mask
    observed: Tensor | None = None
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                "batch.mask must be a bool Tensor of shape (batch, height, width) or (batch, "
                f"out_channels, height, width), or None; got {_describe(mask)}"
            )
        pixel = (expected[0], *expected[2:])
        if tuple(mask.shape) == pixel:
            observed = mask.unsqueeze(1).expand(expected)
        elif tuple(mask.shape) == expected:
            observed = mask
        else:
            raise ValueError(
                f"batch.mask must have shape {pixel} or {expected}, got {tuple(mask.shape)}"
            )
        if not bool(observed.any()):
            raise ValueError("batch.mask observes no target; expected at least one True entry")
        if not bool(torch.isfinite(targets[observed]).all()):
            raise ValueError(
                "batch.targets hold NaN or infinite values at observed pixels; expected finite "
                "observations (mark missing ones False in batch.mask)"
            )
    elif not bool(torch.isfinite(targets).all()):
        raise ValueError(
            "batch.targets hold NaN or infinite values; expected finite targets (pass "
            "mask=torch.isfinite(targets) to leave the missing ones out)"
        )
    return inputs, targets, observed
