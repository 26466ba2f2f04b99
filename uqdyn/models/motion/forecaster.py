"""Frame forecasters: the learned motion field of de Bezenac et al. (2018) and a plain CNN.

Both take the last ``history`` frames of a sequence, shape ``(batch, history, channels,
height, width)`` (time right after batch; the stacked form ``(batch, history * channels,
height, width)`` is accepted too), and predict the next frame; :meth:`rollout` feeds the
predictions back for multi-step forecasts.

Both follow the training contract of :func:`uqdyn.train.fit`: a batch is a pair
``(history, targets)`` of shapes ``(batch, history, C, H, W)`` and ``(batch, steps, C, H, W)``
(what :func:`~uqdyn.models.motion.window_sampler` draws); ``loss(batch)`` is the model's
:class:`ForecastLoss` of the rollout and ``predict_batch(batch)`` its :class:`Normal`
forecast of the targets, so ``fit(model, sampler, steps=...)`` trains it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int, describe_type, is_real_scalar
from uqdyn.physics.warp import warp
from uqdyn.predictive import Normal

from .networks import PeriodicUNet
from .regularizers import motion_penalties

__all__ = [
    "ForecastStep",
    "Rollout",
    "ForecastLoss",
    "FrameForecaster",
    "MotionFieldForecaster",
    "ConvForecaster",
]

_EPS = 1e-6
_RECONSTRUCTIONS = ("mse", "charbonnier")


class ForecastStep(NamedTuple):
    """One predicted frame and, for motion models, the motion field and diffusion used.

    ``frame``: (batch, channels, height, width); ``velocity``: (batch, 2, height, width) or
    ``None``; ``diffusion``: (batch,) or ``None``.
    """

    frame: Tensor
    velocity: Tensor | None
    diffusion: Tensor | None


class Rollout(NamedTuple):
    """An autoregressive forecast.

    ``frames``: (batch, steps, channels, height, width); ``velocity``: (batch, steps, 2,
    height, width) or ``None``; ``diffusion``: (batch, steps) or ``None``.
    """

    frames: Tensor
    velocity: Tensor | None
    diffusion: Tensor | None


def _check_count(value: Any, name: str, low: int) -> int:
    return as_int(value, name, minimum=low)


def _non_negative(value: Any, name: str) -> float:
    return as_float(value, name, nonnegative=True)


@dataclass
class ForecastLoss:
    r"""Frame loss of an autoregressive rollout plus the motion-field regularisers.

    For a batch ``(history, targets)`` with ``targets`` of shape ``(batch, steps, C, H, W)``
    the model is rolled out ``steps`` frames and

    .. math::

        L = \langle \rho(\hat I - I) \rangle
            + \lambda_\mathrm{div} R_\mathrm{div}(w) + \lambda_\mathrm{magn} R_\mathrm{magn}(w)
            + \lambda_\mathrm{grad} R_\mathrm{grad}(w)

    with :math:`\rho(e) = e^2` (``"mse"``) or the Charbonnier penalty
    :math:`\sqrt{e^2 + \epsilon^2} - \epsilon` (``"charbonnier"``), the mean over every
    frame, step and observed point (NaN targets are not observed and not scored), and the
    regularisers of :func:`~uqdyn.models.motion.motion_penalties` over every motion field of
    the rollout (de Bezenac et al. 2018). Models without a motion field (e.g.
    :class:`ConvForecaster`) get the frame term only.

    Every :class:`FrameForecaster` owns one (``model.objective``, set from its constructor
    options) and ``model.loss(batch)`` uses it, so ``fit(model, sampler)`` needs no
    ``loss_fn``; a ``ForecastLoss`` passed as ``fit(model, sampler, loss_fn=ForecastLoss(...))``
    trains the same model with other weights.

    Parameters
    ----------
    reconstruction : {"mse", "charbonnier"}
        Frame penalty. Default ``"mse"``.
    divergence, magnitude, smoothness : float
        Weights ``>= 0`` of the regularisers. Defaults 0 (no regularisation).
    charbonnier_eps : float
        ``epsilon`` of the Charbonnier penalty. Default ``1e-3``.
    spacing : float or (dy, dx)
        Grid spacing of the derivatives in the regularisers. Default 1.0.

    Examples
    --------
    >>> import torch
    >>> model = MotionFieldForecaster(history=2, width=4, depth=1)
    >>> batch = (torch.randn(3, 2, 1, 8, 8), torch.randn(3, 2, 1, 8, 8))
    >>> ForecastLoss(divergence=0.1)(model, batch).shape
    torch.Size([])
    """

    reconstruction: str = "mse"
    divergence: float = 0.0
    magnitude: float = 0.0
    smoothness: float = 0.0
    charbonnier_eps: float = 1e-3
    spacing: float | tuple[float, float] = 1.0

    def __post_init__(self) -> None:
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {_RECONSTRUCTIONS}, got {self.reconstruction!r}"
            )
        for name in ("divergence", "magnitude", "smoothness"):
            setattr(self, name, _non_negative(getattr(self, name), name))
        if _non_negative(self.charbonnier_eps, "charbonnier_eps") == 0.0:
            raise ValueError("charbonnier_eps must be > 0, got 0")

    def __call__(self, model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        """Loss of ``model`` on ``batch = (history, targets)``, a tensor of shape ().

        ``history``: (batch, k, C, H, W); ``targets``: (batch, steps, C, H, W).
        """
        if not isinstance(model, FrameForecaster):
            raise TypeError(f"model must be a FrameForecaster, got {type(model).__name__}")
        return model._objective_loss(batch, self)

    def of_rollout(self, rollout: Rollout, targets: Tensor, observed: Tensor | None) -> Tensor:
        """The loss of a rollout against ``targets`` (both ``(batch, steps, C, H, W)``).

        ``observed``: boolean ``(batch, steps, C, H, W)`` of the scored entries, or ``None``
        for all (``targets`` must then be finite).
        """
        if observed is None:
            error = rollout.frames - targets
        else:
            error = rollout.frames - torch.where(observed, targets, torch.zeros_like(targets))
        if self.reconstruction == "mse":
            penalty = error.square()
        else:
            eps = self.charbonnier_eps
            penalty = torch.sqrt(error.square() + eps * eps) - eps
        loss = penalty.mean() if observed is None else penalty[observed].mean()
        if rollout.velocity is not None and (self.divergence or self.magnitude or self.smoothness):
            penalties = motion_penalties(rollout.velocity, self.spacing)
            loss = (
                loss
                + self.divergence * penalties.divergence
                + self.magnitude * penalties.magnitude
                + self.smoothness * penalties.smoothness
            )
        return loss


def _pair(batch: Any) -> tuple[Any, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"batch must be a pair (history, targets) of tensors, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    history, targets = batch
    if not isinstance(targets, Tensor) or targets.ndim != 5 or not targets.is_floating_point():
        raise ValueError(
            "targets must be a floating tensor of shape (batch, steps, channels, height, "
            "width), got "
            f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}"
        )
    return history, targets


def _observed(targets: Tensor) -> Tensor | None:
    """``None`` for complete targets, else the mask of non-NaN entries (infinity refused)."""
    finite = torch.isfinite(targets)
    if bool(finite.all()):
        return None
    if bool(torch.isinf(targets).any()):
        raise ValueError(
            "targets holds infinite values; expected finite values (NaN where not observed)"
        )
    if not bool(finite.any()):
        raise ValueError("targets holds only NaN; expected at least one observed (finite) value")
    return finite


class FrameForecaster(nn.Module):
    r"""Common input checks, normalisation, rollout, loss and predictive of the forecasters.

    Subclasses implement :meth:`step`. The network sees the history frames standardised per
    sample and channel (minus their mean, divided by their standard deviation), so
    forecasts are equivariant to shifts and positive rescalings of the field values.

    **Training contract.** A batch is ``(history, targets)``, shapes ``(batch, k, C, H, W)``
    and ``(batch, steps, C, H, W)``; :meth:`loss` is :attr:`objective` (a
    :class:`ForecastLoss`) of the ``steps``-frame rollout, NaN targets not scored.

    **Predictive.** A forecaster is deterministic; its forecast distribution
    (:meth:`forecast`, :meth:`predict_batch`) is a :class:`~uqdyn.predictive.Normal`
    centred on the rollout with the variance of its training errors under random-walk
    error growth: lead ``j`` (``1 .. steps``) of channel ``c`` has variance
    ``j * sigma_c^2``. The one-step variance ``sigma_c^2`` (buffer ``error_variance``,
    shape ``(C,)``, 1 before training) is the maximum-likelihood estimate
    :math:`\langle e_{j}^2 / j \rangle` of each training batch's errors ``e_j`` at lead
    ``j``, averaged over the batches by :meth:`loss` in training mode with gradients (the
    way batch normalisation tracks its statistics: a running mean over the first
    ``1 / error_momentum`` batches, then an exponential average with ``error_momentum``).
    It is an in-sample estimate, so recalibrate on held-out data
    (:mod:`uqdyn.calibration`) where coverage matters; an
    :class:`~uqdyn.models.motion.ForecasterEnsemble` of several seeds gives an
    :class:`~uqdyn.predictive.Ensemble` instead.

    Parameters
    ----------
    channels : int
        Channels ``C`` of a frame.
    history : int
        Number ``k`` of input frames.
    depth : int
        Pooling levels of the encoder-decoder; frame sizes must be multiples of
        ``2**depth``.
    objective : ForecastLoss, optional
        The training loss of :meth:`loss` (default: frame MSE only).
    error_momentum : float
        Weight in ``(0, 1]`` of a new batch in the running error variance. Default 0.1.
    """

    error_variance: Tensor
    error_batches: Tensor

    def __init__(
        self,
        channels: int,
        history: int,
        depth: int,
        *,
        objective: ForecastLoss | None = None,
        error_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.channels = _check_count(channels, "channels", 1)
        self.history = _check_count(history, "history", 1)
        self.depth = _check_count(depth, "depth", 0)
        if objective is None:
            objective = ForecastLoss()
        if not isinstance(objective, ForecastLoss):
            raise TypeError(f"objective must be a ForecastLoss, got {type(objective).__name__}")
        self.objective = objective
        momentum = as_float(error_momentum, "error_momentum", finite=False)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"error_momentum must be a float in (0, 1], got {error_momentum!r}")
        self.error_momentum = momentum
        self.register_buffer("error_variance", torch.ones(self.channels))
        self.register_buffer("error_batches", torch.zeros((), dtype=torch.long))

    def check_frames(self, frames: Any, name: str = "frames") -> Tensor:
        """Validate ``frames`` and return them as ``(batch, history, channels, height, width)``.

        Raises
        ------
        TypeError
            If ``frames`` is not a floating tensor.
        ValueError
            On a wrong number of dimensions, frames or channels, a size that is not a
            multiple of ``2**depth``, or non-finite values.
        """
        k, c = self.history, self.channels
        if not isinstance(frames, Tensor) or not frames.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {type(frames).__name__}")
        if frames.ndim == 4:
            if frames.shape[1] != k * c:
                raise ValueError(
                    f"{name} has shape {tuple(frames.shape)}: {frames.shape[1]} stacked channels, "
                    f"expected history * channels = {k} * {c} = {k * c}"
                )
            frames = frames.reshape(frames.shape[0], k, c, *frames.shape[-2:])
        elif frames.ndim == 5:
            if frames.shape[1] != k:
                raise ValueError(
                    f"{name} has shape {tuple(frames.shape)}: {frames.shape[1]} frames, expected "
                    f"history = {k} (shape (batch, {k}, {c}, height, width))"
                )
            if frames.shape[2] != c:
                raise ValueError(
                    f"{name} has shape {tuple(frames.shape)}: {frames.shape[2]} channels, "
                    f"expected channels = {c} (shape (batch, {k}, {c}, height, width))"
                )
        else:
            raise ValueError(
                f"{name} must have shape (batch, {k}, {c}, height, width) or "
                f"(batch, {k * c}, height, width), got {tuple(frames.shape)}"
            )
        height, width = frames.shape[-2:]
        multiple = 2**self.depth
        if frames.shape[0] < 1 or height < multiple or height % multiple or width % multiple:
            raise ValueError(
                f"{name} has shape {tuple(frames.shape)}: batch must be >= 1 and height and "
                f"width positive multiples of 2**depth = {multiple}, got {height} x {width}"
            )
        if not bool(torch.isfinite(frames.detach()).all()):
            raise ValueError(f"{name} holds non-finite values; frames must be finite")
        return frames

    @staticmethod
    def _standardise(frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Network input (batch, k * C, H, W) and the per-sample offset and scale (B, 1, C, 1, 1)."""
        offset = frames.mean(dim=(1, 3, 4), keepdim=True)
        scale = frames.std(dim=(1, 3, 4), keepdim=True).clamp_min(_EPS)
        normalised = (frames - offset) / scale
        return normalised.flatten(1, 2), offset, scale

    def step(self, frames: Tensor) -> ForecastStep:  # pragma: no cover - abstract
        """Predict the frame after ``frames`` (checked, shape (batch, k, C, H, W))."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training contract
    def loss(self, batch: Sequence[Tensor]) -> Tensor:
        """Training loss of a batch ``(history, targets)``: :attr:`objective`, shape ().

        ``history``: (batch, k, C, H, W) (or stacked); ``targets``: (batch, steps, C, H, W),
        NaN where not observed. In training mode with gradients the running
        ``error_variance`` of the predictive is updated from this batch.

        Raises
        ------
        ValueError
            On a batch that is not such a pair, non-finite history frames, infinite or
            all-NaN targets, or targets whose shape does not match the rollout.
        """
        return self._objective_loss(batch, self.objective)

    def _objective_loss(self, batch: Any, objective: ForecastLoss) -> Tensor:
        history, targets = _pair(batch)
        self.check_frames(history, "history")
        rollout = self.rollout(history, targets.shape[1])
        if rollout.frames.shape != targets.shape:
            raise ValueError(
                f"targets has shape {tuple(targets.shape)}, expected {tuple(rollout.frames.shape)} "
                "to match the rollout of history"
            )
        observed = _observed(targets)
        loss = objective.of_rollout(rollout, targets, observed)
        if self.training and torch.is_grad_enabled():
            self._track_errors(rollout.frames.detach(), targets, observed)
        return loss

    @torch.no_grad()
    def _track_errors(self, frames: Tensor, targets: Tensor, observed: Tensor | None) -> None:
        leads = torch.arange(1, frames.shape[1] + 1, dtype=frames.dtype, device=frames.device)
        scaled = (frames - targets).square() / leads.view(1, -1, 1, 1, 1)
        dims = (0, 1, 3, 4)
        if observed is None:
            estimate = scaled.mean(dim=dims)
        else:
            kept = observed.to(scaled.dtype)
            total = torch.where(observed, scaled, torch.zeros_like(scaled)).sum(dim=dims)
            count = kept.sum(dim=dims)
            estimate = torch.where(count > 0, total / count.clamp_min(1), self.error_variance)
        weight = max(self.error_momentum, 1.0 / (int(self.error_batches) + 1))
        self.error_variance.lerp_(estimate.to(self.error_variance), weight)
        self.error_batches += 1

    def forecast(self, frames: Tensor, steps: int) -> Normal:
        """The forecast distribution of the next ``steps`` frames.

        Parameters
        ----------
        frames : Tensor, shape (batch, history, channels, height, width)
            Or stacked ``(batch, history * channels, height, width)``, oldest frame first.
        steps : int
            Number of frames to predict (>= 1).

        Returns
        -------
        Normal
            Batch shape ``(batch, steps, channels, height, width)``: the rollout as the
            mean and standard deviation ``sqrt(j * error_variance)`` at lead ``j``.
        """
        return self._normal(self.rollout(frames, steps).frames)

    def _normal(self, frames: Tensor) -> Normal:
        leads = torch.arange(1, frames.shape[1] + 1, dtype=frames.dtype, device=frames.device)
        variance = leads.view(-1, 1) * self.error_variance.to(frames).view(1, -1)
        scale = variance.clamp_min(1e-12).sqrt().view(1, frames.shape[1], -1, 1, 1)
        return Normal(frames, scale.expand_as(frames))

    def predict_batch(self, batch: Sequence[Tensor]) -> tuple[Normal, Tensor, Tensor | None]:
        """Forecast of a batch ``(history, targets)`` for validation with proper scores.

        Returns
        -------
        (Normal, targets, mask)
            The :meth:`forecast` of ``targets.shape[1]`` frames (batch shape
            ``(batch, steps, C, H, W)``), the targets and ``None``, or, when ``targets``
            holds NaN (not observed), the boolean mask of its observed entries (same shape).
        """
        history, targets = _pair(batch)
        self.check_frames(history, "history")
        prediction = self.forecast(history, targets.shape[1])
        if tuple(prediction.batch_shape) != tuple(targets.shape):
            raise ValueError(
                f"targets has shape {tuple(targets.shape)}, expected "
                f"{tuple(prediction.batch_shape)} to match the rollout of history"
            )
        return prediction, targets, _observed(targets)

    def forward(self, frames: Tensor) -> Tensor:
        """Next frame.

        Parameters
        ----------
        frames : Tensor, shape (batch, history, channels, height, width)
            Or stacked ``(batch, history * channels, height, width)``, oldest frame first.

        Returns
        -------
        Tensor, shape (batch, channels, height, width)
        """
        return self.step(self.check_frames(frames)).frame

    def rollout(self, frames: Tensor, steps: int) -> Rollout:
        """Autoregressive forecast: each prediction joins the history for the next step.

        Parameters
        ----------
        frames : Tensor, shape (batch, history, channels, height, width)
            Or stacked ``(batch, history * channels, height, width)``, oldest frame first.
        steps : int
            Number of frames to predict (>= 1).

        Returns
        -------
        Rollout
            ``frames`` (batch, steps, channels, height, width) and, for motion models,
            ``velocity`` (batch, steps, 2, height, width) and ``diffusion`` (batch, steps).
        """
        window = self.check_frames(frames)
        steps = _check_count(steps, "steps", 1)
        predicted, velocities, diffusions = [], [], []
        for _ in range(steps):
            result = self.step(window)
            predicted.append(result.frame)
            if result.velocity is not None and result.diffusion is not None:
                velocities.append(result.velocity)
                diffusions.append(result.diffusion)
            window = torch.cat([window[:, 1:], result.frame.unsqueeze(1)], dim=1)
        return Rollout(
            frames=torch.stack(predicted, dim=1),
            velocity=torch.stack(velocities, dim=1) if velocities else None,
            diffusion=torch.stack(diffusions, dim=1) if diffusions else None,
        )


class MotionFieldForecaster(FrameForecaster):
    r"""Learned motion field + semi-Lagrangian warp (de Bezenac, Pajot, Gallinari, ICLR 2018).

    A periodic U-Net (:class:`PeriodicUNet`) reads the standardised last ``history``
    frames and returns a motion field ``w`` (``max_speed * tanh(raw / max_speed)`` per
    component, in ``spacing`` per ``dt``) and, with ``diffusion="learned"``, a diffusion
    coefficient ``D in [min_diffusion, max_diffusion]`` per sample (a sigmoid of a linear
    map of the mean bottleneck features). The current frame is then moved by
    :func:`uqdyn.physics.warp`, the Gaussian-kernel semi-Lagrangian step
    ``I_{t+1}(x) = sum_y k(x - w(x) dt - y) I_t(y)``. Nothing supervises ``w``: it is learned
    end to end from the next frames by :meth:`loss` (:class:`ForecastLoss`: the frame error
    of the rollout plus the weighted divergence, magnitude and smoothness penalties of
    ``w``). A positive ``D`` keeps the warp differentiable in ``w`` (``D = 0`` is
    nearest-point transport, whose gradient in ``w`` vanishes).

    Parameters
    ----------
    channels : int
        Channels of a frame. Default 1.
    history : int
        Input frames ``k``. Default 4.
    width, depth : int
        U-Net width and pooling levels. Defaults 16 and 2.
    diffusion : "learned" or float
        ``"learned"`` (default) or a fixed ``D > 0``.
    min_diffusion, max_diffusion : float
        Range of a learned ``D`` (``0 < min < max``). Defaults 0.05 and 0.5 (grid units).
    max_speed : float
        Bound on each component of ``w``. Default 4.0.
    dt : float
        Time step between frames passed to the warp. Default 1.0.
    spacing : float or (dy, dx)
        Grid spacing passed to the warp. Default 1.0 (``w`` in cells per frame).
    truncate : float
        Warp kernel half-width in standard deviations. Default 3.0.
    reconstruction : {"mse", "charbonnier"}
        Frame penalty of the loss. Default ``"mse"``.
    divergence_weight, magnitude_weight, smoothness_weight : float
        Weights ``>= 0`` of the motion-field regularisers in the loss (on the grid
        ``spacing``). Defaults 0.
    charbonnier_eps : float
        ``epsilon`` of the Charbonnier penalty. Default ``1e-3``.
    error_momentum : float
        Update weight of the running error variance of the predictive (see
        :class:`FrameForecaster`). Default 0.1.

    Examples
    --------
    >>> import torch
    >>> model = MotionFieldForecaster(channels=1, history=3, width=4, depth=1)
    >>> model(torch.randn(2, 3, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    >>> model.rollout(torch.randn(2, 3, 1, 8, 8), steps=5).velocity.shape
    torch.Size([2, 5, 2, 8, 8])
    """

    def __init__(
        self,
        channels: int = 1,
        history: int = 4,
        *,
        width: int = 16,
        depth: int = 2,
        diffusion: str | float = "learned",
        min_diffusion: float = 0.05,
        max_diffusion: float = 0.5,
        max_speed: float = 4.0,
        dt: float = 1.0,
        spacing: float | tuple[float, float] = 1.0,
        truncate: float = 3.0,
        reconstruction: str = "mse",
        divergence_weight: float = 0.0,
        magnitude_weight: float = 0.0,
        smoothness_weight: float = 0.0,
        charbonnier_eps: float = 1e-3,
        error_momentum: float = 0.1,
    ) -> None:
        objective = ForecastLoss(
            reconstruction,
            divergence=divergence_weight,
            magnitude=magnitude_weight,
            smoothness=smoothness_weight,
            charbonnier_eps=charbonnier_eps,
            spacing=spacing,
        )
        super().__init__(
            channels, history, depth, objective=objective, error_momentum=error_momentum
        )
        self.unet = PeriodicUNet(self.history * self.channels, 2, width=width, depth=self.depth)
        min_diffusion = as_float(min_diffusion, "min_diffusion", finite=False)
        max_diffusion = as_float(max_diffusion, "max_diffusion", finite=False)
        if isinstance(diffusion, str) and diffusion == "learned":
            if not (0.0 < min_diffusion < max_diffusion < math.inf):
                raise ValueError(
                    "min_diffusion and max_diffusion must satisfy 0 < min < max < inf, got "
                    f"{min_diffusion!r} and {max_diffusion!r}"
                )
            self.diffusion_head: nn.Linear | None = nn.Linear(self.unet.bottleneck_channels, 1)
            nn.init.zeros_(self.diffusion_head.bias)
            self.fixed_diffusion: float | None = None
        elif is_real_scalar(diffusion):
            self.diffusion_head = None
            self.fixed_diffusion = as_float(diffusion, "diffusion", positive=True)
        elif isinstance(diffusion, str):
            raise ValueError(f"diffusion must be 'learned' or a float > 0, got {diffusion!r}")
        else:
            raise TypeError(
                f"diffusion={diffusion!r} is a {describe_type(diffusion)}; expected 'learned' or "
                "a float > 0"
            )
        self.min_diffusion = min_diffusion
        self.max_diffusion = max_diffusion
        self.max_speed = as_float(max_speed, "max_speed", positive=True)
        self.dt = dt
        self.spacing = spacing
        self.truncate = truncate

    def estimate(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Motion field and diffusion from the history.

        Parameters
        ----------
        frames : Tensor, shape (batch, history, channels, height, width)
            Or stacked ``(batch, history * channels, height, width)``.

        Returns
        -------
        velocity : Tensor, shape (batch, 2, height, width)
            ``(w_x, w_y)``.
        diffusion : Tensor, shape (batch,)
        """
        frames = self.check_frames(frames)
        return self._estimate(frames)

    def _estimate(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        inputs, _, _ = self._standardise(frames)
        raw, code = self.unet(inputs)
        velocity = self.max_speed * torch.tanh(raw / self.max_speed)
        if self.diffusion_head is not None:
            gate = torch.sigmoid(self.diffusion_head(code.mean(dim=(-2, -1))).squeeze(-1))
            diffusion = self.min_diffusion + (self.max_diffusion - self.min_diffusion) * gate
        else:
            assert self.fixed_diffusion is not None
            diffusion = frames.new_full((frames.shape[0],), self.fixed_diffusion)
        return velocity, diffusion

    def step(self, frames: Tensor) -> ForecastStep:
        """Warp the last frame with the estimated motion field (``frames`` already checked)."""
        velocity, diffusion = self._estimate(frames)
        moved = warp(
            frames[:, -1],
            velocity,
            diffusion,
            self.dt,
            spacing=self.spacing,
            truncate=self.truncate,
        )
        return ForecastStep(moved, velocity, diffusion)


class ConvForecaster(FrameForecaster):
    """Plain convolutional baseline: the same U-Net predicts the frame increment directly.

    ``I_{t+1} = I_t + s * U(standardised history)`` with ``s`` the history's standard
    deviation per sample and channel (a residual forecaster, no transport prior). With the
    same ``width`` and ``depth`` it has the parameters of :class:`MotionFieldForecaster`
    up to its output head.

    Parameters
    ----------
    channels : int
        Channels of a frame. Default 1.
    history : int
        Input frames ``k``. Default 4.
    width, depth : int
        U-Net width and pooling levels. Defaults 16 and 2.
    reconstruction : {"mse", "charbonnier"}
        Frame penalty of the loss. Default ``"mse"``.
    charbonnier_eps : float
        ``epsilon`` of the Charbonnier penalty. Default ``1e-3``.
    error_momentum : float
        Update weight of the running error variance of the predictive (see
        :class:`FrameForecaster`). Default 0.1.

    Examples
    --------
    >>> import torch
    >>> model = ConvForecaster(channels=2, history=3, width=4, depth=1)
    >>> model.rollout(torch.randn(5, 6, 8, 8), steps=4).frames.shape
    torch.Size([5, 4, 2, 8, 8])
    >>> model.forecast(torch.randn(5, 6, 8, 8), steps=4).batch_shape
    torch.Size([5, 4, 2, 8, 8])
    """

    def __init__(
        self,
        channels: int = 1,
        history: int = 4,
        *,
        width: int = 16,
        depth: int = 2,
        reconstruction: str = "mse",
        charbonnier_eps: float = 1e-3,
        error_momentum: float = 0.1,
    ) -> None:
        objective = ForecastLoss(reconstruction, charbonnier_eps=charbonnier_eps)
        super().__init__(
            channels, history, depth, objective=objective, error_momentum=error_momentum
        )
        self.unet = PeriodicUNet(
            self.history * self.channels, self.channels, width=width, depth=self.depth
        )

    def step(self, frames: Tensor) -> ForecastStep:
        """Add the predicted increment to the last frame (``frames`` already checked)."""
        inputs, _, scale = self._standardise(frames)
        increment, _ = self.unet(inputs)
        return ForecastStep(frames[:, -1] + scale[:, 0] * increment, None, None)
