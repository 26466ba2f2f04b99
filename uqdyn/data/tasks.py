"""Context/target task samplers for neural processes.

A *task* is a small regression problem cut out of one trajectory window: a set of context
points ``(x_c, y_c)`` and a set of target points ``(x_t, y_t)`` where the model predicts
``p(y_t | x_t, context)`` (Garnelo et al., 2018). Tasks in a batch hold different numbers
of points, so every batch is padded to a fixed size with boolean masks (``True`` = a real
point), following the shape conventions of the library:
``x: (batch, points, x_dim)``, ``y: (batch, points, y_dim)``, ``mask: (batch, points)``.

Points are:

* ODE trajectories ``(N, T, D)``: one point per time step, ``x = (t,)`` (``x_dim = 1``) and
  ``y`` the ``D`` state components.
* Field trajectories ``(N, T, C, H, W)``: one point per (time, grid point),
  ``x = (t, y, x)`` in physical units (``x_dim = 3``) and ``y`` the ``C`` channels. A window of
  one time step gives purely spatial tasks (``t`` then is constant).

NaN marks a point that was not observed (land, a gap, a dropped sample): a point is
*observed* when all its channels are finite, and context and target points are drawn among
the observed points only, so a NaN never reaches a task (a point with some channels NaN is
left out as a whole).

References
----------
M. Garnelo, J. Schwarz, D. Rosenbaum, F. Viola, D. J. Rezende, S. M. A. Eslami, Y. W. Teh,
"Neural Processes", ICML workshop on Theoretical Foundations and Applications of Deep
Generative Models, 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar

__all__ = ["Task", "TaskSampler"]

Setting = Literal["interpolation", "extrapolation"]


@dataclass(frozen=True, eq=False)
class Task:
    """A padded batch of context/target sets.

    Attributes
    ----------
    x_context, y_context:
        ``(B, Nc_max, x_dim)`` and ``(B, Nc_max, y_dim)``; padded rows hold 0.
    mask_context:
        ``(B, Nc_max)`` boolean, ``True`` for real context points (they come first).
    x_target, y_target:
        ``(B, Nt_max, x_dim)`` and ``(B, Nt_max, y_dim)``.
    mask_target:
        ``(B, Nt_max)`` boolean.
    """

    x_context: Tensor
    y_context: Tensor
    mask_context: Tensor
    x_target: Tensor
    y_target: Tensor
    mask_target: Tensor

    @property
    def batch_size(self) -> int:
        """Number of tasks ``B``."""
        return int(self.x_context.shape[0])

    @property
    def num_context(self) -> Tensor:
        """``(B,)`` number of real context points per task."""
        return self.mask_context.sum(dim=1)

    @property
    def num_target(self) -> Tensor:
        """``(B,)`` number of real target points per task."""
        return self.mask_target.sum(dim=1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Task:
        """Move to ``device``; cast the floating tensors (not the masks) to ``dtype``."""
        moved: dict[str, Tensor] = {}
        for f in fields(self):
            t = getattr(self, f.name)
            moved[f.name] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return Task(**moved)


def _count_range(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    if is_integer_scalar(value):
        lo = hi = as_int(value, name)
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(is_integer_scalar(v) for v in value)
    ):
        lo, hi = as_int(value[0], f"{name}[0]"), as_int(value[1], f"{name}[1]")
    else:
        raise TypeError(
            f"{name}={value!r} is a {describe_type(value)}; expected an int or a (min, max) "
            "pair of ints"
        )
    if lo < minimum or hi < lo:
        raise ValueError(f"{name}={value!r}; expected {minimum} <= min <= max")
    return lo, hi


class TaskSampler:
    """Cut neural-process tasks out of simulated trajectories.

    Each task takes a random trajectory ``n`` and a random window of ``window`` consecutive
    time steps, then draws the numbers of context and target points uniformly from the
    integers in ``num_context`` and ``num_target`` (capped by the points available) and the
    points uniformly without replacement among the window's observed points:

    * ``"interpolation"``: context and targets come from the whole window. With
      ``targets_include_context=True`` (the default here, as in Garnelo et al.) the targets
      are the context points followed by ``num_target`` further points; otherwise they are
      ``num_target`` points disjoint from the context.
    * ``"extrapolation"`` (forecasting): a split ``s`` is drawn uniformly among the window's
      time steps with ``s / window`` in ``context_fraction``; context points come from the
      first ``s`` time steps and targets from the time steps strictly after the last context
      time.

    **Missing values.** NaN entries of ``values`` mark unobserved points; a point (one time
    step of an ODE trajectory, one grid point at one time of a field) is observed when all
    its channels are finite. Only observed points are drawn, as context or as targets, and
    the counts are capped by the observed points available. A window or split with too few
    observed points is skipped: trajectories and windows are drawn uniformly among the
    *usable* windows, those with at least ``num_context[0] + 1`` observed points
    (interpolation) or with at least one allowed split ``s`` (extrapolation) that leaves
    ``min(num_context[0], s * points_per_time)`` observed points in the first ``s`` time
    steps and one observed point after them; the split is drawn uniformly among the
    window's allowed splits. So every task has at least ``num_context[0]`` context points
    (as many as a complete window would give) and at least one target. When no window is
    usable the constructor raises a ``ValueError``. With complete data (no NaN) the draws
    are exactly those of the same generator without this rule. Infinite values are refused
    (they are not "missing", they are an error upstream).

    Parameters
    ----------
    values:
        ``(N, T, D)`` ODE trajectories or ``(N, T, C, H, W)`` field trajectories; NaN marks
        unobserved points (see above), ``+-inf`` is refused.
    times:
        ``(T,)`` increasing observation times.
    grid:
        For fields, the physical coordinates ``(y (H,), x (W,))`` of the grid points;
        defaults to grid indices.
    setting:
        ``"interpolation"`` or ``"extrapolation"``.
    num_context, num_target:
        Number of points per task: an int or an inclusive ``(min, max)`` range.
    window:
        Time steps per task window (default: all ``T``).
    targets_include_context:
        Interpolation only; default ``True`` for interpolation.
    context_fraction:
        Extrapolation only: range of the fraction of the window that may hold context.
    relative_time:
        Measure ``t`` from the start of the window (default) rather than from ``times[0]``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.data import TaskSampler
    >>> values = torch.randn(10, 50, 2)  # 10 pendulum trajectories of 50 steps
    >>> sampler = TaskSampler(values, torch.linspace(0, 5, 50), setting="extrapolation",
    ...                       num_context=(5, 15), num_target=(10, 20))
    >>> task = sampler.sample(8, generator=torch.Generator().manual_seed(0))
    >>> task.x_context.shape, task.y_target.shape, task.mask_target.shape
    (torch.Size([8, 15, 1]), torch.Size([8, 20, 2]), torch.Size([8, 20]))
    """

    def __init__(
        self,
        values: Tensor,
        times: Tensor,
        *,
        grid: tuple[Tensor, Tensor] | None = None,
        setting: Setting = "interpolation",
        num_context: int | Sequence[int] = (3, 20),
        num_target: int | Sequence[int] = (10, 50),
        window: int | None = None,
        targets_include_context: bool | None = None,
        context_fraction: Sequence[float] = (0.3, 0.7),
        relative_time: bool = True,
    ) -> None:
        if not isinstance(values, Tensor) or not values.is_floating_point():
            raise TypeError(
                f"values must be a floating torch.Tensor; received "
                f"{getattr(values, 'dtype', type(values).__name__)}"
            )
        if values.dim() not in (3, 5):
            raise ValueError(
                f"values has shape {tuple(values.shape)}; expected (sample, time, dim) or "
                "(sample, time, channel, height, width)"
            )
        if values.shape[0] < 1 or values.shape[1] < 1:
            raise ValueError(f"values has shape {tuple(values.shape)}; expected non-empty")
        infinite = torch.isinf(values)
        if bool(infinite.any()):
            first = tuple(int(i) for i in infinite.nonzero()[0])
            raise ValueError(
                f"values has {int(infinite.sum())} infinite entries (first at index {first}); "
                "expected finite values, or NaN for points that were not observed"
            )
        n_times = int(values.shape[1])
        times = torch.as_tensor(times)
        if times.shape != (n_times,):
            raise ValueError(f"times has shape {tuple(times.shape)}; expected ({n_times},)")
        if n_times > 1 and not bool((times.diff() > 0).all()):
            raise ValueError("times must be strictly increasing")
        if setting not in ("interpolation", "extrapolation"):
            raise ValueError(f"setting={setting!r}; expected 'interpolation' or 'extrapolation'")
        window = n_times if window is None else window
        window = as_int(window, "window", minimum=1, maximum=n_times)
        if targets_include_context is None:
            targets_include_context = setting == "interpolation"
        if targets_include_context and setting == "extrapolation":
            raise ValueError(
                "targets_include_context=True with setting='extrapolation'; extrapolation "
                "targets lie strictly after the context"
            )
        self.is_field = values.dim() == 5
        self.values = values
        self.times = times.to(device=values.device, dtype=values.dtype)
        self.setting: Setting = setting
        self.window = window
        self.num_context = _count_range(num_context, "num_context", 1)
        self.num_target = _count_range(num_target, "num_target", 1)
        self.targets_include_context = bool(targets_include_context)
        self.relative_time = bool(relative_time)
        self.points_per_time = int(values.shape[3] * values.shape[4]) if self.is_field else 1
        if setting == "extrapolation":
            if window < 2:
                raise ValueError(f"window={window}; extrapolation needs at least 2 time steps")
            lo, hi = (
                as_float(v, f"context_fraction[{i}]", finite=False)
                for i, v in enumerate(context_fraction)
            )
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(
                    f"context_fraction={tuple(context_fraction)}; expected 0 <= low <= high <= 1"
                )
            self.split_range = (
                min(max(math.ceil(lo * window), 1), window - 1),
                min(max(math.floor(hi * window), 1), window - 1),
            )
            if self.split_range[0] > self.split_range[1]:
                self.split_range = (self.split_range[1], self.split_range[1])
        else:
            if self.num_context[0] >= window * self.points_per_time:
                raise ValueError(
                    f"num_context={num_context!r} leaves no target points in a window of "
                    f"{window * self.points_per_time} points"
                )
        self.grid = self._check_grid(grid) if self.is_field else None
        self._init_observed()

    def _check_grid(self, grid: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        height, width = int(self.values.shape[3]), int(self.values.shape[4])
        device, dtype = self.values.device, self.values.dtype
        if grid is None:
            return (
                torch.arange(height, device=device, dtype=dtype),
                torch.arange(width, device=device, dtype=dtype),
            )
        if len(grid) != 2:
            raise ValueError("grid must be a pair (y (height,), x (width,))")
        gy, gx = (torch.as_tensor(g).to(device=device, dtype=dtype) for g in grid)
        if gy.shape != (height,) or gx.shape != (width,):
            raise ValueError(
                f"grid has shapes {tuple(gy.shape)}, {tuple(gx.shape)}; expected ({height},) "
                f"and ({width},)"
            )
        return gy, gx

    def _init_observed(self) -> None:
        """Observed points and usable windows (``None`` for complete data)."""
        self._observed: Tensor | None = None  # (N, T, P) bool: all channels finite
        self._usable: Tensor | None = None  # flat indices n * starts + start of usable windows
        if not bool(torch.isnan(self.values).any()):
            return
        n_traj, n_times = int(self.values.shape[0]), int(self.values.shape[1])
        finite = torch.isfinite(self.values).all(dim=2)  # (N, T) or (N, T, H, W)
        self._observed = finite.reshape(n_traj, n_times, self.points_per_time)
        window, per_time = self.window, self.points_per_time
        starts = n_times - window + 1
        cum = torch.nn.functional.pad(self._observed.sum(dim=2).cumsum(dim=1), (1, 0))  # (N, T+1)
        start_idx = torch.arange(starts, device=cum.device)
        in_window = cum[:, start_idx + window] - cum[:, start_idx]  # (N, starts)
        if self.setting == "interpolation":
            need = self.num_context[0] + 1
            usable = in_window >= need
            what = (
                f"at least num_context[0] + 1 = {need} observed points in a window of "
                f"{window} time steps"
            )
        else:
            usable = torch.zeros_like(in_window, dtype=torch.bool)
            for split in range(self.split_range[0], self.split_range[1] + 1):
                before = cum[:, start_idx + split] - cum[:, start_idx]
                after = in_window - before
                usable |= (before >= min(self.num_context[0], split * per_time)) & (after >= 1)
            what = (
                f"a split s in {list(self.split_range)} (context_fraction) with "
                f"min(num_context[0], s * {per_time}) observed points in the window's first s "
                f"time steps (num_context[0] = {self.num_context[0]}) and one after them "
                f"(window of {window} time steps)"
            )
        if not bool(usable.any()):
            best = int(in_window.argmax())
            traj, start = divmod(best, starts)
            raise ValueError(
                f"values has no window with enough observed (finite) points: the sampler needs "
                f"{what}; the best window (trajectory {traj}, time steps {start} to "
                f"{start + window - 1}) has {int(in_window.max())} of "
                f"{window * per_time} points observed. NaN marks unobserved points: lower "
                "num_context, widen window or drop the gappy trajectories"
            )
        if not bool(usable.all()):
            self._usable = usable.reshape(-1).nonzero().squeeze(1).cpu()

    @property
    def x_dim(self) -> int:
        """Dimension of the inputs ``x``: 3 ``(t, y, x)`` for fields, 1 ``(t,)`` for ODEs."""
        return 3 if self.is_field else 1

    @property
    def y_dim(self) -> int:
        """Dimension of the outputs: channels for fields, state components for ODEs."""
        return int(self.values.shape[2])

    @property
    def max_context(self) -> int:
        """Padded number of context points ``Nc_max``."""
        return self.num_context[1]

    @property
    def max_target(self) -> int:
        """Padded number of target points ``Nt_max``."""
        extra = self.num_context[1] if self.targets_include_context else 0
        return self.num_target[1] + extra

    def sample(self, batch_size: int, generator: torch.Generator | int | None = None) -> Task:
        """Draw a batch of ``batch_size`` tasks.

        Parameters
        ----------
        batch_size:
            Number of tasks ``B``.
        generator:
            A CPU ``torch.Generator`` or an int seed; the same seed gives the same batch.

        Returns
        -------
        Task
            With ``Nc_max = max_context`` and ``Nt_max = max_target``, on the device and in
            the dtype of ``values``.
        """
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        if is_integer_scalar(generator):
            generator = torch.Generator().manual_seed(as_int(generator, "generator"))
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator is a {type(generator).__name__}; expected a torch.Generator, an int "
                "seed or None"
            )
        device, dtype = self.values.device, self.values.dtype
        nc_max, nt_max = self.max_context, self.max_target
        x_dim, y_dim = self.x_dim, self.y_dim
        xc = torch.zeros(batch_size, nc_max, x_dim, device=device, dtype=dtype)
        yc = torch.zeros(batch_size, nc_max, y_dim, device=device, dtype=dtype)
        xt = torch.zeros(batch_size, nt_max, x_dim, device=device, dtype=dtype)
        yt = torch.zeros(batch_size, nt_max, y_dim, device=device, dtype=dtype)
        mc = torch.zeros(batch_size, nc_max, dtype=torch.bool, device=device)
        mt = torch.zeros(batch_size, nt_max, dtype=torch.bool, device=device)
        n_traj, n_times = int(self.values.shape[0]), int(self.values.shape[1])
        starts = n_times - self.window + 1
        for b in range(batch_size):
            if self._usable is None:
                traj = int(torch.randint(n_traj, (1,), generator=generator))
                start = int(torch.randint(starts, (1,), generator=generator))
            else:  # skip windows with too few observed points
                pick = int(torch.randint(self._usable.numel(), (1,), generator=generator))
                traj, start = divmod(int(self._usable[pick]), starts)
            context, target = self._draw_points(traj, start, generator)
            for idx, x, y, m in ((context, xc, yc, mc), (target, xt, yt, mt)):
                k = idx.numel()
                x[b, :k], y[b, :k] = self._points(traj, start, idx.to(device))
                m[b, :k] = True
        return Task(xc, yc, mc, xt, yt, mt)

    def _randint(self, bounds: tuple[int, int], generator: torch.Generator | None) -> int:
        return int(torch.randint(bounds[0], bounds[1] + 1, (1,), generator=generator))

    def _draw_points(
        self, traj: int, start: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Flat point indices (time-major within the window) of the context and targets.

        With missing values the indices are drawn among the window's observed points: a
        random permutation of those indices replaces ``randperm`` of all of them, so complete
        data give exactly the draws of the complete-data rule.
        """
        per_time = self.points_per_time
        n_context = self._randint(self.num_context, generator)
        n_target = self._randint(self.num_target, generator)
        observed = None  # flat indices of the window's observed points, increasing
        if self._observed is not None:
            window = self._observed[traj, start : start + self.window].cpu()  # (window, P)
            observed = window.reshape(-1).nonzero().squeeze(1)
        if self.setting == "interpolation":
            total = self.window * per_time if observed is None else observed.numel()
            n_context = min(n_context, total - 1)
            perm = torch.randperm(total, generator=generator)
            if observed is not None:
                perm = observed[perm]
            context = perm[:n_context]
            end = min(n_context + n_target, total)
            target = perm[:end] if self.targets_include_context else perm[n_context:end]
            return context, target
        if observed is None:
            split = self._randint(self.split_range, generator)
            before = torch.arange(split * per_time)
        else:
            split = self._draw_split(window.sum(dim=1), generator)
            before = observed[observed < split * per_time]
        perm = before[torch.randperm(before.numel(), generator=generator)]
        context = perm[: min(n_context, before.numel())]
        first_target = (int(context.max()) // per_time + 1) * per_time
        if observed is None:
            after = torch.arange(first_target, self.window * per_time)
        else:
            after = observed[observed >= first_target]
        target = after[torch.randperm(after.numel(), generator=generator)[:n_target]]
        return context, target

    def _draw_split(self, counts: Tensor, generator: torch.Generator | None) -> int:
        """A split drawn uniformly among those allowed by ``counts (window,)``, the observed
        points per time step of the window."""
        cum = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        lo, hi = self.split_range
        splits = torch.arange(lo, hi + 1)
        need = torch.clamp(splits * self.points_per_time, max=self.num_context[0])
        allowed = splits[(cum[splits] >= need) & (cum[-1] - cum[splits] >= 1)]
        if allowed.numel() == splits.numel():
            return self._randint(self.split_range, generator)
        return int(allowed[int(torch.randint(allowed.numel(), (1,), generator=generator))])

    def _points(self, traj: int, start: int, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs ``(k, x_dim)`` and outputs ``(k, y_dim)`` of flat point indices ``idx``."""
        step = idx // self.points_per_time
        t = self.times[start + step]
        if self.relative_time:
            t = t - self.times[start]
        if not self.is_field:
            return t[:, None], self.values[traj, start + step]
        grid_y, grid_x = self.grid if self.grid is not None else self._check_grid(None)
        width = int(self.values.shape[4])
        rest = idx % self.points_per_time
        iy, ix = rest // width, rest % width
        x = torch.stack([t, grid_y[iy], grid_x[ix]], dim=-1)
        y = self.values[traj, start + step, :, iy, ix]  # (k, C)
        return x, y

    @classmethod
    def from_dataset(
        cls, dataset: Any, variables: Sequence[str] | None = None, **kwargs: Any
    ) -> TaskSampler:
        """Build a sampler from an ``xarray.Dataset`` made by :func:`simulate_dataset`.

        The variables are stacked by :func:`uqdyn.data.dataset_to_tensor`; the ``time``
        coordinate gives ``times`` and, for fields, the ``y`` and ``x`` coordinates give
        ``grid``. Other keyword arguments go to :class:`TaskSampler`.
        """
        from uqdyn.data.io import dataset_to_tensor

        values = dataset_to_tensor(dataset, variables)
        times = torch.tensor(
            np.asarray(dataset["time"].values, dtype=np.float64), dtype=values.dtype
        )
        if values.dim() == 5 and "grid" not in kwargs:
            kwargs["grid"] = (
                torch.tensor(np.asarray(dataset["y"].values, dtype=np.float64), dtype=values.dtype),
                torch.tensor(np.asarray(dataset["x"].values, dtype=np.float64), dtype=values.dtype),
            )
        return cls(values, times, **kwargs)
