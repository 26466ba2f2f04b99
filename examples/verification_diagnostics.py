"""Decompositions and diagrams of forecast verification on synthetic forecasts.

Cases ``y = mu + N(0, 1)`` with a known signal ``mu ~ N(0, 1)``. Compared forecasts:

* ensembles of 20 members, calibrated ``mu + N(0, 1)`` and overconfident ``mu + 0.5 N(0, 1)``:
  Hersbach decomposition of the CRPS;
* probabilities of the event ``y > 0``, calibrated ``Phi(mu)`` and too sharp
  ``1 / (1 + exp(-4 mu))``: CORP reliability diagram and Brier decomposition;
* 19 quantiles, calibrated and with half the spread: CORP decomposition of the CRPS;
* mean forecasts ``mu`` (ideal) and ``0.5 mu`` (too cautious): Murphy diagram.

Writes ``verification_crps.png``, ``verification_corp.png`` and ``verification_murphy.png``
to the working directory. Usage: ``python examples/verification_diagnostics.py [--quick]``
(``--quick``: 500 cases and 50 resamples instead of 5000 and 1000).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

import uqdyn
from uqdyn.calibration.corp import corp_crps_decomposition, corp_reliability
from uqdyn.calibration.murphy import murphy_diagram
from uqdyn.scoring.decomposition import crps_decomposition
from uqdyn.study.verification_figures import (
    plot_corp_reliability,
    plot_crps_decomposition,
    plot_murphy,
    save_png,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few cases, few resamples")
    args = parser.parse_args()
    cases, resamples = (500, 50) if args.quick else (5000, 1000)
    uqdyn.seed_everything(0)  # torch and numpy's global state; the data come from rng below
    rng = np.random.default_rng(0)
    mu = rng.normal(size=cases)
    y = mu + rng.normal(size=cases)

    ensembles = {
        "calibrated": mu[:, None] + rng.normal(size=(cases, 20)),
        "overconfident": mu[:, None] + 0.5 * rng.normal(size=(cases, 20)),
    }
    decs = {name: crps_decomposition(y, ens) for name, ens in ensembles.items()}
    print("Hersbach decomposition (CRPS = Reli - Resol + U = Reli + CRPS_pot)")
    for name, d in decs.items():
        terms = ("crps", "reliability", "resolution", "uncertainty", "potential")
        print(f"  {name:14s}" + "".join(f" {t} {float(getattr(d, t)):.4f}" for t in terms))
    save_png(plot_crps_decomposition(decs), "verification_crps.png")

    event = (y > 0).astype(float)
    print("CORP Brier decomposition of P(y > 0) (BS = MCB - DSC + UNC)")
    for name, prob in (("Phi(mu)", norm.cdf(mu)), ("logistic(4 mu)", 1 / (1 + np.exp(-4 * mu)))):
        start = time.perf_counter()
        r = corp_reliability(event, prob, n_resamples=resamples, seed=0)
        took = time.perf_counter() - start
        curve = r.recalibrated_values
        outside = np.mean((curve < r.band_lower) | (curve > r.band_upper))
        print(
            f"  {name:14s} BS {r.score:.4f} MCB {r.mcb:.4f} DSC {r.dsc:.4f} UNC {r.unc:.4f} "
            f"outside the 90% band at {outside:.1%} of {curve.size} distinct values "
            f"({resamples} resamples in {took:.2f} s)"
        )
    save_png(plot_corp_reliability(r, label="logistic(4 mu)"), "verification_corp.png")

    levels = (np.arange(19) + 0.5) / 19
    print("CORP decomposition of the CRPS from 19 quantiles (2/K sum over levels)")
    for name, sd in (("calibrated", 1.0), ("half spread", 0.5)):
        c = corp_crps_decomposition(y, mu[:, None] + sd * norm.ppf(levels), levels)
        print(f"  {name:14s} CRPS {c.score:.4f} MCB {c.mcb:.4f} DSC {c.dsc:.4f} UNC {c.unc:.4f}")

    thetas = np.linspace(-4, 4, 81)
    diagrams = {
        "mu": murphy_diagram(y, mu, functional="expectile", thetas=thetas),
        "0.5 mu": murphy_diagram(y, 0.5 * mu, functional="expectile", thetas=thetas),
    }
    diff = diagrams["mu"].score - diagrams["0.5 mu"].score
    print(
        f"Murphy diagram of the mean: mu below 0.5 mu at {(diff <= 0).sum()} of {thetas.size} "
        f"thresholds (largest excess {max(diff.max(), 0.0):.1e})"
    )
    save_png(plot_murphy(diagrams), "verification_murphy.png")


if __name__ == "__main__":
    main()
