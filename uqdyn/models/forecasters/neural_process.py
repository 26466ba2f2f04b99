"""A neural-process forecaster on forecast origins: each window is a context/target task."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.data import Task
from uqdyn.forecast import Climatology
from uqdyn.models.neural_process import CNP, AttentiveCNP
from uqdyn.predictive import GaussianMixture, Normal, Predictive
from uqdyn.train import fit

from ._base import WindowArrays, WindowForecaster

__all__ = ["NPForecaster"]


class NPForecaster(WindowForecaster):
    r"""Conditional neural process forecaster: the context window in, each lead out.

    Each (origin, point) is one task: context points ``(x_i, z_i)`` are the observed
    entries of the normalised context window (unobserved ones are masked, never filled),
    with inputs ``x`` the time relative to the origin in sampling steps (scaled to about
    [-1, 1]) and, with ``season_features``, the seasonal phase of each time; targets are the
    normalised values at the leads. A :class:`~uqdyn.models.neural_process.CNP` or
    :class:`~uqdyn.models.neural_process.AttentiveCNP` is trained on the training tasks by
    :func:`uqdyn.train.fit` (maximum likelihood), selecting the step with the best
    validation CRPS when ``valid`` origins are given. With ``members > 1`` a deep ensemble of
    independently initialised networks answers with their equally weighted Gaussian mixture.

    Parameters
    ----------
    model:
        ``"cnp"`` or ``"attentive"``.
    width:
        Hidden width.
    steps, batch_size, lr:
        Training steps, tasks per step, Adam learning rate.
    members:
        Networks in the deep ensemble.
    val_every:
        Validate every this many steps (with ``valid`` origins).
    climatology, center, scale, season_features:
        As for :class:`~uqdyn.models.forecasters.GPForecaster`.
    level_feature:
        Give every point the window's removed centre (its level, normalised) as an extra
        input, so that a centred model can still learn level-dependent behaviour such as
        damping towards the climatology.
    seed:
        Seed of the networks' initial weights (member ``k`` uses ``seed + k``) and of the
        task batches.
    device:
        Training device (``"auto"``, ``"cpu"``, ``"cuda"``).
    """

    def __init__(
        self,
        *,
        model: Literal["cnp", "attentive"] = "cnp",
        width: int = 64,
        steps: int = 2000,
        batch_size: int = 32,
        lr: float = 1e-3,
        members: int = 1,
        val_every: int = 100,
        climatology: Climatology | None = None,
        center: str | None = "last",
        scale: str | None = "global",
        season_features: bool = False,
        level_feature: bool = True,
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
        if model not in ("cnp", "attentive"):
            raise ValueError(f"model={model!r}; expected 'cnp' or 'attentive'")
        members = as_int(members, "members", minimum=1)
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        steps = as_int(steps, "steps", minimum=1)
        self.model = model
        self.width = width
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.members = members
        self.val_every = val_every
        self.device = device
        self.progress = progress
        self.level_feature = bool(level_feature)
        self.networks: list[torch.nn.Module] = []
        self._time_scale = 1.0

    def __repr__(self) -> str:
        return (
            f"NPForecaster(model={self.model!r}, members={self.members}, "
            f"normalizer={self.normalizer!r})"
        )

    def _tasks(self, rows: WindowArrays) -> Task:
        """All rows as one padded Task (float32, CPU)."""
        xc = rows.context_x.copy()
        xt = rows.target_x.copy()
        xc[..., 0] /= self._time_scale
        xt[..., 0] /= self._time_scale
        if self.level_feature:
            level = np.nan_to_num(rows.level)[:, None, None]
            xc = np.concatenate([xc, np.broadcast_to(level, (*xc.shape[:2], 1))], axis=-1)
            xt = np.concatenate([xt, np.broadcast_to(level, (*xt.shape[:2], 1))], axis=-1)
        mc = np.isfinite(rows.context)
        mt = np.isfinite(rows.target)
        yc = np.where(mc, rows.context, 0.0)[..., None]
        yt = np.where(mt, rows.target, 0.0)[..., None]

        def f32(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=torch.float32)

        return Task(
            f32(xc),
            f32(yc),
            torch.as_tensor(mc),
            f32(np.nan_to_num(xt)),
            f32(yt),
            torch.as_tensor(mt),
        )

    def _network(self, x_dim: int, seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.model == "cnp":
                return CNP(x_dim, 1, width=self.width, min_std=1e-3, min_context=0)
            return AttentiveCNP(
                x_dim,
                1,
                width=self.width,
                num_heads=4,
                self_attention=0,
                min_std=1e-3,
                min_context=0,
            )

    def _fit(self, rows: WindowArrays, valid_rows: WindowArrays | None) -> None:
        self._time_scale = float(max(rows.context.shape[1], np.nanmax(rows.target_x[..., 0]), 1.0))
        task = self._tasks(rows)
        usable = torch.nonzero(task.mask_target.any(1)).flatten()
        if usable.numel() < 2:
            raise ValueError(
                f"only {usable.numel()} training (origin, point) window(s) have an observed "
                "target; expected more"
            )
        batch = min(self.batch_size, usable.numel())

        def sample(g: torch.Generator) -> Task:
            pick = usable[torch.randint(usable.numel(), (batch,), generator=g)]
            return _select(task, pick)

        val_data = None
        if valid_rows is not None:
            vtask = self._tasks(valid_rows)
            keep = torch.nonzero(vtask.mask_target.any(1)).flatten()
            chunks = [_select(vtask, keep[i : i + 256]) for i in range(0, keep.numel(), 256)]
            val_data = chunks if chunks else None
        x_dim = int(task.x_context.shape[-1])
        self.networks = []
        for k in range(self.members):
            net = self._network(x_dim, self.seed + k)
            options: dict[str, Any] = {}
            if val_data is not None:
                options = {
                    "val_data": val_data,
                    "val_every": self.val_every,
                    "val_batches": len(val_data),
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
                seed=self.seed + 1000 * k,
                progress=self.progress,
                **options,
            )
            self.networks.append(net.cpu().eval())

    def _predict(self, rows: WindowArrays) -> Predictive:
        task = self._tasks(rows)
        locs, scales = [], []
        for net in self.networks:
            loc_parts, scale_parts = [], []
            for start in range(0, task.batch_size, 1024):
                part = _select(task, torch.arange(start, min(start + 1024, task.batch_size)))
                pred = net.predict(part)  # type: ignore[operator]
                loc_parts.append(pred.mean[..., 0])
                scale_parts.append(pred.stddev[..., 0])
            locs.append(torch.cat(loc_parts).double())
            scales.append(torch.cat(scale_parts).double())
        if len(locs) == 1:
            return Normal(locs[0], scales[0], validate=False)
        weights = torch.ones(len(locs), dtype=torch.float64)
        return GaussianMixture(weights, torch.stack(locs), torch.stack(scales), validate=False)


def _select(task: Task, index: Tensor) -> Task:
    return Task(
        task.x_context[index],
        task.y_context[index],
        task.mask_context[index],
        task.x_target[index],
        task.y_target[index],
        task.mask_target[index],
    )
