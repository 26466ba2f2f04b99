"""The registry of learned-model recipes that every study uses.

A :class:`Recipe` builds one learned model from its configuration table (``[model.NAME]``)
and a seed, and trains it: the neural processes through :func:`uqdyn.train.fit`, the other
families through their own training entry points (:func:`~uqdyn.models.hybrid.fit_hybrid_ensemble`,
:func:`~uqdyn.models.ambient_gan.fit_ambient_gan`, the forecasters' ``fit``). A study cuts
its data into training batches (its own business) and asks the registry for the rest::

    model = RECIPES["cnp"].fit(cfg.section("model.cnp"), sample, seed=cfg.seed + 11,
                               device=device, progress=cfg.progress, x_dim=1, y_dim=2)

Each recipe says what it trains in one progress line (``training ConvCNP (300 steps)``)
before its progress bar. The same settings and seed give the same model.

Also here: the point-set and prediction helpers of the neural-process recipes
(:func:`field_points`, :func:`vector_points`, :func:`predict_cnp`, :func:`predict_convcnp`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from uqdyn._progress import stage
from uqdyn.models.neural_process import CNP, ConvCNP
from uqdyn.predictive import Normal
from uqdyn.train import fit as train_fit

from ._interrupt import checkpoint

__all__ = [
    "Recipe",
    "RECIPES",
    "field_points",
    "vector_points",
    "predict_cnp",
    "predict_convcnp",
]

Settings = Mapping[str, Any]


@dataclass(frozen=True)
class Recipe:
    """How one learned model of the studies is built and trained.

    Attributes
    ----------
    name:
        Registry key (:data:`RECIPES`).
    label:
        Name in progress lines and bars (``"ConvCNP"``).
    build:
        ``build(settings, seed, **shape) -> model``: the untrained model, its weights drawn
        from ``seed`` (the caller's RNG state is left alone); ``shape`` holds what the data
        fix (``x_dim``/``y_dim``, ``in_channels``/``out_channels``, ...).
    train:
        ``train(model, data, settings, *, seed, device, progress, desc) -> model``: the trained
        model in eval mode.
    amount:
        ``amount(settings) -> str``, how much training, for the progress line
        (``"300 steps"``).
    """

    name: str
    label: str
    build: Callable[..., Any]
    train: Callable[..., Any]
    amount: Callable[[Settings], str]

    def fit(
        self,
        settings: Settings,
        data: Any,
        *,
        seed: int,
        device: torch.device,
        progress: bool,
        **shape: Any,
    ) -> Any:
        """Build the model from ``settings`` and ``seed`` and train it on ``data``."""
        checkpoint()
        model = self.build(settings, seed, **shape)
        desc = f"training {self.label}"
        if progress:
            stage(f"{desc} ({self.amount(settings)})")
        return self.train(
            model, data, settings, seed=seed, device=device, progress=progress, desc=desc
        )


def _steps(settings: Settings) -> str:
    return f"{int(settings['steps'])} steps"


# ----------------------------------------------------------------------------- neural processes
def _build_cnp(settings: Settings, seed: int, *, x_dim: int, y_dim: int) -> CNP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CNP(x_dim, y_dim, width=int(settings["width"]), min_std=1e-3)


def _build_convcnp(
    settings: Settings, seed: int, *, in_channels: int, out_channels: int
) -> ConvCNP:
    return ConvCNP(
        in_channels,
        out_channels,
        width=int(settings["width"]),
        depth=int(settings["depth"]),
        kernel_size=int(settings["kernel_size"]),
        architecture=str(settings["architecture"]),
        padding="circular",  # the studies' domains are periodic
        min_std=1e-3,
        seed=seed,
    )


def _fit_trainer(**options: Any) -> Callable[..., Any]:
    """Train with :func:`uqdyn.train.fit` (the model's own loss) plus fixed ``options``."""

    def train(
        model: torch.nn.Module,
        data: Callable[[torch.Generator], Any],
        settings: Settings,
        *,
        seed: int,
        device: torch.device,
        progress: bool,
        desc: str,
    ) -> torch.nn.Module:
        train_fit(
            model,
            data,
            steps=int(settings["steps"]),
            lr=float(settings["lr"]),
            grad_clip=10.0,
            device=device,
            seed=seed,
            progress=progress,
            desc=desc,
            **options,
        )
        return model.eval()

    return train


# ----------------------------------------------------------------------------- hybrid ensemble
def _build_hybrid(
    settings: Settings, seed: int, *, physics: Callable[[], Any], dim: int
) -> Callable[[], Any]:
    """A factory of fresh members (the ensemble draws each member's weights from its seed)."""
    from uqdyn.models.hybrid import HybridDynamics, MLPAugmentation

    hidden = int(settings["hidden"])

    def make_member() -> HybridDynamics:
        return HybridDynamics(physics(), MLPAugmentation(dim, hidden=hidden))

    return make_member


def _train_hybrid(
    make_member: Callable[[], Any],
    data: tuple[Tensor, Tensor],
    settings: Settings,
    *,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> Any:
    from uqdyn.models.hybrid import fit_hybrid_ensemble

    trajectories, times = data
    ensemble, _ = fit_hybrid_ensemble(
        make_member,
        trajectories,
        times,
        members=int(settings["members"]),
        seed=seed,
        epochs=int(settings["epochs"]),
        steps_per_epoch=int(settings["steps_per_epoch"]),
        batch_size=int(settings["batch_size"]),
        lr=float(settings["lr"]),
        device=device,
    )
    return ensemble.cpu()


def _hybrid_amount(settings: Settings) -> str:
    return (
        f"{int(settings['members'])} members x {int(settings['epochs'])} epochs x "
        f"{int(settings['steps_per_epoch'])} steps"
    )


# ----------------------------------------------------------------------------- ambient GAN
def _build_ambient_gan(
    settings: Settings, seed: int, *, operator: Any, field_shape: tuple[int, int, int]
) -> Any:
    from uqdyn.models.ambient_gan import ConditionalAmbientGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConditionalAmbientGAN(
            operator,
            field_shape,
            base_channels=int(settings["base_channels"]),
            score_weight=float(settings["score_weight"]),
            consistency_weight=float(settings["consistency_weight"]),
        )


def _train_ambient_gan(
    model: Any,
    data: Any,
    settings: Settings,
    *,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> Any:
    from uqdyn.models.ambient_gan import fit_ambient_gan

    scheduler = str(settings["scheduler"])
    fit_ambient_gan(
        model,
        data,
        steps=int(settings["steps"]),
        batch_size=int(settings["batch_size"]),
        lr_g=float(settings["lr_g"]),
        scheduler=None if scheduler == "none" else scheduler,
        seed=seed,
        device=device,
        progress=progress,
    )
    return model.cpu().eval()


# ----------------------------------------------------------------------------- forecasters
def _none(value: Any) -> str | None:
    text = str(value)
    return None if text in ("", "none", "None") else text


def _forecaster_common(
    settings: Settings, seed: int, climatology: Any, season: str | None
) -> dict[str, Any]:
    return {
        "climatology": climatology,
        "center": _none(settings["center"]),
        "scale": _none(settings["scale"]),
        "season_features": bool(settings["season_features"]) and season is not None,
        "seed": seed,
    }


def _build_gp_forecaster(
    settings: Settings, seed: int, *, climatology: Any, season: str | None, **_: Any
) -> Any:
    from uqdyn.models.forecasters import GPForecaster

    return GPForecaster(
        kernel=str(settings["kernel"]),
        steps=int(settings["steps"]),
        lr=float(settings["lr"]),
        optimizer=str(settings["optimizer"]),
        max_points=int(settings["max_points"]),
        **_forecaster_common(settings, seed, climatology, season),
    )


def _build_np_forecaster(
    settings: Settings,
    seed: int,
    *,
    climatology: Any,
    season: str | None,
    gridded: bool,
    device: torch.device,
    progress: bool,
) -> Any:
    from uqdyn.models.forecasters import ConvCNPForecaster, NPForecaster

    options: dict[str, Any] = {
        "width": int(settings["width"]),
        "steps": int(settings["steps"]),
        "batch_size": int(settings["batch_size"]),
        "lr": float(settings["lr"]),
        "members": int(settings["members"]),
        "val_every": int(settings["val_every"]),
        "device": device,
        "progress": progress,
        **_forecaster_common(settings, seed, climatology, season),
    }
    if gridded:
        return ConvCNPForecaster(**options)
    return NPForecaster(model=settings["model"], **options)


def _train_forecaster(
    model: Any,
    data: tuple[Any, Any],
    settings: Settings,
    *,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> Any:
    """``model.fit(train, validation)``: the forecasters train (and select) themselves."""
    train, valid = data
    model.fit(train, valid)
    return model


def _np_amount(settings: Settings) -> str:
    members = int(settings["members"])
    return f"up to {int(settings['steps'])} steps" + (
        f" for each of {members} members" if members > 1 else ""
    )


#: The learned-model recipes by name. ``cnp`` and ``convcnp`` train with
#: :func:`uqdyn.train.fit` (``convcnp`` with a cosine learning-rate decay); ``hybrid`` is a deep
#: ensemble of APHYNITY models; ``ambient_gan`` a conditional AmbientGAN; ``gp_forecaster`` and
#: ``np_forecaster`` the forecasters of :mod:`uqdyn.models.forecasters` (``np_forecaster``: an
#: NP per window on series, a ConvCNP on gridded fields).
RECIPES: dict[str, Recipe] = {
    "cnp": Recipe("cnp", "CNP", _build_cnp, _fit_trainer(), _steps),
    "convcnp": Recipe(
        "convcnp", "ConvCNP", _build_convcnp, _fit_trainer(scheduler="cosine"), _steps
    ),
    "hybrid": Recipe("hybrid", "hybrid ensemble", _build_hybrid, _train_hybrid, _hybrid_amount),
    "ambient_gan": Recipe(
        "ambient_gan", "ambient GAN", _build_ambient_gan, _train_ambient_gan, _steps
    ),
    "gp_forecaster": Recipe(
        "gp_forecaster",
        "GP forecaster",
        _build_gp_forecaster,
        _train_forecaster,
        lambda s: f"{int(s['steps'])} {s['optimizer']} iterations per lead",
    ),
    "np_forecaster": Recipe(
        "np_forecaster", "NP forecaster", _build_np_forecaster, _train_forecaster, _np_amount
    ),
}


# ----------------------------------------------------------------------------- helpers
def field_points(
    frames: Tensor, times: Tensor, grid: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Point sets of field frames.

    Parameters
    ----------
    frames:
        ``(B, T, C, H, W)``.
    times:
        ``(T,)`` times of the frames.
    grid:
        ``(y (H,), x (W,))`` coordinates.

    Returns
    -------
    x ``(B, T*H*W, 3)`` with columns ``(t, y, x)`` (time-major) and y ``(B, T*H*W, C)``.
    """
    b, t, c, h, w = frames.shape
    tt, yy, xx = torch.meshgrid(times, grid[0], grid[1], indexing="ij")
    x = torch.stack([tt, yy, xx], dim=-1).reshape(1, t * h * w, 3).expand(b, -1, -1)
    y = frames.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
    return x.to(frames), y


def vector_points(values: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
    """Point sets of vector trajectories: x ``(B, T, 1)`` the times, y ``(B, T, D)``."""
    b = values.shape[0]
    return times.to(values).reshape(1, -1, 1).expand(b, -1, -1), values


def predict_cnp(model: CNP, xc: Tensor, yc: Tensor, xt: Tensor, *, batch_size: int = 8) -> Normal:
    """CNP predictive ``(B, Nt, y_dim)`` on the CPU for full context/target sets, in batches."""
    device = next(model.parameters()).device
    locs, scales = [], []
    with torch.no_grad():
        for start in range(0, xc.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            pred = model(xc[sl].to(device), yc[sl].to(device), xt[sl].to(device))
            locs.append(pred.mean.cpu())
            scales.append(pred.stddev.cpu())
    return Normal(torch.cat(locs), torch.cat(scales))


def predict_convcnp(
    model: ConvCNP, y: Tensor, mask: Tensor | None = None, *, batch_size: int = 16
) -> Normal:
    """ConvCNP predictive ``(B, C_out, H, W)`` on the CPU for contexts ``y (B, C_in, H, W)``."""
    device = next(model.parameters()).device
    locs, scales = [], []
    with torch.no_grad():
        for start in range(0, y.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            m = None if mask is None else mask[sl].to(device)
            pred = model(y[sl].to(device), mask_context=m)
            locs.append(pred.mean.cpu())
            scales.append(pred.stddev.cpu())
    return Normal(torch.cat(locs), torch.cat(scales))
