"""Grouped recalibration: a separate recalibration per lead time, region or any label."""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar
from uqdyn.predictive import Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _forecast_only,
    _forecast_with_obs,
    _n_points_check,
    keeps_labels,
)
from ._labels import _as_features, _fit_groups, _transform_groups
from ._plan import _apply_plan, _merge_plans, _mix_maps, _Plan
from ._subset import _can_take_flat, _take_flat
from .recalibrate import IsotonicRecalibrator, NoRecalibration, VarianceScaling

__all__ = ["GroupedRecalibrator"]


def _accepts(method: Callable[..., Any], name: str) -> bool:
    params = inspect.signature(method).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _fit_recalibrator(
    recal: Any,
    obs: Any,
    forecast: Predictive,
    *,
    mask: Any = None,
    features: Any = None,
    groups: Any = None,
    generator: torch.Generator | None = None,
) -> Any:
    """``recal.fit`` with the keywords it takes (features, groups, generator, mask).

    A recalibrator grouped by axis takes no labels.
    """
    if getattr(recal, "axis", None) is not None:
        groups = None
    kwargs: dict[str, Any] = {}
    if mask is not None:
        kwargs["mask"] = mask
    for name, value in (("features", features), ("groups", groups), ("generator", generator)):
        if value is not None and _accepts(recal.fit, name):
            kwargs[name] = value
    return recal.fit(obs, forecast, **kwargs)


def _plan_of(
    recal: Any, forecast: Predictive, *, features: Any = None, groups: Any = None
) -> _Plan:
    plan: _Plan = recal._plan(forecast, features=features, groups=groups)
    return plan


def _check_composable(recal: Any, name: str) -> None:
    if not (hasattr(recal, "fit") and hasattr(recal, "_plan")):
        raise TypeError(
            f"{name} is a {type(recal).__name__}; expected a uqdyn recalibrator "
            "(VarianceScaling, IsotonicRecalibrator, LocalVarianceScaling, "
            "LocalIsotonicRecalibrator, NoRecalibration or GroupedRecalibrator)"
        )


def _shrunk(recal: Any, toward: Any, weight: float) -> Any:
    r"""``recal`` shrunk towards ``toward`` with weight ``weight`` on its own fit.

    Variance scaling: :math:`\log s = w \log s_g + (1 - w) \log s_0`; isotonic maps:
    :math:`R = w R_g + (1 - w) R_0`.
    """
    if isinstance(recal, NoRecalibration) or weight >= 1.0:
        return recal
    out = copy.copy(recal)
    if (
        isinstance(recal, VarianceScaling)
        and isinstance(toward, VarianceScaling)
        and recal.scale is not None
        and toward.scale is not None
    ):
        out.scale = math.exp(
            weight * math.log(recal.scale) + (1.0 - weight) * math.log(toward.scale)
        )
        return out
    if (
        isinstance(recal, IsotonicRecalibrator)
        and isinstance(toward, IsotonicRecalibrator)
        and recal.knots_x is not None
        and recal.knots_y is not None
        and toward.knots_x is not None
        and toward.knots_y is not None
    ):
        out.knots_x, out.knots_y = _mix_maps(
            recal.knots_x, recal.knots_y, toward.knots_x, toward.knots_y, weight
        )
        return out
    raise ValueError(  # pragma: no cover - checked before fitting
        f"shrinkage needs VarianceScaling or IsotonicRecalibrator; got {type(recal).__name__}"
    )


class GroupedRecalibrator:
    r"""A separate recalibration for each group of points: lead time, region, any label.

    ``fit`` fits one copy of ``recalibrator`` (``VarianceScaling``,
    ``IsotonicRecalibrator``, ``LocalVarianceScaling``, ``LocalIsotonicRecalibrator`` or
    ``NoRecalibration``) on the validation points of each group; ``transform`` returns
    **one** Predictive over the whole batch in which every point gets its group's
    recalibration: the same family with a per-point spread factor for variance scaling, a
    :class:`~uqdyn.calibration.Recalibrated` with one CDF map per group for isotonic maps,
    and a :class:`~uqdyn.calibration.Stitched` where groups differ in kind (some keep the
    raw forecast or a rescaled one, others get a map). At each point the result equals what
    that group's recalibration gives on its own.

    Groups are either labels (``groups=`` in ``fit`` and ``transform``: integers or strings,
    broadcastable to ``batch_shape``, e.g. a region mask of shape ``(height, width)``) or the
    position along one batch axis (``axis=``, e.g. ``axis=1`` for the lead axis of
    ``(cases, leads, *space)`` forecasts; the test forecast then has the same leads).

    Safeguards for small groups:

    * a group with fewer than ``min_points`` (unmasked) validation points gets the
      ``fallback``: ``"global"``, the recalibrator fitted on all groups together, or
      ``"identity"``, the raw forecast; such groups are listed in ``fallback_groups``.
      Points of one case are correlated, so ``min_points`` counts points, not independent
      cases: cross-validate over cases (:func:`~uqdyn.calibration.select_recalibration`) to
      decide whether a per-group recalibration holds out of sample;
    * with ``shrinkage`` :math:`n_0 > 0` (variance scaling and isotonic maps), each group's
      fit is shrunk towards the global one with weight :math:`\lambda_g = n_g / (n_g + n_0)`
      on its own fit: :math:`\log \tilde s_g = \lambda_g \log s_g + (1 - \lambda_g) \log s`
      and :math:`\tilde R_g = \lambda_g R_g + (1 - \lambda_g) R`.

    Labels seen in ``transform`` but not in ``fit`` get the fallback too, with a warning.

    Parameters
    ----------
    recalibrator:
        A recalibrator whose settings are copied for each group (e.g.
        ``IsotonicRecalibrator(n_nodes=101)``), or a function of no arguments returning a
        new one.
    axis:
        Group by position along this batch axis (then ``groups=`` is not used).
    min_points:
        Smallest number of validation points for a group's own fit.
    fallback:
        ``"global"`` or ``"identity"``.
    shrinkage:
        :math:`n_0` of the shrinkage towards the global fit (0: none).

    Attributes
    ----------
    labels:
        The group labels after ``fit`` (sorted; positions ``0 .. n - 1`` with ``axis``).
    recalibrators:
        ``{label: fitted recalibrator}`` (the fallback object for groups that fell back).
    global_recalibrator:
        The recalibrator fitted on all points (``None`` with ``fallback="identity"`` and no
        shrinkage).
    n_points:
        ``{label: number of validation points}``.
    shrink_weight:
        ``{label: lambda_g}`` (1 without shrinkage, 0 for groups that fell back).
    fallback_groups:
        Labels of the groups that got the fallback.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import GroupedRecalibrator, VarianceScaling
    >>> g = torch.Generator().manual_seed(0)
    >>> growth = torch.tensor([1.0, 2.0, 4.0])  # error grows with lead time
    >>> y = growth * torch.randn(200, 3, generator=g)  # (cases, leads)
    >>> forecast = Normal(torch.zeros(200, 3), torch.ones(200, 3))
    >>> per_lead = GroupedRecalibrator(VarianceScaling(), axis=1).fit(y, forecast)
    >>> [round(per_lead.recalibrators[k].scale, 1) for k in per_lead.labels]
    [1.0, 2.0, 4.2]
    >>> per_lead.transform(forecast).stddev[0]  # one Normal, each lead with its own factor
    tensor([1.0083, 1.9929, 4.1807])
    """

    def __init__(
        self,
        recalibrator: Any,
        *,
        axis: int | None = None,
        min_points: int = 50,
        fallback: Literal["global", "identity"] = "global",
        shrinkage: float = 0.0,
    ) -> None:
        if isinstance(recalibrator, type) or (
            callable(recalibrator) and not hasattr(recalibrator, "fit")
        ):
            self._factory: Callable[[], Any] | None = recalibrator
            probe = recalibrator()
        else:
            proto = recalibrator
            self._factory = lambda: copy.deepcopy(proto)
            probe = proto
        _check_composable(probe, "recalibrator")
        if isinstance(probe, GroupedRecalibrator):
            raise TypeError("recalibrator is a GroupedRecalibrator; expected an ungrouped one")
        if axis is not None:
            if not is_integer_scalar(axis):
                raise TypeError(
                    f"axis={axis!r} is a {describe_type(axis)}; expected an integer batch axis "
                    "or None"
                )
            axis = as_int(axis, "axis")
        min_points = as_int(min_points, "min_points", minimum=1)
        if fallback not in ("global", "identity"):
            raise ValueError(f"fallback={fallback!r}; expected 'global' or 'identity'")
        shrinkage = as_float(shrinkage, "shrinkage", nonnegative=True)
        if shrinkage > 0 and not isinstance(
            probe, (VarianceScaling, IsotonicRecalibrator, NoRecalibration)
        ):
            raise ValueError(
                f"shrinkage={shrinkage} needs VarianceScaling or IsotonicRecalibrator; "
                f"{type(probe).__name__} shrinks its own cells (its shrinkage= argument)"
            )
        self.prototype = probe
        self.axis = axis
        self.min_points = min_points
        self.fallback = fallback
        self.shrinkage = float(shrinkage)
        self.labels: list[Hashable] | None = None
        self.recalibrators: dict[Hashable, Any] = {}
        self.global_recalibrator: Any = None
        self.n_points: dict[Hashable, int] = {}
        self.shrink_weight: dict[Hashable, float] = {}
        self.fallback_groups: list[Hashable] = []
        self._default: Any = None

    @classmethod
    def from_fitted(
        cls,
        recalibrators: Mapping[Hashable, Any],
        *,
        axis: int | None = None,
        default: Any = None,
    ) -> GroupedRecalibrator:
        """A grouped recalibration from recalibrators already fitted, one per label.

        A recalibrator may serve several labels (e.g. one fitted on all groups), and may be
        of a different kind for each; this is how
        :func:`~uqdyn.calibration.select_recalibration` returns its per-group choice.

        Parameters
        ----------
        recalibrators:
            ``{label: fitted recalibrator}``; labels are positions along ``axis`` when it is
            given, group labels of ``transform(groups=...)`` otherwise.
        axis:
            Group by position along this batch axis.
        default:
            Fitted recalibrator for labels not in ``recalibrators`` (``None``: the raw
            forecast).

        Returns
        -------
        A fitted :class:`GroupedRecalibrator` (it cannot be refitted).
        """
        if not recalibrators:
            raise ValueError("recalibrators is empty; expected at least one label")
        for label, recal in recalibrators.items():
            _check_composable(recal, f"recalibrators[{label!r}]")
        out = cls(NoRecalibration, axis=axis)
        out._factory = None
        out.labels = list(recalibrators)
        out.recalibrators = dict(recalibrators)
        out._default = default if default is not None else NoRecalibration()
        return out

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        obs: Any,
        forecast: Any,
        *,
        groups: Any = None,
        features: Any = None,
        member_dim: int | str | None = None,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> GroupedRecalibrator:
        """Fit one recalibration per group on a validation set.

        Parameters
        ----------
        obs:
            Validation observations, shape ``batch_shape``.
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        groups:
            Labels (integers or strings) broadcastable to ``batch_shape``; ``None`` with
            ``axis``.
        features:
            Features for local recalibrators (see
            :class:`~uqdyn.calibration.LocalIsotonicRecalibrator`); ignored by the others.
        member_dim:
            Member axis when ``forecast`` is an array.
        mask:
            Boolean, broadcastable to ``batch_shape``; only ``True`` points are used.
        generator:
            Random generator for the randomized PIT of ensembles.

        Returns
        -------
        ``self``, with ``recalibrators``, ``n_points`` and ``fallback_groups`` set.
        """
        if self._factory is None:
            raise ValueError(
                "this GroupedRecalibrator was made by from_fitted; it cannot be refitted"
            )
        obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
        shape = predictive.batch_shape
        if obs_t.shape != shape:
            raise ValueError(
                f"obs has shape {tuple(obs_t.shape)} after broadcasting but the forecast has "
                f"batch_shape {tuple(shape)}; expected obs of at most that shape"
            )
        keep = _as_mask(mask, shape, obs_t.device, restore)
        _n_points_check(keep, ("obs",))
        _check_finite_at(obs_t, keep, "obs")
        codes, labels = _fit_groups(groups, self.axis, shape, obs_t.device)
        f = None if features is None else _as_features(features, shape, obs_t.device)
        counts = torch.bincount(codes[keep], minlength=len(labels)).tolist()
        small = [c < self.min_points for c in counts]
        self.global_recalibrator = None
        if self.shrinkage > 0 or self.fallback == "global":
            self.global_recalibrator = _fit_recalibrator(
                self._factory(),
                obs_t,
                predictive,
                mask=keep,
                features=features,
                generator=generator,
            )
        fallback: Any = NoRecalibration()
        if self.fallback == "global":
            fallback = self.global_recalibrator
        flat = _can_take_flat(predictive)
        self.labels = labels
        self.recalibrators, self.n_points, self.shrink_weight = {}, {}, {}
        self.fallback_groups = []
        for code, label in enumerate(labels):
            self.n_points[label] = counts[code]
            if small[code]:
                self.recalibrators[label] = fallback
                self.shrink_weight[label] = 0.0
                self.fallback_groups.append(label)
                continue
            mine = keep & (codes == code)
            recal = self._factory()
            if flat:
                idx = mine.reshape(-1).nonzero().squeeze(-1)
                sub_f = None if f is None else f.reshape(-1, f.shape[-1])[idx]
                _fit_recalibrator(
                    recal,
                    obs_t.reshape(-1)[idx],
                    _take_flat(predictive, idx),
                    features=sub_f,
                    generator=generator,
                )
            else:
                _fit_recalibrator(
                    recal, obs_t, predictive, mask=mine, features=features, generator=generator
                )
            weight = 1.0
            if self.shrinkage > 0:
                weight = counts[code] / (counts[code] + self.shrinkage)
                recal = _shrunk(recal, self.global_recalibrator, weight)
            self.recalibrators[label] = recal
            self.shrink_weight[label] = weight
        self._default = fallback
        return self

    # ------------------------------------------------------------------ transform
    @keeps_labels
    def transform(
        self,
        forecast: Any,
        *,
        groups: Any = None,
        features: Any = None,
        member_dim: int | str | None = None,
    ) -> Predictive:
        """The forecast with each point recalibrated by its group's recalibration.

        Parameters
        ----------
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        groups:
            Labels broadcastable to ``batch_shape`` (as in ``fit``); ``None`` with ``axis``.
        features:
            Features for local recalibrators, of the kind used in ``fit``.
        member_dim:
            Member axis when ``forecast`` is an array.

        Returns
        -------
        One Predictive of the same ``batch_shape``: the forecast's family when every group
        rescales (or keeps) the spread, :class:`~uqdyn.calibration.Recalibrated` when every
        group maps the CDF, :class:`~uqdyn.calibration.Stitched` of the two otherwise.
        """
        predictive, _ = _forecast_only(forecast, member_dim)
        if self.axis is not None and groups is not None:
            raise ValueError(
                f"this GroupedRecalibrator groups by axis={self.axis}; expected groups=None"
            )
        return _apply_plan(predictive, self._plan(predictive, groups=groups, features=features))

    def group_index(self, forecast: Any, *, groups: Any = None) -> Tensor:
        """Index into ``labels`` of each point of ``forecast`` (-1: unseen), ``batch_shape``."""
        predictive, _ = _forecast_only(forecast, None)
        codes, _ = self._codes(predictive, groups, warn=False)
        return codes

    def _fitted_labels(self) -> list[Hashable]:
        if self.labels is None:
            raise ValueError("this GroupedRecalibrator is not fitted; call fit(obs, forecast)")
        return self.labels

    def _codes(self, forecast: Predictive, groups: Any, *, warn: bool) -> tuple[Tensor, list]:
        if self.axis is not None:
            groups = None  # grouped by position; labels of an enclosing grouping do not apply
        codes, unseen = _transform_groups(
            groups, self.axis, forecast.batch_shape, forecast.device, self._fitted_labels()
        )
        if unseen and warn:
            kind = "identity" if isinstance(self._default, NoRecalibration) else "global"
            warnings.warn(
                f"GroupedRecalibrator: groups {unseen[:10]}{'...' if len(unseen) > 10 else ''} "
                f"were not in fit; they get the {kind} recalibration",
                RuntimeWarning,
                stacklevel=4,
            )
        return codes, unseen

    def _plan(
        self, forecast: Predictive, *, groups: Any = None, features: Any = None, **_kwargs: Any
    ) -> _Plan:
        codes, _ = self._codes(forecast, groups, warn=True)
        labels = self._fitted_labels()
        present = torch.unique(codes).tolist()
        plans: list[_Plan] = []
        slot: dict[int, int] = {}  # id(recalibrator) -> position in plans
        choice = torch.zeros(forecast.batch_shape, dtype=torch.int64, device=forecast.device)
        for code in present:
            recal = self.recalibrators[labels[code]] if code >= 0 else self._default
            key = id(recal)
            if key not in slot:
                slot[key] = len(plans)
                plans.append(_plan_of(recal, forecast, features=features, groups=groups))
            choice = torch.where(codes == code, slot[key], choice)
        if len(plans) == 1:
            return plans[0]
        return _merge_plans(plans, choice)

    def __repr__(self) -> str:
        state = (
            "unfitted"
            if self.labels is None
            else f"{len(self.labels)} groups, fallback_groups={self.fallback_groups}"
        )
        axis = f"axis={self.axis}, " if self.axis is not None else ""
        return f"GroupedRecalibrator({type(self.prototype).__name__}, {axis}{state})"
