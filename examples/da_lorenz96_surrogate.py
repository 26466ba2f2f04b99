"""EnKF on Lorenz-96 with the true model and with a learned uqdyn surrogate (DAPPER).

The setting is DAPPER's Sakov et al. (2008) Lorenz-96 benchmark: 40 variables, F = 8,
dt = 0.05, every variable observed every step with R = I, and the square-root EnKF (ETKF)
``EnKF('Sqrt', N=24, infl=1.013, rot=True)`` whose documented analysis RMSE is about 0.18.
It runs three forecast models over several seeds:

* ``true``: DAPPER's own Lorenz-96 step (classical RK4);
* ``surrogate``: a :class:`~uqdyn.models.surrogate.PeriodicConvTendency` network trained with
  :func:`uqdyn.train.fit` on simulated trajectories (:func:`uqdyn.data.pairs.lorenz96_pairs`),
  as a deterministic :class:`~uqdyn.da.ForecastOperator` taking one classical RK4 step per
  cycle (the discretisation it was trained through);
* ``surrogate+error``: the same network plus draws from its learned model-error Predictive
  (:class:`~uqdyn.models.surrogate.DiagonalNormalError`).

The truth and observations come from the true model (the same for every forecast model at a
seed). It reports the time-averaged analysis RMSE and spread (DAPPER's ``rmse.a`` and
``rmv.a``) and flags filter divergence (RMSE above twice the spread, a non-finite forecast or
an RMSE above 1).

Usage::

    python examples/da_lorenz96_surrogate.py --quick    # CI smoke run, about a minute on CPU
    python examples/da_lorenz96_surrogate.py            # the study (longer training and cycling)

The surrogate is built under ``uqdyn.seeded(0)`` and trained with ``fit(seed=0)``, and
DAPPER's simulations and filters are seeded per seed, so a command prints the same numbers
in every run.

Needs the ``da`` extra (``pip install uqdyn[da]``: DAPPER and filterpy).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

import uqdyn
from uqdyn.da import ForecastOperator, to_dapper
from uqdyn.data.pairs import lorenz96_pairs
from uqdyn.models.surrogate import (
    DiagonalNormalError,
    PeriodicConvTendency,
    fit_model_error,
    fit_tendency_surrogate,
    one_step_residuals,
)

DT = 0.05


@dataclass
class Settings:
    train_trajectories: int
    train_steps_per_trajectory: int
    fit_steps: int
    width: int
    cycles: int  # observation cycles after the burn-in
    burn_in: float  # time units discarded from the averages
    seeds: tuple[int, ...]
    batch_size: int = 128
    infl: float = 1.013
    n_members: int = 24


QUICK = Settings(
    train_trajectories=16,
    train_steps_per_trajectory=100,
    fit_steps=150,
    width=16,
    cycles=150,
    burn_in=2.5,
    seeds=(3,),
)
FULL = Settings(
    train_trajectories=64,
    train_steps_per_trajectory=400,
    fit_steps=3000,
    width=24,
    cycles=1000,
    burn_in=10.0,
    seeds=(3, 4, 5, 6),
)


def train_surrogate(
    settings: Settings, seed: int = 0
) -> tuple[PeriodicConvTendency, DiagonalNormalError, dict]:
    """Train the tendency network and its model-error Normal; return them and diagnostics."""
    generator = torch.Generator().manual_seed(seed)
    train = lorenz96_pairs(
        settings.train_trajectories,
        settings.train_steps_per_trajectory,
        DT,
        generator=generator,
    )
    val = lorenz96_pairs(8, 100, DT, generator=generator)
    held_out = lorenz96_pairs(16, 100, DT, generator=generator)
    with uqdyn.seeded(seed):  # the initial weights depend only on the seed
        surrogate = PeriodicConvTendency.from_data(train, DT, width=settings.width)
    start = time.perf_counter()
    fit_tendency_surrogate(
        surrogate,
        train,
        DT,
        val_pairs=val,
        steps=settings.fit_steps,
        batch_size=settings.batch_size,
        seed=seed,
    )
    train_seconds = time.perf_counter() - start
    residuals = one_step_residuals(surrogate, held_out, DT)
    error = DiagonalNormalError(train[0].shape[1], DT, sigma=float(residuals.std()))
    error_fit = fit_model_error(error, residuals.float(), seed=seed)
    increments = held_out[1] - held_out[0]
    info = {
        "train_pairs": int(train[0].shape[0]),
        "train_seconds": round(train_seconds, 1),
        "one_step_rmse": float(residuals.square().mean().sqrt()),
        "persistence_rmse": float(increments.square().mean().sqrt()),
        "error_sigma_mean": float(error.sigma.detach().mean()),
        "error_bias_mean_abs": float(error.bias.detach().abs().mean()),
        "error_fit_converged": error_fit.converged,
    }
    return surrogate, error, info


def run_filter(hmm, xx, yy, settings: Settings, seed: int) -> dict:
    """Run DAPPER's EnKF('Sqrt') on ``hmm`` against truth ``xx`` and observations ``yy``."""
    from dapper.da_methods.ensemble import EnKF
    from dapper.tools.seeding import set_seed

    xp = EnKF("Sqrt", N=settings.n_members, infl=settings.infl, rot=True)
    set_seed(seed + 1000)
    start = time.perf_counter()
    try:
        xp.assimilate(hmm, xx, yy, liveplots=False)
    except ValueError as error:  # a non-finite forecast: the filter diverged
        return {"rmse": float("nan"), "spread": float("nan"), "diverged": True, "error": str(error)}
    seconds = time.perf_counter() - start
    xp.stats.average_in_time()
    rmse = float(xp.avrgs.err.rms.a.val)
    spread = float(xp.avrgs.spread.rms.a.val)
    diverged = not np.isfinite(rmse) or rmse > 2.0 * spread or rmse > 1.0
    return {"rmse": rmse, "spread": spread, "diverged": bool(diverged), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI settings")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--fit-steps", type=int, default=None, help="override the surrogate's training steps"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import dapper.mods as modelling
    import dapper.tools.progressbar as progressbar
    from dapper.mods.Lorenz96.sakov2008 import HMM as SAKOV_HMM
    from dapper.tools.seeding import set_seed

    progressbar.disable_progbar = True
    settings = QUICK if args.quick else FULL
    if args.fit_steps is not None:
        settings = replace(settings, fit_steps=args.fit_steps)
    print(f"settings: {settings}")

    surrogate, error, info = train_surrogate(settings)
    print(
        f"surrogate: {info['train_pairs']} training pairs, {settings.fit_steps} steps in "
        f"{info['train_seconds']} s; one-step RMSE {info['one_step_rmse']:.4g} "
        f"(persistence {info['persistence_rmse']:.4g}); model-error sigma "
        f"{info['error_sigma_mean']:.4g}, |bias| {info['error_bias_mean_abs']:.3g} "
        f"(maximum-likelihood fit converged: {info['error_fit_converged']})"
    )

    base = SAKOV_HMM.copy()
    burn_steps = round(settings.burn_in / DT)
    base.tseq = modelling.Chronology(
        DT, dko=1, Ko=burn_steps + settings.cycles - 1, BurnIn=settings.burn_in
    )
    operators = {
        # one classical RK4 step per cycle: the step the surrogate was trained through
        "surrogate": ForecastOperator(surrogate, method="rk4_classic", substeps=1),
        "surrogate+error": ForecastOperator(
            surrogate, method="rk4_classic", substeps=1, model_error=error, seed=0
        ),
    }
    results: dict[str, list[dict]] = {"true": [], "surrogate": [], "surrogate+error": []}
    for seed in settings.seeds:
        set_seed(seed)
        xx, yy = base.simulate()
        results["true"].append(run_filter(base, xx, yy, settings, seed))
        for name, operator in operators.items():
            operator.generator.manual_seed(seed)
            hmm = base.copy()
            hmm.Dyn = modelling.Operator(**to_dapper(operator))
            results[name].append(run_filter(hmm, xx, yy, settings, seed))
        line = ", ".join(
            f"{name} rmse {runs[-1]['rmse']:.4f} spread {runs[-1]['spread']:.4f}"
            + (" DIVERGED" if runs[-1]["diverged"] else "")
            for name, runs in results.items()
        )
        print(f"seed {seed}: {line}")

    print()
    print("| forecast model | analysis RMSE | analysis spread | spread/RMSE | diverged runs |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, runs in results.items():
        rmse = np.array([r["rmse"] for r in runs])
        spread = np.array([r["spread"] for r in runs])
        ratio = spread / rmse
        summary[name] = {
            "rmse_mean": float(np.mean(rmse)),
            "rmse_std": float(np.std(rmse)),
            "spread_mean": float(np.mean(spread)),
            "ratio_mean": float(np.mean(ratio)),
            "diverged": int(sum(r["diverged"] for r in runs)),
        }
        s = summary[name]
        print(
            f"| {name} | {s['rmse_mean']:.4f} ± {s['rmse_std']:.4f} | {s['spread_mean']:.4f} "
            f"| {s['ratio_mean']:.3f} | {s['diverged']}/{len(runs)} |"
        )
    true_rmse = summary["true"]["rmse_mean"]
    for name in ("surrogate", "surrogate+error"):
        excess = summary[name]["rmse_mean"] / true_rmse - 1.0
        print(f"{name}: RMSE {100 * excess:+.1f}% vs true model (target within 15%)")
    closer = abs(summary["surrogate+error"]["ratio_mean"] - 1) < abs(
        summary["surrogate"]["ratio_mean"] - 1
    )
    print(f"stochastic spread/RMSE closer to 1 than deterministic: {closer}")

    if args.out:
        payload = {
            "settings": settings.__dict__,
            "surrogate": info,
            "results": results,
            "summary": summary,
        }
        directory = os.path.dirname(os.path.abspath(args.out))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
            json.dump(payload, f, indent=2, default=list)
        os.replace(f.name, args.out)


if __name__ == "__main__":
    main()
