"""Seeding of every random number generator uqdyn and its users' scripts draw from.

Model constructors draw their initial weights from torch's global RNG (as every
``torch.nn`` layer does), so two runs of a script give the same numbers only when that RNG
is seeded before the models are built. :func:`seed_everything` seeds it, together with the
CUDA generators, numpy's global RNG and Python's :mod:`random`, once at the start of a
script; :func:`seeded` does the same inside a ``with`` block and restores the previous
states on exit, so what is built inside depends only on the seed and nothing outside the
block changes.

:func:`uqdyn.train.fit` seeds its own randomness from its ``seed`` argument (see its
docstring); these functions cover what happens before it: the initial weights, and data or
masks drawn from the global RNGs.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from uqdyn._checks import as_int

__all__ = ["seed_everything", "seeded"]

_MAX_SEED = 2**32 - 1  # numpy's legacy global RNG takes seeds in [0, 2**32)


def _check_seed(seed: object) -> int:
    """``seed`` as an int in ``[0, 2**32 - 1]``; NumPy and 0-d integer scalars accepted."""
    return as_int(seed, "seed", minimum=0, maximum=_MAX_SEED)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's global RNG and Python's ``random``.

    After ``seed_everything(s)`` the same code builds the same models (initial weights)
    and draws the same random numbers from the global RNGs in every process. It changes
    process-wide state on purpose: call it once, at the start of a script or test. To seed
    one block without touching the caller's RNGs use :func:`seeded`.

    Parameters
    ----------
    seed : int
        In ``[0, 2**32 - 1]``; a NumPy integer or a 0-d integer array or tensor also works.

    Raises
    ------
    TypeError, ValueError
        When ``seed`` is not an int (TypeError) or not in that range (ValueError).

    Notes
    -----
    Seeds the generators only: GPU kernels that are nondeterministic by design (some
    scatter/index operations, cuDNN autotuning) can still differ between runs on a GPU;
    see :func:`torch.use_deterministic_algorithms`. Results on the CPU with the same
    number of threads are reproducible.

    Examples
    --------
    >>> import torch, uqdyn
    >>> from uqdyn.models.neural_process import CNP
    >>> uqdyn.seed_everything(0)
    >>> a = CNP(x_dim=1, y_dim=1, width=8)
    >>> uqdyn.seed_everything(0)
    >>> b = CNP(x_dim=1, y_dim=1, width=8)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding the legacy global RNG is the point
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, when CUDA starts)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with every global RNG seeded with ``seed``; restore them afterwards.

    Inside the block torch (CPU and every CUDA device), numpy's global RNG and Python's
    ``random`` are seeded as by :func:`seed_everything`; on exit (also on an exception)
    their previous states come back, so what the block builds depends only on ``seed``
    and the code after it draws exactly what it would have drawn without the block.

    Parameters
    ----------
    seed : int
        In ``[0, 2**32 - 1]``.

    Examples
    --------
    >>> import torch, uqdyn
    >>> from uqdyn.models.neural_process import CNP
    >>> with uqdyn.seeded(3):
    ...     a = CNP(x_dim=1, y_dim=1, width=8)
    >>> with uqdyn.seeded(3):
    ...     b = CNP(x_dim=1, y_dim=1, width=8)
    >>> torch.equal(a.decoder.net[0].weight, b.decoder.net[0].weight)
    True
    """
    seed = _check_seed(seed)
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 - saved and restored on exit
    with torch.random.fork_rng(devices=_cuda_devices()):
        try:
            seed_everything(seed)
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002
