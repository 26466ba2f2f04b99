r"""CORP reliability diagrams and score decompositions by isotonic regression.

CORP ("consistent, optimally binned, reproducible, PAV-based"; Dimitriadis, Gneiting & Jordan
2021) replaces the binning of a reliability diagram by the isotonic regression of the
observations on the forecasts, computed by the pool-adjacent-violators (PAV) algorithm. With
``S`` a consistent score for the forecast's functional (squared error / Brier score for means
and probabilities, the pinball loss for quantiles), ``x`` the forecasts, ``x_rc`` their
isotonic recalibration and ``r`` the best constant (the functional of the pooled
observations, "climatology"), the mean score decomposes exactly as

.. math::

    \bar S(x) = \mathrm{MCB} - \mathrm{DSC} + \mathrm{UNC}, \quad
    \mathrm{MCB} = \bar S(x) - \bar S(x_{rc}), \;
    \mathrm{DSC} = \bar S(r) - \bar S(x_{rc}), \;
    \mathrm{UNC} = \bar S(r),

with ``MCB >= 0`` (the forecasts themselves are an isotonic function of the forecasts) and
``DSC >= 0`` (a constant is one too). All points are pooled; computations run in float64
numpy on the CPU (the PAV solver is sequential).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from uqdyn._arrays import ArrayLike, Restore, prepare
from uqdyn._checks import as_float, as_int
from uqdyn.scoring._common import prepare_mask, prepare_weights
from uqdyn.scoring._common import resolve_core_dim as _resolve_core_dim

__all__ = [
    "CORPDecomposition",
    "CORPReliability",
    "CORPCRPSDecomposition",
    "corp_reliability",
    "corp_decomposition",
    "corp_crps_decomposition",
    "isotonic_fit",
]

FUNCTIONALS = ("mean", "quantile")


@dataclass(frozen=True)
class CORPDecomposition:
    """Score decomposition ``score = mcb - dsc + unc`` with the isotonic recalibration.

    Attributes
    ----------
    score, mcb, dsc, unc:
        Mean score of the forecasts, miscalibration, discrimination and uncertainty.
    recalibrated:
        The recalibrated forecast at every point, of the caller's kind and the points' shape
        (NaN at points left out by ``mask`` or ``nan_policy="omit"``).
    forecast_values:
        The distinct forecast values, sorted, shape ``(n_distinct,)`` (numpy).
    recalibrated_values:
        The recalibrated value at each of them: the reliability curve is the step function
        through ``(forecast_values, recalibrated_values)``.
    functional:
        ``"mean"`` or ``"quantile"``.
    level:
        Quantile level (``None`` for the mean).
    n:
        Number of points pooled.
    """

    score: float
    mcb: float
    dsc: float
    unc: float
    recalibrated: Any
    forecast_values: np.ndarray
    recalibrated_values: np.ndarray
    functional: str
    level: float | None
    n: int


@dataclass(frozen=True)
class CORPReliability(CORPDecomposition):
    """CORP reliability diagram of probability forecasts of a binary event (Brier score).

    Adds, at each of ``forecast_values``, the pointwise consistency band ``band_lower``,
    ``band_upper`` at coverage ``band_level`` from ``n_resamples`` resamples under the
    hypothesis of calibration (``None`` when ``n_resamples=0``).
    """

    band_lower: np.ndarray | None = None
    band_upper: np.ndarray | None = None
    band_level: float = 0.9
    n_resamples: int = 0


@dataclass(frozen=True)
class CORPCRPSDecomposition:
    """CORP decomposition of the quantile-approximated CRPS.

    ``score = 2/K sum_k QS_k`` (:func:`uqdyn.scoring.crps_quantile`, averaged over the points),
    ``mcb = 2/K sum_k MCB_k`` and likewise ``dsc`` and ``unc``, so ``score = mcb - dsc + unc``.

    Attributes
    ----------
    score, mcb, dsc, unc:
        The aggregated terms.
    levels:
        The K quantile levels, shape ``(K,)``.
    per_level:
        The K :class:`CORPDecomposition` of the pinball loss at each level.
    """

    score: float
    mcb: float
    dsc: float
    unc: float
    levels: np.ndarray
    per_level: tuple[CORPDecomposition, ...]


def _lower_quantile(values: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest ``v`` whose weight at or below it is >= ``level`` times the total: a
    minimiser of the (weighted) pinball loss. ``values`` sorted ascending, ``weights`` > 0."""
    cum = np.cumsum(weights)
    k = int(np.searchsorted(cum, level * cum[-1] * (1.0 - 1e-12), side="left"))
    return float(values[min(k, values.size - 1)])


def _groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, distinct, starts)``: stable sort of ``x``, its distinct values, group starts."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.ones(xs.size, dtype=bool)
    new[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new)
    return order, xs[starts], starts


def _pav_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (scipy's PAV, scipy >= 1.12)."""
    from scipy.optimize import isotonic_regression

    return np.asarray(isotonic_regression(values, weights=weights, increasing=True).x)


def _pav_quantile(blocks: list[tuple[np.ndarray, np.ndarray]], level: float) -> np.ndarray:
    """Non-decreasing pinball-loss fit of pooled groups by PAV with block quantiles.

    ``blocks`` are ``(observations, weights)`` of each distinct forecast value, in forecast
    order. Adjacent blocks whose lower ``level``-quantiles violate monotonicity are pooled
    and their quantile recomputed (Robertson, Wright & Dykstra 1988, sec. 1.4; Jordan et al.
    2022). Worst case O(n^2 log n) for n points.
    """
    vals: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    quants: list[float] = []
    sizes: list[int] = []
    for obs, w in blocks:
        order = np.argsort(obs, kind="stable")
        v, vw = obs[order], w[order]
        q = _lower_quantile(v, vw, level)
        n = 1
        while quants and quants[-1] > q:
            v = np.concatenate([vals.pop(), v])
            vw = np.concatenate([wts.pop(), vw])
            order = np.argsort(v, kind="stable")
            v, vw = v[order], vw[order]
            quants.pop()
            n += sizes.pop()
            q = _lower_quantile(v, vw, level)
        vals.append(v)
        wts.append(vw)
        quants.append(q)
        sizes.append(n)
    return np.repeat(np.asarray(quants), sizes)


def isotonic_fit(
    obs: np.ndarray,
    forecast: np.ndarray,
    functional: str = "mean",
    level: float = 0.5,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic regression of ``obs`` on ``forecast`` (1-d float64 arrays of one length).

    Points with equal forecast values get equal fitted values (they form one starting block).
    ``weights`` (positive, same length) weight the points; None weighs them equally.

    Returns
    -------
    fitted:
        The recalibrated value at every point, in input order.
    distinct:
        The sorted distinct forecast values.
    curve:
        The fitted value at each of them.
    """
    w = np.ones_like(obs) if weights is None else weights
    order, distinct, starts = _groups(forecast)
    ys, ws = obs[order], w[order]
    sizes = np.diff(np.append(starts, ys.size))
    if functional == "mean":
        wsum = np.add.reduceat(ws, starts)
        curve = _pav_mean(np.add.reduceat(ws * ys, starts) / wsum, wsum)
    else:
        blocks = list(zip(np.split(ys, starts[1:]), np.split(ws, starts[1:]), strict=True))
        curve = _pav_quantile(blocks, level)
    fitted = np.empty_like(obs)
    fitted[order] = np.repeat(curve, sizes)
    return fitted, distinct, curve


def _score(functional: str, level: float, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    if functional == "mean":
        s = (x - y) ** 2
    else:
        s = ((y < x).astype(np.float64) - level) * (x - y)
    return float(np.sum(w * s) / np.sum(w))


def _check_functional(functional: Any, level: Any) -> tuple[str, float]:
    if functional not in FUNCTIONALS:
        raise ValueError(f"functional={functional!r}; expected one of {FUNCTIONALS}")
    lv = as_float(level, "level")
    if functional == "quantile" and not 0 < lv < 1:
        raise ValueError(f"level={level!r}; expected a quantile level strictly in (0, 1)")
    return functional, lv


def _pool(
    obs: ArrayLike,
    forecast: ArrayLike,
    names: list[str],
    mask: Any,
    nan_policy: str,
    weights: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Restore, torch.Tensor]:
    """Flattened float64 ``(y, x, w)`` of the kept points, the keep mask, the Restore and the
    prepared observations (whose dtype and device the recalibrated values take). Points of
    zero weight are left out."""
    if nan_policy not in ("raise", "omit"):
        raise ValueError(
            f"nan_policy={nan_policy!r}; expected 'raise' or 'omit' (a pooled isotonic fit has "
            "no meaning with NaN points)"
        )
    (y_in, x_in), restore = prepare(obs, forecast, names=names)
    y, x = y_in.to(torch.float64), x_in.to(torch.float64)
    keep = torch.ones(restore.batch_shape, dtype=torch.bool, device=y.device)
    mask_t = prepare_mask(mask, restore, y.device)
    if mask_t is not None:
        keep = keep & mask_t
    bad = ~(torch.isfinite(y) & torch.isfinite(x)) & keep
    if bool(bad.any()):
        if nan_policy == "raise":
            raise ValueError(
                f"{names[0]} or {names[1]} has {int(bad.sum())} non-finite values at kept "
                "points and nan_policy='raise'; expected finite values (or nan_policy='omit')"
            )
        keep = keep & ~bad
    w = torch.ones(restore.batch_shape, dtype=torch.float64, device=y.device)
    if weights is not None:
        w = prepare_weights(weights, restore, y).expand(restore.batch_shape)
        keep = keep & (w > 0)
    n = int(keep.sum())
    if n == 0:
        raise ValueError(
            "no point is left to pool (all masked, omitted or of zero weight); expected >= 1"
        )
    return (
        y[keep].cpu().numpy().astype(np.float64),
        x[keep].cpu().numpy().astype(np.float64),
        w[keep].cpu().numpy().astype(np.float64),
        keep.cpu().numpy(),
        restore,
        y_in,
    )


def _scatter(values: np.ndarray, keep: np.ndarray, restore: Restore, like: torch.Tensor) -> Any:
    full = np.full(keep.shape, np.nan)
    full[keep] = values
    return restore(torch.as_tensor(full, dtype=like.dtype, device=like.device))


def _decompose(
    y: np.ndarray, x: np.ndarray, w: np.ndarray, functional: str, level: float
) -> tuple[float, float, float, float, np.ndarray, np.ndarray, np.ndarray]:
    fitted, distinct, curve = isotonic_fit(y, x, functional, level, w)
    if functional == "mean":
        ref = float(np.sum(w * y) / np.sum(w))
    else:
        order = np.argsort(y, kind="stable")
        ref = _lower_quantile(y[order], w[order], level)
    s_x = _score(functional, level, x, y, w)
    s_rc = _score(functional, level, fitted, y, w)
    s_ref = _score(functional, level, np.full_like(y, ref), y, w)
    # unc - dsc + mcb reproduces s_x up to one rounding of each difference
    return s_x, s_x - s_rc, s_ref - s_rc, s_ref, fitted, distinct, curve


def corp_decomposition(
    obs: ArrayLike,
    forecast: ArrayLike,
    *,
    functional: str = "mean",
    level: float = 0.5,
    weights: ArrayLike | None = None,
    mask: Any = None,
    nan_policy: str = "raise",
) -> CORPDecomposition:
    r"""CORP decomposition of the mean score of point forecasts of a functional.

    * ``functional="mean"``: squared error ``(x - y)^2`` (the Brier score for probabilities
      of a binary event), recalibration by least-squares isotonic regression;
    * ``functional="quantile"``: pinball loss ``QS_tau(x, y) = (1{y < x} - tau)(x - y)`` at
      ``tau = level``, recalibration by isotonic quantile regression: PAV whose blocks take
      the lower ``tau``-quantile of their observations (Gneiting et al. 2023; the pinball
      minimiser is not unique, the lower quantile is taken throughout, climatology included).

    ``score = mcb - dsc + unc`` (see the module docstring); all points are pooled.

    Parameters
    ----------
    obs:
        Observations, any shape.
    forecast:
        Point forecasts, shape broadcastable with ``obs``.
    functional:
        ``"mean"`` or ``"quantile"``.
    level:
        Quantile level in (0, 1) for ``functional="quantile"``.
    weights:
        Non-negative point weights (e.g. cos-latitude), broadcastable to the points (xarray:
        by dim name): every mean score is ``sum w S / sum w``, the isotonic fits are weighted
        and the climatology is the weighted mean / lower quantile. Zero-weight points are
        left out.
    mask:
        Boolean, broadcastable to the points; only True points are pooled.
    nan_policy:
        ``"raise"`` (non-finite kept points are an error) or ``"omit"`` (they are left out).

    Returns
    -------
    :class:`CORPDecomposition`.

    References
    ----------
    Dimitriadis, Gneiting & Jordan (2021), PNAS 118(8), e2016191118; Gneiting, Wolffram,
    Resin, Kraus, Bracher, Dimitriadis, Hagenmeyer, Jordan, Lerch, Phipps & Schienle (2023),
    "Model diagnostics and forecast evaluation for quantiles", Annu. Rev. Stat. Appl. 10.

    Examples
    --------
    >>> import numpy as np
    >>> d = corp_decomposition(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.2, 0.4, 0.6, 0.8]))
    >>> round(d.score, 4), round(d.mcb - d.dsc + d.unc, 4)
    (0.2, 0.2)
    """
    functional, lv = _check_functional(functional, level)
    y, x, w, keep, restore, like = _pool(
        obs, forecast, ["obs", "forecast"], mask, nan_policy, weights
    )
    s, mcb, dsc, unc, fitted, distinct, curve = _decompose(y, x, w, functional, lv)
    return CORPDecomposition(
        score=s,
        mcb=mcb,
        dsc=dsc,
        unc=unc,
        recalibrated=_scatter(fitted, keep, restore, like),
        forecast_values=distinct,
        recalibrated_values=curve,
        functional=functional,
        level=lv if functional == "quantile" else None,
        n=int(y.size),
    )


def corp_reliability(
    obs_event: ArrayLike,
    prob: ArrayLike,
    *,
    n_resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
    weights: ArrayLike | None = None,
    mask: Any = None,
    nan_policy: str = "raise",
) -> CORPReliability:
    r"""CORP reliability diagram and Brier score decomposition of probability forecasts.

    The recalibrated probabilities are the isotonic (PAV) regression of the binary outcomes
    on the forecast probabilities; equal probabilities share one value. The Brier score
    decomposes as ``BS = MCB - DSC + UNC`` with ``MCB = BS(p) - BS(p_rc)``,
    ``DSC = BS(o_bar) - BS(p_rc)``, ``UNC = BS(o_bar) = o_bar (1 - o_bar)``.

    Consistency bands: ``n_resamples`` outcome vectors ``o* ~ Bernoulli(p)`` are drawn (the
    forecasts being calibrated), each is recalibrated by PAV, and the pointwise
    ``(1 -+ level) / 2`` quantiles of the recalibrated values at each distinct probability
    form the band. A reliability curve outside the band is evidence of miscalibration there.

    Parameters
    ----------
    obs_event:
        Outcomes in {0, 1} (bool, int or float), any shape.
    prob:
        Forecast probabilities in [0, 1], shape broadcastable with ``obs_event``.
    n_resamples:
        Number of resamples for the consistency band (0: no band).
    level:
        Coverage of the pointwise consistency band, in (0, 1).
    seed:
        Seed of the resampling (numpy ``default_rng``).
    weights, mask, nan_policy:
        As in :func:`corp_decomposition`.

    Returns
    -------
    :class:`CORPReliability`.

    References
    ----------
    Dimitriadis, Gneiting & Jordan (2021), "Stable reliability diagrams for probabilistic
    classifiers", PNAS 118(8), e2016191118.
    """
    n_res = as_int(n_resamples, "n_resamples")
    if n_res < 0:
        raise ValueError(f"n_resamples={n_resamples!r}; expected an int >= 0")
    band_level = as_float(level, "level")
    if not 0 < band_level < 1:
        raise ValueError(f"level={level!r}; expected a band coverage strictly in (0, 1)")
    seed_i = as_int(seed, "seed")
    y, x, w, keep, restore, like = _pool(
        obs_event, prob, ["obs_event", "prob"], mask, nan_policy, weights
    )
    if not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)]
        raise ValueError(
            f"obs_event has {bad.size} entries that are not 0 or 1 (e.g. {bad[0]!r}); "
            "expected binary outcomes"
        )
    if np.any((x < 0) | (x > 1)):
        bad = x[(x < 0) | (x > 1)]
        raise ValueError(
            f"prob has {bad.size} entries outside [0, 1] (e.g. {bad[0]!r}); expected probabilities"
        )
    s, mcb, dsc, unc, fitted, distinct, curve = _decompose(y, x, w, "mean", 0.5)
    lower = upper = None
    if n_res:
        order, _, starts = _groups(x)
        xs, ws = x[order], w[order]
        wsum = np.add.reduceat(ws, starts)
        rng = np.random.default_rng(seed_i)
        draws = np.empty((n_res, distinct.size))
        for r in range(n_res):
            o_star = (rng.random(xs.size) < xs).astype(np.float64)
            draws[r] = _pav_mean(np.add.reduceat(ws * o_star, starts) / wsum, wsum)
        lower, upper = np.quantile(draws, [(1 - band_level) / 2, (1 + band_level) / 2], axis=0)
    return CORPReliability(
        score=s,
        mcb=mcb,
        dsc=dsc,
        unc=unc,
        recalibrated=_scatter(fitted, keep, restore, like),
        forecast_values=distinct,
        recalibrated_values=curve,
        functional="mean",
        level=None,
        n=int(y.size),
        band_lower=lower,
        band_upper=upper,
        band_level=band_level,
        n_resamples=n_res,
    )


def corp_crps_decomposition(
    obs: ArrayLike,
    quantiles: ArrayLike,
    levels: ArrayLike,
    *,
    quantile_dim: int | str = -1,
    weights: ArrayLike | None = None,
    mask: Any = None,
    nan_policy: str = "raise",
) -> CORPCRPSDecomposition:
    r"""CORP decomposition of the CRPS approximated from K forecast quantiles.

    What is computed, precisely: for each level ``tau_k`` the CORP decomposition of the mean
    pinball loss of the ``tau_k``-quantile forecasts (:func:`corp_decomposition` with
    ``functional="quantile"``: each level recalibrated by its own isotonic quantile
    regression), and then ``2/K sum_k`` of each term. The score is then the mean of
    :func:`uqdyn.scoring.crps_quantile` (a midpoint rule for ``CRPS = 2 int_0^1 QS_tau dtau``;
    use evenly spaced levels ``(k - 1/2)/K``) and ``score = mcb - dsc + unc`` exactly. The
    recalibrated quantiles of different levels may cross; this is not the isotonic
    distributional regression decomposition of the CRPS itself.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    quantiles:
        Forecast quantiles, shape ``(*batch, K)`` with the levels on ``quantile_dim`` (for
        xarray a dim name; the default ``-1`` means ``"quantile"``).
    levels:
        The K levels in (0, 1), shape ``(K,)``.
    quantile_dim:
        Quantile axis of ``quantiles``.
    weights, mask, nan_policy:
        As in :func:`corp_decomposition` (a point is left out at every level at once).

    Returns
    -------
    :class:`CORPCRPSDecomposition`.
    """
    core = _resolve_core_dim(quantiles, quantile_dim, -1, "quantile_dim", "quantile")
    (y, q), restore = prepare(obs, quantiles, names=["obs", "quantiles"], core=[None, core])
    tau = np.asarray(
        levels.detach().cpu().numpy() if isinstance(levels, torch.Tensor) else levels,
        dtype=np.float64,
    ).reshape(-1)
    if tau.size != q.shape[-1]:
        raise ValueError(
            f"levels has {tau.size} entries and quantiles has {q.shape[-1]} along "
            "quantile_dim; expected one level per quantile"
        )
    if np.any(~((tau > 0) & (tau < 1))):
        raise ValueError(f"levels={tau.tolist()!r}; expected levels strictly in (0, 1)")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy={nan_policy!r}; expected 'raise' or 'omit'")
    keep = torch.ones(restore.batch_shape, dtype=torch.bool)
    mask_t = prepare_mask(mask, restore, y.device)
    if mask_t is not None:
        keep = keep & mask_t.cpu()
    finite = (torch.isfinite(y) & torch.isfinite(q).all(-1)).cpu()
    if nan_policy == "raise" and bool((keep & ~finite).any()):
        raise ValueError(
            f"obs or quantiles has non-finite values at {int((keep & ~finite).sum())} kept "
            "points and nan_policy='raise'; expected finite values (or nan_policy='omit')"
        )
    keep = keep & finite
    w = None if weights is None else prepare_weights(weights, restore, y).cpu()
    parts = tuple(
        corp_decomposition(
            y.cpu(),
            q[..., k].cpu(),
            functional="quantile",
            level=float(tau[k]),
            weights=w,
            mask=keep,
        )
        for k in range(tau.size)
    )
    factor = 2.0 / tau.size
    return CORPCRPSDecomposition(
        score=factor * sum(p.score for p in parts),
        mcb=factor * sum(p.mcb for p in parts),
        dsc=factor * sum(p.dsc for p in parts),
        unc=factor * sum(p.unc for p in parts),
        levels=tau,
        per_level=parts,
    )
