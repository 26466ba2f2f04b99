"""The model contract of :func:`uqdyn.train.fit`.

A trainable model is a ``torch.nn.Module`` that knows its loss on a batch; a model that can
also be validated with proper scores says how it forecasts a batch. ``fit(model, data)``
then needs nothing else: the model's ``state_dict`` (parameters and buffers) is what a
checkpoint stores, so anything a model must get back on resume (normalisation statistics,
conditioning data) lives in buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["Trainable", "Validatable", "loss_of", "predict_batch_of"]


@runtime_checkable
class Trainable(Protocol):
    """A model :func:`uqdyn.train.fit` trains without a ``loss_fn``.

    ``loss(batch)`` returns the scalar ``()`` tensor to minimise on one batch (what the
    data callable or iterable of ``fit`` yields, already on the device): a negative log
    likelihood or ELBO for the NP family and the GPs, a proper score, or the sum of both
    players' losses for a GAN (each player's term built so that one backward pass gives
    each its own gradient).
    """

    def loss(self, batch: Any) -> Tensor:  # pragma: no cover - protocol
        ...


@runtime_checkable
class Validatable(Protocol):
    """A model whose validation :func:`uqdyn.train.fit` scores with CRPS and log score.

    ``predict_batch(batch)`` returns ``(predictive, y_true, mask)``: a
    :class:`~uqdyn.predictive.Predictive` with ``batch_shape`` equal to ``y_true``'s shape
    (e.g. ``(batch, points, y_dim)``) and a boolean ``mask`` of its leading axes (e.g.
    ``(batch, points)``) or ``None`` to keep every point.
    """

    def predict_batch(self, batch: Any) -> tuple[Any, Tensor, Tensor | None]:  # pragma: no cover
        ...


def loss_of(model: nn.Module) -> Callable[[nn.Module, Any], Tensor]:
    """``loss_fn`` for a :class:`Trainable` model: ``lambda m, batch: m.loss(batch)``."""
    if not callable(getattr(model, "loss", None)):
        raise TypeError(
            f"model is a {type(model).__name__} without a loss(batch) method; expected a "
            "model following uqdyn.train.Trainable or an explicit loss_fn=(model, batch) -> Tensor"
        )
    return _call_loss


def predict_batch_of(model: nn.Module) -> Callable[[nn.Module, Any], Any] | None:
    """``predict_fn`` for a :class:`Validatable` model, or ``None`` when it has none."""
    return _call_predict_batch if callable(getattr(model, "predict_batch", None)) else None


def _call_loss(model: nn.Module, batch: Any) -> Tensor:
    return model.loss(batch)  # type: ignore[operator]


def _call_predict_batch(model: nn.Module, batch: Any) -> Any:
    return model.predict_batch(batch)  # type: ignore[operator]
