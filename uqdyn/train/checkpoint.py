"""Atomic checkpoint files that load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME"]

#: File name of the checkpoint that :func:`uqdyn.train.fit` writes inside ``checkpoint_dir``.
CHECKPOINT_NAME = "last.pt"

#: Version of the layout written by ``fit``; bumped when the layout changes.
CHECKPOINT_FORMAT = 1


def _fsync_directory(directory: Path) -> None:
    """Flush the directory entry of a rename to disk (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically with :func:`torch.save`.

    The state is first written to a temporary file in the same directory, flushed and
    ``fsync``-ed, then moved over ``path`` with :func:`os.replace` (atomic on POSIX and
    Windows). A crash or an exception during the write leaves any previous file at ``path``
    untouched, and the temporary file is removed.

    Parameters
    ----------
    state:
        A mapping of tensors, numbers, strings, ``None`` and nested dicts/lists/tuples of
        them, so that it loads with ``torch.load(path, weights_only=True)``.
    path:
        Destination file; its directory is created when missing.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from uqdyn.train import load_checkpoint, save_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_checkpoint({"format": 1, "w": torch.ones(2)}, Path(d) / "last.pt")
    ...     load_checkpoint(p)["w"]
    tensor([1., 1.])
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state is a {type(state).__name__}; expected a mapping (e.g. a dict)")
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)
    return target


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` or :func:`uqdyn.train.fit`.

    Uses ``torch.load(path, map_location=map_location, weights_only=True)``: only tensors and
    plain containers are unpickled, never arbitrary objects.

    Parameters
    ----------
    path:
        A checkpoint file, or a directory holding ``last.pt`` (as ``fit`` writes).
    map_location:
        Where tensors are loaded (default ``"cpu"``).

    Returns
    -------
    dict
        For ``fit`` checkpoints: ``format``, ``step``, ``model`` (state_dict), ``optimizer``,
        ``scheduler``, ``history``, ``best`` (``step``, ``score``, ``state``, ``bad_validations``),
        ``rng`` (``torch_cpu``, ``cuda``, ``data``), ``stopped``, ``seconds`` and ``config``;
        a data-parallel fit adds ``distributed`` (``world_size`` and ``rng``, one entry per
        rank; ``rng`` above is rank 0's).

    Examples
    --------
    See :func:`save_checkpoint`.
    """
    target = Path(path)
    if target.is_dir():
        target = target / CHECKPOINT_NAME
    if not target.is_file():
        raise FileNotFoundError(f"path={str(target)!r}: no checkpoint file there")
    state = torch.load(target, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(
            f"path={str(target)!r} holds a {type(state).__name__}; expected a checkpoint dict"
        )
    return state
