"""Deep ensembles of hybrid models: an :class:`~uqdyn.predictive.Ensemble` of forecasts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.physics import simulate
from uqdyn.predictive import Ensemble

from .aphynity import AphynityResult, fit_aphynity
from .augmented import HybridDynamics
from .batch import TrajectoryBatch, check_batch, later_mask, observed_or_zero

__all__ = ["HybridEnsemble", "fit_hybrid_ensemble"]


_CALIBRATION_BUFFERS = ("noise_lead", "noise_std", "member_scale")


class HybridEnsemble(nn.Module):
    """A deep ensemble of hybrid models (Lakshminarayanan et al. 2017).

    Each member is a :class:`HybridDynamics` trained from its own initialisation (and
    optionally its own bootstrap resample of the trajectories); the forecast is the
    empirical distribution of the members' rollouts, an :class:`~uqdyn.predictive.Ensemble`
    with members first. The spread reflects the disagreement of the members (epistemic
    uncertainty), including on the physical parameters, see :meth:`parameters_of`.

    Members trained on the same data often agree much more closely than they agree with the
    truth, so the raw ensemble is over-confident. :meth:`calibrate` fits, on held-out
    trajectories, a kernel scale ``sigma(lead time, component)`` for the part of the error
    the members' spread does not explain (and a member scale ``s <= 1`` should the spread
    exceed the error); a calibrated ensemble then forecasts the mixture
    ``(1/M) sum_m N(mu + s (X_m - mu), sigma^2)`` (``mu`` the members' mean) represented by
    ``draws`` samples per member.

    **As a forecaster** (the :class:`uqdyn.train.Trainable` contract) it takes a
    :class:`TrajectoryBatch`: :meth:`predict_batch` is :meth:`forecast` at the later times
    and :meth:`loss` the sum of the members' own losses (:meth:`HybridDynamics.loss`), so
    ``uqdyn.train.fit(ensemble, batches)`` gives each member the gradient of its own loss on
    the same batches. :func:`fit_hybrid_ensemble` instead trains the members one by one
    under APHYNITY's constraint, each with its own seed (and bootstrap resample).

    Parameters
    ----------
    members : sequence of HybridDynamics
        At least one, all with the same state shape.

    References
    ----------
    Lakshminarayanan, Pritzel, Blundell, "Simple and scalable predictive uncertainty
    estimation using deep ensembles", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum
    >>> ensemble = HybridEnsemble([HybridDynamics(DampedPendulum(omega0=w), None)
    ...                            for w in (0.9, 1.0, 1.1)])
    >>> ensemble.forecast(torch.zeros(4, 2), torch.linspace(0, 1, 5)).members.shape
    torch.Size([3, 4, 5, 2])
    """

    noise_lead: Tensor | None
    noise_std: Tensor | None
    member_scale: Tensor | None

    def __init__(self, members: Sequence[HybridDynamics]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one HybridDynamics, got none")
        for index, member in enumerate(members):
            if not isinstance(member, HybridDynamics):
                raise TypeError(
                    f"members[{index}] must be a HybridDynamics, got {type(member).__name__}"
                )
            if member.state_shape != members[0].state_shape:
                raise ValueError(
                    f"members[{index}] has state_shape {member.state_shape}, expected "
                    f"{members[0].state_shape} like members[0]"
                )
        self.members = nn.ModuleList(members)
        # buffers (None until calibrate), so they follow .to() and state_dict
        for name in _CALIBRATION_BUFFERS:
            self.register_buffer(name, None)

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # a calibrated ensemble's state carries the calibration buffers: give an uncalibrated
        # one tensors of the right shape to load them into (None buffers are not loadable)
        for name in _CALIBRATION_BUFFERS:
            key = prefix + name
            if key in state_dict and getattr(self, name) is None:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def calibrated(self) -> bool:
        """Whether :meth:`calibrate` has fitted a noise scale."""
        return self.noise_std is not None

    def __len__(self) -> int:
        return len(self.members)

    def rollouts(
        self,
        state0: Tensor,
        times: Tensor | Sequence[float],
        *,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> Tensor:
        """Every member's deterministic rollout from ``state0`` (no gradients).

        Parameters
        ----------
        state0 : Tensor, shape (batch, *state_shape)
        times : Tensor or sequence of float, shape (time,)
        method, step_size
            As in :func:`uqdyn.physics.simulate`.

        Returns
        -------
        Tensor, shape (members, batch, time, *state_shape)
        """
        with torch.no_grad():
            paths = [
                simulate(member, state0, times, method, step_size=step_size)
                for member in self.members
            ]
        return torch.stack(paths)

    def forecast(
        self,
        state0: Tensor,
        times: Tensor | Sequence[float],
        *,
        method: str = "rk4",
        step_size: float | None = None,
        draws: int = 32,
        generator: torch.Generator | None = None,
    ) -> Ensemble:
        """Roll every member out from ``state0``.

        Uncalibrated, the forecast is the members' rollouts. After :meth:`calibrate`, each
        member's rollout ``X_m`` gives ``draws`` trajectories
        ``mu(t) + s(t) (X_m(t) - mu(t)) + sigma(t) * eps`` (``mu`` the members' mean,
        ``s <= 1`` the fitted member scale, ``sigma`` the fitted kernel scale), with
        ``eps ~ N(0, I)`` of the state's shape drawn once per trajectory (shared over time,
        so sampled paths stay smooth). ``s`` and ``sigma`` are interpolated linearly in lead
        time ``t - t_0``; ``sigma`` is zero at lead time 0.

        Parameters
        ----------
        state0 : Tensor, shape (batch, *state_shape)
        times : Tensor or sequence of float, shape (time,)
        method, step_size
            As in :func:`uqdyn.physics.simulate`.
        draws : int
            Noisy trajectories per member of a calibrated ensemble. Default 32.
        generator : torch.Generator, optional
            For the noise draws (on the device of ``state0``).

        Returns
        -------
        Ensemble
            Members of shape ``(members, batch, time, *state_shape)``, or
            ``(members * draws, batch, time, *state_shape)`` when calibrated.

        Raises
        ------
        TypeError
            If ``draws`` is not an int (NumPy integers and 0-d integer arrays or tensors are).
        ValueError
            If ``draws < 1``, or ``times`` reach a lead time beyond the calibrated range.
        """
        paths = self.rollouts(state0, times, method=method, step_size=step_size)
        if self.noise_std is None:
            return Ensemble(paths)
        draws = as_int(draws, "draws", minimum=1)
        times_t = torch.as_tensor(times, dtype=paths.dtype, device=paths.device)
        scale, sigma = self.noise_at(times_t - times_t[0])  # (time, *noise_shape) each
        mean = paths.mean(dim=0, keepdim=True)
        centred = mean + scale.to(paths) * (paths - mean)
        members, batch = paths.shape[:2]
        noise_shape = (members, draws, batch, 1, *paths.shape[3:])
        eps = torch.randn(noise_shape, generator=generator, dtype=paths.dtype, device=paths.device)
        noisy = centred.unsqueeze(1) + sigma.to(paths) * eps
        return Ensemble(noisy.reshape(members * draws, *paths.shape[1:]))

    def predict_batch(
        self,
        batch: TrajectoryBatch,
        *,
        method: str = "rk4",
        step_size: float | None = None,
        draws: int = 32,
        generator: torch.Generator | None = None,
    ) -> tuple[Ensemble, Tensor, Tensor | None]:
        """:meth:`forecast` from the initial states of ``batch``, at its later times.

        Parameters
        ----------
        batch : TrajectoryBatch
            Trajectories ``(batch, time, *state_shape)`` with an optional mask ``(batch, time)``.
        method, step_size, draws, generator
            As in :meth:`forecast`.

        Returns
        -------
        predictive : Ensemble
            Members ``(members, batch, time - 1, *state_shape)`` (times ``draws`` members
            when calibrated).
        y_true : Tensor, shape (batch, time - 1, *state_shape)
            The observed later states (unobserved entries set to 0).
        mask : Tensor of bool, shape (batch, time - 1), or None
            ``batch.mask[:, 1:]``.
        """
        shape = tuple(cast(HybridDynamics, self.members[0]).state_shape)
        batch = check_batch(batch, self, shape)
        forecast = self.forecast(
            batch.initial_state,
            batch.times,
            method=method,
            step_size=step_size,
            draws=draws,
            generator=generator,
        )
        return Ensemble(forecast.members[:, :, 1:]), observed_or_zero(batch), later_mask(batch)

    def loss(
        self, batch: TrajectoryBatch, *, method: str = "rk4", step_size: float | None = None
    ) -> Tensor:
        """Sum over members of :meth:`HybridDynamics.loss` on ``batch``, shape ``()``."""
        losses = [
            cast(HybridDynamics, member).loss(batch, method=method, step_size=step_size)
            for member in self.members
        ]
        return torch.stack(losses).sum()

    def noise_at(self, lead: Tensor) -> tuple[Tensor, Tensor]:
        """The calibrated member scale ``s`` and kernel scale ``sigma`` at lead times ``lead``.

        Linear interpolation between the calibration lead times.

        Parameters
        ----------
        lead : Tensor, shape (time,)
            Lead times ``t - t_0 >= 0``.

        Returns
        -------
        scale, sigma : Tensor, shape (time, *noise_shape) each
            ``noise_shape`` is ``state_shape`` for vector states and ``(channels, 1, ...)``
            for gridded states (one value per channel).
        """
        if self.noise_std is None or self.noise_lead is None or self.member_scale is None:
            raise ValueError("noise_at needs a calibrated ensemble; call calibrate() first")
        grid = self.noise_lead.to(lead)
        tolerance = 1e-6 * max(1.0, float(grid[-1]))
        if bool((lead < -tolerance).any()) or bool((lead > grid[-1] + tolerance).any()):
            raise ValueError(
                f"times must stay within the calibrated lead times [0, {float(grid[-1]):.6g}] "
                f"after times[0], got lead times up to {float(lead.max()):.6g}; calibrate on "
                "longer trajectories"
            )
        lead = lead.clamp(min=0.0, max=float(grid[-1]))
        upper = torch.searchsorted(grid, lead).clamp(1, len(grid) - 1)
        lower = upper - 1
        width = (grid[upper] - grid[lower]).clamp_min(torch.finfo(grid.dtype).tiny)
        weight = ((lead - grid[lower]) / width).clamp(0.0, 1.0)

        def interpolate(values: Tensor) -> Tensor:
            values = values.to(lead)
            w = weight.reshape(-1, *([1] * (values.ndim - 1)))
            return values[lower] * (1.0 - w) + values[upper] * w

        return interpolate(self.member_scale), interpolate(self.noise_std)

    def calibrate(
        self,
        trajectories: Tensor,
        times: Tensor | Sequence[float],
        *,
        method: str = "rk4",
        step_size: float | None = None,
        kernel_fraction: float = 0.5,
    ) -> Tensor:
        r"""Fit the forecast's spread on held-out trajectories (not used in training).

        With ``mu`` the members' mean rollout from each trajectory's first state, ``v``
        their (biased, ``1/M``) variance and ``e`` the squared error ``(y - mu)^2``, per
        lead time and component (per channel, pooled over the grid, for gridded states),
        the calibrated forecast is the equal-weight mixture of
        ``N(mu + s (X_m - mu), sigma^2)``, whose variance ``s^2 v + sigma^2`` is matched to
        the mean squared error (the Gaussian maximum-likelihood choice):

        .. math::

            \sigma^2 = \max\left(\bar e - \bar v,\ \rho\, \bar e\right), \qquad
            s^2 = \min\left(1,\ (\bar e - \sigma^2) / \bar v\right),

        with ``rho = kernel_fraction``. When the members' spread explains little of the
        error (members that agree, the usual deep-ensemble failure) this adds the missing
        variance as a kernel around each member; when the spread already exceeds the error,
        the members are pulled towards their mean and a kernel of at least
        ``rho`` times the error variance keeps the mixture continuous (a few members alone
        are a poor estimate of central intervals).

        Parameters
        ----------
        trajectories : Tensor, shape (n, time, *state_shape)
            Held-out trajectories (``n >= 2``), rolled out from their first state.
        times : Tensor or sequence of float, shape (time,)
            Their time grid; forecasts may reach lead times up to ``times[-1] - times[0]``.
        method, step_size
            As in :func:`uqdyn.physics.simulate`.
        kernel_fraction : float
            ``rho`` in ``[0, 1]``: the smallest share of the variance given to the kernel.
            Default 0.5.

        Returns
        -------
        Tensor, shape (time, *noise_shape)
            The kernel scale ``sigma`` (stored as ``noise_std``; ``s`` as ``member_scale``,
            the lead times as ``noise_lead``).
        """
        shape = tuple(cast(HybridDynamics, self.members[0]).state_shape)
        if not isinstance(trajectories, Tensor) or not trajectories.is_floating_point():
            raise TypeError(
                "trajectories must be a floating torch.Tensor of shape (n, time, *state_shape), "
                f"got {type(trajectories).__name__}"
            )
        if trajectories.ndim != len(shape) + 2 or tuple(trajectories.shape[2:]) != shape:
            raise ValueError(
                f"trajectories must have shape (n, time, {', '.join(map(str, shape))}), got "
                f"{tuple(trajectories.shape)}"
            )
        if trajectories.shape[0] < 2 or trajectories.shape[1] < 2:
            raise ValueError(
                "trajectories need at least 2 sequences of at least 2 times to calibrate, got "
                f"shape {tuple(trajectories.shape)}"
            )
        if not bool(torch.isfinite(trajectories).all()):
            raise ValueError("trajectories hold non-finite values; expected finite data")
        fraction = as_float(kernel_fraction, "kernel_fraction")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"kernel_fraction={kernel_fraction!r}; expected a float in [0, 1]")
        parameter = next(self.parameters(), None)
        if parameter is not None:  # roll out where the members live
            trajectories = trajectories.to(parameter.device)
        times_t = torch.as_tensor(times, dtype=trajectories.dtype, device=trajectories.device)
        if times_t.ndim != 1 or len(times_t) != trajectories.shape[1]:
            raise ValueError(
                f"times must have one entry per time step of trajectories "
                f"({trajectories.shape[1]}), got shape {tuple(times_t.shape)}"
            )
        paths = self.rollouts(trajectories[:, 0], times_t, method=method, step_size=step_size)
        mean = paths.mean(dim=0)
        reduce = (0,) if len(shape) == 1 else (0, *range(3, 2 + len(shape)))
        error = (trajectories - mean).square().mean(dim=reduce, keepdim=True)[0]
        spread = paths.var(dim=0, unbiased=False).mean(dim=reduce, keepdim=True)[0]
        variance = torch.maximum(error - spread, fraction * error)
        variance[0] = 0.0  # the initial state is known
        tiny = torch.finfo(error.dtype).tiny
        scale = ((error - variance).clamp_min(0.0) / spread.clamp_min(tiny)).clamp(max=1.0)
        scale = torch.where(spread > tiny, scale.sqrt(), torch.ones_like(scale))
        self.noise_lead = (times_t - times_t[0]).detach().clone()
        self.noise_std = variance.sqrt().detach().clone()
        self.member_scale = scale.detach().clone()
        return self.noise_std

    def parameters_of(self, name: str) -> Tensor:
        """One physical parameter (e.g. ``"omega0"``) of every member, shape ``(members, ...)``."""
        values = []
        for member in self.members:
            physics = cast(HybridDynamics, member).physics
            if physics is None or name not in physics.parameter_names:
                raise ValueError(f"name must be a physical parameter of the members, got {name!r}")
            values.append(getattr(physics, name).detach())
        return torch.stack(values)


def fit_hybrid_ensemble(
    make_member: Callable[[], HybridDynamics],
    trajectories: Tensor,
    times: Tensor | Sequence[float],
    *,
    members: int = 5,
    bootstrap: bool = False,
    validation: Tensor | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> tuple[HybridEnsemble, list[AphynityResult]]:
    """Train ``members`` hybrid models with :func:`fit_aphynity`, from different seeds.

    A recipe over :func:`uqdyn.train.fit`: member ``m`` is built by ``make_member()`` under
    ``torch.manual_seed(seed + m)`` (its network initialisation; the caller's RNG state is
    restored afterwards) and trained by :func:`fit_aphynity` (one ``fit`` call) with seed
    ``seed + 1000 m``; with ``bootstrap`` it trains on ``n`` trajectories drawn with
    replacement (a bootstrap resample, Efron 1979). With ``validation`` trajectories (held
    out from training, same time grid) the ensemble is then calibrated on them
    (:meth:`HybridEnsemble.calibrate`), so its forecasts include the error its members'
    spread misses.

    Parameters
    ----------
    make_member : callable
        ``() -> HybridDynamics``, a fresh untrained model per call.
    trajectories : Tensor, shape (n, time, *state_shape)
    times : Tensor or sequence of float, shape (time,)
    members : int
        Ensemble size ``>= 1``. Default 5.
    bootstrap : bool
        Resample the trajectories per member. Default ``False``.
    validation : Tensor, shape (n_val, time, *state_shape), optional
        Held-out trajectories to calibrate the ensemble's noise scale on.
    seed : int
        Base seed.
    **fit_options
        Passed to :func:`fit_aphynity` (``epochs``, ``lr``, ``multiplier_rate``, ...).

    Returns
    -------
    ensemble : HybridEnsemble
    results : list of AphynityResult
        One per member.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum, simulate
    >>> times = torch.linspace(0.0, 2.0, 5)
    >>> data = simulate(DampedPendulum(), torch.tensor([[1.0, 0.0]]), times)
    >>> ensemble, _ = fit_hybrid_ensemble(lambda: HybridDynamics(DampedPendulum(), None),
    ...                                   data, times, members=2, epochs=1)
    >>> len(ensemble)
    2
    """
    if not callable(make_member):
        raise TypeError(f"make_member must be a callable, got {type(make_member).__name__}")
    members = as_int(members, "members", minimum=1)
    seed = as_int(seed, "seed")
    if not isinstance(trajectories, Tensor):
        raise TypeError(f"trajectories must be a Tensor, got {type(trajectories).__name__}")
    models: list[HybridDynamics] = []
    results: list[AphynityResult] = []
    resample = torch.Generator().manual_seed(seed)
    for m in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + m)
            model = make_member()
        if not isinstance(model, HybridDynamics):
            raise TypeError(
                f"make_member() must return a HybridDynamics, got {type(model).__name__}"
            )
        n = trajectories.shape[0]
        indices = torch.randint(n, (n,), generator=resample) if bootstrap else None
        results.append(
            fit_aphynity(
                model, trajectories, times, indices=indices, seed=seed + 1000 * m, **fit_options
            )
        )
        models.append(model)
    ensemble = HybridEnsemble(models)
    if validation is not None:
        ensemble.calibrate(
            validation,
            times,
            method=fit_options.get("method", "rk4"),
            step_size=fit_options.get("step_size"),
        )
    return ensemble, results
