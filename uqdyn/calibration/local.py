"""Local recalibration: maps that depend on the forecast's own spread or on user features."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn.predictive import Ensemble, GaussianMixture, MultivariateNormal, Normal, Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _forecast_only,
    _forecast_with_obs,
    _n_points_check,
    _pit_values,
    keeps_labels,
)
from ._labels import _as_features
from ._plan import _apply_plan, _mix_maps, _Plan, _stack_maps
from ._subset import _take_flat
from .recalibrate import _isotonic_knots, _log_search
from .recalibrated import Recalibrated, _interp

__all__ = ["LocalIsotonicRecalibrator", "LocalVarianceScaling"]

# Order statistics kept per feature for the rank transform, and points used by k-means.
_MAX_ORDER_STATS = 4097
_MAX_KMEANS_POINTS = 20000
# Kernel weights below this are treated as zero (about 4.3 bandwidths from the centre).
_MIN_KERNEL_WEIGHT = 1e-4


class _Cells:
    r"""A partition of feature space into ``n`` cells, fitted on validation features.

    Each feature is first mapped to its validation rank :math:`u \in [0, 1]` (mid-rank of
    the empirical CDF, so the map is invariant to monotone transformations of a feature and
    ties share one rank). One feature: cell ``b`` is the quantile bin
    :math:`u \in [b/n, (b+1)/n)` with centre :math:`(b + 1/2)/n`. Several features: the
    cells are those of k-means (farthest-point start, Lloyd iterations) on the ranks, a point
    belongs to its nearest centre. With a bandwidth ``h`` the weight of a point with ranks
    ``u`` for cell ``b`` is :math:`\exp(-\lVert u - c_b \rVert^2 / (2 h^2))`, otherwise 1 in
    its own cell and 0 elsewhere.
    """

    def __init__(self, n_cells: int, bandwidth: float | None) -> None:
        self.n_cells = n_cells
        self.bandwidth = bandwidth
        self.order_stats: list[Tensor] = []
        self.centres: Tensor | None = None

    @property
    def n_features(self) -> int:
        return len(self.order_stats)

    def fit(self, f: Tensor) -> _Cells:
        """Fit on validation features ``f (n, F)`` (float64)."""
        n = f.shape[0]
        take = torch.unique(torch.linspace(0, n - 1, min(n, _MAX_ORDER_STATS)).round().long())
        self.order_stats = [
            torch.sort(f[:, j]).values[take.to(f.device)] for j in range(f.shape[1])
        ]
        u = self.ranks(f)
        if f.shape[1] == 1:
            centres = (torch.arange(self.n_cells, dtype=torch.float64) + 0.5) / self.n_cells
            self.centres = centres.unsqueeze(-1).to(f.device)
        else:
            self.centres = _kmeans(u, self.n_cells)
        return self

    def ranks(self, f: Tensor) -> Tensor:
        """Mid-rank of ``f (n, F)`` in the validation features, in ``[0, 1]``."""
        out = torch.empty_like(f)
        for j, stats in enumerate(self.order_stats):
            stats = stats.to(f.device)
            col = f[:, j].contiguous()
            lo = torch.searchsorted(stats, col, right=False)
            hi = torch.searchsorted(stats, col, right=True)
            out[:, j] = (lo + hi).to(f.dtype) / (2.0 * len(stats))
        return out

    def assign(self, u: Tensor) -> Tensor:
        """The cell of each point with ranks ``u (n, F)``; int64 ``(n,)``."""
        if self.n_features == 1:
            return torch.floor(u[:, 0] * self.n_cells).long().clamp(0, self.n_cells - 1)
        return torch.cdist(u, self._centres(u.device)).argmin(1)

    def _centres(self, device: torch.device) -> Tensor:
        if self.centres is None:
            raise ValueError("the feature cells are not fitted")
        return self.centres.to(device)

    def weights(self, u: Tensor, cell: int, assigned: Tensor) -> Tensor:
        """Weights ``(n,)`` of the points (ranks ``u``, cells ``assigned``) for ``cell``."""
        if self.bandwidth is None:
            return (assigned == cell).to(u.dtype)
        d2 = (u - self._centres(u.device)[cell]).square().sum(1)
        w = torch.exp(-0.5 * d2 / self.bandwidth**2)
        return torch.where(w >= _MIN_KERNEL_WEIGHT, w, torch.zeros((), dtype=w.dtype))


def _kmeans(u: Tensor, k: int, iterations: int = 50) -> Tensor:
    """k-means centres ``(k, F)`` of ``u (n, F)``: farthest-point start, Lloyd iterations."""
    n = u.shape[0]
    if n > _MAX_KMEANS_POINTS:
        u = u[torch.linspace(0, n - 1, _MAX_KMEANS_POINTS).round().long().to(u.device)]
    first = int((u - u.mean(0)).square().sum(1).argmin())
    chosen = [first]
    dist = (u - u[first]).square().sum(1)
    for _ in range(1, k):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (u - u[nxt]).square().sum(1))
    centres = u[chosen].clone()
    assigned = torch.cdist(u, centres).argmin(1)
    for _ in range(iterations):
        for c in range(k):
            members = assigned == c
            if bool(members.any()):
                centres[c] = u[members].mean(0)
        new = torch.cdist(u, centres).argmin(1)
        if bool((new == assigned).all()):
            break
        assigned = new
    return centres


def _check_local_args(
    n_bins: Any, bandwidth: Any, min_points: Any, shrinkage: Any
) -> tuple[int, float | None, int, float]:
    n_bins = as_int(n_bins, "n_bins", minimum=1)
    if bandwidth is not None:
        bandwidth = as_float(bandwidth, "bandwidth", positive=True)
    min_points = as_int(min_points, "min_points", minimum=1)
    shrinkage = as_float(shrinkage, "shrinkage", nonnegative=True)
    return n_bins, bandwidth, min_points, shrinkage


class _LocalBase:
    """Feature handling shared by the local recalibrators."""

    n_bins: int
    bandwidth: float | None
    min_points: int
    shrinkage: float

    def __init__(self) -> None:
        self.feature: Literal["spread", "given"] | None = None
        self.n_features: int | None = None
        self.cells: _Cells | None = None
        self.n_points: Tensor | None = None
        self.shrink_weight: Tensor | None = None
        self.fallback_cells: list[int] = []

    def _features(self, predictive: Predictive, features: Any, stage: str) -> Tensor:
        shape = predictive.batch_shape
        if stage == "fit":
            self.feature = "spread" if features is None else "given"
        elif self.feature == "given" and features is None:
            raise ValueError(
                f"this {type(self).__name__} was fitted on user features; expected features= "
                f"of the same kind (broadcastable to batch_shape {tuple(shape)}, or with "
                f"{self.n_features} features on a last axis) in transform"
            )
        elif self.feature == "spread" and features is not None:
            raise ValueError(
                f"this {type(self).__name__} was fitted on the forecast's spread; expected "
                "features=None in transform (or fit it with features=)"
            )
        if features is None:
            with torch.no_grad():
                f = predictive.stddev.detach().to(torch.float64).unsqueeze(-1)
        else:
            f = _as_features(features, shape, predictive.device)
        if stage == "fit":
            self.n_features = f.shape[-1]
        elif f.shape[-1] != self.n_features:
            raise ValueError(
                f"features has {f.shape[-1]} feature(s) on its last axis; expected "
                f"{self.n_features} as in fit"
            )
        return f

    def _cell_weight(self, n_eff: float) -> float:
        """Shrinkage weight :math:`n / (n + n_0)` of a cell's own map."""
        return 1.0 if self.shrinkage == 0 else n_eff / (n_eff + self.shrinkage)

    def _fit_cells(self, f: Tensor) -> tuple[_Cells, Tensor, Tensor]:
        """Cells on features ``f (n, F)``; returns them, the ranks and each point's cell."""
        cells = _Cells(self.n_bins, self.bandwidth).fit(f)
        self.cells = cells
        u = cells.ranks(f)
        return cells, u, cells.assign(u)

    def _point_cells(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """Ranks ``(n, F)`` and cells ``(n,)`` of features ``(*S, F)`` flattened."""
        if self.cells is None:
            raise ValueError(f"this {type(self).__name__} is not fitted; call fit(obs, forecast)")
        u = self.cells.ranks(f.reshape(-1, f.shape[-1]))
        return u, self.cells.assign(u)


def _effective_size(w: Tensor) -> float:
    total = float(w.sum())
    return 0.0 if total <= 0 else total**2 / float(w.square().sum())


class LocalIsotonicRecalibrator(_LocalBase):
    r"""Isotonic recalibration that depends on a feature: one CDF map per feature cell.

    The validation points are split into ``n_bins`` cells of a feature: by default the
    forecast's own predictive standard deviation (so that a forecast over-confident where it
    is sharp and under-confident where it is wide is repaired in both places), or user
    ``features`` of shape ``batch_shape`` (one feature) or ``(*batch_shape, F)``. One feature
    gives quantile bins of the feature (equal numbers of validation points), several give
    k-means cells of their ranks. In each cell ``b`` a map :math:`R_b` is fitted as by
    :class:`~uqdyn.calibration.IsotonicRecalibrator` to the PIT values of the cell's points;
    with ``bandwidth`` :math:`h` it is fitted to *all* points with kernel weights
    :math:`w_{ib} = \exp(-\lVert u_i - c_b\rVert^2 / (2h^2))` in rank space (neighbouring
    cells share points, the maps vary smoothly; see ``_isotonic_knots`` for the weighted
    empirical CDF). A new point gets the map of its cell.

    Small cells are safeguarded in two ways:

    * a cell with an effective number of points :math:`n_b < ` ``min_points``
      (:math:`n_b = (\sum_i w_{ib})^2 / \sum_i w_{ib}^2`, the count for hard bins) uses the
      global map :math:`R` fitted on all points (listed in ``fallback_cells``);
    * with ``shrinkage`` :math:`n_0 > 0`, every cell's map is shrunk towards the global one,
      :math:`\tilde R_b = \lambda_b R_b + (1 - \lambda_b) R` with
      :math:`\lambda_b = n_b / (n_b + n_0)` (a convex combination of increasing maps from 0
      to 1 is one as well).

    Parameters
    ----------
    n_bins:
        Number of cells.
    bandwidth:
        Kernel bandwidth in rank units (e.g. ``1 / n_bins``), or ``None`` for hard cells.
    min_points:
        Smallest effective number of validation points for a cell's own map.
    shrinkage:
        :math:`n_0` of the shrinkage towards the global map (0: none).
    max_knots, n_nodes:
        As for :class:`~uqdyn.calibration.IsotonicRecalibrator` (knots per map).

    Attributes
    ----------
    knots_x, knots_y:
        The maps after ``fit``, float64 ``(n_bins, K)`` (padded to one ``K``).
    global_knots_x, global_knots_y:
        The global map, float64 ``(K_0,)``.
    n_points:
        Effective number of validation points per cell, float64 ``(n_bins,)``.
    shrink_weight:
        :math:`\lambda_b` per cell (0 for cells that fell back), float64 ``(n_bins,)``.
    fallback_cells:
        Cells that use the global map.

    References
    ----------
    Kuleshov, Fenner & Ermon (2018), Accurate uncertainties for deep learning using
    calibrated regression, ICML (the global map). Song, Diethe, Kull & Flach (2019),
    Distribution calibration for regression, ICML (calibration conditional on the forecast).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import LocalIsotonicRecalibrator, coverage
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(8000, generator=g)
    >>> y = (0.2 + x) * torch.randn(8000, generator=g)  # the spread grows with x
    >>> flat = Normal(torch.zeros(4000), 0.7)  # one spread everywhere
    >>> local = LocalIsotonicRecalibrator().fit(y[:4000], flat, features=x[:4000])
    >>> test = local.transform(flat, features=x[4000:])
    >>> [abs(float(coverage(y[4000:], test, 0.9, mask=m)) - 0.9) < 0.03
    ...  for m in (x[4000:] < 0.25, x[4000:] > 0.75)]  # sharp and wide: both calibrated
    [True, True]
    """

    def __init__(
        self,
        *,
        n_bins: int = 8,
        bandwidth: float | None = None,
        min_points: int = 50,
        shrinkage: float = 0.0,
        max_knots: int = 1000,
        n_nodes: int = 201,
    ) -> None:
        super().__init__()
        self.n_bins, self.bandwidth, self.min_points, self.shrinkage = _check_local_args(
            n_bins, bandwidth, min_points, shrinkage
        )
        max_knots = as_int(max_knots, "max_knots", minimum=3)
        n_nodes = as_int(n_nodes, "n_nodes", minimum=3)
        self.max_knots = max_knots
        self.n_nodes = n_nodes
        self.knots_x: Tensor | None = None
        self.knots_y: Tensor | None = None
        self.global_knots_x: Tensor | None = None
        self.global_knots_y: Tensor | None = None

    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        features: Any = None,
        member_dim: int | str | None = None,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> LocalIsotonicRecalibrator:
        """Fit the cells and their maps on a validation set.

        Parameters
        ----------
        obs:
            Validation observations, shape ``batch_shape``.
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        features:
            ``None`` (the forecast's predictive standard deviation), or an array
            broadcastable to ``batch_shape`` (one feature) or ``(*batch_shape, F)``.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``; only ``True`` points are used.
        generator:
            Random generator for the randomized PIT of ensembles.

        Returns
        -------
        ``self``, with the maps set.
        """
        obs_t, predictive, keep, f = _local_inputs(self, obs, forecast, features, member_dim, mask)
        values = _pit_values(predictive, obs_t, generator)
        _check_finite_at(values, keep, "PIT of obs under forecast")
        sel = keep.reshape(-1)
        p = values.reshape(-1)[sel].detach().cpu().double().numpy()
        f = f.reshape(-1, f.shape[-1])[sel]
        cells, u, assigned = self._fit_cells(f)
        gx, gy = _isotonic_knots(p, None, self.max_knots)
        global_x, global_y = torch.from_numpy(gx), torch.from_numpy(gy)
        maps, n_points, lam, fallback = [], [], [], []
        for b in range(self.n_bins):
            w = cells.weights(u, b, assigned).cpu().double()
            n_b = _effective_size(w)
            n_points.append(n_b)
            if n_b < self.min_points:
                maps.append((global_x, global_y))
                lam.append(0.0)
                fallback.append(b)
                continue
            inside = (w > 0).numpy()
            weights = None if self.bandwidth is None else w.numpy()[inside]
            x, y = _isotonic_knots(p[inside], weights, self.max_knots)
            weight = self._cell_weight(n_b)
            maps.append(
                _mix_maps(torch.from_numpy(x), torch.from_numpy(y), global_x, global_y, weight)
            )
            lam.append(weight)
        kx, ky = _stack_maps(maps)
        self.knots_x, self.knots_y = kx, ky
        self.global_knots_x, self.global_knots_y = global_x, global_y
        self.n_points = torch.tensor(n_points, dtype=torch.float64)
        self.shrink_weight = torch.tensor(lam, dtype=torch.float64)
        self.fallback_cells = fallback
        return self

    @keeps_labels
    def transform(
        self, forecast: Any, *, features: Any = None, member_dim: int | str | None = None
    ) -> Recalibrated:
        """The recalibrated forecast: point ``i`` gets the map of its feature cell.

        Parameters
        ----------
        forecast:
            A Predictive of any ``batch_shape``, or an ensemble array with member axis
            ``member_dim``.
        features:
            Features of the forecast's points, of the kind used in ``fit`` (``None`` when the
            fit used the forecast's spread).
        member_dim:
            Member axis when ``forecast`` is an array.

        Returns
        -------
        :class:`~uqdyn.calibration.Recalibrated` with per-point maps, same ``batch_shape``.
        """
        predictive, _ = _forecast_only(forecast, member_dim)
        out = _apply_plan(predictive, self._plan(predictive, features=features))
        if not isinstance(out, Recalibrated):  # pragma: no cover - every point has a map
            raise RuntimeError("local isotonic plan did not map every point")
        return out

    def _plan(self, forecast: Predictive, *, features: Any = None, **_kwargs: Any) -> _Plan:
        if self.knots_x is None or self.knots_y is None:
            raise ValueError(
                "this LocalIsotonicRecalibrator is not fitted; call fit(obs, forecast)"
            )
        f = self._features(forecast, features, "transform")
        _, cells = self._point_cells(f)
        return _Plan(
            knots_x=self.knots_x,
            knots_y=self.knots_y,
            map_index=cells.reshape(forecast.batch_shape),
            n_nodes=self.n_nodes,
        )

    def __repr__(self) -> str:
        state = "unfitted" if self.knots_x is None else f"fallback_cells={self.fallback_cells}"
        return (
            f"LocalIsotonicRecalibrator(n_bins={self.n_bins}, bandwidth={self.bandwidth}, {state})"
        )


def _local_inputs(
    recal: _LocalBase,
    obs: Any,
    forecast: Any,
    features: Any,
    member_dim: int | str | None,
    mask: Any,
) -> tuple[Tensor, Predictive, Tensor, Tensor]:
    """Observations, forecast, mask and features ``(*S, F)`` of a local fit, validated."""
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    if obs_t.shape != predictive.batch_shape:
        raise ValueError(
            f"obs has shape {tuple(obs_t.shape)} after broadcasting but the forecast has "
            f"batch_shape {tuple(predictive.batch_shape)}; expected obs of at most that shape"
        )
    keep = _as_mask(mask, obs_t.shape, obs_t.device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    f = recal._features(predictive, features, "fit")
    _check_finite_at(f, keep.unsqueeze(-1), "features")
    return obs_t, predictive, keep, f


def _fit_scale(
    obs: Tensor,
    predictive: Predictive,
    weights: Tensor | None,
    objective: str,
    bounds: tuple[float, float],
) -> float:
    """The spread factor minimising the (weighted) mean NLL or CRPS; 1-D batch."""
    mean = predictive.mean
    residual = obs - mean
    w = torch.ones_like(obs) if weights is None else weights.to(obs)
    total = float(w.sum())
    if objective == "auto":
        objective = "crps" if isinstance(predictive, Ensemble) else "nll"
    if objective == "nll":
        if isinstance(predictive, Ensemble):
            raise ValueError(
                "objective='nll' needs a predictive density but the forecast is an Ensemble; "
                "expected objective='crps' or 'auto'"
            )
        if isinstance(predictive, Normal):
            z2 = (residual / predictive.scale).square()
            return math.sqrt(float((w * z2).double().sum()) / total)

        def nll(log_s: float) -> float:
            lp = predictive.log_prob(mean + residual / math.exp(log_s))
            return float(-(w * lp).double().sum()) / total + log_s

        return _log_search(nll, bounds, "LocalVarianceScaling", stacklevel=5)

    def crps(log_s: float) -> float:
        s = math.exp(log_s)
        return float((w * s * predictive.crps(mean + residual / s)).double().sum()) / total

    return _log_search(crps, bounds, "LocalVarianceScaling", stacklevel=5)


class LocalVarianceScaling(_LocalBase):
    r"""Variance scaling with a factor that depends on a feature: :math:`s(u)`.

    As :class:`~uqdyn.calibration.VarianceScaling` (the law of :math:`\mu + s (Y - \mu)`,
    same family), but with one factor :math:`s_b` per cell of a feature (default: the
    forecast's predictive standard deviation; cells as in
    :class:`~uqdyn.calibration.LocalIsotonicRecalibrator`), each minimising the mean NLL
    (closed form :math:`s_b^2 = \sum_i w_{ib} z_i^2 / \sum_i w_{ib}` for Gaussian marginals)
    or CRPS of its cell's points (kernel-weighted with ``bandwidth``). For one feature,
    :math:`\log s` is interpolated linearly in the feature's rank between the cell centres
    (constant beyond the outer centres), so :math:`s` is a continuous function of the
    feature; for several features a point takes its cell's factor. A
    ``MultivariateNormal`` is fitted on its marginals and rescaled as :math:`D \Sigma D`.

    Cells with fewer than ``min_points`` effective points use the global factor :math:`s`;
    with ``shrinkage`` :math:`n_0`, :math:`\log \tilde s_b = \lambda_b \log s_b +
    (1 - \lambda_b) \log s` with :math:`\lambda_b = n_b / (n_b + n_0)`.

    Parameters
    ----------
    objective:
        ``"auto"`` (CRPS for ensembles, NLL otherwise), ``"nll"`` or ``"crps"``.
    n_bins, bandwidth, min_points, shrinkage:
        As for :class:`~uqdyn.calibration.LocalIsotonicRecalibrator`.
    bounds:
        Search interval for each factor in the 1-D searches.

    Attributes
    ----------
    scales:
        Factor of each cell after ``fit``, float64 ``(n_bins,)``.
    global_scale:
        The global factor (a float).
    n_points, shrink_weight, fallback_cells:
        As for :class:`~uqdyn.calibration.LocalIsotonicRecalibrator`.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import LocalVarianceScaling
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(20000, generator=g)
    >>> y = (0.2 + x) * torch.randn(20000, generator=g)
    >>> lvs = LocalVarianceScaling(n_bins=10).fit(y, Normal(torch.zeros(20000), 1.0), features=x)
    >>> bool(lvs.scales[0] < 0.4 and lvs.scales[-1] > 1.0)
    True
    """

    def __init__(
        self,
        objective: Literal["auto", "nll", "crps"] = "auto",
        *,
        n_bins: int = 8,
        bandwidth: float | None = None,
        min_points: int = 50,
        shrinkage: float = 0.0,
        bounds: tuple[float, float] = (1e-3, 1e3),
    ) -> None:
        super().__init__()
        if objective not in ("auto", "nll", "crps"):
            raise ValueError(f"objective={objective!r}; expected 'auto', 'nll' or 'crps'")
        self.n_bins, self.bandwidth, self.min_points, self.shrinkage = _check_local_args(
            n_bins, bandwidth, min_points, shrinkage
        )
        lo, hi = (float(b) for b in bounds)
        if not 0.0 < lo < 1.0 < hi or not math.isfinite(hi):
            raise ValueError(f"bounds={bounds!r}; expected (low, high) with 0 < low < 1 < high")
        self.objective = objective
        self.bounds = (lo, hi)
        self.scales: Tensor | None = None
        self.global_scale: float | None = None

    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        features: Any = None,
        member_dim: int | str | None = None,
        mask: Any = None,
    ) -> LocalVarianceScaling:
        """Fit the cells and their factors on a validation set.

        Parameters
        ----------
        obs:
            Validation observations, shape ``batch_shape``.
        forecast:
            ``Normal``, ``MultivariateNormal``, ``GaussianMixture`` or ``Ensemble`` (or an
            ensemble array with member axis ``member_dim``).
        features:
            ``None`` (the forecast's predictive standard deviation), or an array
            broadcastable to ``batch_shape`` (one feature) or ``(*batch_shape, F)``.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``; only ``True`` points are used.

        Returns
        -------
        ``self``, with ``scales`` set.
        """
        obs_t, predictive, keep, f = _local_inputs(self, obs, forecast, features, member_dim, mask)
        if not isinstance(predictive, (Normal, MultivariateNormal, GaussianMixture, Ensemble)):
            raise TypeError(
                f"forecast is a {type(predictive).__name__}; LocalVarianceScaling supports "
                "Normal, MultivariateNormal, GaussianMixture and Ensemble"
            )
        idx = keep.reshape(-1).nonzero().squeeze(-1)
        flat = _take_flat(predictive, idx)
        y = obs_t.reshape(-1)[idx]
        f = f.reshape(-1, f.shape[-1])[idx]
        cells, u, assigned = self._fit_cells(f)
        with torch.no_grad():
            global_scale = _fit_scale(y, flat, None, self.objective, self.bounds)
            scales, n_points, lam, fallback = [], [], [], []
            for b in range(self.n_bins):
                w = cells.weights(u, b, assigned)
                n_b = _effective_size(w)
                n_points.append(n_b)
                if n_b < self.min_points:
                    scales.append(global_scale)
                    lam.append(0.0)
                    fallback.append(b)
                    continue
                inside = (w > 0).nonzero().squeeze(-1)
                cell_w = None if self.bandwidth is None else w[inside]
                s_b = _fit_scale(
                    y[inside], _take_flat(flat, inside), cell_w, self.objective, self.bounds
                )
                weight = self._cell_weight(n_b)
                scales.append(
                    math.exp(weight * math.log(s_b) + (1 - weight) * math.log(global_scale))
                )
                lam.append(weight)
        for s in [global_scale, *scales]:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"a fitted scale is {s}; expected positive numbers")
        self.global_scale = global_scale
        self.scales = torch.tensor(scales, dtype=torch.float64)
        self.n_points = torch.tensor(n_points, dtype=torch.float64)
        self.shrink_weight = torch.tensor(lam, dtype=torch.float64)
        self.fallback_cells = fallback
        return self

    @keeps_labels
    def transform(
        self, forecast: Any, *, features: Any = None, member_dim: int | str | None = None
    ) -> Predictive:
        """The forecast with its spread about the mean scaled by :math:`s` of each point.

        Parameters
        ----------
        forecast:
            ``Normal``, ``MultivariateNormal``, ``GaussianMixture`` or ``Ensemble`` (or an
            ensemble array with member axis ``member_dim``), any ``batch_shape``.
        features:
            Features of the forecast's points, of the kind used in ``fit``.
        member_dim:
            Member axis when ``forecast`` is an array.

        Returns
        -------
        A Predictive of the same family and ``batch_shape``.
        """
        predictive, _ = _forecast_only(forecast, member_dim)
        return _apply_plan(predictive, self._plan(predictive, features=features))

    def point_scales(self, forecast: Any, *, features: Any = None) -> Tensor:
        """The factor :math:`s` at each point of ``forecast``, shape ``batch_shape``."""
        predictive, _ = _forecast_only(forecast, None)
        scale = self._plan(predictive, features=features).scale
        if scale is None:  # pragma: no cover - a local scaling plan always has factors
            raise RuntimeError("local variance scaling plan without factors")
        return scale

    def _plan(self, forecast: Predictive, *, features: Any = None, **_kwargs: Any) -> _Plan:
        if self.scales is None or self.cells is None:
            raise ValueError("this LocalVarianceScaling is not fitted; call fit(obs, forecast)")
        f = self._features(forecast, features, "transform")
        u, cells = self._point_cells(f)
        log_s = self.scales.to(u.device).log()
        if self.cells.n_features == 1 and self.n_bins > 1:
            centres = self.cells._centres(u.device)[:, 0].contiguous()
            values = _interp(u[:, 0].contiguous(), centres, log_s)
        else:
            values = log_s[cells]
        scale = values.exp().to(forecast.dtype).reshape(forecast.batch_shape)
        return _Plan(scale=scale)

    def __repr__(self) -> str:
        state = "unfitted" if self.scales is None else f"scales={self.scales.tolist()}"
        return f"LocalVarianceScaling(n_bins={self.n_bins}, bandwidth={self.bandwidth}, {state})"
