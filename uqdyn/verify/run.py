"""Scores of an archived forecast against observations, per group, as a Dataset and a table.

:func:`verify` loops over the labels of the *kept* dims (the ``by`` dims and any dim that is
neither averaged nor grouped), reads one slice of forecasts and observations at a time and
scores it:

* CRPS: an ensemble gets the standard (``estimator="nrg"``) and the fair CRPS
  (:func:`uqdyn.scoring.crps_ensemble`), quantiles :func:`uqdyn.scoring.crps_quantile`
  (and the interval score of each central interval whose two quantile levels are present),
  a Gaussian the closed form :func:`uqdyn.scoring.crps_normal`; each averaged over ``dims``
  with the reduction ``weights`` (e.g. cos-latitude), NaN points left out;
* spread-skill ratio (as :func:`uqdyn.calibration.spread_skill_ratio` defines it:
  ``c sqrt(mean variance / mean squared error of the mean)``, ``c = sqrt(1 + 1/M)`` for
  ``M`` members, 1 for a Gaussian), coverage of central intervals
  (:func:`uqdyn.calibration.coverage`; for quantile forecasts the fraction inside each
  central quantile interval) and the rank histogram of an ensemble
  (:func:`uqdyn.calibration.rank_histogram`): pooled, unweighted, over the observed points
  of the row;
* rows too large for memory (``max_values``) are read and scored in blocks whose sums
  (weighted score sums, weight sums, counts, variance and squared-error sums) are merged;
* a map of the CRPS over ``lat``/``lon`` (mean over every other dim) when both are averaged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from uqdyn.calibration import coverage, rank_histogram
from uqdyn.predictive import Ensemble, Normal
from uqdyn.scoring import crps_ensemble, crps_normal, crps_quantile, interval_score
from uqdyn.study._interrupt import checkpoint

from .io import Forecast

__all__ = ["VerifyResult", "verify", "coslat_weights", "score_rows", "LEVELS", "MAX_VALUES"]

#: Nominal levels of the central intervals whose coverage is reported.
LEVELS = (0.5, 0.9)


@dataclass
class VerifyResult:
    """What :func:`verify` computed.

    Attributes
    ----------
    scores:
        Dataset over the kept dims: ``crps`` (and ``crps_fair`` for ensembles), ``spread_skill``,
        ``coverage`` (dim ``level``), ``rank_histogram`` (dim ``rank``, ensembles),
        ``interval_score`` (dim ``level``, quantiles), ``n_points``; ``crps_map``
        (``lat``, ``lon``) when both are averaged.
    kind:
        The forecast kind (``"ensemble"``, ``"quantile"``, ``"normal"``).
    kept:
        The dims of the rows of the table.
    event:
        With a threshold: the observed events and forecast probabilities of ``obs > threshold``
        at every observed point (1-D arrays), else None.
    """

    scores: xr.Dataset
    kind: str
    kept: tuple[str, ...]
    event: tuple[np.ndarray, np.ndarray] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def coslat_weights(obs: xr.DataArray, lat: str = "lat") -> xr.DataArray:
    """Cosine-latitude reduction weights from the ``lat`` coordinate (degrees)."""
    if lat not in obs.coords:
        raise ValueError(
            f"--weights coslat needs a {lat!r} coordinate; the data have coords "
            f"{tuple(str(c) for c in obs.coords)}"
        )
    values = np.asarray(obs[lat].values, dtype=float)
    if values.ndim != 1 or not np.isfinite(values).all() or (np.abs(values) > 90).any():
        raise ValueError(
            f"{lat!r} has values outside [-90, 90] degrees (or is not 1-D); expected latitudes"
            " in degrees for --weights coslat"
        )
    return xr.DataArray(np.cos(np.deg2rad(values)), dims=obs[lat].dims, coords={lat: values})


def _reduced(
    fn: Callable[..., Any],
    *args: Any,
    dims: Sequence[str],
    weights: Any,
    mask: xr.DataArray | None = None,
    **kwargs: Any,
) -> float:
    """``fn``'s score averaged over ``dims`` with reduction ``weights``, NaN points omitted.

    Uses the score's own ``dim=``/``weights=``/``nan_policy=`` (and ``mask=``) arguments; a
    score without them is averaged here in the same way (``sum(w s) / sum(w)`` over the
    non-NaN points where ``mask`` is True).
    """
    params = inspect.signature(fn).parameters
    if "dim" in params and "weights" in params and "nan_policy" in params:
        out = fn(*args, **kwargs, dim=list(dims), weights=weights, nan_policy="omit", mask=mask)
        return float(np.asarray(getattr(out, "values", out)))
    score = fn(*args, **kwargs)
    if mask is not None:
        score = score.where(mask)
    if weights is None:
        return float(score.mean(skipna=True))
    return float(score.weighted(weights).mean(list(dims), skipna=True))


def _np_last(da: xr.DataArray, dims: Sequence[str], core: str | None) -> np.ndarray:
    order = [*dims, core] if core is not None else list(dims)
    return np.asarray(da.transpose(*order).values, dtype=np.float64)


def _event_probability(fc: Forecast, threshold: float, dims: Sequence[str]) -> np.ndarray:
    if fc.kind == "ensemble":
        members = _np_last(fc.data, dims, fc.core_dim)
        return np.asarray((members > threshold).mean(-1))
    if fc.kind == "normal":
        assert fc.std is not None
        mean = torch.as_tensor(_np_last(fc.data, dims, None))
        std = torch.as_tensor(_np_last(fc.std, dims, None))
        return np.asarray(1.0 - Normal(mean, std).cdf(torch.tensor(threshold, dtype=mean.dtype)))
    levels = np.asarray(fc.data["quantile"].values, dtype=float)
    q = _np_last(fc.data, dims, "quantile")
    # P(Y <= t): linear interpolation of the levels between the quantiles around t (0 below
    # the lowest quantile, 1 above the highest), as numpy.interp does point by point
    k = (q <= threshold).sum(-1)
    inner = np.clip(k, 1, len(levels) - 1)
    q_lo = np.take_along_axis(q, (inner - 1)[..., None], -1)[..., 0]
    q_hi = np.take_along_axis(q, inner[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(q_hi > q_lo, (threshold - q_lo) / (q_hi - q_lo), 1.0)
    below = levels[inner - 1] + np.clip(frac, 0.0, 1.0) * (levels[inner] - levels[inner - 1])
    below = np.where(k == 0, 0.0, np.where(k == len(levels), 1.0, below))
    return np.asarray(1.0 - below)


def _central_pairs(levels: np.ndarray) -> list[tuple[float, int, int]]:
    """(nominal level, lower index, upper index) of the central intervals among ``levels``."""
    pairs = []
    for i, lo in enumerate(levels):
        for j in range(len(levels) - 1, i, -1):
            if abs(lo + levels[j] - 1.0) < 1e-9:
                pairs.append((round(float(levels[j] - lo), 10), i, j))
    return sorted(pairs)


def _check_names(names: Sequence[str], batch: Sequence[str], flag: str) -> list[str]:
    out = []
    for name in names:
        if name not in batch:
            raise ValueError(
                f"{flag} names {name!r}, not a dim of the forecasts; expected dims among "
                f"{tuple(batch)}"
            )
        if name in out:
            raise ValueError(f"{flag} names {name!r} twice; expected distinct dims")
        out.append(name)
    return out


#: Values (members included) read into memory at a time; larger rows are scored in blocks.
MAX_VALUES = 4_000_000


@dataclass
class _Sums:
    """Mergeable sums of one row over its blocks."""

    n: int = 0
    weight: float = 0.0
    score: dict[str, float] = field(default_factory=dict)
    inside: Any = 0.0
    ranks: Any = 0
    variance: float = 0.0
    sq_error: float = 0.0
    factor: float = 1.0
    map_sum: np.ndarray | None = None
    map_count: np.ndarray | None = None
    events: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)


def _blocks(forecast: Forecast, max_values: int) -> list[dict[str, slice]]:
    """Slices along the largest batch dim so that each block holds <= ``max_values`` values."""
    total = int(forecast.data.size)
    dims = forecast.batch_dims
    if total <= max_values or not dims:
        return [{}]
    others = [d for d in dims if d not in ("lat", "lon")]  # blocks keep whole maps if they can
    dim = max(others or dims, key=lambda d: forecast.data.sizes[d])
    size = forecast.data.sizes[dim]
    step = max(1, (max_values * size) // total)
    return [{dim: slice(start, min(start + step, size))} for start in range(0, size, step)]


def _score_block(
    acc: _Sums,
    fc: Forecast,
    y: xr.DataArray,
    w: xr.DataArray | None,
    *,
    nominal: list[float],
    pairs: list[tuple[float, int, int]],
    quantile_levels: np.ndarray | None,
    generator: torch.Generator,
    spatial: bool,
    threshold: float | None,
    part: dict[str, slice],
    map_shape: tuple[int, int],
) -> None:
    """Add the sums of one block (in memory; ``part`` of its row) to ``acc``."""
    row_dims = list(fc.batch_dims)
    template = fc.data.isel({fc.core_dim: 0}, drop=True) if fc.core_dim else fc.data
    y = y.broadcast_like(template).transpose(*row_dims)
    if w is not None and not set(w.dims) & set(row_dims):
        w = None
    y_np = np.asarray(y.values, dtype=np.float64)
    if fc.kind == "ensemble":
        members = _np_last(fc.data, row_dims, fc.core_dim)
        valid = np.isfinite(y_np) & np.isfinite(members).all(-1)
    elif fc.kind == "normal":
        assert fc.std is not None
        mean, std = _np_last(fc.data, row_dims, None), _np_last(fc.std, row_dims, None)
        valid = np.isfinite(y_np) & np.isfinite(mean) & np.isfinite(std)
    else:
        qs = _np_last(fc.data, row_dims, "quantile")
        valid = np.isfinite(y_np) & np.isfinite(qs).all(-1)
    n = int(valid.sum())
    if n == 0:
        return
    keep = xr.DataArray(valid, dims=row_dims, coords=y.coords)
    if w is None:
        weight = float(n)
    else:
        weight = float(np.where(valid, w.broadcast_like(y).transpose(*row_dims).values, 0).sum())

    def add(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        mean_b = _reduced(fn, *args, dims=row_dims, weights=w, mask=keep, **kwargs)
        if weight > 0:
            acc.score[name] = acc.score.get(name, 0.0) + mean_b * weight

    if fc.kind == "ensemble":
        member = str(fc.core_dim)
        add("crps", crps_ensemble, y, fc.data, member_dim=member, estimator="nrg")
        add("crps_fair", crps_ensemble, y, fc.data, member_dim=member, estimator="fair")
        point = crps_ensemble(y, fc.data, member_dim=member, estimator="fair")
        acc.inside = acc.inside + n * np.asarray(
            coverage(y_np, members, nominal, member_dim=-1, mask=valid)
        )
        acc.ranks = acc.ranks + np.asarray(
            rank_histogram(y_np, members, member_dim=-1, generator=generator, mask=valid)
        )
        pred: Any = Ensemble(torch.as_tensor(np.moveaxis(members[valid], -1, 0)))
        acc.factor = float(np.sqrt(1.0 + 1.0 / members.shape[-1]))
        y_valid = torch.as_tensor(y_np[valid])
    elif fc.kind == "normal":
        assert fc.std is not None
        add("crps", crps_normal, y, fc.data, fc.std)
        point = crps_normal(y, fc.data, fc.std)
        pred = Normal(torch.as_tensor(mean[valid]), torch.as_tensor(std[valid]))
        y_valid = torch.as_tensor(y_np[valid])
        acc.inside = acc.inside + n * np.asarray(coverage(y_valid, pred, nominal))
    else:
        assert quantile_levels is not None
        add("crps", crps_quantile, y, fc.data, quantile_levels, quantile_dim="quantile")
        point = crps_quantile(y, fc.data, quantile_levels, quantile_dim="quantile")
        inside = np.zeros(len(pairs))
        for k, (level, lo, hi) in enumerate(pairs):
            lower = fc.data.isel(quantile=lo, drop=True)
            upper = fc.data.isel(quantile=hi, drop=True)
            add(f"interval_score:{k}", interval_score, y, lower, upper, level)
            inside[k] = ((qs[..., lo] <= y_np) & (y_np <= qs[..., hi]) & valid).sum()
        acc.inside = acc.inside + inside
    if fc.kind != "quantile":
        acc.variance += float(pred.variance.sum())
        acc.sq_error += float((pred.mean - y_valid).square().sum())
    acc.n += n
    acc.weight += weight
    if spatial:
        others = [d for d in row_dims if d not in ("lat", "lon")]
        s = point.where(keep).transpose(*others, "lat", "lon")
        vals = np.asarray(s.values, dtype=np.float64).reshape(-1, s.sizes["lat"], s.sizes["lon"])
        ok = np.isfinite(vals)
        if acc.map_sum is None or acc.map_count is None:
            acc.map_sum, acc.map_count = np.zeros(map_shape), np.zeros(map_shape, dtype=np.int64)
        at = tuple(part.get(d, slice(None)) for d in ("lat", "lon"))
        acc.map_sum[at] += np.where(ok, vals, 0.0).sum(0)
        acc.map_count[at] += ok.sum(0)
    if threshold is not None:
        p = _event_probability(fc, float(threshold), row_dims)
        acc.events.append((y_np[valid] > threshold).astype(np.float64))
        acc.probs.append(np.asarray(p, dtype=np.float64)[valid])


def verify(
    forecast: Forecast,
    obs: xr.DataArray,
    *,
    dims: Sequence[str] | None = None,
    by: Sequence[str] = (),
    weights: str | xr.DataArray | None = None,
    levels: Sequence[float] = LEVELS,
    threshold: float | None = None,
    seed: int = 0,
    max_values: int = MAX_VALUES,
) -> VerifyResult:
    """Score ``forecast`` against aligned ``obs`` (see :func:`uqdyn.verify.io.align`).

    Parameters
    ----------
    forecast, obs:
        From :func:`~uqdyn.verify.io.read_forecast` and :func:`~uqdyn.verify.io.align`.
    dims:
        Dims averaged over (default: every forecast dim except ``by``).
    by:
        Dims kept as rows of the table (e.g. ``["lead"]``); every dim in neither ``dims``
        nor ``by`` is kept as well.
    weights:
        ``"coslat"`` (cosine of the ``lat`` coordinate), a DataArray of reduction weights
        broadcast by dim name, or None (equal weights). Applies to the CRPS and interval
        scores; the calibration diagnostics count points.
    levels:
        Nominal levels of the central intervals whose coverage is reported.
    threshold:
        With a value, the event ``obs > threshold`` and its forecast probability are
        collected for a CORP reliability diagram.
    seed:
        Seed of the random tie breaking of the rank histogram.
    max_values:
        At most this many forecast values (members included) are read at a time: a larger
        row is scored in blocks along its largest dim and the blocks' sums are merged.

    Returns
    -------
    VerifyResult
    """
    batch = forecast.batch_dims
    by_list = _check_names(list(by), batch, "--by")
    if dims is None:
        dims_list = [d for d in batch if d not in by_list]
    else:
        dims_list = _check_names(list(dims), batch, "--dims")
        both = [d for d in by_list if d in dims_list]
        if both:
            raise ValueError(f"{both[0]!r} is in both --dims and --by; expected one of them")
    if not dims_list:
        raise ValueError("no dim is left to average over; expected --dims or fewer --by dims")
    kept = tuple(d for d in batch if d not in dims_list)
    if isinstance(weights, str):
        if weights != "coslat":
            raise ValueError(f"--weights {weights!r}; expected 'coslat'")
        w_all: xr.DataArray | None = coslat_weights(forecast.data)
    else:
        w_all = weights
    if w_all is not None:
        w_dims = [str(d) for d in w_all.dims]
        bad = [d for d in w_dims if d not in batch]
        if bad:
            raise ValueError(f"weights have dims {bad} the forecasts lack; expected {batch}")
        w_all = w_all.load()
    nominal = [float(v) for v in levels]
    quantile_levels = (
        np.array(forecast.data["quantile"].values, dtype=float)
        if forecast.kind == "quantile"
        else None
    )
    pairs = _central_pairs(quantile_levels) if quantile_levels is not None else []
    shape = tuple(forecast.data.sizes[d] for d in kept)
    n_rank = forecast.data.sizes[forecast.core_dim] + 1 if forecast.kind == "ensemble" else 0
    table: dict[str, np.ndarray] = {"crps": np.full(shape, np.nan)}
    if forecast.kind == "ensemble":
        table["crps_fair"] = np.full(shape, np.nan)
        table["rank_histogram"] = np.zeros((*shape, n_rank), dtype=np.int64)
    if forecast.kind != "quantile":
        table["spread_skill"] = np.full(shape, np.nan)
        table["coverage"] = np.full((*shape, len(nominal)), np.nan)
    else:
        table["coverage"] = np.full((*shape, len(pairs)), np.nan)
        table["interval_score"] = np.full((*shape, len(pairs)), np.nan)
    table["n_points"] = np.zeros(shape, dtype=np.int64)
    spatial = "lat" in dims_list and "lon" in dims_list
    map_shape = (forecast.data.sizes["lat"], forecast.data.sizes["lon"]) if spatial else (0, 0)
    map_sum = map_count = None
    events: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    generator = torch.Generator().manual_seed(seed)
    for index in np.ndindex(*shape):
        sel = dict(zip(kept, index, strict=True))
        acc = _Sums()
        for part in _blocks(forecast.isel(**sel), max_values):
            checkpoint()
            fc = forecast.isel(**sel).isel(**part).load()
            y = obs.isel({k: v for k, v in sel.items() if k in obs.dims})
            y = y.isel({k: v for k, v in part.items() if k in y.dims}).load()
            w = None
            if w_all is not None:
                w = w_all.isel({k: v for k, v in sel.items() if k in w_all.dims})
                w = w.isel({k: v for k, v in part.items() if k in w.dims})
            _score_block(acc, fc, y, w, nominal=nominal, pairs=pairs,
                         quantile_levels=quantile_levels, generator=generator,
                         spatial=spatial, threshold=threshold, part=part,
                         map_shape=map_shape)  # fmt: skip
        table["n_points"][index] = acc.n
        if acc.n == 0:
            continue
        for name, total in acc.score.items():
            value = total / acc.weight
            if name.startswith("interval_score:"):
                table["interval_score"][index + (int(name.split(":")[1]),)] = value
            else:
                table[name][index] = value
        table["coverage"][index] = acc.inside / acc.n
        if forecast.kind == "ensemble":
            table["rank_histogram"][index] = acc.ranks
        if forecast.kind != "quantile":
            if not acc.sq_error > 0:
                raise ValueError(
                    f"the forecast mean equals obs at every point of {sel}; the spread-skill "
                    "ratio is undefined"
                )
            table["spread_skill"][index] = acc.factor * np.sqrt(acc.variance / acc.sq_error)
        if spatial and acc.map_sum is not None and acc.map_count is not None:
            map_sum = acc.map_sum if map_sum is None else map_sum + acc.map_sum
            map_count = acc.map_count if map_count is None else map_count + acc.map_count
        events += acc.events
        probs += acc.probs
    coords = {d: forecast.data[d].values for d in kept if d in forecast.data.coords}
    data_vars: dict[str, Any] = {}
    for name, values in table.items():
        if name == "rank_histogram":
            data_vars[name] = ((*kept, "rank"), values)
        elif name in ("coverage", "interval_score"):
            data_vars[name] = ((*kept, "level"), values)
        else:
            data_vars[name] = (kept, values)
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.assign_coords(level=[p[0] for p in pairs] if forecast.kind == "quantile" else nominal)
    if forecast.kind == "ensemble":
        ds = ds.assign_coords(rank=np.arange(n_rank))
    if spatial and map_sum is not None and map_count is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            crps_map = np.where(map_count > 0, map_sum / np.maximum(map_count, 1), np.nan)
        ds["crps_map"] = xr.DataArray(
            crps_map, dims=("lat", "lon"),
            coords={"lat": forecast.data["lat"].values, "lon": forecast.data["lon"].values},
        )  # fmt: skip
        ds["crps_map"].attrs["description"] = (
            "fair " if forecast.kind == "ensemble" else ""
        ) + "CRPS averaged over every dim but lat and lon"
    ds.attrs.update({"forecast_kind": forecast.kind, "averaged_over": " ".join(dims_list),
                     "weights": weights if isinstance(weights, str) else ("custom" if weights is not None else "none")})  # fmt: skip
    event = None
    if threshold is not None and events:
        event = (np.concatenate(events), np.concatenate(probs))
    return VerifyResult(ds, forecast.kind, kept, event)


def _fmt_label(value: Any) -> str:
    from .io import _label

    return _label(value)


def score_rows(result: VerifyResult) -> list[dict[str, Any]]:
    """One row per label combination of the kept dims: labels, then the scalar scores."""
    ds = result.scores
    kept = result.kept
    shape = tuple(ds.sizes[d] for d in kept)
    rows = []
    for index in np.ndindex(*shape):
        sel = dict(zip(kept, index, strict=True))
        row: dict[str, Any] = {}
        for d, i in sel.items():
            row[d] = _fmt_label(ds[d].values[i]) if d in ds.coords else str(i)
        point = ds.isel(sel)
        for name in ("crps", "crps_fair", "spread_skill"):
            if name in point:
                row[name] = float(point[name])
        for name in ("coverage", "interval_score"):
            if name in point:
                for level in point["level"].values:
                    row[f"{name}{round(float(level) * 100):d}"] = float(
                        point[name].sel(level=level)
                    )
        row["n_points"] = int(point["n_points"])
        rows.append(row)
    return rows
