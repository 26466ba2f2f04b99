"""The hybrid physics + network models run the shared model contract (tests/_contract.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import pytest
import torch
from _contract import NON_FINITE, ModelContract
from torch import nn

import uqdyn
from uqdyn.models.hybrid import (
    Aphynity,
    HybridDynamics,
    HybridEnsemble,
    LatentHybridDynamics,
    MLPAugmentation,
    TrajectoryBatch,
)
from uqdyn.physics import DampedPendulum, simulate
from uqdyn.predictive import Ensemble, Normal


def _batch(dtype: torch.dtype) -> TrajectoryBatch:
    """3 pendulum trajectories of 5 times; the second is observed at its first 3 times only."""
    g = torch.Generator().manual_seed(3)
    times = torch.arange(5, dtype=dtype) * 0.5
    state0 = torch.randn(3, 2, generator=g, dtype=dtype)
    truth = DampedPendulum(omega0=1.0, alpha=0.2).to(dtype)
    with torch.no_grad():
        data = simulate(truth, state0, times, "rk4", step_size=0.25).clone()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    data[1, 3:] = 0.0  # padding of the shorter sequence
    return TrajectoryBatch(times, data, mask)


def _physics(dtype: torch.dtype) -> DampedPendulum:
    physics = DampedPendulum(omega0=1.2, alpha=0.0).to(dtype)
    physics.alpha.requires_grad_(False)
    return physics


def _network(dtype: torch.dtype, input_dim: int = 2) -> MLPAugmentation:
    network = MLPAugmentation(2, hidden=8, input_dim=input_dim).to(dtype)
    nn.init.normal_(network.net[-1].weight, std=0.3)  # a network that matters from the start
    return network


def _hybrid(dtype: torch.dtype) -> HybridDynamics:
    return HybridDynamics(_physics(dtype), _network(dtype))


class _HybridContract(ModelContract):
    """Padding: unobserved times of a trajectory hold arbitrary values (the mask says so)."""

    def batch(self, dtype: torch.dtype = torch.float32) -> TrajectoryBatch:
        return _batch(dtype)

    def padded(self, batch: TrajectoryBatch) -> TrajectoryBatch:
        assert batch.mask is not None
        junk = torch.full_like(batch.trajectories, 123.0)
        junk[..., 1] = -7.5
        unseen = (~batch.mask).reshape(*batch.mask.shape, 1)
        return replace(batch, trajectories=torch.where(unseen, junk, batch.trajectories))

    def non_finite(self, batch: TrajectoryBatch) -> TrajectoryBatch:
        data = batch.trajectories.clone()
        data[0, 2, 0] = float("nan")  # an observed later state
        return replace(batch, trajectories=data)

    def test_non_finite_initial_states_are_refused(self) -> None:
        model = self.build()
        for value in (float("nan"), float("inf")):
            data = self.batch().trajectories.clone()
            data[2, 0, 1] = value
            bad = replace(self.batch(), trajectories=data)
            with pytest.raises(ValueError, match=NON_FINITE):
                model.loss(bad)  # type: ignore[operator]
            with pytest.raises(ValueError, match=NON_FINITE), torch.no_grad():
                model.predict_batch(bad)  # type: ignore[operator]

    def test_nan_at_unobserved_times_is_allowed_and_ignored(self) -> None:
        model = self.build(torch.float64).eval()
        batch = self.batch(torch.float64)
        padded = self.padded(batch)
        assert padded is not None and batch.mask is not None
        unseen = (~batch.mask).reshape(*batch.mask.shape, 1)
        nan = replace(
            batch,
            trajectories=torch.where(
                unseen, torch.full_like(batch.trajectories, float("nan")), batch.trajectories
            ),
        )
        with torch.no_grad():
            mean, _ = self._moments(model, nan)
            expected, _ = self._moments(model, batch)
        torch.testing.assert_close(mean, expected, rtol=0, atol=0)
        with uqdyn.seeded(1):
            loss_nan = model.loss(nan)  # type: ignore[operator]
        with uqdyn.seeded(1):
            loss_padded = model.loss(padded)  # type: ignore[operator]
        assert torch.isfinite(loss_nan) and float(loss_nan.detach()) == float(loss_padded.detach())

    def test_another_dtype_or_an_unobserved_start_is_refused(self) -> None:
        model = self.build(torch.float32)
        with pytest.raises(TypeError, match="float64"):
            model.loss(self.batch(torch.float64))  # type: ignore[operator]
        batch = self.batch()
        assert batch.mask is not None
        mask = batch.mask.clone()
        mask[0, 0] = False
        with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
            model.predict_batch(replace(batch, mask=mask))  # type: ignore[operator]
        with pytest.raises(TypeError, match="TrajectoryBatch"):
            model.loss(batch.trajectories)  # type: ignore[operator]

    def _moments(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = self.prediction(model, batch)
        return prediction.mean, prediction.variance


class TestHybridDynamicsContract(_HybridContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return _hybrid(dtype)


class TestAphynityContract(_HybridContract):
    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return Aphynity(_hybrid(dtype), multiplier=2.0, step_size=0.25)

    def test_the_multiplier_weights_the_trajectory_term(self) -> None:
        """``L_lambda = ||F_aug||^2 + lambda L_traj``: linear in lambda, slope the rollout MSE."""
        objective = self.build(torch.float64)
        batch = self.batch(torch.float64)
        assert batch.mask is not None
        with torch.no_grad():
            low = float(objective.loss(batch))
            objective.multiplier.fill_(5.0)
            high = float(objective.loss(batch))
            rollout = simulate(objective.model, batch.initial_state, batch.times, step_size=0.25)
        keep = batch.mask[:, 1:]
        mse = float((rollout[:, 1:] - batch.trajectories[:, 1:]).square()[keep].mean())
        assert (high - low) / 3.0 == pytest.approx(mse, rel=1e-10)
        assert "multiplier" in objective.state_dict() and "steps_done" in objective.state_dict()


class TestLatentHybridContract(_HybridContract):
    predictive_type: ClassVar[type] = Ensemble

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        with uqdyn.seeded(0):
            return LatentHybridDynamics(_physics(dtype), _network(dtype, input_dim=3), 1)

    def prediction(self, model: nn.Module, batch: Any) -> Any:
        generator = torch.Generator().manual_seed(5)
        return model.predict_batch(batch, samples=6, generator=generator)[0]  # type: ignore[operator]


class TestHybridEnsembleContract(_HybridContract):
    predictive_type: ClassVar[type] = Ensemble

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        members = []
        for seed in (0, 1):
            with uqdyn.seeded(seed):
                members.append(_hybrid(dtype))
        return HybridEnsemble(members)
