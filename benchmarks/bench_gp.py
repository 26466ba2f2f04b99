"""Fit and predict time and peak memory of the uqdyn GP baselines.

Cases: exact GP at N = 1e3 and 1e4, the sparse variational GP at N = 1e6 (one epoch) and the
Kronecker grid GP on a 64 x 64 grid x 100 times, on CPU and on CUDA when present. The exact
GP and the SVGP are compared with the same model written directly in gpytorch (ratios of
uqdyn over gpytorch, so > 1 means uqdyn is slower). Each (case, device, tool) runs in its own
process so that the CPU peak memory (max resident set size) belongs to that case alone.

    python benchmarks/bench_gp.py            # all cases, default steps
    python benchmarks/bench_gp.py --quick    # 3 optimisation steps and SVGP at N = 1e5
    python benchmarks/bench_gp.py --cases exact-1e4 --steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

CASES = ("exact-1e3", "exact-1e4", "svgp-1e6", "grid-64x64x100")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 10 * torch.rand(n, 1, generator=g)
    y = torch.sin(x) + 0.3 * torch.sin(3.1 * x) + 0.1 * torch.randn(n, 1, generator=g)
    return x.to(device), y.to(device)


def _exact_uqdyn(n: int, steps: int, device: torch.device) -> tuple[float, float]:
    from uqdyn.models.gp import ExactGP

    x, y = _data(n, device)
    xs = torch.linspace(0, 10, 1000, device=device).unsqueeze(-1)
    gp = ExactGP(1, kernel="matern52")
    _sync(device)
    t0 = time.perf_counter()
    # start from gpytorch's default hyperparameters, as the reference does
    gp.fit(x, y, steps=steps, lr=0.1, init_from_data=False, progress=False)
    _sync(device)
    t1 = time.perf_counter()
    with torch.no_grad():
        pred = gp.predict(xs)
        pred.mean.sum().item()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _exact_gpytorch(n: int, steps: int, device: torch.device) -> tuple[float, float]:
    import gpytorch

    x, y = _data(n, device)
    y = y[:, 0]
    xs = torch.linspace(0, 10, 1000, device=device).unsqueeze(-1)

    class Model(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(2.5))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(x, y, likelihood).to(device)
    likelihood.to(device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    _sync(device)
    t0 = time.perf_counter()
    model.train()
    with gpytorch.settings.max_cholesky_size(4096):
        for _ in range(steps):
            opt.zero_grad()
            loss = -mll(model(x), y)
            loss.backward()
            opt.step()
        _sync(device)
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            pred = likelihood(model(xs))
            pred.mean.sum().item()
            pred.variance.sum().item()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _svgp_uqdyn(n: int, device: torch.device) -> tuple[float, float]:
    from uqdyn.models.gp import SparseGP

    x, y = _data(n, device)
    xs = torch.linspace(0, 10, 10000, device=device).unsqueeze(-1)
    gp = SparseGP(1, num_inducing=256, kernel="matern52")
    _sync(device)
    t0 = time.perf_counter()
    gp.fit(
        x,
        y,
        init_from_data=False,
        epochs=1,
        batch_size=4096,
        lr=0.01,
        ngd_lr=0.1,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    _sync(device)
    t1 = time.perf_counter()
    with torch.no_grad():
        gp.predict(xs).mean.sum().item()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _svgp_gpytorch(n: int, device: torch.device) -> tuple[float, float]:
    import gpytorch

    x, y = _data(n, device)
    y = y[:, 0]
    xs = torch.linspace(0, 10, 10000, device=device).unsqueeze(-1)

    class Model(gpytorch.models.ApproximateGP):
        def __init__(self, z):
            dist = gpytorch.variational.NaturalVariationalDistribution(z.shape[0])
            strategy = gpytorch.variational.VariationalStrategy(self, z, dist, True)
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(2.5))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    g = torch.Generator().manual_seed(0)
    model = Model(x[torch.randperm(n, generator=g)[:256].to(device)].clone()).to(device)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(device)
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=n)
    ngd = gpytorch.optim.NGD(model.variational_parameters(), num_data=n, lr=0.1)
    adam = torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.01)
    _sync(device)
    t0 = time.perf_counter()
    model.train()
    likelihood.train()
    order = torch.randperm(n, generator=g).to(device)
    for start in range(0, n, 4096):
        idx = order[start : start + 4096]
        ngd.zero_grad()
        adam.zero_grad()
        loss = -mll(model(x[idx]), y[idx])
        loss.backward()
        ngd.step()
        adam.step()
    _sync(device)
    t1 = time.perf_counter()
    model.eval()
    likelihood.eval()
    with torch.no_grad():
        for start in range(0, xs.shape[0], 16384):
            likelihood(model(xs[start : start + 16384])).mean.sum().item()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _grid_uqdyn(steps: int, device: torch.device) -> tuple[float, float]:
    from uqdyn.models.gp import GridGP

    g = torch.Generator().manual_seed(0)
    axes = [torch.linspace(0, 10, 100), torch.linspace(0, 1, 64), torch.linspace(0, 1, 64)]
    t, yy, xx = torch.meshgrid(*axes, indexing="ij")
    field = torch.sin(t - 6 * xx) * torch.cos(4 * yy) + 0.05 * torch.randn(t.shape, generator=g)
    axes = [a.to(device) for a in axes]
    field = field.to(device)
    gp = GridGP(3, kernel="matern52")
    _sync(device)
    t0 = time.perf_counter()
    gp.fit(axes, field, steps=steps, progress=False)
    _sync(device)
    t1 = time.perf_counter()
    with torch.no_grad():
        gp.predict().mean.sum().item()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def run_one(case: str, tool: str, device_name: str, quick: bool, steps: int | None) -> dict:
    """Run one (case, tool, device) and return its timings and peak memory."""
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = steps if steps is not None else (3 if quick else 20)
    if case.startswith("exact"):
        n = int(float(case.split("-")[1]))
        fn = _exact_uqdyn if tool == "uqdyn" else _exact_gpytorch
        fit_s, pred_s = fn(n, steps, device)
        note = f"{steps} Adam steps; predict 1e3 points"
    elif case.startswith("svgp"):
        n = int(1e5) if quick else int(1e6)
        fn = _svgp_uqdyn if tool == "uqdyn" else _svgp_gpytorch
        fit_s, pred_s = fn(n, device)
        note = f"N={n:.0e}, M=256, batch 4096, one epoch; predict 1e4 points"
    else:
        fit_s, pred_s = _grid_uqdyn(steps, device)
        note = f"409600 points, {steps} Adam steps; predict the whole grid"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        mem = f"{peak:.0f} MiB (CUDA)"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem = f"{peak:.0f} MiB (max RSS)"
    return {
        "case": case,
        "tool": tool,
        "device": device_name,
        "fit_s": fit_s,
        "predict_s": pred_s,
        "memory": mem,
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps of the exact and grid fits (default 20, quick 3)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the gpytorch rows")
    parser.add_argument(
        "--one", nargs=3, metavar=("CASE", "TOOL", "DEVICE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, quick=args.quick, steps=args.steps)))
        return
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for case in args.cases:
        tools = ["uqdyn"] if case.startswith("grid") or args.no_reference else ["uqdyn", "gpytorch"]
        for device in devices:
            for tool in tools:
                cmd = [sys.executable, __file__, "--one", case, tool, device]
                cmd += ["--quick"] if args.quick else []
                cmd += ["--steps", str(args.steps)] if args.steps is not None else []
                try:
                    out = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=args.timeout, check=True
                    )
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                except subprocess.TimeoutExpired:
                    rows.append(
                        {
                            "case": case,
                            "tool": tool,
                            "device": device,
                            "error": f"timed out after {args.timeout:.0f} s",
                        }
                    )
                except subprocess.CalledProcessError as err:
                    last = (err.stderr.strip().splitlines() or ["?"])[-1]
                    rows.append({"case": case, "tool": tool, "device": device, "error": last})
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(
        "| case | device | tool | fit s | predict s | fit ratio vs gpytorch | peak memory | notes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(
                f"| {row['case']} | {row['device']} | {row['tool']} | error: {row['error']} |"
                " | | | |"
            )
            continue
        ref = next(
            (
                r
                for r in rows
                if r["case"] == row["case"]
                and r["device"] == row["device"]
                and r["tool"] == "gpytorch"
                and "fit_s" in r
            ),
            None,
        )
        ratio = f"{row['fit_s'] / ref['fit_s']:.2f}" if ref else ""
        print(
            f"| {row['case']} | {row['device']} | {row['tool']} | {row['fit_s']:.3g} | "
            f"{row['predict_s']:.3g} | {ratio} | {row['memory']} | {row['note']} |"
        )
    if any(math.isnan(r.get("fit_s", 0.0)) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
