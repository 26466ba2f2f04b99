"""A short end-to-end demo: simulate, forecast with an ensemble, score and recalibrate.

``uqdyn demo`` runs it. The truth is Lorenz-96 (40 variables, F = 8). The forecast model
has a wrong forcing (model error) and starts from a noisy analysis whose ensemble spread is
too small (an over-confident ensemble). The forecasts are scored by CRPS, spread-skill ratio
and interval coverage per lead time, then recalibrated by variance scaling fitted on a
validation half of the start dates and scored again on the other half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uqdyn._device import resolve_device
from uqdyn.calibration import VarianceScaling, coverage, spread_skill_ratio
from uqdyn.physics import Lorenz96, simulate
from uqdyn.predictive import Ensemble

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """Scores of the demo forecast on the test start dates, per reported lead time.

    Every tensor has shape ``(n_leads,)``.
    """

    lead_times: torch.Tensor
    rmse: torch.Tensor
    spread: torch.Tensor
    crps: torch.Tensor
    coverage90: torch.Tensor
    crps_recalibrated: torch.Tensor
    coverage90_recalibrated: torch.Tensor
    ssr: float
    ssr_recalibrated: float
    scale: float


def run_demo(
    device: str | torch.device = "auto",
    seed: int = 0,
    members: int = 32,
    cases: int = 64,
    verbose: bool = True,
) -> DemoResult:
    """Run the demo and print a table of scores per lead time.

    Parameters
    ----------
    device:
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed:
        Seed of every random draw; the same seed gives the same scores.
    members:
        Ensemble size ``M``.
    cases:
        Number of forecast start dates (half validation, half test).
    verbose:
        Print the table.

    Returns
    -------
    DemoResult with scores on the test half.
    """
    if members < 2:
        raise ValueError(f"members={members}; expected at least 2 ensemble members")
    if cases < 4 or cases % 2:
        raise ValueError(f"cases={cases}; expected an even number >= 4")
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    dtype = torch.float32
    truth_model = Lorenz96(dim=40, forcing=8.0).to(dev)
    forecast_model = Lorenz96(dim=40, forcing=7.6).to(dev)  # model error: wrong forcing
    dt, n_steps = 0.05, 24
    with torch.no_grad():
        x0 = truth_model.initial_state(cases, generator=gen, device=dev, dtype=dtype)
        spin = torch.arange(0, 201, device=dev, dtype=dtype) * dt
        x0 = simulate(truth_model, x0, spin)[:, -1]  # onto the attractor
        times = torch.arange(0, n_steps + 1, device=dev, dtype=dtype) * dt
        truth = simulate(truth_model, x0, times)  # (cases, time, 40)
        analysis_error, ensemble_spread = 0.5, 0.15  # too little spread: over-confident
        analysis = x0 + analysis_error * torch.randn(x0.shape, generator=gen, device=dev)
        noise = torch.randn((members, *x0.shape), generator=gen, device=dev)
        starts = (analysis + ensemble_spread * noise).reshape(members * cases, 40)
        runs = simulate(forecast_model, starts, times).reshape(members, cases, n_steps + 1, 40)

    half = cases // 2
    valid = Ensemble(runs[:, :half, 1:], estimator="fair")
    test = Ensemble(runs[:, half:, 1:], estimator="fair")
    obs_valid, obs_test = truth[:half, 1:], truth[half:, 1:]
    scaler = VarianceScaling().fit(obs_valid, valid)
    recal = scaler.transform(test)
    if not isinstance(recal, Ensemble) or scaler.scale is None:  # pragma: no cover
        raise RuntimeError("variance scaling of an Ensemble must return a fitted Ensemble")

    leads = list(range(3, n_steps, 4))
    rows = []
    for lead in leads:
        y = obs_test[:, lead]
        raw = Ensemble(test.members[:, :, lead], estimator="fair")
        fixed = Ensemble(recal.members[:, :, lead], estimator="fair")
        rows.append(
            (
                float((lead + 1) * dt),
                float((raw.mean - y).square().mean().sqrt()),
                float(raw.variance.mean().sqrt()),
                float(raw.crps(y).mean()),
                float(coverage(y, raw, 0.9)),
                float(fixed.crps(y).mean()),
                float(coverage(y, fixed, 0.9)),
            )
        )
    cols = [torch.tensor(c) for c in zip(*rows, strict=True)]
    result = DemoResult(
        lead_times=cols[0],
        rmse=cols[1],
        spread=cols[2],
        crps=cols[3],
        coverage90=cols[4],
        crps_recalibrated=cols[5],
        coverage90_recalibrated=cols[6],
        ssr=float(spread_skill_ratio(obs_test, test)),
        ssr_recalibrated=float(spread_skill_ratio(obs_test, recal)),
        scale=float(scaler.scale),
    )
    if verbose:
        print(
            f"uqdyn demo: Lorenz-96 (40 variables), {members}-member ensemble with model "
            f"error, {cases // 2} validation + {cases // 2} test start dates, device {dev}"
        )
        head = ("lead", "RMSE", "spread", "CRPS", "cov90", "CRPS recal", "cov90 recal")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print(f"| {r[0]:.2f} | " + " | ".join(f"{v:.3f}" for v in r[1:]) + " |")
        print(
            f"spread-skill ratio {result.ssr:.2f} -> {result.ssr_recalibrated:.2f} after "
            f"variance scaling (s = {result.scale:.2f}, fitted on the validation dates); "
            "CRPS is the fair ensemble estimator"
        )
    return result
