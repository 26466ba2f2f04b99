"""Batch streams for the fit loop: callables drawing from a generator, or cycled iterables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch to ``device``: tensors, objects with ``.to`` and nested containers."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    to = getattr(batch, "to", None)
    if callable(to):
        return to(device)
    return batch


def check_data(data: Any, name: str) -> None:
    """Raise TypeError unless ``data`` is a callable or an iterable of batches."""
    if isinstance(data, Tensor):
        raise TypeError(
            f"{name} is a Tensor; expected a callable (generator) -> batch or an iterable of "
            "batches (wrap a single batch in a list: [batch])"
        )
    if callable(data):
        return
    try:
        iter(data)
    except TypeError:
        raise TypeError(
            f"{name} is a {type(data).__name__}; expected a callable (generator) -> batch or "
            "an iterable of batches (e.g. a DataLoader)"
        ) from None


class BatchStream:
    """An endless stream of training batches whose position can be saved and restored.

    A callable is called as ``data(generator)`` with a CPU ``torch.Generator`` seeded with
    ``seed``; its state is the generator's state. An iterable is cycled; its state is the
    epoch, the position inside the epoch and torch's CPU RNG state when the epoch's iterator
    was created (a shuffling ``DataLoader`` draws its order from it). Restoring an iterable
    re-creates that epoch's iterator under the saved RNG state and skips the batches already
    used, so the order continues as in an uninterrupted run.

    With ``set_epoch`` (data-parallel fits), a ``DataLoader`` whose sampler has
    ``set_epoch`` (a ``DistributedSampler``) is told the epoch before each pass, so that each
    epoch has its own order, the same on every rank.
    """

    def __init__(
        self,
        data: Callable[[torch.Generator], Any] | Iterable[Any],
        name: str,
        seed: int,
        *,
        set_epoch: bool = False,
    ):
        check_data(data, name)
        self.data = data
        self.set_epoch = set_epoch
        self.name = name
        self.is_callable = callable(data)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.epoch_rng: Tensor | None = None
        self.iterator: Iterator[Any] | None = None

    def _tell_epoch(self) -> None:
        sampler = getattr(self.data, "sampler", None)
        if self.set_epoch and callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self.epoch)  # type: ignore[union-attr]

    def _start_epoch(self) -> Iterator[Any]:
        self.epoch_rng = torch.get_rng_state()
        self._tell_epoch()
        self.iterator = iter(self.data)  # type: ignore[arg-type]
        self.position = 0
        return self.iterator

    def next(self) -> Any:
        """The next batch (not yet moved to a device)."""
        if self.is_callable:
            return self.data(self.generator)  # type: ignore[operator]
        iterator = self.iterator if self.iterator is not None else self._start_epoch()
        try:
            batch = next(iterator)
        except StopIteration:
            if self.position == 0:
                raise ValueError(
                    f"{self.name} yielded no batches; expected a non-empty iterable that can be "
                    "iterated repeatedly (pass a list or a DataLoader, not a one-shot iterator)"
                ) from None
            self.epoch += 1
            self._start_epoch()
            return self.next()
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints describing the stream's position."""
        if self.is_callable:
            return {"kind": "callable", "generator": self.generator.get_state()}
        return {
            "kind": "iterable",
            "epoch": self.epoch,
            "position": self.position,
            "epoch_rng": self.epoch_rng,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position; leaves torch's CPU RNG state as it found it."""
        kind = "callable" if self.is_callable else "iterable"
        if state.get("kind") != kind:
            raise ValueError(
                f"the checkpoint's {self.name} was a {state.get('kind')!r} data source; "
                f"got a {kind} now"
            )
        if self.is_callable:
            self.generator.set_state(state["generator"])
            return
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.epoch_rng = state["epoch_rng"]
        self.iterator = None
        if self.epoch_rng is None:
            return
        current = torch.get_rng_state()
        torch.set_rng_state(self.epoch_rng)
        self._tell_epoch()
        self.iterator = iter(self.data)  # type: ignore[arg-type]
        for _ in range(self.position):
            try:
                next(self.iterator)
            except StopIteration:
                raise ValueError(
                    f"{self.name} now yields fewer than the {self.position} batches per epoch "
                    "recorded in the checkpoint; expected the same data when resuming"
                ) from None
        torch.set_rng_state(current)


def validation_batches(
    data: Callable[[torch.Generator], Any] | Iterable[Any],
    num_batches: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Any]:
    """The validation batches: the whole iterable, or ``num_batches`` draws from the callable
    with a generator seeded afresh at every validation (the same batches each time).

    In a data-parallel fit every rank draws the same ``num_batches`` batches from a callable
    and keeps the draws ``rank::world_size`` (an iterable is sharded beforehand).
    """
    if callable(data):
        generator = torch.Generator().manual_seed(seed)
        for index in range(num_batches):
            batch = data(generator)
            if index % world_size == rank:
                yield batch
    else:
        yield from data
