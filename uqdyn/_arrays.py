"""Conversion between torch tensors, numpy arrays and xarray DataArrays.

Every public score and calibration function accepts any of the three kinds and answers in
the kind it was given: the computation itself always runs in torch, on the device and dtype
of the inputs. :func:`prepare` turns the inputs into broadcast tensors (a *core* axis such as
the ensemble member axis is moved to the end) and returns a :class:`Restore` that turns a
result tensor back into the caller's kind, keeping xarray dims and coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_int, describe_type, is_integer_scalar

try:  # xarray is a core dependency, but keep the import failure readable
    import xarray as xr
except ImportError:  # pragma: no cover - exercised only without xarray
    xr = None  # type: ignore[assignment]

ArrayLike = Any  # torch.Tensor | numpy.ndarray | xarray.DataArray | float
Reduction = Literal["none", "mean", "sum"]
CoreAxis = int | str | None

__all__ = ["prepare", "Restore", "reduce_score", "is_xarray"]


def is_xarray(value: Any) -> bool:
    """True when ``value`` is an ``xarray.DataArray``."""
    return xr is not None and isinstance(value, xr.DataArray)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


@dataclass
class Restore:
    """Turns result tensors back into the kind of array the caller passed.

    Attributes
    ----------
    kind:
        ``"torch"``, ``"numpy"`` or ``"xarray"``.
    batch_shape:
        The broadcast shape of the inputs without their core axes.
    dims, coords:
        For xarray inputs, the broadcast dims (core dims removed) and their coordinates.
    """

    kind: str
    batch_shape: torch.Size
    dims: tuple[str, ...] = ()
    coords: dict[str, Any] = field(default_factory=dict)

    def reduced(self, axes: Sequence[int]) -> Restore:
        """The Restore of a result reduced over the batch ``axes`` (non-negative ints)."""
        gone = set(axes)
        shape = torch.Size(s for i, s in enumerate(self.batch_shape) if i not in gone)
        if self.kind != "xarray":
            return Restore(self.kind, shape)
        dims = tuple(d for i, d in enumerate(self.dims) if i not in gone)
        coords = {k: v for k, v in self.coords.items() if set(v.dims) <= set(dims)}
        return Restore(self.kind, shape, dims, coords)

    def __call__(self, result: Tensor, extra_dims: Sequence[str] = ()) -> Any:
        """Convert ``result`` of shape ``(*batch_shape, *extra)`` (or a reduced scalar).

        ``extra_dims`` names trailing axes that ``result`` adds after the batch axes (used for
        xarray output only, e.g. ``("quantile",)``).
        """
        if self.kind == "torch":
            return result
        array = result.detach().cpu().numpy()
        if self.kind == "numpy":
            return array
        n_extra = len(extra_dims)
        if result.dim() == len(self.dims) + n_extra:
            dims = tuple(self.dims) + tuple(extra_dims)
            coords = {k: v for k, v in self.coords.items() if set(v.dims) <= set(dims)}
            return xr.DataArray(array, dims=dims, coords=coords)
        if result.dim() == n_extra:  # fully reduced over the batch dims
            return xr.DataArray(array, dims=tuple(extra_dims))
        raise ValueError(
            f"result of shape {tuple(result.shape)} does not match dims {self.dims} + {extra_dims}"
        )


def _strong_dtype(value: Any) -> torch.dtype | None:
    """The floating dtype ``value`` imposes, or None for a "weak" input.

    Floating tensors, floating numpy arrays and numpy floating scalars are strong. Python
    numbers, lists and tuples, integer and boolean arrays or tensors are weak: they follow the
    strong inputs, and alone they are computed in float64.
    """
    if isinstance(value, Tensor):
        d = value.dtype
    elif isinstance(value, (np.ndarray, np.floating, np.complexfloating)):
        if value.dtype.kind not in "fc":
            return None
        d = torch.from_numpy(np.empty(0, dtype=value.dtype)).dtype
    else:
        return None
    if d.is_complex:
        raise TypeError(f"complex input of dtype {d} is not supported; expected real values")
    return d if d.is_floating_point else None


def _common_dtype(values: Sequence[Any]) -> torch.dtype:
    """The dtype a score is computed in.

    The promotion of the floating dtypes among ``values`` (see :func:`_strong_dtype`); float64
    when none is floating (integers, lists and Python numbers keep their precision);
    float16 and bfloat16 are computed in float32 (their 8 or 11 significant bits would make
    the sums of a score meaningless).
    """
    dtype: torch.dtype | None = None
    for v in values:
        d = _strong_dtype(v)
        if d is not None:
            dtype = d if dtype is None else torch.promote_types(dtype, d)
    if dtype is None:
        return torch.float64
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _find_device(values: Sequence[Any], names: Sequence[str]) -> torch.device:
    device: torch.device | None = None
    first = ""
    for v, n in zip(values, names, strict=True):
        if isinstance(v, Tensor):
            if device is None:
                device, first = v.device, n
            elif v.device != device:
                raise ValueError(
                    f"{n!r} is on {v.device} but {first!r} is on {device}; "
                    "expected all tensors on one device"
                )
    return device if device is not None else torch.device("cpu")


def _to_tensor(value: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype=dtype)
    if isinstance(value, np.ndarray) or _is_scalar(value) or isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name!r} has dtype {arr.dtype}; expected real numbers")
        if not arr.flags.writeable:  # a broadcast view or a dask block: torch needs writable
            arr = np.array(arr)
        return torch.as_tensor(arr, device=device).to(dtype=dtype)
    raise TypeError(
        f"{name!r} is a {type(value).__name__}; expected a torch.Tensor, numpy.ndarray, "
        "xarray.DataArray or a number"
    )


def prepare(
    *arrays: ArrayLike,
    names: Sequence[str],
    core: Sequence[CoreAxis] | None = None,
    broadcast: bool = True,
) -> tuple[tuple[Tensor, ...], Restore]:
    """Convert inputs to broadcast torch tensors on one device with one floating dtype.

    Parameters
    ----------
    *arrays:
        Tensors, numpy arrays, xarray DataArrays or numbers. Once any of them is an xarray
        DataArray, the others must be DataArrays or numbers.
    names:
        Argument names, used in error messages.
    core:
        For each array, ``None`` or the axis (int; a dim name for xarray) of a *core*
        dimension that is moved to the last position and excluded from broadcasting, e.g.
        the member axis of an ensemble.
    broadcast:
        Expand every array to the common batch shape (views, no copies).

    Returns
    -------
    tensors:
        One tensor per input: shape ``(*batch_shape,)`` or ``(*batch_shape, core)``.
    restore:
        Converts a result of shape ``batch_shape`` back to the caller's kind.
    """
    if len(names) != len(arrays):
        raise ValueError("prepare: one name per array is required")
    core = list(core) if core is not None else [None] * len(arrays)
    if any(is_xarray(a) for a in arrays):
        return _prepare_xarray(arrays, names, core, broadcast)
    kind = "torch" if any(isinstance(a, Tensor) for a in arrays) else "numpy"
    dtype = _common_dtype(arrays)
    device = _find_device(arrays, names)
    tensors = []
    for a, n, c in zip(arrays, names, core, strict=True):
        if is_xarray(a):  # pragma: no cover - handled above
            raise TypeError(n)
        t = _to_tensor(a, n, dtype, device)
        if c is not None:
            if not is_integer_scalar(c):
                raise TypeError(
                    f"axis for {n!r} must be an int for array input, got {c!r}, a "
                    f"{describe_type(c)}"
                )
            c = as_int(c, f"axis for {n!r}")
            if t.dim() == 0:
                raise ValueError(f"{n!r} is a scalar; expected an array with a {c} axis")
            if not -t.dim() <= c < t.dim():
                raise ValueError(f"axis {c} is out of range for {n!r} of shape {tuple(t.shape)}")
            t = t.movedim(c, -1)
        tensors.append(t)
    batch_shapes = [
        t.shape[:-1] if c is not None else t.shape for t, c in zip(tensors, core, strict=True)
    ]
    try:
        batch_shape = torch.broadcast_shapes(*batch_shapes)
    except RuntimeError:
        desc = ", ".join(f"{n!r} {tuple(s)}" for n, s in zip(names, batch_shapes, strict=True))
        raise ValueError(
            f"shapes do not broadcast: {desc} (core axes excluded); expected matching or "
            "broadcastable shapes"
        ) from None
    if broadcast:
        tensors = [
            t.expand(*batch_shape, t.shape[-1]) if c is not None else t.expand(batch_shape)
            for t, c in zip(tensors, core, strict=True)
        ]
    return tuple(tensors), Restore(kind, torch.Size(batch_shape))


def _prepare_xarray(
    arrays: Sequence[Any], names: Sequence[str], core: Sequence[CoreAxis], broadcast: bool
) -> tuple[tuple[Tensor, ...], Restore]:
    das = []
    core_dims = {c for c in core if c is not None}
    for a, n, c in zip(arrays, names, core, strict=True):
        if is_xarray(a):
            if c is not None:
                if not isinstance(c, str):
                    raise TypeError(f"member dim for DataArray {n!r} must be a dim name, got {c!r}")
                if c not in a.dims:
                    raise ValueError(f"{n!r} has dims {a.dims}; expected a {c!r} dim")
            das.append(a)
        elif _is_scalar(a):
            das.append(xr.DataArray(float(a)))
        else:
            raise TypeError(
                f"{n!r} is a {type(a).__name__} but other inputs are xarray.DataArrays; "
                "expected a DataArray or a number"
            )
    try:
        bcast = xr.broadcast(*das, exclude=core_dims) if broadcast else das
    except ValueError as err:
        raise ValueError(f"xarray inputs {list(names)} do not align: {err}") from None
    ref = None
    for b, c in zip(bcast, core, strict=True):
        if c is None:
            ref = b
            break
    if ref is None:
        ref = bcast[0].isel({core[0]: 0}, drop=True)
    dims = tuple(ref.dims)
    tensors = []
    # dtypes from the DataArrays themselves (no compute); numbers stay weak
    dtype = _common_dtype(
        [
            np.empty(0, dtype=b.dtype) if is_xarray(a) else a
            for a, b in zip(arrays, bcast, strict=True)
        ]
    )
    for b, n, c in zip(bcast, names, core, strict=True):
        order = [d for d in dims if d in b.dims] + ([c] if c is not None else [])
        b = b.transpose(*order)
        tensors.append(_to_tensor(np.asarray(b.values), n, dtype, torch.device("cpu")))
    coords = {k: v for k, v in ref.coords.items() if k not in core_dims}
    return tuple(tensors), Restore("xarray", torch.Size(ref.shape), dims, coords)


def reduce_score(
    score: Tensor,
    reduction: Reduction = "none",
    *,
    skipna: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """Reduce a pointwise score over all its axes.

    Parameters
    ----------
    score:
        Pointwise score, any shape.
    reduction:
        ``"none"`` (return ``score``), ``"mean"`` or ``"sum"`` over all points.
    skipna:
        Ignore NaN points in the reduction (otherwise a NaN point makes the result NaN).
    mask:
        Boolean tensor broadcastable to ``score``; only ``True`` points enter the reduction.

    Returns
    -------
    Tensor of the shape of ``score`` for ``"none"``, else a 0-d tensor.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction={reduction!r}; expected 'none', 'mean' or 'sum'")
    if reduction == "none":
        if mask is not None:
            return torch.where(torch.as_tensor(mask, device=score.device), score, torch.nan)
        return score
    keep = torch.ones_like(score, dtype=torch.bool)
    if mask is not None:
        mask_t = torch.as_tensor(mask, device=score.device)
        if mask_t.dtype != torch.bool:
            raise TypeError(f"mask has dtype {mask_t.dtype}; expected a boolean mask")
        keep = keep & mask_t
    if skipna:
        keep = keep & ~torch.isnan(score)
    values = torch.where(keep, score, torch.zeros((), dtype=score.dtype, device=score.device))
    total = values.sum()
    if reduction == "sum":
        return total
    return total / keep.sum().to(score.dtype)
