"""Reproduce APHYNITY's reaction-diffusion rows (Yin et al., ICLR 2021, Table 1).

Truth: FitzHugh-Nagumo on a 32x32 periodic grid of ``[-1, 1]^2``,

    du/dt = a lap(u) + u - u^3 - k - v,    dv/dt = b lap(v) + u - v,

``a = 1e-3``, ``b = 5e-3``, ``k = 5e-3``; initial ``u, v`` independent uniform in
``[0, 1]`` at every grid point; states every ``dt = 0.1`` up to ``t = 3`` (30 steps), data
integrated with rk4 at step 0.01 (float64, stored as float32).

Models, integrated with rk4 at the data step ``dt`` from each sequence's first state:

* "Param PDE (a, b)": the incomplete physics, diffusion only (``a lap(u)``, ``b lap(v)``,
  the reaction terms missing), ``a`` and ``b`` learned from ``3e-3`` each (float32);
* "data-only": a :class:`~uqdyn.models.hybrid.ConvAugmentation` alone (3x3 circular
  convolutions, 2 -> 16 -> 16 -> 2, tanh), a neural ODE on the grid;
* "APHYNITY Param PDE (a, b)": the incomplete physics plus the same network, adaptive
  Lagrangian (``lambda_0 = 1000``, ``tau_2 = 1``, 10 Adam steps per multiplier update; a
  large ``lambda_0`` because the reaction terms the network must supply have a mean square
  of order 0.1 against a target MSE of order 1e-3, and with ``lambda_0 = 1`` the
  multiplier grows too slowly for a short schedule); three
  members from different seeds on bootstrap resamples, which also form a deep ensemble
  calibrated on held-out validation sequences (:meth:`HybridEnsemble.calibrate`) for CRPS
  and 90% interval coverage.

Metric: natural log of the test MSE over all sequences, times ``t > 0``, both channels and
all grid points; parameter error ``||(a, b)_hat - (a, b)|| / ||(a, b)||`` (relative
Euclidean error). Published (log MSE, parameter error): Param PDE (a, b) alone -1.26
(67.6%), APHYNITY -5.10 +/- 0.21 (2.3%).

Modes:

* default (the paper's sizes; use ``--device cuda``): 1600 train / 320 test / 160
  validation sequences, training on the full 30-step horizon, batch 32, 300 multiplier
  updates, Adam learning rate 1e-3 (physical parameters 1e-2);
* ``--cpu``: reduced for one CPU thread (about 7 minutes of CPU time): 32 train / 16
  validation / 16 test sequences, training on the first 10 steps (``t <= 1``) and testing
  on the full 30 steps, batch 8, 15 multiplier updates, learning rate 5e-3 (physical
  parameters, stored through their logarithms, 5e-2: ``fit_aphynity(physics_lr=...)``);
* ``--quick``: a smoke test of a few seconds (numbers not comparable).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

import uqdyn
from uqdyn.calibration import coverage
from uqdyn.models.hybrid import (
    ConvAugmentation,
    HybridDynamics,
    HybridEnsemble,
    fit_aphynity,
    fit_hybrid_ensemble,
)
from uqdyn.physics import FitzHughNagumo, simulate
from uqdyn.physics.grid import laplacian
from uqdyn.predictive import Ensemble

A, B, K = 1e-3, 5e-3, 5e-3
DT = 0.1
HORIZON = 30
PUBLISHED = {
    "Param PDE (a, b)": (-1.26, 67.6),
    "data-only (ConvAugmentation)": (None, None),
    "APHYNITY Param PDE (a, b)": (-5.10, 2.3),
}


@dataclass
class Settings:
    """Sizes of one run."""

    train: int
    validation: int
    test: int
    train_steps: int
    test_steps: int
    batch: int
    epochs: int
    lr: float
    members: int
    physics_lr: float
    grid: int = 32


FULL = Settings(1600, 160, 320, HORIZON, HORIZON, 32, 300, 1e-3, 3, 1e-2)
CPU = Settings(32, 16, 16, 10, HORIZON, 8, 15, 5e-3, 3, 5e-2)
QUICK = Settings(8, 4, 4, 3, 5, 4, 2, 5e-3, 2, 5e-2, grid=16)


class DiffusionOnly(FitzHughNagumo):
    """The incomplete model: FitzHugh-Nagumo's diffusion terms without the reaction.

    ``du/dt = a lap(u)``, ``dv/dt = b lap(v)``; state ``(batch, 2, height, width)``. ``k``
    is unused and frozen.
    """

    def __init__(self, size: tuple[int, int], *, a: float, b: float) -> None:
        super().__init__(size, a=a, b=b)
        self.k.requires_grad_(False)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Diffusion tendencies, shape ``(batch, 2, height, width)``."""
        lap = laplacian(state, self.spacing)
        du = self._per_sample(self.a, state) * lap[:, 0:1]
        dv = self._per_sample(self.b, state) * lap[:, 1:2]
        return torch.cat([du, dv], dim=1)


def make_data(n: int, steps: int, grid: int, generator: torch.Generator) -> Tensor:
    """``n`` sequences of shape ``(steps + 1, 2, grid, grid)`` from the true system."""
    truth = FitzHughNagumo((grid, grid), a=A, b=B, k=K).double()
    state0 = truth.initial_state(n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        data = simulate(truth, state0, times(steps).double(), "rk4", step_size=0.01)
    return data.float()


def times(steps: int) -> Tensor:
    return torch.arange(steps + 1, dtype=torch.float32) * DT


def network() -> ConvAugmentation:
    return ConvAugmentation(2, hidden=16, depth=2)


def incomplete(grid: int) -> DiffusionOnly:
    return DiffusionOnly((grid, grid), a=3e-3, b=3e-3)


def rollout(model: HybridDynamics, data: Tensor, chunk: int = 16) -> Tensor:
    """Rollouts from each sequence's first state, in chunks (no gradients)."""
    steps = data.shape[1] - 1
    with torch.no_grad():
        parts = [
            simulate(model, data[i : i + chunk, 0], times(steps), "rk4", step_size=DT)
            for i in range(0, len(data), chunk)
        ]
    return torch.cat(parts)


def log_mse(model: HybridDynamics, data: Tensor) -> float:
    prediction = rollout(model, data)
    return math.log(float((prediction[:, 1:] - data[:, 1:]).square().mean()))


def parameter_error(model: HybridDynamics) -> float:
    physics = model.physics
    assert physics is not None
    estimate = torch.stack([physics.a.detach(), physics.b.detach()]).double()
    truth = torch.tensor([A, B], dtype=torch.float64)
    return float((estimate - truth).norm() / truth.norm())


def min_norm_parameters(trajectories: Tensor) -> tuple[float, float, float]:
    """``(a*, b*, error)``: the diffusion coefficients of APHYNITY's exact optimum.

    On the states of ``trajectories`` ``(n, time, 2, H, W)`` the network must supply
    ``F_true - F_phys(a, b) = reaction + (A - a) lap u, (B - b) lap v``; minimising its
    mean square over ``(a, b)`` is a least-squares projection of the reaction terms on the
    Laplacians: ``a* = A + <r_u, lap u> / ||lap u||^2`` (and ``b*`` likewise). ``error``
    is the parameter error of ``(a*, b*)``: what the minimal-norm criterion itself gives
    on this data, whatever the training.
    """
    states = trajectories.reshape(-1, *trajectories.shape[2:]).double()
    spacing = FitzHughNagumo((states.shape[-2], states.shape[-1])).spacing
    lap = laplacian(states, spacing)
    u, v = states[:, 0], states[:, 1]
    reaction_u, reaction_v = u - u**3 - K - v, u - v
    a = A + float((reaction_u * lap[:, 0]).sum() / lap[:, 0].square().sum())
    b = B + float((reaction_v * lap[:, 1]).sum() / lap[:, 1].square().sum())
    error = math.hypot(a - A, b - B) / math.hypot(A, B)
    return a, b, error


def uncertainty(
    ensemble: HybridEnsemble, test: Tensor, draws: int, seed: int, chunk: int = 8
) -> dict[str, float]:
    """CRPS and 90% coverage of the raw and calibrated ensembles on ``test`` (t > 0)."""
    steps = test.shape[1] - 1
    generator = torch.Generator().manual_seed(seed)
    sums = {"raw_crps": 0.0, "raw_cov": 0.0, "cal_crps": 0.0, "cal_cov": 0.0}
    count = 0
    for i in range(0, len(test), chunk):
        part = test[i : i + chunk]
        target = part[:, 1:]
        paths = ensemble.rollouts(part[:, 0], times(steps), step_size=DT)[:, :, 1:]
        raw = Ensemble(paths)
        calibrated = Ensemble(
            ensemble.forecast(
                part[:, 0], times(steps), step_size=DT, draws=draws, generator=generator
            ).members[:, :, 1:]
        )
        n = target.numel()
        sums["raw_crps"] += float(raw.crps(target).sum())
        sums["raw_cov"] += float(coverage(target, raw, 0.9)) * n
        sums["cal_crps"] += float(calibrated.crps(target).sum())
        sums["cal_cov"] += float(coverage(target, calibrated, 0.9)) * n
        count += n
    return {key: value / count for key, value in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cpu", action="store_true", help="reduced sizes for one CPU thread")
    mode.add_argument("--quick", action="store_true", help="smoke test (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="training device, e.g. cuda")
    parser.add_argument("--epochs", type=int, default=None, help="multiplier updates")
    parser.add_argument(
        "--physics-lr", type=float, default=None, help="Adam learning rate of log a, log b"
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else CPU if args.cpu else FULL
    if args.epochs is not None:
        settings.epochs = args.epochs
    if args.physics_lr is not None:
        settings.physics_lr = args.physics_lr
    if args.device == "cpu":
        torch.set_num_threads(1)
    uqdyn.seed_everything(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    grid = settings.grid
    train = make_data(settings.train, settings.train_steps, grid, generator)
    validation = make_data(settings.validation, settings.test_steps, grid, generator)
    test = make_data(settings.test, settings.test_steps, grid, generator)
    train_times = times(settings.train_steps)
    options = {
        "epochs": settings.epochs,
        "steps_per_epoch": 10,
        "batch_size": settings.batch,
        "lr": settings.lr,
        "physics_lr": settings.physics_lr,
        "step_size": DT,
        "multiplier": 1e3,
        "multiplier_rate": 1.0,
        "device": args.device,
    }
    rows: list[tuple[str, float, float | None, float | None]] = []
    started = time.perf_counter()

    physics_only = HybridDynamics(incomplete(grid), None)
    fit_aphynity(physics_only, train, train_times, seed=args.seed, **options)
    physics_only.cpu()
    rows.append(("Param PDE (a, b)", log_mse(physics_only, test), parameter_error(physics_only), 0))
    print(f"physics only done ({time.perf_counter() - started:.0f} s)", flush=True)

    torch.manual_seed(args.seed)
    data_only = HybridDynamics(None, network(), state_shape=(2, grid, grid))
    fit_aphynity(data_only, train, train_times, seed=args.seed, **options)
    data_only.cpu()
    rows.append(("data-only (ConvAugmentation)", log_mse(data_only, test), None, 0))
    print(f"data-only done ({time.perf_counter() - started:.0f} s)", flush=True)

    ensemble, results = fit_hybrid_ensemble(
        lambda: HybridDynamics(incomplete(grid), network()),
        train,
        train_times,
        members=settings.members,
        bootstrap=True,
        seed=args.seed,
        **options,
    )
    ensemble.cpu()
    ensemble.calibrate(validation, times(settings.test_steps), step_size=DT)
    scores = torch.tensor([log_mse(m, test) for m in ensemble.members])  # type: ignore[arg-type]
    errors = torch.tensor([parameter_error(m) for m in ensemble.members])  # type: ignore[arg-type]
    spread = float(scores.std()) if len(scores) > 1 else 0.0
    rows.append(("APHYNITY Param PDE (a, b)", float(scores.mean()), float(errors.mean()), spread))
    seconds = time.perf_counter() - started

    print(
        f"reaction-diffusion {grid}x{grid}: {settings.train} train / {settings.validation} "
        f"validation / {settings.test} test sequences; training horizon {settings.train_steps} "
        f"steps, test horizon {settings.test_steps} steps of dt = {DT}; {settings.epochs} "
        f"epochs x 10 steps, batch {settings.batch}, lr {settings.lr}, "
        f"physics lr {settings.physics_lr}"
    )
    print(f"{'model':30s} {'log MSE':>16s} {'param err':>10s} {'published':>16s}")
    for name, score, error, std in rows:
        published = PUBLISHED[name]
        err = "-" if error is None else f"{100 * error:.1f}%"
        pub = "-" if published[0] is None else f"{published[0]:.2f} ({published[1]}%)"
        value = f"{score:.2f}" + (f" +/- {std:.2f}" if std else "")
        print(f"{name:30s} {value:>16s} {err:>10s} {pub:>16s}")
    a = ensemble.parameters_of("a").tolist()
    b = ensemble.parameters_of("b").tolist()
    print(f"APHYNITY members: log MSE {[round(s, 2) for s in scores.tolist()]}")
    print(f"APHYNITY members: a = {[f'{x:.3e}' for x in a]}, b = {[f'{x:.3e}' for x in b]}")
    physics = physics_only.physics
    assert physics is not None
    print(
        f"Param PDE alone: a = {float(physics.a.detach()):.3e}, b = {float(physics.b.detach()):.3e}"
    )
    print(f"final ||F_aug||^2 per member: {[f'{r.augmentation_norm[-1]:.3e}' for r in results]}")
    a_star, b_star, error_star = min_norm_parameters(train)
    print(
        f"minimal-norm optimum on the training states: a* = {a_star:.3e}, b* = {b_star:.3e}, "
        f"parameter error {100 * error_star:.1f}%"
    )
    print(f"training time {seconds:.0f} s")
    draws = 8 if args.quick else 32
    scores_u = uncertainty(ensemble, test, draws, args.seed)
    print(
        f"deep ensemble ({len(ensemble)} members, raw): CRPS {scores_u['raw_crps']:.3e}, "
        f"90% coverage {scores_u['raw_cov']:.3f}"
    )
    print(
        f"deep ensemble calibrated on {settings.validation} validation sequences "
        f"({draws} draws per member): CRPS {scores_u['cal_crps']:.3e}, "
        f"90% coverage {scores_u['cal_cov']:.3f}"
    )


if __name__ == "__main__":
    main()
