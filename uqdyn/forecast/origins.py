"""Rolling forecast origins: context windows and targets at fixed lead times, cut from a series.

A *forecast origin* is an issue time ``t0`` of the data: everything observed up to and
including ``t0`` may be used (the *context*), and the forecast is verified against the
observations at ``t0 + lead`` for each lead time (the *targets*). :func:`rolling_origins`
cuts every origin of a series or field, deterministically, and records how many it dropped
and why; the result, :class:`Origins`, is what the reference forecasts of
:mod:`uqdyn.forecast` and the learned forecasters of :mod:`uqdyn.models.forecasters` fit on
and predict.

NaN means "not observed" throughout: gaps in a series, land points of an ocean field, values
dropped by quality control. A context or target entry that was not observed is NaN, never
filled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor

from uqdyn._checks import as_float, as_int, is_integer_scalar, is_real_scalar
from uqdyn.predictive import Predictive

from .inputs import load_data

__all__ = ["Origins", "rolling_origins", "last_observed", "DROP_REASONS"]

_P = TypeVar("_P", bound=Predictive)

#: Why an origin may be dropped, with the words used in :meth:`Origins.summary`.
DROP_REASONS: dict[str, str] = {
    "history": "not enough history before the origin for the context window",
    "horizon": "a lead time falls after the end of the data (or after valid_end)",
    "no_context": "no observed value in the context window",
    "no_target": "no observed value at any lead time",
}


@dataclass(frozen=True, eq=False)
class Origins:
    """Forecast origins cut from one series or field by :func:`rolling_origins`.

    Attributes
    ----------
    context:
        ``(origin, context, *space)`` observed values of each origin's context window, the
        last entry at the origin itself; NaN where not observed (or padding of a time-offset
        window). Coordinates: ``origin`` (the origin times), ``context`` (position from the
        origin: ``-(C-1), ..., 0``) and ``context_time`` ``(origin, context)``.
    target:
        ``(origin, lead, *space)`` observations at ``origin + lead``; NaN where not observed.
        Coordinates: ``origin``, ``lead`` (the lead times as given) and ``valid_time``
        ``(origin, lead)``.
    data:
        The whole checked series ``(time, *space)`` the origins were cut from (references
        such as running climatologies look back beyond the context window).
    dropped:
        ``{reason: count}`` of the candidate origins left out (keys of :data:`DROP_REASONS`).
    time_dim:
        Name of the time dim of :attr:`data`.
    step_leads:
        Whether the leads are numbers of steps (ints) rather than time offsets.
    """

    context: xr.DataArray
    target: xr.DataArray
    data: xr.DataArray
    dropped: dict[str, int] = field(default_factory=dict)
    time_dim: str = "time"
    step_leads: bool = True

    # ------------------------------------------------------------------ sizes and labels
    def __len__(self) -> int:
        return int(self.target.sizes["origin"])

    @property
    def space_dims(self) -> tuple[str, ...]:
        """Dims of the data other than time (e.g. ``()``, ``("variable",)``, ``("lat", "lon")``)."""
        return tuple(str(d) for d in self.target.dims[2:])

    @property
    def space_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.target.shape[2:])

    @property
    def n_leads(self) -> int:
        return int(self.target.sizes["lead"])

    @property
    def origin_time(self) -> np.ndarray:
        """``(origin,)`` the origin times."""
        return np.asarray(self.target["origin"].values)

    @property
    def valid_time(self) -> np.ndarray:
        """``(origin, lead)`` the times the targets verify at."""
        return np.asarray(self.target["valid_time"].values)

    @property
    def context_time(self) -> np.ndarray:
        """``(origin, context)`` the times of the context entries (NaT / NaN for padding)."""
        return np.asarray(self.context["context_time"].values)

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the forecast axes: ``("origin", "lead", *space_dims)``."""
        return ("origin", "lead", *self.space_dims)

    def coords(self) -> dict[str, Any]:
        """Coordinates of forecasts over these origins (origin, lead, valid_time, space)."""
        out: dict[str, Any] = {
            "origin": ("origin", self.origin_time),
            "lead": ("lead", np.asarray(self.target["lead"].values)),
            "valid_time": (("origin", "lead"), self.valid_time),
        }
        for d in self.space_dims:
            if d in self.target.coords:
                out[d] = (d, np.asarray(self.target[d].values), dict(self.target[d].attrs))
        return out

    def label(self, predictive: _P) -> _P:
        """``predictive`` (batch shape ``(origin, lead, *space)``) labelled with these coords."""
        if tuple(predictive.batch_shape) != (len(self), self.n_leads, *self.space_shape):
            raise ValueError(
                f"predictive has batch_shape {tuple(predictive.batch_shape)}; expected "
                f"{(len(self), self.n_leads, *self.space_shape)} (origin, lead, *space)"
            )
        return predictive.with_labels(self.dims, self.coords())

    # ------------------------------------------------------------------ arrays
    def tensors(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``context (origin, context, *space)`` and ``target (origin, lead, *space)``.

        NaN where not observed (use ``torch.isfinite`` for the masks).
        """
        return (
            torch.as_tensor(np.asarray(self.context.values), dtype=dtype),
            torch.as_tensor(np.asarray(self.target.values), dtype=dtype),
        )

    def last_observed(self) -> tuple[np.ndarray, np.ndarray]:
        """Last observed context value per origin and point, and its age.

        Returns
        -------
        values ``(origin, *space)`` (NaN where the window has no observation) and ``age``
        ``(origin, *space)`` ints: 0 when the origin itself was observed, ``k`` when the last
        observation is ``k`` entries earlier (-1 where none).
        """
        return last_observed(np.asarray(self.context.values))

    def isel(self, origin: Any) -> Origins:
        """A subset of the origins (``origin`` an index, slice, array of ints or booleans)."""
        return Origins(
            self.context.isel(origin=origin),
            self.target.isel(origin=origin),
            self.data,
            dict(self.dropped),
            self.time_dim,
            self.step_leads,
        )

    def summary(self) -> str:
        """One line: how many origins were kept and how many dropped, and why."""
        parts = [
            f"{count} {DROP_REASONS[reason]}" for reason, count in self.dropped.items() if count
        ]
        total = sum(self.dropped.values())
        kept = f"{len(self)} origins with {self.n_leads} lead time(s)"
        if not total:
            return f"{kept}; none dropped"
        return f"{kept}; dropped {total}: " + "; ".join(parts)

    def __repr__(self) -> str:
        return f"Origins({self.summary()})"


def last_observed(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last finite entry along axis 1 of ``values (origin, context, *space)`` and its age.

    Returns ``(origin, *space)`` values (NaN where none is finite) and ages (-1 where none).
    """
    observed = np.isfinite(values)
    n_ctx = values.shape[1]
    reversed_obs = observed[:, ::-1]
    any_obs = reversed_obs.any(axis=1)
    age = np.argmax(reversed_obs, axis=1)
    position = n_ctx - 1 - age
    last = np.take_along_axis(values, position[:, None], axis=1)[:, 0]
    return np.where(any_obs, last, np.nan), np.where(any_obs, age, -1)


def _is_step(value: Any) -> bool:
    return is_integer_scalar(value)


def _as_offset(value: Any, name: str, datetime_axis: bool) -> Any:
    """A time offset: a pandas offset/Timedelta for datetime axes, a float for numeric ones."""
    if datetime_axis:
        if isinstance(value, (str, pd.Timedelta, np.timedelta64, pd.DateOffset)):
            try:
                return pd.tseries.frequencies.to_offset(value)
            except ValueError:
                pass
            try:
                return pd.Timedelta(value)
            except ValueError:
                pass
        raise ValueError(
            f"{name}={value!r}; expected a number of steps (int) or a time offset such as '6h', "
            "'1D' or '1MS'"
        )
    if is_real_scalar(value) and not is_integer_scalar(value):
        number = as_float(value, name, finite=False)
        if math.isfinite(number) and number > 0:
            return number
    raise ValueError(
        f"{name}={value!r}; on a numeric time axis expected a number of steps (int) or a "
        "positive float time offset"
    )


def _add(times: np.ndarray, offset: Any) -> np.ndarray:
    """``times + offset`` elementwise (datetime64 with a pandas offset, or numbers)."""
    if isinstance(offset, float):
        return times + offset
    return np.asarray(pd.DatetimeIndex(times) + offset).astype("datetime64[ns]")


def _sub(times: np.ndarray, offset: Any) -> np.ndarray:
    if isinstance(offset, float):
        return times - offset
    return np.asarray(pd.DatetimeIndex(times) - offset).astype("datetime64[ns]")


def _bound(value: Any, times: np.ndarray, name: str) -> Any:
    if value is None:
        return None
    if times.dtype.kind == "M":
        try:
            return np.datetime64(pd.Timestamp(value), "ns")
        except (ValueError, TypeError):
            raise ValueError(f"{name}={value!r}; expected a date such as '1996-01-01'") from None
    if times.dtype == object:
        return value
    if is_integer_scalar(value):
        return as_int(value, name)
    if is_real_scalar(value):
        return as_float(value, name, finite=False)
    raise ValueError(f"{name}={value!r}; expected a number on this numeric time axis")


def rolling_origins(
    data: Any,
    *,
    context: int | str | float,
    leads: Sequence[Any] | int | str,
    stride: int = 1,
    dim: str = "time",
    start: Any = None,
    end: Any = None,
    valid_end: Any = None,
    var: str | Sequence[str] | None = None,
    duplicates: str = "raise",
    keep_empty: bool = False,
) -> Origins:
    """Cut deterministic forecast origins from a series or a field.

    Every ``stride``-th time step of the data whose time lies in ``[start, end]`` is a
    candidate origin ``t0``. Its context is the window of the last ``context`` samples up to
    and including ``t0`` (an int), or every sample in ``(t0 - context, t0]`` (a time offset,
    for irregular sampling; windows are padded with NaN at their start to a common length).
    Its targets are the observations at each lead: ``t0``'s position plus ``lead`` steps (an
    int lead), or the sample at exactly ``t0 + lead`` (a time offset such as ``"6h"`` or
    ``"1MS"``; NaN when no sample has that time).

    A candidate is dropped when its context window starts before the data (``history``),
    when a lead falls after the last sample or after ``valid_end`` (``horizon``), when
    nothing in its context was observed (``no_context``) or nothing at any lead
    (``no_target``); :attr:`Origins.dropped` counts each reason and
    :meth:`Origins.summary` says it in words.

    Parameters
    ----------
    data:
        Anything :func:`~uqdyn.forecast.load_data` reads: an ``xarray.DataArray`` or
        ``Dataset``, a pandas ``Series`` or ``DataFrame``, a CSV, netCDF or zarr path. Dims
        ``(time, *space)``; NaN = not observed.
    context:
        Number of context samples (int >= 1), or a time span (``"30D"``; a positive float on
        a numeric time axis).
    leads:
        Lead times: ints (steps) or time offsets, all of one kind, increasing; a single value
        is a one-lead list.
    stride:
        Step between candidate origins, in samples.
    dim:
        Name of the time dim.
    start, end:
        Inclusive bounds on the origin times (dates or numbers; ``None``: unbounded). The
        context may reach before ``start``: it is the past, known at issue time.
    valid_end:
        Latest time any target may verify at (``None``: the end of the data). Use it to keep
        a training split's targets out of the validation period.
    var, duplicates:
        Passed to :func:`~uqdyn.forecast.load_data`.
    keep_empty:
        Keep origins without any observed target (they verify nothing but still forecast).

    Returns
    -------
    Origins
        ``context (origin, context, *space)``, ``target (origin, lead, *space)``, the data,
        and the drop counts.

    Raises
    ------
    ValueError
        Naming the argument: a lead longer than the data, leads not increasing or of mixed
        kinds, a bad context or stride, no origin left (with the drop counts).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from uqdyn.forecast import rolling_origins
    >>> series = pd.Series(np.sin(np.arange(48) / 3.0),
    ...                    index=pd.date_range("2000-01-01", periods=48, freq="MS"))
    >>> origins = rolling_origins(series, context=12, leads=[1, 2, 3])
    >>> origins.context.shape, origins.target.shape
    ((34, 12), (34, 3))
    >>> origins.summary()
    '34 origins with 3 lead time(s); dropped 14: 11 not enough history before the origin for the context window; 3 a lead time falls after the end of the data (or after valid_end)'
    """
    da = load_data(data, var, dim=dim, duplicates=duplicates)  # type: ignore[arg-type]
    times = np.asarray(da[dim].values)
    n_times = times.shape[0]
    datetime_axis = times.dtype.kind == "M"
    stride = as_int(stride, "stride", minimum=1)
    if isinstance(leads, (int, float, str)) or is_real_scalar(leads):
        lead_list: list[Any] = [leads]
    else:
        lead_list = list(leads)
    if not lead_list:
        raise ValueError("leads is empty; expected at least one lead time")
    step_leads = all(_is_step(v) for v in lead_list)
    if not step_leads and any(_is_step(v) for v in lead_list):
        raise ValueError(
            f"leads={lead_list!r} mixes steps (ints) and time offsets; expected one kind"
        )
    if step_leads:
        steps = [as_int(v, "leads") for v in lead_list]
        if min(steps) < 1:
            raise ValueError(f"leads={lead_list!r}; expected steps >= 1")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"leads={lead_list!r}; expected increasing lead times")
        if max(steps) >= n_times:
            raise ValueError(
                f"leads={lead_list!r}: the largest lead ({max(steps)} steps) is not shorter than "
                f"the data ({n_times} samples along {dim!r}); expected leads well within the series"
            )
        offsets: list[Any] = []
    else:
        if times.dtype == object:
            raise ValueError(
                f"leads={lead_list!r}: time-offset leads need datetime64 or numeric times, and "
                f"{dim!r} holds cftime dates; give leads in steps (ints)"
            )
        offsets = [_as_offset(v, "leads", datetime_axis) for v in lead_list]
        probe = times[:1]
        ends = [_add(probe, o)[0] for o in offsets]
        if any(b <= a for a, b in zip(ends, ends[1:], strict=False)) or ends[0] <= probe[0]:
            raise ValueError(f"leads={lead_list!r}; expected positive, increasing lead times")
        if _add(times[:1], offsets[-1])[0] > times[-1]:
            raise ValueError(
                f"leads={lead_list!r}: the largest lead reaches past the end of the data "
                f"({times[0]} + {lead_list[-1]} > {times[-1]}); expected leads within the series"
            )
    step_context = _is_step(context)
    if step_context:
        n_ctx = as_int(context, "context")
        if n_ctx < 1:
            raise ValueError(f"context={context!r}; expected an int >= 1 or a time span")
        if n_ctx >= n_times:
            raise ValueError(
                f"context={context!r} is not shorter than the data ({n_times} samples); expected "
                "a shorter window"
            )
        ctx_offset = None
    else:
        if times.dtype == object:
            raise ValueError(f"context={context!r}: a time span needs datetime64 or numeric times")
        ctx_offset = _as_offset(context, "context", datetime_axis)
    lo, hi = _bound(start, times, "start"), _bound(end, times, "end")
    last_valid = _bound(valid_end, times, "valid_end")
    candidates = np.arange(0, n_times, stride)
    if lo is not None:
        candidates = candidates[times[candidates] >= lo]
    if hi is not None:
        candidates = candidates[times[candidates] <= hi]
    if candidates.size == 0:
        raise ValueError(
            f"no time of the data lies in start={start!r}, end={end!r} (data from {times[0]} to "
            f"{times[-1]}); expected bounds inside the data"
        )
    dropped = dict.fromkeys(DROP_REASONS, 0)
    # --- context windows (positions into the data; -1 = padding)
    if ctx_offset is None:
        ok_history = candidates - (n_ctx - 1) >= 0
        positions = candidates[:, None] + np.arange(-(n_ctx - 1), 1)[None, :]
    else:
        window_start = _sub(times[candidates], ctx_offset)
        ok_history = window_start >= times[0]
        first = np.searchsorted(times, window_start, side="right")
        counts = candidates - first + 1
        n_ctx = int(counts.max())
        rel = np.arange(-(n_ctx - 1), 1)[None, :]
        positions = candidates[:, None] + rel
        positions = np.where(rel > -counts[:, None], positions, -1)
    # --- targets
    if step_leads:
        target_pos = candidates[:, None] + np.asarray(steps)[None, :]
        ok_horizon = target_pos.max(axis=1) < n_times
        target_pos = np.where(target_pos < n_times, target_pos, -1)
        valid = np.where(target_pos >= 0, times[np.clip(target_pos, 0, n_times - 1)], times[0])
        if datetime_axis:
            valid = np.where(target_pos >= 0, valid, np.datetime64("NaT"))
    else:
        valid = np.stack([_add(times[candidates], o) for o in offsets], axis=1)
        ok_horizon = valid.max(axis=1) <= times[-1]
        index = pd.Index(times)
        target_pos = index.get_indexer(valid.reshape(-1)).reshape(valid.shape)
    if last_valid is not None:
        ok_horizon &= valid.max(axis=1) <= last_valid
    values = np.asarray(da.values)
    pad = np.full((1, *values.shape[1:]), np.nan)
    padded = np.concatenate([values, pad], axis=0)  # index -1 -> the NaN row
    ctx_values = padded[positions]
    tgt_values = padded[target_pos]
    space_axes = tuple(range(2, ctx_values.ndim))
    has_context = np.isfinite(ctx_values).any(axis=(1, *space_axes))
    has_target = np.isfinite(tgt_values).any(axis=(1, *space_axes))
    keep = np.ones(candidates.size, dtype=bool)
    for reason, ok in (
        ("history", ok_history),
        ("horizon", ok_horizon),
        ("no_context", has_context),
        ("no_target", has_target | keep_empty),
    ):
        dropped[reason] = int((keep & ~ok).sum())
        keep &= ok
    if not keep.any():
        counts_text = ", ".join(f"{k}: {v}" for k, v in dropped.items() if v)
        raise ValueError(
            f"no forecast origin is left of {candidates.size} candidates ({counts_text}); expected "
            "a longer series, a shorter context or shorter leads"
        )
    positions, target_pos = positions[keep], target_pos[keep]
    ctx_values, tgt_values, valid = ctx_values[keep], tgt_values[keep], valid[keep]
    origin_times = times[candidates[keep]]
    nat = np.datetime64("NaT", "ns") if datetime_axis else np.nan
    ctx_times = np.where(positions >= 0, times[np.clip(positions, 0, n_times - 1)], nat)
    space_dims = tuple(str(d) for d in da.dims[1:])
    space_coords = {d: da[d] for d in space_dims if d in da.coords}
    lead_coord = np.asarray(lead_list if step_leads else [str(v) for v in lead_list])
    context_da = xr.DataArray(
        ctx_values,
        dims=("origin", "context", *space_dims),
        coords={
            "origin": origin_times,
            "context": np.arange(-(n_ctx - 1), 1),
            "context_time": (("origin", "context"), ctx_times),
            **space_coords,
        },
        name=da.name,
        attrs=dict(da.attrs),
    )
    target_da = xr.DataArray(
        tgt_values,
        dims=("origin", "lead", *space_dims),
        coords={
            "origin": origin_times,
            "lead": lead_coord,
            "valid_time": (("origin", "lead"), valid),
            **space_coords,
        },
        name=da.name,
        attrs=dict(da.attrs),
    )
    return Origins(context_da, target_da, da, dropped, dim, step_leads)
