"""Training windows for the frame forecasters, and deep ensembles of them.

A forecaster trains on next frames with ``uqdyn.train.fit(model, window_sampler(...))``
(its own :meth:`~uqdyn.models.motion.FrameForecaster.loss`); :func:`fit_forecaster_ensemble`
is the recipe for one such fit per seed, ensembled as a :class:`ForecasterEnsemble`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from uqdyn._checks import as_int
from uqdyn._seed import seeded
from uqdyn.predictive import Ensemble
from uqdyn.train import FitResult, fit

from .forecaster import FrameForecaster, _observed, _pair

__all__ = ["window_sampler", "ForecasterEnsemble", "fit_forecaster_ensemble"]


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
    history = as_int(history, "history", minimum=1)
    horizon = as_int(horizon, "horizon", minimum=1)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
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

    It follows the training contract of :func:`uqdyn.train.fit` like its members: on a
    batch ``(history, targets)`` :meth:`loss` is the sum of the members' losses (each
    member gets the gradient of its own loss) and :meth:`predict_batch` the members'
    rollouts as an :class:`~uqdyn.predictive.Ensemble`. Members trained separately with
    their own seeds (:func:`fit_forecaster_ensemble`) differ also in their batches.

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

    def _members(self) -> list[FrameForecaster]:
        return [cast(FrameForecaster, m) for m in self.members]

    def _ensemble(self, frames: Tensor, steps: int) -> Ensemble:
        return Ensemble(torch.stack([m.rollout(frames, steps).frames for m in self._members()]))

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
        return self._ensemble(frames, steps)

    def loss(self, batch: Sequence[Tensor]) -> Tensor:
        """Sum of the members' :meth:`FrameForecaster.loss` on ``(history, targets)``, shape ()."""
        return torch.stack([m.loss(batch) for m in self._members()]).sum()

    def predict_batch(self, batch: Sequence[Tensor]) -> tuple[Ensemble, Tensor, Tensor | None]:
        """Ensemble forecast of a batch ``(history, targets)`` for validation.

        Returns
        -------
        (Ensemble, targets, mask)
            Members ``(M, batch, steps, C, H, W)`` for ``steps = targets.shape[1]``, the
            targets, and ``None`` or, when ``targets`` holds NaN (not observed), the
            boolean mask of its observed entries.
        """
        history, targets = _pair(batch)
        self._members()[0].check_frames(history, "history")
        prediction = self._ensemble(history, targets.shape[1])
        if tuple(prediction.batch_shape) != tuple(targets.shape):
            raise ValueError(
                f"targets has shape {tuple(targets.shape)}, expected "
                f"{tuple(prediction.batch_shape)} to match the rollout of history"
            )
        return prediction, targets, _observed(targets)


def fit_forecaster_ensemble(
    build: Callable[[], FrameForecaster],
    train_data: Any,
    seeds: Sequence[int],
    **fit_kwargs: Any,
) -> tuple[ForecasterEnsemble, list[FitResult]]:
    """Train one forecaster per seed with :func:`uqdyn.train.fit` and ensemble them.

    Member ``i`` is built by ``build()`` under :func:`uqdyn.seeded` ``(seeds[i])`` (the
    caller's RNG is untouched) and fitted with ``fit(member, train_data, seed=seeds[i],
    **fit_kwargs)``, so members differ in their initialisation and batch order.

    Parameters
    ----------
    build : callable
        ``() -> FrameForecaster``, its loss options included (e.g.
        ``lambda: MotionFieldForecaster(history=4, divergence_weight=0.1)``).
    train_data :
        As in :func:`uqdyn.train.fit`, e.g. a :func:`window_sampler`.
    seeds : sequence of int
        One per member (distinct).
    **fit_kwargs :
        Passed to :func:`uqdyn.train.fit` (``steps``, ``lr``, ``device``, ``loss_fn`` to
        train with another :class:`ForecastLoss`, ...).

    Returns
    -------
    (ForecasterEnsemble, list of FitResult)

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.motion import MotionFieldForecaster
    >>> sampler = window_sampler(torch.randn(4, 6, 1, 8, 8), history=2, horizon=2, batch_size=2)
    >>> ensemble, results = fit_forecaster_ensemble(
    ...     lambda: MotionFieldForecaster(history=2, width=4, depth=1), sampler, [0, 1],
    ...     steps=2, progress=False)
    >>> len(ensemble), results[0].steps_done
    (2, 2)
    """
    seeds = [as_int(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    if not seeds:
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    if "seed" in fit_kwargs:
        raise ValueError("pass the seeds through seeds=, not seed= in fit_kwargs")
    members, results = [], []
    for seed in seeds:
        with seeded(seed):
            model = build()
        if not isinstance(model, FrameForecaster):
            raise TypeError(f"build() must return a FrameForecaster, got {type(model).__name__}")
        results.append(fit(model, train_data, seed=seed, **fit_kwargs))
        members.append(model)
    return ForecasterEnsemble(members), results
