"""Long rollouts of a trained shallow-water hybrid with and without conservation constraints.

Truth: rotating shallow water (:class:`uqdyn.physics.ShallowWater`, ``f = g = H = 1``) on a
periodic ``2 pi`` square with linear drag ``r = 0.05`` and viscosity ``nu = 5e-3`` on the
momentum (the dissipation the physical model lacks); initial states are Gaussian bumps on
the layer depth over a fluid at rest. Incomplete physics: the same equations with no
forcing/dissipation at all (``f, g, H`` known and frozen). Hybrid: that physics plus a
:class:`~uqdyn.models.hybrid.ConvAugmentation` (3 -> 16 -> 16 -> 3, tanh, circular
padding) acting on all channels, trained with APHYNITY's adaptive Lagrangian on short
sequences. Three copies from the same initialisation and data:

* ``conserve=(2,)``: the augmentation's ``h`` tendency projected onto zero spatial mean,
  so total mass is conserved by construction;
* mass + energy: also ``dissipate=physics.energy``, so the augmentation cannot raise the
  energy;
* unconstrained: the same model without either projection.

All are rolled out for ``--rollout`` steps (default 500) from held-out initial states,
far beyond the training horizon, and compared on: relative mass drift
``max_t |M(t) - M(0)| / M(0)`` (:meth:`ShallowWater.mass <uqdyn.physics.ShallowWater.mass>`);
``max |h|``; and the energy ratio ``max_t E(t) / E(0)``
(:meth:`ShallowWater.energy <uqdyn.physics.ShallowWater.energy>`). Everything in float64.

Run: ``python examples/hybrid_conservation_rollout.py`` (16 training sequences of 10 steps,
20 x 10 Adam steps with batch 4 per model); ``--quick`` for a smoke test (2 x 10 steps on 4
sequences of 5 steps: the network is barely trained); ``--epochs`` and ``--rollout`` change
the budget and the rollout length.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor, nn

import uqdyn
from uqdyn.models.hybrid import ConvAugmentation, HybridDynamics, fit_aphynity
from uqdyn.physics import ShallowWater, simulate
from uqdyn.physics.shallow_water import LinearDragViscosity

DT = 0.2


class NoForcing(nn.Module):
    """Zero momentum forcing ``(batch, 3, H, W) -> (batch, 2, H, W)`` (inviscid model)."""

    def forward(self, state: Tensor) -> Tensor:
        return state.new_zeros(state.shape[0], 2, *state.shape[2:])


def truth(size: int) -> ShallowWater:
    """The true system: shallow water with drag and viscosity (float64)."""
    spacing = (2.0 * math.pi / size, 2.0 * math.pi / size)
    forcing = LinearDragViscosity(spacing, drag=0.05, viscosity=5e-3)
    return ShallowWater((size, size), forcing=forcing).double()


def incomplete(size: int) -> ShallowWater:
    """Known, frozen inviscid physics (float64)."""
    physics = ShallowWater((size, size), forcing=NoForcing()).double()
    for parameter in physics.parameters():
        parameter.requires_grad_(False)
    return physics


VARIANTS = {
    "hybrid, conserve=(2,)": {"conserve": (2,)},
    "hybrid, mass + energy": {"conserve": (2,), "dissipate": True},
    "hybrid, unconstrained": {},
}


def make_hybrid(size: int, variant: str, seed: int) -> HybridDynamics:
    """The hybrid model; the same ``seed`` gives the same network in every variant."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ConvAugmentation(3, hidden=16, depth=2).double()
    physics = incomplete(size)
    options = VARIANTS[variant]
    return HybridDynamics(
        physics,
        network,
        conserve=options.get("conserve"),
        dissipate=physics.energy if options.get("dissipate") else None,
    )


def make_data(size: int, n: int, steps: int, generator: torch.Generator) -> Tensor:
    """``n`` true trajectories of ``steps + 1`` states, shape ``(n, steps + 1, 3, size, size)``."""
    system = truth(size)
    state0 = system.initial_state(n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        return simulate(system, state0, times(steps), "rk4", step_size=DT / 4)


def times(steps: int) -> Tensor:
    return torch.arange(steps + 1, dtype=torch.float64) * DT


def diagnostics(model: nn.Module, state0: Tensor, steps: int) -> dict[str, float]:
    """Mass drift, max |h| and energy ratio of a ``steps``-step rollout.

    A rollout that fails (non-finite values or non-positive depth) reports the step where
    it failed as ``failed_at`` and the diagnostics up to there are not available.
    """
    size = state0.shape[-1]
    try:
        with torch.no_grad():
            path = simulate(model, state0, times(steps), "rk4", step_size=DT)
    except ValueError as error:
        message = str(error)
        index = message.split("time index ")[-1].split(")")[0] if "time index" in message else ""
        return {"failed_at": float(index) if index.isdigit() else float("nan")}
    h = path[:, :, 2]
    system, states = truth(size), path.flatten(0, 1)
    with torch.no_grad():
        mass = system.mass(states).view(path.shape[:2])
        energy = system.energy(states).view(path.shape[:2])
    return {
        "mass_drift": float(((mass - mass[:, :1]).abs() / mass[:, :1]).max()),
        "max_abs_h": float(h.abs().max()),
        "max_abs_h_end": float(h[:, -1].abs().max()),
        "energy_ratio": float((energy / energy[:, :1]).max()),
        "energy_end": float((energy[:, -1] / energy[:, 0]).max()),
        "failed_at": float("nan"),
    }


def train_variants(
    size: int, train: Tensor, steps: int, epochs: int, seed: int, batch: int
) -> tuple[dict[str, HybridDynamics], float]:
    """Train every variant identically; returns them by name and the seconds taken."""
    started = time.perf_counter()
    models = {}
    for variant in VARIANTS:
        model = make_hybrid(size, variant, seed)
        fit_aphynity(
            model,
            train,
            times(steps),
            epochs=epochs,
            steps_per_epoch=10,
            batch_size=batch,
            lr=5e-3,
            step_size=DT,
            seed=seed,
        )
        models[variant] = model
    return models, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=16, help="grid points per side")
    parser.add_argument("--rollout", type=int, default=500, help="rollout steps")
    parser.add_argument("--epochs", type=int, default=20, help="multiplier updates")
    args = parser.parse_args()
    torch.set_num_threads(1)
    uqdyn.seed_everything(args.seed)
    epochs = 2 if args.quick else args.epochs
    n_train, train_steps, batch = (4, 5, 4) if args.quick else (16, 10, 4)
    n_test = 4 if args.quick else 8
    generator = torch.Generator().manual_seed(args.seed)
    train = make_data(args.size, n_train, train_steps, generator)
    test0 = truth(args.size).initial_state(n_test, generator=generator, dtype=torch.float64)
    models, seconds = train_variants(args.size, train, train_steps, epochs, args.seed, batch)
    print(
        f"shallow water {args.size}x{args.size}, dt = {DT}: trained on {n_train} sequences of "
        f"{train_steps} steps ({epochs} epochs x 10 Adam steps, batch {batch}, {seconds:.0f} s "
        f"for all {len(models)}), rollout of {args.rollout} steps (t = {args.rollout * DT:g}) from {n_test} "
        "test states"
    )
    header = (
        f"{'model':26s} {'mass drift':>11s} {'max|h|':>9s} {'|h| end':>9s} "
        f"{'max E/E0':>9s} {'E_end/E0':>9s}"
    )
    print(header)
    rows = {"truth": truth(args.size), **models, "incomplete physics alone": incomplete(args.size)}
    for name, model in rows.items():
        result = diagnostics(model, test0, args.rollout)
        if not math.isnan(result["failed_at"]):
            print(f"{name:26s} failed at step {int(result['failed_at'])} (non-finite or H+h<=0)")
            continue
        print(
            f"{name:26s} {result['mass_drift']:11.2e} {result['max_abs_h']:9.3e} "
            f"{result['max_abs_h_end']:9.3e} {result['energy_ratio']:9.3f} "
            f"{result['energy_end']:9.3f}"
        )
    for name, model in models.items():
        bias = float(model.augmentation_part(test0)[:, 2].mean().detach())
        print(f"mean h tendency of F_aug at the test states, {name}: {bias:.2e}")


if __name__ == "__main__":
    main()
