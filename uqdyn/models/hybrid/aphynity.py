"""APHYNITY training: minimal augmentation subject to fitting the trajectories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn.physics import simulate
from uqdyn.scoring import crps_ensemble
from uqdyn.train import FitResult, fit

from .augmented import HybridDynamics
from .stochastic import LatentHybridDynamics

__all__ = ["AphynityResult", "fit_aphynity", "augmentation_norm", "trajectory_loss"]

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
    fits : list of FitResult
        The :func:`uqdyn.train.fit` result of each epoch.
    """

    multipliers: list[float] = field(default_factory=list)
    trajectory_loss: list[float] = field(default_factory=list)
    augmentation_norm: list[float] = field(default_factory=list)
    fits: list[FitResult] = field(default_factory=list)


class _Objective(nn.Module):
    """The model plus the Lagrange multiplier (a buffer, so it travels with state_dict)."""

    multiplier: Tensor

    def __init__(self, model: HybridModel, multiplier: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("multiplier", torch.tensor(float(multiplier), dtype=dtype))


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
    if isinstance(model, LatentHybridDynamics):
        paths = model.sample(
            trajectories[:, 0],
            times,
            samples,
            generator=generator,
            method=method,
            step_size=step_size,
        )
        score = crps_ensemble(trajectories[:, 1:], paths[:, :, 1:], member_dim=0, estimator="fair")
        return score.mean()
    prediction = simulate(model, trajectories[:, 0], times, method, step_size=step_size)
    return (prediction[:, 1:] - trajectories[:, 1:]).square().mean()


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
      ``lambda = lambda_j`` fixed, over random batches of trajectories, through
      :func:`uqdyn.train.fit` (one persistent optimizer, so Adam's moments carry over);
    * the multiplier update ``lambda_{j+1} = lambda_j + tau_2 L_traj(theta_{j+1})``
      (``tau_2 = multiplier_rate``) with ``L_traj`` evaluated on the whole training set at
      the new parameters,

    for ``epochs`` epochs. ``L_traj`` is :func:`trajectory_loss` (rollouts through
    torchdiffeq from each trajectory's first state) and ``||F_aug||^2`` is
    :func:`augmentation_norm` on the training states of the batch. Gradients reach the
    physical parameters (those with ``requires_grad``) and the network. Physics-only and
    data-only models have no constraint to enforce: they minimise ``L_traj`` alone (and
    ``lambda`` stays at its initial value).

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
        Epoch ``j`` calls ``fit`` with seed ``seed + j`` (batches and latent draws).
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
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if physics_lr is not None and (
        isinstance(physics_lr, bool)
        or not isinstance(physics_lr, (int, float))
        or not math.isfinite(physics_lr)
        or physics_lr <= 0
    ):
        raise ValueError(f"physics_lr must be a finite float > 0, got {physics_lr!r}")
    for name, rate in (("multiplier", multiplier), ("multiplier_rate", multiplier_rate)):
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate < 0
        ):
            raise ValueError(f"{name} must be a finite float >= 0, got {rate!r}")
    trajectories = _check_trajectories(model, trajectories, times)
    n = trajectories.shape[0]
    if indices is None:
        pool = torch.arange(n)
    else:
        if not isinstance(indices, Tensor) or indices.dtype not in (torch.int32, torch.int64):
            raise TypeError(
                f"indices must be an integer Tensor of rows, got {type(indices).__name__}"
            )
        if indices.ndim != 1 or indices.numel() < 1:
            raise ValueError(f"indices must be 1-d and non-empty, got {tuple(indices.shape)}")
        if int(indices.min()) < 0 or int(indices.max()) >= n:
            raise ValueError(f"indices must lie in [0, {n}), got {indices.tolist()}")
        pool = indices.to("cpu", torch.int64)
    if batch_size is None:
        batch_size = len(pool)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = min(batch_size, len(pool))
    model.check_compatible(trajectories[:, 0])
    times_t = torch.as_tensor(times, dtype=trajectories.dtype)

    hybrid = isinstance(model, LatentHybridDynamics) or (
        model.physics is not None and model.augmentation is not None
    )
    objective = _Objective(model, multiplier, trajectories.dtype)
    options: dict[str, Any] = {"method": method, "step_size": step_size, "samples": samples}

    def loss_fn(obj: nn.Module, batch: Tensor) -> Tensor:
        # ``obj`` is ``objective`` (fit moves it in place), so ``model`` is its model
        states = batch.reshape(-1, *batch.shape[2:])
        fit_term = trajectory_loss(model, batch, times_t.to(batch.device), **options)
        if not hybrid:
            return fit_term
        return augmentation_norm(model, states) + objective.multiplier * fit_term

    def draw(generator: torch.Generator) -> Tensor:
        order = torch.randperm(len(pool), generator=generator)[:batch_size]
        return trajectories[pool[order]]

    optimizer: list[torch.optim.Optimizer] = []

    physical = (
        {id(p) for p in model.physics.parameters()}
        if physics_lr is not None and model.physics is not None
        else set()
    )

    def persistent_adam(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if not optimizer:
            groups: list[dict[str, Any]] = [
                {"params": [p for p in params if id(p) not in physical], "lr": lr}
            ]
            if physical:
                groups.append(
                    {"params": [p for p in params if id(p) in physical], "lr": physics_lr}
                )
            optimizer.append(torch.optim.Adam([g for g in groups if g["params"]]))
        return optimizer[0]

    result = AphynityResult(multipliers=[float(multiplier)])
    evaluation = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        outcome = fit(
            objective,
            draw,
            loss_fn=loss_fn,
            steps=steps_per_epoch,
            optimizer=persistent_adam,
            lr=lr,
            grad_clip=grad_clip,
            seed=seed + epoch,
            device=device,
            progress=False,
            log_every=steps_per_epoch,
        )
        result.fits.append(outcome)
        fit_value, norm_value = _evaluate(model, trajectories[pool], times_t, options, evaluation)
        result.trajectory_loss.append(fit_value)
        result.augmentation_norm.append(norm_value)
        if hybrid:
            objective.multiplier += multiplier_rate * fit_value
        result.multipliers.append(float(objective.multiplier))
    return result


def _evaluate(
    model: HybridModel,
    trajectories: Tensor,
    times: Tensor,
    options: dict[str, Any],
    generator: torch.Generator,
) -> tuple[float, float]:
    """``L_traj`` and ``||F_aug||^2`` on all ``trajectories`` (no gradients)."""
    device = next((p.device for p in model.parameters()), trajectories.device)
    data = trajectories.to(device)
    latent_generator = None
    if isinstance(model, LatentHybridDynamics):
        latent_generator = torch.Generator(device=device).manual_seed(
            int(torch.randint(2**31 - 1, (1,), generator=generator))
        )
    with torch.no_grad():
        fit_value = trajectory_loss(
            model, data, times.to(device), generator=latent_generator, **options
        )
        states = data.reshape(-1, *data.shape[2:])
        latent = None
        if isinstance(model, LatentHybridDynamics):
            latent = torch.randn(
                states.shape[0],
                model.latent_dim,
                generator=latent_generator,
                device=device,
                dtype=states.dtype,
            )
        norm_value = augmentation_norm(model, states, latent)
    return float(fit_value), float(norm_value)
