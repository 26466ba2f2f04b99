"""Scores that see a forecast only through its first two moments: the Dawid-Sebastiani score."""

from __future__ import annotations

from typing import Any

import torch

from uqdyn._arrays import ArrayLike, Reduction, prepare

from ._common import DEFAULT_MEMBER_NAME, Dim, check_nan_policy, check_positive, finish
from ._common import resolve_core_dim as _resolve_core_dim
from ._lazy import dask_aware

__all__ = ["dss", "dss_ensemble", "dss_ensemble_multivariate"]


@dask_aware({"obs": None, "mean": None, "var": None})
def dss(
    obs: ArrayLike,
    mean: ArrayLike,
    var: ArrayLike,
    *,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Dawid-Sebastiani score of a forecast with mean ``mu`` and variance ``sigma^2``.

    ``DSS = (y - mu)^2 / sigma^2 + log sigma^2`` (= ``((y - mu)/sigma)^2 + 2 log sigma``, the
    scoringrules form): proper for every forecast with finite variance, and twice the
    Gaussian log score minus ``log 2 pi``, so it ranks forecasts by their first two moments
    only.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    mean, var:
        Forecast means and variances (``var > 0``), broadcastable with ``obs``. Pass
        ``std ** 2`` for a standard deviation.
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the score: ``sum(w s) / sum(w)``.
    nan_policy:
        ``"propagate"`` (NaN input, NaN score), ``"omit"`` (NaN points left out of
        reductions) or ``"raise"``.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (a weighted mean over ``dim`` when given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``None``), ignoring NaN
        points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of the broadcast shape without ``dim``, of the caller's kind.

    References
    ----------
    Dawid & Sebastiani (1999), "Coherent dispersion criteria for optimal experimental
    design", Ann. Statist. 27(1); Gneiting & Raftery (2007), JASA 102(477), eq. (27).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.moments import dss
    >>> dss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    tensor([4.])
    """
    (y, mu, v), restore = prepare(obs, mean, var, names=["obs", "mean", "var"])
    check_nan_policy(nan_policy, {"obs": y, "mean": mu, "var": v})
    check_positive(v, "var")
    score = (y - mu) ** 2 / v + torch.log(v)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware({"obs": None, "forecasts": "member_dim"})
def dss_ensemble(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -1,
    bias: bool = False,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Dawid-Sebastiani score of an ensemble from its mean and variance.

    :func:`dss` with ``mu`` the member mean and ``sigma^2`` the member variance,
    ``1/(M-1) sum (x_m - mu)^2`` (``bias=False``, default) or ``1/M sum (...)``
    (``bias=True``): scoringrules' ``dssuv_ensemble``. An ensemble of identical members has
    zero variance and an infinite score (``+inf``, or NaN when ``y`` equals the members;
    scoringrules gives the same).

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble, shape ``(*batch, M)`` with members on ``member_dim`` (``M >= 2`` unless
        ``bias``).
    member_dim:
        Member axis; for xarray a dim name (default ``"member"``).
    bias:
        Use the biased (``1/M``) variance.
    dim, weights, reduction, skipna, mask:
        As in :func:`dss`.
    nan_policy:
        ``"propagate"`` (NaN observation or member: NaN score), ``"omit"`` (NaN members
        dropped per point, moments of the members left; NaN points left out of reductions)
        or ``"raise"``.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Dawid & Sebastiani (1999), Ann. Statist. 27(1); Gneiting & Raftery (2007), JASA 102(477).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.moments import dss_ensemble
    >>> dss_ensemble(torch.tensor([1.0]), torch.tensor([[-1.0, 1.0]]))
    tensor([1.1931])
    """
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    (y, fc), restore = prepare(obs, forecasts, names=["obs", "forecasts"], core=[None, member])
    if not isinstance(bias, bool):
        raise TypeError(f"bias={bias!r}; expected a boolean")
    check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    if nan_policy == "omit":
        ok = ~torch.isnan(fc)
        m = ok.sum(-1).to(fc.dtype)
        zero = torch.zeros((), dtype=fc.dtype, device=fc.device)
        mu = torch.where(ok, fc, zero).sum(-1) / m
        ss = torch.where(ok, (fc - mu.unsqueeze(-1)) ** 2, zero).sum(-1)
    else:
        m = fc.new_full(fc.shape[:-1], fc.shape[-1])
        mu = fc.mean(-1)
        ss = ((fc - mu.unsqueeze(-1)) ** 2).sum(-1)
    dof = m if bias else m - 1.0
    few = (dof <= 0) & ~torch.isnan(y)
    if bool(few.any()):
        raise ValueError(
            f"forecasts of shape {tuple(fc.shape)} (members last) has too few "
            f"{'non-NaN ' if nan_policy == 'omit' else ''}members at {int(few.sum())} points "
            f"for the {'biased' if bias else 'unbiased'} variance; expected M >= "
            f"{1 if bias else 2}"
        )
    v = ss / dof
    score = (y - mu) ** 2 / v + torch.log(v)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware({"forecasts": ("member_dim", "event_dim"), "obs": "event_dim"})
def dss_ensemble_multivariate(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -2,
    event_dim: int | str = -1,
    bias: bool = False,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Multivariate Dawid-Sebastiani score of an ensemble.

    ``DSS = (y - mu)^T S^{-1} (y - mu) + log det S`` with ``mu`` the member mean and ``S``
    the member covariance (``1/(M-1)``, or ``1/M`` with ``bias``): scoringrules'
    ``dssmv_ensemble``. Solved with a Cholesky factorisation, O(N (M D^2 + D^3)); a
    singular covariance (``M <= D`` unbiased, or collinear members) has no finite score and
    gives NaN or ``inf`` at that point.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch, D)`` with variables on ``event_dim``.
    forecasts:
        Ensemble, shape ``(*batch, M, D)`` (as :func:`uqdyn.scoring.multivariate.energy_score`).
    member_dim, event_dim:
        Axes of ``forecasts`` (dim names for xarray; the default member dim is ``"member"``).
    bias:
        Use the biased (``1/M``) covariance.
    dim, weights, reduction, skipna, mask:
        As in :func:`dss`.
    nan_policy:
        ``"propagate"`` (NaN input, NaN score), ``"omit"`` (NaN points left out of
        reductions) or ``"raise"``.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Dawid & Sebastiani (1999), Ann. Statist. 27(1); Gneiting & Raftery (2007), JASA 102(477).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.moments import dss_ensemble_multivariate
    >>> x = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]])
    >>> dss_ensemble_multivariate(torch.zeros(1, 2), x, bias=True)
    tensor([-1.3863])
    """
    from .multivariate import _prepare_multivariate

    if not isinstance(bias, bool):
        raise TypeError(f"bias={bias!r}; expected a boolean")
    check_nan_policy(nan_policy)
    y, fc, _, restore = _prepare_multivariate(obs, forecasts, member_dim, event_dim, None)
    check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    members, dims = fc.shape[-2], fc.shape[-1]
    dof = members if bias else members - 1
    if dof <= 0:
        raise ValueError(
            f"forecasts has {members} member(s); expected M >= {1 if bias else 2} for the "
            f"{'biased' if bias else 'unbiased'} covariance"
        )
    mu = fc.mean(-2)
    centred = fc - mu.unsqueeze(-2)
    cov = centred.transpose(-1, -2) @ centred / dof  # (*batch, D, D)
    chol, info = torch.linalg.cholesky_ex(cov)
    singular = info != 0
    eye = torch.eye(dims, dtype=fc.dtype, device=fc.device)
    chol = torch.where(singular[..., None, None], eye, chol)
    z = torch.linalg.solve_triangular(chol, (y - mu).unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    score = (z * z).sum(-1) + logdet
    nan = torch.isnan(y).any(-1) | torch.isnan(fc).flatten(-2).any(-1)
    score = torch.where(singular & ~nan, torch.inf, score)
    score = torch.where(nan, torch.nan, score)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )
