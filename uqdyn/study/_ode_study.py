"""Forecast studies of ODE systems (pendulum, Lorenz-96): shared data, models and forecasts.

Each case is one trajectory: ``context_steps`` noisy observations of the full state, then
the noisy observations of the next ``lead_steps`` states to forecast.

Models:

* ``cnp``: conditional neural process, ``x = t`` (relative to the last context time),
  ``y`` the state, trained on the training trajectories;
* ``gp``: per case, an exact GP in time with independent outputs
  (:class:`~uqdyn.models.gp.ContextGP`) fitted to the context and extrapolated;
* ``physics_ensemble``: the true equations with particles of the physical parameters drawn
  from the prior and initial states perturbed by the observation noise, weighted by their
  fit to the context (tempered), resampled, plus observation noise;
* ``hybrid``: a deep ensemble of APHYNITY hybrid models (physics with learnable parameters
  plus an MLP) trained on the training trajectories, rolled out from the last context
  observation; the predictive is the equal mixture of Normals with the observation-noise
  standard deviation around the members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn.data import Task, dataset_to_tensor, simulate_dataset
from uqdyn.models.gp import ContextGP
from uqdyn.physics import Dynamics, simulate
from uqdyn.predictive import Ensemble, GaussianMixture, Normal

from ._particles import log_gaussian_fit, noisy_ensemble, tempered_resample
from .base import Forecasts, StudyData, forecast_models, generator
from .config import StudyConfig
from .recipes import RECIPES, predict_cnp, vector_points

__all__ = ["OdeSystem", "run_ode_study"]


@dataclass
class OdeSystem:
    """How to simulate and model one ODE system.

    Attributes
    ----------
    system:
        Name for :func:`uqdyn.data.simulate_dataset`.
    build:
        ``build(**params) -> Dynamics`` with per-sample parameter tensors.
    ranges:
        ``{parameter: (low, high)}`` prior ranges from the configuration.
    system_kwargs:
        Fixed constructor arguments.
    component_names:
        Labels of the state components.
    title, variable, long_name:
        For the report.
    """

    system: str
    build: Callable[..., Dynamics]
    ranges: dict[str, tuple[float, float]]
    system_kwargs: dict[str, Any]
    title: str
    variable: str
    long_name: str
    component_names: tuple[str, ...] | None = None


def run_ode_study(cfg: StudyConfig, device: torch.device, spec: OdeSystem) -> StudyData:
    """Simulate, fit ``cfg.models`` and forecast the validation and test cases."""
    d = cfg.section("data")
    dt = float(d["dt"])
    k, lead, spin = int(d["context_steps"]), int(d["lead_steps"]), int(d["spinup_steps"])
    n_train, n_valid, n_test = int(d["n_train"]), int(d["n_valid"]), int(d["n_test"])
    noise = float(d["noise_std"])
    if k < 2 or lead < 1 or spin < 0:
        raise ValueError(
            f"data.context_steps={k}, data.lead_steps={lead}, data.spinup_steps={spin}; "
            "expected >= 2, >= 1, >= 0"
        )
    n_total = n_train + n_valid + n_test
    times_full = torch.arange(spin + k + lead, dtype=torch.float64) * dt
    ds = simulate_dataset(
        spec.system,
        n_total,
        times_full,
        spec.ranges,
        system_kwargs=spec.system_kwargs,
        seed=cfg.seed,
        device=device,
    )
    clean = dataset_to_tensor(ds, ["state"], dtype=torch.float32)[:, spin:]  # (N, T, D)
    obs = clean + noise * torch.randn(clean.shape, generator=generator(cfg.seed, 1))
    times = (times_full[spin:] - times_full[spin + k - 1]).float()  # 0 at the last context
    train = obs[:n_train]
    valid, test = obs[n_train : n_train + n_valid], obs[n_train + n_valid :]

    models: dict[str, Callable[[], Forecasts]] = {
        "cnp": lambda: _cnp(cfg, clean[:n_train], valid, test, times, k, noise, device),
        "gp": lambda: _gp(cfg, valid, test, times, k),
        "physics_ensemble": lambda: _physics(cfg, spec, valid, test, times, k, noise, device),
        "hybrid": lambda: _hybrid(cfg, spec, train, valid, test, times, k, noise, device),
    }
    forecasts = forecast_models(
        cfg.models,
        models,
        cases=f"{n_train} training trajectories, {n_valid} validation + {n_test} test cases",
        progress=cfg.progress,
    )
    dim = int(obs.shape[-1])
    return StudyData(
        obs_valid=valid[:, k:],
        obs_test=test[:, k:],
        dims=("case", "lead_time", "component"),
        coords={"lead_time": times[k:].double().numpy(), "component": np.arange(dim)},
        forecasts=forecasts,
        kind="vector",
        variable=spec.variable,
        long_name=spec.long_name,
        units="1",
        title=spec.title,
        context_times=times[:k].double().numpy(),
        context_test=test[:, :k],
        component_names=spec.component_names,
        summary={
            "state dimension": dim,
            "steps": f"{k} context + {lead} lead, dt = {dt}"
            + (f", after {spin} spin-up steps" if spin else ""),
            "cases": f"{n_train} train / {n_valid} validation / {n_test} test",
            "observation noise std": noise,
            **{f"{p} range": str(list(r)) for p, r in spec.ranges.items()},
        },
    )


def _cnp(
    cfg: StudyConfig,
    clean_train: Tensor,
    valid: Tensor,
    test: Tensor,
    times: Tensor,
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.cnp")
    batch = int(s["batch_size"])
    dim = int(clean_train.shape[-1])

    def sample(g: torch.Generator) -> Task:
        idx = torch.randint(clean_train.shape[0], (batch,), generator=g)
        traj = clean_train[idx]
        traj = traj + noise * torch.randn(traj.shape, generator=g)
        x, y = vector_points(traj, times)
        ones_c = torch.ones(batch, k, dtype=torch.bool)
        ones_t = torch.ones(batch, x.shape[1] - k, dtype=torch.bool)
        return Task(x[:, :k], y[:, :k], ones_c, x[:, k:], y[:, k:], ones_t)

    model = RECIPES["cnp"].fit(
        s, sample, seed=cfg.seed + 11, device=device, progress=cfg.progress, x_dim=1, y_dim=dim
    )

    def forecast(cases: Tensor) -> Normal:
        x, y = vector_points(cases, times)
        return predict_cnp(model, x[:, :k], y[:, :k], x[:, k:])

    desc = f"conditional neural process (width {s['width']}, {s['steps']} Adam steps)"
    return forecast(valid), forecast(test), desc


def _gp(
    cfg: StudyConfig, valid: Tensor, test: Tensor, times: Tensor, k: int
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.gp")
    dim = int(valid.shape[-1])
    gp = ContextGP(1, dim, kernel=str(s["kernel"]), steps=int(s["steps"]), lr=float(s["lr"]))

    def forecast(cases: Tensor) -> Normal:
        x, y = vector_points(cases.double(), times.double())
        pred = gp(x[:, :k], y[:, :k], x[:, k:])
        return Normal(pred.mean.float(), pred.stddev.float())

    desc = (
        f"exact GP in time per case and component ({s['kernel']} kernel, {s['steps']} Adam "
        "steps on the marginal likelihood of the context)"
    )
    return forecast(valid), forecast(test), desc


def _physics(
    cfg: StudyConfig,
    spec: OdeSystem,
    valid: Tensor,
    test: Tensor,
    times: Tensor,
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[Ensemble, Ensemble, str]:
    s = cfg.section("model.physics_ensemble")
    n_part, members = int(s["particles"]), int(s["members"])

    def forecast(cases: Tensor, offset: int) -> Ensemble:
        g = generator(cfg.seed, offset)
        b, _, dim = cases.shape
        params = {
            name: lo + (hi - lo) * torch.rand(b * n_part, generator=g)
            for name, (lo, hi) in spec.ranges.items()
        }
        system = spec.build(**spec.system_kwargs, **params).to(device)
        state0 = cases[:, 0].repeat_interleave(n_part, 0)
        state0 = state0 + noise * torch.randn(state0.shape, generator=g)
        with torch.no_grad():
            traj = simulate(system, state0.to(device), (times - times[0]).to(device)).cpu()
        traj = traj.reshape(b, n_part, *traj.shape[1:])  # (B, P, T, D)
        loglik = log_gaussian_fit(traj[:, :, :k], cases[:, None, :k], noise, 2)
        idx, _ = tempered_resample(
            loglik, members, ess_fraction=float(s["ess_fraction"]), generator=g
        )
        chosen = torch.stack([traj[i, idx[i], k:] for i in range(b)], dim=1)  # (M, B, L, D)
        return noisy_ensemble(chosen, noise, g)

    desc = (
        f"true equations with {n_part} particles per case of the parameters "
        f"({', '.join(spec.ranges)}) from the prior and initial states perturbed by the "
        f"noise, weighted by the context (tempered to ESS >= {s['ess_fraction']} P), "
        f"{members} resampled members plus observation noise"
    )
    return forecast(valid, 21), forecast(test, 22), desc


def _hybrid(
    cfg: StudyConfig,
    spec: OdeSystem,
    train: Tensor,
    valid: Tensor,
    test: Tensor,
    times: Tensor,
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[GaussianMixture, GaussianMixture, str]:
    s = cfg.section("model.hybrid")
    dim = int(train.shape[-1])
    nominal = {name: torch.tensor((lo + hi) / 2.0) for name, (lo, hi) in spec.ranges.items()}

    def physics() -> Dynamics:
        return spec.build(**spec.system_kwargs, **nominal)

    window = times[k - 1 :] - times[k - 1]
    ensemble = RECIPES["hybrid"].fit(
        s,
        (train[:, k - 1 :], window),
        seed=cfg.seed + 31,
        device=device,
        progress=cfg.progress,
        physics=physics,
        dim=dim,
    )

    def forecast(cases: Tensor) -> GaussianMixture:
        members = ensemble.forecast(cases[:, k - 1], window).members[:, :, 1:]
        weights = torch.full((members.shape[0],), 1.0 / members.shape[0])
        return GaussianMixture(weights, members, torch.full_like(members, noise))

    desc = (
        f"deep ensemble of {s['members']} APHYNITY hybrid models (physics with learnable "
        f"parameters + MLP of width {s['hidden']}), {s['epochs']} x {s['steps_per_epoch']} "
        "steps on the training lead windows, rolled out from the last context observation; "
        "predictive: equal mixture of Normals (observation noise) around the members"
    )
    return forecast(valid), forecast(test), desc
