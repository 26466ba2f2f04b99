"""GP-sample benchmark of the neural-process family, uqdyn beside the ``neuralprocesses`` library.

The setup of the ``neuralprocesses`` library (Bruinsma et al.), in one input dimension:

* kernels (``k(d)`` of the distance ``d = x - x'``, unit variance):

  - ``eq``: ``exp(-d^2 / (2 * 0.25^2))``;
  - ``matern``: Matern-5/2 with length scale 0.25, ``(1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``
    with ``r = |d| / 0.25``;
  - ``weakly-periodic``: ``exp(-d^2 / (2 * 0.5^2)) * exp(-2 sin^2(pi d / 0.25))`` (an EQ of
    length scale 0.5 times an EQ of length scale 1 on the circle embedding of period 0.25,
    i.e. stheno's ``EQ().stretch(0.5) * EQ().stretch(1).periodic(0.25)``);

* observation noise variance 0.05; a batch has one number of context points drawn from
  ``{0, ..., 30}`` and 50 target points; context inputs ``U(-2, 2)``;
* interpolation: target inputs ``U(-2, 2)`` (the training range); extrapolation: target inputs
  ``U(2, 6)`` with the context still in ``U(-2, 2)``.

For each kernel, the CNP, attentive CNP (no self-attention), latent NP and convolutional CNP
of uqdyn and the same four models of ``neuralprocesses`` (``construct_gnp``,
``construct_agnp``, ``construct_gnp(dim_lv=...)``, ``construct_convgnp(conv_arch="conv")``,
heterogeneous Gaussian likelihood) are trained in the same process with the same batches,
steps, batch size, Adam learning rate and widths/depths (``neuralprocesses``'
``num_*_layers=L`` hidden layers are uqdyn's ``*_depth=L+1`` linear layers). The two
ConvCNPs share the discretisation (``--ppu`` points per unit, margin 0.1), the number of
convolution layers (``--conv-layers``), their channels (``--conv-channels``) and the
receptive field (``--receptive-field`` units, which sets the kernel size the same way in both
libraries); uqdyn's is :class:`~uqdyn.models.neural_process.OffGridConvCNP` with
``architecture="cnn"``. CNPs are trained by the conditional log-likelihood, latent NPs by the ELBO with the
context posterior as prior (``nps.elbo`` with ``subsume_context=False``), one latent draw.

Evaluation on held-out tasks at fixed context sizes: per-target log-likelihood
``log p(y_T | x_T, C) / |T|``; for the latent NPs the Monte Carlo estimate
``log mean_k prod_t p(y_t | x_t, z_k, C)`` over ``K`` latent draws (as ``nps.loglik``). The
oracle is the exact GP predictive of the true kernel, computed densely in float64: ``joint``
(full covariance) and ``diag`` (marginals only, the best any factorised model like a CNP can do).

Usage (interpreter of an environment that has ``neuralprocesses``; without it the peer rows
say so)::

    python benchmarks/np_gp_samples.py --quick            # minutes on one CPU thread
    python benchmarks/np_gp_samples.py                    # full: width 256, 20,000 steps
    python benchmarks/np_gp_samples.py --steps 2000 --width 64 --kernels eq
    python benchmarks/np_gp_samples.py --models convcnp acnp --kernels eq --steps 5000

``neuralprocesses`` is optional (``pip install neuralprocesses``, best in its own virtual
environment); it is imported only when its rows are run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from uqdyn.data import Task
from uqdyn.models.neural_process import CNP, AttentiveCNP, LatentNP, OffGridConvCNP

NOISE = 0.05
N_TARGET = 50
MAX_CONTEXT = 30
X_RANGE = (-2.0, 2.0)
EXTRAPOLATION_RANGE = (2.0, 6.0)
KERNELS = ("eq", "matern", "weakly-periodic")
MODELS = ("cnp", "acnp", "np", "convcnp")
LABELS = {"cnp": "CNP", "acnp": "AttentiveCNP", "np": "LatentNP", "convcnp": "ConvCNP"}


def kernel_matrix(name: str, x1: Tensor, x2: Tensor) -> Tensor:
    """Kernel ``k(x1_i, x2_j)`` for inputs ``x1 (B, N)``, ``x2 (B, M)``; ``(B, N, M)``."""
    d = x1[:, :, None] - x2[:, None, :]
    if name == "eq":
        return torch.exp(-0.5 * (d / 0.25).square())
    if name == "matern":
        r = math.sqrt(5.0) * d.abs() / 0.25
        return (1.0 + r + r.square() / 3.0) * torch.exp(-r)
    if name == "weakly-periodic":
        periodic = torch.exp(-2.0 * torch.sin(math.pi * d / 0.25).square())
        return torch.exp(-0.5 * (d / 0.5).square()) * periodic
    raise ValueError(f"kernel={name!r}; expected one of {KERNELS}")


def sample_tasks(
    kernel: str,
    batch: int,
    n_context: int,
    target_range: tuple[float, float],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GP samples ``xc, yc (B, n_context, 1)`` and ``xt, yt (B, 50, 1)`` in float64.

    Context inputs are ``U(-2, 2)``, target inputs ``U(target_range)``; ``y = f(x) + noise``
    with ``f ~ GP(0, k)`` and noise variance 0.05, drawn jointly for context and targets.
    """
    lo, hi = target_range
    f64 = torch.float64
    xc = X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * torch.rand(
        batch, n_context, generator=generator, dtype=f64
    )
    xt = lo + (hi - lo) * torch.rand(batch, N_TARGET, generator=generator, dtype=f64)
    x = torch.cat([xc, xt], dim=1)
    n = x.shape[1]
    cov = kernel_matrix(kernel, x, x) + NOISE * torch.eye(n, dtype=f64)
    y = torch.linalg.cholesky(cov) @ torch.randn(batch, n, 1, generator=generator, dtype=f64)
    x = x.unsqueeze(-1)
    return x[:, :n_context], y[:, :n_context], x[:, n_context:], y[:, n_context:]


def gp_oracle(kernel: str, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> tuple[Tensor, Tensor]:
    """Exact GP log-likelihood per target of ``yt`` given the context, float64; each ``(B,)``.

    Returns ``(joint, diag)``: the log density of the full predictive covariance and the sum
    of the marginal log densities, both divided by the number of targets.
    """
    xc, yc, xt, yt = (v.double() for v in (xc, yc, xt, yt))
    a, b = xc[..., 0], xt[..., 0]
    n_t = b.shape[1]
    ktt = kernel_matrix(kernel, b, b) + NOISE * torch.eye(n_t, dtype=torch.float64)
    if a.shape[1] == 0:
        mean, cov = torch.zeros_like(yt[..., 0]), ktt
    else:
        kcc = kernel_matrix(kernel, a, a) + NOISE * torch.eye(a.shape[1], dtype=torch.float64)
        kct = kernel_matrix(kernel, a, b)
        chol = torch.linalg.cholesky(kcc)
        alpha = torch.cholesky_solve(yc, chol)
        v = torch.linalg.solve_triangular(chol, kct, upper=False)
        mean = (kct.transpose(1, 2) @ alpha)[..., 0]
        cov = ktt - v.transpose(1, 2) @ v
    joint = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(yt[..., 0])
    var = torch.diagonal(cov, dim1=1, dim2=2)
    diag = torch.distributions.Normal(mean, var.sqrt()).log_prob(yt[..., 0]).sum(-1)
    return joint / n_t, diag / n_t


def _check_kernels_against_stheno() -> str:
    """Largest difference between :func:`kernel_matrix` and the peer's stheno kernels."""
    try:
        from stheno import EQ, Matern52
    except ImportError as error:  # pragma: no cover - optional
        return f"stheno not importable ({error}); kernels not cross-checked"
    peer = {
        "eq": EQ().stretch(0.25),
        "matern": Matern52().stretch(0.25),
        "weakly-periodic": EQ().stretch(0.5) * EQ().stretch(1.0).periodic(0.25),
    }
    x = torch.linspace(-2.0, 6.0, 41, dtype=torch.float64)
    worst = 0.0
    for name, k in peer.items():
        ref = torch.as_tensor(k(x.numpy()[:, None], x.numpy()[:, None]).mat, dtype=torch.float64)
        ours = kernel_matrix(name, x[None], x[None])[0]
        worst = max(worst, float((ref - ours).abs().max()))
    return f"kernels agree with stheno's to {worst:.1e}"


# ----------------------------------------------------------------------------- models


def build(
    tool: str, model: str, width: int, depth: int, z_dim: int, heads: int, conv: dict[str, Any]
) -> Any:
    """A model of ``tool`` (``uqdyn`` or ``neuralprocesses``) with the given sizes.

    ``conv`` holds the ConvCNP settings: ``ppu``, ``receptive_field``, ``layers``,
    ``channels``.
    """
    if model == "convcnp":
        return _build_convcnp(tool, conv)
    if tool == "uqdyn":
        common: dict[str, Any] = dict(
            width=width, encoder_depth=depth + 1, decoder_depth=depth + 1, min_context=0
        )
        if model == "cnp":
            return CNP(1, 1, **common)
        if model == "acnp":
            return AttentiveCNP(1, 1, num_heads=heads, self_attention=0, **common)
        return LatentNP(1, 1, z_dim=z_dim, **common)
    import neuralprocesses.torch as nps

    options: dict[str, Any] = dict(
        dim_x=1,
        dim_y=1,
        dim_embedding=width,
        width=width,
        num_enc_layers=depth,
        num_dec_layers=depth,
        likelihood="het",
    )
    if model == "cnp":
        return nps.construct_gnp(**options)
    if model == "acnp":
        return nps.construct_agnp(num_heads=heads, **options)
    return nps.construct_gnp(dim_lv=z_dim, **options)


def _build_convcnp(tool: str, conv: dict[str, Any]) -> Any:
    if tool == "uqdyn":
        return OffGridConvCNP(
            1,
            points_per_unit=conv["ppu"],
            margin=0.1,
            width=conv["channels"],
            depth=conv["layers"],
            receptive_field=conv["receptive_field"],
            architecture="cnn",
            min_context=0,
        )
    import neuralprocesses.torch as nps

    return nps.construct_convgnp(
        dim_x=1,
        dim_y=1,
        points_per_unit=conv["ppu"],
        margin=0.1,
        likelihood="het",
        conv_arch="conv",
        conv_receptive_field=conv["receptive_field"],
        conv_layers=conv["layers"],
        conv_channels=conv["channels"],
    )


def _channels_first(*tensors: Tensor) -> list[Tensor]:
    return [t.transpose(1, 2) for t in tensors]


def train_loss(tool: str, model_name: str) -> Callable[..., Tensor]:
    """``loss(model, xc, yc, xt, yt)``: negative log-likelihood (or ELBO) per target."""
    if tool == "uqdyn":

        def loss(m: Any, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> Tensor:
            mc = torch.ones(xc.shape[:2], dtype=torch.bool)
            mt = torch.ones(xt.shape[:2], dtype=torch.bool)
            return m.loss(Task(xc, yc, mc, xt, yt, mt))

        return loss
    import neuralprocesses.torch as nps

    if model_name == "np":

        def peer_elbo(m: Any, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> Tensor:
            args = _channels_first(xc, yc, xt, yt)
            return -nps.elbo(m, *args, num_samples=1, normalise=True).mean()

        return peer_elbo

    def peer_loglik(m: Any, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> Tensor:
        return -nps.loglik(m, *_channels_first(xc, yc, xt, yt), normalise=True).mean()

    return peer_loglik


@torch.no_grad()
def eval_loglik(
    tool: str, model_name: str, m: Any, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor, k: int
) -> Tensor:
    """Per-target log-likelihood ``(B,)`` in float64 (``k`` latent draws for latent NPs)."""
    n_t = xt.shape[1]
    if tool == "uqdyn":
        if model_name == "np":
            pred = m(xc, yc, xt, num_samples=k)
        else:
            pred = m(xc, yc, xt)
        loc, scale = pred.loc.double(), pred.scale.double()
        logp = torch.distributions.Normal(loc, scale).log_prob(yt.double()).sum((-1, -2))
        if model_name == "np":  # (K, B): log mean_k prod_t p(y_t | z_k)
            logp = torch.logsumexp(logp, dim=0) - math.log(k)
        return logp / n_t
    import neuralprocesses.torch as nps

    samples = k if model_name == "np" else 1
    out = nps.loglik(
        m, *_channels_first(xc, yc, xt, yt), num_samples=samples, batch_size=k, normalise=True
    )
    return out.double().reshape(-1)


# ----------------------------------------------------------------------------- run


def run_kernel(kernel: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every (tool, model) on ``kernel`` and evaluate; one row dict per result."""
    contexts = args.eval_contexts
    eval_sets: dict[tuple[str, int], list[tuple[Tensor, ...]]] = {}
    for regime, rng in (("interp", X_RANGE), ("extrap", EXTRAPOLATION_RANGE)):
        for nc in contexts:
            g = torch.Generator().manual_seed(10_000 + 97 * nc + (regime == "extrap"))
            eval_sets[regime, nc] = [
                sample_tasks(kernel, args.batch, nc, rng, g) for _ in range(args.eval_batches)
            ]
    rows: list[dict[str, Any]] = []
    for (regime, nc), batches in eval_sets.items():
        joint = torch.cat([gp_oracle(kernel, *b)[0] for b in batches])
        diag = torch.cat([gp_oracle(kernel, *b)[1] for b in batches])
        for name, v in (("GP oracle (joint)", joint), ("GP oracle (diag)", diag)):
            rows.append(_row(kernel, regime, nc, "oracle", name, v, math.nan, 0, 0.0))
    for model_name in args.models:
        for tool in args.tools:
            try:
                rows.extend(_train_and_eval(kernel, model_name, tool, eval_sets, args))
            except Exception as error:  # reported in the table, the run goes on
                last = traceback.format_exception_only(type(error), error)[-1].strip()
                print(f"  {kernel} {model_name} {tool}: error {last[:160]}", flush=True)
    return rows


def _row(
    kernel: str,
    regime: str,
    nc: int,
    tool: str,
    model: str,
    values: Tensor,
    train_s: float,
    params: int,
    final_loss: float,
) -> dict[str, Any]:
    mean = float(values.mean())
    sem = float(values.std() / math.sqrt(values.numel()))
    return dict(
        kernel=kernel,
        regime=regime,
        nc=nc,
        tool=tool,
        model=model,
        mean=mean,
        sem=sem,
        train_s=train_s,
        params=params,
        final_loss=final_loss,
    )


def _train_and_eval(
    kernel: str,
    model_name: str,
    tool: str,
    eval_sets: dict[tuple[str, int], list[tuple[Tensor, ...]]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    torch.manual_seed(args.seed)
    conv = dict(
        ppu=args.ppu,
        receptive_field=args.receptive_field,
        layers=args.conv_layers,
        channels=args.conv_channels,
    )
    m = build(tool, model_name, args.width, args.depth, args.z_dim, args.heads, conv)
    loss_fn = train_loss(tool, model_name)
    opt = torch.optim.Adam(m.parameters(), lr=args.lr)
    params = sum(p.numel() for p in m.parameters())
    f32 = torch.float32
    start = time.perf_counter()
    recent: list[float] = []
    for step in range(args.steps):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)  # same data for all
        nc = int(torch.randint(0, MAX_CONTEXT + 1, (1,), generator=g))
        xc, yc, xt, yt = (v.to(f32) for v in sample_tasks(kernel, args.batch, nc, X_RANGE, g))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(m, xc, yc, xt, yt)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        loss.backward()
        opt.step()
        recent = (recent + [float(loss.detach())])[-200:]
    train_s = time.perf_counter() - start
    final = sum(recent) / max(len(recent), 1)
    label = LABELS[model_name]
    rows = []
    torch.manual_seed(args.seed + 1)  # latent draws of the evaluation
    for (regime, nc), batches in eval_sets.items():
        values = torch.cat(
            [
                eval_loglik(tool, model_name, m, *(v.to(f32) for v in b), k=args.eval_samples)
                for b in batches
            ]
        )
        rows.append(_row(kernel, regime, nc, tool, label, values, train_s, params, final))
    print(
        f"  {kernel:>15} {label:>12} {tool:>15}: {params} params, {train_s:.0f} s, "
        f"train loss (last 200 steps) {final:.3f}",
        flush=True,
    )
    return rows


def print_tables(rows: list[dict[str, Any]], contexts: list[int]) -> None:
    """Markdown tables: per kernel and regime, log-likelihood per target by context size."""
    keys = sorted(
        {(r["kernel"], r["regime"]) for r in rows}, key=lambda k: (k[0], k[1] != "interp")
    )
    for kernel, regime in keys:
        sub = [r for r in rows if r["kernel"] == kernel and r["regime"] == regime]
        print(f"\n{kernel}, {'interpolation' if regime == 'interp' else 'extrapolation'}:\n")
        print("| model | tool | " + " | ".join(f"nc={nc}" for nc in contexts) + " | mean |")
        print("|---|---|" + "---|" * (len(contexts) + 1))
        labels = sorted({(r["model"], r["tool"]) for r in sub}, key=lambda mt: _order(*mt))
        for model, tool in labels:
            cells = []
            means = []
            for nc in contexts:
                hit = [r for r in sub if (r["model"], r["tool"], r["nc"]) == (model, tool, nc)]
                if hit:
                    cells.append(f"{hit[0]['mean']:.3f} ± {hit[0]['sem']:.3f}")
                    means.append(hit[0]["mean"])
                else:
                    cells.append("")
            avg = f"{sum(means) / len(means):.3f}" if len(means) == len(contexts) else ""
            print(f"| {model} | {tool} | " + " | ".join(cells) + f" | {avg} |")
    print("\nuqdyn minus neuralprocesses, mean over the context sizes (nats per target):\n")
    print(
        "| kernel | regime | model | uqdyn - peer | uqdyn - oracle (diag) | uqdyn - oracle (joint) |"
    )
    print("|---|---|---|---|---|---|")
    for kernel, regime in keys:
        sub = [r for r in rows if r["kernel"] == kernel and r["regime"] == regime]

        def avg(model: str, tool: str, sub: list[dict[str, Any]] = sub) -> float:
            vals = [r["mean"] for r in sub if r["model"] == model and r["tool"] == tool]
            return sum(vals) / len(vals) if len(vals) == len(contexts) else math.nan

        diag, joint = avg("GP oracle (diag)", "oracle"), avg("GP oracle (joint)", "oracle")
        for model in LABELS.values():
            ours, peer = avg(model, "uqdyn"), avg(model, "neuralprocesses")
            if math.isnan(ours):
                continue
            print(
                f"| {kernel} | {regime} | {model} | {ours - peer:+.3f} | {ours - diag:+.3f} | "
                f"{ours - joint:+.3f} |"
            )


def _order(model: str, tool: str) -> tuple[int, int]:
    models = ["GP oracle (joint)", "GP oracle (diag)", *LABELS.values()]
    tools = ["oracle", "uqdyn", "neuralprocesses"]
    return models.index(model), tools.index(tool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, minutes on one CPU")
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--tools",
        nargs="+",
        default=["uqdyn", "neuralprocesses"],
        choices=["uqdyn", "neuralprocesses"],
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None, help="hidden layers (peer's count)")
    parser.add_argument("--z-dim", type=int, default=None)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--ppu", type=float, default=None, help="ConvCNP points per unit")
    parser.add_argument(
        "--receptive-field", type=float, default=None, help="ConvCNP receptive field (units)"
    )
    parser.add_argument("--conv-layers", type=int, default=None, help="ConvCNP conv layers")
    parser.add_argument("--conv-channels", type=int, default=None, help="ConvCNP channels")
    parser.add_argument("--eval-contexts", type=int, nargs="+", default=[0, 3, 10, 30])
    parser.add_argument("--eval-batches", type=int, default=None)
    parser.add_argument("--eval-samples", type=int, default=None, help="latent draws K")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the result rows to this file")
    args = parser.parse_args()
    quick = args.quick
    args.steps = args.steps or (300 if quick else 20_000)
    args.width = args.width or (32 if quick else 256)
    args.depth = args.depth or (2 if quick else 3)
    args.z_dim = args.z_dim or args.width
    args.eval_batches = args.eval_batches or (4 if quick else 64)
    args.ppu = args.ppu or (16.0 if quick else 64.0)
    args.receptive_field = args.receptive_field or (2.0 if quick else 4.0)
    args.conv_layers = args.conv_layers or (4 if quick else 6)
    args.conv_channels = args.conv_channels or (16 if quick else 64)
    args.eval_samples = args.eval_samples or (16 if quick else 512)
    for nc in args.eval_contexts:
        if not 0 <= nc <= MAX_CONTEXT:
            raise ValueError(f"--eval-contexts has {nc}; expected values in 0..{MAX_CONTEXT}")
    torch.set_num_threads(args.threads)
    try:
        import neuralprocesses.torch  # noqa: F401

        peer = f"neuralprocesses {importlib.metadata.version('neuralprocesses')}"
    except ImportError as error:
        peer = f"neuralprocesses not importable ({error})"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {peer}; "
        f"{_check_kernels_against_stheno()}"
    )
    print(
        f"steps={args.steps} batch={args.batch} lr={args.lr} width={args.width} "
        f"hidden layers={args.depth} z_dim={args.z_dim} heads={args.heads} "
        f"convcnp: ppu={args.ppu} receptive field={args.receptive_field} "
        f"layers={args.conv_layers} channels={args.conv_channels}; "
        f"eval: {args.eval_batches}x{args.batch} tasks per context size, K={args.eval_samples}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for kernel in args.kernels:
        kernel_rows = run_kernel(kernel, args)
        rows.extend(kernel_rows)
        if len(args.kernels) > 1:  # each kernel's tables as soon as it is done
            print_tables(kernel_rows, args.eval_contexts)
        if args.json:
            _write_json(args.json, rows)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    print_tables(rows, args.eval_contexts)


def _write_json(path: str, rows: list[dict[str, Any]]) -> None:
    """Write the result rows to ``path`` atomically (temporary file, then ``os.replace``)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
