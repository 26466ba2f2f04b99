"""Containers shared by the studies: one model's forecasts and one study's data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn.predictive import Predictive

__all__ = ["ModelForecast", "StudyData", "generator"]


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

    @property
    def lead_dim(self) -> str:
        """Name of the second axis (lead time, or observation time for inverse problems)."""
        return self.dims[1]


def generator(seed: int, offset: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, offset)``; one offset per random stream."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(offset))
