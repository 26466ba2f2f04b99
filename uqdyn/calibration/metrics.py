"""Calibration diagnostics: PIT, rank histogram, coverage, reliability, spread-skill, sharpness.

Every function takes the observations first and the forecast second. The forecast is a
:class:`uqdyn.predictive.Predictive` or, with ``member_dim=`` given, an ensemble array (torch,
numpy or xarray). Results come back in the kind of array the observations were given in.
Aggregated diagnostics pool every point; ``mask=`` (boolean, broadcastable to the points)
keeps only the ``True`` points, and non-finite values at kept points raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from uqdyn._arrays import Restore
from uqdyn._checks import as_float
from uqdyn.predictive import Ensemble, Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _check_levels,
    _forecast_only,
    _forecast_with_obs,
    _is_equal_weight_ensemble,
    _level_output,
    _n_points_check,
    _pit_values,
    _select,
    _uniform,
)

__all__ = [
    "pit",
    "rank_histogram",
    "coverage",
    "ReliabilityCurve",
    "reliability_curve",
    "miscalibration_area",
    "spread_skill_ratio",
    "sharpness",
]

_DEFAULT_RELIABILITY_LEVELS = 101


def pit(
    obs: Any,
    forecast: Any,
    *,
    member_dim: int | str | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    r"""Probability integral transform (PIT) of the observations under the forecast.

    For a continuous forecast the PIT is :math:`F(y)`. Where the forecast CDF jumps the PIT
    is randomized (Czado et al. 2009), :math:`U(F(y^-), F(y))`, so that it is exactly
    uniform for a calibrated forecast:

    * an equally weighted ensemble of ``M`` members gives :math:`(r + V) / (M + 1)` with
      ``r`` the rank of ``y`` among the members (ties broken at random) and
      :math:`V \sim U(0, 1)`: the randomized PIT under the empirical CDF of the members
      pooled with ``y``, whose histogram with ``M + 1`` bins is the rank histogram (Anderson
      1996; Hamill 2001). For exchangeable members and observation it is exactly U(0, 1);
    * a weighted ensemble gives :math:`U(F(y^-), F(y))` with its weighted empirical CDF.

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to the forecast's ``batch_shape``.
    forecast:
        A :class:`~uqdyn.predictive.Predictive`, or an ensemble array of shape
        ``(*batch_shape)`` with an extra member axis ``member_dim``.
    member_dim:
        Member axis (int, or dim name for xarray) when ``forecast`` is an array.
    generator:
        Random generator for the randomization (on the forecast's device).

    Returns
    -------
    PIT values in [0, 1], shape ``broadcast(obs.shape, batch_shape)``, in the kind of
    ``obs`` (torch, numpy or xarray). NaN where ``obs`` or a member is NaN.

    References
    ----------
    Czado, Gneiting & Held (2009), Predictive model assessment for count data, Biometrics.
    Hamill (2001), Interpretation of rank histograms for verifying ensemble forecasts, MWR.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import pit
    >>> pit(torch.zeros(3), Normal(torch.zeros(3), torch.ones(3)))
    tensor([0.5000, 0.5000, 0.5000])
    """
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    values = _pit_values(predictive, obs_t, generator)
    if restore.kind == "xarray" and tuple(values.shape) != tuple(restore.batch_shape):
        raise ValueError(
            f"obs of shape {tuple(restore.batch_shape)} broadcasts to {tuple(values.shape)} "
            "against the forecast; expected obs with the forecast's full batch shape for "
            "xarray output"
        )
    return restore(values)


def rank_histogram(
    obs: Any,
    forecasts: Any,
    *,
    member_dim: int | str | None = -1,
    generator: torch.Generator | None = None,
    mask: Any = None,
) -> Any:
    r"""Rank histogram (Talagrand diagram) of the observations within an ensemble.

    The rank of ``y`` among ``M`` members is the number of members below it, plus a uniform
    draw from ``{0, ..., t}`` where ``t`` members equal ``y`` (random tie breaking, Hamill
    2001). For exchangeable members and observation every rank in ``{0, ..., M}`` has
    probability :math:`1 / (M + 1)`, so the histogram of a calibrated ensemble is flat.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch_shape)`` (broadcastable).
    forecasts:
        Ensemble array with a member axis ``member_dim`` (default last), or an equally
        weighted :class:`~uqdyn.predictive.Ensemble` (then ``member_dim`` is ignored).
    member_dim:
        Member axis of an array (int, or dim name for xarray).
    generator:
        Random generator for tie breaking.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are counted.

    Returns
    -------
    Counts of each rank, integer, shape ``(M + 1,)``, in the kind of ``obs`` (xarray: dim
    ``"rank"``).

    References
    ----------
    Anderson (1996), A method for producing and evaluating probabilistic forecasts from
    ensemble model integrations, J. Climate. Hamill (2001), MWR 129.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.calibration import rank_histogram
    >>> g = torch.Generator().manual_seed(0)
    >>> counts = rank_histogram(torch.randn(1000, generator=g), torch.randn(1000, 9, generator=g))
    >>> counts.shape, int(counts.sum())
    (torch.Size([10]), 1000)
    """
    if isinstance(forecasts, Predictive):
        if not _is_equal_weight_ensemble(forecasts):
            raise TypeError(
                f"forecasts is a {type(forecasts).__name__}"
                + (" with member weights" if isinstance(forecasts, Ensemble) else "")
                + "; expected an equally weighted Ensemble or an ensemble array"
            )
        member_dim = None
    elif member_dim is None:
        raise ValueError("member_dim=None; expected the member axis of the forecasts array")
    obs_t, predictive, restore = _forecast_with_obs(obs, forecasts, member_dim)
    ensemble = cast(Ensemble, predictive)  # an Ensemble by the checks above
    members = ensemble.members
    keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    _check_finite_at(members, keep.unsqueeze(0), "forecasts")
    n_less = (members < obs_t).sum(0)
    n_equal = (members == obs_t).sum(0)
    u = _uniform(obs_t.shape, members, generator)
    rank = n_less + torch.floor(u * (n_equal + 1).to(u.dtype)).long().clamp_max(n_equal)
    counts = torch.bincount(_select(rank, keep), minlength=ensemble.n_members + 1)
    levels = torch.arange(ensemble.n_members + 1)
    return _level_output(counts, Restore(restore.kind, torch.Size()), levels, "rank")


def coverage(
    obs: Any,
    forecast: Any,
    levels: float | Sequence[float] | Tensor,
    *,
    member_dim: int | str | None = None,
    mask: Any = None,
) -> Any:
    r"""Empirical coverage of the forecast's central prediction intervals.

    For each nominal level :math:`\alpha` the fraction of points with
    :math:`Q((1 - \alpha) / 2) \le y \le Q((1 + \alpha) / 2)`, where ``Q`` is the forecast's
    quantile function (``forecast.interval``). A calibrated continuous forecast covers each
    level up to sampling error :math:`\sqrt{\alpha (1 - \alpha) / N}`. An ensemble's
    intervals are those of its empirical quantiles, which for ``M`` members cover less than
    nominal (e.g. the range of the members covers :math:`(M - 1) / (M + 1)`).

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to ``batch_shape``.
    forecast:
        A Predictive, or an ensemble array with member axis ``member_dim``.
    levels:
        Nominal coverage levels in (0, 1): a number or ``L`` levels.
    member_dim:
        Member axis when ``forecast`` is an array.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are counted.

    Returns
    -------
    Observed coverage: shape ``()`` for a single level, ``(L,)`` for a sequence; in the kind
    of ``obs`` (xarray: dim ``"level"`` with the nominal levels as coordinate).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import coverage
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.randn(20000, generator=g)
    >>> cov = coverage(y, Normal(torch.zeros(20000), torch.ones(20000)), [0.5, 0.9])
    >>> bool(((cov - torch.tensor([0.5, 0.9])).abs() < 0.02).all())
    True
    """
    nominal, scalar = _check_levels(levels, "levels", closed=False)
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    nom = nominal.to(device=obs_t.device, dtype=obs_t.dtype)
    bounds = predictive.quantile(torch.cat([(1.0 - nom) / 2.0, (1.0 + nom) / 2.0]))
    lower, upper = bounds[: len(nom)], bounds[len(nom) :]
    _check_finite_at(bounds, keep.unsqueeze(0), "forecast quantiles")
    inside = ((lower <= obs_t) & (obs_t <= upper) & keep).reshape(len(nom), -1).sum(1)
    result = inside.to(obs_t.dtype) / keep.sum().to(obs_t.dtype)
    if scalar:
        return restore(result[0])
    return _level_output(result, restore, nominal, "level")


class ReliabilityCurve(NamedTuple):
    """Nominal quantile levels and the observed frequencies of the PIT below them.

    Attributes
    ----------
    nominal:
        Levels :math:`p_j`, shape ``(L,)``.
    observed:
        :math:`\\hat P_j = \\frac1N \\sum_i 1\\{\\mathrm{PIT}_i \\le p_j\\}`, shape ``(L,)``.
    """

    nominal: Any
    observed: Any


def reliability_curve(
    obs: Any,
    forecast: Any,
    levels: Sequence[float] | Tensor | None = None,
    *,
    member_dim: int | str | None = None,
    generator: torch.Generator | None = None,
    mask: Any = None,
) -> ReliabilityCurve:
    r"""Quantile reliability curve (Kuleshov et al. 2018).

    For each level :math:`p_j` the observed frequency
    :math:`\hat P_j = \frac1N \sum_i 1\{\mathrm{PIT}_i \le p_j\}`, with the (randomized)
    PIT of :func:`pit`. For a continuous, strictly increasing forecast CDF this is the
    frequency of :math:`y_i \le F_i^{-1}(p_j)`; for ensembles the randomized PIT makes the
    curve of a calibrated ensemble the diagonal, whatever the ensemble size. A calibrated
    forecast has :math:`\hat P_j \approx p_j`; a curve below the diagonal at low levels and
    above at high levels means an over-dispersed forecast, the reverse an over-confident one.

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to ``batch_shape``.
    forecast:
        A Predictive, or an ensemble array with member axis ``member_dim``.
    levels:
        Increasing levels in [0, 1], shape ``(L,)``; default 101 levels ``0, 0.01, ..., 1``.
    member_dim:
        Member axis when ``forecast`` is an array.
    generator:
        Random generator for the randomized PIT of ensembles.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are counted.

    Returns
    -------
    :class:`ReliabilityCurve` ``(nominal, observed)``, each of shape ``(L,)`` in the kind of
    ``obs`` (xarray: dim ``"quantile"`` with the levels as coordinate).

    References
    ----------
    Kuleshov, Fenner & Ermon (2018), Accurate uncertainties for deep learning using
    calibrated regression, ICML.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import reliability_curve
    >>> y = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    >>> curve = reliability_curve(y, Normal(torch.zeros(5000), torch.ones(5000)), [0.1, 0.5])
    >>> bool(((curve.observed - curve.nominal).abs() < 0.03).all())
    True
    """
    nominal, observed, restore = _reliability(obs, forecast, levels, member_dim, generator, mask)
    return ReliabilityCurve(
        _level_output(nominal.to(observed.dtype), restore, nominal, "quantile"),
        _level_output(observed, restore, nominal, "quantile"),
    )


def _reliability(
    obs: Any,
    forecast: Any,
    levels: Sequence[float] | Tensor | None,
    member_dim: int | str | None,
    generator: torch.Generator | None,
    mask: Any,
) -> tuple[Tensor, Tensor, Restore]:
    """Nominal levels (float64 CPU), observed frequencies (on device) and the restore."""
    if levels is None:
        nominal = torch.linspace(0.0, 1.0, _DEFAULT_RELIABILITY_LEVELS, dtype=torch.float64)
    else:
        nominal, scalar = _check_levels(levels, "levels", closed=True)
        if scalar:
            raise ValueError(f"levels={levels!r}; expected a sequence of levels, not a number")
        if len(nominal) > 1 and not bool((nominal[1:] > nominal[:-1]).all()):
            raise ValueError(f"levels={levels!r}; expected strictly increasing levels")
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    values = _pit_values(predictive, obs_t, generator)
    _check_finite_at(values, keep, "PIT of obs under forecast")
    pits, _ = torch.sort(_select(values, keep))
    nom = nominal.to(device=pits.device, dtype=pits.dtype)
    count = torch.searchsorted(pits, nom, right=True)
    observed = count.to(pits.dtype) / pits.numel()
    return nominal, observed, restore


def miscalibration_area(
    obs: Any,
    forecast: Any,
    levels: Sequence[float] | Tensor | None = None,
    *,
    member_dim: int | str | None = None,
    generator: torch.Generator | None = None,
    mask: Any = None,
) -> Any:
    r"""Area between the reliability curve and the diagonal.

    :math:`A = \int |\hat P(p) - p| \, dp`, by the trapezoid rule over the levels of
    :func:`reliability_curve` (over ``[levels[0], levels[-1]]``; the default 101 levels
    cover [0, 1]). Zero for perfect calibration; at most 1/2.

    Parameters
    ----------
    obs, forecast, levels, member_dim, generator, mask:
        As for :func:`reliability_curve` (at least two levels).

    Returns
    -------
    The area, shape ``()``, in the kind of ``obs``.

    References
    ----------
    Kuleshov, Fenner & Ermon (2018), ICML; Tran et al. (2020), Methods for comparing
    uncertainty quantifications for material property predictions, MLST.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import miscalibration_area
    >>> y = 2.0 * torch.randn(5000, generator=torch.Generator().manual_seed(0))
    >>> area = miscalibration_area(y, Normal(torch.zeros(5000), torch.ones(5000)))
    >>> 0.09 < float(area) < 0.115  # over-confident by 2: exact area 0.1024
    True
    """
    nominal, observed, restore = _reliability(obs, forecast, levels, member_dim, generator, mask)
    if len(nominal) < 2:
        raise ValueError(f"levels has {len(nominal)} entry; expected at least two levels")
    nom = nominal.to(device=observed.device, dtype=observed.dtype)
    area = torch.trapezoid((observed - nom).abs(), nom)
    return restore(area)


def spread_skill_ratio(
    obs: Any,
    forecast: Any,
    *,
    member_dim: int | str | None = None,
    mask: Any = None,
) -> Any:
    r"""Spread-skill ratio: root mean predictive variance over the RMSE of the mean.

    .. math:: \mathrm{SSR} = c \, \sqrt{\overline{\sigma^2}} \,/\,
        \sqrt{\overline{(\mu - y)^2}}

    with averages over all (kept) points, :math:`\mu` and :math:`\sigma^2` the predictive
    mean and variance. For an ensemble, :math:`\sigma^2` is the unbiased member variance
    (``ddof = 1``; weighted: :math:`\sum_m w_m (x_m - \mu)^2 / (1 - \sum_m w_m^2)`) and the
    finite-ensemble factor is :math:`c = \sqrt{1 + \sum_m w_m^2}`, i.e.
    :math:`\sqrt{(M + 1) / M}` for ``M`` equally weighted members: the mean of ``M``
    members exchangeable with ``y`` has expected squared error
    :math:`(M + 1) / M` times the expected member variance (Fortin et al. 2014). For other
    forecasts :math:`c = 1`. A calibrated forecast has SSR close to 1; SSR < 1 means
    under-dispersion (over-confidence).

    Parameters
    ----------
    obs:
        Observations, shape broadcastable to ``batch_shape``.
    forecast:
        A Predictive, or an ensemble array with member axis ``member_dim``.
    member_dim:
        Member axis when ``forecast`` is an array.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are counted.

    Returns
    -------
    The ratio, shape ``()``, in the kind of ``obs``.

    References
    ----------
    Fortin, Abaza, Anctil & Turcotte (2014), Why should ensemble spread match the RMSE of
    the ensemble mean?, J. Hydrometeorology 15.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.calibration import spread_skill_ratio
    >>> g = torch.Generator().manual_seed(0)
    >>> y, ens = torch.randn(4000, generator=g), torch.randn(4000, 5, generator=g)
    >>> abs(float(spread_skill_ratio(y, ens, member_dim=-1)) - 1.0) < 0.05
    True
    """
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    mean = predictive.mean.expand(obs_t.shape)
    variance = predictive.variance.expand(obs_t.shape)
    _check_finite_at(mean, keep, "forecast mean")
    _check_finite_at(variance, keep, "forecast variance")
    factor = 1.0
    if isinstance(predictive, Ensemble):
        if predictive.n_members < 2:
            raise ValueError("forecast has 1 member; expected at least 2 for an ensemble spread")
        weight_sq = (
            1.0 / predictive.n_members
            if predictive.weights is None
            else float(predictive.weights.square().sum())
        )
        factor = math.sqrt(1.0 + weight_sq)
    mse = _select((mean - obs_t).square(), keep).mean()
    spread = _select(variance, keep).mean().sqrt()
    if not bool(mse > 0):
        raise ValueError("the forecast mean equals obs at every point; the ratio is undefined")
    return restore(factor * spread / mse.sqrt())


def sharpness(
    forecast: Any,
    *,
    level: float | None = None,
    member_dim: int | str | None = None,
    mask: Any = None,
) -> Any:
    r"""Sharpness: the mean predictive standard deviation, or the mean interval width.

    With ``level=None``: :math:`\frac1N \sum_i \sigma_i`, the mean of the predictive
    standard deviations (for ensembles the unbiased member standard deviation). With a
    level :math:`\alpha`: the mean width :math:`\frac1N \sum_i Q_i((1+\alpha)/2) -
    Q_i((1-\alpha)/2)` of the central prediction intervals. Smaller is sharper; sharpness is
    only meaningful together with calibration (Gneiting et al. 2007).

    Parameters
    ----------
    forecast:
        A Predictive, or an ensemble array with member axis ``member_dim``.
    level:
        ``None`` (mean standard deviation) or a nominal interval level in (0, 1).
    member_dim:
        Member axis when ``forecast`` is an array.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are averaged.

    Returns
    -------
    Shape ``()``; torch for a Predictive, else the kind of ``forecast``.

    References
    ----------
    Gneiting, Balabdaoui & Raftery (2007), Probabilistic forecasts, calibration and
    sharpness, JRSS B.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import sharpness
    >>> float(sharpness(Normal(torch.zeros(4), 2.0 * torch.ones(4))))
    2.0
    """
    predictive, restore = _forecast_only(forecast, member_dim)
    shape = predictive.batch_shape
    keep = _as_mask(mask, shape, predictive.device, restore)
    _n_points_check(keep, ("forecast",))
    if level is None:
        values = predictive.stddev
        name = "forecast standard deviation"
    else:
        level = as_float(level, "level")
        if not 0 < level < 1:
            raise ValueError(f"level={level!r}; expected None or a number strictly in (0, 1)")
        lower, upper = predictive.interval(level)
        values = upper - lower
        name = "forecast interval width"
    values = values.expand(shape)
    _check_finite_at(values, keep, name)
    return restore(_select(values, keep).mean())
