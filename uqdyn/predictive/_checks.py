"""Input validation shared by the Predictive families."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_int


def as_float_tensor(value: Any, name: str, like: Tensor | None = None) -> Tensor:
    """``value`` as a floating tensor (on ``like``'s device and dtype when given)."""
    if isinstance(value, Tensor):
        t = value
    else:
        arr = np.asarray(value)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} has dtype {arr.dtype}; expected real numbers")
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise TypeError(f"{name} is complex ({t.dtype}); expected real numbers")
    if like is not None:
        return t.to(device=like.device, dtype=like.dtype)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def check_finite(t: Tensor, name: str) -> None:
    """Raise ValueError when ``t`` holds NaN or infinite values."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(
            f"{name} has {count} non-finite value(s) of {t.numel()}; expected finite values"
        )


def check_positive(t: Tensor, name: str) -> None:
    """Raise ValueError unless every entry of ``t`` is finite and > 0."""
    check_finite(t, name)
    if t.numel() and bool((t <= 0).any()):
        raise ValueError(
            f"{name} has minimum {float(t.min()):.3g}; expected strictly positive values"
        )


def broadcast(name_a: str, a: Tensor, name_b: str, b: Tensor) -> tuple[Tensor, Tensor]:
    """Broadcast two tensors, raising ValueError that names both shapes on mismatch."""
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{name_a} of shape {tuple(a.shape)} and {name_b} of shape {tuple(b.shape)} do not "
            "broadcast; expected matching or broadcastable shapes"
        ) from None
    return a.expand(shape), b.expand(shape)


def check_sample_count(n: Any) -> int:
    """The number of samples ``n`` as a Python int >= 1 (TypeError / ValueError otherwise)."""
    return as_int(n, "n", minimum=1)
