"""The Gaussian-process family runs the shared model contract (tests/_contract.py).

Batches: ``(x, y, mask)`` point sets for the exact, multitask, physics-mean and sparse GPs
(``mask`` False marks padding and unobserved rows, which hold arbitrary values), ``(axes,
values)`` complete grids for the Kronecker grid GP, and :class:`uqdyn.data.Task` batches
for the context/target GPs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import pytest
import torch
from _contract import ModelContract
from torch import Tensor, nn

import uqdyn
from uqdyn.data import Task
from uqdyn.models.gp import ContextGP, ExactGP, GridGP, MetaGP, MultitaskGP, PhysicsMean, SparseGP
from uqdyn.physics import DampedPendulum
from uqdyn.predictive import Normal
from uqdyn.train import Trainable, Validatable

PointBatch = tuple[Tensor, Tensor, Tensor]


def _points(dtype: torch.dtype, y_dim: int = 1, n: int = 14) -> PointBatch:
    g = torch.Generator().manual_seed(3)
    x = 5 * torch.rand(n, 1, generator=g, dtype=dtype)
    y = torch.cat([torch.cos(x + j) * torch.exp(-0.1 * x) for j in range(y_dim)], dim=-1)
    y = y + 0.05 * torch.randn(n, y_dim, generator=g, dtype=dtype)
    mask = torch.ones(n, dtype=torch.bool)
    mask[[4, 9]] = False  # two unobserved rows: NaN outputs, arbitrary inputs
    y[~mask] = float("nan")
    x[~mask] = -3.0
    return x, y, mask


class _PointContract(ModelContract):
    """Point GPs: padding is extra rows with mask False holding arbitrary finite values."""

    predictive_type: ClassVar[type] = Normal
    y_dim: ClassVar[int] = 1

    def batch(self, dtype: torch.dtype = torch.float32) -> PointBatch:
        return _points(dtype, self.y_dim)

    def padded(self, batch: PointBatch) -> PointBatch:
        x, y, mask = (t.clone() for t in batch)
        g = torch.Generator().manual_seed(11)
        extra = 4
        junk_x = 20 * torch.rand(extra, x.shape[1], generator=g, dtype=x.dtype) - 10
        junk_y = 50 * torch.rand(extra, y.shape[1], generator=g, dtype=y.dtype) - 25
        x[~mask], y[~mask] = 7.0, -7.0  # the unobserved rows get other arbitrary values
        return (
            torch.cat([junk_x[:2], x, junk_x[2:]]),
            torch.cat([junk_y[:2], y, junk_y[2:]]),
            torch.cat([torch.zeros(2, dtype=torch.bool), mask, torch.zeros(2, dtype=torch.bool)]),
        )

    def non_finite(self, batch: PointBatch) -> PointBatch:
        x, y, mask = (t.clone() for t in batch)
        y[0, 0] = float("nan")  # an observed row: NaN is an error there
        return x, y, mask


class TestExactGPContract(_PointContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return ExactGP(1, kernel="matern52", mean="constant").to(dtype)

    def non_finite(self, batch: PointBatch) -> PointBatch:
        x, y, mask = (t.clone() for t in batch)
        x[1, 0] = float("inf")  # an infinite input of an observed row
        return x, y, mask


class TestIndependentOutputsExactGPContract(_PointContract):
    y_dim: ClassVar[int] = 2

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return ExactGP(1, 2, kernel="rbf + periodic").to(dtype)


class TestMultitaskGPContract(_PointContract):
    y_dim: ClassVar[int] = 2

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return MultitaskGP(1, 2, num_latents=2, rank=1, mean="constant").to(dtype)


class TestPhysicsMeanGPContract(_PointContract):
    fit_steps: ClassVar[int] = 2

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            system = DampedPendulum(omega0=1.2, alpha=0.2, linear=True)
            mean = PhysicsMean(system, torch.tensor([0.8, 0.0]), max_step=0.1)
            return ExactGP(1, kernel="rbf", mean=mean).to(dtype)


class TestSparseGPContract(_PointContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            z = torch.linspace(0, 5, 6).unsqueeze(-1)
            return SparseGP(1, inducing_points=z, natural_gradient=False).to(dtype)


class TestNaturalGradientSparseGPContract(TestSparseGPContract):
    """q(u) by natural-gradient steps and the rest by Adam, through SparseGP.optimizer."""

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            z = torch.linspace(0, 5, 6).unsqueeze(-1)
            return SparseGP(1, inducing_points=z).to(dtype)

    def _fit(self, model: nn.Module, batch: Any, steps: int, **kwargs: Any) -> Any:
        assert isinstance(model, SparseGP)
        kwargs.setdefault("optimizer", model.optimizer(lr=1e-2, ngd_lr=0.1, num_data=12))
        return super()._fit(model, batch, steps, **kwargs)


class TestGridGPContract(ModelContract):
    predictive_type: ClassVar[type] = Normal
    padding_reason: ClassVar[str] = (
        "a Kronecker grid GP needs a complete grid: no entry can be masked"
    )

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return GridGP(2, kernel=["matern32", "rbf"]).to(dtype)

    def batch(self, dtype: torch.dtype = torch.float32) -> tuple[list[Tensor], Tensor]:
        g = torch.Generator().manual_seed(5)
        t = torch.linspace(0, 3, 7, dtype=dtype)
        s = torch.linspace(0, 1, 5, dtype=dtype)
        values = torch.sin(2 * t)[:, None] * torch.cos(3 * s)[None, :]
        return [t, s], values + 0.05 * torch.randn(7, 5, generator=g, dtype=dtype)

    def padded(self, batch: Any) -> None:
        return None

    def non_finite(self, batch: tuple[list[Tensor], Tensor]) -> tuple[list[Tensor], Tensor]:
        axes, values = batch
        values = values.clone()
        values[2, 3] = float("nan")
        return axes, values


def _task(dtype: torch.dtype) -> Task:
    g = torch.Generator().manual_seed(3)
    b, nc, nt = 3, 7, 5
    xc = 4 * torch.rand(b, nc, 1, generator=g, dtype=dtype)
    xt = 4 * torch.rand(b, nt, 1, generator=g, dtype=dtype)
    yc = torch.sin(2 * xc) + 0.1 * torch.randn(b, nc, 1, generator=g, dtype=dtype)
    yt = torch.sin(2 * xt)
    mc = torch.ones(b, nc, dtype=torch.bool)
    mc[1, 5:] = False  # a task with fewer context points: its padding holds NaN
    yc[1, 5:] = float("nan")
    mt = torch.ones(b, nt, dtype=torch.bool)
    mt[2, 3:] = False
    return Task(xc, yc, mc, xt, yt, mt)


class _TaskContract(ModelContract):
    """Context/target GPs: padding is extra masked context points holding arbitrary values."""

    predictive_type: ClassVar[type] = Normal

    def batch(self, dtype: torch.dtype = torch.float32) -> Task:
        return _task(dtype)

    def padded(self, batch: Task) -> Task:
        g = torch.Generator().manual_seed(11)
        b, _, x_dim = batch.x_context.shape
        dtype = batch.x_context.dtype
        junk_x = 10 * torch.rand(b, 3, x_dim, generator=g, dtype=dtype)
        junk_y = 30 * torch.rand(b, 3, 1, generator=g, dtype=dtype) - 15
        x = batch.x_context.clone()
        y = batch.y_context.clone()
        x[~batch.mask_context] = 9.0
        y[~batch.mask_context] = -9.0
        return replace(
            batch,
            x_context=torch.cat([x, junk_x], dim=1),
            y_context=torch.cat([y, junk_y], dim=1),
            mask_context=torch.cat([batch.mask_context, torch.zeros(b, 3, dtype=torch.bool)], 1),
        )

    def non_finite(self, batch: Task) -> Task:
        y = batch.y_context.clone()
        y[0, 2, 0] = float("inf")
        return replace(batch, y_context=y)


class TestMetaGPContract(_TaskContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return MetaGP(1, 1, kernel="matern52", mean="constant").to(dtype)


_NOT_TRAINABLE = (
    "ContextGP has no shared parameters (each task's GP is fitted on its context inside "
    "forward), so there is nothing for uqdyn.train.fit to train; MetaGP is the trainable one"
)


class TestContextGPContract(_TaskContract):
    """Not trainable by design: the prediction half of the contract only."""

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return ContextGP(1, 1, kernel="rbf", steps=5).to(dtype)

    def test_follows_the_training_contract(self) -> None:
        model = self.build()
        assert isinstance(model, Validatable) and not isinstance(model, Trainable)

    def test_fit_trains_it_without_a_loss_fn_and_validates_with_scores(self) -> None:
        pytest.skip(_NOT_TRAINABLE)

    def test_same_seed_gives_the_same_numbers_in_a_fresh_process(self) -> None:
        pytest.skip(_NOT_TRAINABLE)

    def test_checkpoint_and_resume_are_exact(self) -> None:  # type: ignore[override]
        pytest.skip(_NOT_TRAINABLE)

    def test_follows_the_dtype_of_its_inputs(self) -> None:
        model = self.build(torch.float64)
        with torch.no_grad():
            prediction = self.prediction(model, self.batch(torch.float64))
        assert prediction.mean.dtype == torch.float64
        assert prediction.variance.dtype == torch.float64

    def test_non_finite_inputs_are_refused(self) -> None:
        bad = self.non_finite(self.batch())
        with pytest.raises(ValueError, match="(?i)nan|finite"), torch.no_grad():
            self.build().predict_batch(bad)  # type: ignore[operator]
