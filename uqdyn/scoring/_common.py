"""Private helpers shared by the score modules: argument checks, axis rules and reductions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import Restore, is_xarray
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


#: Values accepted by ``nan_policy``.
NAN_POLICIES = ("propagate", "omit", "raise")

#: What ``dim=`` accepts: one axis or several (ints for arrays, dim names for xarray).
Dim = int | str | Sequence[int | str] | None


def check_nan_policy(nan_policy: Any, tensors: Mapping[str, Tensor] | None = None) -> str:
    """Validate ``nan_policy``; with ``"raise"``, raise when any of ``tensors`` holds a NaN.

    Parameters
    ----------
    nan_policy:
        ``"propagate"``, ``"omit"`` or ``"raise"``.
    tensors:
        Inputs by argument name, checked for NaN under ``"raise"``.

    Returns
    -------
    The policy, validated.
    """
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={nan_policy!r}; expected one of {NAN_POLICIES}")
    if nan_policy == "raise" and tensors:
        for name, t in tensors.items():
            if t.is_floating_point():
                n = int(torch.isnan(t).sum())
                if n:
                    raise ValueError(
                        f"{name} has {n} NaN entries and nan_policy='raise'; expected no NaN "
                        "(or nan_policy='omit' to leave them out, 'propagate' to keep NaN scores)"
                    )
    return nan_policy


def resolve_dims(dim: Dim, restore: Restore) -> tuple[int, ...]:
    """Batch axes (non-negative ints, sorted) named by ``dim``; every axis for ``None``."""
    ndim = len(restore.batch_shape)
    if dim is None:
        return tuple(range(ndim))
    items: list[Any] = (
        [dim] if isinstance(dim, str) or is_integer_scalar(dim) else list(dim)  # type: ignore[arg-type]
    )
    axes: list[int] = []
    for item in items:
        if restore.kind == "xarray":
            if not isinstance(item, str):
                raise TypeError(
                    f"dim={dim!r} for xarray input; expected dim names among {restore.dims}"
                )
            if item not in restore.dims:
                raise ValueError(
                    f"dim={item!r} is not a dim of the score; expected names among {restore.dims}"
                )
            axes.append(restore.dims.index(item))
        else:
            if isinstance(item, str) or not is_integer_scalar(item):
                raise TypeError(
                    f"dim={dim!r}: {item!r} is a {describe_type(item)}; expected int axes of the "
                    f"score's batch shape {tuple(restore.batch_shape)} (dim names need xarray)"
                )
            a = as_int(item, "dim")
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"dim={a} is out of range for the score's batch shape "
                    f"{tuple(restore.batch_shape)}; expected -{ndim} <= dim < {ndim}"
                )
            axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"dim={dim!r} names an axis twice; expected distinct axes")
    return tuple(sorted(axes))


def prepare_weights(weights: Any, restore: Restore, like: Tensor) -> Tensor:
    """Reduction weights as a tensor broadcastable to ``restore.batch_shape``.

    xarray weights are matched to the score's dims by name; arrays and tensors broadcast as
    numpy does. NaN or negative weights are errors.
    """
    if is_xarray(weights):
        if restore.kind != "xarray":
            raise TypeError(
                "weights is an xarray.DataArray but the inputs are not; expected "
                "an array or tensor broadcastable to the score's shape"
            )
        extra = [d for d in weights.dims if d not in restore.dims]
        if extra:
            raise ValueError(
                f"weights has dims {weights.dims}; expected dims among the score's dims "
                f"{restore.dims} (it is broadcast by name)"
            )
        for d in weights.dims:
            if d in restore.coords and d in weights.coords:
                a, b = np.asarray(restore.coords[d].values), np.asarray(weights.coords[d].values)
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise ValueError(
                        f"weights' {d!r} coordinate differs from the score's; expected the same "
                        "labels"
                    )
        missing = {d: 1 for d in restore.dims if d not in weights.dims}
        values = np.asarray(weights.expand_dims(missing).transpose(*restore.dims).values)
        w = torch.as_tensor(values, device=like.device)
    elif isinstance(weights, Tensor):
        w = weights.to(like.device)
    else:
        try:
            arr = np.asarray(weights)
        except Exception:  # pragma: no cover - exotic inputs
            arr = np.asarray([], dtype=object)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
            raise TypeError(
                f"weights is a {type(weights).__name__}; expected real reduction weights "
                "(array, tensor or DataArray)"
            )
        w = torch.as_tensor(arr, device=like.device)
    w = w.to(like.dtype)
    try:
        torch.broadcast_shapes(w.shape, restore.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"weights of shape {tuple(w.shape)} does not broadcast to the score's shape "
            f"{tuple(restore.batch_shape)}; expected broadcastable reduction weights"
        ) from None
    if bool(torch.isnan(w).any()):
        raise ValueError(f"weights has {int(torch.isnan(w).sum())} NaN entries; expected numbers")
    if bool((w < 0).any()):
        raise ValueError(
            f"weights has {int((w < 0).sum())} negative entries; expected weights >= 0"
        )
    return w


def finish(
    score: Tensor,
    restore: Restore,
    reduction: str = "none",
    skipna: bool = False,
    mask: Any = None,
    *,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    extra_dims: int | Sequence[str] = 0,
) -> Any:
    """Reduce ``score`` and convert it to the caller's kind.

    Parameters
    ----------
    score:
        Pointwise score, shape ``(*restore.batch_shape, *extra)``.
    restore:
        From :func:`uqdyn._arrays.prepare`.
    reduction:
        ``"none"``, ``"mean"`` or ``"sum"``. With ``dim`` given, ``"none"`` means ``"mean"``.
    skipna:
        Leave NaN points out of the reduction (implied by ``nan_policy="omit"``).
    mask:
        Boolean, broadcastable to the batch shape; only True points are kept (others are NaN
        without a reduction).
    dim:
        Batch axes to reduce (ints; dim names for xarray). ``None`` reduces every axis when
        ``reduction`` is ``"mean"``/``"sum"`` and none otherwise.
    weights:
        Reduction weights broadcastable to the batch shape (xarray: by dim name): the mean is
        ``sum(w s) / sum(w)`` over the kept points, the sum ``sum(w s)``.
    nan_policy:
        ``"propagate"``, ``"omit"`` or ``"raise"`` (checked on the inputs by the caller).
    extra_dims:
        Trailing non-batch axes of ``score`` that are never reduced: a count, or their names
        (used for xarray output).

    Returns
    -------
    The reduced score, of the caller's kind.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction={reduction!r}; expected 'none', 'mean' or 'sum'")
    if check_nan_policy(nan_policy) == "omit":
        skipna = True
    if isinstance(extra_dims, int):
        n_extra, extra_names = extra_dims, tuple(f"dim_{i}" for i in range(extra_dims))
    else:
        extra_names = tuple(extra_dims)
        n_extra = len(extra_names)
    mask_t = prepare_mask(mask, restore, score.device)
    w_t = None if weights is None else prepare_weights(weights, restore, score)

    def pad(t: Tensor) -> Tensor:  # broadcast a batch-shaped tensor over the extra axes
        t = t.expand(restore.batch_shape) if t.dim() < len(restore.batch_shape) else t
        return t.reshape(*t.shape, *([1] * n_extra))

    if dim is None and reduction == "none":
        if w_t is not None:
            raise ValueError(
                "weights= are reduction weights and no reduction was asked for; pass dim=... "
                "(or reduction='mean'); ensemble member weights are member_weights="
            )
        if mask_t is not None:
            score = torch.where(pad(mask_t), score, torch.nan)
        return restore(score, extra_names)
    axes = resolve_dims(dim, restore)
    if reduction == "none":
        reduction = "mean"
    keep = torch.ones((), dtype=torch.bool, device=score.device)
    if mask_t is not None:
        keep = keep & pad(mask_t)
    if skipna:
        keep = keep & ~torch.isnan(score)
    w = torch.ones((), dtype=score.dtype, device=score.device) if w_t is None else pad(w_t)
    keep = keep & (w != 0)
    zero = torch.zeros((), dtype=score.dtype, device=score.device)
    w = torch.where(keep, w, zero).expand(score.shape)
    total = (
        (w * torch.where(keep, score, zero)).sum(axes)
        if axes
        else w * torch.where(keep, score, zero)
    )
    if reduction == "mean":
        total = total / (w.sum(axes) if axes else w)
    return restore.reduced(axes)(total, extra_names)
