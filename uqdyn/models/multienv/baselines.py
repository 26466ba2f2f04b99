"""The baselines of the multi-environment models: one for all, one per environment, fine-tuning."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import cast

from torch import Tensor, nn

from uqdyn._checks import as_int

from .base import (
    MultiEnvironmentModel,
    Tendency,
    _Adaptation,
    build_network,
    stacked_tendency,
)
from .batch import EnvironmentBatch

__all__ = ["OneForAll", "OnePerEnv"]


def _zero_penalty(part: nn.Module, batch: EnvironmentBatch) -> Tensor:
    return batch.trajectories.new_zeros(())


def _apply(part: nn.Module, x: Tensor) -> Tensor:
    return part(x)


class OneForAll(MultiEnvironmentModel):
    """One vector field for every environment (the environment label is ignored).

    Trained on all environments pooled, it is the "one-for-all" baseline; :meth:`adapt`
    is the fine-tuning baseline: a copy of the trained network, every weight trainable,
    fitted on the new environment's trajectories and kept as that environment's field
    (the shared network stays as it was). Environments ``0 .. n_train_envs - 1`` use the
    shared network.

    Parameters
    ----------
    network : callable () -> nn.Module
        Builds the vector field ``(batch, *state_shape) -> (batch, *state_shape)``.
    n_envs : int
        Training environments (labels accepted by :meth:`loss`).
    state_shape : tuple of int
    physics, method, step_size, noise_std, seed
        As for :class:`LEADS`.

    Examples
    --------
    >>> from uqdyn.models.hybrid import MLPAugmentation
    >>> OneForAll(lambda: MLPAugmentation(2, hidden=8), n_envs=9, state_shape=(2,)).n_envs
    9
    """

    def __init__(
        self,
        network: Callable[[], nn.Module],
        n_envs: int,
        state_shape: tuple[int, ...],
        *,
        physics: nn.Module | None = None,
        method: str = "rk4",
        step_size: float | None = None,
        noise_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            state_shape, physics=physics, method=method, step_size=step_size, noise_std=noise_std
        )
        self.n_train_envs = as_int(n_envs, "n_envs", minimum=1)
        self.seed = as_int(seed, "seed", minimum=0)
        self.net = build_network(network, self.seed)
        self.adapted = nn.ModuleList()

    @property
    def n_envs(self) -> int:
        return self.n_train_envs + len(self.adapted)

    def _tendency(self, env: int) -> Tendency:
        net = self.net if env < self.n_train_envs else self.adapted[env - self.n_train_envs]
        return net

    def _batched_tendency(self, envs: list[int]) -> Tendency | None:
        if max(envs) < self.n_train_envs:  # the shared network for every row
            return self.net
        return stacked_tendency([cast(nn.Module, self._tendency(e)) for e in envs])

    def _adaptation(self, seed: int) -> _Adaptation:
        part = copy.deepcopy(self.net)
        for p in part.parameters():
            p.requires_grad_(True)
        return _Adaptation(self, part, _apply, _zero_penalty)

    def _commit(self, part: nn.Module) -> None:
        self.adapted.append(part)


class OnePerEnv(MultiEnvironmentModel):
    """An independent vector field per environment (the "one-per-env" baseline).

    :meth:`adapt` trains a fresh network (seeded by ``seed``) on the new environment's
    trajectories alone.

    Parameters
    ----------
    network : callable () -> nn.Module
    n_envs : int
    state_shape : tuple of int
    physics, method, step_size, noise_std, seed
        As for :class:`LEADS`.
    """

    def __init__(
        self,
        network: Callable[[], nn.Module],
        n_envs: int,
        state_shape: tuple[int, ...],
        *,
        physics: nn.Module | None = None,
        method: str = "rk4",
        step_size: float | None = None,
        noise_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            state_shape, physics=physics, method=method, step_size=step_size, noise_std=noise_std
        )
        n_envs = as_int(n_envs, "n_envs", minimum=1)
        self.seed = as_int(seed, "seed", minimum=0)
        self._factory = network
        self.nets = nn.ModuleList(build_network(network, self.seed + e) for e in range(n_envs))

    @property
    def n_envs(self) -> int:
        return len(self.nets)

    def _tendency(self, env: int) -> Tendency:
        return self.nets[env]

    def _batched_tendency(self, envs: list[int]) -> Tendency:
        return stacked_tendency([self.nets[e] for e in envs])

    def _adaptation(self, seed: int) -> _Adaptation:
        like = next(self.nets[0].parameters(), None)
        part = build_network(self._factory, seed + 10_000 + self.n_envs)
        if like is not None:
            part = part.to(device=like.device, dtype=like.dtype)
        return _Adaptation(self, part, _apply, _zero_penalty)

    def _commit(self, part: nn.Module) -> None:
        self.nets.append(part)
