"""A Gaussian process versus a neural process on the same interpolation tasks.

Tasks come from damped-pendulum trajectories with random frequency and damping: a few
observed states (context) and the states at other times of the same trajectory (targets).
Two models answer every task with a predictive distribution:

* ``ContextGP``: an exact GP (RBF kernel, independent outputs) whose hyperparameters are
  fitted by marginal likelihood on each task's context alone;
* ``CNP``: a conditional neural process trained on tasks from other trajectories.

Both are scored on the same held-out tasks: mean CRPS, negative log-likelihood per target
value and the coverage of the central 50% and 90% intervals (calibrated: 0.50 and 0.90).

Usage: ``python examples/gp_vs_np.py [--quick] [--tasks N] [--seed S]``; ``--quick`` uses few
tasks and training steps (a smoke test, seconds on one CPU core, numbers not converged).
``uqdyn.seed_everything(seed)`` fixes the CNP's initial weights (the same numbers in every
process).
"""

from __future__ import annotations

import argparse

import torch

import uqdyn
from uqdyn.calibration import coverage
from uqdyn.data import TaskSampler, simulate_dataset, split_dataset
from uqdyn.models.gp import ContextGP
from uqdyn.models.neural_process import CNP
from uqdyn.train import fit


def score(forecast, task) -> dict[str, float]:
    """Mean CRPS, NLL and 50%/90% coverage over the real targets of ``task``."""
    mask = task.mask_target.unsqueeze(-1).expand_as(task.y_target)
    cover = coverage(task.y_target, forecast, [0.5, 0.9], mask=mask)
    return {
        "crps": float(forecast.crps(task.y_target)[mask].mean()),
        "nll": float(-forecast.log_prob(task.y_target)[mask].mean()),
        "coverage_50": float(cover[0]),
        "coverage_90": float(cover[1]),
    }


def main(
    quick: bool = False, n_tasks: int | None = None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Fit both models, score them on the same tasks, print and return the table."""
    torch.set_num_threads(1)
    uqdyn.seed_everything(seed)  # the CNP's initial weights; fit() seeds its own draws
    n_tasks = n_tasks or (8 if quick else 128)
    times = torch.linspace(0.0, 10.0, 41)
    ranges = {"omega0": (0.8, 1.6), "alpha": (0.05, 0.3)}
    ds = simulate_dataset("damped_pendulum", 100 if quick else 500, times, ranges, device="cpu")
    train_ds, test_ds = split_dataset(ds, (0.8, 0.2), seed=0)
    setting = {"setting": "interpolation", "num_context": (5, 15), "num_target": 20}
    train = TaskSampler.from_dataset(train_ds, ["state"], **setting)
    test = TaskSampler.from_dataset(test_ds, ["state"], **setting)
    task = test.sample(n_tasks, generator=1)  # the same held-out tasks for both models

    cnp = CNP(x_dim=1, y_dim=2, width=64)
    fit(
        cnp,
        lambda g: train.sample(32, generator=g),
        steps=300 if quick else 3000,
        lr=2e-3,
        device="cpu",
        seed=seed,
        progress=False,
    )
    gp = ContextGP(x_dim=1, y_dim=2, kernel="rbf", steps=30 if quick else 100)
    with torch.no_grad():
        cnp_forecast = cnp.predict(task)
    table = {"CNP": score(cnp_forecast, task), "ContextGP": score(gp(task), task)}

    print(f"{n_tasks} held-out interpolation tasks, {int(task.mask_target.sum())} targets")
    print("| model | CRPS | NLL | coverage 50% | coverage 90% |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['crps']:.4f} | {row['nll']:.3f} | {row['coverage_50']:.3f} | "
            f"{row['coverage_90']:.3f} |"
        )
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (smoke test)")
    parser.add_argument("--tasks", type=int, default=None, help="number of held-out tasks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and training")
    args = parser.parse_args()
    main(quick=args.quick, n_tasks=args.tasks, seed=args.seed)
