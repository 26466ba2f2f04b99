"""Shallow-water inverse study: reconstruct a height field from a few noisy pixels.

Data: layer-depth anomalies ``h`` of :class:`uqdyn.physics.ShallowWater` (Gaussian bumps at
rest, Coriolis parameter drawn per trajectory) at one snapshot time, standardised by the
training standard deviation. Each case observes a random ``1 - drop`` fraction of the pixels
with Gaussian noise; the task is the true field at every grid point.

Models:

* ``gp``: per case an exact GP on the observed pixels (periodic coordinates in ``[0, 1)``),
  the posterior of the latent field;
* ``interpolation``: a periodic Gaussian-kernel (Nadaraya-Watson) interpolation of the
  observed pixels with a standard deviation that grows with the distance to the nearest
  observed pixel, estimated on the training cases (root-mean-square error per distance bin);
* ``convcnp``: a convolutional conditional neural process on the grid
  (:class:`~uqdyn.models.neural_process.ConvCNP`): the observed pixels are its masked context
  (data and density channels), the field its output; circular padding (periodic domain);
  trained on the training fields with fresh random masks and noise, as the measurements are
  made;
* ``cnp``: a conditional neural process from observed pixels to the field, trained on the
  training fields with fresh random masks (a baseline: its mean-pooled representation has
  no notion of where a pixel is);
* ``ambient_gan``: a conditional AmbientGAN trained from the training measurements only
  (never the clean fields), sampled into an ensemble (when
  :mod:`uqdyn.models.ambient_gan` is installed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn.data import Task, simulate_dataset
from uqdyn.models.gp import ExactGP
from uqdyn.models.neural_process import GridTask
from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask
from uqdyn.predictive import Ensemble, Normal

from .base import Forecasts, StudyData, each, forecast_models, generator
from .config import StudyConfig
from .recipes import RECIPES, predict_convcnp

__all__ = ["run_shallow_water_inverse", "kernel_interpolation"]


def _unit_grid(size: int) -> Tensor:
    """``(size*size, 2)`` grid coordinates ``(row, col) / size`` in ``[0, 1)``, row-major."""
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1).double() / size


def _periodic_distance(a: Tensor, b: Tensor) -> Tensor:
    """Distances ``(n, m)`` on the unit torus between points ``a (n, 2)`` and ``b (m, 2)``."""
    diff = (a[:, None, :] - b[None, :, :]).abs()
    diff = torch.minimum(diff, 1.0 - diff)
    return diff.square().sum(-1).sqrt()


def kernel_interpolation(values: Tensor, mask: Tensor, length: float) -> tuple[Tensor, Tensor]:
    """Periodic Nadaraya-Watson interpolation of observed pixels.

    Parameters
    ----------
    values, mask:
        ``(B, H, W)`` observed values and boolean mask (``True`` = observed), square grid.
    length:
        Gaussian kernel length in domain units (the domain is the unit torus).

    Returns
    -------
    The interpolated fields ``(B, H, W)`` and the distance of every grid point to its
    nearest observed pixel ``(B, H, W)``.
    """
    b, h, w = values.shape
    grid = _unit_grid(h)
    fields, nearest = [], []
    for i in range(b):
        pts = grid[mask[i].reshape(-1)]
        if pts.shape[0] == 0:
            raise ValueError(f"case {i} has no observed pixel; expected at least one")
        dist = _periodic_distance(grid, pts)  # (HW, n)
        weights = torch.softmax(-0.5 * (dist / length).square(), dim=1)
        fields.append((weights @ values[i].reshape(-1)[mask[i].reshape(-1)].double()).reshape(h, w))
        nearest.append(dist.min(dim=1).values.reshape(h, w))
    return torch.stack(fields).float(), torch.stack(nearest).float()


def run_shallow_water_inverse(cfg: StudyConfig, device: torch.device) -> StudyData:
    """Simulate the fields and measurements, fit ``cfg.models`` and reconstruct."""
    d = cfg.section("data")
    size, t_obs = int(d["size"]), float(d["snapshot_time"])
    n_train, n_valid, n_test = int(d["n_train"]), int(d["n_valid"]), int(d["n_test"])
    drop, noise = float(d["drop"]), float(d["noise_std"])
    n_total = n_train + n_valid + n_test
    ds = simulate_dataset(
        "shallow_water",
        n_total,
        torch.tensor([0.0, t_obs], dtype=torch.float64),
        {"coriolis": tuple(d["coriolis_range"])},
        system_kwargs={"size": (size, size)},
        seed=cfg.seed,
        device=device,
        step_size=float(d["step_size"]),
    )
    h = torch.tensor(ds["h"].values[:, -1], dtype=torch.float32)  # (N, H, W)
    scale = h[:n_train].std()
    fields = h / scale
    operator = Compose(RandomPixelMask(drop=drop), GaussianNoise(sigma=noise))
    with torch.no_grad():
        measured = operator(fields[:, None], generator=generator(cfg.seed, 1))
    values, mask = measured.values[:, 0], measured.mask[:, 0]  # (N, H, W)
    split = {
        "train": slice(0, n_train),
        "valid": slice(n_train, n_train + n_valid),
        "test": slice(n_train + n_valid, n_total),
    }

    models: dict[str, Callable[[], Forecasts]] = {
        "gp": lambda: _gp(cfg, values, mask, split),
        "interpolation": lambda: _interpolation(cfg, fields, values, mask, split),
        "cnp": lambda: _cnp(cfg, fields, values, mask, split, drop, noise, device),
        "convcnp": lambda: _convcnp(cfg, fields, values, mask, split, drop, noise, device),
        "ambient_gan": lambda: _ambient_gan(cfg, operator, values, mask, split, noise, device),
    }
    forecasts = forecast_models(
        cfg.models,
        models,
        cases=f"{n_train} training fields, {n_valid} validation + {n_test} test cases",
        progress=cfg.progress,
    )

    coords = ds["y"].values, ds["x"].values
    return StudyData(
        obs_valid=fields[split["valid"], None],
        obs_test=fields[split["test"], None],
        dims=("case", "time", "y", "x"),
        coords={"time": np.array([t_obs]), "y": coords[0], "x": coords[1]},
        forecasts=forecasts,
        kind="field",
        variable="h",
        long_name="standardised layer-depth anomaly h (true field)",
        units="1",
        title="Shallow-water inverse problem: height field from sparse noisy pixels",
        observed_points=mask[split["test"]].bool(),
        summary={
            "grid": f"{size} x {size} periodic",
            "snapshot": f"t = {t_obs} after Gaussian bumps at rest",
            "cases": f"{n_train} train / {n_valid} validation / {n_test} test",
            "observed pixels": f"{1 - drop:.0%} at random, noise std {noise} (standardised units)",
            "coriolis range": str(list(d["coriolis_range"])),
            "scored against": "the true (noise-free) standardised h at every grid point",
        },
    )


def _gp(
    cfg: StudyConfig, values: Tensor, mask: Tensor, split: dict[str, slice]
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.gp")
    size = int(values.shape[-1])
    grid = _unit_grid(size)

    def forecast(part: str) -> Normal:
        locs, scales = [], []
        vals, masks = values[split[part]], mask[split[part]]
        label = "validation" if part == "valid" else part
        for v, m in each(
            list(zip(vals, masks, strict=True)), f"GP per {label} case", enabled=cfg.progress
        ):
            keep = m.reshape(-1)
            gp = ExactGP(2, 1, kernel=str(s["kernel"]))
            gp.fit(
                grid[keep],
                v.reshape(-1)[keep].double()[:, None],
                steps=int(s["steps"]),
                lr=float(s["lr"]),
                progress=False,
            )
            with torch.no_grad():
                pred = gp.predict(grid, noisy=False)
            locs.append(pred.mean.reshape(1, size, size).float())
            scales.append(pred.stddev.reshape(1, size, size).float().clamp_min(1e-6))
        return Normal(torch.stack(locs), torch.stack(scales))

    desc = (
        f"exact GP per case on the observed pixels ({s['kernel']} kernel, {s['steps']} Adam "
        "steps), posterior of the latent field"
    )
    return forecast("valid"), forecast("test"), desc


def _interpolation(
    cfg: StudyConfig,
    fields: Tensor,
    values: Tensor,
    mask: Tensor,
    split: dict[str, slice],
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.interpolation")
    length, n_bins = float(s["length"]), int(s["distance_bins"])
    train_fit, train_near = kernel_interpolation(
        values[split["train"]], mask[split["train"]], length
    )
    err = (train_fit - fields[split["train"]]).reshape(-1).double()
    near = train_near.reshape(-1).double()
    edges = torch.quantile(near, torch.linspace(0, 1, n_bins + 1, dtype=torch.float64))
    centres, rms = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (near >= lo) & (near <= hi)
        if bool(sel.any()):
            centres.append(float(near[sel].mean()))
            rms.append(float(err[sel].square().mean().sqrt()))
    xs, ys = np.asarray(centres), np.maximum(np.asarray(rms), 1e-6)

    def forecast(part: str) -> Normal:
        mean, dist = kernel_interpolation(values[split[part]], mask[split[part]], length)
        std = torch.from_numpy(np.interp(dist.double().numpy(), xs, ys)).float()
        return Normal(mean[:, None], std[:, None])

    desc = (
        f"periodic Gaussian-kernel interpolation (length {length}) with a standard deviation "
        f"from the training RMSE in {n_bins} bins of the distance to the nearest observed pixel"
    )
    return forecast("valid"), forecast("test"), desc


def _cnp(
    cfg: StudyConfig,
    fields: Tensor,
    values: Tensor,
    mask: Tensor,
    split: dict[str, slice],
    drop: float,
    noise: float,
    device: torch.device,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.cnp")
    batch = int(s["batch_size"])
    size = int(fields.shape[-1])
    grid = _unit_grid(size).float()
    n_pix = size * size
    n_ctx = max(1, round((1.0 - drop) * n_pix))
    train = fields[split["train"]].reshape(-1, n_pix)

    def sample(g: torch.Generator) -> Task:
        idx = torch.randint(train.shape[0], (batch,), generator=g)
        pick = torch.stack([torch.randperm(n_pix, generator=g)[:n_ctx] for _ in idx])
        yc = train[idx].gather(1, pick) + noise * torch.randn(batch, n_ctx, generator=g)
        xc = grid[pick]
        ones_c = torch.ones(batch, n_ctx, dtype=torch.bool)
        ones_t = torch.ones(batch, n_pix, dtype=torch.bool)
        return Task(
            xc, yc[..., None], ones_c, grid.expand(batch, -1, -1), train[idx][..., None], ones_t
        )

    model = RECIPES["cnp"].fit(
        s, sample, seed=cfg.seed + 11, device=device, progress=cfg.progress, x_dim=2, y_dim=1
    )

    def forecast(part: str) -> Normal:
        vals, masks = values[split[part]], mask[split[part]]
        b = vals.shape[0]
        counts = masks.reshape(b, -1).sum(1)
        n_max = int(counts.max())
        xc = torch.zeros(b, n_max, 2)
        yc = torch.zeros(b, n_max, 1)
        mc = torch.zeros(b, n_max, dtype=torch.bool)
        for i in range(b):
            keep = masks[i].reshape(-1)
            n = int(counts[i])
            xc[i, :n], yc[i, :n, 0], mc[i, :n] = grid[keep], vals[i].reshape(-1)[keep], True
        dev = next(model.parameters()).device
        with torch.no_grad():
            pred = model(
                xc.to(dev), yc.to(dev), grid.expand(b, -1, -1).to(dev), mask_context=mc.to(dev)
            )
        shape = (b, 1, size, size)
        return Normal(pred.mean.cpu().reshape(shape), pred.stddev.cpu().reshape(shape))

    desc = (
        f"conditional neural process from the observed pixels (width {s['width']}, "
        f"{s['steps']} Adam steps on fresh random masks of the training fields)"
    )
    return forecast("valid"), forecast("test"), desc


def _convcnp(
    cfg: StudyConfig,
    fields: Tensor,
    values: Tensor,
    mask: Tensor,
    split: dict[str, slice],
    drop: float,
    noise: float,
    device: torch.device,
) -> tuple[Normal, Normal, str]:
    s = cfg.section("model.convcnp")
    batch = int(s["batch_size"])
    train = fields[split["train"]][:, None]  # (N, 1, H, W)

    def sample(g: torch.Generator) -> GridTask:
        idx = torch.randint(train.shape[0], (batch,), generator=g)
        clean = train[idx]
        seen = torch.rand(clean.shape, generator=g) >= drop
        measured = clean + noise * torch.randn(clean.shape, generator=g)
        return GridTask(torch.where(seen, measured, torch.nan), seen, clean, None)

    model = RECIPES["convcnp"].fit(
        s,
        sample,
        seed=cfg.seed + 13,
        device=device,
        progress=cfg.progress,
        in_channels=1,
        out_channels=1,
    )

    def forecast(part: str) -> Normal:
        vals, masks = values[split[part]][:, None], mask[split[part]][:, None]
        return predict_convcnp(model, vals, masks)

    desc = (
        f"convolutional CNP on the grid, observed pixels as the masked context with a density "
        f"channel ({s['architecture']} width {s['width']} depth {s['depth']}, circular padding, "
        f"{s['steps']} Adam steps on fresh random masks of the training fields)"
    )
    return forecast("valid"), forecast("test"), desc


def _ambient_gan(
    cfg: StudyConfig,
    operator: Compose,
    values: Tensor,
    mask: Tensor,
    split: dict[str, slice],
    noise: float,
    device: torch.device,
) -> tuple[Ensemble, Ensemble, str]:
    try:
        from uqdyn.models.ambient_gan import as_measured
    except ImportError as err:  # pragma: no cover - depends on the installed version
        raise ValueError(
            "model 'ambient_gan' needs uqdyn.models.ambient_gan, which could not be imported: "
            f"{err}"
        ) from err
    s = cfg.section("model.ambient_gan")
    size = int(values.shape[-1])

    def measured(part: str) -> Any:
        v, m = values[split[part]][:, None], mask[split[part]][:, None]
        return as_measured(v, m, noise, field_shape=(1, size, size))

    model = RECIPES["ambient_gan"].fit(
        s,
        measured("train"),
        seed=cfg.seed + 51,
        device=device,
        progress=cfg.progress,
        operator=operator,
        field_shape=(1, size, size),
    )

    def forecast(part: str, offset: int) -> Ensemble:
        with torch.no_grad():
            return model.predict(
                measured(part), members=int(s["members"]), generator=generator(cfg.seed, offset)
            )

    desc = (
        f"conditional AmbientGAN trained on the training measurements only ({s['steps']} "
        f"steps, {s['base_channels']} base channels, held-out score weight "
        f"{s['score_weight']}), {s['members']} samples per case"
    )
    return forecast("valid", 61), forecast("test", 62), desc
