"""Gap filling of shallow-water fields with a conditional AmbientGAN, against baselines.

Fields: snapshots ``(u, v, h)`` of :class:`uqdyn.physics.ShallowWater` (geostrophic
adjustment of Gaussian bumps, Coriolis parameter uniform in [0.5, 2]) at t = 2, 3, 4, 5, 6,
standardised per channel. Two measurement scenarios, each training set measured once:

* ``pixels``: 90% of the pixels removed (independently), Gaussian noise sigma = 0.1;
* ``clouds``: cloud masks (30% to 70% cover, length scale 2 to 5 cells), noise 0.1.

Methods, scored on held-out test fields (CRPS over all entries and over the hidden ones,
RMSE of the mean, coverage of the central 90% interval, spread-skill ratio):

* ``ambient-gan``: :class:`uqdyn.models.ambient_gan.ConditionalAmbientGAN` trained from the
  corrupted measurements alone; ``members`` latent draws per test measurement;
* ``interpolation``: periodic linear interpolation of the observed pixels (deterministic,
  CRPS = MAE);
* ``gp``: an exact GP (Matern 5/2) per test field on its observed pixels (Normal);
* ``inpainted-gan``: the same conditional GAN trained on interpolated training measurements
  taken as clean fields (Bora et al.'s baseline).

Run ``python examples/ambient_gan_shallow_water.py --quick`` (16 x 16, tiny, under a
minute; numbers not meaningful), ``--medium`` (32 x 32, 200 training fields, 10 test fields,
150 GAN steps; about 20 minutes on a busy 2-core CPU) or with no flag for the full setting
(64 x 64, 5000 training fields, 20000 steps, meant for a GPU with ``--device cuda``).
Settings can be overridden, e.g. ``--steps 500 --scenarios pixels``. The ``seconds`` column
is the training time of the GANs and the fitting plus prediction time of the baselines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import uqdyn

# the benchmark harness (data, baselines, scores) lives with the benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ambient_gan_harness import (  # noqa: E402
    SCENARIOS,
    deterministic,
    evaluate_predictive,
    fit_conditional_ambient_gan,
    fit_inpainting_gan,
    gp_fill,
    interpolation_fill,
    make_inverse_problem_data,
    make_operator,
    simulate_fields,
)

PRESETS: dict[str, dict[str, int]] = {
    "quick": dict(size=16, train=8, test=1, steps=20, base=8, members=8, gp_steps=10, batch=16),
    "medium": dict(
        size=32, train=40, test=2, steps=150, base=16, members=32, gp_steps=40, batch=16
    ),
    "full": dict(
        size=64, train=1000, test=40, steps=20000, base=64, members=64, gp_steps=100, batch=32
    ),
}


METHODS = ("interpolation", "gp", "ambient-gan", "inpainted-gan")


def _methods(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise SystemExit(f"--methods: unknown {unknown}; expected a subset of {METHODS}")
    return chosen


def run_scenario(scenario: str, train_fields, test_fields, s: dict, device: str) -> list[dict]:
    """Scores of every method on one scenario."""
    data = make_inverse_problem_data(
        train_fields, test_fields, make_operator(scenario), seed=s["seed"] + 1
    )
    observed = data.test.mask
    rows = []

    def add(method: str, prediction, seconds: float) -> None:
        scores = evaluate_predictive(prediction.to("cpu"), data.test_fields, observed)
        rows.append({"scenario": scenario, "method": method, "seconds": seconds, **scores})
        print(
            f"  {scenario:7s} {method:14s} crps={scores['crps']:.4f} "
            f"rmse={scores['rmse']:.4f} cov90={scores['coverage']:.3f} "
            f"ssr={scores['ssr']:.2f} ({seconds:.0f} s)",
            flush=True,
        )

    methods = s["methods"]
    if "interpolation" in methods:
        start = time.perf_counter()
        fill = deterministic(interpolation_fill(data.test))
        add("interpolation", fill, time.perf_counter() - start)
    if "gp" in methods:
        start = time.perf_counter()
        add("gp", gp_fill(data.test, steps=s["gp_steps"]), time.perf_counter() - start)
    options = dict(
        steps=s["steps"],
        batch_size=s["batch"],
        base_channels=s["base"],
        model_options=dict(
            consistency_weight=s["consistency"],
            diversity_weight=s["diversity"],
            score_weight=s["score"],
            split=s["split"],
            split_by=s["split_by"],
        ),
        lr_g=s["lr_g"],
        scheduler=s["scheduler"],
        seed=s["seed"],
        device=device,
    )
    for method, fit_gan in (
        ("ambient-gan", fit_conditional_ambient_gan),
        ("inpainted-gan", fit_inpainting_gan),
    ):
        if method in methods:
            model, seconds = fit_gan(data, **options)
            gen = torch.Generator().manual_seed(s["seed"] + 7)
            add(method, model.predict(data.test, members=s["members"], generator=gen), seconds)
    return rows


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| scenario | method | CRPS | CRPS hidden | RMSE mean | 90% coverage | SSR | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['crps']:.4f} | {r['crps_hidden']:.4f} | "
            f"{r['rmse']:.4f} | {r['coverage']:.3f} | {r['ssr']:.2f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    mode.add_argument("--medium", action="store_true", help="32x32 CPU settings")
    parser.add_argument("--steps", type=int, help="GAN training steps")
    parser.add_argument("--train", type=int, help="training trajectories (5 snapshots each)")
    parser.add_argument("--test", type=int, help="test trajectories (5 snapshots each)")
    parser.add_argument("--members", type=int, help="ensemble members")
    parser.add_argument("--base", type=int, help="network width")
    parser.add_argument("--batch", type=int, help="GAN batch size")
    parser.add_argument("--consistency", type=float, default=1.0, help="consistency weight")
    parser.add_argument("--diversity", type=float, default=0.3, help="diversity weight")
    parser.add_argument("--score", type=float, default=0.0, help="held-out score weight")
    parser.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    parser.add_argument(
        "--split",
        type=float,
        nargs=2,
        default=(0.5, 0.95),
        metavar=("LO", "HI"),
        help="range of the fraction of observed pixels kept as the condition in training",
    )
    parser.add_argument(
        "--split-by",
        choices=("location", "operator"),
        default="location",
        help="hold out random locations or the gaps of a fresh measurement",
    )
    parser.add_argument(
        "--scheduler", choices=("none", "cosine"), default="none", help="learning-rate schedule"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    uqdyn.seed_everything(args.seed)
    preset = "quick" if args.quick else "medium" if args.medium else "full"
    s: dict = dict(PRESETS[preset])
    for key in ("steps", "train", "test", "members", "base", "batch"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    s.update(
        consistency=args.consistency,
        diversity=args.diversity,
        score=args.score,
        lr_g=args.lr_g,
        split=tuple(args.split),
        split_by=args.split_by,
        scheduler=None if args.scheduler == "none" else args.scheduler,
        methods=_methods(args.methods),
        seed=args.seed,
    )
    print(f"settings ({preset}): {s}", flush=True)
    start = time.perf_counter()
    train_fields, scale = simulate_fields(s["train"], size=s["size"], seed=s["seed"])
    test_fields, _ = simulate_fields(s["test"], size=s["size"], seed=s["seed"] + 1000, scale=scale)
    print(
        f"fields: train {tuple(train_fields.shape)}, test {tuple(test_fields.shape)} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    rows: list[dict] = []
    for scenario in args.scenarios.split(","):
        rows += run_scenario(scenario.strip(), train_fields, test_fields, s, args.device)
    print(table(rows))
    for scenario in dict.fromkeys(r["scenario"] for r in rows):  # in the order run
        by = {r["method"]: r for r in rows if r["scenario"] == scenario}
        if "ambient-gan" not in by or "gp" not in by:
            continue
        gain = 1.0 - by["ambient-gan"]["crps"] / by["gp"]["crps"]
        cov = by["ambient-gan"]["coverage"]
        print(
            f"{scenario}: AmbientGAN CRPS {100 * gain:+.1f}% vs GP (target >= +20%): "
            f"{'met' if gain >= 0.2 else 'not met'}; 90% coverage {cov:.3f} (target "
            f"[0.80, 0.95]): {'met' if 0.8 <= cov <= 0.95 else 'not met'}"
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
