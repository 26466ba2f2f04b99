"""The batch of the multi-environment models: trajectories labelled by their environment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..hybrid.batch import TrajectoryBatch, check_batch

__all__ = ["EnvironmentBatch", "environment_batch"]


@dataclass(frozen=True)
class EnvironmentBatch:
    """Observed trajectories on a common time grid, each from a known environment.

    Row ``b`` starts at ``trajectories[b, 0]`` (always observed) and belongs to environment
    ``env[b]``; a model rolls it out with that environment's vector field and is scored on
    the later times where ``mask`` holds.

    Attributes
    ----------
    times : Tensor, shape (time,)
        Strictly increasing, ``time >= 2``.
    trajectories : Tensor, shape (batch, time, *state_shape)
    env : Tensor of int64, shape (batch,)
        Environment index of each row, in ``[0, model.n_envs)``.
    mask : Tensor of bool, shape (batch, time), optional
        ``True`` where a state is observed; ``mask[:, 0]`` must hold. ``None``: all observed.

    Examples
    --------
    >>> import torch
    >>> batch = EnvironmentBatch(torch.linspace(0, 1, 3), torch.ones(4, 3, 2),
    ...                          torch.tensor([0, 0, 1, 1]))
    >>> batch.initial_state.shape
    torch.Size([4, 2])
    """

    times: Tensor
    trajectories: Tensor
    env: Tensor
    mask: Tensor | None = None

    @property
    def initial_state(self) -> Tensor:
        """``trajectories[:, 0]``, shape ``(batch, *state_shape)``."""
        return self.trajectories[:, 0]

    def to(self, device: torch.device | str) -> EnvironmentBatch:
        """The batch on ``device`` (what :func:`uqdyn.train.fit` calls)."""
        mask = None if self.mask is None else self.mask.to(device)
        return EnvironmentBatch(
            self.times.to(device), self.trajectories.to(device), self.env.to(device), mask
        )

    def trajectory_batch(self) -> TrajectoryBatch:
        """The same trajectories without environment labels."""
        return TrajectoryBatch(self.times, self.trajectories, self.mask)


def check_environment_batch(
    batch: Any, model: nn.Module, state_shape: tuple[int, ...], n_envs: int | None
) -> EnvironmentBatch:
    """Validate ``batch`` for ``model``; ``n_envs=None`` skips the range check of ``env``."""
    if not isinstance(batch, EnvironmentBatch):
        raise TypeError(
            "batch must be a uqdyn.models.multienv.EnvironmentBatch(times, trajectories, env, "
            f"mask), got {type(batch).__name__}"
        )
    checked = check_batch(batch.trajectory_batch(), model, state_shape)
    env = batch.env
    if not isinstance(env, Tensor) or env.dtype != torch.int64:
        got = f"{env.dtype} tensor" if isinstance(env, Tensor) else type(env).__name__
        raise TypeError(f"batch.env must be an int64 tensor of shape (batch,), got a {got}")
    if tuple(env.shape) != (checked.trajectories.shape[0],):
        raise ValueError(
            f"batch.env must have shape ({checked.trajectories.shape[0]},) (one environment "
            f"per trajectory), got {tuple(env.shape)}"
        )
    if n_envs is not None and bool(((env < 0) | (env >= n_envs)).any()):
        raise ValueError(
            f"batch.env holds {sorted(set(env.tolist()))}; expected environments in "
            f"[0, {n_envs}) for this model"
        )
    return EnvironmentBatch(checked.times, checked.trajectories, env, checked.mask)


def environment_batch(
    dataset: xr.Dataset,
    variables: Sequence[str] | None = None,
    *,
    envs: Sequence[int] | None = None,
    env_offset: int = 0,
    dtype: torch.dtype = torch.float32,
) -> EnvironmentBatch:
    """Flatten a :func:`uqdyn.data.multi_environment` dataset into one batch.

    Rows are ordered environment by environment, samples within each; row ``b`` of
    environment position ``i`` gets the label ``env_offset + i``.

    Parameters
    ----------
    dataset:
        Dims ``(env, sample, time, dim)`` (variable ``state``) or ``(env, sample, time, y,
        x)`` per channel variable.
    variables:
        State variables, stacked as channels for gridded data; default the dataset's
        ``state_variables`` attribute.
    envs:
        Positions along ``env`` to keep (default all).
    env_offset:
        Added to the labels (e.g. ``model.n_envs`` for a new environment).
    dtype:
        Floating dtype of the tensors.

    Returns
    -------
    EnvironmentBatch
        ``trajectories`` of shape ``(n_env * n_sample, time, *state_shape)``.
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"dataset is a {type(dataset).__name__}; expected an xarray.Dataset")
    if variables is None:
        names = str(dataset.attrs.get("state_variables", "state")).split(",")
    else:
        names = list(variables)
    missing = [n for n in names if n not in dataset]
    if missing:
        raise ValueError(f"variables {missing} are not in the dataset (has {list(dataset)})")
    if envs is not None:
        dataset = dataset.isel(env=list(envs))
    arrays = []
    for name in names:
        da = dataset[name]
        if da.dims[:3] != ("env", "sample", "time"):
            raise ValueError(
                f"dataset[{name!r}] has dims {da.dims}; expected (env, sample, time, ...)"
            )
        arrays.append(np.asarray(da.values))
    if len(arrays) == 1 and arrays[0].ndim == 4:
        values = arrays[0]
    else:
        values = np.stack(arrays, axis=3)
    n_env, n_sample = values.shape[:2]
    trajectories = torch.as_tensor(
        np.array(values.reshape(n_env * n_sample, *values.shape[2:])), dtype=dtype
    )
    env = torch.arange(n_env, dtype=torch.int64).repeat_interleave(n_sample) + int(env_offset)
    times = torch.as_tensor(np.array(dataset["time"].values), dtype=dtype)
    mask = None
    if not bool(torch.isfinite(trajectories).all()):
        mask = torch.isfinite(trajectories).flatten(2).all(dim=2)
    return EnvironmentBatch(times, trajectories, env, mask)
