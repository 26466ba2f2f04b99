"""What :func:`uqdyn.train.fit` returns, and the error it raises when training diverges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

__all__ = ["FitResult", "TrainingError"]

#: Keys of every row of :attr:`FitResult.history`.
HISTORY_KEYS = (
    "step",
    "loss",
    "grad_norm",
    "lr",
    "seconds",
    "val_loss",
    "val_crps",
    "val_nll",
)


@dataclass
class FitResult:
    """The outcome of :func:`uqdyn.train.fit`.

    Attributes
    ----------
    history:
        One dict per logged step, all with the keys ``step`` (int), ``loss`` (mean training
        loss since the previous row), ``grad_norm`` (mean global gradient norm before clipping,
        over the same steps), ``lr`` (learning rate used at ``step``), ``seconds`` (wall-clock
        seconds of training so far, summed over resumed runs), ``val_loss``, ``val_crps`` and
        ``val_nll``. Validation entries are ``None`` on rows without a validation; ``val_crps``
        and ``val_nll`` are ``None`` without a ``predict_fn``, and ``val_nll`` is NaN when the
        Predictive has no density (e.g. an ``Ensemble``).
    best_step:
        Step of the best validation by ``monitor`` (``None`` without validation data).
    best_score:
        Value of ``monitor`` at ``best_step`` (``None`` without validation data).
    best_state:
        ``model.state_dict()`` at ``best_step``, copied to the CPU (``None`` without
        validation data). Load it with ``model.load_state_dict(result.best_state)``.
    steps_done:
        Optimisation steps taken in total (including those of resumed runs).
    stopped:
        ``"completed"`` (all ``steps`` done) or ``"early_stopping"``.
    monitor:
        The monitored metric: ``"val_loss"``, ``"val_crps"`` or ``"val_nll"``.
    checkpoint_path:
        Path of the last checkpoint written or loaded, or ``None``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.train import fit
    >>> model = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 32).unsqueeze(-1)
    >>> result = fit(model, [(x, 2 * x)], loss_fn=lambda m, b: (m(b[0]) - b[1]).square().mean(),
    ...              steps=5, progress=False)
    >>> result.steps_done, result.stopped, len(result.history)
    (5, 'completed', 5)
    """

    history: list[dict[str, float | int | None]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    best_state: dict[str, Tensor] | None = None
    steps_done: int = 0
    stopped: str = "completed"
    monitor: str = "val_loss"
    checkpoint_path: Path | None = None

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """Steps and values of one history column, skipping rows where it was not evaluated.

        Parameters
        ----------
        name:
            One of the history keys, e.g. ``"loss"`` or ``"val_crps"``.

        Returns
        -------
        (steps, values): two lists of equal length.
        """
        if name not in HISTORY_KEYS:
            raise ValueError(f"name={name!r}; expected one of {list(HISTORY_KEYS)}")
        rows = [row for row in self.history if row.get(name) is not None]
        return [int(row["step"]) for row in rows], [float(row[name]) for row in rows]  # type: ignore[arg-type]


class TrainingError(RuntimeError):
    """Training stopped because a loss, gradient norm or monitored metric was not finite.

    When it is raised the model holds the last good weights: those after the previous step
    when they are finite, otherwise those of the last checkpoint written or loaded in the run
    (or the weights ``fit`` started from). The checkpoint on disk is never overwritten by the
    failing step and stays loadable with ``torch.load(path, weights_only=True)``.

    Attributes
    ----------
    step:
        The step (1-based) at which the non-finite value appeared.
    quantity:
        ``"loss"``, ``"grad_norm"`` or the name of a validation metric.
    value:
        The offending value (NaN or +-inf).
    checkpoint_path:
        The last good checkpoint, or ``None`` when none was written or loaded.
    history:
        The history rows logged before the failure.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        quantity: str,
        value: float,
        checkpoint_path: Path | None,
        history: list[dict[str, float | int | None]],
    ) -> None:
        super().__init__(message)
        self.step = step
        self.quantity = quantity
        self.value = value
        self.checkpoint_path = checkpoint_path
        self.history = history
