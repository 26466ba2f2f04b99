"""Mergeable accumulators: verify an archive batch by batch, on several machines, then merge.

Each accumulator has ``update(batch...)`` (add a batch; returns the accumulator),
``merge(other)`` (add another accumulator of the same configuration, in place; returns the
accumulator) and ``result()``. The state is a few float64 sums (and integer counts), so
accumulators pickle cheaply, can be built in dask tasks or separate processes and merged in
any order: the sums are plain (not running-mean / Welford) float64 sums, so any split of the
data and any merge order give the one-shot value up to float64 rounding of the sums
(``~1e-15`` relative per term), and integer counts exactly.

* :class:`ScoreAccumulator` -- the (weighted) mean of any pointwise score, grouped by
  ``keep_dims`` (e.g. lead time): ``sum(w s) / sum(w)`` over the kept points.
* :class:`EventReliabilityAccumulator` -- the reliability diagram of probability forecasts
  of a binary event: per forecast-probability bin, the number of forecasts, their mean
  probability and the observed event frequency.

The accumulators of calibration diagnostics (rank and PIT histograms, reliability curves)
are in :mod:`uqdyn.calibration.accumulate` and follow the same rules.

Random tie breaking (ensemble ranks with ties, randomized ensemble PIT) draws from the
``generator`` per batch, so for such data the accumulated result equals the one-shot one in
distribution, not draw for draw. Without ties in the ranks (continuous data) the rank
histogram is identical; for continuous forecasts (e.g. ``Normal``) the PIT histogram and the
reliability curve are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import is_xarray

__all__ = [
    "ScoreAccumulator",
    "EventReliability",
    "EventReliabilityAccumulator",
]


def _kind(value: Any) -> str:
    if isinstance(value, Tensor):
        return "torch"
    if is_xarray(value):
        return "xarray"
    return "numpy"


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if is_xarray(value):
        return np.asarray(value.values)
    return np.asarray(value)


def _check_same(a: Any, b: Any, what: str) -> None:
    if type(a) is not type(b):
        raise TypeError(f"cannot merge a {type(b).__name__} into a {type(a).__name__}")
    if a._config() != b._config():
        raise ValueError(
            f"cannot merge {what}s with different settings: {a._config()} and {b._config()}"
        )
    if a._kind is not None and b._kind is not None and a._kind != b._kind:
        raise ValueError(
            f"cannot merge {what}s fed with {a._kind} and {b._kind} batches; expected one kind"
        )


def _as_kind(values: np.ndarray, kind: str | None, dim: str, coord: np.ndarray | None) -> Any:
    if kind == "torch":
        return torch.from_numpy(values)
    if kind == "xarray":
        import xarray as xr

        return xr.DataArray(values, dims=(dim,), coords=None if coord is None else {dim: coord})
    return values


class ScoreAccumulator:
    """Weighted mean of a pointwise score over batches, grouped by ``keep_dims``.

    Each :meth:`update` scores its batch pointwise with
    ``score_fn(*arrays, **score_kwargs)`` (shape ``(*batch,)``) and adds, per group of the
    ``keep_dims``, the float64 sums ``S = sum(w s)`` and ``W = sum(w)`` over the kept points:
    points with ``w != 0``, ``mask`` True and (with ``skipna=True``) a non-NaN score. A NaN
    score at a kept point makes its group's result NaN. :meth:`result` is ``S / W`` (NaN for
    groups without kept points), equal to the one-shot ``sum(w s) / sum(w)`` over all points
    of all batches to float64 rounding.

    Parameters
    ----------
    score_fn:
        A pointwise score (obs first), e.g. :func:`uqdyn.scoring.crps_ensemble`.
    keep_dims:
        Dims of the score kept in the result: names for xarray batches (groups are matched by
        coordinate label, so batches may hold different leads), int axes of the score for
        tensors / arrays (every batch then has the same size along them).
    weights:
        Default reduction weights, broadcastable to each batch's score (xarray: by dim name;
        labelled weights are selected at each batch's coordinate labels, so one weight array
        covers batches cut from any part of the grid). ``update(..., weights=...)`` overrides.
    skipna:
        Leave NaN scores out of both sums.
    score_kwargs:
        Passed to ``score_fn`` at every update (e.g. ``member_dim="member"``).

    Examples
    --------
    >>> import numpy as np
    >>> from uqdyn.scoring.crps_ensemble import crps_ensemble
    >>> acc = ScoreAccumulator(crps_ensemble, keep_dims=(0,))
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(3):
    ...     _ = acc.update(rng.normal(size=(2, 50)), rng.normal(size=(2, 50, 8)))
    >>> acc.result().shape
    (2,)
    """

    def __init__(
        self,
        score_fn: Callable[..., Any],
        *,
        keep_dims: Sequence[int | str] | int | str = (),
        weights: Any = None,
        skipna: bool = False,
        **score_kwargs: Any,
    ) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn is a {type(score_fn).__name__}; expected a score function")
        if isinstance(keep_dims, (int, str)):
            keep_dims = (keep_dims,)
        self.score_fn = score_fn
        self.keep_dims = tuple(keep_dims)
        if len(set(self.keep_dims)) != len(self.keep_dims):
            raise ValueError(f"keep_dims={keep_dims!r} names a dim twice; expected distinct dims")
        self.weights = weights
        self.skipna = bool(skipna)
        self.score_kwargs = score_kwargs
        self._kind: str | None = None
        self._sums: Any = None  # (S, W, n) float64 arrays, or xarray for xarray batches

    def _config(self) -> tuple:
        return (self.score_fn, self.keep_dims, self.skipna, sorted(self.score_kwargs.items()))

    @property
    def n_points(self) -> Any:
        """Number of kept points per group so far."""
        return None if self._sums is None else self._sums[2]

    def update(self, *arrays: Any, weights: Any = None, mask: Any = None, **kwargs: Any):
        """Score one batch (``score_fn(*arrays, **score_kwargs, **kwargs)``) and add its sums."""
        score = self.score_fn(*arrays, **self.score_kwargs, **kwargs)
        kind = _kind(score)
        if self._kind is not None and kind != self._kind:
            raise TypeError(
                f"this batch scores as {kind} but earlier ones as {self._kind}; expected one kind"
            )
        w = self.weights if weights is None else weights
        sums = (
            self._sums_xarray(score, w, mask)
            if kind == "xarray"
            else self._sums_array(score, w, mask)
        )
        self._kind = kind
        self._add(sums)
        return self

    def _sums_array(self, score: Any, weights: Any, mask: Any) -> tuple[np.ndarray, ...]:
        s = _numpy(score).astype(np.float64)
        ndim = s.ndim
        keep_axes = []
        for d in self.keep_dims:
            if isinstance(d, str) or not -ndim <= int(d) < ndim:
                raise ValueError(
                    f"keep_dims={self.keep_dims!r}; expected int axes of the score's shape "
                    f"{s.shape} (dim names need xarray batches)"
                )
            keep_axes.append(int(d) % ndim)
        w = np.ones((), np.float64) if weights is None else _numpy(weights).astype(np.float64)
        _check_weights(w)
        keep = np.ones(s.shape, dtype=bool)
        if mask is not None:
            m = _numpy(mask)
            if m.dtype != bool:
                raise TypeError(f"mask has dtype {m.dtype}; expected a boolean mask")
            keep = keep & m
        try:
            w = np.broadcast_to(w, s.shape)
        except ValueError:
            raise ValueError(
                f"weights of shape {w.shape} does not broadcast to the score's shape {s.shape}"
            ) from None
        keep = keep & (w != 0)
        if self.skipna:
            keep = keep & ~np.isnan(s)
        axes = tuple(i for i in range(ndim) if i not in keep_axes)
        w_kept = np.where(keep, w, 0.0)
        total = (w_kept * np.where(keep, s, 0.0)).sum(axes)
        order = sorted(keep_axes)
        perm = [order.index(a) for a in keep_axes]  # results follow the order of keep_dims
        return tuple(
            np.transpose(x, perm) for x in (total, w_kept.sum(axes), keep.sum(axes).astype(float))
        )

    def _sums_xarray(self, score: Any, weights: Any, mask: Any) -> tuple[Any, ...]:
        import xarray as xr

        for d in self.keep_dims:
            if d not in score.dims:
                raise ValueError(
                    f"keep_dims names {d!r}, not a dim of the score {score.dims}; expected names"
                )
        s = score.astype(np.float64)
        if weights is None:
            w = xr.ones_like(s)
        else:
            if not is_xarray(weights):
                raise TypeError(
                    f"weights is a {type(weights).__name__} for xarray batches; expected an "
                    "xarray.DataArray (broadcast by dim name)"
                )
            extra = [d for d in weights.dims if d not in s.dims]
            if extra:
                raise ValueError(
                    f"weights has dims {weights.dims}; expected dims among the score's {s.dims}"
                )
            labels = {
                d: s[d].values for d in weights.dims if d in s.indexes and d in weights.indexes
            }
            w = weights.sel(labels) if labels else weights
            _check_weights(np.asarray(w.values, dtype=np.float64))
            w = w.astype(np.float64).broadcast_like(s)
        keep = w != 0
        if mask is not None:
            if not is_xarray(mask) or mask.dtype != bool:
                raise TypeError("mask for xarray batches; expected a boolean xarray.DataArray")
            keep = keep & mask
        if self.skipna:
            keep = keep & s.notnull()
        other = [d for d in s.dims if d not in self.keep_dims]
        w_kept = xr.where(keep, w, 0.0)
        total = (w_kept * xr.where(keep, s, 0.0)).sum(other, skipna=False)
        out = (total, w_kept.sum(other), keep.sum(other).astype(np.float64))
        return tuple(
            x.transpose(*self.keep_dims).drop_vars([c for c in x.coords if c not in self.keep_dims])
            for x in out
        )

    def _add(self, sums: tuple[Any, ...]) -> None:
        if self._sums is None:
            self._sums = sums
            return
        if self._kind == "xarray":
            import xarray as xr

            old = xr.align(*self._sums, *sums, join="outer", fill_value=0.0)
            self._sums = tuple(old[i] + old[i + 3] for i in range(3))
            return
        if self._sums[0].shape != sums[0].shape:
            raise ValueError(
                f"batch groups of shape {sums[0].shape} differ from earlier ones "
                f"{self._sums[0].shape} along keep_dims={self.keep_dims}; expected the same "
                "(use xarray batches to group by coordinate label)"
            )
        self._sums = tuple(a + b for a, b in zip(self._sums, sums, strict=True))

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """Add the sums of ``other`` (same score, settings and batch kind); returns self."""
        _check_same(self, other, "ScoreAccumulator")
        if other._sums is not None:
            kind = self._kind
            self._kind = other._kind if kind is None else kind
            self._add(other._sums)
        return self

    def result(self) -> Any:
        """``S / W`` per group (NaN where no point was kept), in the batches' kind."""
        if self._sums is None:
            raise ValueError("no batch was added; call update(...) first")
        total, weight, _ = self._sums
        if self._kind == "xarray":
            return total / weight.where(weight != 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(weight != 0, total / np.where(weight != 0, weight, 1.0), np.nan)
        return torch.from_numpy(out) if self._kind == "torch" else out


def _check_weights(w: np.ndarray) -> None:
    if w.dtype.kind not in "fiub":
        raise TypeError(f"weights has dtype {w.dtype}; expected real reduction weights")
    if bool(np.isnan(w).any()):
        raise ValueError(f"weights has {int(np.isnan(w).sum())} NaN entries; expected numbers")
    if bool((w < 0).any()):
        raise ValueError(f"weights has {int((w < 0).sum())} negative entries; expected >= 0")


def _mask_is_empty(mask: Any) -> bool:
    return mask is not None and not bool(_numpy(mask).any())


def bin_edges(bins: int | Sequence[float]) -> np.ndarray:
    """Bin edges on [0, 1]: ``bins`` equal bins, or the given increasing edges (checked)."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins={bins}; expected at least one bin")
        return np.linspace(0.0, 1.0, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not bool((np.diff(edges) > 0).all()):
        raise ValueError(f"bins={bins!r}; expected an int or increasing bin edges")
    if edges[0] < 0 or edges[-1] > 1:
        raise ValueError(f"bins={bins!r}; expected bin edges within [0, 1]")
    return edges


class EventReliability(NamedTuple):
    """Reliability diagram of binary-event probability forecasts, per probability bin.

    Attributes
    ----------
    forecast_probability:
        Mean forecast probability of the forecasts in each bin (NaN for empty bins).
    observed_frequency:
        Fraction of those forecasts whose event happened (NaN for empty bins).
    counts:
        Number of forecasts in each bin (integer).
    """

    forecast_probability: Any
    observed_frequency: Any
    counts: Any


class EventReliabilityAccumulator:
    """Reliability diagram of probability forecasts of a binary event, over batches.

    Forecast probabilities ``p_i`` fall in bins ``[e_k, e_{k+1})`` (the last bin closed on the
    right); per bin the accumulator keeps the count ``n_k``, the float64 sum of ``p_i`` and
    the number of events ``o_k``. The result has, per bin, the mean forecast probability, the
    observed frequency ``o_k / n_k`` (NaN for empty bins) and ``n_k``: counts exactly as one
    pass over all the data, the mean probability to float64 rounding. ``observed_frequency``
    and ``counts`` are those of ``xskillscore.reliability`` with the same bin edges.

    Parameters
    ----------
    bins:
        Number of equal bins on [0, 1], or increasing bin edges in [0, 1].

    References
    ----------
    Wilks (2011), Statistical Methods in the Atmospheric Sciences, section 8.4.4.
    """

    def __init__(self, bins: int | Sequence[float] = 10) -> None:
        self.edges = bin_edges(bins)
        n = self.edges.size - 1
        self.counts = np.zeros(n, dtype=np.int64)
        self.events = np.zeros(n, dtype=np.int64)
        self.prob_sums = np.zeros(n, dtype=np.float64)
        self._kind: str | None = None

    def _config(self) -> tuple:
        return (tuple(self.edges.tolist()),)

    def update(self, obs: Any, prob: Any, *, mask: Any = None) -> EventReliabilityAccumulator:
        """Add one batch: ``obs`` the events (bool, or 0/1), ``prob`` their probabilities."""
        kind = _kind(prob)
        o, p = _numpy(obs), _numpy(prob).astype(np.float64)
        if o.dtype != bool:
            if o.dtype.kind not in "fiu" or not bool(
                np.isin(o[~np.isnan(o.astype(float))], [0, 1]).all()
            ):
                raise ValueError("obs holds values other than 0/1; expected events (bool or 0/1)")
        try:
            o, p = np.broadcast_arrays(o, p)
        except ValueError:
            raise ValueError(
                f"obs of shape {o.shape} and prob of shape {p.shape} do not broadcast"
            ) from None
        keep = np.ones(p.shape, bool)
        if mask is not None:
            m = _numpy(mask)
            if m.dtype != bool:
                raise TypeError(f"mask has dtype {m.dtype}; expected a boolean mask")
            keep = np.broadcast_to(m, p.shape)
        o, p = o[keep].astype(np.float64), p[keep]
        n_nan = int((np.isnan(o) | np.isnan(p)).sum())
        if n_nan:
            raise ValueError(
                f"{n_nan} kept points have a NaN event or probability; expected finite values "
                "(pass mask= to leave them out)"
            )
        if p.size and (p.min() < 0 or p.max() > 1):
            raise ValueError("prob has values outside [0, 1]; expected probabilities")
        k = np.clip(np.searchsorted(self.edges, p, side="right") - 1, 0, self.edges.size - 2)
        inside = (p >= self.edges[0]) & (p <= self.edges[-1])
        k, o, p = k[inside], o[inside], p[inside]
        n = self.edges.size - 1
        self.counts = self.counts + np.bincount(k, minlength=n)
        self.events = self.events + np.bincount(k, weights=o, minlength=n).astype(np.int64)
        self.prob_sums = self.prob_sums + np.bincount(k, weights=p, minlength=n)
        self._kind = kind if self._kind is None else self._kind
        return self

    def merge(self, other: EventReliabilityAccumulator) -> EventReliabilityAccumulator:
        """Add the sums of ``other``; returns self."""
        _check_same(self, other, "EventReliabilityAccumulator")
        self.counts = self.counts + other.counts
        self.events = self.events + other.events
        self.prob_sums = self.prob_sums + other.prob_sums
        self._kind = other._kind if self._kind is None else self._kind
        return self

    def result(self) -> EventReliability:
        """:class:`EventReliability` per bin (xarray: dim ``"forecast_probability"``, centres)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(self.counts > 0, self.counts, 1).astype(np.float64)
            mean_p = np.where(self.counts > 0, self.prob_sums / n, np.nan)
            freq = np.where(self.counts > 0, self.events / n, np.nan)
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        dim = "forecast_probability"
        return EventReliability(
            _as_kind(mean_p, self._kind, dim, centres),
            _as_kind(freq, self._kind, dim, centres),
            _as_kind(self.counts.copy(), self._kind, dim, centres),
        )
