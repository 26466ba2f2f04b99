"""What the learned forecasters share: normalisation, inputs per origin and point, labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.forecast import Climatology, Origins
from uqdyn.forecast.normalize import NormalizedOrigins, WindowNormalizer
from uqdyn.forecast.references import SEASONS, _season_index
from uqdyn.predictive import Ensemble, GaussianMixture, Normal, Predictive


def check_origins(origins: Any, name: str) -> Origins:
    if not isinstance(origins, Origins):
        raise TypeError(
            f"{name} is a {type(origins).__name__}; expected uqdyn.forecast.Origins (from "
            "rolling_origins)"
        )
    return origins


def _step(origins: Origins) -> float:
    """The typical sampling step of the data, in its time units (days for datetimes)."""
    times = np.asarray(origins.data[origins.time_dim].values)
    if times.dtype.kind == "M":
        diffs = np.diff(times).astype("timedelta64[s]").astype(np.float64) / 86400.0
    elif times.dtype.kind in "iuf":
        diffs = np.diff(times.astype(np.float64))
    else:  # cftime: fall back to positions
        return 1.0
    return float(np.median(diffs)) if diffs.size else 1.0


def _elapsed(times: np.ndarray, origin: np.ndarray, step: float) -> np.ndarray:
    """``(times - origin) / step``; NaN for missing times."""
    times = np.asarray(times)
    if times.dtype.kind == "M":
        delta = (times - origin).astype("timedelta64[s]").astype(np.float64) / 86400.0
        delta[pd.isna(times)] = np.nan
        return delta / step
    if times.dtype.kind in "iuf":
        return (times.astype(np.float64) - np.asarray(origin, dtype=np.float64)) / step
    raise TypeError("cftime times are handled by positions")


@dataclass(frozen=True)
class WindowArrays:
    """Per (origin, point) rows for point-wise models, flattened to ``R = origin * points``.

    Attributes
    ----------
    context, target:
        ``(R, C)`` and ``(R, L)`` normalised values, NaN where not observed.
    context_x, target_x:
        ``(R, C, F)`` and ``(R, L, F)`` inputs: relative time in steps, then season features.
    origin_features:
        ``(R, S)`` season features of the origin (empty when not seasonal).
    level:
        ``(R,)`` the window's removed centre in normalised units.
    """

    context: np.ndarray
    target: np.ndarray
    context_x: np.ndarray
    target_x: np.ndarray
    origin_features: np.ndarray
    level: np.ndarray


class WindowForecaster:
    """Base of the learned forecasters: ``fit(train, valid=None)``, ``predict(origins)``.

    Subclasses implement ``_fit(train_rows, valid_rows)`` and ``_predict(rows) ->
    (loc, scale)`` or a Predictive over ``(R, L)`` in normalised units.
    """

    def __init__(
        self,
        *,
        climatology: Climatology | None = None,
        center: str | None = "last",
        scale: str | None = "global",
        season_features: bool = False,
        seed: int = 0,
    ) -> None:
        seed = as_int(seed, "seed")
        self.normalizer = WindowNormalizer(climatology, center=center, scale=scale)  # type: ignore[arg-type]
        self.season_features = bool(season_features)
        self.seed = seed
        self._fitted_shape: tuple[int, ...] | None = None
        self._season: str | None = None
        self._step = 1.0

    # ------------------------------------------------------------------ inputs
    def _season_of(self, origins: Origins) -> str | None:
        if not self.season_features:
            return None
        times = np.asarray(origins.data[origins.time_dim].values)
        if times.dtype.kind != "M" and times.dtype != object:
            raise ValueError(
                "season_features=True needs calendar times (datetime64 or cftime); the time "
                "axis is numeric"
            )
        if (
            self.normalizer.climatology is not None
            and self.normalizer.climatology.kind == "seasonal"
        ):
            return self.normalizer.climatology.season
        return "month" if self._step >= 20 else ("dayofyear" if self._step >= 0.9 else "hour")

    def _season_features(self, times: np.ndarray) -> np.ndarray:
        """``(*S, 2)`` cos/sin of the seasonal phase (0 for missing times)."""
        if self._season is None:
            return np.zeros((*np.shape(times), 0))
        bins = _season_index(times, self._season).astype(np.float64)
        phase = 2.0 * np.pi * bins / SEASONS[self._season]
        out = np.stack([np.cos(phase), np.sin(phase)], axis=-1)
        out[bins < 0] = 0.0
        return out

    def _rows(self, origins: Origins, norm: NormalizedOrigins) -> WindowArrays:
        n, c = norm.context.shape[:2]
        n_leads = norm.target.shape[1]
        space = norm.context.shape[2:]
        points = int(np.prod(space)) if space else 1
        ctx = np.moveaxis(norm.context.reshape(n, c, points), 2, 1).reshape(n * points, c)
        tgt = np.moveaxis(norm.target.reshape(n, n_leads, points), 2, 1).reshape(
            n * points, n_leads
        )
        origin_times = origins.origin_time
        ctx_times, valid = origins.context_time, origins.valid_time
        if origin_times.dtype == object:  # cftime: positions in steps
            t_ctx = np.broadcast_to(np.asarray(origins.context["context"].values, float), (n, c))
            lead_steps = np.arange(1, n_leads + 1, dtype=float)
            if origins.step_leads:
                lead_steps = np.asarray(origins.target["lead"].values, dtype=float)
            t_tgt = np.broadcast_to(lead_steps, (n, n_leads))
        else:
            t_ctx = _elapsed(ctx_times, origin_times[:, None], self._step)
            t_tgt = _elapsed(valid, origin_times[:, None], self._step)
        s_ctx = self._season_features(ctx_times)
        s_tgt = self._season_features(valid)
        s_org = self._season_features(origin_times)
        x_ctx = np.concatenate([np.nan_to_num(t_ctx)[..., None], s_ctx], axis=-1)
        x_tgt = np.concatenate([t_tgt[..., None], s_tgt], axis=-1)
        rep = np.repeat
        level = norm.level.reshape(n, points).reshape(n * points)
        return WindowArrays(
            ctx,
            tgt,
            rep(x_ctx, points, axis=0),
            rep(x_tgt, points, axis=0),
            rep(s_org, points, axis=0),
            level,
        )

    # ------------------------------------------------------------------ fit / predict
    def fit(self, train: Origins, valid: Origins | None = None) -> WindowForecaster:
        """Fit the normalisation and the model on training origins (``valid``: early stop).

        Parameters
        ----------
        train:
            Training :class:`~uqdyn.forecast.Origins`.
        valid:
            Optional validation origins (same leads and space) for model selection.

        Returns
        -------
        ``self``.
        """
        train = check_origins(train, "train")
        if valid is not None:
            valid = check_origins(valid, "valid")
            if valid.n_leads != train.n_leads or valid.space_shape != train.space_shape:
                raise ValueError(
                    f"valid has {valid.n_leads} leads and space {valid.space_shape}; expected "
                    f"{train.n_leads} and {train.space_shape} like train"
                )
        self._step = _step(train)
        self._season = self._season_of(train)
        self.normalizer.fit(train)
        self._fitted_shape = (train.n_leads, *train.space_shape)
        data = np.asarray(train.data.values)
        self._seen = np.isfinite(data).any(axis=0)  # points observed at least once
        self._n_context = int(train.context.sizes["context"])
        rows = self._inputs(train, self.normalizer.transform(train))
        valid_rows = (
            None if valid is None else self._inputs(valid, self.normalizer.transform(valid))
        )
        self._fit(rows, valid_rows)
        return self

    def _inputs(self, origins: Origins, norm: NormalizedOrigins) -> Any:
        """What ``_fit`` and ``_predict`` take (default: per (origin, point) rows)."""
        return self._rows(origins, norm)

    def _to_batch_shape(self, pred: Predictive, origins: Origins) -> Predictive:
        """The model's prediction as ``(origin, lead, *space)`` (default: from rows)."""
        return _unflatten(pred, len(origins), origins.n_leads, origins.space_shape)

    def predict(self, origins: Origins) -> Predictive:
        """Predictive over ``(origin, lead, *space)`` in the user's units, labelled.

        Points never observed in the training data (land, a dead sensor) get NaN.
        """
        origins = check_origins(origins, "origins")
        if self._fitted_shape is None:
            raise ValueError(f"this {type(self).__name__} is not fitted; call fit(train) first")
        if (origins.n_leads, *origins.space_shape) != self._fitted_shape:
            raise ValueError(
                f"origins have (lead, *space) shape {(origins.n_leads, *origins.space_shape)}; "
                f"the model was fitted on {self._fitted_shape}"
            )
        norm = self.normalizer.transform(origins)
        inputs = self._inputs(origins, norm)
        with torch.no_grad():
            raw = self._predict(inputs)  # in normalised units
        pred = self._to_batch_shape(raw, origins)
        scale = np.broadcast_to(norm.scale, norm.shift.shape)
        bad = ~np.isfinite(norm.shift) | ~np.isfinite(scale) | ~(scale > 0)
        bad = bad | ~self._seen[None, None]
        missing = torch.as_tensor(bad)
        safe = NormalizedOrigins(
            norm.context,
            norm.target,
            np.where(bad, 0.0, norm.shift),
            np.where(bad, 1.0, scale),
            norm.level,
        )
        out = self.normalizer.inverse(pred, safe)
        return origins.label(_with_missing(out, missing))

    def _fit(self, rows: Any, valid_rows: Any) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _predict(self, rows: Any) -> Predictive:
        raise NotImplementedError  # pragma: no cover - abstract


def _unflatten(pred: Predictive, n: int, n_leads: int, space: tuple[int, ...]) -> Predictive:
    """``(R, L)`` rows (origin-major, then point) back to ``(origin, lead, *space)``."""
    points = int(np.prod(space)) if space else 1

    def move(t: Tensor, lead_axes: int = 0) -> Tensor:
        head = t.shape[:lead_axes]
        t = t.reshape(*head, n, points, n_leads).movedim(-1, -2)
        return t.reshape(*head, n, n_leads, *space)

    if isinstance(pred, Normal):
        return Normal(move(pred.loc), move(pred.scale), validate=False)
    if isinstance(pred, GaussianMixture):
        return GaussianMixture(
            move(pred.weights, 1), move(pred.loc, 1), move(pred.scale, 1), validate=False
        )
    if isinstance(pred, Ensemble):
        return Ensemble(move(pred.members, 1), pred.weights, estimator=pred.estimator)
    raise TypeError(f"unexpected predictive {type(pred).__name__}")


def _with_missing(pred: Predictive, missing: Tensor) -> Predictive:
    """Set the forecast to NaN at ``missing (batch_shape)`` points."""
    if not bool(missing.any()):
        return pred
    m = missing.to(pred.mean.device)
    if isinstance(pred, Normal):
        return Normal(
            pred.loc.masked_fill(m, np.nan), pred.scale.masked_fill(m, np.nan), validate=False
        )
    if isinstance(pred, GaussianMixture):
        return GaussianMixture(
            pred.weights,
            pred.loc.masked_fill(m, np.nan),
            pred.scale.masked_fill(m, np.nan),
            validate=False,
        )
    if isinstance(pred, Ensemble):
        return Ensemble(pred.members.masked_fill(m, np.nan), pred.weights, estimator=pred.estimator)
    return pred
