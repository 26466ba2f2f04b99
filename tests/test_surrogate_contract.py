"""The DA surrogate models run the shared model contract (tests/_contract.py)."""

from __future__ import annotations

from typing import ClassVar

import torch
from _contract import ModelContract
from torch import Tensor, nn

import uqdyn
from uqdyn.models.surrogate import DiagonalNormalError, PeriodicConvTendency
from uqdyn.predictive import Ensemble, Normal


class TestPeriodicConvTendencyContract(ModelContract):
    predictive_type: ClassVar[type] = Ensemble
    padding_reason: ClassVar[str] = "pairs of complete states: nothing is masked"

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return PeriodicConvTendency(8, width=4, dt=0.05).to(dtype)

    def batch(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(2)
        x0 = torch.randn(6, 8, generator=g, dtype=dtype)
        return x0, x0 + 0.05 * (torch.roll(x0, 1, 1) - x0)

    def padded(self, batch: tuple[Tensor, Tensor]) -> None:
        return None

    def non_finite(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x0, x1 = batch[0].clone(), batch[1]
        x0[1, 3] = float("nan")
        return x0, x1


class TestDiagonalNormalErrorContract(ModelContract):
    predictive_type: ClassVar[type] = Normal
    padding_reason: ClassVar[str] = "residual samples are complete: nothing is masked"

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return DiagonalNormalError(5, 0.05, sigma=0.2).to(dtype)

    def batch(self, dtype: torch.dtype = torch.float32) -> Tensor:
        g = torch.Generator().manual_seed(3)
        return 0.1 + 0.3 * torch.randn(32, 5, generator=g, dtype=dtype)

    def padded(self, batch: Tensor) -> None:
        return None

    def non_finite(self, batch: Tensor) -> Tensor:
        bad = batch.clone()
        bad[0, 0] = float("inf")
        return bad


def test_the_pair_spacing_survives_dtype_casts_exactly() -> None:
    model = PeriodicConvTendency(8, width=4, dt=0.05)
    for cast in (lambda m: m.float(), lambda m: m.half(), lambda m: m.to(torch.float32)):
        cast(model)
        assert model.pair_dt.dtype == torch.float64 and float(model.pair_dt) == 0.05
    assert model.local.weight.dtype == torch.float32
    state = model.state_dict()
    assert state["pair_dt"].dtype == torch.float64
