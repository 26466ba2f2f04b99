"""Lazy (dask) evaluation of pointwise scores on dask-backed ``xarray.DataArray`` inputs.

:func:`dask_aware` wraps a pointwise score ``f(obs, forecasts, ..., member_dim=..., dim=None,
weights=None, nan_policy=..., reduction=..., skipna=..., mask=...)``. When none of its array
arguments is dask-backed the wrapper calls ``f`` unchanged. When one is, it builds a dask
graph instead of computing:

1. the pointwise score, by :func:`xarray.apply_ufunc` with ``dask="parallelized"``: every
   block of the non-core dims is scored by ``f`` itself on numpy blocks (core dims such as
   the member dim rechunked to one chunk and moved last, ``dim=None``, no reduction);
2. the ``dim=`` / ``weights=`` reduction with xarray, as the eager path does it: the mean is
   ``sum(w s) / sum(w)`` over the kept points, where a point is kept when its weight is not
   zero, ``mask`` is True there and, with ``skipna=True`` or ``nan_policy="omit"``, its
   score is not NaN (left out of numerator and denominator). Otherwise a NaN score
   propagates to the reduced value.

Nothing is computed until the caller asks (``.compute()``, ``.load()``, ``.values``). With
``nan_policy="raise"`` the check runs per block when the graph is computed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from uqdyn._arrays import is_xarray

from ._common import DEFAULT_MEMBER_NAME, check_nan_policy

__all__ = ["dask_aware", "is_dask_backed"]

F = TypeVar("F", bound=Callable[..., Any])

#: Keyword arguments handled by the lazy wrapper itself (never passed to the blocks).
_REDUCTION_ARGS = ("dim", "weights", "reduction", "skipna", "mask")

#: The shared keyword arguments of every score (see the scoring conventions).
_SHARED_ARGS = (*_REDUCTION_ARGS, "nan_policy")


def is_dask_backed(value: Any) -> bool:
    """True when ``value`` is an ``xarray.DataArray`` whose data is a dask array."""
    if not is_xarray(value):
        return False
    return type(value.data).__module__.split(".")[0] == "dask"


def _output_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype of the score: as the eager dtype policy (float64 without floating input,
    float16 computed in float32)."""
    floating = [d for d in dtypes if d.kind == "f"]
    if not floating:
        return np.dtype(np.float64)
    out = np.result_type(*floating)
    return np.dtype(np.float32) if out.itemsize < 4 else np.dtype(out)


def _core_name(value: Any, param: str, default: Any, default_name: str | None) -> str:
    """The core dim name of a DataArray argument from its ``param`` value."""
    if isinstance(value, str):
        return value
    if value == default and default_name is not None:
        return default_name
    raise TypeError(
        f"{param}={value!r} for an xarray.DataArray; expected a dim name (str), "
        f"e.g. {param}={default_name or 'name'!r}"
    )


def _as_params(core: str | Sequence[str] | None) -> tuple[str, ...]:
    if core is None:
        return ()
    return (core,) if isinstance(core, str) else tuple(core)


def _reduce_dims(dim: Any, dims: tuple[str, ...]) -> list[str]:
    items = [dim] if isinstance(dim, (str, int, np.integer)) else list(dim)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"dim={dim!r} for xarray input; expected dim names among {dims}")
        if item not in dims:
            raise ValueError(f"dim={item!r} is not a dim of the score; expected names among {dims}")
        out.append(item)
    if len(set(out)) != len(out):
        raise ValueError(f"dim={dim!r} names an axis twice; expected distinct axes")
    return out


def _check_weights(weights: Any, score: Any) -> Any:
    import xarray as xr

    if isinstance(weights, (int, float, np.integer, np.floating)) and not isinstance(weights, bool):
        weights = xr.DataArray(float(weights))
    if not is_xarray(weights):
        raise TypeError(
            f"weights is a {type(weights).__name__} while the inputs are dask-backed "
            "xarray.DataArrays; expected an xarray.DataArray (broadcast by dim name)"
        )
    if is_dask_backed(weights):
        raise TypeError(
            "weights is dask-backed; expected reduction weights in memory (call .load() on "
            "them: they are checked for NaN and negative entries)"
        )
    extra = [d for d in weights.dims if d not in score.dims]
    if extra:
        raise ValueError(
            f"weights has dims {weights.dims}; expected dims among the score's dims "
            f"{score.dims} (it is broadcast by name)"
        )
    for d in weights.dims:
        if d in score.coords and d in weights.coords:
            a, b = np.asarray(score.coords[d].values), np.asarray(weights.coords[d].values)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ValueError(
                    f"weights' {d!r} coordinate differs from the score's; expected the same labels"
                )
        elif weights.sizes[d] != score.sizes[d]:
            raise ValueError(
                f"weights has {weights.sizes[d]} entries along {d!r} and the score "
                f"{score.sizes[d]}; expected the same length"
            )
    values = np.asarray(weights.values)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"weights has dtype {values.dtype}; expected real reduction weights")
    n_nan = int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0
    if n_nan:
        raise ValueError(f"weights has {n_nan} NaN entries; expected numbers")
    if bool((values < 0).any()):
        raise ValueError(
            f"weights has {int((values < 0).sum())} negative entries; expected weights >= 0"
        )
    return weights.astype(score.dtype)


def _check_mask(mask: Any, score: Any) -> Any:
    if not is_xarray(mask):
        raise TypeError(
            f"mask is a {type(mask).__name__} while the inputs are dask-backed "
            "xarray.DataArrays; expected a boolean xarray.DataArray"
        )
    if mask.dtype != bool:
        raise TypeError(f"mask has dtype {mask.dtype}; expected a boolean mask")
    extra = [d for d in mask.dims if d not in score.dims]
    if extra:
        raise ValueError(
            f"mask has dims {mask.dims}; expected dims among the score's dims {score.dims}"
        )
    return mask


def lazy_reduce(
    score: Any,
    *,
    dim: Any = None,
    weights: Any = None,
    reduction: str = "none",
    skipna: bool = False,
    mask: Any = None,
    nan_policy: str = "propagate",
) -> Any:
    """Reduce a (lazy) pointwise score DataArray as the eager ``finish`` does.

    ``sum(w s) / sum(w)`` (``"mean"``) or ``sum(w s)`` (``"sum"``) over ``dim`` (every dim
    when ``dim`` is None and ``reduction`` is not ``"none"``); points with zero weight, a
    False ``mask`` or (with ``skipna`` / ``nan_policy="omit"``) a NaN score are left out of
    both sums. NaN scores at kept points propagate. A mean with no kept point is NaN.
    """
    import xarray as xr

    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction={reduction!r}; expected 'none', 'mean' or 'sum'")
    if check_nan_policy(nan_policy) == "omit":
        skipna = True
    mask_x = None if mask is None else _check_mask(mask, score)
    w = None if weights is None else _check_weights(weights, score)
    if dim is None and reduction == "none":
        if w is not None:
            raise ValueError(
                "weights= are reduction weights and no reduction was asked for; pass dim=... "
                "(or reduction='mean'); ensemble member weights are member_weights="
            )
        return score if mask_x is None else score.where(mask_x)
    dims = list(score.dims) if dim is None else _reduce_dims(dim, tuple(score.dims))
    keep = xr.ones_like(score, dtype=bool)
    if mask_x is not None:
        keep = keep & mask_x
    if skipna:
        keep = keep & score.notnull()
    if w is None:
        w = xr.ones_like(score)
    keep = keep & (w != 0)
    w_kept = xr.where(keep, w, 0.0).astype(score.dtype)
    total = (w_kept * xr.where(keep, score, 0.0)).sum(dims, skipna=False)
    if reduction == "sum":
        return total.astype(score.dtype)
    den = w_kept.sum(dims, skipna=False)
    return (total / den.where(den != 0)).astype(score.dtype)  # no kept point: NaN


def dask_aware(
    core_args: Mapping[str, str | Sequence[str] | None],
    *,
    default_dims: Mapping[str, str] | None = None,
    n_outputs: int = 1,
) -> Callable[[F], F]:
    """Make a pointwise score lazy on dask-backed ``xarray.DataArray`` inputs.

    Parameters
    ----------
    core_args:
        The score's array arguments, by parameter name, each mapped to the name of the
        parameter that holds its core dim (``None`` for arguments without a core dim; a
        tuple of parameter names for several core dims, in the order the score expects them
        last, e.g. ``("member_dim", "var_dim")`` for members at ``-2`` and variables at
        ``-1``). Each block gets ``param = -k`` for the ``k``-th last core dim of the first
        argument (in ``core_args`` order) naming ``param``; later arguments only use it to
        find their dim (member weights then come with members last, as the scores expect).
        For :func:`uqdyn.scoring.crps_ensemble`:
        ``{"obs": None, "forecasts": "member_dim", "member_weights": "member_dim"}``; for
        :func:`uqdyn.scoring.crps_normal`: ``{"obs": None, "mu": None, "sigma": None}``; for
        :func:`uqdyn.scoring.energy_score`: ``{"forecasts": ("member_dim", "event_dim"),
        "obs": "event_dim", "member_weights": "member_dim"}``.
    default_dims:
        The dim name that a core-dim parameter left at its (int) default stands for on
        DataArrays; default ``{"member_dim": "member"}`` (the scores' convention).
    n_outputs:
        How many pointwise scores the function returns (a tuple when more than one, e.g.
        the skill and spread terms of :func:`uqdyn.scoring.crps_ensemble_components`); each
        is reduced alike and a tuple of lazy DataArrays is returned.

    Returns
    -------
    A decorator. The wrapped function behaves as the original unless one of the
    ``core_args`` it is called with is a dask-backed DataArray; then it returns a dask-backed
    DataArray of the same values (see the module docstring): every argument in
    ``core_args`` must then be an ``xarray.DataArray``, a Python number or None, and
    ``weights``/``mask`` ``xarray.DataArray`` s in memory.

    Examples
    --------
    Applied in the score's module, after its definition::

        crps_ensemble = dask_aware(
            {"obs": None, "forecasts": "member_dim", "member_weights": "member_dim"}
        )(crps_ensemble)
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = sig.parameters
        unknown = [n for n in core_args if n not in params]
        if n_outputs < 1:
            raise ValueError(f"n_outputs={n_outputs!r}; expected an int >= 1")
        if unknown:
            raise ValueError(
                f"core_args names {unknown} that are not parameters of {fn.__name__}; "
                f"expected names among {list(params)}"
            )
        for name, core in core_args.items():
            for p in _as_params(core):
                if p not in params:
                    raise ValueError(
                        f"core_args[{name!r}] names {p!r}, not a parameter of {fn.__name__}"
                    )
        names = {"member_dim": DEFAULT_MEMBER_NAME} if default_dims is None else default_dims

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # shared keywords the score itself lacks are handled here in lazy mode
            shared = {k: kwargs.pop(k) for k in _SHARED_ARGS if k in kwargs and k not in params}
            bound = sig.bind(*args, **kwargs)
            arrays = {n: bound.arguments[n] for n in core_args if n in bound.arguments}
            if not any(is_dask_backed(v) for v in arrays.values()):
                return fn(*args, **kwargs, **shared)
            arguments = dict(bound.arguments)
            return _lazy_call(fn, params, core_args, names, arguments, arrays, shared, n_outputs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _lazy_call(
    fn: Callable[..., Any],
    params: Mapping[str, inspect.Parameter],
    core_args: Mapping[str, str | Sequence[str] | None],
    default_dims: Mapping[str, str],
    arguments: dict[str, Any],
    arrays: dict[str, Any],
    shared: dict[str, Any],
    n_outputs: int = 1,
) -> Any:
    import xarray as xr

    names: list[str] = []
    inputs: list[Any] = []
    core_dims: list[list[str]] = []
    fixed: dict[str, Any] = {}
    for name, value in arrays.items():
        if value is None:
            fixed[name] = None
            continue
        if not is_xarray(value):
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            ):
                fixed[name] = value
                continue
            raise TypeError(
                f"{name} is a {type(value).__name__} while other inputs are dask-backed "
                "xarray.DataArrays; expected an xarray.DataArray or a number"
            )
        cores: list[str] = []
        for param in _as_params(core_args[name]):
            default = params[param].default
            value_p = arguments.get(param, default)
            core = _core_name(value_p, param, default, default_dims.get(param))
            if core not in value.dims:
                raise ValueError(
                    f"{name} has dims {value.dims}, none named {core!r}; pass {param}=<dim name>"
                )
            cores.append(core)
        if cores and is_dask_backed(value):
            value = value.chunk(dict.fromkeys(cores, -1))
        names.append(name)
        inputs.append(value)
        core_dims.append(cores)
    reduction_kwargs = {
        k: arguments.pop(k) for k in _REDUCTION_ARGS if k in arguments and k not in core_args
    }
    reduction_kwargs.update({k: v for k, v in shared.items() if k in _REDUCTION_ARGS})
    nan_policy = check_nan_policy(
        arguments.get("nan_policy", shared.get("nan_policy", "propagate"))
    )
    check_in_blocks = nan_policy == "raise" and "nan_policy" not in params
    block_kwargs = {k: v for k, v in arguments.items() if k not in arrays}
    block_kwargs.update(fixed)
    positions: dict[str, int] = {}
    for name, spec in core_args.items():  # core dims arrive last in every block
        if name in names:
            ps = _as_params(spec)
            for i, p in enumerate(ps):  # the first argument naming a parameter sets it
                positions.setdefault(p, i - len(ps))
    block_kwargs.update(positions)
    out_dtype = _output_dtype([np.dtype(v.dtype) for v in inputs])

    def block(*values: np.ndarray) -> Any:
        kw = dict(block_kwargs)
        # dask hands read-only (e.g. broadcast) blocks; torch wants writable memory
        values = tuple(v if v.flags.writeable else np.array(v) for v in values)
        kw.update(zip(names, values, strict=True))
        if check_in_blocks:
            for name, v in zip(names, values, strict=True):
                n = int(np.isnan(v).sum()) if v.dtype.kind == "f" else 0
                if n:
                    raise ValueError(
                        f"{name} has {n} NaN entries in a block and nan_policy='raise'; "
                        "expected no NaN"
                    )
        out = fn(**kw)
        if n_outputs == 1:
            return np.asarray(out).astype(out_dtype, copy=False)
        return tuple(np.asarray(o).astype(out_dtype, copy=False) for o in out)

    scores = xr.apply_ufunc(
        block,
        *inputs,
        input_core_dims=core_dims,
        output_core_dims=[[]] * n_outputs,
        dask="parallelized",
        output_dtypes=[out_dtype] * n_outputs,
    )
    if n_outputs == 1:
        return lazy_reduce(scores.rename(None), nan_policy=nan_policy, **reduction_kwargs)
    return tuple(
        lazy_reduce(s.rename(None), nan_policy=nan_policy, **reduction_kwargs) for s in scores
    )
