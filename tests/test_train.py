"""uqdyn.train.fit: convergence, clipping, schedules, validation metrics, early stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from uqdyn.predictive import Ensemble, MultivariateNormal, Normal
from uqdyn.scoring import crps_normal, log_score_normal
from uqdyn.train import FitResult, fit


def _mse(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return (model(batch[0]) - batch[1]).square().mean()


def _regression_batch(n: int = 64, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=dtype)
    y = (
        x @ torch.tensor([[1.5], [-2.0]], dtype=dtype)
        + 0.3
        + 0.1 * torch.randn(n, 1, generator=g, dtype=dtype)
    )
    return x, y


def test_linear_regression_converges_to_least_squares(device: torch.device) -> None:
    x, y = _regression_batch()
    model = nn.Linear(2, 1).double()
    result = fit(model, [(x, y)], loss_fn=_mse, steps=400, lr=0.05, device=device, progress=False)
    design = np.column_stack([x.numpy(), np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, y.numpy()[:, 0], rcond=None)
    got = np.concatenate(
        [model.weight.detach().cpu().numpy()[0], model.bias.detach().cpu().numpy()]
    )
    np.testing.assert_allclose(got, coef, atol=1e-4)
    assert isinstance(result, FitResult)
    assert result.steps_done == 400 and result.stopped == "completed"
    assert len(result.history) == 400
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert model.weight.device.type == device.type


def test_grad_clip_caps_the_update() -> None:
    x, y = _regression_batch(16)
    torch.manual_seed(1)
    start = nn.Linear(2, 1).double()
    start.weight.data.mul_(50.0)
    params0 = [p.detach().clone() for p in start.parameters()]
    loss = _mse(start, (x, y))
    grads = torch.autograd.grad(loss, list(start.parameters()))
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    assert norm > 1.0
    for clip in (None, 0.5):
        model = nn.Linear(2, 1).double()
        model.load_state_dict(start.state_dict())
        result = fit(
            model,
            [(x, y)],
            loss_fn=_mse,
            steps=1,
            optimizer="sgd",
            lr=1.0,
            grad_clip=clip,
            device="cpu",
            progress=False,
        )
        scale = 1.0 if clip is None else clip / float(norm)
        for p, p0, g in zip(model.parameters(), params0, grads, strict=True):
            # torch divides by (norm + 1e-6) when clipping: allow that relative difference.
            torch.testing.assert_close(p.detach() - p0, -scale * g, rtol=1e-6, atol=0)
        step = torch.sqrt(
            sum(
                (p.detach() - p0).square().sum()
                for p, p0 in zip(model.parameters(), params0, strict=True)
            )
        )
        expected = float(norm) if clip is None else clip
        assert math.isclose(float(step), expected, rel_tol=1e-6)
        assert math.isclose(result.history[0]["grad_norm"], float(norm), rel_tol=1e-9)


def _scalar_model() -> nn.Module:
    model = nn.Linear(1, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    return model


def test_early_stopping_triggers_and_restores_best() -> None:
    # Training pulls w from 0 towards 1 (y = x); validation targets y = -x, so the validation
    # loss (w + 1)^2 E[x^2] grows at every validation after the first.
    x = torch.linspace(-1, 1, 21, dtype=torch.float64).unsqueeze(-1)
    model = _scalar_model()
    result = fit(
        model,
        [(x, x)],
        loss_fn=_mse,
        steps=200,
        optimizer="sgd",
        lr=0.1,
        val_data=[(x, -x)],
        val_every=5,
        early_stopping=3,
        restore_best=True,
        device="cpu",
        progress=False,
    )
    assert result.stopped == "early_stopping"
    assert result.steps_done == 5 * (1 + 3)
    assert result.best_step == 5
    val = result.metric("val_loss")
    assert val[0] == [5, 10, 15, 20]
    assert all(b > a for a, b in zip(val[1], val[1][1:], strict=False))
    torch.testing.assert_close(model.weight.detach(), result.best_state["weight"], rtol=0, atol=0)
    w_best = float(result.best_state["weight"])
    assert math.isclose(
        result.best_score, float(((w_best + 1.0) * x).square().mean()), rel_tol=1e-12
    )


def test_min_delta_counts_small_improvements_as_none() -> None:
    x = torch.linspace(-1, 1, 21, dtype=torch.float64).unsqueeze(-1)
    # Validation on the training task improves at every validation, but by less than 10.
    result = fit(
        _scalar_model(),
        [(x, x)],
        loss_fn=_mse,
        steps=100,
        optimizer="sgd",
        lr=0.1,
        val_data=[(x, x)],
        val_every=5,
        early_stopping=2,
        min_delta=10.0,
        device="cpu",
        progress=False,
    )
    assert result.stopped == "early_stopping" and result.steps_done == 15
    assert result.best_step == 5


@pytest.mark.parametrize("name", ["cosine", "step", "callable"])
def test_scheduler_steps_every_optimizer_step(name: str) -> None:
    x, y = _regression_batch(8)
    steps, lr = 12, 0.1
    scheduler = (
        (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k)))
        if name == "callable"
        else name
    )
    result = fit(
        nn.Linear(2, 1).double(),
        [(x, y)],
        loss_fn=_mse,
        steps=steps,
        lr=lr,
        scheduler=scheduler,
        device="cpu",
        progress=False,
    )
    got = [row["lr"] for row in result.history]
    k = np.arange(steps)  # scheduler steps taken before step k + 1
    if name == "cosine":
        expected = 0.5 * lr * (1 + np.cos(np.pi * k / steps))
    elif name == "step":
        expected = lr * 0.1 ** (k // (steps // 3))
    else:
        expected = lr / (1 + k)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reduce_lr_on_plateau_steps_on_the_monitored_metric() -> None:
    x = torch.linspace(-1, 1, 21, dtype=torch.float64).unsqueeze(-1)
    result = fit(
        _scalar_model(),
        [(x, x)],
        loss_fn=_mse,
        steps=30,
        optimizer="sgd",
        lr=0.1,
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
        val_data=[(x, -x)],
        val_every=5,
        device="cpu",
        progress=False,
    )
    lrs = [row["lr"] for row in result.history]
    # Validation gets worse every time: lr drops x0.1 after each validation but the first.
    assert lrs[0] == 0.1 and lrs[5] == 0.1
    assert math.isclose(lrs[10], 0.01) and math.isclose(lrs[15], 0.001)


class _GaussianRegressor(nn.Module):
    """Predicts N(a x + b, softplus(s)^2) at every point."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.raw_scale = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> Normal:
        scale = nn.functional.softplus(self.raw_scale).expand(x.shape)
        return Normal(self.linear(x), scale)

    def loss(self, batch) -> torch.Tensor:
        x, y, mask = batch
        nll = -self(x).log_prob(y)[..., 0]
        return (nll * mask).sum() / mask.sum()


def _masked_point_batches(seed: int):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for points in (7, 5):
        x = torch.randn(3, points, 1, generator=g, dtype=torch.float64)
        y = 2.0 * x + 0.5 * torch.randn(3, points, 1, generator=g, dtype=torch.float64)
        mask = torch.rand(3, points, generator=g) > 0.3
        mask[:, 0] = True
        batches.append((x, y, mask))
    return batches


def test_validation_crps_and_nll_equal_scoring_functions() -> None:
    torch.manual_seed(0)
    model = _GaussianRegressor().double()
    val = _masked_point_batches(1)
    result = fit(
        model,
        _masked_point_batches(2),
        steps=3,
        lr=0.05,
        val_data=val,
        val_every=3,
        predict_fn=lambda m, b: (m(b[0]), b[1], b[2]),
        monitor="val_crps",
        device="cpu",
        progress=False,
    )
    row = result.history[-1]
    with torch.no_grad():
        mus = [model(x).mean for x, _, _ in val]
        sigmas = [model(x).stddev for x, _, _ in val]
        losses = [float(model.loss(b)) for b in val]
    obs = torch.cat([y.reshape(-1) for _, y, _ in val])
    mu = torch.cat([m.reshape(-1) for m in mus])
    sigma = torch.cat([s.reshape(-1) for s in sigmas])
    keep = torch.cat([m.reshape(-1) for _, _, m in val])
    crps = crps_normal(obs, mu, sigma, reduction="mean", mask=keep)
    nll = log_score_normal(obs, mu, sigma, reduction="mean", mask=keep)
    assert math.isclose(row["val_crps"], float(crps), rel_tol=1e-12)
    assert math.isclose(row["val_nll"], float(nll), rel_tol=1e-12)
    assert math.isclose(row["val_loss"], sum(losses) / len(losses), rel_tol=1e-12)
    # The masked log score equals a scipy computation too.
    ref = -scipy.stats.norm.logpdf(obs.numpy(), mu.numpy(), sigma.numpy())[keep.numpy()].mean()
    assert math.isclose(row["val_nll"], ref, rel_tol=1e-10)
    assert result.best_step == 3 and result.best_score == row["val_crps"]


def test_joint_density_nll_is_per_point_and_ensemble_nll_is_nan() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T + 6 * torch.eye(6, dtype=torch.float64)
    model = nn.Linear(1, 1).double()

    def mvn_predict(m, b):
        loc = m.weight.detach().reshape(()) * 0 + torch.zeros(4, 6, dtype=torch.float64)
        return MultivariateNormal(loc, covariance_matrix=cov.expand(4, 6, 6)), b, None

    result = fit(
        model,
        [y],
        loss_fn=lambda m, b: m.weight.square().sum(),
        steps=1,
        val_data=[y],
        val_every=1,
        predict_fn=mvn_predict,
        monitor="val_nll",
        device="cpu",
        progress=False,
    )
    ref = (
        -sum(
            scipy.stats.multivariate_normal(np.zeros(6), cov.numpy()).logpdf(row)
            for row in y.numpy()
        )
        / y.numel()
    )
    assert math.isclose(result.history[0]["val_nll"], ref, rel_tol=1e-10)

    def ensemble_predict(m, b):
        members = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(0), dtype=b.dtype)
        return Ensemble(members), b, None

    result = fit(
        nn.Linear(1, 1).double(),
        [y],
        loss_fn=lambda m, b: m.weight.square().sum(),
        steps=1,
        val_data=[y],
        val_every=1,
        predict_fn=ensemble_predict,
        monitor="val_crps",
        device="cpu",
        progress=False,
    )
    assert math.isnan(result.history[0]["val_nll"])
    assert math.isfinite(result.history[0]["val_crps"])
    with pytest.raises(ValueError, match="monitor='val_nll'.*no density"):
        fit(
            nn.Linear(1, 1).double(),
            [y],
            loss_fn=lambda m, b: m.weight.square().sum(),
            steps=1,
            val_data=[y],
            val_every=1,
            predict_fn=ensemble_predict,
            monitor="val_nll",
            device="cpu",
            progress=False,
        )


def test_final_validation_and_log_every() -> None:
    x, y = _regression_batch(8)
    result = fit(
        nn.Linear(2, 1).double(),
        [(x, y)],
        loss_fn=_mse,
        steps=10,
        val_data=[(x, y)],
        val_every=4,
        log_every=3,
        device="cpu",
        progress=False,
    )
    assert [row["step"] for row in result.history] == [3, 4, 6, 8, 9, 10]
    assert [s for s, _ in zip(*result.metric("val_loss"), strict=True)] == [4, 8, 10]
    assert result.history[0]["val_loss"] is None
    assert set(result.history[0]) == {
        "step",
        "loss",
        "grad_norm",
        "lr",
        "seconds",
        "val_loss",
        "val_crps",
        "val_nll",
    }


def test_fit_is_seeded_and_leaves_the_callers_rng_alone() -> None:
    def noisy_loss(m, b):
        return (m(b) + 0.1 * torch.randn_like(b)).square().mean()

    def draw(g):
        return torch.randn(8, 1, generator=g)

    finals = []
    for seed in (0, 0, 1):
        torch.manual_seed(123)
        model = nn.Linear(1, 1)
        before = torch.get_rng_state()
        fit(model, draw, loss_fn=noisy_loss, steps=5, seed=seed, device="cpu", progress=False)
        assert torch.equal(torch.get_rng_state(), before)
        finals.append(model.weight.detach().clone())
    assert torch.equal(finals[0], finals[1])
    assert not torch.equal(finals[0], finals[2])


def test_batches_are_moved_to_the_device(device: torch.device) -> None:
    seen = []

    def loss_fn(m, batch):
        seen.append({batch["x"].device.type, batch["pair"][0].device.type})
        return _mse(m, (batch["x"], batch["pair"][1]))

    x, y = _regression_batch(8, dtype=torch.float32)
    fit(
        nn.Linear(2, 1),
        [{"x": x, "pair": (x, y)}],
        loss_fn=loss_fn,
        steps=2,
        device=device,
        progress=False,
    )
    assert seen == [{device.type}, {device.type}]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_amp_runs_in_bf16_on_cuda() -> None:
    dtypes = []

    def loss_fn(m, b):
        out = m(b[0])
        dtypes.append(out.dtype)
        return (out.float() - b[1]).square().mean()

    x, y = _regression_batch(32, dtype=torch.float32)
    result = fit(
        nn.Linear(2, 1),
        [(x, y)],
        loss_fn=loss_fn,
        steps=50,
        lr=0.05,
        amp=True,
        device="cuda",
        progress=False,
    )
    assert dtypes[0] == torch.bfloat16
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def _fit_quick(**kwargs):
    x, y = _regression_batch(8)
    args = {"steps": 2, "device": "cpu", "progress": False}
    args.update(kwargs)
    return fit(nn.Linear(2, 1).double(), [(x, y)], loss_fn=_mse, **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps=0"),
        ({"steps": 2.5}, TypeError, "steps=2.5"),
        ({"lr": 0.0}, ValueError, "lr=0.0"),
        ({"lr": -1e-3}, ValueError, "lr=-0.001"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip=0.0"),
        (
            {"optimizer": "rmsprop"},
            ValueError,
            r"optimizer='rmsprop'.*\['adam', 'adamw', 'lbfgs', 'sgd'\]",
        ),
        ({"scheduler": "linear"}, ValueError, r"scheduler='linear'.*\['cosine', 'step'\]"),
        ({"optimizer": lambda p: 3}, TypeError, "returned a int"),
        ({"monitor": "crps"}, ValueError, "monitor='crps'"),
        ({"monitor": "val_crps", "val_data": [0]}, ValueError, "needs a predict_fn"),
        ({"early_stopping": 3}, ValueError, "early_stopping=3 needs validation data"),
        ({"restore_best": True}, ValueError, "restore_best=True needs validation data"),
        ({"resume": True}, ValueError, "resume=True needs a checkpoint_dir"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_every=5 needs a checkpoint_dir"),
        ({"amp": True}, ValueError, "amp=True needs a CUDA device"),
        ({"device": "tpu"}, ValueError, "device='tpu'"),
        ({"val_every": 0}, ValueError, "val_every=0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        _fit_quick(**kwargs)


def test_bad_data_and_loss_raise_clear_errors() -> None:
    model = nn.Linear(2, 1)
    with pytest.raises(TypeError, match="train_data is a Tensor"):
        fit(model, torch.zeros(3, 2), loss_fn=_mse, steps=1, progress=False)
    with pytest.raises(TypeError, match="train_data is a int"):
        fit(model, 3, loss_fn=_mse, steps=1, progress=False)
    with pytest.raises(ValueError, match="train_data yielded no batches"):
        fit(model, [], loss_fn=_mse, steps=1, progress=False)
    x, y = _regression_batch(4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"shape \(4, 1\)"):
        fit(model, [(x, y)], loss_fn=lambda m, b: m(b[0]) - b[1], steps=1, progress=False)
    with pytest.raises(TypeError, match="loss_fn returned a float"):
        fit(model, [(x, y)], loss_fn=lambda m, b: 1.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="does not require grad"):
        fit(model, [(x, y)], loss_fn=lambda m, b: b[1].sum(), steps=1, progress=False)
    with pytest.raises(TypeError, match="predict_fn returned a Tensor first"):
        fit(
            model,
            [(x, y)],
            loss_fn=_mse,
            steps=1,
            val_data=[(x, y)],
            val_every=1,
            predict_fn=lambda m, b: (b[1], b[1], None),
            progress=False,
        )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(model, [(x, y)], loss_fn=_mse, steps=1, device="cuda", progress=False)


def test_bad_masks_from_predict_fn_raise_clear_errors() -> None:
    y = torch.randn(2, 4, dtype=torch.float64)
    cov = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)

    def run(mask, joint=False):
        def predict(m, b):
            loc = torch.zeros(2, 4, dtype=torch.float64)
            pred = (
                MultivariateNormal(loc, covariance_matrix=cov)
                if joint
                else Normal(loc, torch.ones_like(loc))
            )
            return pred, b, mask

        fit(
            nn.Linear(1, 1).double(),
            [y],
            loss_fn=lambda m, b: m.weight.square().sum(),
            steps=1,
            val_data=[y],
            val_every=1,
            predict_fn=predict,
            device="cpu",
            progress=False,
        )

    with pytest.raises(ValueError, match=r"mask of shape \(4,\)"):
        run(torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="dtype torch.float32"):
        run(torch.ones(2, 4))
    partial = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with pytest.raises(ValueError, match="keeps only part of 1 rows"):
        run(partial, joint=True)
    with pytest.raises(ValueError, match="kept no validation points"):
        run(torch.zeros(2, 4, dtype=torch.bool))


def test_lbfgs_reaches_least_squares_and_a_failed_line_search_keeps_the_weights() -> None:
    from uqdyn.train import TrainingError

    x, y = _regression_batch()
    model = nn.Linear(2, 1).double()
    result = fit(model, [(x, y)], loss_fn=_mse, steps=20, optimizer="lbfgs", lr=1.0,
                 device="cpu", progress=False)  # fmt: skip
    design = np.column_stack([x.numpy(), np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, y.numpy()[:, 0], rcond=None)
    got = np.concatenate([model.weight.detach().numpy()[0], model.bias.detach().numpy()])
    # L-BFGS stops at its gradient tolerance (1e-7): within 2e-5 of the exact solution
    np.testing.assert_allclose(got, coef, atol=1e-4)
    assert result.history[-1]["loss"] <= result.history[0]["loss"]

    calls = {"n": 0}

    def poisoned(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        calls["n"] += 1  # finite at the start of the step, NaN inside its line search
        loss = _mse(m, batch)
        return loss * float("nan") if calls["n"] > 1 else loss

    model = nn.Linear(2, 1).double()
    fit(model, [(x, y)], loss_fn=_mse, steps=1, optimizer="lbfgs", lr=1.0, device="cpu",
        progress=False)  # fmt: skip
    after_one = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TrainingError, match="non-finite loss"):
        fit(model, [(x, y)], loss_fn=poisoned, steps=1, optimizer="lbfgs", lr=1.0,
            device="cpu", progress=False)  # fmt: skip
    assert calls["n"] >= 2  # the line search did evaluate the poisoned loss
    for p, q in zip(model.parameters(), after_one, strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="grad_clip=1.0 with optimizer='lbfgs'"):
        fit(model, [(x, y)], loss_fn=_mse, optimizer="lbfgs", grad_clip=1.0, progress=False)
