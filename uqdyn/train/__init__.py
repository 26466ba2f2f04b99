"""The one fit loop of uqdyn, shared by every model family.

A model follows one contract (:class:`Trainable`: ``loss(batch)``; :class:`Validatable`:
``predict_batch(batch) -> (Predictive, y_true, mask)``) and ``fit(model, data)`` trains it.

:func:`fit` minimises a loss with a torch optimizer and optional schedule, clips gradients,
validates with the loss, CRPS and negative log likelihood of the model's Predictive, stops
early on a monitored metric, writes atomic checkpoints that load with
``torch.load(..., weights_only=True)``, resumes exactly, and stops with a
:class:`TrainingError` on a non-finite loss.
"""

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .contract import Trainable, Validatable
from .loop import fit
from .result import FitResult, TrainingError

__all__ = [
    "fit",
    "Trainable",
    "Validatable",
    "FitResult",
    "TrainingError",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_NAME",
]
