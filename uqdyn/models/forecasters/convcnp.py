"""A ConvCNP forecaster for gridded fields: past frames in, one output channel per lead."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.forecast import Climatology, Origins
from uqdyn.forecast.normalize import NormalizedOrigins
from uqdyn.models.neural_process import ConvCNP, ConvCNPEnsemble, GridTask
from uqdyn.predictive import GaussianMixture, Normal, Predictive
from uqdyn.train import fit

from ._base import WindowForecaster

__all__ = ["ConvCNPForecaster"]


def _predict_fn(model: Any, task: GridTask) -> tuple[Any, Tensor, Tensor]:
    # Validation scores every finite target of a window (a window may have none at a
    # land-only lead, which ConvCNP.predict_batch would refuse).
    mask = torch.isfinite(task.y_target)
    return model.predict(task), torch.nan_to_num(task.y_target), mask


class ConvCNPForecaster(WindowForecaster):
    r"""Convolutional CNP forecaster of gridded fields (Gordon et al. 2020).

    For each origin the ``C`` normalised context frames (see
    :class:`~uqdyn.forecast.normalize.WindowNormalizer`) are the input channels of a
    :class:`~uqdyn.models.neural_process.ConvCNP`, with their observation masks as density
    channels (land and gaps are masked, never filled), plus, when centring, the removed
    level of each pixel and, with ``season_features``, the seasonal phase of the origin as
    constant channels; its ``L`` output channels are the normalised fields at the leads. The
    network is translation equivariant, so it learns local dynamics shared by every grid
    point, and its spread varies in space. With ``members > 1`` a deep ensemble of
    independently initialised networks gives an equal-weight Gaussian mixture.

    The data's last two dims are the grid (e.g. ``lat``, ``lon``); other space dims (e.g.
    ``variable``) are folded into the channels.

    Parameters
    ----------
    width, depth, kernel_size, architecture, padding:
        Of the :class:`~uqdyn.models.neural_process.ConvCNP` (``padding="zeros"`` for
        bounded domains, ``"circular"`` for periodic ones).
    steps, batch_size, lr, val_every, members:
        Training by :func:`uqdyn.train.fit` (best validation CRPS kept when ``valid``
        origins are given).
    climatology, center, scale, season_features, seed:
        As for :class:`~uqdyn.models.forecasters.NPForecaster`.
    device:
        Training device.
    """

    def __init__(
        self,
        *,
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 5,
        architecture: str = "resnet",
        padding: str = "zeros",
        steps: int = 1000,
        batch_size: int = 16,
        lr: float = 1e-3,
        val_every: int = 100,
        members: int = 1,
        climatology: Climatology | None = None,
        center: str | None = "last",
        scale: str | None = "global",
        season_features: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> None:
        super().__init__(
            climatology=climatology,
            center=center,
            scale=scale,
            season_features=season_features,
            seed=seed,
        )
        members = as_int(members, "members", minimum=1)
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        steps = as_int(steps, "steps", minimum=1)
        self.network_options: dict[str, Any] = {
            "width": width,
            "depth": depth,
            "kernel_size": kernel_size,
            "architecture": architecture,
            "padding": padding,
            "min_std": 1e-3,
        }
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.val_every = val_every
        self.members = members
        self.device = device
        self.progress = progress
        self.network: torch.nn.Module | None = None

    def __repr__(self) -> str:
        return f"ConvCNPForecaster(members={self.members}, normalizer={self.normalizer!r})"

    # ------------------------------------------------------------------ arrays
    def _inputs(self, origins: Origins, norm: NormalizedOrigins) -> GridTask:
        space = origins.space_shape
        if len(space) < 2:
            raise ValueError(
                f"ConvCNPForecaster needs gridded data (at least two space dims); the origins "
                f"have space dims {origins.space_dims}"
            )
        n, c = norm.context.shape[:2]
        h, w = space[-2:]
        ctx = norm.context.reshape(n, -1, h, w)
        tgt = norm.target.reshape(n, -1, h, w)
        extra = []
        if self.normalizer.center is not None:
            extra.append(np.nan_to_num(norm.level).reshape(n, -1, h, w))
        if self._season is not None:
            phase = self._season_features(origins.origin_time)  # (n, 2)
            extra.append(np.broadcast_to(phase[:, :, None, None], (n, 2, h, w)))
        channels = np.concatenate([ctx, *extra], axis=1) if extra else ctx
        y_context = torch.as_tensor(channels, dtype=torch.float32)
        mask = torch.isfinite(y_context)
        return GridTask(
            torch.nan_to_num(y_context),
            mask,
            torch.as_tensor(tgt, dtype=torch.float32),
            torch.isfinite(torch.as_tensor(tgt)),
        )

    def _to_batch_shape(self, pred: Predictive, origins: Origins) -> Predictive:
        shape = (len(origins), origins.n_leads, *origins.space_shape)
        if isinstance(pred, Normal):
            return Normal(
                pred.loc.double().reshape(shape), pred.scale.double().reshape(shape), validate=False
            )
        if isinstance(pred, GaussianMixture):
            k = pred.n_components
            return GaussianMixture(
                pred.weights.double().reshape(k, *shape),
                pred.loc.double().reshape(k, *shape),
                pred.scale.double().reshape(k, *shape),
                validate=False,
            )
        raise TypeError(f"unexpected predictive {type(pred).__name__}")  # pragma: no cover

    # ------------------------------------------------------------------ fit / predict
    def _fit(self, task: GridTask, valid: GridTask | None) -> None:
        assert task.mask_target is not None
        usable = torch.nonzero(task.mask_target.flatten(1).any(1)).flatten()
        if usable.numel() < 2:
            raise ValueError("fewer than 2 training origins have an observed target field")
        batch = min(self.batch_size, usable.numel())

        def sample(g: torch.Generator) -> GridTask:
            pick = usable[torch.randint(usable.numel(), (batch,), generator=g)]
            return _select(task, pick)

        in_channels = int(task.y_context.shape[1])
        out_channels = int(task.y_target.shape[1])
        if self.members > 1:
            net: torch.nn.Module = ConvCNPEnsemble(
                in_channels,
                out_channels,
                members=self.members,
                seed=self.seed,
                **self.network_options,
            )
        else:
            net = ConvCNP(in_channels, out_channels, seed=self.seed, **self.network_options)
        options: dict[str, Any] = {}
        if valid is not None and valid.mask_target is not None:
            keep = torch.nonzero(valid.mask_target.flatten(1).any(1)).flatten()
            chunks = [_select(valid, keep[i : i + 32]) for i in range(0, keep.numel(), 32)]
            if chunks:
                options = {
                    "val_data": chunks,
                    "val_every": self.val_every,
                    "val_batches": len(chunks),
                    "predict_fn": _predict_fn,
                    "monitor": "val_crps",
                    "restore_best": True,
                }
        fit(
            net,
            sample,
            steps=self.steps,
            lr=self.lr,
            grad_clip=10.0,
            device=self.device,
            seed=self.seed,
            progress=self.progress,
            **options,
        )
        self.network = net.cpu().eval()

    def _predict(self, task: GridTask) -> Predictive:
        assert self.network is not None
        parts = []
        for start in range(0, task.batch_size, 32):
            part = _select(task, torch.arange(start, min(start + 32, task.batch_size)))
            parts.append(self.network.predict(part))  # type: ignore[operator]
        if isinstance(parts[0], Normal):
            return Normal(
                torch.cat([p.loc for p in parts]),
                torch.cat([p.scale for p in parts]),
                validate=False,
            )
        return GaussianMixture(
            torch.cat([p.weights for p in parts], dim=1),
            torch.cat([p.loc for p in parts], dim=1),
            torch.cat([p.scale for p in parts], dim=1),
            validate=False,
        )


def _select(task: GridTask, index: Tensor) -> GridTask:
    def take(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[index]

    return GridTask(
        task.y_context[index], take(task.mask_context), task.y_target[index], take(task.mask_target)
    )
