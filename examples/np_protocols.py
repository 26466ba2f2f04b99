"""Neural process vs neural ODE process on 1-D dynamics families (Norcliffe et al. 2021 style).

Families (100 points per series, a ~ U(-1, 1), b ~ U(-0.5, 0.5)):

* ``sine``: ``a sin(t - b)`` on ``[-pi, pi]``;
* ``exponential``: ``a exp(t - b)`` on ``[-1, 1]`` (this script's choice of range);
* ``oscillator``: ``a sin(t - b) exp(-0.5 t)`` on ``[0, 5]``;
* ``lotka_volterra``: prey/predator ``x' = 2/3 x - 4/3 x y``, ``y' = x y - y`` from
  ``x0, y0 ~ U(0.5, 1.5)`` on ``[0, 15]`` (2 channels), integrated with torchdiffeq.

A latent NP and an NDP are trained with :func:`uqdyn.train.fit` on the same tasks (same
steps, batch, learning rate and KL warm-up); both are scored on *held-out* series (drawn with
another seed) with a fixed number of context points (1, 2, 5, 10) and all 100 points as
targets: mean squared error of the predictive mean and negative log-likelihood per target
(mixture density). A context-free baseline row (the per-time mean and variance of the
training series, a Gaussian) shows what a model that ignores its context would score.
``--quick`` trains for 60 steps on the CPU: it shows the pipeline running, not
the converged numbers of the paper.

Usage: ``python examples/np_protocols.py --quick [--families sine oscillator]`` or, e.g.,
``python examples/np_protocols.py --steps 1500 --families sine oscillator``. Each model is
built under ``uqdyn.seeded(seed)`` (``--seed``, default 0) and trained with
``fit(seed=seed)``, so a command prints the same numbers in every run and a family's rows do
not depend on the other families listed.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torchdiffeq import odeint

import uqdyn
from uqdyn.data import TaskSampler
from uqdyn.models.neural_process import LatentNP, NeuralODEProcess
from uqdyn.train import fit


def make_family(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``values (n, 100, channels)`` and ``times (100,)`` of one family."""
    g = torch.Generator().manual_seed(seed)
    a = 2.0 * torch.rand(n, 1, generator=g) - 1.0
    b = torch.rand(n, 1, generator=g) - 0.5
    if name == "sine":
        t = torch.linspace(-math.pi, math.pi, 100)
        return (a * torch.sin(t - b)).unsqueeze(-1), t
    if name == "exponential":
        t = torch.linspace(-1.0, 1.0, 100)
        return (a * torch.exp(t - b)).unsqueeze(-1), t
    if name == "oscillator":
        t = torch.linspace(0.0, 5.0, 100)
        return (a * torch.sin(t - b) * torch.exp(-0.5 * t)).unsqueeze(-1), t
    if name == "lotka_volterra":
        t = torch.linspace(0.0, 15.0, 100)
        state0 = 0.5 + torch.rand(n, 2, generator=g)

        def rhs(_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            x, y = s[:, :1], s[:, 1:]
            return torch.cat([2 / 3 * x - 4 / 3 * x * y, x * y - y], dim=1)

        with torch.no_grad():
            return odeint(rhs, state0, t, rtol=1e-6, atol=1e-8).transpose(0, 1), t
    raise ValueError(f"family={name!r}; expected sine, exponential, oscillator or lotka_volterra")


def evaluate(model, values, times, n_context: int, seed: int) -> tuple[float, float]:
    """(MSE, NLL per target) on held-out series with ``n_context`` context points each."""
    g = torch.Generator().manual_seed(seed)
    n, n_times, _ = values.shape
    idx = torch.stack([torch.randperm(n_times, generator=g)[:n_context] for _ in range(n)])
    t = (times - times[0]).reshape(1, -1, 1).expand(n, -1, -1)
    xc = torch.gather(t, 1, idx[..., None])
    yc = torch.gather(values, 1, idx[..., None].expand(-1, -1, values.shape[-1]))
    with torch.no_grad():
        pred = model(xc, yc, t, generator=torch.Generator().manual_seed(seed))
        mse = float((pred.mean - values).square().mean())
        nll = float(-pred.log_prob(values).sum(-1).mean())
    return mse, nll


def context_free(values: torch.Tensor, test_values: torch.Tensor) -> tuple[float, float]:
    """(MSE, NLL per target) of the Gaussian with the training series' per-time mean and variance."""
    mean, var = values.mean(0), values.var(0).clamp_min(1e-6)
    mse = float((test_values - mean).square().mean())
    nll = float(-torch.distributions.Normal(mean, var.sqrt()).log_prob(test_values).mean())
    return mse, nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a pipeline check: 60 CPU steps, 20 held-out series"
    )
    parser.add_argument(
        "--families", nargs="+", default=["sine", "exponential", "oscillator", "lotka_volterra"]
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--kl-warmup", type=int, default=None, help="KL warm-up steps (default: steps // 3)"
    )
    parser.add_argument(
        "--test-series", type=int, default=None, help="default 100 (20 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (60 if args.quick else 20000)
    test_series = args.test_series or (20 if args.quick else 100)
    warmup = steps // 3 if args.kl_warmup is None else args.kl_warmup
    n_train = 200 if args.quick else 490
    print(
        f"steps={steps}, batch={args.batch}, lr={args.lr}, KL warm-up {warmup} steps, "
        f"{n_train} training series, {test_series} held-out series per family\n"
    )
    print("| family | model | context | MSE | NLL/target |")
    print("|---|---|---|---|---|")
    for family in args.families:
        values, times = make_family(family, n_train, seed=0)
        test_values, _ = make_family(family, test_series, seed=1)
        y_dim = values.shape[-1]
        mse, nll = context_free(values, test_values)
        print(f"| {family} | context-free | any | {mse:.4f} | {nll:.3f} |", flush=True)
        sampler = TaskSampler(values, times, num_context=(1, 10), num_target=(10, 40))
        # each model's initial weights depend only on --seed, not on the families run before
        with uqdyn.seeded(args.seed):
            np_model = LatentNP(1, y_dim, width=50, z_dim=50, kl_warmup=warmup)
        with uqdyn.seeded(args.seed):
            ndp_model = NeuralODEProcess(
                y_dim,
                latent_dim=10,
                control_dim=10,
                width=50,
                method="rk4",
                options={"step_size": float(times[-1] - times[0]) / 50},
                kl_warmup=warmup,
            )
        models = {"NP": np_model, "NDP": ndp_model}
        for name, model in models.items():
            start = time.perf_counter()
            fit(
                model,
                lambda g, s=sampler: s.sample(args.batch, generator=g),
                steps=steps,
                lr=args.lr,
                grad_clip=1.0,
                device="cpu",
                seed=args.seed,
                progress=False,
            )
            seconds = time.perf_counter() - start
            for n_context in (1, 2, 5, 10):
                mse, nll = evaluate(model, test_values, times, n_context, seed=2)
                print(f"| {family} | {name} | {n_context} | {mse:.4f} | {nll:.3f} |", flush=True)
            print(f"<!-- {family} {name}: {seconds:.0f} s training -->", flush=True)


if __name__ == "__main__":
    main()
