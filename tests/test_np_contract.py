"""The neural-process family runs the shared model contract (tests/_contract.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.data import Task
from uqdyn.models.neural_process import (
    CNP,
    AttentiveCNP,
    AttentiveNP,
    ConvCNP,
    ConvCNPEnsemble,
    GridTask,
    LatentNP,
    NeuralODEProcess,
    OffGridConvCNP,
)
from uqdyn.predictive import GaussianMixture, Normal


def _point_task(dtype: torch.dtype, x_dim: int = 1, y_dim: int = 2) -> Task:
    g = torch.Generator().manual_seed(3)
    b, nc, nt = 3, 6, 5
    xc = torch.rand(b, nc, x_dim, generator=g, dtype=dtype)
    xt = torch.rand(b, nt, x_dim, generator=g, dtype=dtype)
    yc = torch.sin(4 * xc).expand(-1, -1, y_dim) + 0.1 * torch.randn(
        b, nc, y_dim, generator=g, dtype=dtype
    )
    yt = torch.sin(4 * xt).expand(-1, -1, y_dim).clone()
    mc = torch.ones(b, nc, dtype=torch.bool)
    mc[1, 4:] = False  # a task with fewer context points: its padding holds zeros
    xc[1, 4:] = 0.0
    yc[1, 4:] = 0.0
    mt = torch.ones(b, nt, dtype=torch.bool)
    mt[2, 3:] = False
    return Task(xc, yc, mc, xt, yt, mt)


class _PointSetContract(ModelContract):
    """Point-set NPs: padding is extra masked context points holding arbitrary values."""

    def batch(self, dtype: torch.dtype = torch.float32) -> Task:
        return _point_task(dtype)

    def padded(self, batch: Task) -> Task:
        g = torch.Generator().manual_seed(11)
        b, _, _ = batch.x_context.shape
        extra = 3
        dtype = batch.x_context.dtype
        junk_x = 5 + 10 * torch.rand(b, extra, batch.x_context.shape[-1], generator=g, dtype=dtype)
        junk_y = -7 + 20 * torch.rand(b, extra, batch.y_context.shape[-1], generator=g, dtype=dtype)
        x = batch.x_context.clone()
        y = batch.y_context.clone()
        x[~batch.mask_context] = 9.0  # existing padding gets other arbitrary values too
        y[~batch.mask_context] = -9.0
        return replace(
            batch,
            x_context=torch.cat([x, junk_x], dim=1),
            y_context=torch.cat([y, junk_y], dim=1),
            mask_context=torch.cat(
                [batch.mask_context, torch.zeros(b, extra, dtype=torch.bool)], dim=1
            ),
        )

    def non_finite(self, batch: Task) -> Task:
        y = batch.y_context.clone()
        y[0, 0, 0] = float("nan")
        return replace(batch, y_context=y)


class _LatentContract(_PointSetContract):
    predictive_type: ClassVar[type] = GaussianMixture

    def prediction(self, model: nn.Module, batch: Any) -> Any:
        return model.predict(batch, generator=torch.Generator().manual_seed(5))  # type: ignore[operator]


class TestCNPContract(_PointSetContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return CNP(1, 2, width=16).to(dtype)


class TestAttentiveCNPContract(_PointSetContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return AttentiveCNP(1, 2, width=16, num_heads=2, self_attention=1).to(dtype)


class TestLatentNPContract(_LatentContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return LatentNP(1, 2, width=16, z_dim=4, num_samples=4).to(dtype)


class TestAttentiveNPContract(_LatentContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return AttentiveNP(
                1, 2, width=16, z_dim=4, num_heads=2, self_attention=1, num_samples=4
            ).to(dtype)


class TestNeuralODEProcessContract(_LatentContract):
    fit_steps: ClassVar[int] = 2

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            model = NeuralODEProcess(
                2, latent_dim=3, control_dim=2, width=8, method="rk4",
                options={"step_size": 0.25}, num_samples=3,
            )  # fmt: skip
            return model.to(dtype)


class TestOffGridConvCNPContract(_PointSetContract):
    predictive_type: ClassVar[type] = Normal
    atol: ClassVar[float] = 1e-9

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return OffGridConvCNP(2, points_per_unit=16, width=8, depth=2).to(dtype)

    def padded(self, batch: Task) -> Task:
        # Padding of an off-grid ConvCNP must stay inside the data range (it would otherwise
        # stretch the internal grid, which the model documents); any values there are fine.
        padded = super().padded(batch)
        x = padded.x_context.clone()
        x[~padded.mask_context] = 0.5
        return replace(padded, x_context=x)

    def non_finite(self, batch: Task) -> Task:
        # NaN in a channel of a real point means "unobserved there" for this model; an
        # infinite value is an error.
        y = batch.y_context.clone()
        y[0, 0, 0] = float("inf")
        return replace(batch, y_context=y)


def _grid_task(dtype: torch.dtype) -> GridTask:
    g = torch.Generator().manual_seed(4)
    field = torch.randn(2, 1, 8, 8, generator=g, dtype=dtype).cumsum(-1).cumsum(-2) / 8
    mask = torch.rand(2, 8, 8, generator=g) < 0.6
    context = torch.where(mask.unsqueeze(1), field, torch.full_like(field, float("nan")))
    return GridTask(context, mask, field, None)


class _GridContract(ModelContract):
    """Gridded ConvCNPs: padding is unobserved context entries holding arbitrary values."""

    def batch(self, dtype: torch.dtype = torch.float32) -> GridTask:
        return _grid_task(dtype)

    def padded(self, batch: GridTask) -> GridTask:
        assert batch.mask_context is not None
        junk = torch.full_like(batch.y_context, 123.0)
        unseen = ~batch.mask_context.unsqueeze(1)
        return replace(batch, y_context=torch.where(unseen, junk, batch.y_context))

    def non_finite(self, batch: GridTask) -> GridTask:
        assert batch.mask_context is not None
        y = batch.y_context.clone()
        i, j = (batch.mask_context[0]).nonzero()[0].tolist()
        y[0, 0, i, j] = float("inf")
        return replace(batch, y_context=y)


class TestConvCNPContract(_GridContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return ConvCNP(1, 1, width=8, depth=2, seed=0).to(dtype)


class TestConvCNPEnsembleContract(_GridContract):
    predictive_type: ClassVar[type] = GaussianMixture

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return ConvCNPEnsemble(1, 1, members=2, width=8, depth=2, seed=0).to(dtype)
