"""LEADS: a shared vector field plus a small vector field per environment."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int

from .base import (
    MultiEnvironmentModel,
    Tendency,
    _Adaptation,
    build_network,
    stacked_tendency,
)
from .batch import EnvironmentBatch

__all__ = ["LEADS"]


def _states(batch: EnvironmentBatch, rows: Tensor) -> Tensor:
    """The observed states of ``rows``, shape ``(n, *state_shape)``."""
    states = batch.trajectories[rows]
    if batch.mask is not None:
        states = states[batch.mask[rows]]
    else:
        states = states.flatten(0, 1)
    return states


class LEADS(MultiEnvironmentModel):
    r"""LEADS (Yin et al., NeurIPS 2021): ``f_e = f_shared + g_e`` per environment ``e``.

    The shared field ``f_shared`` and every environment part ``g_e`` are networks built by
    ``network()`` (different seeded initialisations). The objective is

    .. math::

        \frac{1}{N}\sum_{b,t,i} (\hat X_{b,t,i} - X_{b,t,i})^2
        + \lambda \sum_{e \in \text{batch}} \frac{1}{|S_e|} \sum_{x \in S_e} \|g_e(x)\|^2,

    the rollout error plus LEADS' penalty on the size of the environment parts, estimated
    on the observed states ``S_e`` of environment ``e`` in the batch: the shared part
    explains as much of the dynamics as the environments have in common. A new environment
    (:meth:`adapt`) gets a new part ``g`` fitted on its trajectories with ``f_shared``
    frozen.

    Parameters
    ----------
    network : callable () -> nn.Module
        Builds a vector field ``(batch, *state_shape) -> (batch, *state_shape)``, e.g.
        ``lambda: MLPAugmentation(2, hidden=64)`` or ``ConvAugmentation`` for grids.
    n_envs : int
        Training environments.
    state_shape : tuple of int
        State shape without the batch axis.
    penalty : float
        ``lambda >= 0``. Default ``1e-3``.
    physics : Dynamics, optional
        A shared physical model added to every field (APHYNITY-style).
    method, step_size : optional
        Integration settings of :func:`uqdyn.physics.simulate`.
    noise_std : float
        Initial ``noise_std`` of the Normal forecasts.
    seed : int
        Seeds the initialisation of every network.

    References
    ----------
    Yin, Ayed, de Bézenac, Baskiotis, Gallinari, "LEADS: Learning Dynamical Systems that
    Generalize Across Environments", NeurIPS 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.hybrid import MLPAugmentation
    >>> model = LEADS(lambda: MLPAugmentation(2, hidden=8), n_envs=3, state_shape=(2,))
    >>> model.n_envs
    3
    """

    def __init__(
        self,
        network: Callable[[], nn.Module],
        n_envs: int,
        state_shape: tuple[int, ...],
        *,
        penalty: float = 1e-3,
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
        self.penalty_weight = as_float(penalty, "penalty", nonnegative=True)
        self._factory = network
        self.shared = build_network(network, self.seed)
        self.env_parts = nn.ModuleList(
            build_network(network, self.seed + 1 + e) for e in range(n_envs)
        )

    @property
    def n_envs(self) -> int:
        return len(self.env_parts)

    def _tendency(self, env: int) -> Tendency:
        part = self.env_parts[env]
        return lambda x: self.shared(x) + part(x)

    def _batched_tendency(self, envs: list[int]) -> Tendency:
        parts = stacked_tendency([self.env_parts[e] for e in envs])
        return lambda x: self.shared(x) + parts(x)

    def _part_penalty(self, part: nn.Module, states: Tensor) -> Tensor:
        return part(states).pow(2).flatten(1).sum(dim=1).mean()

    def penalty(self, batch: EnvironmentBatch) -> Tensor:
        """``lambda * sum_e mean_{x in S_e} ||g_e(x)||^2`` over the batch's environments."""
        total = batch.trajectories.new_zeros(())
        if self.penalty_weight == 0.0:
            return total
        for e in torch.unique(batch.env).tolist():
            rows = (batch.env == e).nonzero().squeeze(1)
            total = total + self._part_penalty(self.env_parts[int(e)], _states(batch, rows))
        return self.penalty_weight * total

    def _adaptation(self, seed: int) -> _Adaptation:
        part = build_network(self._factory, seed + 10_000 + self.n_envs).to(self.noise_std.device)
        dtype = next((p.dtype for p in self.shared.parameters()), None)
        if dtype is not None:
            part = part.to(dtype)

        def tendency(p: nn.Module, x: Tensor) -> Tensor:
            return self.shared(x) + p(x)

        def penalty(p: nn.Module, batch: EnvironmentBatch) -> Tensor:
            rows = torch.arange(batch.trajectories.shape[0], device=batch.env.device)
            return self.penalty_weight * self._part_penalty(p, _states(batch, rows))

        return _Adaptation(self, part, tendency, penalty)

    def _commit(self, part: nn.Module) -> None:
        self.env_parts.append(part)
