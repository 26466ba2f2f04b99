"""A learned tendency model of a periodic 1-d chain (Lorenz-96) and its training recipe."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn._rk4 import rk4_classic
from uqdyn.data.pairs import check_pairs
from uqdyn.physics.dynamics import Dynamics
from uqdyn.predictive import Ensemble
from uqdyn.train import FitResult, fit

__all__ = ["PeriodicConvTendency", "fit_tendency_surrogate", "one_step_loss", "one_step_residuals"]


def _positive_int(value: object, name: str) -> int:
    return as_int(value, name, minimum=1)


def _positive_float(value: object, name: str) -> float:
    return as_float(value, name, positive=True)


def one_step_loss(model: nn.Module, batch: tuple[Tensor, Tensor], dt: float) -> Tensor:
    """``mean((RK4(model, x0, dt) - x1)^2) / dt^2``: one classical RK4 step, tendency units.

    Parameters
    ----------
    model : nn.Module
        ``forward(t, state (B, dim)) -> (B, dim)``.
    batch : (Tensor, Tensor)
        ``(x0, x1)``, each ``(B, dim)``.
    dt : float
        Time between ``x0`` and ``x1``.

    Returns
    -------
    Tensor, shape ()
    """
    x0, x1 = batch
    return (rk4_classic(model, x0, 0.0, dt, 1) - x1).square().mean() / dt**2


class PeriodicConvTendency(Dynamics):
    """A local network for the tendency ``dx/dt`` of a periodic 1-d chain (Lorenz-96).

    ``z = (x - loc) / scale``; a circular convolution of width ``kernel_size`` gives
    ``3 * width`` channels ``(a, b, c)``; the features ``[a, b * c]`` (a bilinear layer that
    can represent the advection term of Lorenz-96) feed a linear read-out plus a GELU
    hidden layer; the output is multiplied by ``tendency_scale``. The same weights act at
    every site, so the model is translation-equivariant and works for any ring length (in
    the spirit of Brajard et al. 2020). It is a :class:`~uqdyn.physics.Dynamics`, so
    :class:`uqdyn.da.ForecastOperator` integrates it like the true model.

    Training contract (:class:`uqdyn.train.Trainable`): :meth:`loss` of a batch ``(x0, x1)``
    of states ``dt`` apart is :func:`one_step_loss` over one classical RK4 step of
    :attr:`pair_dt`, so ``uqdyn.train.fit(model, batches)`` trains it.

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
    dt : float, optional
        Time between the states of a training pair (:attr:`pair_dt`, a buffer, so it is
        checkpointed); needed by :meth:`loss`.

    References
    ----------
    Brajard, Carrassi, Bocquet & Bertino, "Combining data assimilation and machine learning
    to emulate a dynamical model from sparse and noisy observations: a case study with the
    Lorenz 96 model", J. Comput. Sci. 44 (2020).
    """

    loc: Tensor
    scale: Tensor
    tendency_scale: Tensor
    pair_dt: Tensor

    def __init__(
        self,
        dim: int = 40,
        *,
        width: int = 32,
        kernel_size: int = 5,
        loc: float = 0.0,
        scale: float = 1.0,
        tendency_scale: float = 1.0,
        dt: float | None = None,
    ) -> None:
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.state_shape = (self.dim,)
        width = _positive_int(width, "width")
        kernel_size = as_int(kernel_size, "kernel_size", minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd positive int")
        self.kernel_size = kernel_size
        self.register_buffer("loc", torch.tensor(as_float(loc, "loc")))
        self.register_buffer("scale", torch.tensor(_positive_float(scale, "scale")))
        self.register_buffer(
            "tendency_scale", torch.tensor(_positive_float(tendency_scale, "tendency_scale"))
        )
        self.register_buffer(
            "pair_dt",
            torch.tensor(
                math.nan if dt is None else _positive_float(dt, "dt"), dtype=torch.float64
            ),
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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PeriodicConvTendency:
        # ``.float()`` / ``.to(dtype)`` would round the pair spacing (0.05 -> 0.0500000007)
        # and silently change the step every loss takes: it stays float64, on the device.
        pair_dt = self.pair_dt.detach().clone()
        super()._apply(fn, recurse)
        self.pair_dt = pair_dt.to(device=self.pair_dt.device)
        return self

    def set_pair_dt(self, dt: float) -> None:
        """Set :attr:`pair_dt`, the time between the states of a training pair."""
        self.pair_dt.fill_(_positive_float(dt, "dt"))

    def _pair_dt(self) -> float:
        dt = float(self.pair_dt)
        if not math.isfinite(dt):
            raise ValueError(
                "pair_dt is not set; expected PeriodicConvTendency(..., dt=step), from_data(pairs, "
                "dt) or set_pair_dt(step) before training on pairs"
            )
        return dt

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """:func:`one_step_loss` of ``batch = (x0, x1)`` (each ``(B, dim)``) over :attr:`pair_dt`.

        Returns
        -------
        Tensor, shape ()
        """
        dt = self._pair_dt()
        return one_step_loss(self, check_pairs(batch, "batch"), dt)

    def predict_batch(self, batch: tuple[Tensor, Tensor]) -> tuple[Ensemble, Tensor, None]:
        """The one-step forecast of ``batch = (x0, x1)`` (each ``(B, dim)``) over :attr:`pair_dt`.

        The surrogate is deterministic: its forecast is a one-member
        :class:`~uqdyn.predictive.Ensemble` ``(1, B, dim)``, whose CRPS is the absolute
        error (its uncertainty is the separate :class:`DiagonalNormalError`).

        Returns
        -------
        (Ensemble with batch_shape (B, dim), x1, None)
        """
        dt = self._pair_dt()
        x0, x1 = check_pairs(batch, "batch")
        return Ensemble(rk4_classic(self, x0, 0.0, dt, 1).unsqueeze(0)), x1, None

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
        """A network normalised with the statistics of ``pairs`` (states and increments/dt).

        Parameters
        ----------
        pairs : (Tensor, Tensor), each (samples, dim)
            E.g. from :func:`uqdyn.data.pairs.lorenz96_pairs`.
        dt : float
            Time between the states of a pair (becomes :attr:`pair_dt`).
        **kwargs
            ``width``, ``kernel_size``.
        """
        x0, x1 = check_pairs(pairs)
        dt = _positive_float(dt, "dt")
        return cls(
            x0.shape[1],
            loc=float(x0.mean()),
            scale=float(x0.std()),
            tendency_scale=float(((x1 - x0) / dt).std()),
            dt=dt,
            **kwargs,
        )


def one_step_residuals(surrogate: nn.Module, pairs: tuple[Tensor, Tensor], dt: float) -> Tensor:
    """``x1 - RK4(surrogate, x0, dt)`` (one classical RK4 step, no gradients).

    Parameters
    ----------
    surrogate : nn.Module
        ``forward(t, state (B, dim)) -> (B, dim)``.
    pairs : (Tensor, Tensor), each (samples, dim)
    dt : float

    Returns
    -------
    Tensor, shape (samples, dim), in the dtype of the surrogate's parameters
    """
    x0, x1 = check_pairs(pairs)
    dt = _positive_float(dt, "dt")
    parameter = next(surrogate.parameters(), None)
    like = parameter if parameter is not None else x0
    with torch.no_grad():
        forecast = rk4_classic(surrogate, x0.to(like), 0.0, dt, 1)
    return x1.to(forecast) - forecast


def _sampler(
    pairs: tuple[Tensor, Tensor], batch_size: int, dtype: torch.dtype
) -> Callable[[torch.Generator], tuple[Tensor, Tensor]]:
    x0, x1 = pairs[0].to(dtype), pairs[1].to(dtype)

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

    The loss is :func:`one_step_loss`, ``mean((RK4(surrogate, x0, dt) - x1)^2) / dt^2``:
    the squared error of one classical RK4 step in tendency units, back-propagated through
    the step (a :class:`PeriodicConvTendency` gets ``pair_dt = dt`` and is trained through
    its own :meth:`~PeriodicConvTendency.loss`). Random mini-batches of ``batch_size`` pairs,
    Adam with a cosine schedule and gradient clipping at 1; with ``val_pairs`` the
    validation loss is computed ten times and the best validated state is restored.

    Parameters
    ----------
    surrogate : nn.Module
        ``forward(t, state (B, dim)) -> (B, dim)``, e.g. :class:`PeriodicConvTendency`.
    train_pairs, val_pairs : (Tensor, Tensor), each (samples, dim)
        From :func:`uqdyn.data.pairs.lorenz96_pairs`.
    dt : float
        Step between ``x0`` and ``x1``.

    Returns
    -------
    FitResult
    """
    if not isinstance(surrogate, nn.Module) or next(surrogate.parameters(), None) is None:
        raise TypeError(
            f"surrogate is a {type(surrogate).__name__}; expected an nn.Module with parameters"
        )
    train_pairs = check_pairs(train_pairs, "train_pairs")
    dt = _positive_float(dt, "dt")
    batch_size = _positive_int(batch_size, "batch_size")
    dtype = next(surrogate.parameters()).dtype
    loss_fn: Callable[[nn.Module, tuple[Tensor, Tensor]], Tensor] | None = None
    if isinstance(surrogate, PeriodicConvTendency):
        surrogate.set_pair_dt(dt)  # trained through its own loss (the model contract)
    else:
        loss_fn = partial(one_step_loss, dt=dt)
    val_data = None
    if val_pairs is not None:
        val_pairs = check_pairs(val_pairs, "val_pairs")
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
