"""Per-point recalibration plans: how grouped, local and selected recalibrations compose.

Every uqdyn recalibrator can describe what it does to a forecast of ``batch_shape`` ``S``
as a :class:`_Plan`: a spread factor per point (variance scaling) and/or a CDF map per point
(isotonic maps, stored once as rows of knots and referenced by a per-point index). Plans of
different recalibrators merge point by point, and :func:`_apply_plan` turns a plan into one
Predictive: the same family for pure rescaling, a :class:`Recalibrated` with per-point maps
for pure CDF maps, and a :class:`Stitched` of the two when a batch has both kinds of points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal, Predictive

from .recalibrated import Recalibrated
from .stitched import Stitched


@dataclass
class _Plan:
    """What a recalibrator does to each point of a forecast of ``batch_shape`` ``S``.

    ``scale (*S,)``: spread factor about the mean (1 = unchanged), or None (1 everywhere).
    ``knots_x, knots_y (G, K)``: float64 CDF maps; ``map_index (*S,)`` int64: the map of each
    point, -1 where none. A point has a factor different from 1 or a map, never both.
    """

    scale: Tensor | None = None
    knots_x: Tensor | None = None
    knots_y: Tensor | None = None
    map_index: Tensor | None = None
    n_nodes: int = 201


def _pad_map(x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The same piecewise-linear map with ``k`` knots: points added on its longest segment."""
    extra = k - len(x)
    if extra <= 0:
        return x, y
    j = int(torch.argmax(x[1:] - x[:-1]))
    t = torch.arange(1, extra + 1, dtype=x.dtype, device=x.device) / (extra + 1)
    xi = x[j] + t * (x[j + 1] - x[j])
    yi = y[j] + t * (y[j + 1] - y[j])
    return torch.cat([x[: j + 1], xi, x[j + 1 :]]), torch.cat([y[: j + 1], yi, y[j + 1 :]])


def _stack_maps(maps: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Maps given as 1-D knot pairs (or ``(G, K)`` blocks) as one ``(sum G, K_max)`` pair."""
    rows: list[tuple[Tensor, Tensor]] = []
    for x, y in maps:
        if x.dim() == 1:
            rows.append((x, y))
        else:
            rows.extend(zip(x.unbind(0), y.unbind(0), strict=True))
    k = max(len(x) for x, _ in rows)
    padded = [_pad_map(x, y, k) for x, y in rows]
    return torch.stack([x for x, _ in padded]), torch.stack([y for _, y in padded])


def _mix_maps(
    x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor, weight: float
) -> tuple[Tensor, Tensor]:
    r"""Knots of :math:`w R_1 + (1 - w) R_2` (piecewise linear on the union of the knots)."""
    if weight >= 1.0:
        return x1, y1
    if weight <= 0.0:
        return x2, y2
    a = x1.detach().cpu().double().numpy()
    b = x2.detach().cpu().double().numpy()
    x = np.union1d(a, b)
    y = weight * np.interp(x, a, y1.detach().cpu().double().numpy()) + (1.0 - weight) * np.interp(
        x, b, y2.detach().cpu().double().numpy()
    )
    return torch.from_numpy(x).to(x1.device), torch.from_numpy(y).to(x1.device)


def _merge_plans(plans: Sequence[_Plan], choice: Tensor) -> _Plan:
    """Point ``i`` follows ``plans[choice[i]]``; ``choice (*S,)`` int64."""
    scale: Tensor | None = None
    for i, plan in enumerate(plans):
        if plan.scale is not None:
            if scale is None:
                scale = torch.ones(choice.shape, dtype=plan.scale.dtype, device=choice.device)
            scale = torch.where(choice == i, plan.scale.expand(choice.shape), scale)
    blocks: list[tuple[Tensor, Tensor]] = []
    index = torch.full(choice.shape, -1, dtype=torch.int64, device=choice.device)
    offset = 0
    n_nodes = 3
    for i, plan in enumerate(plans):
        if plan.knots_x is None or plan.knots_y is None or plan.map_index is None:
            continue
        mine = (choice == i) & (plan.map_index >= 0)
        index = torch.where(mine, plan.map_index + offset, index)
        blocks.append((plan.knots_x, plan.knots_y))
        offset += plan.knots_x.shape[0]
        n_nodes = max(n_nodes, plan.n_nodes)
    if not blocks:
        return _Plan(scale=scale)
    kx, ky = _stack_maps(blocks)
    return _Plan(scale=scale, knots_x=kx, knots_y=ky, map_index=index, n_nodes=n_nodes)


def _apply_plan(forecast: Predictive, plan: _Plan) -> Predictive:
    """One Predictive that recalibrates each point of ``forecast`` as ``plan`` says."""
    scaled = forecast
    if plan.scale is not None and not bool((plan.scale == 1.0).all()):
        scaled = _scale_spread(forecast, plan.scale)
    if plan.map_index is None or plan.knots_x is None or plan.knots_y is None:
        return scaled
    mapped = plan.map_index >= 0
    if not bool(mapped.any()):
        return scaled
    kx, ky = plan.knots_x, plan.knots_y
    if bool(mapped.all()):
        if kx.shape[0] == 1:
            return Recalibrated(forecast, kx[0], ky[0], n_nodes=plan.n_nodes)
        return Recalibrated(forecast, kx, ky, n_nodes=plan.n_nodes, map_index=plan.map_index)
    identity = torch.tensor([0.0, 1.0], dtype=torch.float64, device=kx.device)
    kx, ky = _stack_maps([(kx, ky), (identity, identity)])
    index = torch.where(mapped, plan.map_index, kx.shape[0] - 1)
    recalibrated = Recalibrated(forecast, kx, ky, n_nodes=plan.n_nodes, map_index=index)
    return Stitched([scaled, recalibrated], mapped.to(torch.int64))


def _scale_spread(p: Predictive, s: float | Tensor) -> Predictive:
    r"""The law of :math:`\mu + s (Y - \mu)`: ``s`` a float or a tensor broadcastable to
    ``batch_shape`` (one factor per point). Same family as ``p``.

    For a ``MultivariateNormal`` with per-point factors the covariance becomes
    :math:`D \Sigma D` with :math:`D = \mathrm{diag}(s)`, so each marginal variance is scaled
    by :math:`s_i^2`.
    """
    if isinstance(s, Tensor):
        s = s.to(device=p.device, dtype=p.dtype).expand(p.batch_shape)
    if isinstance(p, Normal):
        return Normal(p.loc, s * p.scale, validate=False)
    if isinstance(p, MultivariateNormal):
        if isinstance(s, Tensor):
            col = s.unsqueeze(-1)
            if p.cov_factor is not None and p.cov_diag is not None:
                return MultivariateNormal(
                    p.mean, cov_factor=col * p.cov_factor, cov_diag=s.square() * p.cov_diag
                )
            return MultivariateNormal(p.mean, scale_tril=col * p.scale_tril)
        if p.cov_factor is not None and p.cov_diag is not None:
            return MultivariateNormal(
                p.mean, cov_factor=s * p.cov_factor, cov_diag=s**2 * p.cov_diag
            )
        return MultivariateNormal(p.mean, scale_tril=s * p.scale_tril)
    if isinstance(p, GaussianMixture):
        mean = p.mean.unsqueeze(0)
        return GaussianMixture(p.weights, mean + s * (p.loc - mean), s * p.scale, validate=False)
    if isinstance(p, Ensemble):
        mean = p.mean.unsqueeze(0)
        return Ensemble(
            mean + s * (p.members - mean), p.weights, estimator=p.estimator, alpha=p.alpha
        )
    raise TypeError(
        f"forecast is a {type(p).__name__}; VarianceScaling supports Normal, "
        "MultivariateNormal, GaussianMixture and Ensemble"
    )
