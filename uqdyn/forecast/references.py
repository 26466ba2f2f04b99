"""Reference forecasts: persistence, climatology and damped anomaly persistence.

Each is a model like any other: ``fit(train)`` on training :class:`~uqdyn.forecast.Origins`
and ``predict(origins)`` returning a :class:`~uqdyn.predictive.Normal` with batch shape
``(origin, lead, *space)``, labelled with the origins' coordinates (``to_xarray()`` gives
back the user's ``origin``, ``lead``, ``valid_time`` and space coordinates). Missing values
(NaN) never enter a fit; a point never observed in the training data gets a NaN forecast
(it has nothing to verify against either), every other point a finite one.

References
----------
D. S. Wilks, *Statistical Methods in the Atmospheric Sciences*, 4th ed., Elsevier 2019,
ch. 9 (reference forecasts and skill scores). R. W. Katz and A. H. Murphy, "Forecast value:
prototype decision-making models", 1997 (damped persistence as the AR(1) benchmark).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from uqdyn._checks import as_int
from uqdyn.predictive import Normal

from .origins import Origins, last_observed

__all__ = ["Climatology", "Persistence", "DampedPersistence", "SEASONS"]

#: Seasonal-cycle resolutions of :class:`Climatology` and their number of bins.
SEASONS = {"month": 12, "dayofyear": 366, "hour": 24}

_MIN_STD = 1e-12


def _check_origins(origins: Any, name: str) -> Origins:
    if not isinstance(origins, Origins):
        raise TypeError(
            f"{name} is a {type(origins).__name__}; expected uqdyn.forecast.Origins (from "
            "rolling_origins)"
        )
    return origins


def _season_index(times: np.ndarray, season: str) -> np.ndarray:
    """Bin of each time in the seasonal cycle (month 0..11, day of year 0..365, hour 0..23).

    Missing times (NaT, padding of context windows) get -1.
    """
    flat = np.asarray(times).reshape(-1)
    if flat.dtype.kind == "M":
        index = pd.DatetimeIndex(flat)
        field = {"month": index.month, "dayofyear": index.day_of_year, "hour": index.hour}[season]
        out = np.asarray(field, dtype=np.float64) - (0 if season == "hour" else 1)
        out = np.where(np.isnan(out), -1, out)
    elif flat.dtype == object:  # cftime dates (None for padding)
        attr = {"month": "month", "dayofyear": "dayofyr", "hour": "hour"}[season]
        shift = 0 if season == "hour" else 1
        out = np.asarray([-1 if pd.isna(t) else getattr(t, attr) - shift for t in flat])
    else:
        raise ValueError(
            f"season={season!r} needs calendar times (datetime64 or cftime); the time axis is "
            f"numeric ({flat.dtype}); use kind='fixed' or 'running'"
        )
    return out.reshape(np.shape(times)).astype(np.int64)


def _nan_moments(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, sum and sum of squares of the finite entries along ``axis``."""
    finite = np.isfinite(values)
    zeroed = np.where(finite, values, 0.0)
    return finite.sum(axis), zeroed.sum(axis), np.square(zeroed).sum(axis)


def _mean_std(
    count: np.ndarray, total: np.ndarray, squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased std from moments; NaN where fewer than 2 values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = (squares - count * np.square(np.nan_to_num(mean))) / np.maximum(count - 1, 1)
    std = np.sqrt(np.clip(var, 0.0, None))
    std = np.where(count > 1, std, np.nan)
    return mean, std


def _normal(origins: Origins, loc: np.ndarray, scale: np.ndarray) -> Normal:
    """A labelled Normal over ``(origin, lead, *space)``; NaN stays NaN, spread floored."""
    loc_t = torch.as_tensor(loc, dtype=torch.float64)
    scale_t = torch.as_tensor(scale, dtype=torch.float64)
    scale_t = torch.where(torch.isfinite(scale_t), scale_t.clamp_min(_MIN_STD), scale_t)
    missing = ~(torch.isfinite(loc_t) & torch.isfinite(scale_t))
    loc_t = torch.where(missing, torch.nan, loc_t)
    scale_t = torch.where(missing, torch.nan, scale_t)
    shape = (len(origins), origins.n_leads, *origins.space_shape)
    return origins.label(
        Normal(loc_t.expand(shape).clone(), scale_t.expand(shape).clone(), validate=False)
    )


def _train_series(train: Origins) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of the data the training origins may use (up to their last target)."""
    data = train.data
    times = np.asarray(data[train.time_dim].values)
    valid = train.valid_time.reshape(-1)
    last = np.max(valid[~pd.isna(valid)]) if valid.dtype.kind in "Mf" else np.max(valid)
    keep = times <= last
    return times[keep], np.asarray(data.values)[keep]


class Climatology:
    """The climatological forecast: the distribution of past observations, per point.

    * ``kind="fixed"``: mean and standard deviation of all training observations at each
      point, the same forecast at every origin and lead;
    * ``kind="seasonal"``: mean and standard deviation per bin of the seasonal cycle
      (``season``: calendar month, day of year or hour of day) of the time each target
      verifies at; ``window`` (odd, in bins) pools neighbouring bins circularly (a running
      seasonal window, e.g. 31 days around each day of year);
    * ``kind="running"``: mean and standard deviation of the last ``window`` observations up
      to and including each origin (a trailing window, in samples; it may reach beyond the
      context window).

    The predictive is ``Normal(mean, std)`` (unbiased std). :meth:`mean_at` and
    :meth:`anomalies` give the climatological mean at any times, for anomaly-based models.

    Parameters
    ----------
    kind:
        ``"fixed"``, ``"seasonal"`` or ``"running"``.
    season:
        ``"month"``, ``"dayofyear"`` or ``"hour"`` (seasonal only; needs calendar times).
    window:
        Seasonal: odd number of bins pooled (default 1, or 31 for ``dayofyear``); running:
        number of past samples (default 30).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from uqdyn.forecast import Climatology, rolling_origins
    >>> t = pd.date_range("2000-01-01", periods=120, freq="MS")
    >>> series = pd.Series(10 + np.cos(2 * np.pi * t.month / 12), index=t)
    >>> origins = rolling_origins(series, context=3, leads=[1, 2])
    >>> clim = Climatology("seasonal", season="month").fit(origins)
    >>> clim.predict(origins).batch_shape
    torch.Size([116, 2])
    """

    def __init__(
        self,
        kind: Literal["fixed", "seasonal", "running"] = "fixed",
        *,
        season: Literal["month", "dayofyear", "hour"] = "month",
        window: int | None = None,
    ) -> None:
        if kind not in ("fixed", "seasonal", "running"):
            raise ValueError(f"kind={kind!r}; expected 'fixed', 'seasonal' or 'running'")
        if season not in SEASONS:
            raise ValueError(f"season={season!r}; expected one of {list(SEASONS)}")
        if window is not None:
            window = as_int(window, "window")
        if kind == "seasonal":
            window = window if window is not None else (31 if season == "dayofyear" else 1)
            if window < 1 or window % 2 == 0 or window > SEASONS[season]:
                raise ValueError(
                    f"window={window}; expected an odd number of {season} bins in [1, "
                    f"{SEASONS[season]}]"
                )
        elif kind == "running":
            window = 30 if window is None else window
            if window < 2:
                raise ValueError(f"window={window}; expected at least 2 past samples")
        self.kind = kind
        self.season = season
        self.window = window
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    def __repr__(self) -> str:
        extra = f", season={self.season!r}" if self.kind == "seasonal" else ""
        return f"Climatology({self.kind!r}{extra}, window={self.window})"

    # ------------------------------------------------------------------ fit
    def fit(self, train: Origins) -> Climatology:
        """Estimate the climatology from the data of the training origins.

        Uses every observation of ``train.data`` up to the last time a training target
        verifies at (nothing later), NaN excluded.
        """
        train = _check_origins(train, "train")
        times, values = _train_series(train)
        if self.kind == "running":
            self._fitted_shape = values.shape[1:]
            return self
        if self.kind == "fixed":
            self._mean, self._std = _mean_std(*_nan_moments(values, 0))
            return self
        bins = _season_index(times, self.season)
        n_bins = SEASONS[self.season]
        shape = (n_bins, *values.shape[1:])
        count, total, squares = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        finite = np.isfinite(values)
        zeroed = np.where(finite, values, 0.0)
        np.add.at(count, bins, finite)
        np.add.at(total, bins, zeroed)
        np.add.at(squares, bins, np.square(zeroed))
        half = (self.window or 1) // 2
        if half:
            count, total, squares = (
                np.sum([np.roll(a, k, axis=0) for k in range(-half, half + 1)], axis=0)
                for a in (count, total, squares)
            )
        seen = count.reshape(n_bins, -1).max(axis=1) > 1
        if self.season == "dayofyear":
            seen[365] = True  # day 366 exists only in leap years; it borrows from its neighbours
        if not seen.all():
            missing = np.flatnonzero(~seen)[:5].tolist()
            raise ValueError(
                f"the training data leave {int((~seen).sum())} {self.season} bin(s) with fewer "
                f"than 2 observations (e.g. bins {missing}); expected a longer training period "
                "or a larger window"
            )
        self._mean, self._std = _mean_std(count, total, squares)
        if self.season == "dayofyear" and not np.isfinite(self._mean[365]).any():
            self._mean[365], self._std[365] = self._mean[364], self._std[364]
        return self

    def _check_fitted(self) -> None:
        if self.kind != "running" and self._mean is None:
            raise ValueError("this Climatology is not fitted; call fit(train_origins) first")

    # ------------------------------------------------------------------ evaluation
    def mean_at(self, times: np.ndarray) -> np.ndarray:
        """Climatological mean at ``times`` (any shape ``S``); shape ``(*S, *space)``.

        Not defined for ``kind="running"`` (its mean depends on the origin, not the time).
        """
        self._check_fitted()
        if self.kind == "running":
            raise ValueError("mean_at is not defined for a running climatology; use predict")
        assert self._mean is not None
        return self._lookup(self._mean, times)

    def _lookup(self, table: np.ndarray, times: Any) -> np.ndarray:
        times = np.asarray(times)
        if self.kind == "fixed":
            out = np.broadcast_to(table, (*times.shape, *table.shape)).copy()
            missing = pd.isna(times)
        else:
            bins = _season_index(times, self.season)
            out = table[np.maximum(bins, 0)]
            missing = bins < 0
        if np.any(missing):
            out[missing] = np.nan
        return out

    def std_at(self, times: np.ndarray) -> np.ndarray:
        """Climatological standard deviation at ``times``; shape ``(*S, *space)``."""
        self._check_fitted()
        if self.kind == "running":
            raise ValueError("std_at is not defined for a running climatology; use predict")
        assert self._std is not None
        return self._lookup(self._std, times)

    def anomalies(self, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        """``values (*S, *space)`` minus the climatological mean at ``times (*S)``."""
        return np.asarray(values) - self.mean_at(times)

    def predict(self, origins: Origins) -> Normal:
        """``Normal`` over ``(origin, lead, *space)``: the climatology at each target time."""
        origins = _check_origins(origins, "origins")
        self._check_fitted()
        if self.kind != "running":
            valid = origins.valid_time
            return _normal(origins, self.mean_at(valid), self.std_at(valid))
        data = origins.data
        values = np.asarray(data.values)
        times = np.asarray(data[origins.time_dim].values)
        finite = np.isfinite(values)
        zeroed = np.where(finite, values, 0.0)
        pad = np.zeros((1, *values.shape[1:]))
        c = np.concatenate([pad, np.cumsum(finite, axis=0)])
        s = np.concatenate([pad, np.cumsum(zeroed, axis=0)])
        q = np.concatenate([pad, np.cumsum(np.square(zeroed), axis=0)])
        pos = np.searchsorted(times, origins.origin_time, side="right")  # one past the origin
        lo = np.maximum(pos - int(self.window or 2), 0)
        mean, std = _mean_std(c[pos] - c[lo], s[pos] - s[lo], q[pos] - q[lo])
        expand = (slice(None), None)
        return _normal(origins, mean[expand], std[expand])


def _residual_std(residual: np.ndarray, pool_space: bool, n_space_axes: int) -> np.ndarray:
    """RMS of residuals ``(origin, lead, *space)`` per (lead, point); pooled where sparse."""
    finite = np.isfinite(residual)
    sq = np.where(finite, np.square(residual), 0.0)
    count = finite.sum(0)
    space_axes = tuple(range(1, 1 + n_space_axes))
    pooled_count = count.sum(axis=space_axes, keepdims=True)
    pooled = np.sqrt(sq.sum(0).sum(axis=space_axes, keepdims=True) / np.maximum(pooled_count, 1))
    pooled = np.where(pooled_count > 0, pooled, np.nan)
    if pool_space:
        return np.broadcast_to(pooled, count.shape).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        local = np.sqrt(sq.sum(0) / count)
    return np.where(count >= 2, local, pooled)


class Persistence:
    """Persistence: the last observed value (or anomaly) carried forward, Gaussian error.

    The forecast at lead ``h`` from origin ``t0`` is the last value observed in the context
    window, ``y_last``, or with ``climatology`` the last anomaly carried forward on top of
    the climatology: ``clim(t0 + h) + (y_last - clim(t_last))``. Its uncertainty is a
    Gaussian ``N(forecast, sigma_h^2)`` whose ``sigma_h`` is the root-mean-square error of
    that forecast over the training origins, per lead and point (``pool_space=True``: one per
    lead; points with fewer than 2 training errors use the pooled value). A point with no
    observation in its context window falls back to the climatology when one is given, else
    gets NaN.

    Parameters
    ----------
    climatology:
        Optional :class:`Climatology` (``"fixed"`` or ``"seasonal"``) for anomaly
        persistence; fitted on the same training origins.
    pool_space:
        One error standard deviation per lead for all points.
    """

    def __init__(self, climatology: Climatology | None = None, *, pool_space: bool = False) -> None:
        if climatology is not None and not isinstance(climatology, Climatology):
            raise TypeError(
                f"climatology is a {type(climatology).__name__}; expected a Climatology or None"
            )
        if climatology is not None and climatology.kind == "running":
            raise ValueError("Persistence needs a 'fixed' or 'seasonal' climatology for anomalies")
        self.climatology = climatology
        self.pool_space = bool(pool_space)
        self.sigma: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Persistence(climatology={self.climatology!r})"

    def _point_forecast(self, origins: Origins) -> np.ndarray:
        """``(origin, lead, *space)`` the persisted value (or anomaly on the climatology)."""
        shape = (len(origins), origins.n_leads, *origins.space_shape)
        if self.climatology is None:
            last, _ = origins.last_observed()
            return np.broadcast_to(last[:, None], shape).copy()
        anomalies = np.asarray(origins.context.values) - self.climatology.mean_at(
            origins.context_time
        )
        last, _ = last_observed(anomalies)
        clim_valid = self.climatology.mean_at(origins.valid_time)
        return np.where(np.isfinite(last)[:, None], clim_valid + last[:, None], clim_valid)

    def fit(self, train: Origins) -> Persistence:
        """Fit the climatology (if any) and the error standard deviation per lead and point."""
        train = _check_origins(train, "train")
        if self.climatology is not None:
            self.climatology.fit(train)
        residual = np.asarray(train.target.values) - self._point_forecast(train)
        self.sigma = _residual_std(residual, self.pool_space, len(train.space_dims))
        return self

    def predict(self, origins: Origins) -> Normal:
        """``Normal`` over ``(origin, lead, *space)``."""
        origins = _check_origins(origins, "origins")
        if self.sigma is None:
            raise ValueError("this Persistence is not fitted; call fit(train_origins) first")
        _check_space(self.sigma.shape, origins)
        return _normal(origins, self._point_forecast(origins), self.sigma[None])


def _check_space(fitted: tuple[int, ...], origins: Origins) -> None:
    want = (origins.n_leads, *origins.space_shape)
    if tuple(fitted) != want:
        raise ValueError(
            f"origins have (lead, *space) shape {want} but the model was fitted on {tuple(fitted)}"
        )


class DampedPersistence:
    r"""Damped anomaly persistence: the AR(1)-type benchmark, per point and lead.

    With anomalies :math:`a(t) = y(t) - \mathrm{clim}(t)` relative to a fitted
    :class:`Climatology`, the forecast from origin :math:`t_0` at lead :math:`h` is

    .. math:: \hat y(t_0 + h) = \mathrm{clim}(t_0 + h) + \phi_h\, a(t_{last}),
       \qquad \phi_h = \frac{\sum a(t_{last}) a(t_0 + h)}{\sum a(t_{last})^2},

    the least-squares damping of the last observed anomaly, fitted over the training origins
    separately for each lead and point (``mode="direct"``), or :math:`\phi_h = \phi_1^h` with
    the lag-1 coefficient (``mode="ar1"``, a true AR(1); step leads only). The error is
    Gaussian with the residual root-mean-square per lead and point. Where the context holds
    no observation, the forecast is the climatology itself (mean and standard deviation).

    Parameters
    ----------
    climatology:
        The :class:`Climatology` the anomalies refer to (default ``Climatology("fixed")``);
        ``"seasonal"`` for series with a seasonal cycle.
    mode:
        ``"direct"`` or ``"ar1"``.
    pool_space:
        One coefficient and error per lead for all points.
    """

    def __init__(
        self,
        climatology: Climatology | None = None,
        *,
        mode: Literal["direct", "ar1"] = "direct",
        pool_space: bool = False,
    ) -> None:
        if climatology is None:
            climatology = Climatology("fixed")
        if not isinstance(climatology, Climatology) or climatology.kind == "running":
            raise ValueError("climatology must be a 'fixed' or 'seasonal' Climatology")
        if mode not in ("direct", "ar1"):
            raise ValueError(f"mode={mode!r}; expected 'direct' or 'ar1'")
        self.climatology = climatology
        self.mode = mode
        self.pool_space = bool(pool_space)
        self.phi: np.ndarray | None = None
        self.sigma: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"DampedPersistence(climatology={self.climatology!r}, mode={self.mode!r})"

    def _last_anomaly(self, origins: Origins) -> np.ndarray:
        """Anomaly of the last observed context value, ``(origin, *space)``."""
        values = np.asarray(origins.context.values)
        last, _ = last_observed(values - self.climatology.mean_at(origins.context_time))
        return last

    def fit(self, train: Origins) -> DampedPersistence:
        """Fit the climatology, then the damping and error per lead and point."""
        train = _check_origins(train, "train")
        self.climatology.fit(train)
        a0 = self._last_anomaly(train)[:, None]  # (origin, 1, *space)
        ah = np.asarray(train.target.values) - self.climatology.mean_at(train.valid_time)
        pair = np.isfinite(a0) & np.isfinite(ah)
        x = np.where(pair, a0, 0.0)
        y = np.where(pair, ah, 0.0)
        space_axes = tuple(range(2, ah.ndim))
        if self.mode == "ar1":
            if not train.step_leads:
                raise ValueError("mode='ar1' needs leads in steps; use mode='direct'")
            steps = np.asarray(train.target["lead"].values, dtype=float)
            lag1 = self._lag1(train)
            phi = np.power(lag1[None], steps.reshape(-1, *(1,) * lag1.ndim))
        else:
            sxy, sxx = (x * y).sum(0), np.square(x).sum(0)
            if self.pool_space:
                sxy = sxy.sum(axis=tuple(a - 1 for a in space_axes), keepdims=True)
                sxx = sxx.sum(axis=tuple(a - 1 for a in space_axes), keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                phi = np.where(sxx > 0, sxy / sxx, 0.0)
            phi = np.broadcast_to(phi, ah.shape[1:]).copy()
        self.phi = phi
        residual = np.where(pair, ah - phi[None] * a0, np.nan)
        self.sigma = _residual_std(residual, self.pool_space, len(train.space_dims))
        return self

    def _lag1(self, train: Origins) -> np.ndarray:
        times, values = _train_series(train)
        a = values - self.climatology.mean_at(times)
        x, y = a[:-1], a[1:]
        pair = np.isfinite(x) & np.isfinite(y)
        sxy = np.where(pair, x * y, 0.0).sum(0)
        sxx = np.where(pair, x * x, 0.0).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sxx > 0, sxy / sxx, 0.0)

    def predict(self, origins: Origins) -> Normal:
        """``Normal`` over ``(origin, lead, *space)``."""
        origins = _check_origins(origins, "origins")
        if self.phi is None or self.sigma is None:
            raise ValueError("this DampedPersistence is not fitted; call fit(train_origins) first")
        _check_space(self.sigma.shape, origins)
        a0 = self._last_anomaly(origins)[:, None]
        clim = self.climatology.mean_at(origins.valid_time)
        loc = clim + self.phi[None] * a0
        scale = np.broadcast_to(self.sigma[None], loc.shape)
        missing = ~np.isfinite(a0) & np.ones_like(loc, dtype=bool)
        loc = np.where(missing, clim, loc)
        scale = np.where(missing, self.climatology.std_at(origins.valid_time), scale)
        return _normal(origins, loc, scale)
