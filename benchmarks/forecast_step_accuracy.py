"""Accuracy of ``uqdyn.da.ForecastOperator`` substeps on Lorenz-63 and Lorenz-96 (not a test).

Prints one markdown table: for each system, analysis window ``dt`` and ``max_step``, the
largest absolute and relative error of an 8-member ensemble forecast (float64, members on the
attractor after 10 time units from ``initial_state`` with ``Generator().manual_seed(0)``)
against scipy's DOP853 at ``rtol = atol = 1e-12``. The default substep of the operator for
both systems is ``accurate_dt("rk4") = 0.01``.

Usage: ``python benchmarks/forecast_step_accuracy.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.integrate import solve_ivp

from uqdyn.da import ForecastOperator
from uqdyn.physics import Lorenz63, Lorenz96


def main() -> None:
    torch.set_num_threads(1)
    print("| system | window dt | max_step | max abs error | relative error |")
    print("|---|---|---|---|---|")
    for cls, windows in ((Lorenz96, (0.05, 0.5)), (Lorenz63, (0.01, 0.05, 0.2))):
        dyn = cls(dtype=torch.float64)
        x0 = dyn.initial_state(8, generator=torch.Generator().manual_seed(0)).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            E = ForecastOperator(dyn, max_step=0.01, dtype=torch.float64).step(
                x0.numpy(), 0.0, 10.0
            )

        def rhs(t: float, x: np.ndarray, dyn: torch.nn.Module = dyn) -> np.ndarray:
            with torch.no_grad():
                return dyn(torch.tensor(t), torch.tensor(x)[None])[0].numpy()

        for dt in windows:
            ref = np.stack(
                [
                    solve_ivp(rhs, (0, dt), e, method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]
                    for e in E
                ]
            )
            for h in (0.05, 0.025, 0.01, 0.005):
                if h > dt:
                    continue
                op = ForecastOperator(dyn, max_step=h, dtype=torch.float64)
                err = float(np.abs(op.step(E, 0.0, dt) - ref).max())
                rel = err / float(np.abs(ref).mean())
                print(f"| {cls.__name__} | {dt} | {h} | {err:.2e} | {rel:.1e} |")


if __name__ == "__main__":
    main()
