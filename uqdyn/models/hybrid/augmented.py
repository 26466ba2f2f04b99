"""Hybrid dynamics ``dX/dt = F_phys(X; theta) + F_aug(X)`` and small augmentation networks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar
from uqdyn.physics import Dynamics, simulate
from uqdyn.predictive import Normal

from .batch import TrajectoryBatch, check_batch, later_mask, masked_mean, observed_or_zero

__all__ = ["HybridDynamics", "MLPAugmentation", "ConvAugmentation"]


def _check_positive_int(value: Any, name: str) -> int:
    return as_int(value, name, minimum=1)


class MLPAugmentation(nn.Module):
    """Fully connected augmentation ``F_aug: R^dim -> R^dim`` for ODE states.

    ``depth`` hidden layers of width ``hidden`` with an activation between them; the output
    layer starts at zero, so a fresh hybrid model is its physical part.

    Parameters
    ----------
    dim : int
        State dimension (input and output).
    hidden : int
        Width of the hidden layers. Default 64.
    depth : int
        Number of hidden layers. Default 2.
    activation : type of nn.Module
        Default :class:`torch.nn.Tanh` (smooth, so the ODE right-hand side is too).
    input_dim : int, optional
        Input width when it differs from ``dim`` (e.g. state plus a latent variable).

    Examples
    --------
    >>> import torch
    >>> net = MLPAugmentation(2, hidden=16)
    >>> net(torch.randn(5, 2)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 2,
        activation: type[nn.Module] = nn.Tanh,
        *,
        input_dim: int | None = None,
    ) -> None:
        super().__init__()
        dim = _check_positive_int(dim, "dim")
        hidden = _check_positive_int(hidden, "hidden")
        depth = _check_positive_int(depth, "depth")
        width_in = dim if input_dim is None else _check_positive_int(input_dim, "input_dim")
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width_in, hidden), activation()]
            width_in = hidden
        out = nn.Linear(width_in, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, state: Tensor) -> Tensor:
        """``F_aug(state)``: shape ``(batch, dim)`` from ``(batch, input_dim)``."""
        return self.net(state)


class ConvAugmentation(nn.Module):
    """Convolutional augmentation for gridded states ``(batch, channels, height, width)``.

    ``depth`` 3x3 convolutions with circular padding (periodic domains) of ``hidden``
    channels and an activation, then a 3x3 output convolution started at zero.

    Parameters
    ----------
    channels : int
        State channels (input and output).
    hidden : int
        Hidden channels. Default 16.
    depth : int
        Number of hidden convolutions. Default 2.
    activation : type of nn.Module
        Default :class:`torch.nn.Tanh`.
    input_channels : int, optional
        Input channels when they differ from ``channels`` (state plus latent maps).

    Examples
    --------
    >>> import torch
    >>> net = ConvAugmentation(2, hidden=8)
    >>> net(torch.randn(3, 2, 16, 16)).shape
    torch.Size([3, 2, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 16,
        depth: int = 2,
        activation: type[nn.Module] = nn.Tanh,
        *,
        input_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = _check_positive_int(channels, "channels")
        hidden = _check_positive_int(hidden, "hidden")
        depth = _check_positive_int(depth, "depth")
        width_in = (
            channels
            if input_channels is None
            else _check_positive_int(input_channels, "input_channels")
        )
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(width_in, hidden, 3, padding=1, padding_mode="circular")]
            layers += [activation()]
            width_in = hidden
        out = nn.Conv2d(width_in, channels, 3, padding=1, padding_mode="circular", bias=True)
        nn.init.zeros_(out.weight)
        if out.bias is not None:
            nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, state: Tensor) -> Tensor:
        """``F_aug(state)``: shape ``(batch, channels, height, width)``."""
        return self.net(state)


class HybridDynamics(Dynamics):
    r"""Physics plus a learned correction: ``dX/dt = F_phys(X; theta) + F_aug(X)``.

    The APHYNITY decomposition (Yin et al. 2021): ``F_phys`` is any
    :class:`~uqdyn.physics.Dynamics` with learnable physical parameters ``theta``, possibly
    incomplete (a missing term, a coarse model); ``F_aug`` is a network that captures what
    the physics misses. Train it with :func:`~uqdyn.models.hybrid.fit_aphynity`, which keeps
    ``F_aug`` as small as the data allow so that ``theta`` stays identifiable.

    * ``physics=None``: data-only model ``dX/dt = F_aug(X)`` (a neural ODE);
    * ``augmentation=None``: physics-only model ``dX/dt = F_phys(X)``.

    With ``conserve`` (gridded states), the augmentation's tendency of each listed channel
    is projected onto zero spatial mean,
    ``F_aug,c <- F_aug,c - mean_{x}(F_aug,c)``, the orthogonal projection onto
    tendencies that leave ``sum_x X_c`` unchanged. When the physics conserves that total
    (e.g. the layer depth ``h`` of :class:`~uqdyn.physics.ShallowWater`, channel 2), so does
    the hybrid, to round-off, over any rollout length.

    With ``dissipate`` (an energy ``E(X)``, e.g. :meth:`ShallowWater.energy
    <uqdyn.physics.ShallowWater.energy>`), the augmentation may remove energy but never add
    it: with ``g = grad_X E`` (projected like the tendency when ``conserve`` is set) and
    ``s = <g, F_aug>``, a positive ``s`` is removed,
    ``F_aug <- F_aug - max(s, 0) g / ||g||^2``, the projection onto the half-space
    ``<g, F_aug> <= 0`` (per sample). The augmentation's contribution to ``dE/dt`` is then
    never positive, so when the physics does not create energy (an inviscid model) the
    hybrid's energy cannot grow, whatever the network learned: long rollouts stay bounded.
    The guarantee is for the ODE; a fixed-step integrator adds its own error, which a stiff
    network can make visible at coarse steps. The conserved totals stay conserved (the
    correction is along the projected ``g``). Costs one extra backward pass through ``E``
    per evaluation.

    **As a forecaster** (the :class:`uqdyn.train.Trainable` contract), the model observes
    its rollout with Gaussian noise of a learned scale ``sigma`` per state component (per
    channel for gridded states), ``y(t) ~ N(X_hat(t), sigma^2)`` with ``X_hat`` the rollout
    from the observed initial state: :meth:`loss` is the mean negative log likelihood of the
    observed states of a :class:`TrajectoryBatch` and :meth:`predict_batch` the
    :class:`~uqdyn.predictive.Normal` of the later times, so ``uqdyn.train.fit(model,
    batches)`` trains physics, network and ``sigma`` together. :func:`fit_aphynity` trains
    physics and network under APHYNITY's constraint instead and sets ``sigma`` to the root
    mean square residual of its rollouts on the training trajectories.

    Parameters
    ----------
    physics : Dynamics or None
        ``F_phys``. Its parameters that should stay fixed must have
        ``requires_grad=False``.
    augmentation : nn.Module or None
        ``F_aug``, mapping a state ``(batch, *state_shape)`` to a tendency of the same shape
        (e.g. :class:`MLPAugmentation`, :class:`ConvAugmentation`).
    state_shape : tuple of int, optional
        State shape without the batch axis; required for a data-only model, otherwise taken
        from ``physics`` (and checked against it when given).
    conserve : sequence of int, optional
        Channels whose spatial total ``F_aug`` must not change (gridded states only).
    dissipate : callable, optional
        An energy ``E: (batch, *state_shape) -> (batch,)``, differentiable, that ``F_aug``
        must not increase.
    noise_std : float
        Initial observation noise scale ``sigma > 0`` (the parameter ``log_noise``, shape
        ``(C,)`` for ``state_shape == (C,)`` and ``(C, 1, ..., 1)`` for gridded states, in
        the dtype of the physics' or network's parameters). Default 1.

    References
    ----------
    Yin, Le Guen, Dona, de Bezenac, Ayed, Thome, Gallinari, "Augmenting physical models with
    deep networks for complex dynamics forecasting", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> physics = DampedPendulum(alpha=0.0)
    >>> physics.alpha.requires_grad_(False)  # doctest: +ELLIPSIS
    Parameter containing:...
    >>> model = HybridDynamics(physics, MLPAugmentation(2, hidden=16))
    >>> simulate(model, torch.tensor([[1.0, 0.0]]), torch.linspace(0, 2, 5)).shape
    torch.Size([1, 5, 2])
    """

    physics: Dynamics | None
    augmentation: nn.Module | None

    def __init__(
        self,
        physics: Dynamics | None,
        augmentation: nn.Module | None,
        *,
        state_shape: Sequence[int] | None = None,
        conserve: Sequence[int] | None = None,
        dissipate: Callable[[Tensor], Tensor] | None = None,
        noise_std: float = 1.0,
    ) -> None:
        super().__init__()
        if physics is None and augmentation is None:
            raise ValueError(
                "physics and augmentation are both None; expected at least one of them"
            )
        if physics is not None and not isinstance(physics, Dynamics):
            raise TypeError(
                f"physics must be a uqdyn.physics.Dynamics or None, got {type(physics).__name__}"
            )
        if augmentation is not None and not isinstance(augmentation, nn.Module):
            raise TypeError(
                f"augmentation must be an nn.Module or None, got {type(augmentation).__name__}"
            )
        shape = _resolve_state_shape(physics, state_shape)
        self.state_shape = shape
        self.physics = physics
        self.augmentation = augmentation
        if physics is not None:
            self.component_names = tuple(physics.component_names)
            self.parameter_names = tuple(physics.parameter_names)
        self.conserve = _check_conserve(shape, conserve)
        self.dissipate = _check_dissipate(dissipate)
        noise_std = as_float(noise_std, "noise_std", positive=True)
        like = next((p for p in self.parameters() if p.is_floating_point()), None)
        self.log_noise = nn.Parameter(
            torch.full(
                (shape[0],) + (1,) * (len(shape) - 1),
                math.log(noise_std),
                dtype=torch.get_default_dtype() if like is None else like.dtype,
                device=None if like is None else like.device,
            )
        )

    def __getattr__(self, name: str) -> Any:
        # physical parameters (e.g. ``omega0``) are readable on the hybrid model
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            physics = modules.get("physics")
            if physics is not None and name in getattr(physics, "parameter_names", ()):
                return getattr(physics, name)
            raise

    # ------------------------------------------------------------------ the two parts
    def physical_part(self, t: Tensor, state: Tensor) -> Tensor:
        """``F_phys(X)``, shape ``(batch, *state_shape)`` (zeros for a data-only model)."""
        if self.physics is None:
            return torch.zeros_like(state)
        return self.physics(t, state)

    def augmentation_part(self, state: Tensor) -> Tensor:
        """``F_aug(X)`` after the conservation projection, shape ``(batch, *state_shape)``.

        Zeros for a physics-only model. Raises ``ValueError`` if the network's output shape
        differs from the state's.
        """
        if self.augmentation is None:
            return torch.zeros_like(state)
        correction = self.augmentation(state)
        if not isinstance(correction, Tensor) or correction.shape != state.shape:
            got = tuple(correction.shape) if isinstance(correction, Tensor) else correction
            raise ValueError(
                f"augmentation must return a tendency of the state's shape "
                f"{tuple(state.shape)}, got {got}"
            )
        if self.conserve:
            correction = _project_zero_mean(correction, self.conserve)
        if self.dissipate is not None:
            correction = _remove_energy_gain(self.dissipate, state, correction, self.conserve)
        return correction

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """``F_phys(X) + F_aug(X)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, *state_shape)

        Returns
        -------
        Tensor, shape (batch, *state_shape)
        """
        return self.physical_part(t, state) + self.augmentation_part(state)

    # ------------------------------------------------------------------ the contract
    @property
    def noise_std(self) -> Tensor:
        """Observation noise scale ``sigma = exp(log_noise)``, shape ``(C,)`` or ``(C, 1, ...)``."""
        return self.log_noise.exp()

    def rollout(
        self, batch: TrajectoryBatch, *, method: str = "rk4", step_size: float | None = None
    ) -> Tensor:
        """The rollout from ``batch.initial_state`` over ``batch.times``.

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *state_shape)``, checked (finite where observed).
        method, step_size
            Integration, as in :func:`uqdyn.physics.simulate`.

        Returns
        -------
        Tensor, shape (batch, time, *state_shape)
            Differentiable in the physical and network parameters.
        """
        batch = check_batch(batch, self, self.state_shape)
        return simulate(self, batch.initial_state, batch.times, method, step_size=step_size)

    def predict_batch(
        self, batch: TrajectoryBatch, *, method: str = "rk4", step_size: float | None = None
    ) -> tuple[Normal, Tensor, Tensor | None]:
        """Forecast the later times of ``batch`` from its initial states.

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *state_shape)`` with an optional mask ``(batch, time)``.
        method, step_size
            Integration, as in :func:`uqdyn.physics.simulate`.

        Returns
        -------
        predictive : Normal
            ``N(X_hat(t), sigma^2)`` with batch_shape ``(batch, time - 1, *state_shape)``.
        y_true : Tensor, shape (batch, time - 1, *state_shape)
            The observed later states (unobserved entries set to 0).
        mask : Tensor of bool, shape (batch, time - 1), or None
            ``batch.mask[:, 1:]``.

        Examples
        --------
        >>> import torch
        >>> from uqdyn.physics import DampedPendulum
        >>> from uqdyn.models.hybrid import TrajectoryBatch
        >>> model = HybridDynamics(DampedPendulum(), None)
        >>> batch = TrajectoryBatch(torch.linspace(0, 1, 5), torch.ones(3, 5, 2))
        >>> model.predict_batch(batch)[0].batch_shape
        torch.Size([3, 4, 2])
        """
        batch = check_batch(batch, self, self.state_shape)
        path = simulate(self, batch.initial_state, batch.times, method, step_size=step_size)
        mean = path[:, 1:]
        scale = self.noise_std.to(mean).expand_as(mean)
        return Normal(mean, scale), observed_or_zero(batch), later_mask(batch)

    def loss(
        self, batch: TrajectoryBatch, *, method: str = "rk4", step_size: float | None = None
    ) -> Tensor:
        r"""Mean negative log likelihood of the observed later states, shape ``()``.

        ``mean_{b, t > 0 observed, i} [ (y_bti - X_hat_bti)^2 / (2 sigma_i^2) + log sigma_i
        + log(2 pi) / 2 ]`` with ``X_hat`` the rollout from ``y_b0`` (see
        :meth:`predict_batch` for the arguments).
        """
        batch = check_batch(batch, self, self.state_shape)
        path = simulate(self, batch.initial_state, batch.times, method, step_size=step_size)
        mean = path[:, 1:]
        z = (observed_or_zero(batch) - mean) / self.noise_std
        nll = 0.5 * z.square() + self.log_noise + 0.5 * math.log(2 * math.pi)
        return masked_mean(nll, later_mask(batch))

    # ------------------------------------------------------------------ checks
    def check_state(self, state: Any, name: str = "state") -> Tensor:
        """Validate a state ``(batch, *state_shape)`` (and the physics' own checks)."""
        state = super().check_state(state, name)
        if self.physics is not None:
            self.physics.check_state(state, name)
        return state

    def check_compatible(self, state: Any, name: str = "state") -> Tensor:
        """Raise a clear error unless physics and augmentation both accept ``state``.

        Evaluates both parts once on ``state`` (no gradients) and checks that each returns a
        tendency of the state's shape. Call it before training.

        Parameters
        ----------
        state : Tensor, shape (batch, *state_shape)

        Returns
        -------
        Tensor, shape (batch, *state_shape)
            ``state`` unchanged.

        Raises
        ------
        ValueError
            Naming the part (``physics`` or ``augmentation``), the shape it returned and the
            shape expected.
        """
        state = self.check_state(state, name)
        t = torch.zeros((), dtype=state.dtype, device=state.device)
        with torch.no_grad():
            if self.physics is not None:
                out = self.physics(t, state)
                if out.shape != state.shape:
                    raise ValueError(
                        f"physics {type(self.physics).__name__} returned a tendency of shape "
                        f"{tuple(out.shape)} for {name} of shape {tuple(state.shape)}; "
                        "expected the same shape"
                    )
            if self.augmentation is not None:
                try:
                    self.augmentation_part(state)
                except RuntimeError as error:
                    raise ValueError(
                        f"augmentation {type(self.augmentation).__name__} cannot take {name} "
                        f"of shape {tuple(state.shape)} ({error}); expected a network mapping "
                        f"(batch, {', '.join(map(str, self.state_shape))}) to the same shape"
                    ) from error
        return state

    def check_trajectory(self, trajectory: Tensor, times: Tensor) -> None:
        """The physics' trajectory checks (e.g. positive depth); none for data-only."""
        if self.physics is not None:
            self.physics.check_trajectory(trajectory, times)

    def stable_dt(self, method: str = "rk4") -> float:
        """The physics' stability limit (the network may lower it; not checked)."""
        if self.physics is None:
            return float("inf")
        return self.physics.stable_dt(method)

    def describe_component(self, index: int) -> str:
        if self.physics is not None:
            return self.physics.describe_component(index)
        return super().describe_component(index)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Initial states of the physics, shape ``(batch, *state_shape)``."""
        if self.physics is None:
            raise ValueError("initial_state needs physics; this data-only model has none")
        return self.physics.initial_state(batch, generator=generator, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        dissipate = getattr(self.dissipate, "__name__", None) if self.dissipate else None
        return (
            f"state_shape={self.state_shape}, conserve={self.conserve or None}, "
            f"dissipate={dissipate}"
        )


def _check_dissipate(
    dissipate: Callable[[Tensor], Tensor] | None,
) -> Callable[[Tensor], Tensor] | None:
    if dissipate is not None and not callable(dissipate):
        raise TypeError(
            "dissipate must be a callable energy (batch, *state_shape) -> (batch,), got "
            f"{type(dissipate).__name__}"
        )
    return dissipate


def _remove_energy_gain(
    energy_fn: Callable[[Tensor], Tensor],
    state: Tensor,
    correction: Tensor,
    conserve: tuple[int, ...],
) -> Tensor:
    """Project ``correction`` onto ``<grad E(state), correction> <= 0`` per sample.

    ``grad E`` is first projected like the tendency (zero spatial mean of the ``conserve``
    channels), so the result keeps those totals. Differentiable (the energy's gradient is
    built with a graph whenever gradients are enabled).
    """
    graph = torch.is_grad_enabled()  # keep the graph for training (params, state)
    with torch.enable_grad():
        x = state if state.requires_grad else state.detach().requires_grad_(True)
        energy = energy_fn(x)
        if not isinstance(energy, Tensor) or energy.shape != state.shape[:1]:
            got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(
                f"dissipate must return one energy per sample, shape ({state.shape[0]},), got {got}"
            )
        (gradient,) = torch.autograd.grad(energy.sum(), x, create_graph=graph)
    if conserve:
        gradient = _project_zero_mean(gradient, conserve)
    dims = tuple(range(1, state.ndim))
    gain = (gradient * correction).sum(dim=dims, keepdim=True)
    norm = gradient.square().sum(dim=dims, keepdim=True)
    tiny = torch.finfo(norm.dtype).tiny
    step = torch.where(norm > tiny, gain.clamp_min(0.0) / norm.clamp_min(tiny), 0.0)
    return correction - step * gradient


def _project_zero_mean(tendency: Tensor, channels: tuple[int, ...]) -> Tensor:
    """Subtract the spatial mean of ``channels`` of ``tendency`` (batch, C, ...)."""
    spatial = tuple(range(2, tendency.ndim))
    mask = torch.zeros(tendency.shape[1], dtype=tendency.dtype, device=tendency.device)
    mask[list(channels)] = 1.0
    mean = tendency.mean(dim=spatial, keepdim=True)
    return tendency - mean * mask.reshape(1, -1, *([1] * len(spatial)))


def _resolve_state_shape(
    physics: Dynamics | None, state_shape: Sequence[int] | None
) -> tuple[int, ...]:
    """The state shape: ``state_shape`` if given (checked against the physics), else the physics'."""
    declared = tuple(getattr(physics, "state_shape", ()) or ()) if physics else ()
    if state_shape is not None:
        try:
            sizes = None if isinstance(state_shape, (str, bytes)) else list(state_shape)
        except TypeError:
            sizes = None
        if sizes is None:
            raise TypeError(
                f"state_shape={state_shape!r} of type {describe_type(state_shape)} is not a "
                "sequence; expected a sequence of ints >= 1"
            )
        shape = tuple(as_int(s, f"state_shape[{i}]", minimum=1) for i, s in enumerate(sizes))
        if declared and shape != declared:
            raise ValueError(
                f"state_shape {shape} disagrees with the state shape {declared} of "
                f"physics {type(physics).__name__}"
            )
        return shape
    if declared:
        return declared
    raise ValueError(
        "state_shape is needed when physics is None (or declares no state_shape); got None"
    )


def _check_conserve(shape: tuple[int, ...], conserve: Sequence[int] | None) -> tuple[int, ...]:
    """Validated channel indices to conserve (empty when ``conserve`` is None)."""
    if conserve is None:
        return ()
    if len(shape) < 2:
        raise ValueError(f"conserve needs gridded states (channels, ...); got state_shape {shape}")
    channels = tuple(conserve)
    for c in channels:
        if not is_integer_scalar(c):
            raise TypeError(
                f"conserve={conserve!r} holds {c!r}, a {describe_type(c)}; expected channel "
                f"indices (ints) in [0, {shape[0]})"
            )
    indices = tuple(as_int(c, "conserve") for c in channels)
    if not indices or not all(0 <= c < shape[0] for c in indices):
        raise ValueError(f"conserve must list channel indices in [0, {shape[0]}), got {conserve!r}")
    return indices
