"""Mergeable accumulators of calibration diagnostics: rank and PIT histograms, reliability.

They follow the rules of :mod:`uqdyn.scoring.accumulate` (``update(batch...)``,
``merge(other)``, ``result()``; float64 sums and integer counts, so any split of the data and
any merge order give the one-shot result).

* :class:`RankHistogramAccumulator` -- counts of :func:`uqdyn.calibration.rank_histogram`.
* :class:`PITHistogramAccumulator` -- histogram of :func:`uqdyn.calibration.pit` values.
* :class:`ReliabilityAccumulator` -- :func:`uqdyn.calibration.reliability_curve`.

Random tie breaking (ensemble ranks with ties, randomized ensemble PIT) draws from the
``generator`` per batch, so for such data the accumulated result equals the one-shot one in
distribution, not draw for draw. Without ties in the ranks (continuous data) the rank
histogram is identical; for continuous forecasts (e.g. ``Normal``) the PIT histogram and the
reliability curve are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn.scoring.accumulate import (
    _as_kind,
    _check_same,
    _kind,
    _mask_is_empty,
    _numpy,
    bin_edges,
)

__all__ = ["RankHistogramAccumulator", "PITHistogramAccumulator", "ReliabilityAccumulator"]


class RankHistogramAccumulator:
    """Counts of :func:`uqdyn.calibration.rank_histogram` summed over batches.

    Parameters
    ----------
    member_dim:
        Member axis of the forecasts arrays (int, or dim name for xarray).
    generator:
        Seeded ``torch.Generator`` for random tie breaking (drawn per batch).

    The result, integer counts of shape ``(M + 1,)``, equals the one-shot rank histogram of
    all batches exactly when no member equals its observation; with ties it is equal in
    distribution (the draws differ).
    """

    def __init__(
        self, *, member_dim: int | str = -1, generator: torch.Generator | None = None
    ) -> None:
        self.member_dim = member_dim
        self.generator = generator
        self._kind: str | None = None
        self.counts: np.ndarray | None = None

    def _config(self) -> tuple:
        return (self.member_dim,)

    def update(self, obs: Any, forecasts: Any, *, mask: Any = None) -> RankHistogramAccumulator:
        """Add the rank counts of one batch (only ``mask`` True points)."""
        from .metrics import rank_histogram

        kind = _kind(obs)
        if _mask_is_empty(mask):
            return self
        counts = _numpy(
            rank_histogram(
                obs, forecasts, member_dim=self.member_dim, generator=self.generator, mask=mask
            )
        ).astype(np.int64)
        self._add(counts, kind)
        return self

    def _add(self, counts: np.ndarray, kind: str | None) -> None:
        if self.counts is None:
            self.counts, self._kind = counts.copy(), kind
            return
        if counts.shape != self.counts.shape:
            raise ValueError(
                f"a batch with {counts.size - 1} members after batches with "
                f"{self.counts.size - 1}; expected one ensemble size"
            )
        self.counts = self.counts + counts

    def merge(self, other: RankHistogramAccumulator) -> RankHistogramAccumulator:
        """Add the counts of ``other``; returns self."""
        _check_same(self, other, "RankHistogramAccumulator")
        if other.counts is not None:
            self._add(other.counts, other._kind if self._kind is None else self._kind)
        return self

    def result(self) -> Any:
        """Counts of each rank ``0..M``, shape ``(M + 1,)`` (xarray: dim ``"rank"``)."""
        if self.counts is None:
            raise ValueError("no batch was added; call update(...) first")
        return _as_kind(self.counts.copy(), self._kind, "rank", np.arange(self.counts.size))


class PITHistogramAccumulator:
    """Histogram of PIT values (:func:`uqdyn.calibration.pit`) summed over batches.

    Counts ``c_k = #{i : e_k <= PIT_i < e_{k+1}}`` with the last bin closed on the right
    (``numpy.histogram``'s rule), over the kept points; a flat histogram means a calibrated
    forecast. The counts equal ``numpy.histogram(pit(all obs, all forecasts), edges)`` exactly
    for continuous forecasts; randomized ensemble PITs are equal in distribution.

    Parameters
    ----------
    bins:
        Number of equal bins on [0, 1], or increasing bin edges in [0, 1].
    member_dim:
        Member axis when the forecasts are ensemble arrays; None for Predictive forecasts.
    generator:
        Seeded ``torch.Generator`` for the randomized PIT of ensembles.
    """

    def __init__(
        self,
        bins: int | Sequence[float] = 10,
        *,
        member_dim: int | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        edges = bin_edges(bins)
        self.edges = edges
        self.member_dim = member_dim
        self.generator = generator
        self._kind: str | None = None
        self.counts = np.zeros(edges.size - 1, dtype=np.int64)
        self.n_points = 0

    def _config(self) -> tuple:
        return (tuple(self.edges.tolist()), self.member_dim)

    def update(self, obs: Any, forecast: Any, *, mask: Any = None) -> PITHistogramAccumulator:
        """Add the PIT histogram of one batch (only ``mask`` True points)."""
        from .metrics import pit

        kind = _kind(obs)
        values = _numpy(pit(obs, forecast, member_dim=self.member_dim, generator=self.generator))
        keep = np.ones(values.shape, bool)
        if mask is not None:
            m = _numpy(mask)
            if m.dtype != bool:
                raise TypeError(f"mask has dtype {m.dtype}; expected a boolean mask")
            keep = np.broadcast_to(m, values.shape)
        kept = values[keep]
        n_nan = int(np.isnan(kept).sum())
        if n_nan:
            raise ValueError(
                f"{n_nan} PIT values are NaN (NaN obs or members); expected finite values at "
                "the kept points (pass mask= to leave them out)"
            )
        counts, _ = np.histogram(kept, bins=self.edges)
        self.counts = self.counts + counts.astype(np.int64)
        self.n_points += int(kept.size)
        self._kind = kind if self._kind is None else self._kind
        return self

    def merge(self, other: PITHistogramAccumulator) -> PITHistogramAccumulator:
        """Add the counts of ``other``; returns self."""
        _check_same(self, other, "PITHistogramAccumulator")
        self.counts = self.counts + other.counts
        self.n_points += other.n_points
        self._kind = other._kind if self._kind is None else self._kind
        return self

    def result(self) -> Any:
        """Counts per bin, shape ``(n_bins,)`` (xarray: dim ``"pit_bin"``, bin centres)."""
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        return _as_kind(self.counts.copy(), self._kind, "pit_bin", centres)


class ReliabilityAccumulator:
    """:func:`uqdyn.calibration.reliability_curve` accumulated over batches.

    Keeps, per level ``p_j``, the count ``C_j = #{i : PIT_i <= p_j}`` and the number ``N`` of
    kept points; the result is ``ReliabilityCurve(nominal=p, observed=C / N)``. The counts are
    those of the one-shot function (same PIT, same comparison in the PIT's dtype), so the
    curve equals ``reliability_curve`` of all batches exactly for continuous forecasts;
    randomized ensemble PITs are equal in distribution.

    Parameters
    ----------
    levels:
        Increasing levels in [0, 1]; default 101 levels ``0, 0.01, ..., 1`` (as
        ``reliability_curve``).
    member_dim, generator:
        As in :func:`uqdyn.calibration.reliability_curve`.
    """

    def __init__(
        self,
        levels: Sequence[float] | Tensor | None = None,
        *,
        member_dim: int | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if levels is None:
            nominal = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
        else:
            nominal = torch.as_tensor(np.asarray(levels, dtype=np.float64))
            if nominal.dim() != 1 or nominal.numel() == 0:
                raise ValueError(f"levels={levels!r}; expected a sequence of levels")
            if bool(((nominal < 0) | (nominal > 1)).any()):
                raise ValueError(f"levels={levels!r}; expected levels in [0, 1]")
            if nominal.numel() > 1 and not bool((nominal[1:] > nominal[:-1]).all()):
                raise ValueError(f"levels={levels!r}; expected strictly increasing levels")
        self.nominal = nominal
        self.member_dim = member_dim
        self.generator = generator
        self.counts = torch.zeros(nominal.numel(), dtype=torch.int64)
        self.n_points = 0
        self._kind: str | None = None
        self._dtype: torch.dtype | None = None

    def _config(self) -> tuple:
        return (tuple(self.nominal.tolist()), self.member_dim)

    def update(self, obs: Any, forecast: Any, *, mask: Any = None) -> ReliabilityAccumulator:
        """Add the level counts of one batch (only ``mask`` True points)."""
        from .metrics import pit

        kind = _kind(obs)
        values = pit(obs, forecast, member_dim=self.member_dim, generator=self.generator)
        v = values if isinstance(values, Tensor) else torch.as_tensor(_numpy(values))
        v = v.detach().cpu()
        if mask is not None:
            m = torch.as_tensor(_numpy(mask))
            if m.dtype != torch.bool:
                raise TypeError(f"mask has dtype {m.dtype}; expected a boolean mask")
            v = v[m.expand(v.shape)]
        v = v.flatten()
        n_nan = int(torch.isnan(v).sum())
        if n_nan:
            raise ValueError(
                f"{n_nan} PIT values are NaN (NaN obs or members); expected finite values at "
                "the kept points (pass mask= to leave them out)"
            )
        pits, _ = torch.sort(v)
        count = torch.searchsorted(pits, self.nominal.to(pits.dtype), right=True)
        self.counts = self.counts + count.to(torch.int64)
        self.n_points += int(pits.numel())
        self._kind = kind if self._kind is None else self._kind
        self._dtype = pits.dtype if self._dtype is None else self._dtype
        return self

    def merge(self, other: ReliabilityAccumulator) -> ReliabilityAccumulator:
        """Add the counts of ``other``; returns self."""
        _check_same(self, other, "ReliabilityAccumulator")
        self.counts = self.counts + other.counts
        self.n_points += other.n_points
        self._kind = other._kind if self._kind is None else self._kind
        self._dtype = other._dtype if self._dtype is None else self._dtype
        return self

    def result(self) -> Any:
        """``ReliabilityCurve(nominal, observed)`` in the batches' kind (xarray: ``quantile``)."""
        from .metrics import ReliabilityCurve

        if self.n_points == 0:
            raise ValueError("no point was added; call update(...) first")
        dtype = self._dtype or torch.float64
        observed = (self.counts.to(dtype) / self.n_points).numpy()
        nominal = self.nominal.to(dtype).numpy()
        levels = self.nominal.numpy()
        return ReliabilityCurve(
            _as_kind(nominal, self._kind, "quantile", levels),
            _as_kind(observed, self._kind, "quantile", levels),
        )
