"""Closed-form CRPS of parametric forecasts (Normal, Gaussian mixture) and of a Predictive."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, prepare
from uqdyn._normal import SQRT2, std_normal_cdf, std_normal_pdf

from ._common import (
    Dim,
    check_core_sizes,
    check_nan_policy,
    check_positive,
    finish,
    normalise_weights,
)
from ._common import resolve_core_dim as _resolve_core_dim
from ._lazy import dask_aware

__all__ = ["crps_normal", "crps_mixture", "crps"]

_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_TWO_INV_SQRT_2PI = 2.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / SQRT2
# Elements per block of the CPU kernel: five blocks (obs, mu, sigma, z, exp term) stay in a
# core's L2 cache, and each block is below torch's intra-op grain size, so every op of a block
# runs on the calling thread and the blocks are spread over threads explicitly.
_BLOCK = 16384
_MIN_THREADED = 2 * _BLOCK


def _crps_normal_plain(y: Tensor, m: Tensor, s: Tensor) -> Tensor:
    """Differentiable ``s (z erf(z / sqrt 2) + 2 phi(z) - 1/sqrt(pi))``, ``z = (y - m) / s``."""
    z = (y - m) / s
    return s * (
        z * torch.erf(z * _INV_SQRT2) + _TWO_INV_SQRT_2PI * torch.exp(-0.5 * z * z) - _INV_SQRT_PI
    )


def _crps_normal_cpu(y: Tensor, m: Tensor, s: Tensor) -> Tensor:
    """The closed form of :func:`_crps_normal_plain` on the CPU without autograd.

    Evaluated in cache-sized blocks with in-place ops into two per-thread scratch blocks (one
    ``erf`` and one ``exp`` per element, no full-size temporaries), the blocks spread over
    ``torch.get_num_threads()`` threads (torch ops release the GIL). ``sigma`` is checked
    block by block; the first block with a non-positive entry stops the work and the full
    check raises its ValueError.
    """
    y, m, s = (t.contiguous().reshape(-1) for t in (y, m, s))
    n = y.numel()
    out = torch.empty_like(y)
    bad: list[int] = []

    def run(lo: int, hi: int) -> None:
        width = min(_BLOCK, hi - lo)
        z_buf = torch.empty(width, dtype=y.dtype)
        e_buf = torch.empty(width, dtype=y.dtype)
        for a in range(lo, hi, _BLOCK):
            if bad:
                return
            b = min(a + _BLOCK, hi)
            z, e, o, sb = z_buf[: b - a], e_buf[: b - a], out[a:b], s[a:b]
            if bool(torch.le(sb, 0).any()):
                bad.append(a)
                return
            torch.sub(y[a:b], m[a:b], out=z).div_(sb)
            torch.mul(z, -0.5, out=e).mul_(z).exp_()
            torch.mul(z, _INV_SQRT2, out=o).erf_().mul_(z)
            o.add_(e, alpha=_TWO_INV_SQRT_2PI).sub_(_INV_SQRT_PI).mul_(sb)

    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1, n // _MIN_THREADED))
    if workers == 1:
        run(0, n)
    else:
        step = -(-n // workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda i: run(i * step, min(n, (i + 1) * step)), range(workers)))
    if bad:
        check_positive(s, "sigma")
    return out


def _crps_normal_kernel(y: Tensor, m: Tensor, s: Tensor) -> Tensor:
    """Pointwise Gaussian CRPS of broadcast tensors; checks ``sigma > 0``."""
    tracks_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (y, m, s))
    if (
        y.device.type == "cpu"
        and y.dtype in (torch.float32, torch.float64)
        and not tracks_grad
        and y.numel() >= _BLOCK
    ):
        return _crps_normal_cpu(y, m, s).reshape(y.shape)
    check_positive(s, "sigma")
    return _crps_normal_plain(y, m, s)


def _expected_abs_normal(m: Tensor, s: Tensor) -> Tensor:
    """``E|Z|`` for ``Z ~ N(m, s^2)``: ``2 s phi(m/s) + m (2 Phi(m/s) - 1)``."""
    z = m / s
    return 2.0 * s * std_normal_pdf(z) + m * (2.0 * std_normal_cdf(z) - 1.0)


@dask_aware({"obs": None, "mu": None, "sigma": None})
def crps_normal(
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
    """CRPS of a Gaussian forecast ``N(mu, sigma^2)``, in closed form.

    ``CRPS = sigma * (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi))`` with
    ``z = (obs - mu) / sigma`` (the exact CRPS of the distribution; no estimator involved),
    evaluated as ``sigma * (z erf(z / sqrt 2) + 2 phi(z) - 1/sqrt(pi))`` (one ``erf`` and one
    ``exp`` per point). On the CPU without autograd the points are processed in cache-sized
    blocks spread over ``torch.get_num_threads()`` threads; otherwise (GPU, gradients
    needed) the same formula runs as plain differentiable torch ops.

    Parameters
    ----------
    obs, mu, sigma:
        Observations, means and standard deviations, mutually broadcastable shapes
        ``(*batch,)``. ``sigma`` must be > 0 (NaN entries give NaN).
    dim:
        Batch axes to average over (ints; dim names for xarray); ``None`` keeps every point
        unless ``reduction`` is ``"mean"``/``"sum"``.
    weights:
        Reduction weights (e.g. cos-latitude) broadcastable to the batch shape (xarray: by
        dim name); the mean over the kept points is ``sum(w s) / sum(w)``. Needs ``dim`` or
        a ``reduction``.
    nan_policy:
        ``"propagate"`` (a NaN input gives a NaN score there), ``"omit"`` (NaN points are
        left out of the reduction) or ``"raise"`` (ValueError naming the input).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (the mean over ``dim`` when ``dim`` is given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``dim`` is None), ignoring
        NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape ``(*batch,)`` without ``dim`` (0-d after a full reduction),
    of the caller's kind.

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
    check_nan_policy(nan_policy, {"obs": y, "mu": m, "sigma": s})
    score = _crps_normal_kernel(y, m, s)
    return finish(
        score,
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
    )


@dask_aware(
    {
        "obs": None,
        "component_weights": "component_dim",
        "mu": "component_dim",
        "sigma": "component_dim",
    },
    default_dims={"component_dim": "component"},
)
def crps_mixture(
    obs: ArrayLike,
    component_weights: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    component_dim: int | str = -1,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
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
    component_weights:
        Non-negative component weights, shape ``(K,)`` or ``(*batch, K)`` with components on
        ``component_dim``; normalised to sum to one at each point. (``weights=`` is the
        reduction weight, as in every score.)
    mu, sigma:
        Component means and standard deviations (> 0), shape ``(*batch, K)`` or ``(K,)``.
    component_dim:
        Component axis of ``weights``, ``mu`` and ``sigma`` (default last). For
        ``xarray.DataArray`` inputs a dim name; the default ``-1`` means ``"component"``.
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`crps_normal` (NaN in any input gives a NaN score at that point).

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
        component_weights,
        mu,
        sigma,
        names=["obs", "component_weights", "mu", "sigma"],
        core=[None, comp, comp, comp],
    )
    check_nan_policy(nan_policy, {"obs": y, "component_weights": w, "mu": m, "sigma": s})
    check_core_sizes({"component_weights": w, "mu": m, "sigma": s}, "component")
    check_positive(s, "sigma")
    w = normalise_weights(w, "component_weights")
    first = (w * _expected_abs_normal(y.unsqueeze(-1) - m, s)).sum(-1)
    pair_m = m.unsqueeze(-1) - m.unsqueeze(-2)
    pair_s = torch.sqrt(s.unsqueeze(-1) ** 2 + s.unsqueeze(-2) ** 2)
    pair_w = w.unsqueeze(-1) * w.unsqueeze(-2)
    second = (pair_w * _expected_abs_normal(pair_m, pair_s)).sum((-1, -2))
    return finish(
        first - 0.5 * second,
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
    )


def crps(
    obs: Any,
    predictive: Any,
    *,
    dim: Dim = None,
    weights: Any = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Tensor:
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
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`crps_normal`, applied to the pointwise score (``nan_policy="raise"``
        checks ``obs``).

    Returns
    -------
    Tensor of shape ``predictive.batch_shape`` (reduced over ``dim`` when given).

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
    check_nan_policy(nan_policy)
    if nan_policy == "raise":
        (y,), _ = prepare(obs, names=["obs"])
        check_nan_policy(nan_policy, {"obs": y})
    score = predictive.crps(obs)
    if dim is None and weights is None and mask is None and reduction == "none":
        return score
    (s,), restore = prepare(score, names=["crps"])
    return finish(
        s,
        restore,
        reduction,
        skipna,
        mask,
        dim=dim,
        weights=weights,
        nan_policy=nan_policy,
    )
