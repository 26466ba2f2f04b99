"""Sub-forecasts: the points of a Predictive selected by flat index or along one batch axis.

Grouped and local recalibrators fit on the points of one group or cell, and cross-validation
fits on some cases and scores the others; both need the forecast restricted to those points
without evaluating it on the whole batch.
"""

from __future__ import annotations

from torch import Tensor

from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal, Predictive

from .recalibrated import Recalibrated
from .stitched import Stitched


def _can_take_flat(p: Predictive) -> bool:
    """Whether :func:`_take_flat` keeps ``p``'s family exactly (MVN is joint: it does not)."""
    if isinstance(p, Recalibrated):
        return _can_take_flat(p.base)
    if isinstance(p, Stitched):
        return all(_can_take_flat(q) for q in p.parts)
    return isinstance(p, (Normal, Ensemble, GaussianMixture))


def _take_flat(p: Predictive, idx: Tensor) -> Predictive:
    """The points ``idx (n,)`` of the flattened batch as a forecast of ``batch_shape (n,)``.

    A ``MultivariateNormal`` gives its Normal marginals (the joint structure cannot be kept
    for an arbitrary subset of points).
    """
    shape = p.batch_shape
    if isinstance(p, MultivariateNormal):
        p = p.marginal()
    if isinstance(p, Normal):
        loc = p.loc.expand(shape).reshape(-1)[idx]
        return Normal(loc, p.scale.expand(shape).reshape(-1)[idx], validate=False)
    if isinstance(p, Ensemble):
        members = p.members.reshape(p.n_members, -1)[:, idx]
        return Ensemble(members, p.weights, estimator=p.estimator, alpha=p.alpha)
    if isinstance(p, GaussianMixture):
        k = p.n_components
        return GaussianMixture(
            p.weights.reshape(k, -1)[:, idx],
            p.loc.reshape(k, -1)[:, idx],
            p.scale.reshape(k, -1)[:, idx],
            validate=False,
        )
    if isinstance(p, Recalibrated):
        index = None if p.map_index is None else p.map_index.reshape(-1)[idx]
        return Recalibrated(
            _take_flat(p.base, idx), p.knots_x, p.knots_y, n_nodes=p.n_nodes, map_index=index
        )
    if isinstance(p, Stitched):
        return Stitched([_take_flat(q, idx) for q in p.parts], p.index.reshape(-1)[idx])
    raise TypeError(
        f"forecast is a {type(p).__name__}; expected Normal, MultivariateNormal, "
        "GaussianMixture, Ensemble, Recalibrated or Stitched"
    )


def _take_along(p: Predictive, axis: int, idx: Tensor) -> Predictive:
    """The entries ``idx`` of batch axis ``axis`` (``0 <= axis < len(batch_shape)``)."""
    shape = p.batch_shape
    if isinstance(p, Normal):
        loc = p.loc.expand(shape).index_select(axis, idx)
        return Normal(loc, p.scale.expand(shape).index_select(axis, idx), validate=False)
    if isinstance(p, Ensemble):
        return Ensemble(
            p.members.index_select(axis + 1, idx), p.weights, estimator=p.estimator, alpha=p.alpha
        )
    if isinstance(p, GaussianMixture):
        return GaussianMixture(
            p.weights.index_select(axis + 1, idx),
            p.loc.index_select(axis + 1, idx),
            p.scale.index_select(axis + 1, idx),
            validate=False,
        )
    if isinstance(p, MultivariateNormal):
        if axis == len(shape) - 1:
            raise ValueError(
                f"axis={axis} is the event axis of a MultivariateNormal (its points are jointly "
                "Gaussian); expected one of the leading batch axes"
            )
        n = shape[-1]
        mean = p.mean.index_select(axis, idx)
        factor, diag = p.cov_factor, p.cov_diag
        if factor is not None and diag is not None:
            factor = factor.expand(*shape, factor.shape[-1]).index_select(axis, idx)
            return MultivariateNormal(
                mean, cov_factor=factor, cov_diag=diag.expand(shape).index_select(axis, idx)
            )
        tril = p.scale_tril.expand(*shape[:-1], n, n).index_select(axis, idx)
        return MultivariateNormal(mean, scale_tril=tril)
    if isinstance(p, Recalibrated):
        index = None if p.map_index is None else p.map_index.index_select(axis, idx)
        return Recalibrated(
            _take_along(p.base, axis, idx),
            p.knots_x,
            p.knots_y,
            n_nodes=p.n_nodes,
            map_index=index,
        )
    if isinstance(p, Stitched):
        return Stitched(
            [_take_along(q, axis, idx) for q in p.parts], p.index.index_select(axis, idx)
        )
    raise TypeError(
        f"forecast is a {type(p).__name__}; expected Normal, MultivariateNormal, "
        "GaussianMixture, Ensemble, Recalibrated or Stitched"
    )
