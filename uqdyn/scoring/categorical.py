"""Scores of categorical and binary-event forecasts: ranked probability and fair Brier scores."""

from __future__ import annotations

from typing import Any

import torch

from uqdyn._arrays import ArrayLike, Reduction, prepare
from uqdyn._checks import as_float

from ._common import DEFAULT_MEMBER_NAME, Dim, check_in_unit_interval, check_nan_policy, finish
from ._common import resolve_core_dim as _resolve_core_dim
from ._lazy import dask_aware
from .threshold import as_thresholds, ensemble_cdf

__all__ = ["rps", "rps_probabilities", "fair_brier_score"]


@dask_aware({"obs": None, "forecasts": "member_dim"})
def rps(
    obs: ArrayLike,
    forecasts: ArrayLike,
    thresholds: ArrayLike,
    *,
    member_dim: int | str = -1,
    fair: bool = False,
    inclusive: bool = True,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Ranked probability score of an ensemble for the categories cut at ``thresholds``.

    With ``T`` increasing thresholds the ``T + 1`` ordered categories are
    ``(-inf, t_1], (t_1, t_2], ..., (t_T, inf)`` and

    ``RPS = sum_k (F_ens(t_k) - 1{y <= t_k})^2``,

    ``F_ens(t) = 1/M #{m : x_m <= t}``: the sum over thresholds of the Brier scores of the
    cumulative events (the sum of :func:`uqdyn.scoring.threshold.threshold_brier_score` over
    its threshold axis). The last category's cumulative term is always 0, so the sum runs
    over the ``T`` thresholds; the score is **not** divided by the number of categories.
    This is the convention of xskillscore's ``rps`` (which uses right-open categories,
    events ``{x < t}``: pass ``inclusive=False`` to match it) and of scoringrules'
    ``rps_score`` given the category probabilities.

    ``fair=True`` gives the fair RPS (Ferro 2014): with ``e_k = M F_ens(t_k)`` members in the
    cumulative event, each term becomes
    ``(e_k / M - o_k)^2 - e_k (M - e_k) / (M^2 (M - 1))``, an unbiased estimate of the RPS of
    the distribution the members are drawn from (xskillscore's ``fair=True``).

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecasts:
        Ensemble members, shape ``(*batch, M)`` with members on ``member_dim``.
    thresholds:
        Category edges, a number or shape ``(T,)``, strictly increasing.
    member_dim:
        Member axis of ``forecasts``; for ``xarray.DataArray`` a dim name, the default ``-1``
        meaning ``"member"``.
    fair:
        Fair (ensemble-size adjusted) RPS; needs at least 2 members.
    inclusive:
        Cumulative events ``{x <= t}`` (default, as properscoring's threshold Brier score) or
        ``{x < t}`` (``False``, xskillscore's right-edge-exclusive categories).
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the score: ``sum(w s) / sum(w)``.
    nan_policy:
        ``"propagate"`` (NaN observation or member: NaN score), ``"omit"`` (NaN members
        dropped per point, ``M`` the members left; NaN points left out of reductions) or
        ``"raise"``.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (a weighted mean over ``dim`` when given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``None``), ignoring NaN
        points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Epstein (1969), J. Appl. Meteor. 8(6); Weigel, Liniger & Appenzeller (2007), MWR 135(1);
    Ferro (2014), "Fair scores for ensemble forecasts", QJRMS 140(683).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.categorical import rps
    >>> rps(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]), [0.0, 1.0])
    tensor([0.2500])
    """
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    (y, fc), restore = prepare(obs, forecasts, names=["obs", "forecasts"], core=[None, member])
    if fc.shape[-1] == 0:
        raise ValueError(f"forecasts of shape {tuple(fc.shape)} has no members on member_dim")
    if not isinstance(fair, bool) or not isinstance(inclusive, bool):
        raise TypeError(f"fair={fair!r}, inclusive={inclusive!r}; expected booleans")
    check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    thr = as_thresholds(thresholds, fc)
    omit = nan_policy == "omit"
    cdf = ensemble_cdf(fc, thr, omit=omit, strict=not inclusive)  # (*batch, T)
    event = ((y.unsqueeze(-1) <= thr) if inclusive else (y.unsqueeze(-1) < thr)).to(fc.dtype)
    terms = (cdf - event) ** 2
    if fair:
        if omit:
            m = (~torch.isnan(fc)).sum(-1).to(fc.dtype).unsqueeze(-1)
        else:
            m = fc.new_full((1,), fc.shape[-1])
        if bool((m < 2).any()):
            raise ValueError(
                f"fair=True needs at least 2 members at every point; forecasts has shape "
                f"{tuple(fc.shape)} (members last)"
                + (" and some points have fewer than 2 non-NaN members" if omit else "")
            )
        terms = terms - cdf * (1.0 - cdf) / (m - 1.0)
    score = terms.sum(-1)
    score = torch.where(torch.isnan(y), torch.nan, score)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


def rps_probabilities(
    obs: ArrayLike,
    prob: ArrayLike,
    *,
    category_dim: int | str = -1,
    onehot: bool = False,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Ranked probability score of forecast category probabilities.

    ``RPS = sum_{k=1}^{K} (P_k - O_k)^2`` with ``P_k = p_1 + ... + p_k`` the forecast's and
    ``O_k`` the observation's cumulative probabilities over the ``K`` ordered categories
    (the last term is 0 when both sum to 1), as scoringrules' ``rps_score``: not divided
    by ``K - 1``.

    Parameters
    ----------
    obs:
        The observed category: an index in ``0 .. K-1``, shape ``(*batch,)`` (scoringrules'
        ``rps_score`` numbers the categories ``1 .. K``), or with
        ``onehot=True`` a one-hot (or probability) vector ``(*batch, K)`` on ``category_dim``.
    prob:
        Forecast probabilities of the ``K`` categories, shape ``(*batch, K)`` on
        ``category_dim``, each in [0, 1].
    category_dim:
        Category axis (for xarray a dim name; the default ``-1`` means ``"category"``).
    onehot:
        Whether ``obs`` is one-hot encoded.
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`rps`.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Epstein (1969), J. Appl. Meteor. 8(6); Murphy (1971), J. Appl. Meteor. 10(1).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.categorical import rps_probabilities
    >>> rps_probabilities(torch.tensor(2), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    tensor(0.2600)
    """
    cat = _resolve_core_dim(prob, category_dim, -1, "category_dim", "category")
    if onehot:
        cat_o = _resolve_core_dim(obs, category_dim, -1, "category_dim", "category")
        (o, p), restore = prepare(obs, prob, names=["obs", "prob"], core=[cat_o, cat])
        if o.shape[-1] != p.shape[-1]:
            raise ValueError(
                f"obs has {o.shape[-1]} categories and prob {p.shape[-1]}; expected one length"
            )
    else:
        (idx, p), restore = prepare(obs, prob, names=["obs", "prob"], core=[None, cat])
    if p.shape[-1] == 0:
        raise ValueError(f"prob of shape {tuple(p.shape)} has no categories on category_dim")
    check_nan_policy(nan_policy, {"obs": o if onehot else idx, "prob": p})
    check_in_unit_interval(p, "prob", closed=True)
    k = p.shape[-1]
    if not onehot:
        valid = torch.isnan(idx) | ((idx >= 0) & (idx <= k - 1) & (idx == torch.round(idx)))
        if not bool(valid.all()):
            bad = idx[~valid].flatten()[0].item()
            raise ValueError(
                f"obs has {int((~valid).sum())} entries that are not category indices in "
                f"0..{k - 1} (e.g. {bad!r}); expected integer indices (or onehot=True)"
            )
        levels = torch.arange(k, device=p.device, dtype=p.dtype)
        o = (levels >= idx.unsqueeze(-1)).to(p.dtype)  # cumulative: O_k = 1{obs <= k}
        o = torch.where(torch.isnan(idx).unsqueeze(-1), torch.nan, o)
        cum_o = o
    else:
        cum_o = o.cumsum(-1)
    score = ((p.cumsum(-1) - cum_o) ** 2).sum(-1)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware({"obs": None, "forecasts": "member_dim"})
def fair_brier_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    threshold: float | None = None,
    *,
    member_dim: int | str = -1,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Fair Brier score of an ``M``-member ensemble for a binary event (Ferro 2014).

    ``FBS = (p - o)^2 - p (1 - p) / (M - 1)`` with ``p`` the fraction of members in the
    event and ``o`` the observed outcome. Its expectation over ensembles of ``M`` members
    drawn independently from a distribution with event probability ``q`` is the Brier
    score ``(q - o)^2`` of that distribution, whatever ``M``: members that are
    exchangeable with the observation are not penalised for the ensemble's finite size.

    Parameters
    ----------
    obs:
        With ``threshold``: observed values, shape ``(*batch,)``; the event is
        ``{obs > threshold}``. Without: the observed outcome, 0 or 1 (booleans accepted).
    forecasts:
        Ensemble, shape ``(*batch, M)`` on ``member_dim``, ``M >= 2``: values (with
        ``threshold``) or member outcomes 0/1 (without).
    threshold:
        Event threshold (a number): the event is ``value > threshold``, as the ``scores``
        package's default (``numpy.greater``). ``None``: the inputs are already binary.
    member_dim:
        Member axis of ``forecasts``; for xarray a dim name (default ``"member"``).
    dim, weights:
        Batch axes to average over and reduction weights, as in :func:`rps`.
    nan_policy:
        ``"propagate"`` (NaN input: NaN score), ``"omit"`` (NaN members dropped per point,
        ``M`` the members left; NaN points left out of reductions) or ``"raise"``.
    reduction, skipna, mask:
        As in :func:`rps`.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Ferro (2014), "Fair scores for ensemble forecasts", QJRMS 140(683), eq. (8);
    Ferro, Richardson & Weigel (2008), Meteorol. Appl. 15(1).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring.categorical import fair_brier_score
    >>> fair_brier_score(torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    tensor([0.])
    """
    member = _resolve_core_dim(forecasts, member_dim, -1, "member_dim", DEFAULT_MEMBER_NAME)
    (y, fc), restore = prepare(obs, forecasts, names=["obs", "forecasts"], core=[None, member])
    check_nan_policy(nan_policy, {"obs": y, "forecasts": fc})
    nan_y, nan_fc = torch.isnan(y), torch.isnan(fc)
    if threshold is None:
        for name, t in (("obs", y), ("forecasts", fc)):
            bad = (t != 0) & (t != 1) & ~torch.isnan(t)
            if bool(bad.any()):
                raise ValueError(
                    f"{name} has {int(bad.sum())} entries that are not 0 or 1 (e.g. "
                    f"{t[bad].flatten()[0].item()!r}) and threshold=None; expected binary "
                    "outcomes, or pass threshold= to score the event value > threshold"
                )
        o, e = y, fc
    else:
        thr = as_float(threshold, "threshold", finite=False)
        o, e = (y > thr).to(y.dtype), (fc > thr).to(fc.dtype)
    if nan_policy == "omit":
        m = (~nan_fc).sum(-1).to(fc.dtype)
        p = torch.where(nan_fc, 0.0, e).sum(-1) / m
    else:
        m = fc.new_full(fc.shape[:-1], fc.shape[-1])
        p = e.mean(-1)
        p = torch.where(nan_fc.any(-1), torch.nan, p)
    few = (m < 2) & ~nan_y
    if bool(few.any()):
        raise ValueError(
            f"forecasts of shape {tuple(fc.shape)} (members last) has fewer than 2 "
            f"{'non-NaN ' if nan_policy == 'omit' else ''}members at {int(few.sum())} points; "
            "the fair Brier score needs M >= 2"
        )
    score = (p - o) ** 2 - p * (1.0 - p) / (m - 1.0)
    score = torch.where(nan_y, torch.nan, score)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )
