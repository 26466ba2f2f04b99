"""Data-parallel training for :func:`uqdyn.train.fit` with torch's own distributed engine.

``fit`` uses ``torch.distributed`` (``init_process_group``, collectives) and
``torch.nn.parallel.DistributedDataParallel`` for the gradient all-reduce; this module only
decides when to use them, shards the data and reduces the reported metrics.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from uqdyn._device import resolve_device

__all__ = ["Distributed", "setup_distributed", "rank_seed"]

#: The environment variables that ``torchrun`` sets in every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

# A 64-bit odd constant (the golden ratio's fraction): rank r > 0 gets seed + r * _SPREAD.
_SPREAD = 0x9E3779B97F4A7C15


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``: ``seed`` itself on rank 0, well-separated seeds on the others."""
    if rank == 0:
        return seed
    return (seed + rank * _SPREAD) % 2**64


class _LossModule(nn.Module):
    """The module DDP wraps: its forward is the model's loss, ``loss_fn(model, batch)``."""

    loss_fn: Callable[[nn.Module, Any], Tensor]

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.__dict__["loss_fn"] = loss_fn  # never registered as a submodule

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class Distributed:
    """The process group of a data-parallel ``fit``: rank, world size and reductions."""

    def __init__(self, device: torch.device) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        # NCCL reduces CUDA tensors only; gloo (and the others) take CPU tensors.
        self.comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------ reductions
    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks of float64 ``values`` (one all_reduce)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def mean(self, value: Tensor | float) -> float:
        """The mean over the ranks of one number (e.g. each rank's batch loss)."""
        number = float(value.detach()) if isinstance(value, Tensor) else float(value)
        return self.all_sum([number])[0] / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on some rank."""
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.comm_device.type == "cuda":
            dist.barrier(device_ids=[int(self.comm_device.index)])
        else:
            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (picklable objects, e.g. RNG states)."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    # ------------------------------------------------------------------ model
    def wrap(
        self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]
    ) -> DistributedDataParallel:
        """``DistributedDataParallel`` around a module whose forward is ``loss_fn(model, .)``.

        DDP broadcasts rank 0's parameters and buffers at construction and averages the
        gradients over the ranks in ``backward``. ``find_unused_parameters=True`` keeps
        models whose loss leaves some parameters out (for a batch or for good) working; DDP
        prints one warning per process when a model uses all its parameters.
        """
        device_ids = [int(self.device.index)] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            _LossModule(model, loss_fn), device_ids=device_ids, find_unused_parameters=True
        )

    # ------------------------------------------------------------------ data
    def shard_train(self, data: Any, name: str, seed: int) -> Any:
        """Each rank's share of training data (a callable is left alone: seeded per rank).

        A ``DataLoader`` over a map-style dataset gets a ``DistributedSampler`` (shuffled
        when the loader shuffled, seeded with ``seed``; ``fit`` calls ``set_epoch`` every
        epoch); a list or tuple of batches gives rank ``r`` the batches ``r::world_size``;
        any other iterable (an ``IterableDataset`` loader) is read whole on every rank, which
        keeps the batches ``r, r + world_size, ...`` of each pass.
        """
        if callable(data):
            return data
        if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
            if isinstance(data.sampler, DistributedSampler):
                return data
            if data.batch_size is None or not isinstance(
                data.sampler, (SequentialSampler, RandomSampler)
            ):
                raise TypeError(
                    f"{name} is a DataLoader with a custom sampler or batch_sampler; expected "
                    "batch_size= with shuffle=True/False (fit then shards it with a "
                    "DistributedSampler) or a sampler that is a DistributedSampler already"
                )
            sampler: DistributedSampler[Any] = DistributedSampler(
                data.dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=isinstance(data.sampler, RandomSampler),
                seed=seed,
                drop_last=data.drop_last,
            )
            return _rebuild(data, sampler=sampler, batch_size=data.batch_size)
        if isinstance(data, (list, tuple)):
            if len(data) < self.world_size:
                raise ValueError(
                    f"{name} holds {len(data)} batch(es) for {self.world_size} processes; "
                    "expected at least one batch per process (rank r takes the batches "
                    "r::world_size: split a full batch into world_size parts)"
                )
            return list(data[self.rank :: self.world_size])
        return _Strided(data, self.rank, self.world_size)

    def shard_validation(self, data: Any, seed: int) -> Any:
        """Each rank's share of the validation batches, without padding or duplicates.

        The union over the ranks is exactly the single-process validation set, so the
        reduced metrics equal those of one process. A ``DataLoader`` over a map-style
        dataset keeps its batches ``r::world_size`` (as index lists, so nothing else is
        loaded; a shuffling sampler is drawn once, under ``seed``, the same on every rank); a list or tuple keeps ``r::world_size``; any other iterable is read whole
        and keeps every ``world_size``-th batch; a callable is drawn as in one process and
        each rank scores its share of the draws (``validation_batches``).
        """
        if callable(data):
            return data
        if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
            # The same batches on every rank: a shuffling sampler draws under one seed.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                batches = [list(indices) for indices in data.batch_sampler]  # type: ignore[union-attr]
            return _rebuild(data, batch_sampler=batches[self.rank :: self.world_size])
        if isinstance(data, (list, tuple)):
            return list(data[self.rank :: self.world_size])
        return _Strided(data, self.rank, self.world_size)


class _Strided:
    """Re-iterable view of the items ``start, start + step, ...`` of every pass over data."""

    def __init__(self, data: Iterable[Any], start: int, step: int) -> None:
        self.data, self.start, self.step = data, start, step

    def __iter__(self) -> Iterator[Any]:
        return islice(iter(self.data), self.start, None, self.step)


def _rebuild(loader: DataLoader[Any], **sampling: Any) -> DataLoader[Any]:
    """``loader`` with other sampling (``sampler``/``batch_size`` or ``batch_sampler``)."""
    if "batch_sampler" not in sampling:
        sampling["drop_last"] = loader.drop_last
    return DataLoader(
        loader.dataset,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        in_order=getattr(loader, "in_order", True),
        **sampling,
    )


def _check_mode(distributed: Any) -> None:
    if not (isinstance(distributed, bool) or distributed == "auto"):
        raise ValueError(
            f"distributed={distributed!r}; expected 'auto' (data-parallel when torch.distributed "
            "is initialised or torchrun's RANK/WORLD_SIZE/LOCAL_RANK are set), True or False"
        )


def setup_distributed(
    distributed: bool | str, device: str | torch.device
) -> tuple[Distributed | None, torch.device]:
    """The process group to train with (or ``None``) and the device of this rank.

    ``"auto"`` trains data-parallel when ``torch.distributed`` is initialised with more than
    one process, or when torchrun's variables are set with ``WORLD_SIZE > 1`` (the process
    group is then initialised here: NCCL on CUDA, gloo on the CPU, ``env://``, and destroyed
    at exit); ``True`` insists on it (a world of one process included); ``False`` never.
    Without data parallelism the device is ``resolve_device(device)``, as always.
    """
    _check_mode(distributed)
    if distributed is False:
        return None, resolve_device(device)
    initialised = dist.is_available() and dist.is_initialized()
    from_env = all(name in os.environ for name in TORCHRUN_VARIABLES)
    if initialised:
        world_size = dist.get_world_size()
    elif from_env:
        try:
            world_size = int(os.environ["WORLD_SIZE"])
        except ValueError:
            raise ValueError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment; expected an int"
            ) from None
    else:
        if distributed is True:
            raise ValueError(
                "distributed=True but torch.distributed is not initialised and "
                f"{'/'.join(TORCHRUN_VARIABLES)} are not set; expected a run under torchrun "
                "or torch.distributed.init_process_group(...) before fit"
            )
        return None, resolve_device(device)
    if world_size <= 1 and distributed is not True:
        return None, resolve_device(device)
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        raise ValueError("distributed training needs torch.distributed; this torch lacks it")
    resolved = _rank_device(device)
    if not initialised:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend)
        atexit.register(_destroy_process_group)
    elif dist.get_backend() == "nccl" and resolved.type != "cuda":
        raise ValueError(
            f"torch.distributed runs the NCCL backend but device={str(resolved)!r}; expected a "
            "CUDA device (or a gloo process group for CPU training)"
        )
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return Distributed(resolved), resolved


def _rank_device(device: str | torch.device) -> torch.device:
    """``"auto"`` and a bare ``"cuda"`` mean this rank's GPU, ``cuda:LOCAL_RANK``."""
    if isinstance(device, str) and device in ("auto", "cuda") and torch.cuda.is_available():
        if "LOCAL_RANK" in os.environ:
            local_rank = int(os.environ["LOCAL_RANK"])
        else:
            local_rank = dist.get_rank() % torch.cuda.device_count()
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this node has {count} CUDA device(s); expected "
                "at most one process per GPU (torchrun --nproc_per_node <= GPUs)"
            )
        return torch.device("cuda", local_rank)
    return resolve_device(device)
