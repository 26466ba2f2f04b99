"""uqdyn.train checkpoints: atomic writes, weights_only loading, exact resume, divergence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uqdyn.train import TrainingError, fit, load_checkpoint, save_checkpoint


class _NoisyNet(nn.Module):
    """A small MLP with dropout; its loss also adds sampled noise, so RNG state matters."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        jitter = 0.05 * torch.randn_like(y)
        return (self(x) - y - jitter).square().mean()


def _draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(16, 2, generator=g)
    return x, torch.sin(x[:, :1]) + 0.5 * x[:, 1:]


def _loss(m: nn.Module, b) -> torch.Tensor:
    return m.loss(b)


def _predict(m: nn.Module, b):
    from uqdyn.predictive import Normal

    mean = m(b[0])
    return Normal(mean, torch.full_like(mean, 0.5)), b[1], None


def _model(seed: int = 0) -> _NoisyNet:
    torch.manual_seed(seed)
    return _NoisyNet()


def _common(**kwargs):
    args = {
        "lr": 1e-2,
        "val_data": _draw,
        "val_every": 3,
        "predict_fn": _predict,
        "monitor": "val_crps",
        "device": "cpu",
        "progress": False,
        "seed": 7,
    }
    args.update(kwargs)
    return args


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = _model()
    result = fit(
        model,
        _draw,
        loss_fn=_loss,
        steps=6,
        scheduler="cosine",
        checkpoint_dir=tmp_path,
        **_common(),
    )
    path = tmp_path / "last.pt"
    assert result.checkpoint_path == path and path.is_file()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 6 and state["stopped"] == "completed"
    assert state["history"] == result.history
    assert state["best"]["step"] == result.best_step
    for name, value in model.state_dict().items():
        assert torch.equal(state["model"][name], value)
        assert torch.equal(state["best"]["state"][name], result.best_state[name])
    fresh = _model(1)
    fresh.load_state_dict(state["model"])
    _assert_same_state(fresh, model)
    optimizer = torch.optim.Adam(fresh.parameters())
    optimizer.load_state_dict(state["optimizer"])
    assert int(optimizer.state_dict()["state"][0]["step"]) == 6
    assert set(state["rng"]) == {"torch_cpu", "cuda", "data"}
    assert state["rng"]["data"]["kind"] == "callable"
    assert load_checkpoint(tmp_path)["step"] == 6  # a directory resolves to last.pt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary files


def test_failed_save_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"format": 1, "w": torch.arange(4.0)}, path)
    original = path.read_bytes()
    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": 1, "w": torch.zeros(4)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == original
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]

    # The same inside fit: a crash while writing step 4 keeps step 2's checkpoint.
    calls = {"n": 0}

    def crash_on_second(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        fit(
            _model(),
            _draw,
            loss_fn=_loss,
            steps=6,
            checkpoint_dir=tmp_path / "run",
            checkpoint_every=2,
            **_common(),
        )
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "run")["step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt"]


def test_save_checkpoint_rejects_non_mappings(tmp_path) -> None:
    with pytest.raises(TypeError, match="state is a list"):
        save_checkpoint([1, 2], tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def _crash_at(step: int):
    counter = {"n": 0}

    def loss(m, b):
        counter["n"] += m.training  # count training steps, not validation batches
        if counter["n"] == step:
            raise KeyboardInterrupt("simulated crash")
        return m.loss(b)

    return loss


def test_exact_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    steps = 14
    options = _common(scheduler="cosine", grad_clip=1.0, early_stopping=50)
    reference = _model()
    ref = fit(reference, _draw, loss_fn=_loss, steps=steps, **options)

    # Crash during step 10; the last checkpoint is from step 8.
    with pytest.raises(KeyboardInterrupt):
        fit(
            _model(),
            _draw,
            loss_fn=_crash_at(10),
            steps=steps,
            checkpoint_dir=tmp_path,
            checkpoint_every=4,
            **options,
        )
    assert load_checkpoint(tmp_path)["step"] == 8
    resumed = _model(seed=99)  # different initial weights: all state comes from the file
    out = fit(
        resumed,
        _draw,
        loss_fn=_loss,
        steps=steps,
        checkpoint_dir=tmp_path,
        checkpoint_every=4,
        resume=True,
        **options,
    )

    _assert_same_state(resumed, reference)
    assert out.steps_done == steps
    assert out.best_step == ref.best_step and out.best_score == ref.best_score
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in ref.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in out.history] == strip

    # The RNG matters: another seed gives other weights, so the comparison can fail.
    other = _model()
    fit(other, _draw, loss_fn=_loss, steps=steps, **{**options, "seed": 8})
    assert not torch.equal(other.net[0].weight, reference.net[0].weight)


def test_exact_resume_after_stopping_early_with_fewer_steps(tmp_path: Path) -> None:
    reference = _model()
    fit(reference, _draw, loss_fn=_loss, steps=10, **_common())
    first = _model()
    fit(
        first, _draw, loss_fn=_loss, steps=4, checkpoint_dir=tmp_path, **_common()
    )  # off-schedule end
    resumed = _model(seed=5)
    fit(resumed, _draw, loss_fn=_loss, steps=10, checkpoint_dir=tmp_path, resume=True, **_common())
    _assert_same_state(resumed, reference)


def test_exact_resume_with_a_shuffling_dataloader(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    loader = DataLoader(TensorDataset(x, torch.sin(x[:, :1])), batch_size=8, shuffle=True)
    options = _common(val_data=None, predict_fn=None, monitor="val_loss")
    reference = _model()
    fit(reference, loader, loss_fn=_loss, steps=13, **options)  # 5 batches per epoch: 2.6 epochs
    fit(_model(), loader, loss_fn=_loss, steps=7, checkpoint_dir=tmp_path, **options)
    state = load_checkpoint(tmp_path)["rng"]["data"]
    assert (state["kind"], state["epoch"], state["position"]) == ("iterable", 1, 2)
    resumed = _model(seed=3)
    fit(resumed, loader, loss_fn=_loss, steps=13, checkpoint_dir=tmp_path, resume=True, **options)
    _assert_same_state(resumed, reference)


def test_resume_without_a_checkpoint_starts_afresh_and_finished_runs_stay_finished(
    tmp_path: Path,
) -> None:
    reference = _model()
    fit(reference, _draw, loss_fn=_loss, steps=5, **_common())
    model = _model()
    fit(model, _draw, loss_fn=_loss, steps=5, checkpoint_dir=tmp_path, resume=True, **_common())
    _assert_same_state(model, reference)
    again = _model(seed=2)
    out = fit(
        again, _draw, loss_fn=_loss, steps=5, checkpoint_dir=tmp_path, resume=True, **_common()
    )
    _assert_same_state(again, reference)
    assert out.steps_done == 5
    with pytest.raises(ValueError, match="steps=3 but the checkpoint .* at step 5"):
        fit(
            _model(),
            _draw,
            loss_fn=_loss,
            steps=3,
            checkpoint_dir=tmp_path,
            resume=True,
            **_common(),
        )
    with pytest.raises(ValueError, match="monitor='val_loss' but the checkpoint"):
        fit(
            _model(),
            _draw,
            loss_fn=_loss,
            steps=6,
            checkpoint_dir=tmp_path,
            resume=True,
            **_common(monitor="val_loss"),
        )


def test_early_stopped_run_does_not_continue_on_resume(tmp_path: Path) -> None:
    x = torch.linspace(-1, 1, 11).unsqueeze(-1)
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)

    def mse(m, b):
        return (m(b[0]) - b[1]).square().mean()

    args = {
        "optimizer": "sgd",
        "lr": 0.1,
        "val_data": [(x, -x)],
        "val_every": 2,
        "early_stopping": 2,
        "device": "cpu",
        "progress": False,
        "checkpoint_dir": tmp_path,
    }
    first = fit(model, [(x, x)], loss_fn=mse, steps=100, **args)
    assert first.stopped == "early_stopping" and first.steps_done == 6
    again = fit(model, [(x, x)], loss_fn=mse, steps=100, resume=True, **args)
    assert again.stopped == "early_stopping" and again.steps_done == 6


def _nan_at(step: int):
    counter = {"n": 0}

    def loss(m, b):
        counter["n"] += m.training
        value = m.loss(b)
        return value * math.nan if counter["n"] == step else value

    return loss


def test_nan_loss_raises_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    after_six = _model()
    fit(
        after_six,
        _draw,
        loss_fn=_loss,
        steps=6,
        **_common(val_data=None, predict_fn=None, monitor="val_loss"),
    )
    model = _model()
    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 7") as info:
        fit(
            model,
            _draw,
            loss_fn=_nan_at(7),
            steps=20,
            checkpoint_dir=tmp_path,
            checkpoint_every=5,
            **_common(val_data=None, predict_fn=None, monitor="val_loss"),
        )
    error = info.value
    assert error.step == 7 and error.quantity == "loss" and math.isnan(error.value)
    assert error.checkpoint_path == tmp_path / "last.pt"
    assert [row["step"] for row in error.history] == list(range(1, 7))
    _assert_same_state(model, after_six)  # the failing step was never applied
    assert all(p.grad is None for p in model.parameters())
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class _CorruptingSGD(torch.optim.SGD):
    """SGD whose ``corrupt_at``-th step overflows the weights to inf (a simulated blow-up)."""

    def __init__(self, params, corrupt_at: int) -> None:
        super().__init__(params, lr=0.1)
        self.corrupt_at, self.count = corrupt_at, 0

    @torch.no_grad()
    def step(self, closure=None):
        out = super().step(closure)
        self.count += 1
        if self.count == self.corrupt_at:
            for group in self.param_groups:
                for p in group["params"]:
                    p.mul_(math.inf)
        return out


def _line_loss(m, b):
    return (m(b) - 3.0 * b).square().mean()


@pytest.mark.parametrize("checkpoint_every", [1, 2])
def test_diverged_weights_are_restored_from_the_last_checkpoint(
    tmp_path: Path, checkpoint_every: int
) -> None:
    x = torch.linspace(-1, 1, 11, dtype=torch.float64).unsqueeze(-1)
    model = nn.Linear(1, 1).double()
    # Step 3 leaves inf weights: with checkpoint_every=1 the save after step 3 refuses them,
    # otherwise step 4's loss is not finite. Either way the step-2 checkpoint is restored.
    quantity = "model state 'weight'" if checkpoint_every == 1 else "loss"
    with pytest.raises(TrainingError, match=f"non-finite {quantity}.*checkpoint at step 2") as info:
        fit(
            model,
            [x],
            loss_fn=_line_loss,
            steps=10,
            optimizer=lambda p: _CorruptingSGD(p, 3),
            checkpoint_dir=tmp_path,
            checkpoint_every=checkpoint_every,
            device="cpu",
            progress=False,
        )
    assert info.value.step == (3 if checkpoint_every == 1 else 4)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 2
    for name, value in model.state_dict().items():
        assert torch.isfinite(value).all()
        assert torch.equal(value, saved["model"][name])


def test_diverged_weights_without_checkpoint_return_to_the_start() -> None:
    x = torch.linspace(-1, 1, 11, dtype=torch.float64).unsqueeze(-1)
    model = nn.Linear(1, 1).double()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match="started from; last good checkpoint: none"):
        fit(
            model,
            [x],
            loss_fn=_line_loss,
            steps=10,
            optimizer=lambda p: _CorruptingSGD(p, 3),
            device="cpu",
            progress=False,
        )
    for name, value in model.state_dict().items():
        assert torch.equal(value, start[name])


def test_non_finite_validation_metric_raises(tmp_path: Path) -> None:
    def predict(m, b):
        from uqdyn.predictive import Normal

        mean = m(b[0]) * math.inf
        return Normal(mean, torch.ones_like(mean), validate=False), b[1], None

    with pytest.raises(TrainingError, match="non-finite val_crps inf at step 2"):
        fit(_model(), _draw, loss_fn=_loss, steps=4, **_common(val_every=2, predict_fn=predict))
