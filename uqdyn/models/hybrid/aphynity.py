"""APHYNITY training: minimal augmentation subject to fitting the trajectories."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.physics import simulate
from uqdyn.train import FitResult, fit

from .augmented import HybridDynamics
from .batch import TrajectoryBatch, check_batch, later_mask, masked_mean, observed_or_zero
from .stochastic import LatentHybridDynamics

__all__ = [
    "Aphynity",
    "AphynityResult",
    "fit_aphynity",
    "augmentation_norm",
    "trajectory_loss",
]

HybridModel = HybridDynamics | LatentHybridDynamics


@dataclass
class AphynityResult:
    """What :func:`fit_aphynity` returns.

    Attributes
    ----------
    multipliers : list of float
        The Lagrange multiplier ``lambda_j``, initial value first (length ``epochs + 1``).
    trajectory_loss : list of float
        ``L_traj(theta_{j+1})`` on the whole training set after each epoch (length
        ``epochs``): MSE for a :class:`HybridDynamics`, mean fair CRPS for a
        :class:`LatentHybridDynamics`.
    augmentation_norm : list of float
        ``||F_aug||^2`` on the training states after each epoch (length ``epochs``).
    fit : FitResult
        The result of the one :func:`uqdyn.train.fit` call (a history row per epoch: the
        mean loss ``L_lambda`` and gradient norm over its steps).
    """

    multipliers: list[float] = field(default_factory=list)
    trajectory_loss: list[float] = field(default_factory=list)
    augmentation_norm: list[float] = field(default_factory=list)
    fit: FitResult | None = None


def _check_rate(value: Any, name: str) -> float:
    return as_float(value, name, nonnegative=True)


def _check_count(value: Any, name: str) -> int:
    return as_int(value, name, minimum=1)


class Aphynity(nn.Module):
    r"""A hybrid model under APHYNITY's objective (Yin et al. 2021), for :func:`uqdyn.train.fit`.

    ``loss(batch)`` is the relaxed constrained problem
    ``L_lambda = ||F_aug||^2 + lambda L_traj`` on a :class:`TrajectoryBatch`: ``L_traj`` is
    :func:`trajectory_loss` (rollout MSE for a :class:`HybridDynamics`, mean fair CRPS of
    ``samples`` rollouts for a :class:`LatentHybridDynamics`, at the observed later times)
    and ``||F_aug||^2`` is :func:`augmentation_norm` on the batch's observed states (the
    latent model's latent draws come after those of ``L_traj``). A physics-only or
    data-only model has no constraint: its loss is ``L_traj`` alone. ``predict_batch`` is
    the wrapped model's.

    The multiplier ``lambda`` and the number of optimizer steps taken under the schedule are
    buffers (``multiplier``, ``steps_done``), so a checkpoint carries them.
    :meth:`update_multiplier` applies APHYNITY's update
    ``lambda <- lambda + tau_2 L_traj(theta)``; :func:`fit_aphynity` calls it after every
    ``steps_per_epoch`` steps (see there). Trained by ``fit(objective, batches)`` alone,
    ``lambda`` stays fixed.

    Parameters
    ----------
    model : HybridDynamics or LatentHybridDynamics
        The wrapped model (a submodule: trained in place).
    multiplier : float
        ``lambda_0 >= 0``. Default 1.
    multiplier_rate : float
        ``tau_2 >= 0``. Default 1.
    steps_per_epoch : int
        Gradient steps between multiplier updates (``N_iter`` of the paper). Default 10.
    method, step_size
        Integration, as in :func:`uqdyn.physics.simulate`.
    samples : int
        Sampled rollouts per trajectory in ``L_traj`` of a :class:`LatentHybridDynamics`.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> from uqdyn.models.hybrid import HybridDynamics, MLPAugmentation, TrajectoryBatch
    >>> from uqdyn.train import fit
    >>> times = torch.linspace(0.0, 2.0, 5)
    >>> with torch.no_grad():
    ...     data = simulate(DampedPendulum(alpha=0.2), torch.tensor([[1.0, 0.0]]), times)
    >>> import uqdyn
    >>> with uqdyn.seeded(0):
    ...     network = MLPAugmentation(2, 8)
    >>> model = HybridDynamics(DampedPendulum(omega0=1.2, alpha=0.0), network)
    >>> objective = Aphynity(model, multiplier=1.0, multiplier_rate=10.0)
    >>> result = fit(objective, [TrajectoryBatch(times, data)], steps=3, progress=False)
    >>> mse, norm = objective.update_multiplier(TrajectoryBatch(times, data))
    >>> expected = 1.0 + 10.0 * mse  # the buffer is float32: equal to its rounding
    >>> abs(float(objective.multiplier) - expected) <= 1e-6 * expected and mse > 0
    True
    """

    multiplier: Tensor
    steps_done: Tensor

    def __init__(
        self,
        model: HybridModel,
        *,
        multiplier: float = 1.0,
        multiplier_rate: float = 1.0,
        steps_per_epoch: int = 10,
        method: str = "rk4",
        step_size: float | None = None,
        samples: int = 8,
    ) -> None:
        super().__init__()
        self.model = _check_model(model)
        multiplier = _check_rate(multiplier, "multiplier")
        self.multiplier_rate = _check_rate(multiplier_rate, "multiplier_rate")
        self.steps_per_epoch = _check_count(steps_per_epoch, "steps_per_epoch")
        self.samples = _check_count(samples, "samples")
        self.method = method
        self.step_size = step_size
        like = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = torch.get_default_dtype() if like is None else like.dtype
        device = None if like is None else like.device
        self.register_buffer("multiplier", torch.tensor(multiplier, dtype=dtype, device=device))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64, device=device))

    @property
    def constrained(self) -> bool:
        """Whether there is an augmentation to keep minimal next to physics (a true hybrid)."""
        model = self.model
        return isinstance(model, LatentHybridDynamics) or (
            model.physics is not None and model.augmentation is not None
        )

    def _fit_term(self, batch: TrajectoryBatch, generator: torch.Generator | None) -> Tensor:
        return _trajectory_fit(
            self.model, batch, self.method, self.step_size, self.samples, generator
        )

    def loss(self, batch: TrajectoryBatch) -> Tensor:
        """``||F_aug||^2 + lambda L_traj`` on ``batch`` (``L_traj`` alone without constraint).

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *state_shape)``, optional mask ``(batch, time)``.

        Returns
        -------
        Tensor, shape ()
        """
        batch = check_batch(batch, self.model, _base_shape(self.model))
        fit_term = self._fit_term(batch, None)
        if not self.constrained:
            return fit_term
        return augmentation_norm(self.model, _observed_states(batch)) + self.multiplier * fit_term

    def predict_batch(self, batch: TrajectoryBatch) -> tuple[Any, Tensor, Tensor | None]:
        """The wrapped model's ``predict_batch`` (with this objective's integration settings).

        Returns ``(Normal, y_true, mask)`` for a :class:`HybridDynamics` and
        ``(Ensemble, y_true, mask)`` for a :class:`LatentHybridDynamics`, over the later
        times ``(batch, time - 1, *state_shape)``.
        """
        return self.model.predict_batch(batch, method=self.method, step_size=self.step_size)

    def update_multiplier(
        self, data: TrajectoryBatch, *, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        r"""Evaluate the model on ``data`` and apply ``lambda <- lambda + tau_2 L_traj(theta)``.

        ``L_traj`` and ``||F_aug||^2`` are computed on all of ``data`` without gradients
        (the latent model draws its latents from ``generator``). A :class:`HybridDynamics`
        also gets its observation noise ``sigma`` set to the root mean square residual of
        the rollouts per component (its maximum-likelihood value given the dynamics). Without
        a constraint, ``lambda`` stays.

        Parameters
        ----------
        data : TrajectoryBatch
            The whole training set, ``(n, time, *state_shape)``.
        generator : torch.Generator, optional
            On the model's device; for the latent draws of a :class:`LatentHybridDynamics`.

        Returns
        -------
        (float, float)
            ``L_traj(theta)`` and ``||F_aug||^2`` before the update.
        """
        model = self.model
        device = next((p.device for p in model.parameters()), data.trajectories.device)
        data = check_batch(data.to(device), model, _base_shape(model))
        with torch.no_grad():
            if isinstance(model, HybridDynamics):
                prediction = simulate(
                    model, data.initial_state, data.times, self.method, step_size=self.step_size
                )
                square = (prediction[:, 1:] - observed_or_zero(data)).square()
                fit_value = masked_mean(square, later_mask(data))
                _set_noise(model, square, later_mask(data))
            else:
                fit_value = self._fit_term(data, generator)
            states = _observed_states(data)
            latent = None
            if isinstance(model, LatentHybridDynamics):
                latent = torch.randn(
                    states.shape[0],
                    model.latent_dim,
                    generator=generator,
                    device=device,
                    dtype=states.dtype,
                )
            norm_value = augmentation_norm(model, states, latent)
            if self.constrained:
                self.multiplier += self.multiplier_rate * float(fit_value)
        return float(fit_value), float(norm_value)


class _Schedule:
    """``train_data`` of :func:`fit_aphynity`'s one ``fit`` call: APHYNITY's alternation.

    Called by ``fit`` once before every optimizer step, with ``fit``'s data generator. The
    step index is the objective's ``steps_done`` buffer. At the start of epoch ``j`` (every
    ``steps_per_epoch`` steps) it first, for ``j >= 1``, applies the multiplier update of
    epoch ``j - 1`` on the whole training set, then seeds the data generator and torch's
    global RNG with ``seed + j``, so epoch ``j``'s batches and latent draws depend on
    ``seed + j`` alone. Everything it needs comes from buffers and RNG states that ``fit``
    checkpoints.
    """

    def __init__(
        self,
        objective: Aphynity,
        data: TrajectoryBatch,
        pool: Tensor,
        batch_size: int,
        seed: int,
    ) -> None:
        self.objective = objective
        self.data = data
        self.pool = pool
        self.batch_size = batch_size
        self.seed = seed
        self.result = AphynityResult(multipliers=[float(objective.multiplier)])

    def __call__(self, generator: torch.Generator) -> TrajectoryBatch:
        objective = self.objective
        epoch, within = divmod(int(objective.steps_done), objective.steps_per_epoch)
        if within == 0:
            if epoch > 0:
                self.end_epoch()
            generator.manual_seed(self.seed + epoch)
            _seed_global(self.seed + epoch, objective.multiplier.device)
        objective.steps_done += 1
        order = torch.randperm(len(self.pool), generator=generator)[: self.batch_size]
        return TrajectoryBatch(self.data.times, self.data.trajectories[self.pool[order]])

    def end_epoch(self) -> None:
        """The multiplier update after the epoch that just ended, recorded in ``result``."""
        objective = self.objective
        generator = None
        if isinstance(objective.model, LatentHybridDynamics):
            # evaluation e draws the e-th seed of a generator seeded with ``seed``
            seeds = torch.Generator().manual_seed(self.seed)
            for _ in range(int(objective.steps_done) // objective.steps_per_epoch):
                value = int(torch.randint(2**31 - 1, (1,), generator=seeds))
            device = objective.multiplier.device
            generator = torch.Generator(device=device).manual_seed(value)
        data = TrajectoryBatch(self.data.times, self.data.trajectories[self.pool])
        fit_value, norm_value = objective.update_multiplier(data, generator=generator)
        self.result.trajectory_loss.append(fit_value)
        self.result.augmentation_norm.append(norm_value)
        self.result.multipliers.append(float(objective.multiplier))


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed torch's CPU RNG (and the CUDA device's) as :func:`uqdyn.train.fit` does."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _set_noise(model: HybridDynamics, square: Tensor, mask: Tensor | None) -> None:
    """``sigma_c^2 <- mean square residual`` of component / channel ``c`` (observed entries)."""
    moved = square.movedim(2, 0).reshape(square.shape[2], *square.shape[:2], -1)
    if mask is None:
        variance = moved.mean(dim=(1, 2, 3))
    else:
        keep = mask.unsqueeze(-1).expand(moved.shape[1:]).to(square.dtype)
        variance = (moved * keep).sum(dim=(1, 2, 3)) / keep.sum().clamp_min(1)
    floor = torch.finfo(square.dtype).eps ** 2
    log_std = 0.5 * variance.clamp_min(floor).log()
    model.log_noise.copy_(log_std.reshape(model.log_noise.shape))


def _observed_states(batch: TrajectoryBatch) -> Tensor:
    """The observed states of ``batch``, shape ``(n, *state_shape)``."""
    data = batch.trajectories
    if batch.mask is None:
        return data.reshape(-1, *data.shape[2:])
    return data[batch.mask]


def _trajectory_fit(
    model: HybridModel,
    batch: TrajectoryBatch,
    method: str,
    step_size: float | None,
    samples: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``L_traj`` on a checked batch (see :func:`trajectory_loss`)."""
    if isinstance(model, LatentHybridDynamics):
        return model.loss(
            batch, samples=samples, generator=generator, method=method, step_size=step_size
        )
    prediction = simulate(model, batch.initial_state, batch.times, method, step_size=step_size)
    square = (prediction[:, 1:] - observed_or_zero(batch)).square()
    return masked_mean(square, later_mask(batch))


def _check_model(model: Any) -> HybridModel:
    if not isinstance(model, (HybridDynamics, LatentHybridDynamics)):
        raise TypeError(
            f"model must be a HybridDynamics or LatentHybridDynamics, got {type(model).__name__}"
        )
    return model


def _base_shape(model: HybridModel) -> tuple[int, ...]:
    if isinstance(model, LatentHybridDynamics):
        return model.base_shape
    return tuple(model.state_shape)


def _check_trajectories(model: HybridModel, trajectories: Any, times: Any) -> Tensor:
    if not isinstance(trajectories, Tensor) or not trajectories.is_floating_point():
        raise TypeError(
            "trajectories must be a floating torch.Tensor of shape (batch, time, *state_shape), "
            f"got {type(trajectories).__name__}"
        )
    shape = _base_shape(model)
    if trajectories.ndim != len(shape) + 2 or tuple(trajectories.shape[2:]) != shape:
        raise ValueError(
            f"trajectories must have shape (batch, time, {', '.join(map(str, shape))}) for "
            f"this model, got {tuple(trajectories.shape)}"
        )
    if trajectories.shape[1] < 2:
        raise ValueError(
            f"trajectories need at least 2 time steps, got shape {tuple(trajectories.shape)}"
        )
    n_times = len(times) if isinstance(times, (Tensor, Sequence)) else None
    if n_times != trajectories.shape[1]:
        raise ValueError(
            f"times must have one entry per time step of trajectories "
            f"({trajectories.shape[1]}), got {n_times}"
        )
    if not bool(torch.isfinite(trajectories).all()):
        raise ValueError("trajectories hold non-finite values; expected finite data")
    return trajectories.detach()


def augmentation_norm(model: HybridModel, states: Tensor, latent: Tensor | None = None) -> Tensor:
    r"""Estimate of ``||F_aug||^2`` on a set of states.

    ``||F_aug||^2 = E_X [ |F_aug(X)|^2 / d ]`` with ``d`` the number of entries of a state:
    the mean square of the augmentation's tendency over all states and entries (the
    per-entry scale keeps it comparable with the per-entry trajectory MSE).

    Parameters
    ----------
    model : HybridDynamics or LatentHybridDynamics
    states : Tensor, shape (n, *state_shape)
    latent : Tensor, shape (n, latent_dim), optional
        For a :class:`LatentHybridDynamics`; default draws ``z ~ N(0, I)``.

    Returns
    -------
    Tensor, shape ()
        Zero for a model without augmentation.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum
    >>> from uqdyn.models.hybrid import HybridDynamics
    >>> float(augmentation_norm(HybridDynamics(DampedPendulum(), None), torch.ones(3, 2)))
    0.0
    """
    if isinstance(model, LatentHybridDynamics):
        if latent is None:
            latent = torch.randn(
                states.shape[0], model.latent_dim, device=states.device, dtype=states.dtype
            )
        return model.augmentation_part(states, latent).square().mean()
    _check_model(model)
    if model.augmentation is None:
        return states.new_zeros(())
    return model.augmentation_part(states).square().mean()


def trajectory_loss(
    model: HybridModel,
    trajectories: Tensor,
    times: Tensor | Sequence[float],
    *,
    method: str = "rk4",
    step_size: float | None = None,
    samples: int = 8,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    r"""``L_traj``: how well rollouts from the first state fit the trajectories.

    For a :class:`HybridDynamics`, the MSE
    ``mean_{b, t>0, i} (X_hat_b(t)_i - X_b(t)_i)^2`` of the rollout
    ``X_hat_b = simulate(model, X_b(t_0), times)``. For a :class:`LatentHybridDynamics`,
    the mean over ``(b, t > 0, i)`` of the fair ensemble CRPS of ``samples`` sampled
    rollouts (Ferro 2014), a proper score whose expectation is minimised by the true
    predictive distribution.

    Parameters
    ----------
    model : HybridDynamics or LatentHybridDynamics
    trajectories : Tensor, shape (batch, time, *state_shape)
    times : Tensor or sequence of float, shape (time,)
    method, step_size
        Integration, as in :func:`uqdyn.physics.simulate`.
    samples : int
        Sampled rollouts per trajectory (stochastic model only).
    generator : torch.Generator, optional
        For the latent draws of the stochastic model.
    mask : Tensor of bool, shape (batch, time), optional
        Observed times (``mask[:, 0]`` true); the mean runs over the observed later entries.

    Returns
    -------
    Tensor, shape ()

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> from uqdyn.models.hybrid import HybridDynamics
    >>> truth = DampedPendulum()
    >>> times = torch.linspace(0, 2, 5)
    >>> data = simulate(truth, torch.tensor([[1.0, 0.0]]), times)
    >>> float(trajectory_loss(HybridDynamics(truth, None), data, times).detach()) < 1e-12
    True
    """
    model = _check_model(model)
    if not isinstance(trajectories, Tensor):
        raise TypeError(
            "trajectories must be a floating torch.Tensor of shape (batch, time, *state_shape), "
            f"got {type(trajectories).__name__}"
        )
    times_t = torch.as_tensor(times, dtype=trajectories.dtype, device=trajectories.device)
    batch = check_batch(TrajectoryBatch(times_t, trajectories, mask), model, _base_shape(model))
    return _trajectory_fit(model, batch, method, step_size, samples, generator)


def fit_aphynity(
    model: HybridModel,
    trajectories: Tensor,
    times: Tensor | Sequence[float],
    *,
    epochs: int = 100,
    steps_per_epoch: int = 10,
    batch_size: int | None = None,
    lr: float = 1e-3,
    physics_lr: float | None = None,
    multiplier: float = 1.0,
    multiplier_rate: float = 1.0,
    indices: Tensor | None = None,
    method: str = "rk4",
    step_size: float | None = None,
    samples: int = 8,
    grad_clip: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> AphynityResult:
    r"""Train a hybrid model with APHYNITY's adaptive Lagrangian (Yin et al. 2021, Alg. 1).

    The constrained problem ``min ||F_aug||^2`` subject to the trajectories being fitted is
    relaxed to ``L_lambda = ||F_aug||^2 + lambda L_traj`` and solved by alternating

    * ``steps_per_epoch`` Adam steps on ``L_lambda`` (learning rate ``tau_1 = lr``) with
      ``lambda = lambda_j`` fixed, over random batches of trajectories;
    * the multiplier update ``lambda_{j+1} = lambda_j + tau_2 L_traj(theta_{j+1})``
      (``tau_2 = multiplier_rate``) with ``L_traj`` evaluated on the whole training set at
      the new parameters,

    for ``epochs`` epochs. ``L_traj`` is :func:`trajectory_loss` (rollouts through
    torchdiffeq from each trajectory's first state) and ``||F_aug||^2`` is
    :func:`augmentation_norm` on the training states of the batch. Gradients reach the
    physical parameters (those with ``requires_grad``) and the network. Physics-only and
    data-only models have no constraint to enforce: they minimise ``L_traj`` alone (and
    ``lambda`` stays at its initial value).

    **How.** The model is wrapped in an :class:`Aphynity` objective (``lambda`` and the
    step count are its buffers) and trained by one :func:`uqdyn.train.fit` call of
    ``epochs * steps_per_epoch`` steps with one Adam optimizer. The alternation lives in the
    data source ``fit`` draws each step's batch from: at the start of epoch ``j >= 1`` it
    first calls :meth:`Aphynity.update_multiplier` on the whole training set (the update of
    epoch ``j - 1``), then seeds the batch generator and torch's RNG with ``seed + j``; the
    last update follows the ``fit`` call. A :class:`HybridDynamics` leaves with its
    observation noise ``sigma`` at the root mean square residual of its rollouts on the
    training set (see :meth:`Aphynity.update_multiplier`), so ``model.predict_batch`` gives
    a Normal of that spread.

    Parameters
    ----------
    model : HybridDynamics or LatentHybridDynamics
        Trained in place.
    trajectories : Tensor, shape (n, time, *state_shape)
        Training trajectories; row ``b`` starts at ``trajectories[b, 0]``.
    times : Tensor or sequence of float, shape (time,)
        Their common time grid.
    epochs : int
        Outer (multiplier) iterations. Default 100.
    steps_per_epoch : int
        Gradient steps between multiplier updates (``N_iter`` of the paper). Default 10.
    batch_size : int, optional
        Trajectories per step, drawn without replacement. Default all.
    lr : float
        Adam learning rate ``tau_1``. Default ``1e-3``.
    physics_lr : float, optional
        A separate Adam learning rate for the physical parameters (the physics model's
        trainable parameters, most stored through their logarithm), the network keeping
        ``lr``. Adam moves each parameter by about its learning rate per step, so a
        coefficient that starts a factor ``r`` from its value needs at least
        ``|log r| / physics_lr`` steps; a larger ``physics_lr`` lets a short schedule
        identify it. Default ``lr``.
    multiplier : float
        ``lambda_0 >= 0``. Default 1.
    multiplier_rate : float
        ``tau_2 >= 0``. Default 1.
    indices : Tensor, shape (m,), optional
        Rows of ``trajectories`` to train on, repeats allowed (a bootstrap resample).
    method, step_size
        Integration, as in :func:`uqdyn.physics.simulate`.
    samples : int
        Sampled rollouts per trajectory for a :class:`LatentHybridDynamics`.
    grad_clip : float, optional
        Gradient norm clipping passed to :func:`uqdyn.train.fit`.
    seed : int
        Epoch ``j`` draws its batches and latents from seed ``seed + j``; the latents of
        the ``j``-th multiplier update from the ``j``-th draw of a generator seeded with
        ``seed``.
    device : str or torch.device
        Where to train; ``trajectories`` stay where they are and batches are moved.

    Returns
    -------
    AphynityResult

    Raises
    ------
    ValueError, TypeError
        Before training, when the trajectories do not match the model's state shape, or the
        physics or the network returns a tendency of the wrong shape.
    uqdyn.train.TrainingError
        When the loss becomes non-finite.

    References
    ----------
    Yin, Le Guen, Dona, de Bezenac, Ayed, Thome, Gallinari, "Augmenting physical models
    with deep networks for complex dynamics forecasting", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> from uqdyn.models.hybrid import HybridDynamics
    >>> times = torch.linspace(0.0, 4.0, 9)
    >>> data = simulate(DampedPendulum(alpha=0.2), torch.tensor([[1.0, 0.0], [0.5, 0.3]]), times)
    >>> model = HybridDynamics(DampedPendulum(omega0=0.8, alpha=0.2), None)
    >>> result = fit_aphynity(model, data, times, epochs=20, steps_per_epoch=10, lr=0.02)
    >>> abs(float(model.physics.omega0) - 2 * 3.14159 / 6) < 0.01
    True
    """
    model = _check_model(model)
    epochs = _check_count(epochs, "epochs")
    seed = as_int(seed, "seed")
    objective = Aphynity(
        model,
        multiplier=multiplier,
        multiplier_rate=multiplier_rate,
        steps_per_epoch=steps_per_epoch,
        method=method,
        step_size=step_size,
        samples=samples,
    )
    trajectories = _check_trajectories(model, trajectories, times)
    pool = _pool(indices, trajectories.shape[0])
    batch_size = len(pool) if batch_size is None else _check_count(batch_size, "batch_size")
    model.check_compatible(trajectories[:, 0])
    data = TrajectoryBatch(torch.as_tensor(times, dtype=trajectories.dtype), trajectories)
    schedule = _Schedule(objective, data, pool, min(batch_size, len(pool)), seed)
    schedule.result.fit = fit(
        objective,
        schedule,
        steps=epochs * objective.steps_per_epoch,
        optimizer=_adam(model, lr, physics_lr),
        lr=lr,
        grad_clip=grad_clip,
        seed=seed,
        device=device,
        progress=False,
        log_every=objective.steps_per_epoch,
    )
    schedule.end_epoch()
    return schedule.result


def _pool(indices: Any, n: int) -> Tensor:
    """The training rows: all ``n``, or ``indices`` (checked, repeats allowed)."""
    if indices is None:
        return torch.arange(n)
    if not isinstance(indices, Tensor) or indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"indices must be an integer Tensor of rows, got {type(indices).__name__}")
    if indices.ndim != 1 or indices.numel() < 1:
        raise ValueError(f"indices must be 1-d and non-empty, got {tuple(indices.shape)}")
    if int(indices.min()) < 0 or int(indices.max()) >= n:
        raise ValueError(f"indices must lie in [0, {n}), got {indices.tolist()}")
    return indices.to("cpu", torch.int64)


def _adam(
    model: HybridModel, lr: float, physics_lr: float | None
) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    """Adam with learning rate ``lr``, and ``physics_lr`` for the physical parameters."""
    lr = as_float(lr, "lr", positive=True)
    if physics_lr is not None:
        physics_lr = as_float(physics_lr, "physics_lr", positive=True)
    physical = (
        {id(p) for p in model.physics.parameters()}
        if physics_lr is not None and model.physics is not None
        else set()
    )

    def make(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in physical], "lr": lr},
            {"params": [p for p in params if id(p) in physical], "lr": physics_lr},
        ]
        return torch.optim.Adam([g for g in groups if g["params"]])

    return make
