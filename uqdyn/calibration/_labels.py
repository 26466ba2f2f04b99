"""Group labels and feature arrays of grouped, local and cross-validated recalibration."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import is_xarray
from uqdyn._checks import as_int, describe_type, is_integer_scalar


def _normalize_axis(axis: Any, ndim: int, name: str) -> int:
    """``axis`` as a non-negative axis of a ``batch_shape`` of ``ndim`` axes."""
    if not is_integer_scalar(axis):
        raise TypeError(
            f"{name}={axis!r} is a {describe_type(axis)}; expected an integer batch axis"
        )
    a = as_int(axis, name)
    if not -ndim <= a < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for a batch_shape of {ndim} axes; expected "
            f"-{ndim} <= {name} < {ndim}"
        )
    return a % ndim


def _to_numpy(values: Any) -> np.ndarray:
    if is_xarray(values):
        return np.asarray(values.values)
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _label_array(groups: Any, shape: torch.Size) -> np.ndarray:
    """Group labels as a numpy array of ``shape`` (integers or strings), validated."""
    arr = _to_numpy(groups)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "US":
        arr = arr.astype(str)
    elif arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.reshape(-1)):
        arr = arr.astype(str)
    else:
        raise TypeError(
            f"groups has dtype {arr.dtype}; expected integer or string labels (one per point)"
        )
    try:
        return np.broadcast_to(arr, tuple(shape))
    except ValueError:
        raise ValueError(
            f"groups has shape {arr.shape}; expected a shape broadcastable to batch_shape "
            f"{tuple(shape)}"
        ) from None


def _python_label(value: Any) -> Hashable:
    return str(value) if isinstance(value, (str, np.str_)) else int(value)


def _fit_groups(
    groups: Any, axis: int | None, shape: torch.Size, device: torch.device
) -> tuple[Tensor, list[Hashable]]:
    """Codes ``(*S,)`` int64 in ``[0, G)`` and the ``G`` sorted labels of a fit.

    Exactly one of ``groups`` (labels broadcastable to ``shape``) and ``axis`` (group by
    position along that batch axis, labels ``0 .. n - 1``) is given.
    """
    if (groups is None) == (axis is None):
        raise ValueError(
            "expected exactly one of groups= (labels broadcastable to batch_shape) and axis= "
            f"(group by position along a batch axis); got groups={'None' if groups is None else '...'}"
            f" and axis={axis!r}"
        )
    if axis is not None:
        a = _normalize_axis(axis, len(shape), "axis")
        n = shape[a]
        view = [1] * len(shape)
        view[a] = n
        codes = torch.arange(n, device=device).reshape(view).expand(shape)
        return codes, list(range(n))
    arr = _label_array(groups, shape)
    uniq, inverse = np.unique(arr, return_inverse=True)
    codes = torch.as_tensor(inverse.reshape(arr.shape), dtype=torch.int64, device=device)
    return codes, [_python_label(v) for v in uniq]


def _transform_groups(
    groups: Any,
    axis: int | None,
    shape: torch.Size,
    device: torch.device,
    labels: Sequence[Hashable],
) -> tuple[Tensor, list[Hashable]]:
    """Codes of the fitted ``labels`` at each point (-1 for labels not seen at fit).

    Returns the codes ``(*S,)`` and the unseen labels that occur.
    """
    if axis is not None:
        if groups is not None:
            raise ValueError(
                f"this recalibrator groups by axis={axis}; expected groups=None, got groups"
            )
        a = _normalize_axis(axis, len(shape), "axis")
        n = shape[a]
        view = [1] * len(shape)
        view[a] = n
        lookup = {label: i for i, label in enumerate(labels)}
        mapped = [lookup.get(i, -1) for i in range(n)]
        unseen: list[Hashable] = [i for i, m in enumerate(mapped) if m < 0]
        codes = torch.tensor(mapped, dtype=torch.int64, device=device)
        return codes.reshape(view).expand(shape), unseen
    if groups is None:
        raise ValueError(
            "this recalibrator was fitted with groups= labels; expected groups= (labels "
            f"broadcastable to batch_shape {tuple(shape)}) in transform"
        )
    arr = _label_array(groups, shape)
    uniq, inverse = np.unique(arr, return_inverse=True)
    lookup = {label: i for i, label in enumerate(labels)}
    found = np.array([lookup.get(_python_label(v), -1) for v in uniq], dtype=np.int64)
    unseen = [_python_label(v) for v, m in zip(uniq, found, strict=True) if m < 0]
    codes = torch.as_tensor(found[inverse.reshape(arr.shape)], device=device)
    return codes, unseen


def _as_features(features: Any, shape: torch.Size, device: torch.device) -> Tensor:
    """Features as a float64 tensor ``(*S, F)``.

    An array broadcastable to ``shape`` is one feature; otherwise its last axis holds ``F``
    features and its leading axes broadcast to ``shape``.
    """
    arr = features if isinstance(features, Tensor) else torch.as_tensor(_to_numpy(features))
    if (
        arr.dtype == torch.bool
        or arr.is_complex()
        or not (
            arr.is_floating_point()
            or arr.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
        )
    ):
        raise TypeError(f"features has dtype {arr.dtype}; expected real numbers")
    f = arr.detach().to(device=device, dtype=torch.float64)
    try:
        return f.expand(shape).unsqueeze(-1)
    except RuntimeError:
        pass
    if f.dim() >= 1:
        try:
            return f.expand(*shape, f.shape[-1])
        except RuntimeError:
            pass
    raise ValueError(
        f"features has shape {tuple(f.shape)}; expected a shape broadcastable to batch_shape "
        f"{tuple(shape)} (one feature) or to {tuple(shape) + ('F',)} (F features)"
    )
