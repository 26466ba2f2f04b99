"""Input handling and PIT computation shared by the calibration metrics and recalibrators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import Restore, is_xarray, prepare
from uqdyn.predictive import Ensemble, Predictive

from .recalibrated import Recalibrated
from .stitched import Stitched


def _forecast_with_obs(
    obs: Any, forecast: Any, member_dim: int | str | None
) -> tuple[Tensor, Predictive, Restore]:
    """Observations as a tensor broadcast with the forecast's ``batch_shape``.

    ``forecast`` is a :class:`Predictive`, or an ensemble array (member axis ``member_dim``)
    that is wrapped into an :class:`Ensemble`. Returns ``(obs (*batch_shape,), predictive,
    restore)`` with ``obs`` on the predictive's device and dtype.
    """
    if member_dim is not None:
        if isinstance(forecast, Predictive):
            raise TypeError(
                f"member_dim={member_dim!r} was given but forecast is a "
                f"{type(forecast).__name__}; member_dim is only for ensemble arrays"
            )
        (obs_t, members), restore = prepare(
            obs, forecast, names=("obs", "forecast"), core=(None, member_dim)
        )
        return obs_t, Ensemble(members.movedim(-1, 0)), restore
    if not isinstance(forecast, Predictive):
        raise TypeError(
            f"forecast is a {type(forecast).__name__}; expected a uqdyn Predictive, or an "
            "ensemble array together with member_dim="
        )
    (obs_t,), restore = prepare(obs, names=("obs",))
    obs_t = obs_t.to(device=forecast.device, dtype=forecast.dtype)
    try:
        shape = torch.broadcast_shapes(obs_t.shape, forecast.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"obs has shape {tuple(obs_t.shape)} but the forecast has batch_shape "
            f"{tuple(forecast.batch_shape)}; expected broadcastable shapes"
        ) from None
    return obs_t.expand(shape), forecast, restore


def _forecast_only(forecast: Any, member_dim: int | str | None) -> tuple[Predictive, Restore]:
    """A :class:`Predictive` from a Predictive or an ensemble array (member axis given)."""
    if member_dim is not None:
        if isinstance(forecast, Predictive):
            raise TypeError(
                f"member_dim={member_dim!r} was given but forecast is a "
                f"{type(forecast).__name__}; member_dim is only for ensemble arrays"
            )
        (members,), restore = prepare(forecast, names=("forecast",), core=(member_dim,))
        return Ensemble(members.movedim(-1, 0)), restore
    if not isinstance(forecast, Predictive):
        raise TypeError(
            f"forecast is a {type(forecast).__name__}; expected a uqdyn Predictive, or an "
            "ensemble array together with member_dim="
        )
    return forecast, Restore("torch", forecast.batch_shape)


def _as_mask(mask: Any, shape: torch.Size, device: torch.device, restore: Restore) -> Tensor:
    """A boolean mask of ``shape`` (broadcast), validated; all True when ``mask`` is None."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if is_xarray(mask):
        if restore.kind == "xarray" and set(mask.dims) <= set(restore.dims):
            mask = mask.transpose(*[d for d in restore.dims if d in mask.dims])
        mask = np.asarray(mask.values)
    m = torch.as_tensor(mask, device=device)
    if m.dtype != torch.bool:
        raise TypeError(f"mask has dtype {m.dtype}; expected a boolean mask")
    try:
        return m.expand(shape)
    except RuntimeError:
        raise ValueError(
            f"mask has shape {tuple(m.shape)}; expected a shape broadcastable to {tuple(shape)}"
        ) from None


def _check_finite_at(values: Tensor, keep: Tensor, name: str) -> None:
    """Raise ValueError when ``values`` is NaN/inf at a point selected by ``keep``."""
    bad = ~torch.isfinite(values) & keep
    if bool(bad.any()):
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) among {int(keep.sum())} selected "
            "points; expected finite values (exclude missing points with mask=)"
        )


def _check_levels(levels: Any, name: str, *, closed: bool) -> tuple[Tensor, bool]:
    """Levels as a float64 1-D CPU tensor (and whether a scalar was given).

    ``closed`` allows the end points 0 and 1; otherwise levels must lie strictly inside.
    """
    scalar = np.ndim(levels) == 0
    arr = np.asarray(
        levels.detach().cpu().numpy() if isinstance(levels, Tensor) else levels, dtype=np.float64
    ).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one level")
    ok = (arr >= 0) & (arr <= 1) if closed else (arr > 0) & (arr < 1)
    if not bool(np.all(ok)):
        where = "in [0, 1]" if closed else "strictly between 0 and 1"
        raise ValueError(f"{name}={levels!r}; expected levels {where}")
    return torch.from_numpy(arr), scalar


def _is_equal_weight_ensemble(forecast: Predictive) -> bool:
    return isinstance(forecast, Ensemble) and forecast.weights is None


def _uniform(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _pit_values(forecast: Predictive, y: Tensor, generator: torch.Generator | None) -> Tensor:
    """Probability integral transform of ``y (*batch_shape,)``; randomized where F jumps.

    * Continuous families: ``F(y)``.
    * Equally weighted ensembles of ``M`` members: ``(r + V) / (M + 1)`` with ``r`` the
      number of members below ``y`` plus a uniform draw among ties, ``V ~ U(0, 1)``; this is
      ``U(G(y-), G(y))`` for the empirical CDF ``G`` of the members pooled with ``y``.
    * Weighted ensembles: ``U(F(y-), F(y))`` with the weighted empirical CDF ``F``.
    * Recalibrated forecasts: the calibration map applied to the base forecast's PIT.
    * Stitched forecasts: the PIT under each point's own part.
    """
    if isinstance(forecast, Recalibrated):
        return forecast.calibration_map(_pit_values(forecast.base, y, generator))
    if isinstance(forecast, Stitched):
        return forecast._pick([_pit_values(part, y, generator) for part in forecast.parts])
    if isinstance(forecast, Ensemble):
        members = forecast.members
        less = (members < y).to(members.dtype)
        equal = (members == y).to(members.dtype)
        u = _uniform(y.shape, members, generator)
        if forecast.weights is None:
            m = forecast.n_members
            n_less, n_equal = less.sum(0), equal.sum(0)
            rank = n_less + torch.floor(u * (n_equal + 1.0)).clamp_max(n_equal)
            v = _uniform(y.shape, members, generator)
            out = (rank + v) / (m + 1.0)
        else:
            w = forecast._w()
            lower = (w * less).sum(0)
            upper = lower + (w * equal).sum(0)
            out = lower + u * (upper - lower)
        nan = torch.isnan(members).any(0) | torch.isnan(y)
        return torch.where(nan, torch.nan, out)
    return forecast.cdf(y)


def _select(values: Tensor, keep: Tensor) -> Tensor:
    """The entries of ``values`` at ``keep`` (flattened), shape ``(n_kept,)``."""
    return values[keep.expand(values.shape)]


def _level_output(result: Tensor, restore: Restore, levels: Tensor, dim: str) -> Any:
    """Convert a result with one trailing level axis to the caller's kind (xarray: coord)."""
    out = restore(result, extra_dims=(dim,)) if restore.kind == "xarray" else restore(result)
    if restore.kind == "xarray" and result.dim() >= 1:
        out = out.assign_coords({dim: levels.numpy()})
    return out


def _n_points_check(keep: Tensor, names: Sequence[str]) -> None:
    if not bool(keep.any()):
        raise ValueError(
            f"no points are selected ({', '.join(names)} are empty or fully masked); expected "
            "at least one point"
        )


def keeps_labels(transform: Any) -> Any:
    """Decorate a recalibrator's ``transform(forecast, ...)``: the result carries the dims and
    coordinates of a labelled Predictive ``forecast`` (see ``Predictive.with_labels``)."""
    import functools

    from uqdyn.predictive import Predictive

    @functools.wraps(transform)
    def wrapper(self: Any, forecast: Any, *args: Any, **kwargs: Any) -> Any:
        out = transform(self, forecast, *args, **kwargs)
        if isinstance(forecast, Predictive) and isinstance(out, Predictive):
            return forecast._labelled_like(out)
        return out

    return wrapper
