"""What every multi-environment model shares: grouped rollouts, the loss, prediction, adaptation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from uqdyn._checks import as_float, as_int
from uqdyn._seed import seeded
from uqdyn.physics import simulate
from uqdyn.predictive import Normal
from uqdyn.train import fit

from ..hybrid.batch import later_mask, masked_mean, observed_or_zero
from .batch import EnvironmentBatch, check_environment_batch

__all__ = ["MultiEnvironmentModel"]

Tendency = Callable[[Tensor], Tensor]


class _Field(nn.Module):
    """``forward(t, state) = tendency(state) [+ physics(t, state)]`` for :func:`simulate`."""

    def __init__(self, tendency: Tendency, physics: nn.Module | None) -> None:
        super().__init__()
        self._tendency = (tendency,)  # a tuple: never registered as a submodule
        self._physics = (physics,)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        out = self._tendency[0](state)
        physics = self._physics[0]
        return out if physics is None else out + physics(t, state)


def stacked_call(module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``module`` evaluated per environment block with its own parameters, in one call.

    Parameters
    ----------
    module : nn.Module
        The network whose structure every environment shares.
    params : dict of str to Tensor
        ``module``'s parameters stacked along a new first axis, shape ``(E, *p.shape)``.
    x : Tensor, shape (E * n, *state_shape)
        Environment-major rows.

    Returns
    -------
    Tensor, shape (E * n, *out_shape)
    """
    n_env = next(iter(params.values())).shape[0]
    blocks = x.reshape(n_env, x.shape[0] // n_env, *x.shape[1:])
    out = torch.func.vmap(lambda p, xb: functional_call(module, p, (xb,)))(params, blocks)
    return out.reshape(x.shape[0], *out.shape[2:])


def stack_parameters(modules: list[nn.Module]) -> dict[str, Tensor]:
    """The parameters of same-structure ``modules`` stacked along a new first axis
    (differentiable: gradients reach every module's own parameters)."""
    names = [name for name, _ in modules[0].named_parameters()]
    per_module = [dict(m.named_parameters()) for m in modules]
    return {name: torch.stack([p[name] for p in per_module]) for name in names}


def stacked_tendency(modules: list[nn.Module]) -> Tendency:
    """The tendency of environment-major rows, block ``i`` through ``modules[i]`` (same
    structure), in one vmapped call (see :func:`stacked_call`)."""
    params = stack_parameters(modules)
    return lambda x: stacked_call(modules[0], params, x)


def build_network(factory: Callable[[], nn.Module], seed: int, name: str = "network") -> nn.Module:
    """``factory()`` under :func:`uqdyn.seeded` ``(seed)``; checked to be an ``nn.Module``."""
    if isinstance(factory, nn.Module) or not callable(factory):
        raise TypeError(
            f"{name} is a {type(factory).__name__}; expected a factory () -> nn.Module (e.g. "
            "lambda: MLPAugmentation(2)), so that environment parts get their own weights"
        )
    with seeded(seed):
        net = factory()
    if not isinstance(net, nn.Module):
        raise TypeError(f"{name}() returned a {type(net).__name__}; expected an nn.Module")
    return net


class _Adaptation(nn.Module):
    """The module :func:`uqdyn.train.fit` trains when a model adapts to a new environment.

    It holds only the new environment's parameters (``part``); the parent model is kept
    out of its submodules, so nothing of the parent is optimised or moved.
    """

    def __init__(
        self,
        parent: MultiEnvironmentModel,
        part: nn.Module,
        tendency: Callable[[nn.Module, Tensor], Tensor],
        penalty: Callable[[nn.Module, EnvironmentBatch], Tensor],
    ) -> None:
        super().__init__()
        self._parent = (parent,)
        self.part = part
        self._tendency = tendency
        self._penalty = penalty

    def loss(self, batch: EnvironmentBatch) -> Tensor:
        parent = self._parent[0]
        batch = check_environment_batch(batch, parent, parent.state_shape, None)
        field = _Field(lambda x: self._tendency(self.part, x), parent.physics)
        rollout = parent._simulate(field, batch.initial_state, batch.times)
        return parent._mse(rollout, batch) + self._penalty(self.part, batch)


class MultiEnvironmentModel(nn.Module):
    r"""Base class: one vector field per environment, rolled out from observed initial states.

    Environment ``e``'s dynamics are ``dX/dt = f_e(X) [+ F_phys(X)]`` (``F_phys`` an
    optional shared :class:`~uqdyn.physics.Dynamics`, as in APHYNITY). A subclass says
    how ``f_e`` is built (:meth:`_tendency`), what is penalised (:meth:`penalty`) and
    how a new environment is fitted (:meth:`_adaptation`).

    The :mod:`uqdyn.train` contract, on an :class:`EnvironmentBatch`:
    :meth:`loss` is the CoDA/LEADS objective, the mean squared error of the rollouts over
    the observed later states plus :meth:`penalty`; :meth:`predict_batch` is a
    :class:`~uqdyn.predictive.Normal` around the rollout with the scale ``noise_std``
    (a buffer, set by :meth:`calibrate_noise`).
    """

    noise_std: Tensor

    def __init__(
        self,
        state_shape: tuple[int, ...],
        *,
        physics: nn.Module | None = None,
        method: str = "rk4",
        step_size: float | None = None,
        noise_std: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(state_shape, tuple) or not state_shape:
            raise ValueError(
                f"state_shape={state_shape!r}; expected a non-empty tuple such as (2,) or "
                "(2, 32, 32)"
            )
        self.state_shape = tuple(as_int(s, "state_shape", minimum=1) for s in state_shape)
        if physics is not None and not isinstance(physics, nn.Module):
            raise TypeError(f"physics is a {type(physics).__name__}; expected a Dynamics or None")
        self.physics = physics
        self.method = str(method)
        self.step_size = (
            None if step_size is None else as_float(step_size, "step_size", positive=True)
        )
        self.register_buffer(
            "noise_std", torch.tensor(as_float(noise_std, "noise_std", positive=True))
        )

    # ----------------------------------------------------------------- subclass hooks
    @property
    def n_envs(self) -> int:
        """Number of environments the model has a vector field for (trained and adapted)."""
        raise NotImplementedError

    def _tendency(self, env: int) -> Tendency:
        raise NotImplementedError

    def penalty(self, batch: EnvironmentBatch) -> Tensor:
        """The regularisation term of :meth:`loss` (0 for the baselines), shape ``()``."""
        return batch.trajectories.new_zeros(())

    def _adaptation(self, seed: int) -> _Adaptation:
        raise NotImplementedError

    def _batched_tendency(self, envs: list[int]) -> Tendency | None:
        """The fields of ``envs`` at once, for states laid out environment-major: rows
        ``(len(envs) * n, *state_shape)``, the ``i``-th block of ``n`` rows in ``envs[i]``.
        ``None`` when the model has no batched form (the rollout then loops)."""
        return None

    def _commit(self, part: nn.Module) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- rollouts
    def _simulate(self, field: nn.Module, state0: Tensor, times: Tensor) -> Tensor:
        return simulate(field, state0, times, self.method, step_size=self.step_size)

    def rollout(self, state0: Tensor, times: Tensor, env: Tensor) -> Tensor:
        """Trajectories of each row under its environment's dynamics.

        Parameters
        ----------
        state0 : Tensor, shape (batch, *state_shape)
        times : Tensor, shape (time,)
        env : Tensor of int64, shape (batch,)

        Returns
        -------
        Tensor, shape (batch, time, *state_shape)
        """
        if not isinstance(env, Tensor) or env.dtype != torch.int64 or env.shape != state0.shape[:1]:
            raise ValueError(
                f"env must be an int64 tensor of shape ({state0.shape[0]},), got "
                f"{getattr(env, 'dtype', type(env).__name__)} {tuple(getattr(env, 'shape', ()))}"
            )
        order = torch.argsort(env, stable=True)
        envs, counts = torch.unique(env, return_counts=True)
        batched = None
        if len(envs) > 1 and bool((counts == counts[0]).all()):
            batched = self._batched_tendency([int(e) for e in envs.tolist()])
        if batched is not None:  # one integration for every environment
            sorted_out = self._simulate(_Field(batched, self.physics), state0[order], times)
        else:
            pieces = []
            for e in envs.tolist():
                rows = (env == e).nonzero().squeeze(1)
                field = _Field(self._tendency(int(e)), self.physics)
                pieces.append(self._simulate(field, state0[rows], times))
            sorted_out = torch.cat(pieces)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return sorted_out[inverse]

    def _mse(self, rollout: Tensor, batch: EnvironmentBatch) -> Tensor:
        error = (rollout[:, 1:] - observed_or_zero(batch.trajectory_batch())) ** 2
        return masked_mean(error, later_mask(batch.trajectory_batch()))

    # ----------------------------------------------------------------- contract
    def loss(self, batch: EnvironmentBatch) -> Tensor:
        """Mean squared rollout error over observed later states plus :meth:`penalty`.

        Parameters
        ----------
        batch : EnvironmentBatch
            ``trajectories (batch, time, *state_shape)``, ``env (batch,)``.

        Returns
        -------
        Tensor, shape ()
        """
        batch = check_environment_batch(batch, self, self.state_shape, self.n_envs)
        rollout = self.rollout(batch.initial_state, batch.times, batch.env)
        return self._mse(rollout, batch) + self.penalty(batch)

    def forward(self, state0: Tensor, times: Tensor, env: Tensor) -> Normal:
        """The forecast of the later times: ``Normal(rollout[:, 1:], noise_std)``.

        Parameters
        ----------
        state0 : Tensor, shape (batch, *state_shape)
        times : Tensor, shape (time,)
        env : Tensor of int64, shape (batch,)

        Returns
        -------
        Normal, batch_shape (batch, time - 1, *state_shape)
        """
        mean = self.rollout(state0, times, env)[:, 1:]
        return Normal(mean, self.noise_std.to(mean).expand_as(mean))

    def predict_batch(self, batch: EnvironmentBatch) -> tuple[Normal, Tensor, Tensor | None]:
        """``(forecast of the later times, observed later states, their mask)``."""
        batch = check_environment_batch(batch, self, self.state_shape, self.n_envs)
        predictive = self(batch.initial_state, batch.times, batch.env)
        target = observed_or_zero(batch.trajectory_batch())
        return predictive, target, later_mask(batch.trajectory_batch())

    @torch.no_grad()
    def calibrate_noise(self, batch: EnvironmentBatch) -> float:
        """Set ``noise_std`` to the root mean square rollout error on ``batch``; return it."""
        batch = check_environment_batch(batch, self, self.state_shape, self.n_envs)
        rollout = self.rollout(batch.initial_state, batch.times, batch.env)
        rms = float(self._mse(rollout, batch).sqrt())
        self.noise_std.fill_(max(rms, 1e-8))
        return rms

    # ----------------------------------------------------------------- adaptation
    def adapt(
        self,
        batch: EnvironmentBatch,
        *,
        steps: int = 500,
        lr: float = 1e-2,
        optimizer: str = "adam",
        seed: int = 0,
    ) -> int:
        """Fit a new environment on ``batch`` (all its rows from that environment).

        What is fitted depends on the model (a new environment part for LEADS, a context
        vector for CoDA, a fine-tuned copy for :class:`OneForAll`, a fresh network for
        :class:`OnePerEnv`); everything fitted before stays exactly as it was. Training runs
        through :func:`uqdyn.train.fit` (``batch`` as the one full batch, no progress
        output). ``batch.env`` is ignored.

        Parameters
        ----------
        batch : EnvironmentBatch
            Trajectories ``(batch, time, *state_shape)`` of the new environment (one is
            enough).
        steps, lr, optimizer, seed
            Passed to :func:`uqdyn.train.fit`; ``seed`` also seeds a new network's init.

        Returns
        -------
        int
            The new environment's index, ``n_envs - 1`` after the call.
        """
        steps = as_int(steps, "steps", minimum=1)
        seed = as_int(seed, "seed", minimum=0)
        label = torch.zeros(batch.trajectories.shape[0], dtype=torch.int64)
        batch = check_environment_batch(
            EnvironmentBatch(batch.times, batch.trajectories, label, batch.mask)
            if isinstance(batch, EnvironmentBatch)
            else batch,
            self,
            self.state_shape,
            None,
        )
        device = next((p.device for p in self.parameters()), batch.trajectories.device)
        frozen = [p for p in self.parameters() if p.requires_grad]
        adaptation = self._adaptation(seed)
        for p in frozen:
            p.requires_grad_(False)
        try:
            fit(
                adaptation,
                [batch],
                steps=steps,
                lr=lr,
                optimizer=optimizer,
                seed=seed,
                device=device,
                progress=False,
            )
        finally:
            for p in frozen:
                p.requires_grad_(True)
        self._commit(adaptation.part)
        return self.n_envs - 1

    def extra_repr(self) -> str:
        return f"state_shape={self.state_shape}, n_envs={self.n_envs}, method={self.method!r}"
