"""``torch.utils.data.Dataset`` views of trajectories for sequence-to-sequence training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from uqdyn._checks import as_int

__all__ = ["TrajectoryWindows"]


class TrajectoryWindows(Dataset):
    """Sliding windows of trajectories: ``input_steps`` frames in, ``target_steps`` frames out.

    Item ``k`` is window ``w = k mod n_windows`` of trajectory ``n = k // n_windows``: frames
    ``s, ..., s + input_steps - 1`` as inputs and the ``target_steps`` frames after them as
    targets, with ``s = w * stride``, and
    ``n_windows = (T - input_steps - target_steps) // stride + 1``.

    Parameters
    ----------
    trajectories:
        ``(N, T, *state_shape)``, e.g. ``(N, T, C, H, W)`` or ``(N, T, D)``.
    input_steps, target_steps:
        Frames per input and per target (``>= 1``).
    stride:
        Step between window starts.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader
    >>> from uqdyn.data import TrajectoryWindows
    >>> windows = TrajectoryWindows(torch.randn(4, 20, 1, 8, 8), input_steps=3, target_steps=2)
    >>> len(windows)
    64
    >>> inputs, targets = next(iter(DataLoader(windows, batch_size=5)))
    >>> inputs.shape, targets.shape
    (torch.Size([5, 3, 1, 8, 8]), torch.Size([5, 2, 1, 8, 8]))
    """

    def __init__(
        self, trajectories: Tensor, input_steps: int, target_steps: int = 1, *, stride: int = 1
    ) -> None:
        if not isinstance(trajectories, Tensor):
            raise TypeError(
                f"trajectories is a {type(trajectories).__name__}; expected a torch.Tensor"
            )
        if trajectories.dim() < 3:
            raise ValueError(
                f"trajectories has shape {tuple(trajectories.shape)}; expected "
                "(sample, time, *state_shape)"
            )
        input_steps = as_int(input_steps, "input_steps", minimum=1)
        target_steps = as_int(target_steps, "target_steps", minimum=1)
        stride = as_int(stride, "stride", minimum=1)
        n_times = int(trajectories.shape[1])
        if input_steps + target_steps > n_times:
            raise ValueError(
                f"input_steps + target_steps = {input_steps + target_steps} exceeds the "
                f"{n_times} time steps of trajectories {tuple(trajectories.shape)}"
            )
        self.trajectories = trajectories
        self.input_steps = input_steps
        self.target_steps = target_steps
        self.stride = stride
        self.n_windows = (n_times - input_steps - target_steps) // stride + 1

    def __len__(self) -> int:
        return int(self.trajectories.shape[0]) * self.n_windows

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} windows")
        index %= len(self)
        traj, window = divmod(index, self.n_windows)
        start = window * self.stride
        mid = start + self.input_steps
        frames = self.trajectories[traj]
        return frames[start:mid], frames[mid : mid + self.target_steps]

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        variables: Sequence[str] | None = None,
        *,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> TrajectoryWindows:
        """Windows over the variables of an ``xarray.Dataset`` (see ``dataset_to_tensor``)."""
        from uqdyn.data.io import dataset_to_tensor

        return cls(dataset_to_tensor(dataset, variables, dtype=dtype), **kwargs)
