"""The shallow-water gap-filling benchmark of the AmbientGAN: data, baselines and scores.

Not part of the library: the harness of ``examples/ambient_gan_shallow_water.py`` (which
puts this folder on ``sys.path`` to import it as ``ambient_gan_harness``):

* :func:`simulate_fields`: snapshots ``(N, 3, H, W)`` of :class:`uqdyn.physics.ShallowWater`
  (channels ``u, v, h``), standardised per channel;
* :func:`make_operator` and :func:`make_inverse_problem_data`: the measurement scenarios
  (``"pixels"``: 90% of the pixels removed plus noise; ``"clouds"``: cloud masks plus noise)
  and the corrupted training and test sets;
* baselines: :func:`interpolation_fill` (periodic piecewise-linear interpolation of the
  observed pixels, deterministic), :func:`gp_fill` (an :class:`uqdyn.models.gp.ExactGP` per
  field on the observed pixels, a Normal predictive);
* :func:`fit_conditional_ambient_gan` (AmbientGAN from the measurements) and
  :func:`fit_inpainting_gan` (Bora et al.'s baseline: a conditional GAN trained on
  interpolated measurements taken as clean fields), recipes over
  :func:`uqdyn.models.ambient_gan.fit_ambient_gan` (itself one :func:`uqdyn.train.fit`);
* :func:`evaluate_predictive`: CRPS, CRPS on the hidden entries, RMSE of the mean, 90%
  interval coverage and spread-skill ratio against the true fields.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
from torch import Tensor

from uqdyn.calibration import coverage, spread_skill_ratio
from uqdyn.models.ambient_gan import (
    ConditionalAmbientGAN,
    Measured,
    MeasurementModel,
    fit_ambient_gan,
)
from uqdyn.observe import CloudMask, Compose, GaussianNoise, ObservationOperator, RandomPixelMask
from uqdyn.predictive import Ensemble, Normal, Predictive

__all__ = [
    "SCENARIOS",
    "InverseProblemData",
    "simulate_fields",
    "make_operator",
    "make_inverse_problem_data",
    "interpolation_fill",
    "gp_fill",
    "fit_conditional_ambient_gan",
    "fit_inpainting_gan",
    "evaluate_predictive",
    "deterministic",
]

#: Measurement scenarios of the study.
SCENARIOS = ("pixels", "clouds")


def simulate_fields(
    n_trajectories: int,
    *,
    size: int = 32,
    snapshots: Sequence[float] = (2.0, 3.0, 4.0, 5.0, 6.0),
    coriolis: tuple[float, float] = (0.5, 2.0),
    seed: int = 0,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Shallow-water snapshots, standardised per channel.

    ``n_trajectories`` runs of :class:`uqdyn.physics.ShallowWater` on a ``size x size``
    periodic grid (Gaussian bumps on the layer depth at rest, Coriolis parameter uniform in
    ``coriolis``), simulated with :func:`uqdyn.data.simulate_dataset` (RK4, step 0.1), and
    the states at the times ``snapshots`` taken as fields.

    Parameters
    ----------
    scale:
        Per-channel standard deviations ``(3,)`` to divide by; default: those of these
        fields (pass the training set's to the test set).

    Returns
    -------
    (fields, scale)
        ``(n_trajectories * len(snapshots), 3, size, size)`` float32 fields with channels
        ``(u, v, h)``, and the ``(3,)`` scale used.
    """
    from uqdyn.data import simulate_dataset

    times = torch.tensor([0.0, *[float(t) for t in snapshots]])
    ds = simulate_dataset(
        "shallow_water",
        int(n_trajectories),
        times,
        {"coriolis": coriolis},
        system_kwargs={"size": (int(size), int(size))},
        seed=seed,
        device="cpu",
        step_size=0.1,
    )
    states = np.stack([ds[name].values[:, 1:] for name in ("u", "v", "h")], axis=2)
    fields = torch.from_numpy(states.reshape(-1, 3, int(size), int(size))).float()
    if scale is None:
        scale = fields.std(dim=(0, 2, 3))
    return fields / scale.view(1, -1, 1, 1), scale


def make_operator(
    scenario: str, *, drop: float = 0.9, noise: float = 0.1, cover: tuple[float, float] = (0.3, 0.7)
) -> ObservationOperator:
    """The measurement operator of a scenario.

    ``"pixels"``: ``RandomPixelMask(drop)`` then ``GaussianNoise(noise)``; ``"clouds"``:
    ``CloudMask(cover, length_scale=(2, 5))`` then ``GaussianNoise(noise)``.
    """
    if scenario == "pixels":
        return Compose(RandomPixelMask(drop=drop), GaussianNoise(sigma=noise))
    if scenario == "clouds":
        return Compose(CloudMask(cover=cover, length_scale=(2.0, 5.0)), GaussianNoise(sigma=noise))
    raise ValueError(f"scenario={scenario!r}; expected one of {SCENARIOS}")


@dataclass
class InverseProblemData:
    """Corrupted training measurements and a test set with its true fields.

    Attributes
    ----------
    train:
        Training measurements ``(N, C, H, W)`` (the only training data of the models).
    test:
        Test measurements ``(M, C, H, W)``.
    test_fields:
        True fields of the test measurements ``(M, C, H, W)``, for scoring only.
    operator:
        The measurement operator.
    """

    train: Measured
    test: Measured
    test_fields: Tensor
    operator: ObservationOperator

    @property
    def field_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return self.train.field_shape


def make_inverse_problem_data(
    train_fields: Tensor, test_fields: Tensor, operator: ObservationOperator, *, seed: int = 0
) -> InverseProblemData:
    """Measure training and test fields once each (one measurement per field)."""
    model = MeasurementModel(operator, tuple(train_fields.shape[1:]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        train = model(train_fields, generator=generator)
        test = model(test_fields, generator=generator)
    return InverseProblemData(train, test, test_fields, operator)


def _periodic_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed locations and their periodic images within a quarter domain of the edges."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    my, mx = max(4, height // 4), max(4, width // 4)
    points, index = [], []
    for dy in (-height, 0, height):
        for dx in (-width, 0, width):
            r, c = rows + dy, cols + dx
            keep = (r >= -my) & (r < height + my) & (c >= -mx) & (c < width + mx)
            points.append(np.stack([r[keep], c[keep]], axis=1))
            index.append(np.nonzero(keep)[0])
    return np.concatenate(points).astype(np.float64), np.concatenate(index)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread inside the block (when threadpoolctl is installed).

    scipy's Delaunay point location calls LAPACK once per simplex; with a multi-threaded
    OpenBLAS on a busy machine each tiny call pays thread synchronisation, making it ~100x
    slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def interpolation_fill(y: Measured) -> Tensor:
    """Deterministic gap filling: periodic piecewise-linear interpolation of observed pixels.

    For each sample the observed locations (of the first channel; the masks of the
    scenarios are shared by the channels) and their periodic images near the edges are
    triangulated and
    every grid point gets the linear interpolant (nearest observed value where fewer than 3
    points exist). Noisy values are interpolated as they are.

    Returns
    -------
    Tensor ``(B, C, H, W)``.
    """
    values = y.values.detach().cpu().double().numpy()
    masks = y.mask.detach().cpu().numpy()
    batch, channels, height, width = values.shape
    grid = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1)
    grid = grid.reshape(-1, 2).astype(np.float64)
    out = np.empty_like(values)
    with _single_threaded_blas():
        _interpolate_into(out, values, masks, grid)
    return torch.from_numpy(out).to(y.values.dtype)


def _interpolate_into(
    out: np.ndarray, values: np.ndarray, masks: np.ndarray, grid: np.ndarray
) -> None:
    batch, channels, height, width = values.shape
    for b in range(batch):
        loc = masks[b, 0]
        if not loc.any():
            raise ValueError(f"y has no observed pixel in sample {b}; cannot interpolate")
        points, index = _periodic_points(loc)
        observed = values[b][:, loc].T[index]  # (n_points, C)
        if loc.sum() >= 3:
            filled = LinearNDInterpolator(points, observed)(grid)
            bad = ~np.isfinite(filled).all(axis=1)
            if bad.any():
                filled[bad] = NearestNDInterpolator(points, observed)(grid[bad])
        else:
            filled = NearestNDInterpolator(points, observed)(grid)
        out[b] = filled.T.reshape(channels, height, width)


def gp_fill(
    y: Measured,
    *,
    kernel: str = "matern52",
    steps: int = 60,
    lr: float = 0.1,
    max_fit_points: int | None = None,
    seed: int = 0,
) -> Normal:
    """GP baseline: an :class:`~uqdyn.models.gp.ExactGP` per field on its observed pixels.

    Inputs are grid coordinates scaled to ``[0, 1)``; the ``C`` channels are independent
    outputs with their own hyperparameters (fit by marginal likelihood, Adam, ``steps``
    steps, float64) on at most ``max_fit_points`` observed pixels drawn at random (all when
    ``None``); the GP is then conditioned on every observed pixel and the prediction is the
    posterior of the latent (noise-free) field at every grid point.

    Returns
    -------
    Normal
        ``(B, C, H, W)``.
    """
    from uqdyn.models.gp import ExactGP

    batch, channels, height, width = y.values.shape
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) / height,
        torch.arange(width, dtype=torch.float64) / width,
        indexing="ij",
    )
    grid = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)
    locs, scales = [], []
    generator = torch.Generator().manual_seed(seed)
    for b in range(batch):
        loc = y.mask[b, 0].cpu()
        x_obs = grid[loc.reshape(-1)]
        y_obs = y.values[b].detach().cpu().double()[:, loc].T  # (n, C)
        gp = ExactGP(x_dim=2, y_dim=channels, kernel=kernel)
        if max_fit_points is not None and x_obs.shape[0] > max_fit_points:
            pick = torch.randperm(x_obs.shape[0], generator=generator)[:max_fit_points]
            gp.fit(x_obs[pick], y_obs[pick], steps=steps, lr=lr, progress=False)
            gp.condition(x_obs, y_obs)  # predict from every observed pixel
        else:
            gp.fit(x_obs, y_obs, steps=steps, lr=lr, progress=False)
        with torch.no_grad():
            pred = gp.predict(grid, noisy=False)
            locs.append(pred.mean.detach().T.reshape(channels, height, width).clone())
            scales.append(pred.stddev.detach().T.reshape(channels, height, width).clone())
        del gp, pred
    dtype = y.values.dtype
    return Normal(torch.stack(locs).to(dtype), torch.stack(scales).to(dtype).clamp_min(1e-6))


def _fit_seeded(
    data: InverseProblemData,
    inpaint: bool,
    steps: int,
    batch_size: int,
    base_channels: int,
    seed: int,
    model_options: Mapping[str, Any] | None,
    fit_kwargs: dict[str, Any],
) -> tuple[ConditionalAmbientGAN, float]:
    """A :class:`ConditionalAmbientGAN` initialised under ``seed`` and trained on
    ``data.train``, or on its :func:`interpolation_fill` when ``inpaint``."""
    options = {"consistency_weight": 1.0, **(model_options or {})}
    torch.manual_seed(seed)
    model = ConditionalAmbientGAN(
        data.operator, data.field_shape, base_channels=base_channels, **options
    )
    start = time.perf_counter()
    train = interpolation_fill(data.train) if inpaint else data.train
    fit_ambient_gan(model, train, steps=steps, batch_size=batch_size, seed=seed, **fit_kwargs)
    return model, time.perf_counter() - start


def fit_conditional_ambient_gan(
    data: InverseProblemData,
    *,
    steps: int,
    batch_size: int = 32,
    base_channels: int = 32,
    seed: int = 0,
    model_options: Mapping[str, Any] | None = None,
    **fit_kwargs: Any,
) -> tuple[ConditionalAmbientGAN, float]:
    """Train a :class:`ConditionalAmbientGAN` on ``data.train`` (measurements only).

    ``model_options`` are keywords of :class:`ConditionalAmbientGAN` (``consistency_weight``,
    default 1.0 here, ``diversity_weight``, ``score_weight``, ``split``, ...);
    ``fit_kwargs`` go to :func:`~uqdyn.models.ambient_gan.fit_ambient_gan`. The model is
    built after ``torch.manual_seed(seed)`` and trained with ``seed``. Returns the model
    and the training seconds.
    """
    return _fit_seeded(
        data, False, steps, batch_size, base_channels, seed, model_options, fit_kwargs
    )


def fit_inpainting_gan(
    data: InverseProblemData,
    *,
    steps: int,
    batch_size: int = 32,
    base_channels: int = 32,
    seed: int = 0,
    model_options: Mapping[str, Any] | None = None,
    **fit_kwargs: Any,
) -> tuple[ConditionalAmbientGAN, float]:
    """Bora et al.'s baseline: inpaint the training measurements, then train a GAN on them.

    The training measurements are filled by :func:`interpolation_fill`; the filled fields
    are taken as clean data for a conditional GAN (:meth:`ConditionalAmbientGAN.supervised_loss`,
    whose discriminator sees whole fields, and whose score term, with ``score_weight``,
    scores samples against the whole filled field). Same networks, options and steps as
    :func:`fit_conditional_ambient_gan`.

    Returns the model and the training seconds (inpainting included).
    """
    return _fit_seeded(
        data, True, steps, batch_size, base_channels, seed, model_options, fit_kwargs
    )


def evaluate_predictive(
    prediction: Predictive, truth: Tensor, observed: Tensor | None = None, level: float = 0.9
) -> dict[str, float]:
    """Scores of a gridded predictive ``(B, C, H, W)`` against the true fields.

    Returns
    -------
    dict
        ``crps`` (mean CRPS over all entries), ``crps_hidden`` (over entries where
        ``observed`` is False; NaN without ``observed``), ``rmse`` (of the predictive mean),
        ``coverage`` (fraction of true values inside the central ``level`` interval) and
        ``ssr`` (spread-skill ratio, :func:`uqdyn.calibration.spread_skill_ratio`; 0 for a
        one-member ensemble).
    """
    if tuple(prediction.batch_shape) != tuple(truth.shape):
        raise ValueError(
            f"prediction has batch shape {tuple(prediction.batch_shape)} but truth has shape "
            f"{tuple(truth.shape)}; expected equal shapes"
        )
    truth = truth.to(prediction.mean)
    crps = prediction.crps(truth)
    hidden = float("nan")
    if observed is not None:
        keep = ~observed.to(truth.device)
        hidden = float(crps[keep].mean()) if bool(keep.any()) else float("nan")
    if isinstance(prediction, Ensemble) and prediction.n_members == 1:
        ssr = 0.0  # a deterministic forecast has no spread
    else:
        ssr = float(spread_skill_ratio(truth, prediction))
    return {
        "crps": float(crps.mean()),
        "crps_hidden": hidden,
        "rmse": float((prediction.mean - truth).square().mean().sqrt()),
        "coverage": float(coverage(truth, prediction, level)),
        "ssr": ssr,
    }


def deterministic(fields: Tensor) -> Ensemble:
    """A deterministic forecast as a one-member Ensemble ``(1, *fields.shape)``."""
    return Ensemble(fields.unsqueeze(0))
