"""Validation, linear-algebra settings and predictive conversion shared by the GP models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gpytorch
import torch
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn.predictive import MultivariateNormal, Normal

_DEFAULT_JITTER = {torch.float32: 1e-6, torch.float64: 1e-8}


def _check_tensor(value: Any, name: str) -> Tensor:
    """``value`` as a floating tensor (any other kind is a TypeError)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} is a {type(value).__name__}; expected a torch.Tensor")
    if not value.is_floating_point():
        raise TypeError(f"{name} has dtype {value.dtype}; expected a floating dtype")
    return value


def _check_finite(value: Tensor, name: str) -> None:
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite entries (shape "
            f"{tuple(value.shape)}); expected finite values (drop or mask missing points)"
        )


def _check_points(x: Any, name: str, x_dim: int | None = None) -> Tensor:
    """Inputs ``x (N, x_dim)``; a 1-D ``(N,)`` tensor is read as ``x_dim = 1``."""
    x = _check_tensor(x, name)
    if x.dim() == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (points, x_dim)")
    if x_dim is not None and x.shape[-1] != x_dim:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (points, {x_dim})")
    _check_finite(x, name)
    return x


def _check_training_data(
    x: Any, y: Any, x_dim: int, y_dim: int, *, x_name: str = "x", y_name: str = "y"
) -> tuple[Tensor, Tensor]:
    """Validate ``x (N, x_dim)`` and ``y (N, y_dim)`` (``(N,)`` accepted when ``y_dim == 1``)."""
    x = _check_points(x, x_name, x_dim)
    y = _check_tensor(y, y_name)
    if y.dim() == 1 and y_dim == 1:
        y = y.unsqueeze(-1)
    if y.dim() != 2 or y.shape != (x.shape[0], y_dim):
        raise ValueError(
            f"{y_name} has shape {tuple(y.shape)}; expected ({x.shape[0]}, {y_dim}) to match "
            f"{x_name} of shape {tuple(x.shape)}"
        )
    if y.device != x.device or y.dtype != x.dtype:
        raise TypeError(
            f"{y_name} is {y.dtype} on {y.device} but {x_name} is {x.dtype} on {x.device}; "
            "expected the same dtype and device"
        )
    _check_finite(y, y_name)
    return x, y


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    return as_int(value, name, minimum=minimum)


def _check_noise(noise: Any, min_noise: float) -> float:
    """An initial noise variance: a number > ``min_noise``."""
    value = as_float(noise, "noise", finite=False)
    if not value > min_noise:
        raise ValueError(f"noise={noise!r}; expected a number > min_noise={min_noise}")
    return value


@contextlib.contextmanager
def _linalg(
    dtype: torch.dtype, jitter: float | None, max_tries: int, max_cholesky_size: int
) -> Iterator[None]:
    """gpytorch settings for one computation, turning a failed Cholesky into a ValueError.

    gpytorch first tries a plain Cholesky; if it fails it adds ``jitter * 10**i`` to the
    diagonal for ``i < max_tries``, warning (``NumericalWarning``) each time.
    """
    value = _DEFAULT_JITTER.get(dtype, 1e-6) if jitter is None else float(jitter)
    try:
        with (
            gpytorch.settings.cholesky_jitter(float_value=value, double_value=value),
            gpytorch.settings.cholesky_max_tries(max_tries),
            gpytorch.settings.max_cholesky_size(max_cholesky_size),
        ):
            yield
    except (NotPSDError, NanError) as err:
        raise ValueError(
            "the GP covariance of the training inputs is not positive definite even after "
            f"adding jitter up to {value * 10 ** max(max_tries - 1, 0):.1e} to its diagonal "
            f"({err}); usual causes are duplicated or nearly duplicated inputs with a very "
            "small noise: raise min_noise or jitter, or remove the duplicates"
        ) from err


def _check_predictive(mean: Tensor, variance: Tensor, what: str) -> None:
    if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(variance).all()):
        raise ValueError(
            f"the {what} has non-finite mean or variance; the fit diverged or the "
            "covariance is numerically singular (raise min_noise or jitter)"
        )


def _marginal_predictive(dist: Any, n_outputs: int) -> Normal:
    """Marginal Normal ``(M, y_dim)`` from a gpytorch (multitask) MVN over ``M`` points."""
    mean = dist.mean
    variance = dist.variance
    if mean.dim() == 1:
        mean, variance = mean.unsqueeze(-1), variance.unsqueeze(-1)
    if mean.shape[-1] != n_outputs:
        raise RuntimeError(f"internal shape mismatch: {tuple(mean.shape)} vs {n_outputs} outputs")
    _check_predictive(mean, variance, "predictive")
    return Normal(mean, variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt())


def _flat_joint(dist: Any) -> tuple[Tensor, Tensor]:
    """Mean ``(M * y_dim,)`` and dense covariance of a gpytorch (multitask) MVN over ``M``
    points, flattened point-major (output fastest)."""
    mean = dist.mean
    cov = dist.covariance_matrix
    if mean.dim() == 1:
        return mean, cov
    m, t = mean.shape[-2:]
    if not getattr(dist, "_interleaved", True):
        idx = torch.arange(m * t, device=mean.device).reshape(t, m).T.reshape(-1)
        cov = cov[..., idx, :][..., :, idx]
    return mean.reshape(*mean.shape[:-2], m * t), cov


def _safe_cholesky(cov: Tensor, jitter: float | None, max_tries: int, what: str) -> Tensor:
    """Jittered Cholesky factor of a symmetrised ``cov``; a ValueError naming ``what`` when
    even the largest jitter fails."""
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    value = _DEFAULT_JITTER.get(cov.dtype, 1e-6) if jitter is None else float(jitter)
    try:
        return psd_safe_cholesky(cov, jitter=value, max_tries=max_tries)
    except (NotPSDError, NanError) as err:
        raise ValueError(
            f"the {what} is not positive definite even after adding "
            f"jitter up to {value * 10 ** max(max_tries - 1, 0):.1e} ({err}); usual causes "
            "are duplicated target inputs of a noise-free (latent) prediction: predict noisy "
            "values, raise jitter, or use the marginal predictive"
        ) from err


def _joint_predictive(
    dist: Any, n_outputs: int, jitter: float | None, max_tries: int
) -> MultivariateNormal:
    """Joint MVN over the ``M * y_dim`` values flattened point-major (output fastest).

    The dense covariance is factorised with gpytorch's jittered Cholesky, so a singular
    covariance (e.g. duplicated targets of a noise-free prediction) gets jitter with a warning,
    and a ValueError when even the largest jitter fails.
    """
    flat, cov = _flat_joint(dist)
    _check_predictive(flat, torch.diagonal(cov, dim1=-2, dim2=-1), "joint predictive")
    tril = _safe_cholesky(cov, jitter, max_tries, "joint predictive covariance")
    return MultivariateNormal(flat, scale_tril=tril)


def _leave_one_out(dist: Any, y: Tensor, jitter: float | None, max_tries: int) -> Normal:
    r"""Leave-one-out predictive of each point of ``y (n, t)`` given the other points.

    ``dist`` is the gpytorch prior predictive of the noisy values at the ``n`` inputs (mean
    :math:`m`, covariance :math:`C = K + \sigma^2 I` over the ``n t`` values). With the
    precision :math:`P = C^{-1}`, :math:`\alpha = P (y - m)` and :math:`P_{ii}` the ``t x t``
    block of point ``i``, the Gaussian conditional of :math:`y_i` given all other points is
    :math:`\mathcal N(y_i - P_{ii}^{-1} \alpha_i,\ P_{ii}^{-1})` (Rasmussen & Williams 2006,
    sec. 5.4.2, for ``t = 1``). Returns the marginal ``Normal (n, t)``.
    """
    n, t = y.shape
    flat, cov = _flat_joint(dist)
    tril = _safe_cholesky(cov, jitter, max_tries, "covariance of the batch's points")
    precision = torch.cholesky_inverse(tril)
    alpha = precision @ (y.reshape(-1) - flat)
    blocks = precision.reshape(n, t, n, t).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    block_cov = torch.linalg.inv(blocks)
    mean = y - (block_cov @ alpha.reshape(n, t, 1)).squeeze(-1)
    variance = torch.diagonal(block_cov, dim1=-2, dim2=-1)
    _check_predictive(mean, variance, "leave-one-out predictive")
    return Normal(mean, variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt())


def _point_batch(batch: Any, x_dim: int, y_dim: int) -> tuple[Tensor, Tensor]:
    """The observed rows ``x (n, x_dim)``, ``y (n, y_dim)`` of a point batch.

    A point batch is ``(x, y)`` or ``(x, y, mask)`` with ``x (N, x_dim)``, ``y (N, y_dim)``
    (``(N,)`` accepted for one input or output) and a boolean ``mask (N,)``: ``False`` rows
    (padding, points not observed) may hold anything and are dropped. Observed rows must be
    finite (ValueError otherwise).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise TypeError(
            f"batch is a {type(batch).__name__}{size}; expected a tuple (x, y) or (x, y, mask)"
        )
    x = _check_tensor(batch[0], "x")
    y = _check_tensor(batch[1], "y")
    mask = batch[2] if len(batch) == 3 else None
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"mask is {kind}; expected a boolean tensor of shape (N,)")
        if mask.dim() != 1 or x.dim() < 1 or y.dim() < 1:
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (N,)")
        if x.shape[0] != mask.shape[0] or y.shape[0] != mask.shape[0]:
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but x has shape {tuple(x.shape)} and y "
                f"{tuple(y.shape)}; expected ({mask.shape[0]},) rows in each"
            )
        keep = mask.to(x.device)
        x, y = x[keep], y[keep]
    return _check_training_data(x, y, x_dim, y_dim)


def _check_like(module: torch.nn.Module, value: Tensor, name: str) -> None:
    """TypeError unless ``value`` has the dtype and device of ``module``'s parameters."""
    ref = next(iter(module.parameters()), None)
    if ref is not None and (ref.dtype != value.dtype or ref.device != value.device):
        raise TypeError(
            f"{name} is {value.dtype} on {value.device} but the model is {ref.dtype} on "
            f"{ref.device}; expected the same (move the model with .to(...))"
        )


def _to_like(module: torch.nn.Module, like: Tensor) -> None:
    """Move a module to the device and dtype of ``like`` (in place)."""
    module.to(device=like.device, dtype=like.dtype)
