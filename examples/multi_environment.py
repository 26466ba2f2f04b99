"""Generalising across environments: CoDA, LEADS and three baselines on CoDA's protocol.

For each system (Lotka-Volterra; Gray-Scott), every model is trained on the training
environments (several seeds: a deep ensemble), adapted to each new environment from one
trajectory, and scored on that environment's test trajectories:

* the mean squared error of each seed's rollouts in-domain and after adaptation (the CoDA
  protocol's metric), mean over seeds with a 90% t-interval;
* in-domain, the CRPS, 90% coverage and spread-skill ratio of the seeds' rollouts (each
  with its in-domain rollout error as its Normal's scale);
* after adaptation, the CRPS (90% case-bootstrap interval), 90% coverage and spread-skill
  ratio of the
  forecasts (an equal mixture of Normals around the seeds' rollouts, plus Laplace-posterior
  context draws for CoDA), raw and after variance scaling fitted on separate calibration
  environments (also adapted from one trajectory);
* CoDA's parameter error: an affine map from the training environments' contexts to their
  (beta, delta) or (F, k), applied to the adapted contexts;
* the seconds to adapt one new environment.

Torch runs with one thread. ``--quick`` runs Lotka-Volterra only at a tiny budget.

    python examples/multi_environment.py                   # both systems (CPU: about 1 h)
    python examples/multi_environment.py --systems lotka_volterra
    python examples/multi_environment.py --quick
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy import stats

import uqdyn
from uqdyn.calibration import VarianceScaling, coverage, spread_skill_ratio
from uqdyn.scoring import crps
from uqdyn.study.multi_environment import (
    MODEL_NAMES,
    Settings,
    parameter_rmse,
    run_environments,
)

#: Settings per system for the full run (quick: see ``QUICK``).
FULL = {
    "lotka_volterra": Settings(
        members=3, steps=2000, lr=3e-3, adapt_steps=300, adapt_lr=2e-2, adapt_lr_network=3e-3, hidden=64,
        laplace_draws=8, n_test=32,
    ),
    "gray_scott": Settings(
        members=2, steps=600, lr=3e-3, adapt_steps=150, adapt_lr=2e-2, adapt_lr_network=3e-3, hidden=16,
        laplace_draws=4, n_test=8,
    ),
}  # fmt: skip
QUICK = {
    "lotka_volterra": Settings(
        members=2, steps=60, adapt_steps=20, hidden=16, laplace_draws=2, n_test=3
    ),
}


def t_interval(values: list[float], level: float = 0.9) -> tuple[float, float, float]:
    """Mean and the two-sided ``level`` Student-t interval over seeds."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def case_bootstrap(per_case: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """90% bootstrap interval of the mean over cases (the first axis)."""
    g = np.random.default_rng(seed)
    idx = g.integers(0, len(per_case), size=(n_boot, len(per_case)))
    means = per_case[idx].mean(axis=1)
    return float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95))


def score_system(system: str, settings: Settings, seed: int) -> dict:
    start = time.perf_counter()
    r = run_environments(system, settings=settings, seed=seed, progress=True)
    out: dict = {"system": system, "settings": vars(settings), "models": {}}
    for name in MODEL_NAMES:
        row: dict = {
            "mse_in": t_interval(r.mse_in[name]),
            "mse_adapt": t_interval(r.mse_adapt[name]),
            "adapt_seconds": float(np.median(r.adapt_seconds[name]))
            if r.adapt_seconds[name]
            else None,
        }
        inside = r.forecasts_in[name]
        pointwise_in = crps(r.obs_in, inside)
        row["in_domain"] = {
            "crps": float(pointwise_in.double().mean()),
            "coverage90": float(coverage(r.obs_in, inside, 0.9)),
            "ssr": float(spread_skill_ratio(r.obs_in, inside)),
        }
        raw = r.forecasts_adapt[name]
        scaled = VarianceScaling().fit(r.obs_calib, r.forecasts_calib[name]).transform(raw)
        for label, fc in (("raw", raw), ("calibrated", scaled)):
            pointwise = crps(r.obs_adapt, fc)
            per_case = pointwise.reshape(pointwise.shape[0], -1).mean(1).double().numpy()
            row[label] = {
                "crps": float(per_case.mean()),
                "crps_ci": case_bootstrap(per_case, seed=seed),
                "coverage90": float(coverage(r.obs_adapt, fc, 0.9)),
                "ssr": float(spread_skill_ratio(r.obs_adapt, fc)),
            }
        out["models"][name] = row
    names, rmse = parameter_rmse(r.param_error)
    out["parameter_rmse"] = {n: t_interval(rmse[:, i].tolist()) for i, n in enumerate(names)}
    out["seconds"] = time.perf_counter() - start
    return out


def _fmt(mean_lo_hi: tuple[float, float, float]) -> str:
    mean, lo, hi = mean_lo_hi
    return f"{mean:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else f"{mean:.3g}"


def print_tables(result: dict) -> None:
    s = result["settings"]
    print(
        f"\n## {result['system']}: {s['members']} seeds, {s['steps']} training steps, "
        f"{s['adapt_steps']} adaptation steps, {s['n_test']} test trajectories per "
        f"environment ({result['seconds']:.0f} s)\n"
    )
    print("| model | MSE in-domain | MSE adaptation | CRPS raw | CRPS calibrated | "
          "cov90 raw | cov90 calibrated | SSR calibrated | s / adaptation |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in result["models"].items():
        c, raw = row["calibrated"], row["raw"]
        secs = "-" if row["adapt_seconds"] is None else f"{row['adapt_seconds']:.2f}"
        print(
            f"| {name} | {_fmt(row['mse_in'])} | {_fmt(row['mse_adapt'])} | "
            f"{raw['crps']:.3g} | {c['crps']:.3g} [{c['crps_ci'][0]:.3g}, {c['crps_ci'][1]:.3g}]"
            f" | {raw['coverage90']:.3f} | {c['coverage90']:.3f} | {c['ssr']:.2f} | {secs} |"
        )
    print(
        "\nIn-domain (training environments' test trajectories; raw mixture of the seeds' "
        "rollouts):\n\n| model | CRPS | cov90 | SSR |\n|---|---|---|---|"
    )
    for name, row in result["models"].items():
        i = row["in_domain"]
        print(f"| {name} | {i['crps']:.3g} | {i['coverage90']:.3f} | {i['ssr']:.2f} |")
    m = {k: v["mse_adapt"][0] for k, v in result["models"].items()}
    holds = m["coda"] <= m["leads"] < m["one_for_all"]
    print(
        f"\nordering CoDA <= LEADS < one-for-all on adaptation MSE: "
        f"{'holds' if holds else 'fails'} ({m['coda']:.3g}, {m['leads']:.3g}, "
        f"{m['one_for_all']:.3g})"
    )
    pr = ", ".join(f"{n} {_fmt(v)}" for n, v in result["parameter_rmse"].items())
    print(f"CoDA parameter RMSE on the adaptation environments (mean over seeds): {pr}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Lotka-Volterra at a tiny budget")
    parser.add_argument("--systems", nargs="+", default=None, choices=sorted(FULL))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    uqdyn.seed_everything(args.seed)
    table = QUICK if args.quick else FULL
    systems = args.systems or list(table)
    results = []
    for system in systems:
        settings = table.get(system) or FULL[system]
        results.append(score_system(system, settings, args.seed))
        print_tables(results[-1])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    if args.quick:  # what the quick run claims: adapting beats not adapting
        m = results[0]["models"]
        assert m["coda"]["mse_adapt"][0] < m["one_for_all"]["mse_adapt"][0], m
        assert m["fine_tune"]["mse_adapt"][0] < m["one_for_all"]["mse_adapt"][0], m


if __name__ == "__main__":
    main()
