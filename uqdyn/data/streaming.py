"""Training windows streamed from a chunked zarr store, for data larger than memory."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from torch.utils.data import Dataset

from uqdyn._checks import as_int

__all__ = ["ZarrWindowDataset"]


class ZarrWindowDataset(Dataset):
    """Input/target windows of trajectories read lazily, item by item, from a zarr store.

    The store is opened with :func:`xarray.open_zarr` (metadata only); item ``k`` reads
    just the frames of its window, ``var.isel({sample_dim: n, time_dim: slice(s, e)}).values``
    for each variable, so only the zarr chunks holding those frames are read and
    decompressed. An epoch through a ``DataLoader`` therefore holds about one batch (plus one
    chunk per variable and worker) in memory however large the store is; with one sample per
    chunk, each item reads one chunk per variable. The windows are those of
    :class:`~uqdyn.data.TrajectoryWindows`: item ``k`` is window ``w = k mod n_windows`` of
    sample ``n = k // n_windows``, frames ``s, ..., s + input_steps - 1`` as inputs and the
    ``target_steps`` frames after them as targets, with ``s = w * stride`` and
    ``n_windows = (T - input_steps - target_steps) // stride + 1``.

    Variables are stacked as :func:`~uqdyn.data.dataset_to_tensor` stacks them:

    * gridded variables with dims ``(sample, time, y, x)`` give one channel each, those with
      ``(sample, time, channel, y, x)`` their channels, in the order of ``variables``: items
      ``(steps, C, H, W)``, batches ``(batch, steps, C, H, W)``;
    * vector variables ``(sample, time, dim)`` are concatenated along ``dim``: items
      ``(steps, D)``, batches ``(batch, steps, D)``.

    Dims may come in any order in the store (each read is transposed to this layout). The
    dataset pickles without its open store (each ``DataLoader`` worker reopens it), so
    ``num_workers > 0`` works when ``store`` is a path.

    Parameters
    ----------
    store:
        A zarr store path (``str`` or ``os.PathLike``), or an ``xarray.Dataset`` already
        opened lazily (e.g. ``xr.open_zarr(...)``; an in-memory dataset works too).
    variables:
        Names of the state variables in channel order; default: the store's
        ``state_variables`` attribute (comma-separated), else every variable with
        ``sample_dim`` and ``time_dim``.
    input_steps, target_steps:
        Frames per input and per target (``>= 1``).
    stride:
        Step between window starts (``>= 1``); ``stride = input_steps + target_steps``
        tiles each trajectory with disjoint windows.
    sample_dim, time_dim:
        Names of the trajectory and time dims.
    dtype:
        Floating dtype of the returned tensors.
    chunks:
        Passed to :func:`xarray.open_zarr` when ``store`` is a path. ``None`` (default)
        indexes xarray's lazy backend arrays directly: each item reads the zarr chunks
        holding its frames, without building a dask graph (about 3x faster per item than
        dask here); ``{}`` gives dask arrays with the store's own chunks, ``"auto"`` or a
        mapping dask chunks of that size (each item then reads whole dask chunks).

    Examples
    --------
    >>> import numpy as np, xarray as xr, torch, tempfile, os
    >>> from torch.utils.data import DataLoader
    >>> from uqdyn.data import ZarrWindowDataset
    >>> path = os.path.join(tempfile.mkdtemp(), "traj.zarr")
    >>> u = np.random.default_rng(0).standard_normal((4, 10, 8, 8)).astype(np.float32)
    >>> xr.Dataset({"u": (("sample", "time", "y", "x"), u)}).chunk({"sample": 1}).to_zarr(
    ...     path, consolidated=False)  # doctest: +ELLIPSIS
    <...>
    >>> windows = ZarrWindowDataset(path, ["u"], input_steps=3, target_steps=2)
    >>> len(windows)
    24
    >>> inputs, targets = next(iter(DataLoader(windows, batch_size=5)))
    >>> inputs.shape, targets.shape
    (torch.Size([5, 3, 1, 8, 8]), torch.Size([5, 2, 1, 8, 8]))
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | xr.Dataset,
        variables: Sequence[str] | None = None,
        *,
        input_steps: int,
        target_steps: int = 1,
        stride: int = 1,
        sample_dim: str = "sample",
        time_dim: str = "time",
        dtype: torch.dtype = torch.float32,
        chunks: Mapping[str, Any] | str | None = None,
    ) -> None:
        if isinstance(store, xr.Dataset):
            self.path: str | None = None
            ds = store
        elif isinstance(store, (str, os.PathLike)):
            self.path = os.fspath(store)
            if not os.path.exists(self.path):
                raise ValueError(f"store {self.path!r} does not exist; expected a zarr store")
            ds = None
        else:
            raise TypeError(
                f"store is a {type(store).__name__}; expected a zarr store path or an "
                "xarray.Dataset"
            )
        for name, dim in (("sample_dim", sample_dim), ("time_dim", time_dim)):
            if not isinstance(dim, str) or not dim:
                raise TypeError(f"{name}={dim!r}; expected a dim name (a non-empty str)")
        if sample_dim == time_dim:
            raise ValueError(f"sample_dim and time_dim are both {sample_dim!r}; expected two dims")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype={dtype!r}; expected a floating torch.dtype")
        if isinstance(variables, str):
            raise TypeError(f"variables={variables!r} is a string; expected a list of names")
        self.input_steps = as_int(input_steps, "input_steps", minimum=1)
        self.target_steps = as_int(target_steps, "target_steps", minimum=1)
        self.stride = as_int(stride, "stride", minimum=1)
        self.sample_dim = sample_dim
        self.time_dim = time_dim
        self.dtype = dtype
        if chunks is not None and not isinstance(chunks, (Mapping, str)):
            raise TypeError(
                f"chunks is a {type(chunks).__name__}; expected None, 'auto' or a mapping"
            )
        self.chunks: dict[Any, Any] | Literal["auto"] | None = (
            dict(chunks) if isinstance(chunks, Mapping) else "auto" if chunks == "auto" else None
        )
        if isinstance(chunks, str) and chunks != "auto":
            raise ValueError(f"chunks={chunks!r}; expected None, 'auto' or a mapping")
        self._ds: xr.Dataset | None = ds
        ds = self._dataset()
        self.variables = self._check_variables(ds, variables)
        first = ds[self.variables[0]]
        self.n_samples = int(first.sizes[sample_dim])
        self.n_times = int(first.sizes[time_dim])
        if self.input_steps + self.target_steps > self.n_times:
            raise ValueError(
                f"input_steps + target_steps = {self.input_steps + self.target_steps} exceeds "
                f"the {self.n_times} steps of {time_dim!r}"
            )
        self.n_windows = (self.n_times - self.input_steps - self.target_steps) // self.stride + 1

    # -- store ---------------------------------------------------------------------------

    def _dataset(self) -> xr.Dataset:
        if self._ds is None:
            try:
                import zarr  # noqa: F401
            except ImportError:
                raise ImportError(
                    "reading zarr stores needs the zarr package; install it (pip install zarr)"
                ) from None
            with warnings.catch_warnings():  # a store without consolidated metadata is fine
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
                self._ds = xr.open_zarr(self.path, chunks=self.chunks)
        return self._ds

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:
            state["_ds"] = None  # reopened lazily in each process
        return state

    def _check_variables(self, ds: xr.Dataset, variables: Sequence[str] | None) -> list[str]:
        both = {self.sample_dim, self.time_dim}
        if variables is None:
            listed = ds.attrs.get("state_variables")
            if isinstance(listed, str) and listed:
                names = listed.split(",")
            else:
                names = [str(n) for n, v in ds.data_vars.items() if both <= set(v.dims)]
        else:
            names = list(variables)
        if not names:
            raise ValueError(
                f"variables: no variable of {list(ds.data_vars)} has dims "
                f"({self.sample_dim!r}, {self.time_dim!r}); expected at least one"
            )
        self._layout: dict[str, tuple[str, ...]] = {}
        kind = None
        for name in names:
            if name not in ds.data_vars:
                raise ValueError(
                    f"variables: {name!r} is not in the store; available: {list(ds.data_vars)}"
                )
            var = ds[name]
            missing = [d for d in (self.sample_dim, self.time_dim) if d not in var.dims]
            if missing:
                raise ValueError(
                    f"variables: {name!r} has dims {var.dims}, missing {missing} "
                    "(see sample_dim and time_dim)"
                )
            if var.dtype.kind not in "fiub":
                raise TypeError(f"variables: {name!r} has dtype {var.dtype}; expected numbers")
            rest = tuple(str(d) for d in var.dims if d not in both)
            order: tuple[str, ...]
            if {"y", "x"} <= set(rest):
                order = ("y", "x") if "channel" not in rest else ("channel", "y", "x")
                this = "grid"
            elif rest == ("dim",):
                order, this = ("dim",), "vector"
            else:
                raise ValueError(
                    f"variables: {name!r} has dims {var.dims}; expected ({self.sample_dim}, "
                    f"{self.time_dim}, y, x), ({self.sample_dim}, {self.time_dim}, channel, y, "
                    f"x) or ({self.sample_dim}, {self.time_dim}, dim)"
                )
            extra = [d for d in rest if d not in order]
            if extra:
                raise ValueError(f"variables: {name!r} has unexpected dims {extra}")
            if kind is not None and this != kind:
                raise ValueError(f"variables: {name!r} is {this} but earlier variables are {kind}")
            kind = this
            self._layout[name] = (self.sample_dim, self.time_dim, *order)
        return names

    # -- items ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_samples * self.n_windows

    def window(self, index: int) -> tuple[int, int]:
        """``(sample, start)`` of item ``index``."""
        index = as_int(index, "index")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} windows")
        sample, window = divmod(index % len(self), self.n_windows)
        return sample, window * self.stride

    def read(self, sample: int, start: int, steps: int) -> Tensor:
        """Frames ``start, ..., start + steps - 1`` of trajectory ``sample``.

        Returns
        -------
        Tensor ``(steps, C, H, W)`` (gridded variables) or ``(steps, D)`` (vector variables),
        read from the store's chunks holding those frames only.
        """
        ds = self._dataset()
        where = {self.sample_dim: sample, self.time_dim: slice(start, start + steps)}
        parts = []
        for name in self.variables:
            layout = self._layout[name]
            array = np.asarray(ds[name].isel(where).transpose(*layout[1:]).values)
            if len(layout) == 4:  # (time, y, x): one channel
                array = array[:, None]
            parts.append(torch.from_numpy(np.ascontiguousarray(array)).to(self.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)``: ``(input_steps, *state)`` and ``(target_steps, *state)``."""
        sample, start = self.window(index)
        frames = self.read(sample, start, self.input_steps + self.target_steps)
        return frames[: self.input_steps], frames[self.input_steps :]

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "<xarray.Dataset>"
        return (
            f"ZarrWindowDataset({where!r}, {self.variables}, input_steps={self.input_steps}, "
            f"target_steps={self.target_steps}, stride={self.stride}, "
            f"{len(self)} windows of {self.n_samples} samples)"
        )
