"""The observation result type, the operator base class and composition.

An observation operator maps a state to what an instrument sees of it. Every operator in
:mod:`uqdyn.observe` is an ``nn.Module`` whose call ``op(state, generator=None)`` returns an
:class:`Observed`: the observed values, the boolean mask of observed entries (``True`` =
observed), the standard deviation of the additive observation noise, and the *realized*
noise-free operator ``H`` (the same random mask, stations and blur width), so that data
assimilation can apply exactly the ``H`` that produced the data to other states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, describe_type, is_real_scalar

Layout = Literal["grid", "vector", "stations"]
# A realized, noise-free stage: (input values, sample index or None) -> output values.
Stage = Callable[[Tensor, "int | None"], Tensor]

__all__ = ["Observed", "ObservationOperator", "Compose"]


def _pick(param: Tensor, index: int | None) -> Tensor:
    """The per-sample parameter ``param`` (batch first), or its row ``index`` kept 2-d."""
    return param if index is None else param[index : index + 1]


@dataclass(frozen=True, eq=False)
class Observed:
    """What an observation operator returns.

    Attributes
    ----------
    values:
        Observed values. Shape ``(B, C, H, W)`` for gridded states, ``(B, D)`` for vector
        states, ``(B, C, S)`` (or ``(B, S)`` for vector states) after
        :class:`~uqdyn.observe.StationSubsample`. Unobserved entries hold ``0``.
    mask:
        Boolean tensor of the shape of ``values``; ``True`` where an entry is observed.
    noise_std:
        Standard deviation of the additive Gaussian noise in each entry, shape of ``values``
        (zeros where no noise was added). The observation-error covariance is
        ``R = diag(noise_std ** 2)`` over the observed entries.
    coordinates:
        Station coordinates for station observations: ``(B, S, 2)`` integer grid indices
        (row, column) or ``(B, S, 1)`` component indices for vector states; ``None``
        otherwise.
    state_shape:
        Shape of one state (without batch) that the operator was applied to.
    layout:
        ``"grid"``, ``"vector"`` or ``"stations"``: how the entries of ``values`` are laid
        out.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Compose, RandomPixelMask, GaussianNoise
    >>> op = Compose(RandomPixelMask(drop=0.9), GaussianNoise(sigma=0.1))
    >>> obs = op(torch.randn(4, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    >>> obs.values.shape, obs.mask.dtype
    (torch.Size([4, 1, 16, 16]), torch.bool)
    >>> obs.apply(torch.zeros(4, 1, 16, 16)).shape  # the same realized H, no noise
    torch.Size([4, 1, 16, 16])
    """

    values: Tensor
    mask: Tensor
    noise_std: Tensor
    state_shape: tuple[int, ...]
    layout: Layout
    coordinates: Tensor | None = None
    stages: tuple[Stage, ...] = field(default=(), repr=False)

    @property
    def batch_size(self) -> int:
        """Number of observed samples ``B``."""
        return int(self.values.shape[0])

    @property
    def error_variance(self) -> Tensor:
        """Observation-error variance ``noise_std ** 2``, shape of ``values``."""
        return self.noise_std.square()

    def apply(self, state: Tensor, index: int | None = None) -> Tensor:
        """Apply the realized noise-free operator ``H`` to another state.

        Parameters
        ----------
        state:
            ``(B, *state_shape)`` with the batch of this observation; or any batch
            ``(M, *state_shape)`` when ``index`` is given (sample ``index``'s ``H`` applied
            to every row, e.g. ensemble members) or when ``B == 1``.
        index:
            Use the realization of sample ``index`` only.

        Returns
        -------
        Tensor of shape ``(M, *values.shape[1:])``: ``H(state)`` with unobserved entries 0.
        """
        if not isinstance(state, Tensor):
            raise TypeError(f"state is a {type(state).__name__}; expected a torch.Tensor")
        if tuple(state.shape[1:]) != self.state_shape:
            raise ValueError(
                f"state has shape {tuple(state.shape)}; expected (batch, *{self.state_shape})"
            )
        if index is None and self.batch_size == 1:
            index = 0
        if index is None and state.shape[0] != self.batch_size:
            raise ValueError(
                f"state has batch {state.shape[0]} but the observation has batch "
                f"{self.batch_size}; expected equal batches, or pass index="
            )
        if index is not None and not -self.batch_size <= index < self.batch_size:
            raise ValueError(f"index={index} is out of range for batch {self.batch_size}")
        if index is not None:
            index = index % self.batch_size
        out = state
        for stage in self.stages:
            out = stage(out, index)
        return out

    def select(self, index: int) -> Observed:
        """The observation of sample ``index`` alone, as an :class:`Observed` with batch 1."""
        if not -self.batch_size <= index < self.batch_size:
            raise ValueError(f"index={index} is out of range for batch {self.batch_size}")
        index = index % self.batch_size
        rows = slice(index, index + 1)
        coords = None if self.coordinates is None else self.coordinates[rows]
        stages = tuple(_bind(stage, index) for stage in self.stages)
        return Observed(
            self.values[rows],
            self.mask[rows],
            self.noise_std[rows],
            self.state_shape,
            self.layout,
            coords,
            stages,
        )

    def observed_values(self, index: int = 0) -> Tensor:
        """Observed entries ``y`` of sample ``index`` as a vector ``(N_obs,)`` (row-major)."""
        one = self.select(index)
        return one.values[one.mask]

    def observed_error_variance(self, index: int = 0) -> Tensor:
        """Diagonal of ``R`` for sample ``index``: ``(N_obs,)``, aligned with ``observed_values``."""
        one = self.select(index)
        return one.error_variance[one.mask]

    def matrix(self, index: int = 0) -> Tensor:
        """Dense matrix of the realized linear operator of sample ``index``.

        Every operator in :mod:`uqdyn.observe` is linear in the state, so
        ``observed_values(index) = H @ state.flatten() + noise``. The matrix is built by
        applying the operator to the identity basis (``prod(state_shape)`` states), so it
        is meant for small states; use :meth:`apply` otherwise.

        Returns
        -------
        Tensor ``(N_obs, prod(state_shape))`` in the dtype and device of ``values``.
        """
        one = self.select(index)
        n_state = math.prod(self.state_shape)
        basis = torch.eye(n_state, dtype=self.values.dtype, device=self.values.device)
        images = one.apply(basis.reshape(n_state, *self.state_shape))  # (n_state, *obs)
        return images[:, one.mask[0]].T.contiguous()

    def log_likelihood(self, state: Tensor) -> Tensor:
        """Gaussian log-likelihood ``log p(values | state)`` per sample.

        ``sum_i log N(values_i; H(state)_i, noise_std_i^2)`` over the observed entries ``i``.

        Parameters
        ----------
        state:
            ``(B, *state_shape)``.

        Returns
        -------
        Tensor ``(B,)``.
        """
        observed_std = self.noise_std[self.mask]
        if observed_std.numel() and bool((observed_std <= 0).any()):
            raise ValueError(
                "noise_std is 0 at observed entries; the likelihood is degenerate. Expected an "
                "operator that ends with GaussianNoise(sigma > 0)"
            )
        predicted = self.apply(state)
        std = torch.where(self.mask, self.noise_std, torch.ones_like(self.noise_std))
        z = (self.values - predicted) / std
        terms = -0.5 * z.square() - std.log() - 0.5 * math.log(2.0 * math.pi)
        terms = torch.where(self.mask, terms, torch.zeros_like(terms))
        return terms.flatten(1).sum(1)

    def then(
        self,
        values: Tensor,
        mask: Tensor,
        noise_std: Tensor,
        stage: Stage,
        *,
        layout: Layout | None = None,
        coordinates: Tensor | None = None,
    ) -> Observed:
        """A new observation after one more operator (used by operator implementations)."""
        return Observed(
            values,
            mask,
            noise_std,
            self.state_shape,
            layout if layout is not None else self.layout,
            coordinates if coordinates is not None else self.coordinates,
            (*self.stages, stage),
        )


def _bind(stage: Stage, index: int) -> Stage:
    def bound(values: Tensor, _index: int | None) -> Tensor:
        return stage(values, index)

    return bound


def _start(state: Tensor) -> Observed:
    """The identity observation of ``state``, the input of the first operator."""
    if not isinstance(state, Tensor):
        raise TypeError(f"state is a {type(state).__name__}; expected a torch.Tensor")
    if not state.dtype.is_floating_point:
        raise TypeError(f"state has dtype {state.dtype}; expected a floating-point tensor")
    if state.dim() not in (2, 4):
        raise ValueError(
            f"state has shape {tuple(state.shape)}; expected (batch, channels, height, width) "
            "for a gridded state or (batch, dim) for a vector state"
        )
    if state.shape[0] == 0:
        raise ValueError(f"state has shape {tuple(state.shape)}; expected a non-empty batch")
    if not bool(torch.isfinite(state).all()):
        raise ValueError("state contains NaN or infinite values; expected finite values")
    layout: Layout = "grid" if state.dim() == 4 else "vector"
    return Observed(
        values=state,
        mask=torch.ones(state.shape, dtype=torch.bool, device=state.device),
        noise_std=torch.zeros_like(state),
        state_shape=tuple(state.shape[1:]),
        layout=layout,
    )


class ObservationOperator(nn.Module):
    """Base class of observation operators.

    Subclasses implement :meth:`observe`, which maps an :class:`Observed` (the output of the
    previous operator, or the state itself) to a new one; calling the operator on a state
    tensor starts from the identity observation. Random parameters are drawn per sample
    from ``generator`` (the global generator when ``None``); a generator on the CPU gives
    the same draws whatever the device of the state.
    """

    def forward(self, state: Tensor, generator: torch.Generator | None = None) -> Observed:
        """Observe ``state``.

        Parameters
        ----------
        state:
            ``(B, C, H, W)`` gridded fields or ``(B, D)`` vectors, floating point, finite.
        generator:
            Source of the random parameters (masks, stations, widths, noise).

        Returns
        -------
        Observed
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator is a {type(generator).__name__}; expected a torch.Generator or None"
            )
        return self.observe(_start(state), generator)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        """Apply this operator to the output ``obs`` of a previous operator."""
        raise NotImplementedError(f"{type(self).__name__} does not implement observe()")


class Compose(ObservationOperator):
    """Apply observation operators one after another.

    ``Compose(op1, op2)(state) = op2(op1(state))``: masks combine (an entry is observed when
    every mask observes it), noise variances add, and the realized operator ``H`` is the
    composition of the stages. Put :class:`~uqdyn.observe.Blur` first and
    :class:`~uqdyn.observe.GaussianNoise` last, as an instrument would.

    Parameters
    ----------
    *operators:
        :class:`ObservationOperator` instances.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Blur, CloudMask, Compose, GaussianNoise
    >>> op = Compose(Blur(sigma=1.5), CloudMask(cover=(0.2, 0.5)), GaussianNoise(sigma=0.05))
    >>> obs = op(torch.randn(2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    >>> obs.values.shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, *operators: ObservationOperator) -> None:
        super().__init__()
        if not operators:
            raise ValueError("Compose received no operators; expected at least one")
        for i, op in enumerate(operators):
            if not isinstance(op, ObservationOperator):
                raise TypeError(
                    f"operators[{i}] is a {type(op).__name__}; expected an ObservationOperator"
                )
        self.operators = nn.ModuleList(operators)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        for op in self.operators:
            obs = cast(ObservationOperator, op).observe(obs, generator)
        return obs


def _check_range(
    value: float | Sequence[float],
    name: str,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> tuple[float, float]:
    """Validate a fixed value or a ``(lo, hi)`` range inside ``[low, high]``."""
    if is_real_scalar(value):
        lo = hi = as_float(value, name, finite=False)
    elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2) or (
        isinstance(value, (np.ndarray, Tensor)) and tuple(value.shape) == (2,)
    ):
        lo, hi = (as_float(value[i], f"{name}[{i}]", finite=False) for i in range(2))
    else:
        raise TypeError(
            f"{name}={value!r} is a {describe_type(value)}; expected a number or a (low, high) pair"
        )
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    for v in (lo, hi):
        bad_low = v <= low if low_open else v < low
        bad_high = v >= high if high_open else v > high
        if not math.isfinite(v) or bad_low or bad_high:
            raise ValueError(f"{name}={value!r}; expected values in {left}{low}, {high}{right}")
    if lo > hi:
        raise ValueError(f"{name}={value!r}; expected low <= high")
    return lo, hi


def _rand(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform(0, 1) draws, made on the generator's device then moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def _randn(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal draws, made on the generator's device then moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def _uniform_per_sample(
    bounds: tuple[float, float],
    batch: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """``(batch,)`` float64 draws from Uniform(lo, hi) (constant when lo == hi)."""
    lo, hi = bounds
    if lo == hi:
        return torch.full((batch,), lo, dtype=torch.float64, device=device)
    return lo + (hi - lo) * _rand((batch,), generator, device, torch.float64)
