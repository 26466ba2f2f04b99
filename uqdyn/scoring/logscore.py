"""Logarithmic score (negative log-likelihood) of a Predictive or of a Gaussian forecast."""

from __future__ import annotations

import math
from typing import Any

import torch

from uqdyn._arrays import ArrayLike, Reduction, prepare

from ._common import Dim, check_nan_policy, check_positive, finish
from ._lazy import dask_aware

__all__ = ["log_score", "log_score_normal"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_score(
    obs: ArrayLike,
    predictive: Any,
    *,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Logarithmic score ``-log p(obs)`` of a :class:`~uqdyn.predictive.base.Predictive`.

    Calls ``predictive.log_prob(obs)``: elementwise for ``Normal`` and ``GaussianMixture``,
    joint over the last axis for ``MultivariateNormal``. Ensembles have no density and raise
    ``NotImplementedError``. For plain Gaussian parameters use :func:`log_score_normal`.

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to ``predictive.batch_shape`` (a torch tensor,
        numpy array or ``xarray.DataArray``).
    predictive:
        A ``Predictive`` with a density.
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the batch shape (xarray: by dim name), as in
        :func:`~uqdyn.scoring.crps_normal`.
    nan_policy:
        ``"propagate"``, ``"omit"`` (NaN points left out of the reduction) or ``"raise"``
        (ValueError naming the input).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (the mean over ``dim`` when ``dim`` is given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``dim`` is None), ignoring
        NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the shape of ``predictive.log_prob(obs)`` (0-d after a reduction), of the kind of
    ``obs``.

    References
    ----------
    Good (1952), "Rational decisions", JRSS B 14(1); Gneiting & Raftery (2007), JASA 102(477).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.scoring import log_score
    >>> log_score(torch.zeros(1), Normal(torch.zeros(1), torch.ones(1)))
    tensor([0.9189])
    """
    # Duck-typed so that scoring never imports predictive (predictive uses scoring's kernels).
    if not callable(getattr(predictive, "log_prob", None)) or not hasattr(predictive, "dtype"):
        raise TypeError(
            f"predictive is a {type(predictive).__name__}; expected a uqdyn Predictive "
            "(for Gaussian parameters use log_score_normal)"
        )
    (y,), restore = prepare(obs, names=["obs"])
    y = y.to(device=predictive.device, dtype=predictive.dtype)
    check_nan_policy(nan_policy, {"obs": y})
    score = -predictive.log_prob(y)
    if score.shape != restore.batch_shape:
        restore = type(restore)(restore.kind, score.shape)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware({"obs": None, "mu": None, "sigma": None})
def log_score_normal(
    obs: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Logarithmic score of a Gaussian forecast: ``-log N(obs; mu, sigma^2)``.

    ``LS = log(sigma) + 1/2 log(2 pi) + (obs - mu)^2 / (2 sigma^2)``.

    Parameters
    ----------
    obs, mu, sigma:
        Observations, means and standard deviations (> 0), broadcastable shapes ``(*batch,)``.
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`log_score`.

    Returns
    -------
    Score of the broadcast shape (0-d after a reduction), of the caller's kind.

    References
    ----------
    Good (1952), JRSS B 14(1); Gneiting & Raftery (2007), JASA 102(477).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import log_score_normal
    >>> log_score_normal(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    tensor([1.4189])
    """
    (y, m, s), restore = prepare(obs, mu, sigma, names=["obs", "mu", "sigma"])
    check_nan_policy(nan_policy, {"obs": y, "mu": m, "sigma": s})
    check_positive(s, "sigma")
    z = (y - m) / s
    score = torch.log(s) + _HALF_LOG_2PI + 0.5 * z * z
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )
