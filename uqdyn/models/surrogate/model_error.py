"""The model error of a forecast as a learned diagonal Normal, and its fitting recipe."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.predictive import Normal
from uqdyn.train import FitResult, fit

__all__ = ["DiagonalNormalError", "ModelErrorFit", "fit_model_error"]


def _positive_int(value: object, name: str) -> int:
    return as_int(value, name, minimum=1)


def _positive_float(value: object, name: str) -> float:
    return as_float(value, name, positive=True)


class DiagonalNormalError(nn.Module):
    """Model error of a forecast over ``dt`` as a Normal with a bias and a std per variable.

    ``forward(state, forecast, dt)`` returns ``Normal(loc = bias * dt / dt_ref,
    scale = sigma * sqrt(dt / dt_ref))`` with ``batch_shape`` of ``forecast``: learned at the
    step ``dt_ref`` and scaled to other steps like a random walk (variance per unit time,
    DAPPER's convention). Use it as ``uqdyn.da.ForecastOperator(..., model_error=error)``.

    Training contract (:class:`uqdyn.train.Trainable`, :class:`uqdyn.train.Validatable`):
    a batch is a tensor of one-step residuals ``(samples, dim)`` at ``dt_ref``;
    :meth:`loss` is their mean negative log density and :meth:`predict_batch` the Normal at
    ``dt_ref`` for every residual.

    Parameters
    ----------
    dim : int
        Number of variables.
    dt_ref : float
        The step of the training residuals.
    sigma : float
        Initial standard deviation; also the unit in which the bias is optimised (so that
        one learning rate suits residuals of any size).
    """

    unit: Tensor

    def __init__(self, dim: int, dt_ref: float, *, sigma: float = 0.1) -> None:
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.dt_ref = _positive_float(dt_ref, "dt_ref")
        sigma = _positive_float(sigma, "sigma")
        self.register_buffer("unit", torch.tensor(sigma))
        self.raw_bias = nn.Parameter(torch.zeros(self.dim))
        self.log_sigma = nn.Parameter(torch.full((self.dim,), math.log(sigma)))

    @property
    def bias(self) -> Tensor:
        """Mean error per variable at ``dt_ref``, shape (dim,)."""
        return self.raw_bias * self.unit

    @property
    def sigma(self) -> Tensor:
        """Standard deviation per variable at ``dt_ref``, shape (dim,)."""
        return self.log_sigma.exp()

    def forward(self, state: Tensor, forecast: Tensor, dt: float) -> Normal:
        """The model-error distribution of ``forecast (N, dim)`` over ``dt``; batch ``(N, dim)``."""
        if forecast.ndim != 2 or forecast.shape[-1] != self.dim:
            raise ValueError(
                f"forecast has shape {tuple(forecast.shape)}; expected (N, {self.dim})"
            )
        ratio = _positive_float(float(dt), "dt") / self.dt_ref
        loc = (self.bias * ratio).to(forecast).expand_as(forecast)
        scale = (self.sigma * math.sqrt(ratio)).to(forecast).expand_as(forecast)
        return Normal(loc, scale, validate=False)

    def _check_residuals(self, residuals: object, name: str = "residuals") -> Tensor:
        if not isinstance(residuals, Tensor):
            raise TypeError(
                f"{name} is a {type(residuals).__name__}; expected a tensor (samples, {self.dim})"
            )
        if residuals.ndim != 2 or residuals.shape[1] != self.dim or residuals.shape[0] < 1:
            raise ValueError(
                f"{name} has shape {tuple(residuals.shape)}; expected (samples, {self.dim})"
            )
        if not bool(torch.isfinite(residuals).all()):
            raise ValueError(f"{name} holds non-finite values; expected finite residuals")
        return residuals

    def predict_batch(self, batch: Tensor) -> tuple[Normal, Tensor, None]:
        """The error Normal at ``dt_ref`` for residuals ``batch (samples, dim)``.

        Returns
        -------
        (Normal with batch_shape (samples, dim), batch, None)
        """
        residuals = self._check_residuals(batch, "batch")
        return self(residuals, residuals, self.dt_ref), residuals, None

    def loss(self, batch: Tensor) -> Tensor:
        """Mean negative log density of residuals ``batch (samples, dim)`` at ``dt_ref``; shape ()."""
        predictive, residuals, _ = self.predict_batch(batch)
        return -predictive.log_prob(residuals).mean()


@dataclass
class ModelErrorFit(FitResult):
    """:class:`uqdyn.train.FitResult` of :func:`fit_model_error`, with a convergence verdict.

    Attributes
    ----------
    converged : bool
        ``relative_change <= tolerance``.
    relative_change : float
        ``|L_end - L_start| / max(|L_end|, 1)`` with ``L_end`` the training loss (mean
        negative log density per residual) at the last step and ``L_start`` the loss
        ``window`` steps earlier; NaN when fewer than ``window + 1`` steps ran.
    window, tolerance : int, float
        The settings of the check.
    """

    converged: bool = False
    relative_change: float = math.nan
    window: int = 0
    tolerance: float = 0.0


def fit_model_error(
    error: DiagonalNormalError,
    residuals: Tensor,
    *,
    steps: int = 100,
    lr: float = 1.0,
    window: int = 10,
    tolerance: float = 1e-6,
    seed: int = 0,
) -> ModelErrorFit:
    """Fit ``error`` to one-step residuals ``(samples, dim)`` by Gaussian maximum likelihood.

    Runs ``uqdyn.train.fit(error, [residuals], optimizer="lbfgs")``: full-batch L-BFGS
    with a strong-Wolfe line search on :meth:`DiagonalNormalError.loss`, the mean negative
    log density at ``dt_ref``. The optimum is the per-variable sample mean and (biased)
    standard deviation of the residuals.

    **Convergence.** The fit counts as converged when the loss changed by at most
    ``tolerance`` over the last ``window`` steps, relative to ``max(|loss|, 1)`` (the
    denominator keeps the test meaningful for a log density near zero):
    ``|L[-1] - L[-1 - window]| / max(|L[-1]|, 1) <= tolerance``. The verdict is on the
    result (``converged``, ``relative_change``); when it fails a ``RuntimeWarning`` says
    so and suggests more ``steps``.

    Parameters
    ----------
    error : DiagonalNormalError
        Fitted in place (on the CPU).
    residuals : Tensor, shape (samples >= 2, dim)
        E.g. :func:`~uqdyn.models.surrogate.one_step_residuals` on held-out pairs.
    steps : int
        L-BFGS iterations (each with its line search).
    lr : float
        L-BFGS step length (1 is the usual choice with a line search).
    window, tolerance : int, float
        The convergence check above.
    seed : int
        Seed of :func:`uqdyn.train.fit`.

    Returns
    -------
    ModelErrorFit
    """
    if not isinstance(error, DiagonalNormalError):
        raise TypeError(f"error is a {type(error).__name__}; expected a DiagonalNormalError")
    residuals = error._check_residuals(residuals)
    if residuals.shape[0] < 2:
        raise ValueError(
            f"residuals has shape {tuple(residuals.shape)}; expected (samples >= 2, {error.dim})"
        )
    window = _positive_int(window, "window")
    tolerance = _positive_float(tolerance, "tolerance")
    data = residuals.detach().to(error.raw_bias.dtype)
    result = fit(
        error, [data], steps=steps, optimizer="lbfgs", lr=lr, seed=seed, device="cpu",
        progress=False,
    )  # fmt: skip
    _, losses = result.metric("loss")
    change = math.nan
    if len(losses) > window:
        end, start = losses[-1], losses[-1 - window]
        change = abs(end - start) / max(abs(end), 1.0)
    converged = bool(change <= tolerance)  # NaN compares False
    if not converged:
        warnings.warn(
            f"fit_model_error did not converge in steps={steps}: the loss changed by "
            f"{change:.3g} (relative) over the last {window} steps, expected <= "
            f"{tolerance:.3g}; pass more steps",
            RuntimeWarning,
            stacklevel=2,
        )
    values = {f.name: getattr(result, f.name) for f in fields(FitResult)}
    return ModelErrorFit(
        **values,
        converged=converged,
        relative_change=change,
        window=window,
        tolerance=tolerance,
    )
