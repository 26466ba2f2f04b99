"""Post-hoc recalibration fitted on a validation set: isotonic CDF map and variance scaling."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int, describe_type
from uqdyn.predictive import Ensemble, MultivariateNormal, Normal, Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _forecast_only,
    _forecast_with_obs,
    _n_points_check,
    _pit_values,
    _select,
    keeps_labels,
)
from ._plan import _Plan, _scale_spread
from .recalibrated import Recalibrated

__all__ = ["IsotonicRecalibrator", "VarianceScaling", "NoRecalibration"]

# Weight of the identity mixed into the fitted map, so that it is strictly increasing.
_IDENTITY_MIX = 1e-6


def _pool_adjacent_violators(y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit to ``y (n,)`` (pool adjacent violators)."""
    values: list[float] = []
    counts: list[int] = []
    for v in y:
        values.append(float(v))
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            total = counts[-2] + counts[-1]
            merged = (values[-2] * counts[-2] + values[-1] * counts[-1]) / total
            values[-2:] = [merged]
            counts[-2:] = [total]
    return np.repeat(np.asarray(values), counts)


def _isotonic(y: np.ndarray) -> np.ndarray:
    """Non-decreasing least-squares fit: scipy's solver where available (scipy >= 1.12)."""
    try:
        from scipy.optimize import isotonic_regression
    except ImportError:  # pragma: no cover - older scipy
        return _pool_adjacent_violators(y)
    return np.asarray(isotonic_regression(y).x)


def _isotonic_knots(
    p: np.ndarray, weights: np.ndarray | None, max_knots: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Knots ``(x, y)`` of the isotonic calibration map of PIT values ``p (n,)``.

    Without weights, ``y`` at the sorted PIT values is the isotonic fit of
    :math:`\#\{j : p_j \le p_{(i)}\} / (n + 1)`. With non-negative ``weights (n,)`` it is
    :math:`\sum_{j : p_j \le p_{(i)}} w_j / W \cdot n_e / (n_e + 1)` with
    :math:`W = \sum_j w_j` and the effective sample size :math:`n_e = W^2 / \sum_j w_j^2`
    (the unweighted formula for equal weights). At most ``max_knots`` knots (equally spaced
    in rank), end points ``(0, 0)`` and ``(1, 1)``, and a weight :math:`10^{-6}` of the
    identity mixed in so that the map is strictly increasing.
    """
    if weights is None:
        p = np.sort(p)
        n = p.size
        freq = _isotonic(np.searchsorted(p, p, side="right") / (n + 1.0))
    else:
        order = np.argsort(p, kind="stable")
        p, w = p[order], weights[order]
        cum = np.cumsum(w)
        total = cum[-1]
        n_eff = total**2 / float(np.sum(w * w))
        last = np.searchsorted(p, p, side="right") - 1  # the last of each run of ties
        freq = _isotonic(cum[last] / total * (n_eff / (n_eff + 1.0)))
        n = p.size
    if n > max_knots - 2:
        idx = np.unique(np.round(np.linspace(0, n - 1, max_knots - 2)).astype(np.int64))
        p, freq = p[idx], freq[idx]
    inside = (p > 0.0) & (p < 1.0)
    p, freq = p[inside], freq[inside]
    x, inverse = np.unique(p, return_inverse=True)
    y = np.zeros_like(x)
    np.maximum.at(y, inverse, freq)
    x = np.concatenate([[0.0], x, [1.0]])
    y = np.clip(np.concatenate([[0.0], y, [1.0]]), 0.0, 1.0)
    y = (1.0 - _IDENTITY_MIX) * y + _IDENTITY_MIX * x
    return x, y


class IsotonicRecalibrator:
    r"""Isotonic recalibration of the predictive CDF (Kuleshov et al. 2018).

    ``fit`` computes the PIT values :math:`p_i = F_i(y_i)` of a validation set (randomized
    for ensembles, see :func:`~uqdyn.calibration.pit`), sorts them and fits, by isotonic
    regression, a non-decreasing map ``R`` to the empirical frequencies
    :math:`\hat P(p_{(i)}) = \#\{j : p_j \le p_{(i)}\} / (N + 1)`. ``R`` is then the
    piecewise-linear interpolation of at most ``max_knots`` of these points (equally spaced
    in rank) with :math:`R(0) = 0` and :math:`R(1) = 1`; a weight of :math:`10^{-6}` of the
    identity is mixed in so that ``R`` is strictly increasing and invertible.
    ``transform`` returns the :class:`~uqdyn.calibration.Recalibrated` forecast with CDF
    :math:`R(F(y))`: its PIT values on new data from the same distribution are uniform.

    Parameters
    ----------
    max_knots:
        Largest number of knots of ``R`` (including the end points).
    n_nodes:
        Quadrature nodes of the returned :class:`Recalibrated` forecasts.

    Attributes
    ----------
    knots_x, knots_y:
        Knots of ``R`` after ``fit``, float64 tensors of shape ``(K,)``.

    References
    ----------
    Kuleshov, Fenner & Ermon (2018), Accurate uncertainties for deep learning using
    calibrated regression, ICML.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import IsotonicRecalibrator, coverage
    >>> g = torch.Generator().manual_seed(0)
    >>> y = 2.0 * torch.randn(4000, generator=g)  # truth has twice the predicted spread
    >>> recal = IsotonicRecalibrator().fit(y[:2000], Normal(torch.zeros(2000), torch.ones(2000)))
    >>> cov = coverage(y[2000:], recal.transform(Normal(torch.zeros(2000), torch.ones(2000))), 0.9)
    >>> abs(float(cov) - 0.9) < 0.03
    True
    """

    def __init__(self, *, max_knots: int = 1000, n_nodes: int = 201) -> None:
        max_knots = as_int(max_knots, "max_knots", minimum=3)
        n_nodes = as_int(n_nodes, "n_nodes", minimum=3)
        self.max_knots = max_knots
        self.n_nodes = n_nodes
        self.knots_x: Tensor | None = None
        self.knots_y: Tensor | None = None

    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        member_dim: int | str | None = None,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> IsotonicRecalibrator:
        """Fit the calibration map on a validation set.

        Parameters
        ----------
        obs:
            Validation observations, shape broadcastable to ``batch_shape``.
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``; only ``True`` points are used.
        generator:
            Random generator for the randomized PIT of ensembles.

        Returns
        -------
        ``self``, with ``knots_x`` and ``knots_y`` set.
        """
        obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
        keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
        _n_points_check(keep, ("obs",))
        _check_finite_at(obs_t, keep, "obs")
        values = _pit_values(predictive, obs_t, generator)
        _check_finite_at(values, keep, "PIT of obs under forecast")
        p = _select(values, keep).detach().cpu().double().numpy()
        x, y = _isotonic_knots(p, None, self.max_knots)
        self.knots_x = torch.from_numpy(x)
        self.knots_y = torch.from_numpy(y)
        return self

    @keeps_labels
    def transform(self, forecast: Any, *, member_dim: int | str | None = None) -> Recalibrated:
        """The recalibrated forecast :math:`R(F(y))`.

        Parameters
        ----------
        forecast:
            A Predictive of any ``batch_shape``, or an ensemble array with member axis
            ``member_dim``.

        Returns
        -------
        :class:`~uqdyn.calibration.Recalibrated` with the same ``batch_shape``.
        """
        if self.knots_x is None or self.knots_y is None:
            raise ValueError("this IsotonicRecalibrator is not fitted; call fit(obs, forecast)")
        predictive, _ = _forecast_only(forecast, member_dim)
        return Recalibrated(predictive, self.knots_x, self.knots_y, n_nodes=self.n_nodes)

    def _plan(self, forecast: Predictive, **_kwargs: Any) -> _Plan:
        if self.knots_x is None or self.knots_y is None:
            raise ValueError("this IsotonicRecalibrator is not fitted; call fit(obs, forecast)")
        index = torch.zeros(forecast.batch_shape, dtype=torch.int64, device=forecast.device)
        return _Plan(
            knots_x=self.knots_x.unsqueeze(0),
            knots_y=self.knots_y.unsqueeze(0),
            map_index=index,
            n_nodes=self.n_nodes,
        )

    def __repr__(self) -> str:
        knots = "unfitted" if self.knots_x is None else f"{len(self.knots_x)} knots"
        return f"IsotonicRecalibrator({knots})"


_Objective = Literal["auto", "nll", "crps"]


def _log_search(loss: Any, bounds: tuple[float, float], who: str, *, stacklevel: int = 3) -> float:
    """Bounded 1-D minimisation of ``loss(log s)`` over ``log bounds``; returns ``s``."""
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    if min(result.x - lo, hi - result.x) < 1e-4:
        warnings.warn(
            f"{who}: the optimum s = {math.exp(result.x):.3g} lies at the edge of "
            f"bounds={bounds}; widen the bounds",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return math.exp(float(result.x))


class VarianceScaling:
    r"""Rescale the predictive spread by one factor ``s`` fitted on a validation set.

    The recalibrated forecast is the law of :math:`\mu + s (Y - \mu)` with :math:`\mu` the
    predictive mean: the same family with variance multiplied by :math:`s^2` and mean
    unchanged. ``Normal(loc, scale)`` becomes ``Normal(loc, s * scale)``;
    ``MultivariateNormal`` has covariance :math:`s^2 \Sigma`; a ``GaussianMixture`` has
    component means :math:`\mu + s (\mu_k - \mu)` and scales :math:`s \sigma_k`; an
    ``Ensemble`` has members :math:`\mu + s (x_m - \mu)` (Kuleshov et al. 2018, Levi et
    al. 2022 for the Gaussian case).

    ``s`` minimises, over the validation points,

    * ``"nll"``: the negative log likelihood. Closed form for Gaussians:
      :math:`s^2 = \overline{z^2}` with :math:`z = (y - \mu) / \sigma` for ``Normal`` and
      :math:`s^2 = \overline{(y - \mu)^\top \Sigma^{-1} (y - \mu)} / n` for
      ``MultivariateNormal``; other families with an elementwise density (mixtures) by a
      bounded 1-D search over :math:`\log s` of
      :math:`-\sum_i \log f_i(\mu_i + (y_i - \mu_i)/s) + N \log s`;
    * ``"crps"``: the mean CRPS, by a bounded 1-D search, using
      :math:`\mathrm{CRPS}(F_s, y) = s\, \mathrm{CRPS}(F, \mu + (y - \mu) / s)`, valid for
      every family and every ensemble CRPS estimator;
    * ``"auto"``: ``"crps"`` for ensembles (no density), ``"nll"`` otherwise.

    Parameters
    ----------
    objective:
        ``"auto"``, ``"nll"`` or ``"crps"``.
    bounds:
        Search interval for ``s`` in the 1-D searches.

    Attributes
    ----------
    scale:
        The fitted factor ``s`` (a float; ``None`` before ``fit``).

    References
    ----------
    Levi, Gispan, Giladi & Fetaya (2022), Evaluating and calibrating uncertainty
    prediction in regression tasks, Sensors. Kuleshov et al. (2018), ICML.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import VarianceScaling
    >>> y = 2.0 * torch.randn(10000, generator=torch.Generator().manual_seed(0))
    >>> vs = VarianceScaling().fit(y, Normal(torch.zeros(10000), torch.ones(10000)))
    >>> abs(vs.scale - 2.0) < 0.05
    True
    """

    def __init__(
        self, objective: _Objective = "auto", *, bounds: tuple[float, float] = (1e-3, 1e3)
    ) -> None:
        if objective not in ("auto", "nll", "crps"):
            raise ValueError(f"objective={objective!r}; expected 'auto', 'nll' or 'crps'")
        if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__iter__"):
            raise TypeError(
                f"bounds={bounds!r} is a {describe_type(bounds)}; expected a pair (low, high)"
            )
        pair = list(bounds)
        if len(pair) != 2:
            raise ValueError(f"bounds={bounds!r}; expected a pair (low, high)")
        lo, hi = (as_float(b, f"bounds[{i}]", finite=False) for i, b in enumerate(pair))
        if not 0.0 < lo < 1.0 < hi or not math.isfinite(hi):
            raise ValueError(f"bounds={bounds!r}; expected (low, high) with 0 < low < 1 < high")
        self.objective = objective
        self.bounds = (lo, hi)
        self.scale: float | None = None

    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        member_dim: int | str | None = None,
        mask: Any = None,
    ) -> VarianceScaling:
        """Fit ``s`` on a validation set.

        Parameters
        ----------
        obs:
            Validation observations, shape broadcastable to ``batch_shape``.
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``; only ``True`` points are used (for a
            ``MultivariateNormal`` with ``"nll"``, whole vectors of the last axis).

        Returns
        -------
        ``self``, with ``scale`` set.
        """
        obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
        keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
        _n_points_check(keep, ("obs",))
        _check_finite_at(obs_t, keep, "obs")
        objective = self.objective
        if objective == "auto":
            objective = "crps" if isinstance(predictive, Ensemble) else "nll"
        with torch.no_grad():
            if objective == "crps":
                self.scale = self._fit_crps(obs_t, predictive, keep)
            elif isinstance(predictive, Ensemble):
                raise ValueError(
                    "objective='nll' needs a predictive density but the forecast is an "
                    "Ensemble; expected objective='crps' or 'auto'"
                )
            elif isinstance(predictive, Normal):
                z2 = ((obs_t - predictive.loc) / predictive.scale).square()
                self.scale = math.sqrt(float(_select(z2, keep).double().mean()))
            elif isinstance(predictive, MultivariateNormal):
                self.scale = self._fit_mvn(obs_t, predictive, keep)
            else:
                self.scale = self._fit_nll(obs_t, predictive, keep)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"the fitted scale is {self.scale}; expected a positive number")
        return self

    # ------------------------------------------------------------------ fitting helpers
    def _search(self, loss: Any) -> float:
        return _log_search(loss, self.bounds, "VarianceScaling", stacklevel=4)

    def _fit_crps(self, obs: Tensor, predictive: Predictive, keep: Tensor) -> float:
        mean = predictive.mean
        residual = obs - mean

        def loss(log_s: float) -> float:
            s = math.exp(log_s)
            score = s * predictive.crps(mean + residual / s)
            return float(_select(score, keep).double().mean())

        return self._search(loss)

    def _fit_nll(self, obs: Tensor, predictive: Predictive, keep: Tensor) -> float:
        mean = predictive.mean
        residual = obs - mean
        shape = obs.shape

        def loss(log_s: float) -> float:
            lp = predictive.log_prob(mean + residual / math.exp(log_s))
            if lp.shape != shape:
                raise ValueError(
                    f"{type(predictive).__name__}.log_prob has shape {tuple(lp.shape)}; "
                    f"objective='nll' expects an elementwise density of shape {tuple(shape)}"
                )
            return float(-_select(lp, keep).double().mean()) + log_s

        return self._search(loss)

    @staticmethod
    def _fit_mvn(obs: Tensor, predictive: MultivariateNormal, keep: Tensor) -> float:
        if bool((keep.any(-1) != keep.all(-1)).any()):
            raise ValueError(
                "mask selects part of a vector of the last axis of a MultivariateNormal; "
                "expected whole vectors for objective='nll'"
            )
        p64 = predictive.to(torch.float64)
        residual = obs.double() - p64.mean
        # log N(mu + r) - log N(mu) = -(r^T Sigma^-1 r) / 2
        mahalanobis = -2.0 * (p64.log_prob(p64.mean + residual) - p64.log_prob(p64.mean))
        vectors = keep.all(-1).expand(mahalanobis.shape)
        n = obs.shape[-1]
        return math.sqrt(float(mahalanobis[vectors].mean()) / n)

    # ------------------------------------------------------------------ transform
    @keeps_labels
    def transform(self, forecast: Any, *, member_dim: int | str | None = None) -> Predictive:
        """The forecast with its spread about the mean scaled by ``s``.

        Parameters
        ----------
        forecast:
            ``Normal``, ``MultivariateNormal``, ``GaussianMixture`` or ``Ensemble`` (or an
            ensemble array with member axis ``member_dim``), any ``batch_shape``.

        Returns
        -------
        A Predictive of the same family and ``batch_shape``.
        """
        if self.scale is None:
            raise ValueError("this VarianceScaling is not fitted; call fit(obs, forecast)")
        p, _ = _forecast_only(forecast, member_dim)
        return _scale_spread(p, self.scale)

    def _plan(self, forecast: Predictive, **_kwargs: Any) -> _Plan:
        if self.scale is None:
            raise ValueError("this VarianceScaling is not fitted; call fit(obs, forecast)")
        scale = torch.full(forecast.batch_shape, self.scale, dtype=forecast.dtype)
        return _Plan(scale=scale.to(forecast.device))

    def __repr__(self) -> str:
        return f"VarianceScaling(objective={self.objective!r}, scale={self.scale})"


class NoRecalibration:
    """The identity recalibration: ``transform`` returns the forecast unchanged.

    The ``"raw"`` candidate of :func:`~uqdyn.calibration.select_recalibration` and the
    ``fallback="identity"`` of :class:`~uqdyn.calibration.GroupedRecalibrator`; it has the
    same ``fit``/``transform`` interface as the other recalibrators so that a chosen
    recalibration can always be applied the same way.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import NoRecalibration
    >>> p = Normal(torch.zeros(3), torch.ones(3))
    >>> NoRecalibration().fit(torch.zeros(3), p).transform(p) is p
    True
    """

    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        member_dim: int | str | None = None,
        mask: Any = None,
    ) -> NoRecalibration:
        """Check the inputs like the other recalibrators do; nothing is fitted.

        Parameters
        ----------
        obs:
            Observations, shape broadcastable to ``batch_shape``.
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``.

        Returns
        -------
        ``self``.
        """
        obs_t, _, restore = _forecast_with_obs(obs, forecast, member_dim)
        keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
        _n_points_check(keep, ("obs",))
        return self

    @keeps_labels
    def transform(self, forecast: Any, *, member_dim: int | str | None = None) -> Predictive:
        """The forecast itself (an ensemble array is wrapped into an ``Ensemble``).

        Parameters
        ----------
        forecast:
            A Predictive of any ``batch_shape``, or an ensemble array with member axis
            ``member_dim``.

        Returns
        -------
        The same Predictive.
        """
        predictive, _ = _forecast_only(forecast, member_dim)
        return predictive

    def _plan(self, forecast: Predictive, **_kwargs: Any) -> _Plan:
        return _Plan()

    def __repr__(self) -> str:
        return "NoRecalibration()"
