"""Frame forecasters: the learned motion field of de Bezenac et al. (2018) and a plain CNN.

Both take the last ``history`` frames of a sequence, shape ``(batch, history, channels,
height, width)`` (time right after batch; the stacked form ``(batch, history * channels,
height, width)`` is accepted too), and predict the next frame; :meth:`rollout` feeds the
predictions back for multi-step forecasts.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from uqdyn.physics.warp import warp

from .networks import PeriodicUNet

__all__ = ["ForecastStep", "Rollout", "FrameForecaster", "MotionFieldForecaster", "ConvForecaster"]

_EPS = 1e-6


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
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


class FrameForecaster(nn.Module):
    """Common input checks, normalisation and rollout of the frame forecasters.

    Subclasses implement :meth:`step`. The network sees the history frames standardised per
    sample and channel (minus their mean, divided by their standard deviation), so
    forecasts are equivariant to shifts and positive rescalings of the field values.

    Parameters
    ----------
    channels : int
        Channels ``C`` of a frame.
    history : int
        Number ``k`` of input frames.
    depth : int
        Pooling levels of the encoder-decoder; frame sizes must be multiples of
        ``2**depth``.
    """

    def __init__(self, channels: int, history: int, depth: int) -> None:
        super().__init__()
        self.channels = _check_count(channels, "channels", 1)
        self.history = _check_count(history, "history", 1)
        self.depth = _check_count(depth, "depth", 0)

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
    end to end from the next frames (see :class:`~uqdyn.models.motion.ForecastLoss`). A
    positive ``D`` keeps the warp differentiable in ``w`` (``D = 0`` is nearest-point
    transport, whose gradient in ``w`` vanishes).

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
    ) -> None:
        super().__init__(channels, history, depth)
        self.unet = PeriodicUNet(history * channels, 2, width=width, depth=depth)
        if diffusion == "learned":
            if not (0.0 < float(min_diffusion) < float(max_diffusion) < math.inf):
                raise ValueError(
                    "min_diffusion and max_diffusion must satisfy 0 < min < max < inf, got "
                    f"{min_diffusion!r} and {max_diffusion!r}"
                )
            self.diffusion_head: nn.Linear | None = nn.Linear(self.unet.bottleneck_channels, 1)
            nn.init.zeros_(self.diffusion_head.bias)
            self.fixed_diffusion: float | None = None
        elif (
            isinstance(diffusion, (int, float))
            and not isinstance(diffusion, bool)
            and math.isfinite(diffusion)
            and diffusion > 0
        ):
            self.diffusion_head = None
            self.fixed_diffusion = float(diffusion)
        else:
            raise ValueError(f"diffusion must be 'learned' or a float > 0, got {diffusion!r}")
        if not (isinstance(max_speed, (int, float)) and math.isfinite(max_speed) and max_speed > 0):
            raise ValueError(f"max_speed must be a positive float, got {max_speed!r}")
        self.min_diffusion = float(min_diffusion)
        self.max_diffusion = float(max_diffusion)
        self.max_speed = float(max_speed)
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

    Examples
    --------
    >>> import torch
    >>> model = ConvForecaster(channels=2, history=3, width=4, depth=1)
    >>> model.rollout(torch.randn(5, 6, 8, 8), steps=4).frames.shape
    torch.Size([5, 4, 2, 8, 8])
    """

    def __init__(
        self, channels: int = 1, history: int = 4, *, width: int = 16, depth: int = 2
    ) -> None:
        super().__init__(channels, history, depth)
        self.unet = PeriodicUNet(history * channels, channels, width=width, depth=depth)

    def step(self, frames: Tensor) -> ForecastStep:
        """Add the predicted increment to the last frame (``frames`` already checked)."""
        inputs, _, scale = self._standardise(frames)
        increment, _ = self.unet(inputs)
        return ForecastStep(frames[:, -1] + scale[:, 0] * increment, None, None)
