"""Post-hoc recalibration fitted on a validation set: isotonic CDF map and variance scaling."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal, Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _forecast_only,
    _forecast_with_obs,
    _n_points_check,
    _pit_values,
    _select,
)
from .recalibrated import Recalibrated

__all__ = ["IsotonicRecalibrator", "VarianceScaling"]

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
        if isinstance(max_knots, bool) or not isinstance(max_knots, int) or max_knots < 3:
            raise ValueError(f"max_knots={max_knots!r}; expected an integer >= 3")
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 3:
            raise ValueError(f"n_nodes={n_nodes!r}; expected an integer >= 3")
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
        p = np.sort(_select(values, keep).detach().cpu().double().numpy())
        n = p.size
        freq = _isotonic(np.searchsorted(p, p, side="right") / (n + 1.0))
        if n > self.max_knots - 2:
            idx = np.unique(np.round(np.linspace(0, n - 1, self.max_knots - 2)).astype(np.int64))
            p, freq = p[idx], freq[idx]
        inside = (p > 0.0) & (p < 1.0)
        p, freq = p[inside], freq[inside]
        x, inverse = np.unique(p, return_inverse=True)
        y = np.zeros_like(x)
        np.maximum.at(y, inverse, freq)
        x = np.concatenate([[0.0], x, [1.0]])
        y = np.clip(np.concatenate([[0.0], y, [1.0]]), 0.0, 1.0)
        y = (1.0 - _IDENTITY_MIX) * y + _IDENTITY_MIX * x
        self.knots_x = torch.from_numpy(x)
        self.knots_y = torch.from_numpy(y)
        return self

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

    def __repr__(self) -> str:
        knots = "unfitted" if self.knots_x is None else f"{len(self.knots_x)} knots"
        return f"IsotonicRecalibrator({knots})"


_Objective = Literal["auto", "nll", "crps"]


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
        lo, hi = (float(b) for b in bounds)
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
        from scipy.optimize import minimize_scalar

        lo, hi = math.log(self.bounds[0]), math.log(self.bounds[1])
        result = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
        if min(result.x - lo, hi - result.x) < 1e-4:
            warnings.warn(
                f"VarianceScaling: the optimum s = {math.exp(result.x):.3g} lies at the edge of "
                f"bounds={self.bounds}; widen the bounds",
                RuntimeWarning,
                stacklevel=3,
            )
        return math.exp(float(result.x))

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
        s = self.scale
        if isinstance(p, Normal):
            return Normal(p.loc, s * p.scale, validate=False)
        if isinstance(p, MultivariateNormal):
            if p.cov_factor is not None and p.cov_diag is not None:
                return MultivariateNormal(
                    p.mean, cov_factor=s * p.cov_factor, cov_diag=s**2 * p.cov_diag
                )
            return MultivariateNormal(p.mean, scale_tril=s * p.scale_tril)
        if isinstance(p, GaussianMixture):
            mean = p.mean.unsqueeze(0)
            return GaussianMixture(p.weights, mean + s * (p.loc - mean), s * p.scale)
        if isinstance(p, Ensemble):
            mean = p.mean.unsqueeze(0)
            return Ensemble(
                mean + s * (p.members - mean), p.weights, estimator=p.estimator, alpha=p.alpha
            )
        raise TypeError(
            f"forecast is a {type(p).__name__}; VarianceScaling supports Normal, "
            "MultivariateNormal, GaussianMixture and Ensemble"
        )

    def __repr__(self) -> str:
        return f"VarianceScaling(objective={self.objective!r}, scale={self.scale})"
