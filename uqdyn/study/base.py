"""Containers shared by the studies: one model's forecasts and one study's data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from uqdyn._progress import Progress, stage
from uqdyn.predictive import Predictive

from ._interrupt import checkpoint

__all__ = ["ModelForecast", "StudyData", "generator", "forecast_models", "each"]

T = TypeVar("T")

#: What a study's model function returns: validation and test predictives and a description.
Forecasts = tuple[Predictive, Predictive, str]


@dataclass
class ModelForecast:
    """The forecasts of one model on the validation and test cases.

    Attributes
    ----------
    name:
        Model name as in the configuration (``"cnp"``, ``"gp"``, ...).
    valid, test:
        Predictives whose ``batch_shape`` is that of :attr:`StudyData.obs_valid` and
        :attr:`StudyData.obs_test`: ``(cases, leads, *space)``.
    fit_seconds:
        Wall time of fitting and forecasting.
    description:
        One line for the report.
    """

    name: str
    valid: Predictive
    test: Predictive
    fit_seconds: float
    description: str = ""


@dataclass
class StudyData:
    """What a study hands to the evaluation, the figures and the report.

    Attributes
    ----------
    obs_valid, obs_test:
        Verifying observations, ``(cases, leads, *space)``: ``(cases, leads, dim)`` for
        vector states (``kind="vector"``) or ``(cases, leads, height, width)`` for fields
        (``kind="field"``).
    dims:
        Dim names of the obs axes, e.g. ``("case", "lead_time", "y", "x")``.
    coords:
        Coordinates of the non-case dims (``lead_time``, ``y``, ``x``, ``component``).
    forecasts:
        One :class:`ModelForecast` per model, in report order.
    variable, long_name, units:
        The predicted quantity.
    context_times, context_test:
        For fan charts: times ``(Tc,)`` and context observations ``(cases, Tc, *space)`` of
        the test cases (``None`` where not meaningful).
    summary:
        ``{setting: value}`` lines describing the data for the report.
    references:
        Names of the models that are reference forecasts (climatology, persistence, ...):
        every model's CRPS skill against each is reported with its confidence interval.
    case_block:
        Cases per bootstrap block for the confidence intervals: 1 for independent cases
        (simulated trajectories), 0 for an automatic block length (time-ordered forecast
        origins, whose errors are autocorrelated).
    case_values:
        Coordinate values of the case axis (e.g. the origin times); default ``0, 1, ...``.
    valid_times:
        ``(cases, leads)`` the times the test targets verify at (forecast studies).
    component_names:
        Names of the state components of vector states (``("angle", "velocity")``), for
        figures and files; default the component index.
    observed_points:
        For inverse problems: ``(cases, *space)`` booleans of the observed points of the test
        cases, marked on the field maps.
    """

    obs_valid: Tensor
    obs_test: Tensor
    dims: tuple[str, ...]
    coords: dict[str, np.ndarray]
    forecasts: list[ModelForecast]
    kind: str
    variable: str
    long_name: str
    units: str = "1"
    title: str = ""
    context_times: np.ndarray | None = None
    context_test: Tensor | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    case_block: int = 1
    case_values: np.ndarray | None = None
    valid_times: np.ndarray | None = None
    component_names: tuple[str, ...] | None = None
    observed_points: Tensor | None = None

    @property
    def lead_dim(self) -> str:
        """Name of the second axis (lead time, or observation time for inverse problems)."""
        return self.dims[1]


def generator(seed: int, offset: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, offset)``; one offset per random stream."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(offset))


def forecast_models(
    names: Sequence[str],
    models: Mapping[str, Callable[[], Forecasts]],
    *,
    cases: str,
    progress: bool,
) -> list[ModelForecast]:
    """Fit and forecast the models ``names`` in order, each by its function in ``models``.

    Every model reports a line when it starts (``model 2/5 gp: 16 validation + 16 test
    cases``) and when it is done (with its wall time) when ``progress`` is on.
    """
    out: list[ModelForecast] = []
    for i, name in enumerate(names):
        if name not in models:  # names are validated by load_config
            raise ValueError(f"model {name!r} is not available; expected one of {sorted(models)}")
        checkpoint()
        if progress:
            stage(f"model {i + 1}/{len(names)} {name}: {cases}")
        start = time.perf_counter()
        pv, pt, desc = models[name]()
        checkpoint()
        seconds = time.perf_counter() - start
        if progress:
            stage(f"model {i + 1}/{len(names)} {name}: done in {seconds:.1f} s")
        out.append(ModelForecast(name, pv, pt, seconds, desc))
    return out


def each(items: Sequence[T], desc: str, *, enabled: bool) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`~uqdyn._progress.Progress` report named ``desc``."""
    with Progress(len(items), desc, enabled=enabled) as bar:
        for item in items:
            checkpoint()
            yield item
            bar.update()
