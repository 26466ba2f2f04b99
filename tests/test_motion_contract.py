"""The motion-field forecasters run the shared model contract (tests/_contract.py)."""

from __future__ import annotations

from typing import ClassVar

import torch
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.data.motion import random_smooth_field
from uqdyn.models.motion import ConvForecaster, ForecasterEnsemble, MotionFieldForecaster
from uqdyn.predictive import Ensemble, Normal

Batch = tuple[torch.Tensor, torch.Tensor]


def _windows(dtype: torch.dtype) -> Batch:
    """Fields moving one cell along x per frame: 2 history and 2 target frames, 8 x 8."""
    start = random_smooth_field(
        3, (8, 8), max_wavenumber=2, generator=torch.Generator().manual_seed(1)
    )
    frames = torch.stack([start.roll(t, dims=-1) for t in range(4)], dim=1).to(dtype)
    return frames[:, :2], frames[:, 2:]


class _FrameContract(ModelContract):
    """Frame forecasters: a batch is (history, targets) of complete frames."""

    padding_reason: ClassVar[str] = (
        "frames are complete periodic grids: the forecasters take no mask, so nothing is "
        "padded (non-finite history frames are refused, NaN targets are not scored)"
    )

    def batch(self, dtype: torch.dtype = torch.float32) -> Batch:
        return _windows(dtype)

    def padded(self, batch: Batch) -> None:
        return None

    def non_finite(self, batch: Batch) -> Batch:
        history = batch[0].clone()
        history[0, 1, 0, 3, 4] = float("nan")
        return history, batch[1]


def _motion(seed: int) -> MotionFieldForecaster:
    with uqdyn.seeded(seed):
        return MotionFieldForecaster(
            1, 2, width=4, depth=1, divergence_weight=0.1, smoothness_weight=0.01
        )


class TestMotionFieldForecasterContract(_FrameContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return _motion(0).to(dtype)


class TestConvForecasterContract(_FrameContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return ConvForecaster(1, 2, width=4, depth=1, reconstruction="charbonnier").to(dtype)


class TestForecasterEnsembleContract(_FrameContract):
    predictive_type: ClassVar[type] = Ensemble

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return ForecasterEnsemble([_motion(0), _motion(1)]).to(dtype)
