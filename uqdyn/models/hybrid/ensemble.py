"""Deep ensembles of hybrid models: an :class:`~uqdyn.predictive.Ensemble` of forecasts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from uqdyn.physics import simulate
from uqdyn.predictive import Ensemble

from .aphynity import AphynityResult, fit_aphynity
from .augmented import HybridDynamics

__all__ = ["HybridEnsemble", "fit_hybrid_ensemble"]


class HybridEnsemble(nn.Module):
    """A deep ensemble of hybrid models (Lakshminarayanan et al. 2017).

    Each member is a :class:`HybridDynamics` trained from its own initialisation (and
    optionally its own bootstrap resample of the trajectories); the forecast is the
    empirical distribution of the members' rollouts, an :class:`~uqdyn.predictive.Ensemble`
    with members first. The spread reflects the disagreement of the members (epistemic
    uncertainty), including on the physical parameters, see :meth:`parameters_of`.

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

    def __len__(self) -> int:
        return len(self.members)

    def forecast(
        self,
        state0: Tensor,
        times: Tensor | Sequence[float],
        *,
        method: str = "rk4",
        step_size: float | None = None,
    ) -> Ensemble:
        """Roll every member out from ``state0``.

        Parameters
        ----------
        state0 : Tensor, shape (batch, *state_shape)
        times : Tensor or sequence of float, shape (time,)
        method, step_size
            As in :func:`uqdyn.physics.simulate`.

        Returns
        -------
        Ensemble
            Members of shape ``(members, batch, time, *state_shape)``.
        """
        with torch.no_grad():
            paths = [
                simulate(member, state0, times, method, step_size=step_size)
                for member in self.members
            ]
        return Ensemble(torch.stack(paths))

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
    seed: int = 0,
    **fit_options: Any,
) -> tuple[HybridEnsemble, list[AphynityResult]]:
    """Train ``members`` hybrid models with :func:`fit_aphynity`, from different seeds.

    Member ``m`` is built by ``make_member()`` under ``torch.manual_seed(seed + m)`` (its
    network initialisation; the caller's RNG state is restored afterwards) and trained with
    seed ``seed + 1000 m``; with ``bootstrap`` it trains on ``n`` trajectories drawn with
    replacement (a bootstrap resample, Efron 1979).

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
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be a positive int, got {members!r}")
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
    return HybridEnsemble(models), results
