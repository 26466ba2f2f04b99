"""The batch of every hybrid model: observed trajectories on a common time grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TrajectoryBatch"]


@dataclass(frozen=True)
class TrajectoryBatch:
    """Observed trajectories: what ``loss`` and ``predict_batch`` of a hybrid model take.

    Row ``b`` starts at its initial state ``trajectories[b, 0]`` (always observed); a model
    rolls it out over ``times`` and is scored on the later times where ``mask`` is true.

    Attributes
    ----------
    times : Tensor, shape (time,)
        The common time grid, strictly increasing, ``time >= 2``.
    trajectories : Tensor, shape (batch, time, *state_shape)
        The observed states. Entries at unobserved times may hold anything (NaN included).
    mask : Tensor of bool, shape (batch, time), optional
        ``True`` where a state is observed (sequences of different lengths, missing times).
        ``mask[:, 0]`` must be true. ``None`` (default): everything observed.

    Examples
    --------
    >>> import torch
    >>> batch = TrajectoryBatch(torch.linspace(0, 1, 4), torch.zeros(3, 4, 2))
    >>> batch.initial_state.shape
    torch.Size([3, 2])
    """

    times: Tensor
    trajectories: Tensor
    mask: Tensor | None = None

    @property
    def initial_state(self) -> Tensor:
        """``trajectories[:, 0]``, shape ``(batch, *state_shape)``."""
        return self.trajectories[:, 0]

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        """The batch on ``device`` (what :func:`uqdyn.train.fit` calls)."""
        mask = None if self.mask is None else self.mask.to(device)
        return TrajectoryBatch(self.times.to(device), self.trajectories.to(device), mask)


def check_batch(batch: Any, model: nn.Module, state_shape: tuple[int, ...]) -> TrajectoryBatch:
    """Validate ``batch`` for ``model`` (states of ``state_shape``); times in the states' dtype.

    Raises ``TypeError`` for a batch that is not a :class:`TrajectoryBatch` of floating
    tensors or whose dtype differs from the model's parameters, and ``ValueError`` (naming
    NaN / non-finite values) for bad shapes, an unobserved initial state or non-finite
    observed values.
    """
    if not isinstance(batch, TrajectoryBatch):
        raise TypeError(
            f"batch must be a uqdyn.models.hybrid.TrajectoryBatch(times, trajectories, mask), "
            f"got {type(batch).__name__}"
        )
    data = batch.trajectories
    if not isinstance(data, Tensor) or not data.is_floating_point():
        raise TypeError(
            "batch.trajectories must be a floating torch.Tensor of shape (batch, time, "
            f"*state_shape), got {type(data).__name__}"
            + (f" of dtype {data.dtype}" if isinstance(data, Tensor) else "")
        )
    if data.ndim != len(state_shape) + 2 or tuple(data.shape[2:]) != state_shape:
        raise ValueError(
            f"batch.trajectories must have shape (batch, time, {', '.join(map(str, state_shape))})"
            f" for this model, got {tuple(data.shape)}"
        )
    if data.shape[0] < 1 or data.shape[1] < 2:
        raise ValueError(
            "batch.trajectories need at least 1 sequence of at least 2 times, got shape "
            f"{tuple(data.shape)}"
        )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), data.dtype)
    if dtype != data.dtype:
        raise TypeError(
            f"batch.trajectories are {data.dtype} but the model's parameters are {dtype}; "
            f"expected the same dtype (convert the model with .to({data.dtype}) or the data)"
        )
    times = batch.times
    if not isinstance(times, Tensor) or times.ndim != 1 or len(times) != data.shape[1]:
        got = tuple(times.shape) if isinstance(times, Tensor) else type(times).__name__
        raise ValueError(
            f"batch.times must be a 1-d Tensor with one entry per time of trajectories "
            f"({data.shape[1]}), got {got}"
        )
    times = times.to(data.dtype)
    if not bool(torch.isfinite(times).all()) or not bool((times[1:] > times[:-1]).all()):
        raise ValueError(
            f"batch.times must be finite and strictly increasing, got {times.tolist()}"
        )
    mask = batch.mask
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                "batch.mask must be a bool Tensor of shape (batch, time) or None, got "
                f"{type(mask).__name__}"
                + (f" of dtype {mask.dtype}" if isinstance(mask, Tensor) else "")
            )
        if tuple(mask.shape) != tuple(data.shape[:2]):
            raise ValueError(
                f"batch.mask must have shape {tuple(data.shape[:2])} (batch, time), got "
                f"{tuple(mask.shape)}"
            )
        if not bool(mask[:, 0].all()):
            raise ValueError(
                "batch.mask[:, 0] must be true: every sequence starts from an observed state"
            )
        observed = data[mask]
    else:
        observed = data
    if not bool(torch.isfinite(observed).all()):
        raise ValueError(
            "batch.trajectories hold NaN or infinite values at observed times; expected finite "
            "observations (mark missing ones False in batch.mask)"
        )
    return TrajectoryBatch(times, data, mask)


def later_mask(batch: TrajectoryBatch) -> Tensor | None:
    """The mask of the scored times ``t > t_0``, shape ``(batch, time - 1)`` (or ``None``)."""
    return None if batch.mask is None else batch.mask[:, 1:]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values (batch, time, ...)`` over the entries whose ``mask (batch, time)`` holds.

    With ``mask=None``, ``values.mean()``.
    """
    if mask is None:
        return values.mean()
    keep = mask.reshape(*mask.shape, *([1] * (values.ndim - mask.ndim))).expand_as(values)
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp_min(1).to(values.dtype)


def observed_or_zero(batch: TrajectoryBatch) -> Tensor:
    """``trajectories[:, 1:]`` with unobserved entries replaced by 0 (so NaN never leaks)."""
    target = batch.trajectories[:, 1:]
    mask = later_mask(batch)
    if mask is None:
        return target
    keep = mask.reshape(*mask.shape, *([1] * (target.ndim - 2)))
    return torch.where(keep, target, torch.zeros_like(target))
