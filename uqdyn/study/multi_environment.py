"""Multi-environment study: learn one system under several parameter settings, adapt to new
settings from one trajectory, and forecast them with calibrated uncertainty.

The protocol is CoDA's (:mod:`uqdyn.data.multi_environment`): training environments with a
few trajectories each, adaptation environments seen through one trajectory, test
trajectories per environment. On top of it, *calibration environments* (new parameter
settings disjoint from the adaptation ones, also seen through one trajectory) hold the
validation forecasts that recalibrate the spread, so that the adaptation environments are
only ever forecast.

Models (each trained ``members`` times with different seeds: a deep ensemble):

* ``coda``: :class:`~uqdyn.models.multienv.CoDA` (its l1 or l2 hypernetwork penalty); a new
  environment fits its context only; every member adds ``laplace_draws`` rollouts of
  contexts drawn from the context's Laplace posterior;
* ``leads``: :class:`~uqdyn.models.multienv.LEADS`, a new environment part per environment;
* ``one_for_all``: one network for all environments, not adapted;
* ``fine_tune``: the same network fine-tuned (every weight) on the new trajectory;
* ``one_per_env``: a network per environment, a new one trained on the new trajectory.

The forecast of a model is the equal mixture of Normals around its rollouts (members and
draws), each with the model's in-domain rollout error as its standard deviation
(:meth:`~uqdyn.models.multienv.MultiEnvironmentModel.calibrate_noise`).
:func:`run_environments` runs the protocol and returns the forecasts and the mean squared
errors per seed; :func:`run_multi_environment` is the ``uqdyn study multi-environment``
entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uqdyn.data.multi_environment import (
    GRAY_SCOTT_CODA,
    LOTKA_VOLTERRA_CODA,
    EnvironmentProtocol,
    _grid,
    coda_protocol_datasets,
)
from uqdyn.models.hybrid import ConvAugmentation, MLPAugmentation
from uqdyn.models.multienv import (
    LEADS,
    CoDA,
    EnvironmentBatch,
    MultiEnvironmentModel,
    OneForAll,
    OnePerEnv,
    context_ensemble,
    context_laplace,
    environment_batch,
    fit_parameter_map,
)
from uqdyn.predictive import GaussianMixture
from uqdyn.train import fit

from ._interrupt import checkpoint
from .base import StudyData, forecast_models
from .config import StudyConfig

__all__ = [
    "SystemSetup",
    "SYSTEM_SETUPS",
    "EnvironmentResults",
    "run_environments",
    "run_multi_environment",
    "MODEL_NAMES",
]

#: The models of the study, in report order.
MODEL_NAMES = ("coda", "leads", "one_for_all", "fine_tune", "one_per_env")


@dataclass(frozen=True)
class SystemSetup:
    """One system of the study: its protocol, calibration environments and network.

    Attributes
    ----------
    protocol : EnvironmentProtocol
    calib_params : list of dict
        The calibration environments (new settings, not the adaptation ones).
    network : callable (hidden) -> factory () -> nn.Module
        The vector-field network of every model.
    model_step : float
        The rk4 step of the learned models (the output spacing: CoDA's setting).
    channels : tuple of str
        Names of the state channels (gridded systems) or components (ODEs).
    """

    protocol: EnvironmentProtocol
    calib_params: list[dict[str, float]]
    network: Callable[[int], Callable[[], nn.Module]]
    model_step: float
    channels: tuple[str, ...]


def _mlp(dim: int) -> Callable[[int], Callable[[], nn.Module]]:
    return lambda hidden: lambda: MLPAugmentation(dim, hidden=hidden)


class _Scaled(nn.Module):
    """``factor * net(x)``: puts a network's output on the scale of the tendencies."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net = net
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.factor * self.net(x)


def _conv(channels: int, factor: float) -> Callable[[int], Callable[[], nn.Module]]:
    """A ConvNet whose output is scaled by ``factor`` (CoDA scales Gray-Scott's by 5e-4)."""
    return lambda hidden: lambda: _Scaled(ConvAugmentation(channels, hidden=hidden), factor)


#: The systems of the study. Lotka-Volterra's calibration environments are the four
#: settings ``(beta, delta)`` with one of them 0.875 and the other 0.625 or 1.125; Gray-Scott's
#: are ``F in {0.0315, 0.0375}``, ``k in {0.0585, 0.0615}``. Gray-Scott's network is a
#: ConvNet with its output scaled by 5e-4 (as CoDA does).
SYSTEM_SETUPS: dict[str, SystemSetup] = {
    "lotka_volterra": SystemSetup(
        LOTKA_VOLTERRA_CODA,
        [*_grid(beta=(0.875,), delta=(0.625, 1.125)), *_grid(beta=(0.625, 1.125), delta=(0.875,))],
        _mlp(2),
        0.5,
        ("prey", "predator"),
    ),
    "gray_scott": SystemSetup(
        GRAY_SCOTT_CODA,
        _grid(feed=(0.0315, 0.0375), kill=(0.0585, 0.0615)),
        _conv(2, 5e-4),
        40.0,
        ("u", "v"),
    ),
}


@dataclass
class Settings:
    """Training and forecasting settings of :func:`run_environments`."""

    members: int = 3
    steps: int = 2000
    lr: float = 3e-3
    adapt_steps: int = 300
    adapt_lr: float = 2e-2
    adapt_lr_network: float = 3e-3
    hidden: int = 64
    context_dim: int = 2
    regularization: str = "l1"
    laplace_draws: int = 8
    n_test: int | None = None
    n_train: int | None = None


@dataclass
class EnvironmentResults:
    """What :func:`run_environments` returns for one system.

    Attributes
    ----------
    obs_in, obs_calib, obs_adapt : Tensor
        Test trajectories' later states: in-domain ``(cases, time - 1, *state)``, of the
        calibration and of the adaptation environments.
    forecasts_in, forecasts_calib, forecasts_adapt : dict of str to GaussianMixture
        Per model, the mixture forecasts of the in-domain test cases (the seeds' rollouts),
        of the calibration and of the adaptation cases.
    mse_in, mse_adapt : dict of str to list of float
        Per model, the mean squared error of each seed's (member's) rollouts: in-domain
        (training environments' test trajectories) and after adaptation.
    param_error : list of dict
        Per CoDA seed, the true and estimated parameters of each adaptation environment
        from the affine map fitted on the training environments' contexts.
    adapt_seconds : dict of str to list of float
        Seconds per adapted environment, per model.
    times : Tensor, shape (time,)
    case_env : Tensor of int64
        The adaptation environment of each adaptation case.
    """

    obs_in: Tensor
    obs_calib: Tensor
    obs_adapt: Tensor
    forecasts_in: dict[str, GaussianMixture] = field(default_factory=dict)
    forecasts_calib: dict[str, GaussianMixture] = field(default_factory=dict)
    forecasts_adapt: dict[str, GaussianMixture] = field(default_factory=dict)
    mse_in: dict[str, list[float]] = field(default_factory=dict)
    mse_adapt: dict[str, list[float]] = field(default_factory=dict)
    param_error: list[dict[str, Any]] = field(default_factory=list)
    adapt_seconds: dict[str, list[float]] = field(default_factory=dict)
    times: Tensor = field(default_factory=lambda: torch.zeros(0))
    case_env: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))


def _per_env(ds: Any) -> list[EnvironmentBatch]:
    return [environment_batch(ds, envs=[e]) for e in range(ds.sizes["env"])]


def _build(name: str, setup: SystemSetup, settings: Settings, n_envs: int, seed: int) -> Any:
    network = setup.network(settings.hidden)
    state_shape = _state_shape(setup)
    common: dict[str, Any] = {"method": "rk4", "step_size": setup.model_step, "seed": seed}
    if name == "coda":
        return CoDA(
            network,
            n_envs,
            state_shape,
            context_dim=settings.context_dim,
            regularization=settings.regularization,
            **common,
        )
    if name == "leads":
        return LEADS(network, n_envs, state_shape, **common)
    if name in ("one_for_all", "fine_tune"):
        return OneForAll(network, n_envs, state_shape, **common)
    if name == "one_per_env":
        return OnePerEnv(network, n_envs, state_shape, **common)
    raise ValueError(f"model {name!r} is unknown; expected one of {MODEL_NAMES}")


def _state_shape(setup: SystemSetup) -> tuple[int, ...]:
    size = setup.protocol.fixed.get("size")
    if size is None:
        return (len(setup.channels),)
    return (len(setup.channels), *tuple(size))


def _datasets(setup: SystemSetup, settings: Settings, seed: int) -> dict[str, Any]:
    return coda_protocol_datasets(
        setup.protocol,
        seed=seed,
        n_train=settings.n_train,
        n_test=settings.n_test,
        calib_params=setup.calib_params,
    )


def _mse(pred: Tensor, obs: Tensor) -> float:
    return float((pred - obs).double().pow(2).mean())


def _adapted_rollouts(
    name: str,
    model: MultiEnvironmentModel,
    fit_batches: Sequence[EnvironmentBatch],
    test_batches: Sequence[EnvironmentBatch],
    settings: Settings,
    seed: int,
    seconds: list[float],
) -> tuple[list[Tensor], list[tuple[CoDA, Any, EnvironmentBatch]]]:
    """Per new environment: the rollouts of its test trajectories ``(n, time - 1, *state)``
    (after adaptation, except ``one_for_all``), and CoDA's posteriors."""
    import time

    outs, posteriors = [], []
    for fit_batch, test_batch in zip(fit_batches, test_batches, strict=True):
        checkpoint()
        if name == "one_for_all":
            env = 0
        else:
            start = time.perf_counter()
            lr = settings.adapt_lr if name == "coda" else settings.adapt_lr_network
            env = model.adapt(fit_batch, steps=settings.adapt_steps, lr=lr, seed=seed)
            seconds.append(time.perf_counter() - start)
        labels = torch.full((test_batch.trajectories.shape[0],), env, dtype=torch.int64)
        with torch.no_grad():
            outs.append(model.rollout(test_batch.initial_state, test_batch.times, labels)[:, 1:])
        if isinstance(model, CoDA):
            posteriors.append((model, context_laplace(model, env, fit_batch), test_batch))
    return outs, posteriors


def run_environments(
    system: str,
    *,
    models: Sequence[str] = MODEL_NAMES,
    settings: Settings | None = None,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> EnvironmentResults:
    """Run the multi-environment protocol of ``system`` for ``models``.

    Every model is trained ``settings.members`` times (seeds ``seed * 1000 + m``) with
    :func:`uqdyn.train.fit` on all training trajectories at once (Adam, full batch), then
    adapted to each calibration and adaptation environment from its one trajectory.

    Parameters
    ----------
    system : str
        A key of :data:`SYSTEM_SETUPS`.
    models : sequence of str
        Names from :data:`MODEL_NAMES`.
    settings : Settings, optional
    seed : int
        Seeds the data (:func:`~uqdyn.data.coda_protocol_datasets`) and the models.
    progress : bool
        Print a line per trained model.
    device : torch.device or str
        Where to train.

    Returns
    -------
    EnvironmentResults
    """
    if system not in SYSTEM_SETUPS:
        raise ValueError(f"system={system!r}; expected one of {sorted(SYSTEM_SETUPS)}")
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"models {unknown} are unknown; expected names from {MODEL_NAMES}")
    settings = Settings() if settings is None else settings
    setup = SYSTEM_SETUPS[system]
    data = _datasets(setup, settings, seed)
    train = environment_batch(data["train"])
    test = environment_batch(data["test"])
    adapt_fit, adapt_test = _per_env(data["adapt"]), _per_env(data["adapt_test"])
    calib_fit, calib_test = _per_env(data["calib"]), _per_env(data["calib_test"])
    n_envs = data["train"].sizes["env"]
    param_names = list(setup.protocol.train_params[0])
    true_train = torch.tensor([[p[n] for n in param_names] for p in setup.protocol.train_params])
    true_adapt = [[p[n] for n in param_names] for p in setup.protocol.adapt_params]
    out = EnvironmentResults(
        obs_in=test.trajectories[:, 1:],
        obs_calib=torch.cat([b.trajectories[:, 1:] for b in calib_test]),
        obs_adapt=torch.cat([b.trajectories[:, 1:] for b in adapt_test]),
        times=train.times,
        case_env=torch.cat(
            [torch.full((b.trajectories.shape[0],), e) for e, b in enumerate(adapt_test)]
        ),
    )
    shared: dict[int, MultiEnvironmentModel] = {}  # one_for_all's networks, for fine_tune
    for name in models:
        means_in: list[Tensor] = []
        scales_in: list[float] = []
        means_calib: list[Tensor] = []
        means_adapt: list[Tensor] = []
        scales: list[float] = []
        out.mse_in[name], out.mse_adapt[name], out.adapt_seconds[name] = [], [], []
        for m in range(settings.members):
            checkpoint()
            member_seed = seed * 1000 + m
            model = shared.pop(m, None) if name == "fine_tune" else None
            if model is None:
                model = _build(name, setup, settings, n_envs, member_seed).to(device)
                fit(
                    model,
                    [train],
                    steps=settings.steps,
                    lr=settings.lr,
                    seed=member_seed,
                    device=device,
                    progress=False,
                )
                if name == "one_for_all" and "fine_tune" in models:
                    shared[m] = model
            model = model.cpu()
            with torch.no_grad():
                rollout_in = model.rollout(test.initial_state, test.times, test.env)[:, 1:]
            out.mse_in[name].append(_mse(rollout_in, out.obs_in))
            scales.append(model.calibrate_noise(train))
            means_in.append(rollout_in)
            scales_in.append(scales[-1])
            calib_out, calib_post = _adapted_rollouts(
                name, model, calib_fit, calib_test, settings, member_seed, out.adapt_seconds[name]
            )
            adapt_out, adapt_post = _adapted_rollouts(
                name, model, adapt_fit, adapt_test, settings, member_seed, out.adapt_seconds[name]
            )
            out.mse_adapt[name].append(_mse(torch.cat(adapt_out), out.obs_adapt))
            members_calib = [torch.cat(calib_out)]
            members_adapt = [torch.cat(adapt_out)]
            if isinstance(model, CoDA) and settings.laplace_draws > 0:
                for posts, target in ((calib_post, members_calib), (adapt_post, members_adapt)):
                    draws = [
                        context_ensemble(
                            coda, post, batch.initial_state, batch.times,
                            members=settings.laplace_draws, seed=member_seed,
                        ).members
                        for coda, post, batch in posts
                    ]  # fmt: skip
                    target.extend(torch.cat(draws, dim=1).unbind(0))
            if isinstance(model, CoDA):
                contexts = model.contexts.detach()
                pmap = fit_parameter_map(contexts[:n_envs], true_train, param_names)
                start = n_envs + len(calib_fit)
                estimated = pmap(contexts[start : start + len(adapt_fit)]).tolist()
                out.param_error.append(
                    {"seed": member_seed, "names": param_names, "true": true_adapt,
                     "estimated": estimated}
                )  # fmt: skip
            means_calib.extend(members_calib)
            means_adapt.extend(members_adapt)
            scales.extend([scales[-1]] * (len(members_calib) - 1))
            if progress:
                print(
                    f"{system} {name} seed {member_seed}: in-domain MSE "
                    f"{out.mse_in[name][-1]:.3g}, adaptation MSE {out.mse_adapt[name][-1]:.3g}",
                    flush=True,
                )
        out.forecasts_in[name] = _mixture(means_in, scales_in)
        out.forecasts_calib[name] = _mixture(means_calib, scales)
        out.forecasts_adapt[name] = _mixture(means_adapt, scales)
    return out


def _mixture(means: list[Tensor], scales: list[float]) -> GaussianMixture:
    loc = torch.stack(means)
    scale = torch.tensor(scales, dtype=loc.dtype).view(-1, *([1] * (loc.dim() - 1)))
    weights = torch.full((loc.shape[0],), 1.0 / loc.shape[0], dtype=loc.dtype)
    return GaussianMixture(weights, loc, scale.expand_as(loc).clone())


def parameter_rmse(entries: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """Root mean squared error of the estimated parameters, per parameter, per seed.

    Returns
    -------
    names, array of shape (seeds, n_params)
    """
    if not entries:
        return [], np.zeros((0, 0))
    names = list(entries[0]["names"])
    rows = []
    for e in entries:
        err = np.asarray(e["estimated"]) - np.asarray(e["true"])
        rows.append(np.sqrt((err**2).mean(axis=0)))
    return names, np.asarray(rows)


def _settings(cfg: StudyConfig) -> Settings:
    t = cfg.section("training")
    d = cfg.section("data")
    return Settings(
        members=int(t["members"]),
        steps=int(t["steps"]),
        lr=float(t["lr"]),
        adapt_steps=int(t["adapt_steps"]),
        adapt_lr=float(t["adapt_lr"]),
        adapt_lr_network=float(t["adapt_lr_network"]),
        hidden=int(t["hidden"]),
        context_dim=int(cfg.section("model.coda")["context_dim"]),
        regularization=str(cfg.section("model.coda")["regularization"]),
        laplace_draws=int(cfg.section("model.coda")["laplace_draws"]),
        n_test=int(d["n_test"]),
    )


def _flat_fields(x: Tensor, setup: SystemSetup) -> Tensor:
    """Gridded states ``(..., C, H, W)`` with the channels stacked along y: ``(..., C H, W)``."""
    if len(_state_shape(setup)) == 1:
        return x
    return x.flatten(-3, -2)


def _flat_mixture(mixture: GaussianMixture, setup: SystemSetup) -> GaussianMixture:
    weights = mixture.weights.reshape(mixture.weights.shape[0], -1)[:, 0]
    loc, scale = _flat_fields(mixture.loc, setup), _flat_fields(mixture.scale, setup)
    return GaussianMixture(weights, loc, scale)


def run_multi_environment(cfg: StudyConfig, device: torch.device) -> StudyData:
    """The ``multi-environment`` study: the adaptation environments' test trajectories are
    the test cases, the calibration environments' the validation cases."""
    d = cfg.section("data")
    system = str(d["system"])
    if system not in SYSTEM_SETUPS:
        raise ValueError(f"data.system={system!r}; expected one of {sorted(SYSTEM_SETUPS)}")
    setup = SYSTEM_SETUPS[system]
    settings = _settings(cfg)
    holder: dict[str, EnvironmentResults] = {}

    def results() -> EnvironmentResults:
        if "r" not in holder:
            holder["r"] = run_environments(
                system,
                models=cfg.models,
                settings=settings,
                seed=cfg.seed,
                progress=cfg.progress,
                device=device,
            )
        return holder["r"]

    def forecasts_of(name: str) -> Callable[[], tuple[Any, Any, str]]:
        def make() -> tuple[Any, Any, str]:
            r = results()
            calib, adapt = r.forecasts_calib[name], r.forecasts_adapt[name]
            if len(_state_shape(setup)) > 1:
                calib, adapt = _flat_mixture(calib, setup), _flat_mixture(adapt, setup)
            return calib, adapt, _DESCRIPTIONS[name].format(**vars(settings))

        return make

    forecasts = forecast_models(
        cfg.models,
        {name: forecasts_of(name) for name in cfg.models},
        cases=f"{system}: {len(setup.protocol.train_params)} training environments",
        progress=cfg.progress,
    )
    r = results()
    times = r.times[1:].double().numpy()
    summary: dict[str, Any] = {
        "system": f"{system} ({setup.protocol.notes})",
        "training environments": _describe(setup.protocol.train_params),
        "adaptation environments (test cases)": _describe(setup.protocol.adapt_params),
        "calibration environments (validation cases)": _describe(setup.calib_params),
        "trajectories": f"{settings.n_train or setup.protocol.n_train} per training "
        f"environment, {setup.protocol.n_adapt} per new environment, "
        f"{settings.n_test} test per environment",
    }
    for name in cfg.models:
        summary[f"{name} MSE in-domain / adaptation (mean over {settings.members} seeds)"] = (
            f"{np.mean(r.mse_in[name]):.3g} / {np.mean(r.mse_adapt[name]):.3g}"
        )
    names, rmse = parameter_rmse(r.param_error)
    if names:
        summary["CoDA parameter RMSE on the adaptation environments"] = ", ".join(
            f"{n} {v:.3g}" for n, v in zip(names, rmse.mean(0), strict=True)
        )
    obs_valid = _flat_fields(r.obs_calib, setup)
    obs_test = _flat_fields(r.obs_adapt, setup)
    if len(_state_shape(setup)) == 1:
        dims: tuple[str, ...] = ("case", "lead_time", "component")
        coords = {"lead_time": times, "component": np.arange(obs_test.shape[-1])}
        kind = "vector"
    else:
        dims = ("case", "lead_time", "y", "x")
        coords = {
            "lead_time": times,
            "y": np.arange(obs_test.shape[-2], dtype=np.float64),
            "x": np.arange(obs_test.shape[-1], dtype=np.float64),
        }
        kind = "field"
        summary["field layout"] = "channels stacked along y: u on top, v below"
    return StudyData(
        obs_valid=obs_valid,
        obs_test=obs_test,
        dims=dims,
        coords=coords,
        forecasts=forecasts,
        kind=kind,
        variable="state",
        long_name=f"{system} state in a new environment",
        title=f"Generalising across environments: {system}, adapted from one trajectory",
        component_names=setup.channels if kind == "vector" else None,
        summary=summary,
        references=["one_for_all"] if "one_for_all" in cfg.models else [],
    )


def _describe(params: Sequence[dict[str, float]]) -> str:
    return "; ".join(", ".join(f"{k}={v:g}" for k, v in p.items()) for p in params)


_DESCRIPTIONS = {
    "coda": "CoDA ({regularization} hypernetwork penalty, context dim {context_dim}), "
    "{members} seeds, a new environment fits its context only ({adapt_steps} Adam steps); "
    "each seed adds {laplace_draws} rollouts of Laplace-posterior contexts",
    "leads": "LEADS (shared + environment networks), {members} seeds, a new environment "
    "part fitted in {adapt_steps} Adam steps (learning rate {adapt_lr_network})",
    "one_for_all": "one network for all environments, {members} seeds, not adapted",
    "fine_tune": "the one-for-all network fine-tuned on the new trajectory "
    "({adapt_steps} Adam steps), {members} seeds",
    "one_per_env": "a network per environment, a new one trained on the new trajectory "
    "({adapt_steps} Adam steps), {members} seeds",
}
