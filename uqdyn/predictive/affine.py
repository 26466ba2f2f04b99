"""Affine maps of predictive distributions: back from normalised units to the user's units."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._checks import as_float_tensor
from .base import Predictive
from .ensemble import Ensemble
from .mixture import GaussianMixture
from .mvn import MultivariateNormal
from .normal import Normal

__all__ = ["affine_transform"]


def _broadcastable(t: Tensor, shape: torch.Size, name: str) -> None:
    """Raise unless ``t`` broadcasts to ``shape`` without changing it."""
    try:
        ok = torch.broadcast_shapes(t.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected a shape broadcastable to the "
            f"batch_shape {tuple(shape)}"
        )


def affine_transform(predictive: Predictive, scale: Any = 1.0, shift: Any = 0.0) -> Predictive:
    r"""The law of ``shift + scale * Y`` for ``Y ~ predictive``, in the same family.

    This is how normalised forecasts go back to the user's units: a model that predicts
    ``z = (y - c) / s`` returns ``affine_transform(p_z, scale=s, shift=c)``. Means become
    ``shift + scale * mean``, standard deviations ``scale * stddev``; the CRPS in the new units
    is ``scale`` times the CRPS of ``(y - shift) / scale``.

    Parameters
    ----------
    predictive:
        ``Normal``, ``GaussianMixture``, ``Ensemble`` (any ``batch_shape``), or
        ``MultivariateNormal`` (``scale`` a scalar or of shape ``(n,)`` along its last axis).
    scale:
        Positive factors broadcastable to ``batch_shape`` (finite, > 0).
    shift:
        Offsets broadcastable to ``batch_shape`` (finite).

    Returns
    -------
    Predictive
        Same family and ``batch_shape`` (labels of :meth:`Predictive.with_labels` kept).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal, affine_transform
    >>> p = affine_transform(Normal(torch.zeros(3), torch.ones(3)), scale=2.0, shift=10.0)
    >>> p.mean.tolist(), p.stddev.tolist()
    ([10.0, 10.0, 10.0], [2.0, 2.0, 2.0])
    """
    if not isinstance(predictive, Predictive):
        raise TypeError(f"predictive is a {type(predictive).__name__}; expected a uqdyn Predictive")
    like = predictive.mean
    a = as_float_tensor(scale, "scale", like=like)
    b = as_float_tensor(shift, "shift", like=like)
    shape = predictive.batch_shape
    _broadcastable(a, shape, "scale")
    _broadcastable(b, shape, "shift")
    if not bool(torch.isfinite(a).all()) or bool((a <= 0).any()):
        raise ValueError("scale has non-positive or non-finite entries; expected finite > 0")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("shift has non-finite entries; expected finite values")
    out: Predictive
    if isinstance(predictive, Normal):
        out = Normal(b + a * predictive.loc, a * predictive.scale, validate=False)
    elif isinstance(predictive, GaussianMixture):
        out = GaussianMixture(
            predictive.weights, b + a * predictive.loc, a * predictive.scale, validate=False
        )
    elif isinstance(predictive, Ensemble):
        out = Ensemble(
            b + a * predictive.members,
            predictive.weights,
            estimator=predictive.estimator,
            alpha=predictive.alpha,
        )
    elif isinstance(predictive, MultivariateNormal):
        n = shape[-1]
        if a.dim() > 1 or (a.dim() == 1 and a.shape[0] not in (1, n)):
            raise ValueError(
                f"scale has shape {tuple(a.shape)}; a MultivariateNormal takes a scalar or an "
                f"({n},) scale along its last axis"
            )
        diag = a.expand(n)
        if predictive.cov_factor is not None and predictive.cov_diag is not None:
            out = MultivariateNormal(
                b + a * predictive.mean,
                cov_factor=diag[:, None] * predictive.cov_factor,
                cov_diag=diag.square() * predictive.cov_diag,
            )
        else:
            out = MultivariateNormal(
                b + a * predictive.mean, scale_tril=diag[:, None] * predictive.scale_tril
            )
    else:
        raise TypeError(
            f"predictive is a {type(predictive).__name__}; affine_transform supports Normal, "
            "GaussianMixture, Ensemble and MultivariateNormal"
        )
    return predictive._labelled_like(out)
