"""The one fit loop of uqdyn: optimisation, validation, early stopping, checkpoints, resume."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from uqdyn._checks import as_int

from ._data import check_data
from ._distributed import setup_distributed
from ._engine import Data, FitLoop, LossFn, PredictFn, cpu_copy
from ._setup import MONITORS, check_float, check_int
from .checkpoint import CHECKPOINT_NAME
from .contract import loss_of, predict_batch_of
from .result import FitResult

__all__ = ["fit"]


def fit(
    model: nn.Module,
    train_data: Data,
    *,
    loss_fn: LossFn | None = None,
    steps: int = 1000,
    optimizer: str | Callable[[list[nn.Parameter]], Optimizer] = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    scheduler: str | Callable[[Optimizer], Any] | None = None,
    grad_clip: float | None = None,
    val_data: Data | None = None,
    val_every: int = 100,
    val_batches: int = 1,
    predict_fn: PredictFn | None = None,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    min_delta: float = 0.0,
    restore_best: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    amp: bool = False,
    seed: int = 0,
    log_every: int = 1,
    progress: bool = True,
    desc: str | None = None,
    distributed: bool | str = "auto",
) -> FitResult:
    r"""Fit ``model`` on ``train_data``: the one training loop of every uqdyn model.

    A model following the contract (:class:`~uqdyn.train.Trainable`: ``model.loss(batch)``,
    and :class:`~uqdyn.train.Validatable`: ``model.predict_batch(batch)``) needs only
    ``fit(model, data, steps=...)``; ``loss_fn`` and ``predict_fn`` override or replace them
    (any ``nn.Module`` with an explicit ``loss_fn`` can be fitted).

    Each step draws a batch, moves it to the device, computes ``loss = loss_fn(model, batch)``
    (under bf16 autocast when ``amp``), back-propagates, clips the global gradient norm to
    ``grad_clip``, steps the optimizer and then the scheduler. Every ``val_every`` steps and
    after the last step the model is validated on ``val_data`` (eval mode, no gradients):

    * ``val_loss``: mean of ``loss_fn`` over the validation batches;
    * ``val_crps``: :math:`\sum_i m_i\,\mathrm{CRPS}(F_i, y_i) / \sum_i m_i`, the mean CRPS
      (``Predictive.crps``) over all kept points of all batches, with ``(F, y, m)`` from
      ``predict_fn`` (a missing mask keeps every point);
    * ``val_nll``: :math:`-\sum_i m_i \log p_i(y_i) / \sum_i m_i`, the mean negative log
      density per point (a joint density over the last axis, as ``MultivariateNormal`` gives,
      counts as that many points); NaN when the Predictive has no density.

    The best state by ``monitor`` (smaller is better) is kept on the CPU; ``early_stopping``
    stops after that many scheduled validations without an improvement larger than
    ``min_delta``.

    **Randomness.** ``fit`` runs inside :func:`torch.random.fork_rng`: it seeds torch's global
    RNG (CPU and, on CUDA, the device) with ``seed`` at the start, so dropout and sampling in
    ``loss_fn`` depend only on ``seed``, and the caller's RNG state is left as it was. A
    callable ``train_data`` is called as ``train_data(generator)`` with a CPU
    ``torch.Generator`` seeded with ``seed``; an iterable is cycled (a shuffling
    ``DataLoader`` draws each epoch's order from the global RNG). Validation runs with its own
    RNG seeded with ``seed + 1`` each time (a callable ``val_data`` is drawn ``val_batches``
    times from a fresh generator with that seed, so every validation sees the same batches)
    and does not disturb the training RNG.

    **Checkpoints and resume.** With ``checkpoint_dir``, ``<checkpoint_dir>/last.pt`` is
    written atomically (temporary file, fsync, :func:`os.replace`) every ``checkpoint_every``
    steps, at early stopping and after the last step. It holds the model, optimizer and
    scheduler states, the step, the history, the best state and score, the early-stopping
    count, and every RNG state used (torch CPU, CUDA when used, the data generator or the
    iterable's epoch, position and epoch RNG), all as tensors and plain values, so it loads
    with ``torch.load(path, weights_only=True)``. ``resume=True`` continues from that file
    (or starts afresh if there is none); on the CPU a resumed run produces bit-for-bit the
    parameters of an uninterrupted run with the same arguments. The scheduler's state comes
    from the file too (a named scheduler keeps the horizon set from the first call's
    ``steps``). Resuming an iterable replays
    the current epoch's batches up to the saved position. Python's ``random`` and numpy RNGs
    are not used by ``fit`` and not saved. The final validation, when ``steps`` is not a
    multiple of ``val_every``, comes after the last checkpoint, so it appears in the returned
    history and best state but not in the file.

    **Several GPUs or nodes.** Under ``torchrun`` (or after
    ``torch.distributed.init_process_group``) ``fit`` trains data-parallel: every process
    runs the same ``fit`` call, the model is wrapped in
    :class:`torch.nn.parallel.DistributedDataParallel` (its forward calls ``loss_fn(model,
    batch)``, so the contract is unchanged, and its backward averages the gradients over
    the processes), and each process trains on its share of ``train_data``: a
    ``DataLoader`` over a map-style dataset gets a ``DistributedSampler`` (shuffled as the
    loader was, seeded with ``seed``, ``set_epoch`` every epoch), a list or tuple of batches
    gives rank ``r`` the batches ``r::world_size``, another iterable gives it every
    ``world_size``-th batch from ``r``, and a callable is called with a generator seeded
    per rank (rank 0 keeps ``seed``). The global batch of a step is the ranks' local
    batches together; with a mean loss over equal-sized local batches the averaged
    gradient is that of the global batch. The reported ``loss`` and the validation metrics
    (each rank scores its share of ``val_data``) are reduced over the processes with
    ``all_reduce``, so every process gets the same history, early-stopping decisions and
    best step; progress is shown by rank 0 only. Rank 0 alone writes the checkpoint (with
    every rank's RNG states and data position) between barriers; ``resume=True`` loads it on
    every rank (``checkpoint_dir`` on a shared file system) and continues exactly with the
    same number of processes. See ``docs/distributed.md``.

    **Divergence.** A non-finite loss, gradient norm, ``val_loss``, ``val_crps`` or monitored
    metric raises :class:`~uqdyn.train.TrainingError` naming the step and the value. The
    failing step is never applied and never written: the model keeps the weights after the
    previous step (if those are not finite, it gets the last checkpoint's, or the weights the
    call started from), and the last checkpoint on disk stays intact.

    Parameters
    ----------
    model:
        The module to fit; moved to ``device`` in place. Its train/eval mode is restored on
        return.
    train_data:
        A callable ``generator -> batch`` (e.g. ``lambda g: sampler.sample(16, generator=g)``)
        or an iterable of batches (e.g. a ``DataLoader``, or ``[batch]`` for full-batch
        training), cycled. Batches may be tensors, objects with ``.to(device)`` (a
        ``Task``) or nested tuples/lists/dicts of them.
    loss_fn:
        ``loss_fn(model, batch) -> Tensor`` of shape ``()``, the scalar to minimise;
        ``None`` (default) uses ``model.loss(batch)``.
    steps:
        Total number of optimisation steps (including those before a resume), >= 1.
    optimizer:
        ``"adam"``, ``"adamw"``, ``"sgd"`` (plain, no momentum) with ``lr`` and
        ``weight_decay``; ``"lbfgs"`` (one L-BFGS iteration with a strong-Wolfe line search
        per step, for full-batch losses such as a GP's marginal likelihood; no
        ``weight_decay``, ``grad_clip`` or ``amp``); or a callable
        ``params -> torch.optim.Optimizer``.
    lr, weight_decay:
        Learning rate (> 0) and weight decay (>= 0) of a named optimizer.
    scheduler:
        ``None``; ``"cosine"`` (cosine annealing to 0 over ``steps``); ``"step"`` (lr x 0.1
        every ``steps // 3`` steps); or a callable ``optimizer -> LRScheduler``, stepped after
        every optimizer step (a ``ReduceLROnPlateau`` is stepped with the monitored metric at
        every scheduled validation instead).
    grad_clip:
        Maximum global L2 norm of the gradients, or ``None`` for no clipping.
    val_data:
        Validation batches: a callable ``generator -> batch`` or an iterable, or ``None``.
    val_every:
        Validate every ``val_every`` steps (and after the last step).
    val_batches:
        Batches drawn from a callable ``val_data`` per validation.
    predict_fn:
        ``predict_fn(model, batch) -> (Predictive, y_true, mask)`` with ``y_true`` of the
        Predictive's ``batch_shape`` (e.g. ``(batch, points, y_dim)``) and a boolean ``mask``
        of its leading axes (e.g. ``(batch, points)``) or ``None``. Enables ``val_crps`` and
        ``val_nll``. ``None`` (default) uses ``model.predict_batch(batch)`` when the model
        has one and there is ``val_data``.
    early_stopping:
        Patience in scheduled validations, or ``None`` to never stop early.
    monitor:
        ``"val_loss"``, ``"val_crps"`` or ``"val_nll"``: the metric for the best state, early
        stopping and ``ReduceLROnPlateau``.
    min_delta:
        Smallest decrease of ``monitor`` that counts as an improvement (>= 0).
    restore_best:
        Load the best state into ``model`` before returning.
    checkpoint_dir:
        Directory for ``last.pt``, or ``None`` for no checkpoints.
    checkpoint_every:
        Also checkpoint every this many steps (needs ``checkpoint_dir``).
    resume:
        Continue from ``<checkpoint_dir>/last.pt`` when it exists.
    device:
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"`` or a
        ``torch.device``.
    amp:
        bf16 autocast around ``loss_fn`` and ``predict_fn``; CUDA only.
    seed:
        Seed of the global RNG, the data generator and (``seed + 1``) validation.
    log_every:
        Append a history row every this many steps (and at validations and the last step);
        ``loss`` and ``grad_norm`` are means over the steps since the previous row.
    progress:
        Report progress with the loss and validation metrics: a tqdm bar when stderr is a
        terminal, otherwise a plain line about every tenth of the steps (at most one per
        10 s) and at the end.
    desc:
        Name shown in progress reports (default: the model's class name).
    distributed:
        ``"auto"`` (default): data-parallel when ``torch.distributed`` is initialised with
        more than one process, or when torchrun's ``RANK``, ``WORLD_SIZE`` and
        ``LOCAL_RANK`` are set with ``WORLD_SIZE > 1`` (``fit`` then initialises the
        process group from the environment, NCCL on CUDA and gloo on the CPU, and leaves it
        initialised for later calls); one process otherwise, exactly as without it.
        ``True`` insists on data parallelism (an error when there is no process group to
        join); ``False`` trains in this process alone even under torchrun. Data-parallel,
        ``device="auto"`` (or ``"cuda"``) means ``cuda:LOCAL_RANK``.

    Returns
    -------
    FitResult
        ``history`` (list of dicts: ``step``, ``loss``, ``grad_norm``, ``lr``, ``seconds``,
        ``val_loss``, ``val_crps``, ``val_nll``), ``best_step``, ``best_score``,
        ``best_state`` (CPU state_dict), ``steps_done``, ``stopped`` (``"completed"`` or
        ``"early_stopping"``), ``monitor`` and ``checkpoint_path``.

    Raises
    ------
    TrainingError
        On a non-finite loss, gradient norm or validation metric.
    ValueError, TypeError
        On invalid arguments, naming the argument and what was expected.

    References
    ----------
    Gneiting & Raftery (2007), "Strictly proper scoring rules, prediction, and estimation",
    JASA 102(477) (the CRPS and log score used for validation).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.train import fit
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Linear(1, 1)
    >>> def batch(g):
    ...     x = torch.randn(64, 1, generator=g)
    ...     return x, 3.0 * x - 1.0
    >>> result = fit(model, batch, loss_fn=lambda m, b: (m(b[0]) - b[1]).square().mean(),
    ...              steps=300, lr=0.05, device="cpu", progress=False)
    >>> round(model.weight.item(), 2), round(model.bias.item(), 2)
    (3.0, -1.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    if loss_fn is None:
        loss_fn = loss_of(model)
    elif not callable(loss_fn):
        raise TypeError(
            f"loss_fn is a {type(loss_fn).__name__}; expected None (model.loss) or a callable "
            "(model, batch) -> Tensor"
        )
    check_data(train_data, "train_data")
    steps = check_int(steps, "steps", 1)  # type: ignore[assignment]
    lr = check_float(lr, "lr", positive=True)  # type: ignore[assignment]
    weight_decay = check_float(weight_decay, "weight_decay", positive=False)  # type: ignore[assignment]
    grad_clip = check_float(grad_clip, "grad_clip", positive=True, optional=True)
    min_delta = check_float(min_delta, "min_delta", positive=False)  # type: ignore[assignment]
    val_every = check_int(val_every, "val_every", 1)  # type: ignore[assignment]
    val_batches = check_int(val_batches, "val_batches", 1)  # type: ignore[assignment]
    log_every = check_int(log_every, "log_every", 1)  # type: ignore[assignment]
    early_stopping = check_int(early_stopping, "early_stopping", 1, optional=True)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1, optional=True)
    seed = as_int(seed, "seed")
    if monitor not in MONITORS:
        raise ValueError(f"monitor={monitor!r}; expected one of {list(MONITORS)}")
    if predict_fn is not None and not callable(predict_fn):
        raise TypeError(
            f"predict_fn is a {type(predict_fn).__name__}; expected None or a callable "
            "(model, batch) -> (Predictive, y_true, mask)"
        )
    if val_data is None:
        for name, value in (
            ("predict_fn", predict_fn),
            ("early_stopping", early_stopping),
            ("restore_best", restore_best or None),
        ):
            if value is not None:
                raise ValueError(f"{name}={value!r} needs validation data; got val_data=None")
    else:
        check_data(val_data, "val_data")
    if predict_fn is None and val_data is not None:
        predict_fn = predict_batch_of(model)
    if monitor != "val_loss" and predict_fn is None:
        raise ValueError(
            f"monitor={monitor!r} needs a predict_fn returning (Predictive, y_true, mask) or "
            "a model with predict_batch(batch); got neither"
        )
    if checkpoint_dir is None and (checkpoint_every is not None or resume):
        name, value = ("resume", resume) if resume else ("checkpoint_every", checkpoint_every)
        raise ValueError(f"{name}={value!r} needs a checkpoint_dir; got checkpoint_dir=None")
    if optimizer == "lbfgs" and (grad_clip is not None or amp):
        bad = f"grad_clip={grad_clip!r}" if grad_clip is not None else f"amp={amp!r}"
        raise ValueError(f"{bad} with optimizer='lbfgs'; expected the default")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc is a {type(desc).__name__}; expected None or a str")
    group, resolved = setup_distributed(distributed, device)
    if amp and resolved.type != "cuda":
        raise ValueError(
            f"amp=True needs a CUDA device (bf16 autocast); got device={str(resolved)!r}"
        )
    was_training = model.training
    model.to(resolved)
    options: dict[str, Any] = {
        "train_data": train_data,
        "steps": steps,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "scheduler": scheduler,
        "grad_clip": grad_clip,
        "val_data": val_data,
        "val_every": val_every,
        "val_batches": val_batches,
        "predict_fn": predict_fn,
        "early_stopping": early_stopping,
        "monitor": monitor,
        "min_delta": min_delta,
        "restore_best": bool(restore_best),
        "checkpoint_file": None
        if checkpoint_dir is None
        else Path(checkpoint_dir) / CHECKPOINT_NAME,
        "checkpoint_every": checkpoint_every,
        "device": resolved,
        "amp": bool(amp),
        "seed": seed,
        "log_every": log_every,
        "progress": bool(progress),
        "desc": type(model).__name__ if desc is None else desc,
        "distributed": group,
    }
    devices = [int(resolved.index)] if resolved.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            loop = FitLoop(model, loss_fn, options)
            loop._seed_all(seed)
            if resume:
                loop.resume()
            options["initial_state"] = cpu_copy(model.state_dict())
            return loop.run()
    finally:
        model.train(was_training)
