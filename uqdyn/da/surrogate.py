"""A learned Lorenz-96 surrogate and its model-error Predictive, trained with uqdyn.train.

:class:`PeriodicConvTendency` is a local network on the periodic Lorenz-96 ring (a circular
convolution with a bilinear layer, in the spirit of Brajard et al. 2020) that predicts the
tendency ``dx/dt``; it is a :class:`~uqdyn.physics.Dynamics`, so
:class:`~uqdyn.da.ForecastOperator` integrates it like the true model.
:func:`fit_tendency_surrogate` trains it on one-step increments of simulated trajectories
(:func:`lorenz96_pairs`) by back-propagating through one classical RK4 step.
:class:`DiagonalNormalError` is the model-error Predictive of the stochastic forecast: a
Normal with a learned bias and standard deviation per variable, fitted by maximum likelihood
(:func:`fit_model_error`) on held-out one-step residuals.

References
----------
Brajard, Carrassi, Bocquet & Bertino, "Combining data assimilation and machine learning to
emulate a dynamical model from sparse and noisy observations: a case study with the Lorenz
96 model", J. Comput. Sci. 44 (2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn.da.forecast import rk4_classic
from uqdyn.physics import Lorenz96, simulate
from uqdyn.physics.dynamics import Dynamics
from uqdyn.predictive import Normal
from uqdyn.train import FitResult, fit

__all__ = [
    "PeriodicConvTendency",
    "DiagonalNormalError",
    "lorenz96_pairs",
    "fit_tendency_surrogate",
    "fit_model_error",
    "one_step_residuals",
]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int")
    return value


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}; expected a positive float")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}; expected a positive finite float")
    return float(value)


def _check_pairs(pairs: object, name: str = "pairs") -> tuple[Tensor, Tensor]:
    if (
        not isinstance(pairs, (tuple, list))
        or len(pairs) != 2
        or not all(isinstance(p, Tensor) for p in pairs)
    ):
        raise TypeError(f"{name} must be a pair of tensors (x0, x1), got {type(pairs).__name__}")
    x0, x1 = pairs
    if x0.ndim != 2 or x0.shape != x1.shape or x0.shape[0] < 1:
        raise ValueError(
            f"{name} has shapes {tuple(x0.shape)} and {tuple(x1.shape)}; expected two equal "
            "(samples, dim) tensors"
        )
    if not (bool(torch.isfinite(x0).all()) and bool(torch.isfinite(x1).all())):
        raise ValueError(f"{name} holds non-finite values; expected finite states")
    return x0, x1


def lorenz96_pairs(
    n_trajectories: int,
    n_steps: int,
    dt: float = 0.05,
    *,
    dim: int = 40,
    forcing: float = 8.0,
    spinup: float = 10.0,
    substeps: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One-step pairs ``(x(t), x(t + dt))`` from simulated Lorenz-96 trajectories (float64).

    Each trajectory starts from :meth:`Lorenz96.initial_state`, is spun up for ``spinup``
    time units onto the attractor (:func:`uqdyn.physics.simulate`, RK4 steps of 0.01), then
    advanced ``n_steps`` times by ``substeps`` classical RK4 steps over ``dt``
    (:func:`~uqdyn.da.rk4_classic`). The default ``substeps=1`` gives the discrete model of
    DAPPER's Lorenz-96 benchmarks (one classical RK4 step of ``dt``), i.e. the truth of the
    twin experiment the surrogate is meant to replace.

    Returns
    -------
    (x0, x1) : Tensor, Tensor, each shape (n_trajectories * n_steps, dim), float64
    """
    n_trajectories = _positive_int(n_trajectories, "n_trajectories")
    n_steps = _positive_int(n_steps, "n_steps")
    substeps = _positive_int(substeps, "substeps")
    dt = _positive_float(dt, "dt")
    if spinup < 0 or not math.isfinite(spinup):
        raise ValueError(f"spinup={spinup!r}; expected a finite time >= 0")
    system = Lorenz96(dim, forcing=forcing).double()
    state = system.initial_state(n_trajectories, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        if spinup > 0:
            n_spin = max(1, round(spinup / 0.01))
            times = torch.linspace(0.0, n_spin * 0.01, n_spin + 1, dtype=torch.float64)
            state = simulate(system, state, times)[:, -1]
        states = [state]
        for k in range(n_steps):
            states.append(rk4_classic(system, states[-1], k * dt, dt, substeps))
        trajectory = torch.stack(states, dim=1)
    if not bool(torch.isfinite(trajectory).all()):
        raise ValueError(
            f"the Lorenz-96 trajectories became non-finite with dt={dt} and substeps="
            f"{substeps}; expected a smaller dt or more substeps"
        )
    return trajectory[:, :-1].reshape(-1, dim), trajectory[:, 1:].reshape(-1, dim)


class PeriodicConvTendency(Dynamics):
    """A local network for the tendency ``dx/dt`` of a periodic 1-d chain (Lorenz-96).

    ``z = (x - loc) / scale``; a circular convolution of width ``kernel_size`` gives
    ``3 * width`` channels ``(a, b, c)``; the features ``[a, b * c]`` (a bilinear layer that
    can represent the advection term of Lorenz-96) feed a linear read-out plus a GELU
    hidden layer; the output is multiplied by ``tendency_scale``. The same weights act at
    every site, so the model is translation-equivariant and works for any ring length.

    State shape ``(dim,)``; the state batch is ``(batch, dim)``.

    Parameters
    ----------
    dim : int
        Number of variables.
    width : int
        Channels of the hidden layers.
    kernel_size : int
        Odd stencil width of the first convolution (5 covers Lorenz-96's ``i-2 .. i+1``).
    loc, scale, tendency_scale : float
        Normalisation of the state and of the output (statistics of the training data).
    """

    loc: Tensor
    scale: Tensor
    tendency_scale: Tensor

    def __init__(
        self,
        dim: int = 40,
        *,
        width: int = 32,
        kernel_size: int = 5,
        loc: float = 0.0,
        scale: float = 1.0,
        tendency_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.state_shape = (self.dim,)
        width = _positive_int(width, "width")
        if (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or kernel_size < 1
            or kernel_size % 2 == 0
        ):
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd positive int")
        self.kernel_size = kernel_size
        self.register_buffer("loc", torch.tensor(float(loc)))
        self.register_buffer("scale", torch.tensor(_positive_float(scale, "scale")))
        self.register_buffer(
            "tendency_scale", torch.tensor(_positive_float(tendency_scale, "tendency_scale"))
        )
        self.local = nn.Conv1d(1, 3 * width, kernel_size)
        self.linear = nn.Conv1d(2 * width, 1, 1)
        self.hidden = nn.Conv1d(2 * width, width, 1)
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendency of each variable.

        Parameters
        ----------
        t : Tensor, shape () (unused: the model is autonomous)
        state : Tensor, shape (batch, dim)

        Returns
        -------
        Tensor, shape (batch, dim)
        """
        z = ((state - self.loc) / self.scale).unsqueeze(1)
        pad = self.kernel_size // 2
        a, b, c = self.local(F.pad(z, (pad, pad), mode="circular")).chunk(3, dim=1)
        features = torch.cat([a, b * c], dim=1)
        y = self.linear(features) + self.out(F.gelu(self.hidden(features)))
        return self.tendency_scale * y.squeeze(1)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``loc + scale * e`` with standard normal ``e``; shape ``(batch, dim)``."""
        batch = self._check_batch(batch)
        noise = torch.randn(batch, self.dim, generator=generator, device=device, dtype=dtype)
        return self.loc.to(noise) + self.scale.to(noise) * noise

    @classmethod
    def from_data(
        cls, pairs: tuple[Tensor, Tensor], dt: float, **kwargs: int
    ) -> PeriodicConvTendency:
        """A network normalised with the statistics of ``pairs`` (states and increments/dt)."""
        x0, x1 = _check_pairs(pairs)
        dt = _positive_float(dt, "dt")
        return cls(
            x0.shape[1],
            loc=float(x0.mean()),
            scale=float(x0.std()),
            tendency_scale=float(((x1 - x0) / dt).std()),
            **kwargs,
        )


class DiagonalNormalError(nn.Module):
    """Model error of a forecast over ``dt`` as a Normal with a bias and a std per variable.

    ``forward(state, forecast, dt)`` returns ``Normal(loc = bias * dt / dt_ref,
    scale = sigma * sqrt(dt / dt_ref))`` with ``batch_shape`` of ``forecast``: learned at the
    step ``dt_ref`` and scaled to other steps like a random walk (variance per unit time,
    DAPPER's convention). Use it as ``ForecastOperator(..., model_error=error)``.

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


def one_step_residuals(surrogate: nn.Module, pairs: tuple[Tensor, Tensor], dt: float) -> Tensor:
    """``x1 - RK4(surrogate, x0, dt)`` (one classical RK4 step), shape (samples, dim)."""
    x0, x1 = _check_pairs(pairs)
    dt = _positive_float(dt, "dt")
    parameter = next(surrogate.parameters(), None)
    like = parameter if parameter is not None else x0
    with torch.no_grad():
        forecast = rk4_classic(surrogate, x0.to(like), 0.0, dt, 1)
    return x1.to(forecast) - forecast


def _sampler(pairs: tuple[Tensor, Tensor], batch_size: int, dtype: torch.dtype):
    x0, x1 = pairs
    x0, x1 = x0.to(dtype), x1.to(dtype)

    def draw(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, x0.shape[0], (batch_size,), generator=generator)
        return x0[index], x1[index]

    return draw


def fit_tendency_surrogate(
    surrogate: nn.Module,
    train_pairs: tuple[Tensor, Tensor],
    dt: float,
    *,
    val_pairs: tuple[Tensor, Tensor] | None = None,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Train a tendency model on one-step increments with :func:`uqdyn.train.fit`.

    The loss is ``mean((RK4(surrogate, x0, dt) - x1)^2) / dt^2``: the squared error of one
    classical RK4 step, in tendency units, back-propagated through the step. Adam with a
    cosine schedule and gradient clipping at 1; with ``val_pairs`` the best validated state
    is restored.

    Parameters
    ----------
    surrogate : nn.Module
        ``forward(t, state (B, dim)) -> (B, dim)``, float32 parameters.
    train_pairs, val_pairs : (Tensor, Tensor), each (samples, dim)
        From :func:`lorenz96_pairs`.
    dt : float
        Step between ``x0`` and ``x1``.

    Returns
    -------
    FitResult
    """
    train_pairs = _check_pairs(train_pairs, "train_pairs")
    dt = _positive_float(dt, "dt")
    batch_size = _positive_int(batch_size, "batch_size")
    dtype = next(surrogate.parameters()).dtype

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x0, x1 = batch
        return (rk4_classic(model, x0, 0.0, dt, 1) - x1).square().mean() / dt**2

    val_data = None
    if val_pairs is not None:
        val_pairs = _check_pairs(val_pairs, "val_pairs")
        val_data = [(val_pairs[0].to(dtype), val_pairs[1].to(dtype))]
    return fit(
        surrogate,
        _sampler(train_pairs, batch_size, dtype),
        loss_fn=loss_fn,
        steps=steps,
        lr=lr,
        scheduler="cosine",
        grad_clip=1.0,
        val_data=val_data,
        val_every=max(1, steps // 10),
        restore_best=val_data is not None,
        seed=seed,
        device=device,
        progress=progress,
    )


def fit_model_error(
    error: DiagonalNormalError,
    residuals: Tensor,
    *,
    steps: int = 500,
    lr: float = 0.02,
    seed: int = 0,
) -> FitResult:
    """Fit ``error`` to one-step residuals ``(samples, dim)`` by Gaussian maximum likelihood.

    Uses :func:`uqdyn.train.fit` on the full batch (the negative log density of the Normal
    at ``dt_ref``, Adam with a cosine schedule); the optimum is the per-variable sample mean
    and (biased) standard deviation of the residuals.
    """
    if not isinstance(error, DiagonalNormalError):
        raise TypeError(f"error is a {type(error).__name__}; expected a DiagonalNormalError")
    if (
        not isinstance(residuals, Tensor)
        or residuals.ndim != 2
        or residuals.shape[1] != error.dim
        or residuals.shape[0] < 2
    ):
        raise ValueError(
            f"residuals has shape {tuple(getattr(residuals, 'shape', ()))}; expected "
            f"(samples >= 2, {error.dim})"
        )
    if not bool(torch.isfinite(residuals).all()):
        raise ValueError("residuals holds non-finite values; expected finite residuals")
    data = residuals.detach().to(error.raw_bias.dtype)

    def loss_fn(model: nn.Module, batch: Tensor) -> Tensor:
        predictive = model(batch, batch, error.dt_ref)
        return -predictive.log_prob(batch).mean()

    return fit(
        error,
        [data],
        loss_fn=loss_fn,
        steps=steps,
        lr=lr,
        scheduler="cosine",
        seed=seed,
        device="cpu",
        progress=False,
    )
