"""Seconds to adapt a trained multi-environment model to one new environment.

CoDA fits a ``context_dim``-number context with the shared weights frozen; the fine-tuning
baseline fits a copy of every weight of the one-for-all network; LEADS fits a new
environment network. Each model is trained once on Lotka-Volterra (CoDA's protocol) and
then adapted to the same new environment (one trajectory) ``--repeats`` times, the tools
taking turns; the table shows the median seconds per adaptation of ``--adapt-steps`` Adam
steps (learning rates as in the study: 2e-2 for a context, 3e-3 for a network), the number
of fitted parameters, the adaptation MSE on the environment's test
trajectories and the ratio to CoDA. The load average is printed before and after.

    python benchmarks/bench_multienv.py [--adapt-steps 300] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from bench_scoring import _load_line  # the same load report as the CRPS benchmark

from uqdyn.models.multienv import environment_batch
from uqdyn.study.multi_environment import SYSTEM_SETUPS, Settings, _build, _datasets
from uqdyn.train import fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = SYSTEM_SETUPS["lotka_volterra"]
    settings = Settings(hidden=args.hidden, n_test=32)
    data = _datasets(setup, settings, 0)
    train = environment_batch(data["train"])
    fit_batch = environment_batch(data["adapt"], envs=[0])
    test = environment_batch(data["adapt_test"], envs=[0])
    names = {"coda": "CoDA (context)", "fine_tune": "fine-tuning", "leads": "LEADS (env part)"}
    trained = {}
    for name in names:
        model = _build(name, setup, settings, 9, 0)
        fit(model, [train], steps=args.steps, lr=settings.lr, seed=0, device="cpu", progress=False)
        trained[name] = model
    print(f"before: {_load_line()}")
    seconds: dict[str, list[float]] = {n: [] for n in names}
    mse: dict[str, float] = {}
    fitted: dict[str, int] = {}
    for _ in range(args.repeats):
        for name in names:
            model = copy.deepcopy(trained[name])
            n_before = sum(p.numel() for p in model.parameters())
            start = time.perf_counter()
            lr = settings.adapt_lr if name == "coda" else settings.adapt_lr_network
            env = model.adapt(fit_batch, steps=args.adapt_steps, lr=lr, seed=0)
            seconds[name].append(time.perf_counter() - start)
            fitted[name] = sum(p.numel() for p in model.parameters()) - n_before
            labels = torch.full((test.trajectories.shape[0],), env, dtype=torch.int64)
            with torch.no_grad():
                pred = model.rollout(test.initial_state, test.times, labels)[:, 1:]
            mse[name] = float((pred - test.trajectories[:, 1:]).pow(2).mean())
    print(f"after:  {_load_line()}\n")
    base = statistics.median(seconds["coda"])
    print(
        f"Lotka-Volterra, {args.steps} training steps, adaptation to beta = delta = 0.625 "
        f"from one trajectory: {args.adapt_steps} Adam steps, median of {args.repeats}\n"
    )
    print("| model | fitted parameters | seconds / adaptation | ratio vs CoDA | adaptation MSE |")
    print("|---|---|---|---|---|")
    for name, label in names.items():
        med = statistics.median(seconds[name])
        print(f"| {label} | {fitted[name]} | {med:.3f} | {med / base:.2f} | {mse[name]:.3g} |")


if __name__ == "__main__":
    main()
