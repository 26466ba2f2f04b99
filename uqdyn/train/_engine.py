"""The state machine behind :func:`uqdyn.train.fit`: steps, validation, checkpoints, resume."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from uqdyn._progress import Progress

from ._data import BatchStream, move_to_device, validation_batches
from ._distributed import Distributed, rank_seed
from ._setup import make_optimizer, make_scheduler
from ._validation import check_scalar_loss, evaluate
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .result import FitResult, TrainingError

Batch = Any
LossFn = Callable[[nn.Module, Batch], Tensor]
PredictFn = Callable[[nn.Module, Batch], tuple[Any, Tensor, "Tensor | None"]]
Data = Callable[[torch.Generator], Batch] | Iterable[Batch]


def cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A detached copy of a state_dict on the CPU."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _non_finite_entry(
    state: dict[str, Tensor], start: dict[str, Tensor] | None = None
) -> tuple[str, float] | None:
    """Name and first value of the first floating entry of ``state`` that is not finite.

    Values that were already non-finite in ``start`` (the state the fit started from), such
    as the infinite upper bound of a gpytorch constraint, do not count.
    """
    for name, value in state.items():
        if value.is_floating_point() or value.is_complex():
            bad = ~torch.isfinite(value)
            before = None if start is None else start.get(name)
            if before is not None and before.shape == value.shape:
                bad &= torch.isfinite(before).to(bad.device)
            if bool(bad.any()):
                return name, float(value[bad].reshape(-1)[0].real)
    return None


def _copy_into(params: list[nn.Parameter], saved: list[Tensor]) -> None:
    """Put the ``saved`` values back into ``params`` (in place, no gradient)."""
    with torch.no_grad():
        for param, value in zip(params, saved, strict=True):
            param.copy_(value)


def _grad_norm(params: list[nn.Parameter], max_norm: float | None) -> Tensor:
    """Global L2 norm of the gradients (before clipping); clips them in place to ``max_norm``."""
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class FitLoop:
    """State of one ``fit`` call; see :func:`fit` for the meaning of the options."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, options: dict[str, Any]) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.o = options
        self.device: torch.device = options["device"]
        self.dist: Distributed | None = options.get("distributed")
        self.rank = 0 if self.dist is None else self.dist.rank
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no parameters with requires_grad=True; nothing to fit")
        train_data, val_data = options["train_data"], options["val_data"]
        if self.dist is not None:  # each rank's share of the data
            train_data = self.dist.shard_train(train_data, "train_data", options["seed"])
            if val_data is not None:
                val_data = self.dist.shard_validation(val_data, options["seed"] + 1)
        self.val_data = val_data
        self.optimizer: Optimizer = make_optimizer(
            options["optimizer"], self.params, options["lr"], options["weight_decay"]
        )
        self.scheduler: LRScheduler | ReduceLROnPlateau | None = make_scheduler(
            options["scheduler"], self.optimizer, options["steps"]
        )
        if isinstance(self.scheduler, ReduceLROnPlateau) and options["val_data"] is None:
            raise ValueError(
                "scheduler is a ReduceLROnPlateau, which steps on the monitored validation "
                "metric; expected val_data too"
            )
        self.stream = BatchStream(
            train_data,
            "train_data",
            rank_seed(options["seed"], self.rank),
            set_epoch=self.dist is not None,
        )
        # The loss of a training batch: through DistributedDataParallel when data-parallel
        # (its backward averages the gradients over the ranks), else loss_fn(model, batch).
        self.forward: Callable[[Batch], Tensor] | None = (
            None if self.dist is None else self.dist.wrap(model, loss_fn)
        )
        self.step = 0
        self.history: list[dict[str, float | int | None]] = []
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.bad_validations = 0
        self.stopped = "completed"
        self.seconds_before = 0.0
        self.checkpoint_path: Path | None = None
        self.last_good_checkpoint: Path | None = None
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ RNG and autocast
    def _rng_devices(self) -> list[int]:
        return [int(self.device.index)] if self.device.type == "cuda" else []

    def _seed_all(self, seed: int) -> None:
        seed = rank_seed(seed, self.rank)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.o["amp"]:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def _rng_state(self) -> dict[str, Any]:
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "torch_cpu": torch.get_rng_state(),
            "cuda": cuda_rng,
            "data": self.stream.state_dict(),
        }

    def _state(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": [dict(row) for row in self.history],
            "best": {
                "step": self.best_step,
                "score": self.best_score,
                "state": self.best_state,
                "bad_validations": self.bad_validations,
            },
            "rng": self._rng_state() if ranks is None else ranks[0],
            "stopped": self.stopped,
            "seconds": self._seconds(),
            "config": {
                "steps": self.o["steps"],
                "seed": self.o["seed"],
                "monitor": self.o["monitor"],
            },
        }
        if ranks is not None:  # data-parallel: every rank's RNG and data position
            state["distributed"] = {"world_size": len(ranks), "rng": ranks}
        return state

    def save(self) -> None:
        path = self.o["checkpoint_file"]
        if path is None:
            return
        bad = _non_finite_entry(self.model.state_dict(), self.o.get("initial_state"))
        if self.dist is None:
            if bad is not None:  # never overwrite a good checkpoint with a diverged model
                self.fail(self.step, f"model state {bad[0]!r}", bad[1])
            self.checkpoint_path = save_checkpoint(self._state(), path)
            self.last_good_checkpoint = self.checkpoint_path
            return
        # Data-parallel: every rank decides together, rank 0 alone writes, all wait for it.
        if self.dist.any(bad is not None):
            name, value = bad if bad is not None else ("on another rank", math.nan)
            self.fail(self.step, f"model state {name!r}", value)
        ranks = self.dist.all_gather(self._rng_state())
        self.dist.barrier()
        if self.rank == 0:
            save_checkpoint(self._state(ranks), path)
        self.dist.barrier()
        self.checkpoint_path = self.last_good_checkpoint = Path(path)

    def resume(self) -> None:
        path: Path = self.o["checkpoint_file"]
        exists = path.is_file()
        if self.dist is not None:
            found = int(self.dist.all_sum([float(exists)])[0])
            if found not in (0, self.dist.world_size):
                raise ValueError(
                    f"resume=True but {str(path)!r} exists on {found} of "
                    f"{self.dist.world_size} processes; expected a checkpoint_dir on a file "
                    "system shared by every node"
                )
        if not exists:
            return  # nothing to resume from: start afresh
        ckpt = load_checkpoint(path, map_location="cpu")
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint {str(path)!r} has format {ckpt.get('format')!r}; expected "
                f"{CHECKPOINT_FORMAT} (written by uqdyn.train.fit)"
            )
        saved_monitor = ckpt["config"]["monitor"]
        if saved_monitor != self.o["monitor"]:
            raise ValueError(
                f"monitor={self.o['monitor']!r} but the checkpoint {str(path)!r} tracked "
                f"{saved_monitor!r}; expected the same monitor when resuming"
            )
        rng = self._rank_rng(ckpt, path)
        if int(ckpt["step"]) > self.o["steps"]:
            raise ValueError(
                f"steps={self.o['steps']} but the checkpoint {str(path)!r} is already at step "
                f"{int(ckpt['step'])}; expected steps >= the checkpoint's step"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            if ckpt["scheduler"] is None:
                raise ValueError(
                    f"scheduler={self.o['scheduler']!r} but the checkpoint {str(path)!r} was "
                    "written without a scheduler; expected the same scheduler when resuming"
                )
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.history = [dict(row) for row in ckpt["history"]]
        best = ckpt["best"]
        self.best_step, self.best_score = best["step"], best["score"]
        self.best_state, self.bad_validations = best["state"], int(best["bad_validations"])
        self.stopped = str(ckpt["stopped"])
        self.seconds_before = float(ckpt["seconds"])
        torch.set_rng_state(rng["torch_cpu"])
        if self.device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.stream.load_state_dict(rng["data"])
        self.checkpoint_path = self.last_good_checkpoint = path

    def _rank_rng(self, ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
        """This rank's RNG states and data position in ``ckpt``; the world sizes must match."""
        saved = ckpt.get("distributed")
        saved_size = 1 if saved is None else int(saved["world_size"])
        size = 1 if self.dist is None else self.dist.world_size
        if saved_size != size:
            raise ValueError(
                f"the checkpoint {str(path)!r} was written by a fit over {saved_size} "
                f"process(es) but this fit runs {size}; expected the same number of processes "
                "to resume exactly (load_checkpoint(path)['model'] holds the weights)"
            )
        return ckpt["rng"] if saved is None else saved["rng"][self.rank]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ failure
    def fail(self, step: int, quantity: str, value: float) -> None:
        """Restore the last good weights and raise :class:`TrainingError`."""
        self.optimizer.zero_grad(set_to_none=True)
        held = f"after step {self.step}"
        if _non_finite_entry(self.model.state_dict(), self.o.get("initial_state")) is not None:
            if self.last_good_checkpoint is not None and self.last_good_checkpoint.is_file():
                ckpt = load_checkpoint(self.last_good_checkpoint, map_location="cpu")
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
                held = f"of the checkpoint at step {int(ckpt['step'])}"
            else:
                self.model.load_state_dict(self.o["initial_state"])
                held = "that this fit call started from"
        where = str(self.last_good_checkpoint) if self.last_good_checkpoint else "none written"
        raise TrainingError(
            f"non-finite {quantity} {value!r} at step {step}; training stopped. The model holds "
            f"the weights {held}; last good checkpoint: {where}. Try a lower lr or grad_clip.",
            step=step,
            quantity=quantity,
            value=value,
            checkpoint_path=self.last_good_checkpoint,
            history=self.history,
        )

    # ------------------------------------------------------------------ validation
    def validate(self, step: int, *, scheduled: bool) -> dict[str, float | None]:
        o = self.o
        with torch.random.fork_rng(devices=self._rng_devices()):
            self._seed_all(o["seed"] + 1)
            world = 1 if self.dist is None else self.dist.world_size
            batches = validation_batches(
                self.val_data, o["val_batches"], o["seed"] + 1, self.rank, world
            )
            metrics, nll_defined = evaluate(
                self.model,
                self.loss_fn,
                batches,
                o["predict_fn"],
                self.device,
                self.autocast,
                None if self.dist is None else self.dist.all_sum,
            )
        monitor = o["monitor"]
        if monitor == "val_nll" and not nll_defined:
            raise ValueError(
                "monitor='val_nll' but the Predictive returned by predict_fn has no density "
                "(log_prob is undefined); expected monitor='val_crps' or 'val_loss'"
            )
        for name in ("val_loss", "val_crps", monitor):
            value = metrics[name]
            if value is not None and not math.isfinite(value):
                self.fail(step, name, value)
        score = float(metrics[monitor])  # type: ignore[arg-type]
        if self.best_score is None or score < self.best_score - o["min_delta"]:
            self.best_step, self.best_score = step, score
            self.best_state = cpu_copy(self.model.state_dict())
            self.bad_validations = 0
        elif scheduled:
            self.bad_validations += 1
        if scheduled and isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(score)
        return metrics

    # ------------------------------------------------------------------ the loop
    def _seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.started)

    def _row(
        self,
        step: int,
        losses: list[float],
        norms: list[float],
        lr: float,
        metrics: dict[str, float | None] | None,
    ) -> dict[str, float | int | None]:
        metrics = metrics or {"val_loss": None, "val_crps": None, "val_nll": None}
        return {
            "step": step,
            "loss": math.fsum(losses) / len(losses),
            "grad_norm": math.fsum(norms) / len(norms),
            "lr": lr,
            "seconds": self._seconds(),
            **metrics,
        }

    def train_step(self, step: int) -> tuple[float, float]:
        batch = move_to_device(self.stream.next(), self.device)
        if isinstance(self.optimizer, torch.optim.LBFGS):
            return self._lbfgs_step(step, batch)
        with self.autocast():
            loss = self._checked_loss(step, batch)
        # Data-parallel: the mean over the ranks, so that every rank sees the same value.
        loss_value = float(loss.detach()) if self.dist is None else self.dist.mean(loss)
        if not math.isfinite(loss_value):
            self.fail(step, "loss", loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm_value = float(_grad_norm(self.params, self.o["grad_clip"]))
        if not math.isfinite(norm_value):
            self.fail(step, "grad_norm", norm_value)
        self.optimizer.step()
        self._scheduler_step()
        return loss_value, norm_value

    def _checked_loss(self, step: int, batch: Any) -> Tensor:
        raw = self.loss_fn(self.model, batch) if self.forward is None else self.forward(batch)
        loss = check_scalar_loss(raw, f"at step {step}")
        if not loss.requires_grad:
            raise ValueError(
                f"loss_fn returned a Tensor that does not require grad at step {step}; expected "
                "a loss computed from the model's parameters"
            )
        return loss

    def _scheduler_step(self) -> None:
        if self.scheduler is not None and not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()

    def _lbfgs_step(self, step: int, batch: Any) -> tuple[float, float]:
        """One L-BFGS iteration (its line search evaluates the loss several times).

        The reported loss and gradient norm are those at the start of the step; a
        non-finite loss anywhere in the line search restores the weights of the previous
        step before :meth:`fail` raises. Data-parallel, the closure returns the mean loss
        over the ranks (and DDP averages the gradients), so every rank runs the same line
        search.
        """
        before = [p.detach().clone() for p in self.params]
        first: list[tuple[float, float]] = []
        failure: list[tuple[str, float]] = []

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = self._checked_loss(step, batch)
            value = float(loss.detach()) if self.dist is None else self.dist.mean(loss)
            if not math.isfinite(value):
                failure.append(("loss", value))
                raise FloatingPointError
            loss.backward()
            if not first:
                first.append((value, float(_grad_norm(self.params, None))))
            if self.dist is not None:
                return torch.tensor(value, dtype=loss.dtype, device=loss.device)
            return loss

        try:
            self.optimizer.step(closure)  # type: ignore[arg-type]  # LBFGS takes a Tensor closure
        except FloatingPointError:
            _copy_into(self.params, before)
            self.fail(step, *failure[0])
        loss_value, norm_value = first[0]
        if not math.isfinite(norm_value):
            _copy_into(self.params, before)
            self.fail(step, "grad_norm", norm_value)
        self._scheduler_step()
        return loss_value, norm_value

    def run(self) -> FitResult:
        o = self.o
        steps, val_every, has_val = o["steps"], o["val_every"], o["val_data"] is not None
        bar = Progress(
            steps, o["desc"], enabled=o["progress"] and self.rank == 0, initial=self.step
        )
        losses: list[float] = []
        norms: list[float] = []
        shown: dict[str, str] = {}  # latest loss and validation metrics on the progress bar
        try:
            if self.stopped == "completed" and self.step < steps:
                self.model.train()
                for step in range(self.step + 1, steps + 1):
                    lr = float(self.optimizer.param_groups[0]["lr"])
                    loss_value, norm_value = self.train_step(step)
                    self.step = step
                    losses.append(loss_value)
                    norms.append(norm_value)
                    validated = has_val and step % val_every == 0
                    metrics = self.validate(step, scheduled=True) if validated else None
                    if validated or step % o["log_every"] == 0 or step == steps:
                        row = self._row(step, losses, norms, lr, metrics)
                        self.history.append(row)
                        losses, norms = [], []
                        shown.update(
                            (k, f"{v:.4g}")
                            for k, v in row.items()
                            if k in ("loss", "val_loss", "val_crps", "val_nll") and v is not None
                        )
                        bar.set_postfix(shown)
                    bar.update(1)
                    patience = o["early_stopping"]
                    if patience is not None and self.bad_validations >= patience:
                        self.stopped = "early_stopping"
                    every = o["checkpoint_every"]
                    if (
                        self.stopped != "completed"
                        or step == steps
                        or (every is not None and step % every == 0)
                    ):
                        self.save()
                    if self.stopped != "completed":
                        break
                if has_val and self.stopped == "completed" and self.step % val_every != 0:
                    # Off-schedule final validation, after the last checkpoint so that a
                    # resumed run continues exactly like an uninterrupted one.
                    # The last step always has a history row.
                    self.history[-1].update(self.validate(self.step, scheduled=False))
        finally:
            bar.close()
            self.forward = None  # drop the DDP wrapper (and its gradient hooks)
        if o["restore_best"] and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return FitResult(
            history=self.history,
            best_step=self.best_step,
            best_score=self.best_score,
            best_state=self.best_state,
            steps_done=self.step,
            stopped=self.stopped,
            monitor=o["monitor"],
            checkpoint_path=self.checkpoint_path,
        )
