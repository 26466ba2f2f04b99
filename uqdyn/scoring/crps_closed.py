"""Closed-form CRPS of parametric forecasts (Normal, Gaussian mixture) and of a Predictive."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, prepare
from uqdyn._normal import std_normal_cdf, std_normal_pdf

from ._common import check_core_sizes, check_positive, finish, normalise_weights
from ._common import resolve_core_dim as _resolve_core_dim

__all__ = ["crps_normal", "crps_mixture", "crps"]

_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


def _expected_abs_normal(m: Tensor, s: Tensor) -> Tensor:
    """``E|Z|`` for ``Z ~ N(m, s^2)``: ``2 s phi(m/s) + m (2 Phi(m/s) - 1)``."""
    z = m / s
    return 2.0 * s * std_normal_pdf(z) + m * (2.0 * std_normal_cdf(z) - 1.0)


def crps_normal(
    obs: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """CRPS of a Gaussian forecast ``N(mu, sigma^2)``, in closed form.

    ``CRPS = sigma * (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi))`` with
    ``z = (obs - mu) / sigma`` (the exact CRPS of the distribution; no estimator involved).

    Parameters
    ----------
    obs, mu, sigma:
        Observations, means and standard deviations, mutually broadcastable shapes
        ``(*batch,)``. ``sigma`` must be > 0 (NaN entries give NaN).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over all points,
        ignoring NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

    References
    ----------
    Gneiting, Raftery, Westveld & Goldman (2005), "Calibrated probabilistic forecasting using
    ensemble model output statistics and minimum CRPS estimation", MWR 133(5).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import crps_normal
    >>> crps_normal(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    tensor([0.2337])
    """
    (y, m, s), restore = prepare(obs, mu, sigma, names=["obs", "mu", "sigma"])
    check_positive(s, "sigma")
    z = (y - m) / s
    score = s * (z * (2.0 * std_normal_cdf(z) - 1.0) + 2.0 * std_normal_pdf(z) - _INV_SQRT_PI)
    return finish(score, restore, reduction, skipna, mask)


def crps_mixture(
    obs: ArrayLike,
    weights: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    component_dim: int | str = -1,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """CRPS of a Gaussian mixture ``sum_k w_k N(mu_k, sigma_k^2)``, in closed form.

    ``CRPS = sum_k w_k A(y - mu_k, sigma_k^2)
    - 1/2 sum_kl w_k w_l A(mu_k - mu_l, sigma_k^2 + sigma_l^2)`` with
    ``A(m, s^2) = E|N(m, s^2)| = 2 s phi(m/s) + m (2 Phi(m/s) - 1)`` (Grimit et al. 2006);
    the exact CRPS of the mixture, computed over all K^2 component pairs (K is small).

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    weights:
        Non-negative component weights, shape ``(K,)`` or ``(*batch, K)`` with components on
        ``component_dim``; normalised to sum to one at each point.
    mu, sigma:
        Component means and standard deviations (> 0), shape ``(*batch, K)`` or ``(K,)``.
    component_dim:
        Component axis of ``weights``, ``mu`` and ``sigma`` (default last). For
        ``xarray.DataArray`` inputs a dim name; the default ``-1`` means ``"component"``.
    reduction, skipna, mask:
        As in :func:`crps_normal`.

    Returns
    -------
    Score of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

    References
    ----------
    Grimit, Gneiting, Berrocal & Johnson (2006), "The continuous ranked probability score for
    circular variables and its application to mesoscale forecast ensemble verification",
    QJRMS 132(621).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import crps_mixture
    >>> crps_mixture(torch.tensor([0.0]), torch.tensor([0.5, 0.5]),
    ...              torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    tensor([0.2337])
    """
    comp = _resolve_core_dim(mu, component_dim, -1, "component_dim", "component")
    (y, w, m, s), restore = prepare(
        obs,
        weights,
        mu,
        sigma,
        names=["obs", "weights", "mu", "sigma"],
        core=[None, comp, comp, comp],
    )
    check_core_sizes({"weights": w, "mu": m, "sigma": s}, "component")
    check_positive(s, "sigma")
    w = normalise_weights(w, "weights")
    first = (w * _expected_abs_normal(y.unsqueeze(-1) - m, s)).sum(-1)
    pair_m = m.unsqueeze(-1) - m.unsqueeze(-2)
    pair_s = torch.sqrt(s.unsqueeze(-1) ** 2 + s.unsqueeze(-2) ** 2)
    pair_w = w.unsqueeze(-1) * w.unsqueeze(-2)
    second = (pair_w * _expected_abs_normal(pair_m, pair_s)).sum((-1, -2))
    return finish(first - 0.5 * second, restore, reduction, skipna, mask)


def crps(obs: Any, predictive: Any) -> Tensor:
    """CRPS of a :class:`~uqdyn.predictive.base.Predictive`, whatever its family.

    Dispatches to ``predictive.crps(obs)``: the closed form for ``Normal`` and
    ``MultivariateNormal`` (marginals), ``GaussianMixture`` (Grimit et al. 2006), and the
    ensemble's own estimator for ``Ensemble`` (see :func:`crps_ensemble`).

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to ``predictive.batch_shape``.
    predictive:
        A ``Predictive``.

    Returns
    -------
    Tensor of shape ``predictive.batch_shape``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.scoring import crps
    >>> crps(torch.zeros(2), Normal(torch.zeros(2), torch.ones(2)))
    tensor([0.2337, 0.2337])
    """
    # Duck-typed so that scoring never imports predictive (predictive uses scoring's kernels).
    if not callable(getattr(predictive, "crps", None)) or not hasattr(predictive, "batch_shape"):
        raise TypeError(
            f"predictive is a {type(predictive).__name__}; expected a uqdyn Predictive "
            "(for arrays use crps_normal, crps_mixture or crps_ensemble)"
        )
    return predictive.crps(obs)
