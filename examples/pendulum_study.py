"""A damped-pendulum calibration study run from Python with :func:`uqdyn.study.run`.

The same as ``uqdyn study pendulum``: simulate noisy pendulum observations, fit the models,
forecast held-out cases, recalibrate each forecast on validation cases (variance scaling
and isotonic) and score everything; the report (``report.md``, ``report.html`` with its
figures), the forecasts (netCDF) and the scores (CSV and netCDF) go to ``--out``.

``--quick`` makes the study tiny (few cases, two models, short training; a smoke test that
takes seconds to a minute on one CPU core, numbers not converged); without it the package's
quick settings of the study are used. Usage:
``python examples/pendulum_study.py [--quick] [--out DIR] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import uqdyn
from uqdyn.study import load_config, run

TINY = {
    "models": ["cnp", "gp"],
    "data.n_train": 32,
    "data.n_valid": 16,
    "data.n_test": 16,
    "model.cnp.steps": 100,
    "model.gp.steps": 20,
}


def main(quick: bool = False, out: str | None = None, overwrite: bool = False) -> None:
    """Run the study and print the mean CRPS of every model and calibration."""
    torch.set_num_threads(1)
    uqdyn.seed_everything(0)  # the study seeds its own draws from cfg.seed as well
    with tempfile.TemporaryDirectory() as tmp:
        target = out or f"{tmp}/study-pendulum"
        cfg = load_config(
            "pendulum",
            quick=True,
            overrides=TINY if quick else None,
            out=target,
            overwrite=overwrite,
            device="cpu",
            progress=False,
        )
        scores = run(cfg)  # xarray.Dataset with dims (model, calibration)
        print("mean CRPS on the test cases (rows: model, columns: calibration)")
        print(scores["crps"].transpose("model", "calibration").to_pandas())
        print(f"outputs written to {target}" + ("" if out else " (a temporary directory)"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny study (smoke test)")
    parser.add_argument("--out", default=None, help="output directory (default: temporary)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args()
    main(quick=args.quick, out=args.out, overwrite=args.overwrite)
