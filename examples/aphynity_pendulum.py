"""Reproduce APHYNITY's damped-pendulum rows (Yin et al., ICLR 2021, Table 1) on the CPU.

Settings (those of the paper's damped-pendulum experiment):

* truth: ``theta'' + alpha theta' + omega0^2 sin(theta) = 0`` with
  ``omega0 = 2 pi / 6``, ``alpha = 0.2``;
* 25 training and 25 test sequences of 40 states at ``dt = 0.5`` (``t = 0 ... 19.5``),
  initial state ``(theta, theta')`` at a uniformly random angle on the circle of radius
  uniform in ``[1.3, 2.3]``; data integrated with dopri5 (rtol 1e-9, atol 1e-11), float64;
* models, all integrated with rk4 at the data step ``dt`` from the first state of each
  sequence (float64):

  - "Param ODE (omega0)": the incomplete physics ``-omega0^2 sin(theta)`` alone (no damping),
    ``omega0`` learned from 1.5 (43% off);
  - "Neural ODE": data only, an MLP (2 -> 64 -> 64 -> 2, tanh);
  - "APHYNITY Param ODE (omega0)": the incomplete physics plus the same MLP, trained with
    the adaptive Lagrangian (``lambda_0 = 1``, ``tau_2 = 1``, 10 Adam steps per update);
  - a deep ensemble of 3 such hybrids (different seeds) and a latent-augmentation hybrid
    (``z ~ N(0, 1)``, CRPS-trained), for CRPS and 90% interval coverage. The members agree
    closely, so the raw deep ensemble is far too narrow; it is calibrated on 25 further
    held-out validation sequences (:meth:`HybridEnsemble.calibrate`: a noise scale per lead
    time and component for the error the members' spread misses, 32 draws per member).

* metric: natural log of the MSE over all test sequences, times ``t > 0`` and both state
  components; parameter error ``|omega0_hat - omega0| / omega0``. The paper's values (log
  MSE, parameter error) are -0.14 (13.2%) for the incomplete model, -2.84 for the Neural
  ODE and -7.86 +/- 0.60 (4.0%) for APHYNITY.

Training: Adam, learning rate 5e-3, full batch, 150 multiplier updates of 10 steps each.

Run: ``python examples/aphynity_pendulum.py`` (about 20 minutes on 2 busy CPU cores);
``--quick`` runs a shortened schedule (a smoke test, numbers not comparable);
``--ensemble-only`` trains and scores only the deep ensemble (same seeds and data).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import uqdyn
from uqdyn.calibration import coverage
from uqdyn.models.hybrid import (
    HybridDynamics,
    HybridEnsemble,
    LatentHybridDynamics,
    MLPAugmentation,
    fit_aphynity,
    fit_hybrid_ensemble,
)
from uqdyn.physics import DampedPendulum, simulate
from uqdyn.predictive import Ensemble

OMEGA0 = 2.0 * math.pi / 6.0
ALPHA = 0.2
DT = 0.5
STEPS = 40
PUBLISHED = {
    "Param ODE (omega0)": (-0.14, 13.2),
    "Neural ODE": (-2.84, None),
    "APHYNITY Param ODE (omega0)": (-7.86, 4.0),
}


def make_data(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` sequences of shape (40, 2) from the true damped pendulum."""
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2.0 * math.pi
    radius = 1.3 + torch.rand(n, generator=generator, dtype=torch.float64)
    state0 = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    truth = DampedPendulum(omega0=OMEGA0, alpha=ALPHA).double()
    with torch.no_grad():
        return simulate(truth, state0, times(), "dopri5", rtol=1e-9, atol=1e-11)


def times() -> torch.Tensor:
    return torch.arange(STEPS, dtype=torch.float64) * DT


def incomplete_physics() -> DampedPendulum:
    physics = DampedPendulum(omega0=1.5, alpha=0.0).double()
    physics.alpha.requires_grad_(False)
    return physics


def network() -> MLPAugmentation:
    return MLPAugmentation(2, hidden=64, depth=2).double()


def log_mse(model: HybridDynamics, data: torch.Tensor) -> float:
    with torch.no_grad():
        prediction = simulate(model, data[:, 0], times(), "rk4", step_size=DT)
    return math.log(float((prediction[:, 1:] - data[:, 1:]).square().mean()))


def parameter_error(model: HybridDynamics) -> float:
    return abs(float(model.physics.omega0.detach()) - OMEGA0) / OMEGA0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short schedule (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=150, help="multiplier updates")
    parser.add_argument("--members", type=int, default=3, help="deep-ensemble size")
    parser.add_argument(
        "--ensemble-only", action="store_true", help="only the deep ensemble and its scores"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: threading only adds overhead
    uqdyn.seed_everything(args.seed)
    epochs = 5 if args.quick else args.epochs
    members = 2 if args.quick else args.members
    generator = torch.Generator().manual_seed(args.seed)
    train, test = make_data(25, generator), make_data(25, generator)
    validation = make_data(25, generator)  # held out, for the ensemble's calibration
    options = {
        "epochs": epochs,
        "steps_per_epoch": 10,
        "lr": 5e-3,
        "step_size": DT,
        "multiplier": 1.0,
        "multiplier_rate": 1.0,
    }
    rows = []

    started = time.perf_counter()
    if not args.ensemble_only:
        physics_only = HybridDynamics(incomplete_physics(), None)
        fit_aphynity(physics_only, train, times(), seed=args.seed, **options)
        rows.append(
            ("Param ODE (omega0)", log_mse(physics_only, test), parameter_error(physics_only))
        )

        torch.manual_seed(args.seed)
        neural = HybridDynamics(None, network(), state_shape=(2,))
        fit_aphynity(neural, train, times(), seed=args.seed, **options)
        rows.append(("Neural ODE", log_mse(neural, test), None))

    ensemble, _ = fit_hybrid_ensemble(
        lambda: HybridDynamics(incomplete_physics(), network()),
        train,
        times(),
        members=members,
        validation=validation,
        seed=args.seed,
        **options,
    )
    member_scores = [log_mse(member, test) for member in ensemble.members]
    member_errors = [parameter_error(member) for member in ensemble.members]
    rows.append(
        (
            "APHYNITY Param ODE (omega0)",
            sum(member_scores) / members,
            sum(member_errors) / members,
        )
    )
    seconds = time.perf_counter() - started

    print(f"damped pendulum, 25 train / 25 test sequences, {epochs} epochs x 10 steps")
    print(f"{'model':32s} {'log MSE':>9s} {'param err':>10s} {'published':>18s}")
    for name, score, error in rows:
        published = PUBLISHED[name]
        err = "-" if error is None else f"{100 * error:.1f}%"
        pub = f"{published[0]:.2f}" + ("" if published[1] is None else f" ({published[1]}%)")
        print(f"{name:32s} {score:9.2f} {err:>10s} {pub:>18s}")
    spread = torch.tensor(member_scores).std().item() if members > 1 else 0.0
    print(f"APHYNITY members: log MSE {member_scores} (std {spread:.2f})")
    print(f"APHYNITY members: omega0 = {ensemble.parameters_of('omega0').tolist()}")
    print(f"training time {seconds:.0f} s")
    report_uncertainty(ensemble, train, test, options, args.seed, latent=not args.ensemble_only)


def report_uncertainty(
    ensemble: HybridEnsemble,
    train: torch.Tensor,
    test: torch.Tensor,
    options: dict,
    seed: int,
    *,
    latent: bool = True,
) -> None:
    """CRPS and 90% coverage on the test set: deep ensemble (raw, calibrated), latent hybrid."""
    target = test[:, 1:]
    deep = Ensemble(ensemble.rollouts(test[:, 0], times(), step_size=DT)[:, :, 1:])
    print(
        f"deep ensemble ({len(ensemble)}, raw): CRPS {float(deep.crps(target).mean()):.3e}, "
        f"90% coverage {float(coverage(target, deep, 0.9)):.3f}, "
        f"mean abs error of the mean {float((deep.mean - target).abs().mean()):.3e}"
    )
    generator = torch.Generator().manual_seed(seed)
    forecast = ensemble.forecast(test[:, 0], times(), step_size=DT, generator=generator)
    calibrated = Ensemble(forecast.members[:, :, 1:])
    noise = ensemble.noise_std
    assert noise is not None
    print(
        f"deep ensemble ({len(ensemble)}, calibrated on 25 validation sequences, 32 draws per "
        f"member): CRPS {float(calibrated.crps(target).mean()):.3e}, "
        f"90% coverage {float(coverage(target, calibrated, 0.9)):.3f}, "
        f"noise std at the last lead time {[round(x, 4) for x in noise[-1].tolist()]}"
    )
    if not latent:
        return
    torch.manual_seed(seed)
    latent = LatentHybridDynamics(
        incomplete_physics(), MLPAugmentation(2, 64, 2, input_dim=3).double(), 1
    )
    fit_aphynity(latent, train, times(), seed=seed, samples=8, **options)
    generator = torch.Generator().manual_seed(seed)
    sampled = latent.forecast(test[:, 0], times(), 50, generator=generator, step_size=DT)
    stochastic = Ensemble(sampled.members[:, :, 1:])
    omega = float(latent.physics.omega0.detach())
    print(
        f"latent hybrid (50 samples): CRPS {float(stochastic.crps(target).mean()):.3e}, "
        f"90% coverage {float(coverage(target, stochastic, 0.9)):.3f}, "
        f"log MSE of the mean {math.log(float((stochastic.mean - target).square().mean())):.2f}, "
        f"omega0 error {100 * abs(omega - OMEGA0) / OMEGA0:.1f}%"
    )


if __name__ == "__main__":
    main()
