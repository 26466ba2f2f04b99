"""Cross-validated choice of a recalibration: raw, global, local or grouped, by held-out CRPS."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn.predictive import Predictive

from ._common import (
    _as_mask,
    _check_finite_at,
    _forecast_only,
    _forecast_with_obs,
    _n_points_check,
    keeps_labels,
)
from ._labels import _as_features, _fit_groups, _label_array, _normalize_axis
from ._plan import _apply_plan
from ._subset import _take_along
from .grouped import GroupedRecalibrator, _check_composable, _fit_recalibrator, _plan_of
from .local import LocalIsotonicRecalibrator, LocalVarianceScaling
from .recalibrate import IsotonicRecalibrator, NoRecalibration, VarianceScaling

__all__ = ["select_recalibration", "RecalibrationSelection", "GroupChoice", "CANDIDATES"]

CANDIDATES = (
    "raw",
    "variance_scaling",
    "isotonic",
    "local_variance_scaling",
    "local_isotonic",
    "grouped_variance_scaling",
    "grouped_isotonic",
)
"""Names of the built-in candidates of :func:`select_recalibration` (the grouped ones need
``groups=`` or ``group_axis=``)."""

_DEFAULT = ("raw", "variance_scaling", "isotonic", "local_variance_scaling", "local_isotonic")
_DEFAULT_GROUPED = (
    "raw",
    "variance_scaling",
    "isotonic",
    "grouped_variance_scaling",
    "grouped_isotonic",
)


@dataclass(frozen=True)
class GroupChoice:
    """The cross-validated choice for one group (or for all points without groups).

    Attributes
    ----------
    group:
        The group label (``None`` without groups).
    chosen:
        Name of the chosen candidate (``"raw"`` when no candidate improved significantly).
    cv_crps:
        ``{candidate: mean held-out CRPS over the group's points}``.
    improvement:
        ``{candidate: CV CRPS of raw minus CV CRPS of the candidate}`` (positive: better).
    standard_error:
        ``{candidate: standard error of the improvement}``, clustered by case.
    n_points:
        Validation points of the group.
    n_cases:
        Validation cases (entries of the case axis) with points in the group.
    """

    group: Hashable | None
    chosen: str
    cv_crps: dict[str, float]
    improvement: dict[str, float]
    standard_error: dict[str, float]
    n_points: int
    n_cases: int

    @property
    def raw_crps(self) -> float:
        """Held-out CRPS of the raw forecast."""
        return self.cv_crps["raw"]

    @property
    def chosen_crps(self) -> float:
        """Held-out CRPS of the chosen candidate."""
        return self.cv_crps[self.chosen]

    @property
    def relative_improvement(self) -> float:
        """``1 - chosen_crps / raw_crps`` (0 when raw is kept)."""
        raw = self.raw_crps
        return 0.0 if raw == 0 or not math.isfinite(raw) else 1.0 - self.chosen_crps / raw


@dataclass(frozen=True)
class RecalibrationSelection:
    """Result of :func:`select_recalibration`.

    Attributes
    ----------
    recalibrator:
        The chosen recalibration, fitted on the whole validation set: a
        :class:`~uqdyn.calibration.NoRecalibration`, a fitted candidate, or (with groups) a
        :class:`~uqdyn.calibration.GroupedRecalibrator` holding each group's choice.
    choices:
        One :class:`GroupChoice` per group, in label order (one with ``group=None``
        without groups).
    candidates:
        Names of the candidates compared (``"raw"`` first).
    folds:
        Number of folds used (at most the number of cases).
    axis:
        The case axis the folds split.
    group_axis:
        The axis grouped by (``None`` for label groups or no groups).
    se_rule:
        The significance multiple of the rule (see :func:`select_recalibration`).
    """

    recalibrator: Any
    choices: list[GroupChoice]
    candidates: tuple[str, ...]
    folds: int
    axis: int
    group_axis: int | None
    se_rule: float
    _grouped_by_labels: bool = field(default=False, repr=False)

    @property
    def chosen(self) -> dict[Hashable | None, str]:
        """``{group: chosen candidate}`` (key ``None`` without groups)."""
        return {c.group: c.chosen for c in self.choices}

    @keeps_labels
    def transform(
        self,
        forecast: Any,
        *,
        groups: Any = None,
        features: Any = None,
        member_dim: int | str | None = None,
    ) -> Predictive:
        """Apply the chosen recalibration to a new forecast.

        Parameters
        ----------
        forecast:
            A Predictive, or an ensemble array with member axis ``member_dim``.
        groups:
            The new forecast's group labels when the selection used ``groups=``.
        features:
            Features of the new forecast when a chosen candidate is local with user features.
        member_dim:
            Member axis when ``forecast`` is an array.

        Returns
        -------
        One Predictive of the forecast's ``batch_shape`` (see
        :meth:`GroupedRecalibrator.transform` for its type).
        """
        predictive, _ = _forecast_only(forecast, member_dim)
        if self._grouped_by_labels and groups is None:
            raise ValueError(
                "this selection was made per group of groups= labels; expected groups= for "
                "the new forecast"
            )
        plan = _plan_of(self.recalibrator, predictive, features=features, groups=groups)
        return _apply_plan(predictive, plan)

    def summary(self) -> str:
        """A plain-text table: per group the choice, its held-out CRPS and raw's."""
        head = f"{'group':>8}  {'chosen':<24} {'CV CRPS':>10} {'raw':>10} {'gain':>7} {'+-se':>7}"
        lines = [head]
        for c in self.choices:
            se = c.standard_error.get(c.chosen, 0.0)
            gain = c.improvement.get(c.chosen, 0.0)
            lines.append(
                f"{c.group!s:>8}  {c.chosen:<24} {c.chosen_crps:10.4g} {c.raw_crps:10.4g} "
                f"{gain:7.2g} {se:7.2g}"
            )
        return "\n".join(lines)

    def to_xarray(self, group_dim: str = "group") -> Any:
        """The CV record as an ``xarray.Dataset``.

        Returns
        -------
        Dataset with ``cv_crps``, ``improvement`` and ``standard_error`` of dims
        ``(group_dim, "candidate")``, ``chosen`` (strings), ``n_points`` and ``n_cases`` of
        dim ``group_dim``, coordinates the group labels and candidate names.
        """
        import xarray as xr

        names = list(self.candidates)

        def table(attr: str) -> np.ndarray:
            return np.array(
                [[getattr(c, attr).get(n, np.nan) for n in names] for c in self.choices],
                dtype=float,
            )

        labels = [("all" if c.group is None else c.group) for c in self.choices]
        return xr.Dataset(
            {
                "cv_crps": ((group_dim, "candidate"), table("cv_crps")),
                "improvement": ((group_dim, "candidate"), table("improvement")),
                "standard_error": ((group_dim, "candidate"), table("standard_error")),
                "chosen": ((group_dim,), np.array([c.chosen for c in self.choices])),
                "n_points": ((group_dim,), np.array([c.n_points for c in self.choices])),
                "n_cases": ((group_dim,), np.array([c.n_cases for c in self.choices])),
            },
            coords={group_dim: labels, "candidate": names},
            attrs={"folds": self.folds, "case_axis": self.axis, "se_rule": self.se_rule},
        )


def _builtin(name: str, grouped: bool, group_axis: int | None, min_points: int) -> Any:
    if name == "raw":
        return NoRecalibration()
    if name == "variance_scaling":
        return VarianceScaling()
    if name == "isotonic":
        return IsotonicRecalibrator()
    if name == "local_variance_scaling":
        return LocalVarianceScaling(min_points=min_points)
    if name == "local_isotonic":
        return LocalIsotonicRecalibrator(min_points=min_points)
    if name in ("grouped_variance_scaling", "grouped_isotonic"):
        if not grouped:
            raise ValueError(
                f"candidate {name!r} needs groups; expected groups= or group_axis= in "
                "select_recalibration"
            )
        inner = VarianceScaling() if name == "grouped_variance_scaling" else IsotonicRecalibrator()
        return GroupedRecalibrator(inner, axis=group_axis, min_points=min_points)
    raise ValueError(f"unknown candidate {name!r}; expected one of {CANDIDATES} or a mapping")


def _candidates(
    candidates: Any, grouped: bool, group_axis: int | None, min_points: int
) -> dict[str, Any]:
    if candidates is None:
        candidates = _DEFAULT_GROUPED if grouped else _DEFAULT
    if isinstance(candidates, str):
        raise TypeError(
            f"candidates={candidates!r} is a string; expected a sequence of names or a mapping"
        )
    out: dict[str, Any] = {}
    if isinstance(candidates, Mapping):
        for name, proto in candidates.items():
            if not isinstance(name, str):
                raise TypeError(f"candidate name {name!r}; expected strings")
            if proto is None:
                proto = _builtin(name, grouped, group_axis, min_points)
            _check_composable(proto, f"candidates[{name!r}]")
            out[name] = proto
    else:
        for name in candidates:
            if not isinstance(name, str):
                raise TypeError(
                    f"candidates holds a {type(name).__name__}; expected names, or a mapping "
                    "{name: recalibrator}"
                )
            out[name] = _builtin(name, grouped, group_axis, min_points)
    if "raw" in out and not isinstance(out["raw"], NoRecalibration):
        raise ValueError("candidate 'raw' is reserved for NoRecalibration (the baseline)")
    out = {"raw": NoRecalibration(), **{k: v for k, v in out.items() if k != "raw"}}
    if len(out) < 2:
        raise ValueError("candidates holds only 'raw'; expected at least one recalibration")
    return out


def _per_group_case(
    values: Tensor, keep: Tensor, codes: Tensor, cases: Tensor, n_groups: int, n_cases: int
) -> Tensor:
    """Sums of ``values`` at kept points per (group, case): ``(G, C)`` float64."""
    flat = (codes * n_cases + cases)[keep]
    out = torch.zeros(n_groups * n_cases, dtype=torch.float64)
    out.index_add_(0, flat.cpu(), values[keep].detach().double().cpu())
    return out.reshape(n_groups, n_cases)


def select_recalibration(
    obs: Any,
    forecast: Any,
    candidates: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    axis: int = 0,
    folds: int = 5,
    groups: Any = None,
    group_axis: int | None = None,
    features: Any = None,
    member_dim: int | str | None = None,
    mask: Any = None,
    se_rule: float = 1.0,
    min_points: int = 50,
    generator: torch.Generator | None = None,
) -> RecalibrationSelection:
    r"""Choose between the raw forecast and recalibrations by cross-validated CRPS.

    The validation cases (the entries of batch axis ``axis``, e.g. the forecast origins of
    ``(cases, leads, *space)`` forecasts) are split into ``folds`` contiguous blocks, so
    that the correlated points of one case, and neighbouring cases, stay in one fold. For
    each fold every candidate is fitted on the other folds and scored by the mean CRPS of
    the held-out points; the cross-validated CRPS of a candidate is the mean over all
    held-out points. Candidates are fitted as given (a plain recalibrator on all points, a
    grouped one per group), so raw, global, local and grouped recalibrations compete on
    equal terms.

    A candidate replaces the raw forecast only if it improves significantly: with
    :math:`d_c = \overline{\mathrm{CRPS}}_{raw} - \overline{\mathrm{CRPS}}_{c}` and its
    standard error clustered by case,
    :math:`\mathrm{se}(d_c) = \sqrt{\tfrac{C}{C-1}\sum_i (D_i - d_c n_i)^2} / \sum_i n_i`
    (:math:`D_i` the summed CRPS difference of case :math:`i`, :math:`n_i` its points,
    :math:`C` the cases), candidates with :math:`d_c > ` ``se_rule`` :math:`\cdot
    \mathrm{se}(d_c)` qualify and the one with the lowest CV CRPS is chosen; if none
    qualifies, ``"raw"``. ``se_rule=0`` takes any improvement.

    With ``groups`` or ``group_axis`` the choice is made per group (e.g. per lead time):
    CV CRPS, improvements and standard errors are computed on each group's held-out points
    and each group keeps its own choice, so a recalibration is kept only where it improves
    held-out CRPS. The returned recalibrator applies each group's choice to its points.

    Built-in candidates (names): ``"raw"`` (always included, the baseline),
    ``"variance_scaling"``, ``"isotonic"``, ``"local_variance_scaling"``,
    ``"local_isotonic"`` (cells of the forecast's spread, or of ``features``), and with
    groups ``"grouped_variance_scaling"``, ``"grouped_isotonic"`` (one fit per group,
    ``min_points`` fallback to the global fit). Defaults: raw, variance scaling, isotonic and
    the two local ones; with groups raw, variance scaling, isotonic and the two grouped
    ones. Custom candidates: a mapping ``{name: recalibrator}`` (e.g.
    ``{"shrunk": GroupedRecalibrator(IsotonicRecalibrator(), axis=1, shrinkage=200)}``;
    a value ``None`` means the built-in of that name).

    Parameters
    ----------
    obs:
        Validation observations, shape ``batch_shape``.
    forecast:
        A Predictive, or an ensemble array with member axis ``member_dim``.
    candidates:
        Names of built-in candidates, or ``{name: recalibrator}``.
    axis:
        The case axis split into folds.
    folds:
        Number of folds (at most the number of cases; at least 2).
    groups:
        Group labels broadcastable to ``batch_shape`` for a per-group choice.
    group_axis:
        Group by position along this batch axis instead (e.g. the lead axis).
    features:
        Features for local candidates, broadcastable to ``batch_shape`` or
        ``(*batch_shape, F)``.
    member_dim:
        Member axis when ``forecast`` is an array.
    mask:
        Boolean, broadcastable to ``batch_shape``; only ``True`` points are used.
    se_rule:
        Required improvement in standard errors (>= 0).
    min_points:
        ``min_points`` of the built-in local and grouped candidates.
    generator:
        Random generator for the randomized PIT of ensembles.

    Returns
    -------
    :class:`RecalibrationSelection`: the chosen recalibration fitted on all validation
    points (``.recalibrator``, applied with ``.transform``) and the CV record per group
    (``.choices``, ``.chosen``, ``.summary()``, ``.to_xarray()``).

    References
    ----------
    Hastie, Tibshirani & Friedman (2009), The Elements of Statistical Learning, sec. 7.10
    (cross-validation and the one-standard-error rule).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import select_recalibration
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.tensor([1.0, 1.0, 3.0]).reshape(3, 1) * torch.randn(30, 3, 50, generator=g)
    >>> forecast = Normal(torch.zeros(30, 3, 50), torch.ones(30, 3, 50))
    >>> sel = select_recalibration(y, forecast, ["variance_scaling"], group_axis=1)
    >>> sel.chosen  # lead 2 is under-dispersed
    {0: 'raw', 1: 'raw', 2: 'variance_scaling'}
    """
    obs_t, predictive, restore = _forecast_with_obs(obs, forecast, member_dim)
    shape = predictive.batch_shape
    if obs_t.shape != shape:
        raise ValueError(
            f"obs has shape {tuple(obs_t.shape)} after broadcasting but the forecast has "
            f"batch_shape {tuple(shape)}; expected obs of at most that shape"
        )
    if len(shape) == 0:
        raise ValueError("the forecast has batch_shape (); expected a case axis to split")
    device = obs_t.device
    keep = _as_mask(mask, shape, device, restore)
    _n_points_check(keep, ("obs",))
    _check_finite_at(obs_t, keep, "obs")
    a = _normalize_axis(axis, len(shape), "axis")
    folds = as_int(folds, "folds", minimum=2)
    se_rule = as_float(se_rule, "se_rule", nonnegative=True, finite=False)
    n_cases = shape[a]
    if n_cases < 2:
        raise ValueError(
            f"axis={axis} has {n_cases} case(s); expected at least 2 cases to cross-validate"
        )
    grouped = groups is not None or group_axis is not None
    ga: int | None = None
    if group_axis is not None:
        if groups is not None:
            raise ValueError("expected one of groups= and group_axis=, not both")
        ga = _normalize_axis(group_axis, len(shape), "group_axis")
        if ga == a:
            raise ValueError(
                f"group_axis={group_axis} is the case axis axis={axis}; expected another axis"
            )
    protos = _candidates(candidates, grouped, ga, min_points)
    if grouped:
        codes, labels = _fit_groups(groups, ga, shape, device)
    else:
        codes = torch.zeros(shape, dtype=torch.int64, device=device)
        labels = [None]
    label_arr = None if groups is None else _label_array(groups, shape)
    f = None if features is None else _as_features(features, shape, device)
    view = [1] * len(shape)
    view[a] = n_cases
    cases = torch.arange(n_cases, device=device).reshape(view).expand(shape)
    n_folds = min(folds, n_cases)
    blocks = np.array_split(np.arange(n_cases), n_folds)
    n_groups = len(labels)
    sums = {name: torch.zeros(n_groups, n_cases, dtype=torch.float64) for name in protos}
    counts = torch.zeros(n_groups, n_cases, dtype=torch.float64)

    def take(t: Tensor, idx: Tensor) -> Tensor:
        return t.index_select(a, idx)

    for block in blocks:
        test = torch.as_tensor(block, dtype=torch.int64, device=device)
        train = torch.as_tensor(
            np.setdiff1d(np.arange(n_cases), block), dtype=torch.int64, device=device
        )
        if not bool(keep.index_select(a, train).any()):
            continue
        part: dict[str, dict[str, Any]] = {}
        for name_, idx in (("train", train), ("test", test)):
            idx_np = idx.cpu().numpy()
            part[name_] = {
                "obs": take(obs_t, idx),
                "forecast": _take_along(predictive, a, idx),
                "mask": take(keep, idx),
                "features": None if f is None else take(f, idx),
                "groups": None if label_arr is None else np.take(label_arr, idx_np, axis=a),
            }
        tr, te = part["train"], part["test"]
        counts += _per_group_case(
            torch.ones(te["mask"].shape, dtype=torch.float64, device=device),
            te["mask"],
            take(codes, test),
            take(cases, test),
            n_groups,
            n_cases,
        )
        for name, proto in protos.items():
            recal = copy.deepcopy(proto)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*were not in fit.*")
                _fit_recalibrator(
                    recal,
                    tr["obs"],
                    tr["forecast"],
                    mask=tr["mask"],
                    features=tr["features"],
                    groups=tr["groups"],
                    generator=generator,
                )
                plan = _plan_of(recal, te["forecast"], features=te["features"], groups=te["groups"])
                out = _apply_plan(te["forecast"], plan)
                with torch.no_grad():
                    score = out.crps(te["obs"])
            score = torch.where(te["mask"], score, torch.zeros((), dtype=score.dtype))
            sums[name] += _per_group_case(
                score, te["mask"], take(codes, test), take(cases, test), n_groups, n_cases
            )

    choices: list[GroupChoice] = []
    for g, label in enumerate(labels):
        n_i = counts[g]
        total = float(n_i.sum())
        active = n_i > 0
        n_active = int(active.sum())
        cv = {name: (float(sums[name][g].sum()) / total if total else math.nan) for name in protos}
        gain: dict[str, float] = {}
        se: dict[str, float] = {}
        for name in protos:
            d_i = sums["raw"][g] - sums[name][g]
            mean_d = float(d_i.sum()) / total if total else math.nan
            gain[name] = mean_d
            if name == "raw":
                se[name] = 0.0
            elif n_active < 2:
                se[name] = math.inf
            else:
                resid = (d_i - mean_d * n_i)[active]
                var = n_active / (n_active - 1) * float(resid.square().sum())
                se[name] = math.sqrt(var) / total
        qualified = [
            name
            for name in protos
            if name != "raw" and gain[name] > 0 and gain[name] > se_rule * se[name]
        ]
        chosen = min(qualified, key=lambda n: cv[n]) if qualified else "raw"
        choices.append(
            GroupChoice(
                group=label,
                chosen=chosen,
                cv_crps=cv,
                improvement=gain,
                standard_error=se,
                n_points=int(total),
                n_cases=n_active,
            )
        )

    fitted: dict[str, Any] = {}
    for name in dict.fromkeys(c.chosen for c in choices):
        fitted[name] = _fit_recalibrator(
            copy.deepcopy(protos[name]),
            obs_t,
            predictive,
            mask=keep,
            features=f,
            groups=label_arr,
            generator=generator,
        )
    if grouped:
        recalibrator: Any = GroupedRecalibrator.from_fitted(
            {c.group: fitted[c.chosen] for c in choices}, axis=ga
        )
    else:
        recalibrator = fitted[choices[0].chosen]
    return RecalibrationSelection(
        recalibrator=recalibrator,
        choices=choices,
        candidates=tuple(protos),
        folds=n_folds,
        axis=a,
        group_axis=ga,
        se_rule=float(se_rule),
        _grouped_by_labels=groups is not None,
    )
