"""Private helpers shared by the score modules: argument checks, axis rules and reductions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import Restore, is_xarray, reduce_score
from uqdyn._checks import as_int, describe_type, is_integer_scalar

#: Name of the ensemble member dim in xarray inputs when ``member_dim`` is left at its default.
DEFAULT_MEMBER_NAME = "member"


def resolve_core_dim(
    value: Any, axis: int | str, default: int, name: str, default_name: str
) -> Any:
    """The core axis to hand to ``prepare`` for ``value``.

    For array inputs ``axis`` must be an int. For an ``xarray.DataArray`` it must be a dim name,
    except that the int default (``default``) stands for ``default_name``.
    """
    if not (isinstance(axis, str) or is_integer_scalar(axis)):
        raise TypeError(
            f"{name}={axis!r} is a {describe_type(axis)}; expected an int axis or, for xarray, "
            "a dim name"
        )
    if not isinstance(axis, str):
        axis = as_int(axis, name)
    if is_xarray(value):
        if isinstance(axis, str):
            return axis
        if axis == default:
            if default_name not in value.dims:
                raise ValueError(
                    f"{name} was left at its default and the DataArray has dims {value.dims}, "
                    f"none named {default_name!r}; pass {name}=<dim name>"
                )
            return default_name
        raise TypeError(
            f"{name}={axis!r} for an xarray.DataArray; expected a dim name (str), "
            f"e.g. {name}={default_name!r}"
        )
    if isinstance(axis, str):
        raise TypeError(
            f"{name}={axis!r} is a dim name but the input is not an xarray.DataArray; "
            "expected an int axis"
        )
    return axis


def check_core_sizes(tensors: dict[str, Tensor], what: str) -> int:
    """Check that the last (core) axis has one length across ``tensors``; return it."""
    sizes = {n: t.shape[-1] for n, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{n!r} {tuple(t.shape)}" for n, t in tensors.items())
        raise ValueError(
            f"the {what} axis differs in length between inputs: {desc} ({what} axis last); "
            f"expected one length"
        )
    size = next(iter(sizes.values()))
    if size == 0:
        desc = ", ".join(f"{n!r} {tuple(t.shape)}" for n, t in tensors.items())
        raise ValueError(f"empty {what} axis: {desc}; expected at least one {what}")
    return size


def check_positive(values: Tensor, name: str) -> None:
    """Raise ValueError when any non-NaN entry of ``values`` is <= 0."""
    bad = values <= 0
    if bool(bad.any()):
        example = values[bad].flatten()[0].item()
        raise ValueError(
            f"{name} has {int(bad.sum())} non-positive entries (e.g. {example!r}); "
            "expected strictly positive values"
        )


def check_in_unit_interval(values: Tensor, name: str, *, closed: bool) -> None:
    """Raise ValueError when any non-NaN entry of ``values`` is outside [0, 1] or (0, 1)."""
    bad = (values < 0) | (values > 1) if closed else (values <= 0) | (values >= 1)
    if bool(bad.any()):
        example = values[bad].flatten()[0].item()
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(
            f"{name} has {int(bad.sum())} entries outside {interval} (e.g. {example!r}); "
            f"expected values in {interval}"
        )


def normalise_weights(weights: Tensor, name: str) -> Tensor:
    """Weights ``(..., K)`` divided by their sum over the last axis.

    Raises ValueError for negative weights or weights whose sum is not positive. NaN weights
    give NaN (the score at that point is then NaN).
    """
    negative = weights < 0
    if bool(negative.any()):
        example = weights[negative].flatten()[0].item()
        raise ValueError(f"{name} has negative entries (e.g. {example!r}); expected weights >= 0")
    total = weights.sum(-1, keepdim=True)
    bad = total <= 0
    if bool(bad.any()):
        raise ValueError(
            f"{name} sums to {total[bad].flatten()[0].item()!r} at {int(bad.sum())} points; "
            "expected weights that sum to a positive number"
        )
    return weights / total


def prepare_mask(mask: Any, restore: Restore, device: torch.device) -> Tensor | None:
    """Turn a user mask (tensor, array or DataArray) into a boolean tensor for reduce_score."""
    if mask is None:
        return None
    if is_xarray(mask):
        extra = [d for d in mask.dims if d not in restore.dims]
        if extra:
            raise ValueError(
                f"mask has dims {mask.dims}; expected dims among the score's dims {restore.dims}"
            )
        missing = {d: 1 for d in restore.dims if d not in mask.dims}
        mask = mask.expand_dims(missing).transpose(*restore.dims).values
    if isinstance(mask, Tensor):
        mask_t = mask.to(device)
    else:
        mask_t = torch.as_tensor(np.asarray(mask), device=device)
    if mask_t.dtype != torch.bool:
        raise TypeError(f"mask has dtype {mask_t.dtype}; expected a boolean mask")
    try:
        torch.broadcast_shapes(mask_t.shape, restore.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask_t.shape)} does not broadcast to the score's shape "
            f"{tuple(restore.batch_shape)}"
        ) from None
    return mask_t


def finish(
    score: Tensor,
    restore: Restore,
    reduction: str,
    skipna: bool,
    mask: Any,
) -> Any:
    """Reduce ``score`` (shape ``restore.batch_shape``) and convert it to the caller's kind."""
    mask_t = prepare_mask(mask, restore, score.device)
    return restore(reduce_score(score, reduction, skipna=skipna, mask=mask_t))  # type: ignore[arg-type]
