"""Probabilistic forecasting of a damped pendulum with a conditional neural process (CNP).

Each task gives the first part of a trajectory (angle and angular velocity at a few random
times) as context and asks for the distribution of the state at later times. The CNP is
trained on simulated trajectories with random frequency and damping, then scored on
held-out trajectories: CRPS (lower is better) and the coverage of its central 50% and 90%
intervals (a calibrated forecast covers about 0.50 and 0.90). A climatological forecast
(the training mean and standard deviation of each component) is the reference.

Usage: ``python examples/cnp_forecast.py [--quick] [--steps N] [--seed S]``; ``--quick``
trains for a few hundred steps on a small dataset (a smoke test, seconds on one CPU core).
``uqdyn.seed_everything(seed)`` at the start fixes the initial weights, so the same command
prints the same numbers in every process (on the same machine and number of threads).
"""

from __future__ import annotations

import argparse

import torch

import uqdyn
from uqdyn.calibration import coverage
from uqdyn.data import TaskSampler, simulate_dataset, split_dataset
from uqdyn.models.neural_process import CNP
from uqdyn.predictive import Normal
from uqdyn.train import fit


def main(quick: bool = False, steps: int | None = None, seed: int = 0) -> dict[str, float]:
    """Train and score a CNP forecaster; returns the scores printed."""
    torch.set_num_threads(1)
    uqdyn.seed_everything(seed)  # the CNP's initial weights; fit() seeds its own draws
    steps = steps or (300 if quick else 3000)
    # --- the user code: data, tasks, model, training, scores ------------------------------
    times = torch.linspace(0.0, 10.0, 41)
    ranges = {"omega0": (0.8, 1.6), "alpha": (0.05, 0.3)}
    ds = simulate_dataset("damped_pendulum", 100 if quick else 500, times, ranges, device="cpu")
    train_ds, test_ds = split_dataset(ds, (0.8, 0.2), seed=0)
    tasks = {"setting": "extrapolation", "num_context": (5, 15), "num_target": (10, 20)}
    train = TaskSampler.from_dataset(train_ds, ["state"], **tasks)
    test = TaskSampler.from_dataset(test_ds, ["state"], **tasks)

    model = CNP(x_dim=1, y_dim=2, width=64)
    fit(model, lambda g: train.sample(32, generator=g),
        steps=steps, lr=2e-3, device="cpu", seed=seed, progress=False)  # fmt: skip

    task = test.sample(256, generator=1)  # held-out trajectories
    with torch.no_grad():
        forecast = model.predict(task)  # Normal, batch_shape (256, targets, 2)
    mask = task.mask_target.unsqueeze(-1).expand_as(task.y_target)  # real target points
    crps = forecast.crps(task.y_target)[mask].mean()
    cover = coverage(task.y_target, forecast, [0.5, 0.9], mask=mask)
    # --------------------------------------------------------------------------------------
    values = train.values.reshape(-1, 2)
    clim = Normal(values.mean(0).expand_as(task.y_target), values.std(0).expand_as(task.y_target))
    scores = {
        "cnp_crps": float(crps),
        "cnp_coverage_50": float(cover[0]),
        "cnp_coverage_90": float(cover[1]),
        "climatology_crps": float(clim.crps(task.y_target)[mask].mean()),
    }
    print(f"CNP forecast, {steps} training steps, {int(task.mask_target.sum())} held-out targets")
    print(f"  CRPS {scores['cnp_crps']:.4f} (climatology {scores['climatology_crps']:.4f})")
    print(
        f"  coverage of the 50% / 90% intervals: {scores['cnp_coverage_50']:.3f} / "
        f"{scores['cnp_coverage_90']:.3f}"
    )
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and training")
    args = parser.parse_args()
    main(quick=args.quick, steps=args.steps, seed=args.seed)
