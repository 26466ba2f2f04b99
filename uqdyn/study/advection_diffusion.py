"""Advection-diffusion study: forecast a 2D tracer field from a few noisy frames.

Data: tracer fields on a periodic unit square, advected by a uniform velocity and diffused,
both drawn per trajectory from the configured ranges; frames every ``dt`` observed with
Gaussian noise. Each case gives ``context_frames`` noisy frames and asks for the noisy
observations of the next ``lead_frames`` frames at every grid point.

Models:

* ``convcnp``: a convolutional conditional neural process on the grid
  (:class:`~uqdyn.models.neural_process.ConvCNP`): the context frames are its input channels
  (each with its density channel), the lead frames its output channels; circular padding (the
  domain is periodic), so it is translation equivariant like the physics; trained on the
  training trajectories with fresh observation noise in every batch;
* ``climatology``: the reference forecast that knows nothing of the case: per lead time and
  pixel (``pooling = "pixel"``; ``"domain"`` pools the pixels, the fields being statistically
  homogeneous on the periodic domain), a Gaussian with the mean and standard deviation of the
  observed training trajectories at that lead;
* ``cnp``: a conditional neural process on pixels, ``x = (t, y, x)``, trained on tasks cut
  from the training trajectories (random context pixels of the context frames, random pixels
  of the lead frames as targets). An honest baseline: its mean-pooled representation has no
  notion of where a feature is, so it cannot carry the tracer along; expect a blurred field;
* ``gp``: per case, a Kronecker-structured exact GP (:class:`~uqdyn.models.gp.GridGP`) on the
  (time, y, x) grid of the context frames, extrapolated to the lead times;
* ``physics_ensemble``: the advection-diffusion solver started from the first context frame
  with particles of (velocity, diffusion) drawn from the prior, weighted by their fit to the
  later context frames (tempered), resampled into an ensemble, plus observation noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from uqdyn.data import Task, dataset_to_tensor, simulate_dataset
from uqdyn.models.gp import GridGP
from uqdyn.models.neural_process import GridTask
from uqdyn.physics import AdvectionDiffusion, simulate
from uqdyn.predictive import Ensemble, Normal

from ._particles import log_gaussian_fit, noisy_ensemble, stack_normals, tempered_resample
from .base import Forecasts, StudyData, each, forecast_models, generator
from .config import StudyConfig
from .recipes import RECIPES, field_points, predict_cnp, predict_convcnp

__all__ = ["run_advection_diffusion"]


def run_advection_diffusion(cfg: StudyConfig, device: torch.device) -> StudyData:
    """Simulate the data, fit ``cfg.models`` and forecast the validation and test cases."""
    d = cfg.section("data")
    size, dt = int(d["size"]), float(d["dt"])
    k, lead = int(d["context_frames"]), int(d["lead_frames"])
    n_train, n_valid, n_test = int(d["n_train"]), int(d["n_valid"]), int(d["n_test"])
    noise = float(d["noise_std"])
    if k < 2 or lead < 1:
        raise ValueError(f"data.context_frames={k}, data.lead_frames={lead}; expected >= 2, >= 1")
    vlo, vhi = (float(v) for v in d["velocity_range"])
    n_total = n_train + n_valid + n_test
    times = torch.arange(k + lead, dtype=torch.float64) * dt
    ds = simulate_dataset(
        "advection_diffusion",
        n_total,
        times,
        {"velocity": ((vlo, vlo), (vhi, vhi)), "diffusion": tuple(d["diffusion_range"])},
        system_kwargs={"size": (size, size), "length": 1.0},
        seed=cfg.seed,
        device=device,
        step_size=float(d["step_size"]),
    )
    clean = dataset_to_tensor(ds, ["I"], dtype=torch.float32)  # (N, T, 1, H, W)
    g_obs = generator(cfg.seed, 1)
    obs = clean + noise * torch.randn(clean.shape, generator=g_obs)
    grid = (
        torch.tensor(ds["y"].values, dtype=torch.float32),
        torch.tensor(ds["x"].values, dtype=torch.float32),
    )
    t32 = times.float()
    valid, test = obs[n_train : n_train + n_valid], obs[n_train + n_valid :]
    clean_train = clean[:n_train]

    models: dict[str, Callable[[], Forecasts]] = {
        "convcnp": lambda: _convcnp(cfg, clean_train, valid, test, k, noise, device),
        "climatology": lambda: _climatology(cfg, obs[:n_train], valid, test, k),
        "cnp": lambda: _cnp(cfg, clean_train, valid, test, t32, grid, k, noise, device),
        "gp": lambda: _grid_gp(cfg, valid, test, t32, grid, k),
        "physics_ensemble": lambda: _physics(cfg, valid, test, times, size, k, noise, device),
    }
    forecasts = forecast_models(
        cfg.models,
        models,
        cases=f"{n_train} training trajectories, {n_valid} validation + {n_test} test cases",
        progress=cfg.progress,
    )

    lead_times = (times[k:] - times[k - 1]).numpy()
    return StudyData(
        obs_valid=valid[:, k:, 0],
        obs_test=test[:, k:, 0],
        dims=("case", "lead_time", "y", "x"),
        coords={"lead_time": lead_times, "y": grid[0].numpy(), "x": grid[1].numpy()},
        forecasts=forecasts,
        kind="field",
        variable="tracer",
        long_name="observed tracer concentration",
        units="1",
        title="Advection-diffusion: 2D tracer forecast",
        context_times=(times[:k] - times[k - 1]).numpy(),
        context_test=test[:, :k, 0],
        references=["climatology"] if "climatology" in cfg.models else [],
        summary={
            "grid": f"{size} x {size} periodic, unit square",
            "frames": f"{k} context + {lead} lead, dt = {dt}",
            "cases": f"{n_train} train / {n_valid} validation / {n_test} test",
            "observation noise std": noise,
            "velocity range": f"[{vlo}, {vhi}] per component",
            "diffusion range": str(list(d["diffusion_range"])),
        },
    )


def _convcnp(
    cfg: StudyConfig,
    clean_train: torch.Tensor,
    valid: torch.Tensor,
    test: torch.Tensor,
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.convcnp")
    batch = int(s["batch_size"])
    frames = clean_train[:, :, 0]  # (N, T, H, W): frames are the channels
    lead = frames.shape[1] - k

    def sample(g: torch.Generator) -> GridTask:
        idx = torch.randint(frames.shape[0], (batch,), generator=g)
        noisy = frames[idx] + noise * torch.randn(frames[idx].shape, generator=g)
        return GridTask(noisy[:, :k], None, noisy[:, k:], None)

    model = RECIPES["convcnp"].fit(
        s,
        sample,
        seed=cfg.seed + 13,
        device=device,
        progress=cfg.progress,
        in_channels=k,
        out_channels=lead,
    )
    desc = (
        f"convolutional CNP on the grid ({k} context frames as channels with density channels, "
        f"{s['architecture']} width {s['width']} depth {s['depth']} kernel {s['kernel_size']}, "
        f"circular padding, {s['steps']} Adam steps of {batch} noisy training trajectories)"
    )
    return predict_convcnp(model, valid[:, :k, 0]), predict_convcnp(model, test[:, :k, 0]), desc


def _climatology(
    cfg: StudyConfig, obs_train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, k: int
) -> tuple[Normal, Normal, str]:
    pooling = str(cfg.section("model.climatology")["pooling"])
    if pooling not in ("pixel", "domain"):
        raise ValueError(f"model.climatology.pooling = {pooling!r}; expected 'pixel' or 'domain'")
    lead_obs = obs_train[:, k:, 0]  # (N, L, H, W) observed training lead frames
    if pooling == "pixel":
        mean, std = lead_obs.mean(0), lead_obs.std(0)
    else:  # statistically homogeneous on the periodic domain: pool the pixels
        flat = lead_obs.transpose(0, 1).reshape(lead_obs.shape[1], -1)
        mean = flat.mean(1)[:, None, None].expand(lead_obs.shape[1:])
        std = flat.std(1)[:, None, None].expand(lead_obs.shape[1:])
    std = std.clamp_min(1e-6)

    def forecast(cases: torch.Tensor) -> Normal:
        shape = (cases.shape[0], *mean.shape)
        return Normal(mean.expand(shape).clone(), std.expand(shape).clone())

    where = "pixel" if pooling == "pixel" else "the whole domain"
    desc = (
        f"climatology: per lead time and {where}, the mean and standard deviation of the "
        f"{obs_train.shape[0]} observed training trajectories (ignores the case)"
    )
    return forecast(valid), forecast(test), desc


def _cnp(
    cfg: StudyConfig,
    clean_train: torch.Tensor,
    valid: torch.Tensor,
    test: torch.Tensor,
    times: torch.Tensor,
    grid: tuple[torch.Tensor, torch.Tensor],
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.cnp")
    batch, n_ctx = int(s["batch_size"]), int(s["context_points"])
    n_tgt = int(s["target_points"])
    shape = valid.shape[2:]
    per_frame = int(shape[-1] * shape[-2])
    x_all, _ = field_points(clean_train[:1], times, grid)
    x_all = x_all[0]  # (T*H*W, 3)
    n_context_all = k * per_frame
    n_ctx = min(n_ctx, n_context_all)

    def sample(g: torch.Generator) -> Task:
        idx = torch.randint(clean_train.shape[0], (batch,), generator=g)
        frames = clean_train[idx]
        frames = frames + noise * torch.randn(frames.shape, generator=g)
        _, y = field_points(frames, times, grid)
        pick = torch.stack([torch.randperm(n_context_all, generator=g)[:n_ctx] for _ in idx])
        xc = x_all[pick]
        yc = torch.gather(y[:, :n_context_all], 1, pick[..., None].expand(-1, -1, y.shape[-1]))
        n_lead_all = x_all.shape[0] - n_context_all
        tpick = torch.stack([torch.randperm(n_lead_all, generator=g)[:n_tgt] for _ in idx])
        xt = x_all[n_context_all:][tpick]
        yt = torch.gather(y[:, n_context_all:], 1, tpick[..., None].expand(-1, -1, y.shape[-1]))
        ones_c = torch.ones(xc.shape[:2], dtype=torch.bool)
        ones_t = torch.ones(xt.shape[:2], dtype=torch.bool)
        return Task(xc, yc, ones_c, xt, yt, ones_t)

    model = RECIPES["cnp"].fit(
        s, sample, seed=cfg.seed + 11, device=device, progress=cfg.progress, x_dim=3, y_dim=1
    )

    def forecast(cases: torch.Tensor) -> Normal:
        x, y = field_points(cases, times, grid)
        pred = predict_cnp(model, x[:, :n_context_all], y[:, :n_context_all], x[:, n_context_all:])
        out_shape = (cases.shape[0], cases.shape[1] - k, *shape[-2:])
        return Normal(pred.mean.reshape(out_shape), pred.stddev.reshape(out_shape))

    desc = (
        f"conditional neural process on pixels (width {s['width']}, {s['steps']} Adam steps, "
        f"{n_ctx} context and {n_tgt} target pixels per training task); a baseline: its "
        "mean-pooled context cannot place a feature, so its mean field is nearly flat"
    )
    return forecast(valid), forecast(test), desc


def _grid_gp(
    cfg: StudyConfig,
    valid: torch.Tensor,
    test: torch.Tensor,
    times: torch.Tensor,
    grid: tuple[torch.Tensor, torch.Tensor],
    k: int,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.gp")
    kernel = list(s["kernel"])
    ctx_axes = [times[:k].double(), grid[0].double(), grid[1].double()]
    lead_axes = [times[k:].double(), grid[0].double(), grid[1].double()]

    def forecast(cases: torch.Tensor, label: str) -> Normal:
        parts = []
        for case in each(list(cases), f"grid GP per {label} case", enabled=cfg.progress):
            gp = GridGP(3, kernel=kernel)
            gp.fit(
                ctx_axes,
                case[:k, 0].double(),
                steps=int(s["steps"]),
                lr=float(s["lr"]),
                progress=False,
            )
            with torch.no_grad():
                pred = gp.predict(lead_axes, noisy=True)
            parts.append(Normal(pred.mean.float(), pred.stddev.float()))
        return stack_normals(parts)

    desc = (
        f"exact GP per case on the (t, y, x) grid of the context frames, kernel "
        f"{' x '.join(kernel)}, {s['steps']} Adam steps on the marginal likelihood"
    )
    return forecast(valid, "validation"), forecast(test, "test"), desc


def _physics(
    cfg: StudyConfig,
    valid: torch.Tensor,
    test: torch.Tensor,
    times: torch.Tensor,
    size: int,
    k: int,
    noise: float,
    device: torch.device,
) -> tuple[Ensemble, Ensemble, str]:
    s = cfg.section("model.physics_ensemble")
    d = cfg.section("data")
    n_part, members = int(s["particles"]), int(s["members"])
    vlo, vhi = (float(v) for v in d["velocity_range"])
    dlo, dhi = (float(v) for v in d["diffusion_range"])
    step_size = float(d["step_size"])

    def forecast(cases: torch.Tensor, offset: int, label: str) -> Ensemble:
        g = generator(cfg.seed, offset)
        chunks = []
        for case in each(list(cases), f"physics ensemble per {label} case", enabled=cfg.progress):
            velocity = vlo + (vhi - vlo) * torch.rand(n_part, 2, generator=g)
            diffusion = dlo + (dhi - dlo) * torch.rand(n_part, generator=g)
            system = AdvectionDiffusion(
                (size, size), 1.0, velocity=velocity, diffusion=diffusion
            ).to(device)
            state0 = case[0].expand(n_part, -1, -1, -1).to(device)
            with torch.no_grad():
                traj = simulate(
                    system, state0, times.float().to(device), step_size=step_size
                ).cpu()  # (P, T, 1, H, W)
            loglik = log_gaussian_fit(traj[:, 1:k], case[1:k].unsqueeze(0), noise, 4)
            idx, _ = tempered_resample(
                loglik[None], members, ess_fraction=float(s["ess_fraction"]), generator=g
            )
            chunks.append(traj[idx[0], k:, 0])  # (M, L, H, W)
        return noisy_ensemble(torch.stack(chunks, dim=1), noise, g)

    desc = (
        f"advection-diffusion solver from the first context frame, {n_part} prior particles "
        f"of (velocity, diffusion) weighted by the later context frames (tempered to ESS >= "
        f"{s['ess_fraction']} P), {members} resampled members plus observation noise"
    )
    return forecast(valid, 21, "validation"), forecast(test, 22, "test"), desc
