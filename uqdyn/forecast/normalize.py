r"""Invertible per-window normalisation of forecast origins, for learned models.

Non-stationary series (a trend, a seasonal cycle, a drifting level) defeat models trained
on raw values: the level of the test period may never have been seen in training.
:class:`WindowNormalizer` removes what a model should not have to learn, per origin and
point, and puts predictions back in the user's units:

.. math:: z = \frac{y - \mathrm{clim}(t) - c}{s}, \qquad
   y = \mathrm{clim}(t) + c + s\, z,

with ``clim`` an optional fitted :class:`~uqdyn.forecast.Climatology` (anomalies), ``c`` the
window's centre (its last observed value, ``center="last"``, or its mean, ``"mean"``, or 0)
and ``s`` a scale (``scale="global"``: the standard deviation of the centred training values
per point; ``"window"``: the window's own standard deviation, floored at a tenth of the
global one; ``"climatology"``: the climatological standard deviation at each value's own
time, i.e. standardised anomalies, so that a season with larger variability gets a wider
forecast; ``None``: 1). With ``scale="climatology"`` the centring is done on the
standardised anomalies: :math:`z = (y - \mathrm{clim}(t)) / \sigma_{clim}(t) - c` and
:math:`y = \mathrm{clim}(t) + \sigma_{clim}(t) (c + z)`. Predictives go back through
:func:`~uqdyn.predictive.affine_transform`, so a forecast in normalised units becomes the
same family in the user's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from uqdyn.predictive import Predictive, affine_transform

from .origins import Origins, last_observed
from .references import Climatology

__all__ = ["WindowNormalizer", "NormalizedOrigins"]

_MIN_STD = 1e-12


@dataclass(frozen=True)
class NormalizedOrigins:
    """Normalised arrays of some origins (NaN where not observed).

    Attributes
    ----------
    context:
        ``(origin, context, *space)`` normalised context values.
    target:
        ``(origin, lead, *space)`` normalised targets.
    shift:
        ``(origin, lead, *space)`` what was subtracted at each target (climatology + centre).
    scale:
        ``(origin, 1 or lead, *space)`` the divisor at each target.
    level:
        ``(origin, *space)`` the removed centre in normalised units (0 without centring): the
        level of the window, an input for models that need it (e.g. to learn damping).
    """

    context: np.ndarray
    target: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    level: np.ndarray


class WindowNormalizer:
    """Anomalies, per-window centring and scaling of origins; invertible on Predictives.

    Parameters
    ----------
    climatology:
        Optional (unfitted or fitted) ``"fixed"``/``"seasonal"`` :class:`Climatology`
        removed first; fitted by :meth:`fit` when not yet fitted.
    center:
        ``"last"`` (last observed context value), ``"mean"`` (window mean) or ``None``.
    scale:
        ``"global"``, ``"window"``, ``"climatology"`` (needs ``climatology``) or ``None``.
    """

    def __init__(
        self,
        climatology: Climatology | None = None,
        *,
        center: Literal["last", "mean"] | None = "last",
        scale: Literal["global", "window"] | None = "global",
    ) -> None:
        if climatology is not None and (
            not isinstance(climatology, Climatology) or climatology.kind == "running"
        ):
            raise ValueError("climatology must be a 'fixed' or 'seasonal' Climatology or None")
        if center not in ("last", "mean", None):
            raise ValueError(f"center={center!r}; expected 'last', 'mean' or None")
        if scale not in ("global", "window", "climatology", None):
            raise ValueError(f"scale={scale!r}; expected 'global', 'window', 'climatology' or None")
        if scale == "climatology" and climatology is None:
            raise ValueError("scale='climatology' needs a climatology")
        self.climatology = climatology
        self.center = center
        self.scale = scale
        self.global_scale: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"WindowNormalizer(climatology={self.climatology!r}, center={self.center!r}, "
            f"scale={self.scale!r})"
        )

    def _centred(
        self, origins: Origins
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Context and targets minus climatology and centre (standardised for
        ``scale="climatology"``), the mean removed at each target, and the climatological
        standard deviation at each target (``None`` unless ``scale="climatology"``), and the
        centre ``(origin, 1, *space)``."""
        context = np.asarray(origins.context.values, dtype=np.float64)
        target = np.asarray(origins.target.values, dtype=np.float64)
        clim_valid = np.zeros_like(target)
        std_valid = None
        if self.climatology is not None:
            context = context - self.climatology.mean_at(origins.context_time)
            clim_valid = self.climatology.mean_at(origins.valid_time)
            target = target - clim_valid
            if self.scale == "climatology":
                floor = _MIN_STD
                context = context / np.maximum(self.climatology.std_at(origins.context_time), floor)
                std_valid = np.maximum(self.climatology.std_at(origins.valid_time), floor)
                target = target / std_valid
        if self.center == "last":
            centre, _ = last_observed(context)
        elif self.center == "mean":
            finite = np.isfinite(context)
            with np.errstate(invalid="ignore", divide="ignore"):
                centre = np.where(finite, context, 0.0).sum(axis=1) / finite.sum(axis=1)
        else:
            centre = np.zeros((context.shape[0], *context.shape[2:]))
        centre = np.where(np.isfinite(centre), centre, 0.0)[:, None]
        shift = clim_valid + (centre if std_valid is None else std_valid * centre)
        return context - centre, target - centre, shift, std_valid, centre

    def fit(self, train: Origins) -> WindowNormalizer:
        """Fit the climatology (if not fitted) and the global scale on training origins."""
        if not isinstance(train, Origins):
            raise TypeError(f"train is a {type(train).__name__}; expected uqdyn.forecast.Origins")
        if self.climatology is not None and getattr(self.climatology, "_mean", None) is None:
            self.climatology.fit(train)
        context, target, _, _, _ = self._centred(train)
        pooled = np.concatenate([context, target], axis=1)
        finite = np.isfinite(pooled)
        count = finite.sum(axis=(0, 1))
        zeroed = np.where(finite, pooled, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = zeroed.sum(axis=(0, 1)) / count
            std = np.sqrt(np.where(finite, np.square(pooled - mean), 0.0).sum(axis=(0, 1)) / count)
        overall = float(np.nanstd(pooled)) if np.isfinite(pooled).any() else 1.0
        overall = overall if overall > 0 else 1.0
        std = np.where(np.isfinite(std) & (std > 0), std, overall)
        self.global_scale = np.asarray(std, dtype=np.float64)
        return self

    def transform(self, origins: Origins) -> NormalizedOrigins:
        """The normalised context, targets, shifts and scales of ``origins``."""
        if self.global_scale is None:
            raise ValueError("this WindowNormalizer is not fitted; call fit(train_origins)")
        context, target, shift, std_valid, centre = self._centred(origins)
        if std_valid is not None:
            return NormalizedOrigins(context, target, shift, std_valid, centre[:, 0])
        if self.scale is None:
            s = np.ones((context.shape[0], 1, *context.shape[2:]))
        elif self.scale == "global":
            s = np.broadcast_to(self.global_scale, (context.shape[0], 1, *context.shape[2:]))
        else:
            finite = np.isfinite(context)
            count = finite.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(finite, context, 0.0).sum(axis=1, keepdims=True) / count
                sq = np.where(finite, np.square(context - mean), 0.0).sum(axis=1, keepdims=True)
                local = np.where(count > 1, np.sqrt(sq / count), np.nan)
            floor = 0.1 * self.global_scale
            s = np.where(np.isfinite(local), np.maximum(local, floor), self.global_scale)
        s = np.asarray(s, dtype=np.float64)
        return NormalizedOrigins(context / s, target / s, shift, s, (centre / s)[:, 0])

    def inverse(self, predictive: Predictive, normalized: NormalizedOrigins) -> Predictive:
        """``predictive`` in normalised units ``(origin, lead, *space)`` back in the user's."""
        like = predictive.mean
        shape = tuple(predictive.batch_shape)
        scale = torch.as_tensor(np.broadcast_to(normalized.scale, shape).copy(), dtype=like.dtype)
        shift = torch.as_tensor(np.broadcast_to(normalized.shift, shape).copy(), dtype=like.dtype)
        shift = torch.nan_to_num(shift, nan=0.0)
        return affine_transform(predictive, scale.to(like.device), shift.to(like.device))
