"""End-to-end training of frame forecasters on next frames, and deep ensembles of them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from uqdyn.predictive import Ensemble
from uqdyn.train import FitResult, fit

from .forecaster import FrameForecaster
from .regularizers import motion_penalties

__all__ = ["ForecastLoss", "window_sampler", "ForecasterEnsemble", "fit_forecaster_ensemble"]

_RECONSTRUCTIONS = ("mse", "charbonnier")


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


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
    frame, step and point, and the regularisers of :func:`motion_penalties` over every
    motion field of the rollout (de Bezenac et al. 2018). Models without a motion field
    (e.g. :class:`ConvForecaster`) get the frame term only. Use as
    ``fit(model, sampler, loss_fn=ForecastLoss(...))``.

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
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("batch must be a pair (history, targets) of tensors")
        history, targets = batch
        if not isinstance(targets, Tensor) or targets.ndim != 5:
            raise ValueError(
                "targets must have shape (batch, steps, channels, height, width), got "
                f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}"
            )
        rollout = model.rollout(history, targets.shape[1])
        if rollout.frames.shape != targets.shape:
            raise ValueError(
                f"targets has shape {tuple(targets.shape)}, expected {tuple(rollout.frames.shape)} "
                "to match the rollout of history"
            )
        error = rollout.frames - targets
        if self.reconstruction == "mse":
            loss = error.square().mean()
        else:
            eps = self.charbonnier_eps
            loss = (torch.sqrt(error.square() + eps * eps) - eps).mean()
        if rollout.velocity is not None and (self.divergence or self.magnitude or self.smoothness):
            penalties = motion_penalties(rollout.velocity, self.spacing)
            loss = (
                loss
                + self.divergence * penalties.divergence
                + self.magnitude * penalties.magnitude
                + self.smoothness * penalties.smoothness
            )
        return loss


def window_sampler(
    sequences: Tensor, history: int, horizon: int, batch_size: int
) -> Callable[[torch.Generator], tuple[Tensor, Tensor]]:
    """Random training windows ``(history frames, next horizon frames)`` from sequences.

    Parameters
    ----------
    sequences : Tensor, shape (n, time, channels, height, width)
        ``time >= history + horizon``.
    history, horizon, batch_size : int
        Window lengths and batch size (each >= 1).

    Returns
    -------
    callable
        ``sampler(generator) -> (frames, targets)`` with shapes ``(batch_size, history, C,
        H, W)`` and ``(batch_size, horizon, C, H, W)``: a sequence and a start time drawn
        uniformly for each sample, the ``train_data`` of :func:`uqdyn.train.fit`.

    Examples
    --------
    >>> import torch
    >>> sampler = window_sampler(torch.randn(10, 8, 1, 4, 4), history=3, horizon=2, batch_size=5)
    >>> [tuple(t.shape) for t in sampler(torch.Generator().manual_seed(0))]
    [(5, 3, 1, 4, 4), (5, 2, 1, 4, 4)]
    """
    if not isinstance(sequences, Tensor) or not sequences.is_floating_point():
        raise TypeError(f"sequences must be a floating tensor, got {type(sequences).__name__}")
    for name, value in (("history", history), ("horizon", horizon), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if sequences.ndim != 5 or sequences.shape[1] < history + horizon:
        raise ValueError(
            "sequences must have shape (n, time, channels, height, width) with time >= "
            f"history + horizon = {history + horizon}, got {tuple(sequences.shape)}"
        )
    n, length = sequences.shape[:2]
    window = history + horizon
    offsets = torch.arange(window)

    def sample(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, n, (batch_size,), generator=generator)
        start = torch.randint(0, length - window + 1, (batch_size,), generator=generator)
        times = start.unsqueeze(1) + offsets
        chunk = sequences[index.unsqueeze(1), times]
        return chunk[:, :history], chunk[:, history:]

    return sample


class ForecasterEnsemble(nn.Module):
    """A deep ensemble of frame forecasters; forecasts are an Ensemble Predictive.

    Parameters
    ----------
    members : sequence of FrameForecaster
        At least one, all with the same ``history`` and ``channels``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.motion import MotionFieldForecaster
    >>> ens = ForecasterEnsemble([MotionFieldForecaster(history=2, width=4, depth=1)
    ...                           for _ in range(3)])
    >>> ens.forecast(torch.randn(5, 2, 1, 8, 8), steps=4).members.shape
    torch.Size([3, 5, 4, 1, 8, 8])
    """

    def __init__(self, members: Sequence[FrameForecaster]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one FrameForecaster, got none")
        for index, member in enumerate(members):
            if not isinstance(member, FrameForecaster):
                raise TypeError(
                    f"members[{index}] must be a FrameForecaster, got {type(member).__name__}"
                )
            if (member.history, member.channels) != (members[0].history, members[0].channels):
                raise ValueError(
                    f"members[{index}] has history {member.history} and channels "
                    f"{member.channels}, expected {members[0].history} and "
                    f"{members[0].channels} like members[0]"
                )
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def forecast(self, frames: Tensor, steps: int) -> Ensemble:
        """Roll every member out from the same history (no gradients).

        Parameters
        ----------
        frames : Tensor, shape (batch, history, channels, height, width)
        steps : int

        Returns
        -------
        Ensemble
            Members of shape ``(M, batch, steps, channels, height, width)``.
        """
        rollouts = [cast(FrameForecaster, m).rollout(frames, steps).frames for m in self.members]
        return Ensemble(torch.stack(rollouts, dim=0))


def fit_forecaster_ensemble(
    build: Callable[[], FrameForecaster],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    train_data: Any,
    seeds: Sequence[int],
    **fit_kwargs: Any,
) -> tuple[ForecasterEnsemble, list[FitResult]]:
    """Train one forecaster per seed with :func:`uqdyn.train.fit` and ensemble them.

    Member ``i`` is built by ``build()`` after ``torch.manual_seed(seeds[i])`` (inside
    :func:`torch.random.fork_rng`, so the caller's RNG is untouched) and fitted with
    ``seed=seeds[i]``, so members differ in their initialisation and batch order.

    Parameters
    ----------
    build : callable
        ``() -> FrameForecaster``.
    loss_fn, train_data :
        As in :func:`uqdyn.train.fit` (e.g. :class:`ForecastLoss` and
        :func:`window_sampler`).
    seeds : sequence of int
        One per member (distinct).
    **fit_kwargs :
        Passed to :func:`uqdyn.train.fit` (``steps``, ``lr``, ``device``, ...).

    Returns
    -------
    (ForecasterEnsemble, list of FitResult)
    """
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    if "seed" in fit_kwargs:
        raise ValueError("pass the seeds through seeds=, not seed= in fit_kwargs")
    members, results = [], []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        if not isinstance(model, FrameForecaster):
            raise TypeError(f"build() must return a FrameForecaster, got {type(model).__name__}")
        results.append(fit(model, train_data, loss_fn=loss_fn, seed=seed, **fit_kwargs))
        members.append(model)
    return ForecasterEnsemble(members), results
