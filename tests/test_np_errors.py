"""Bad input to the neural-process models: clear errors before any training step."""

from __future__ import annotations

import pytest
import torch

from uqdyn.data import Task
from uqdyn.models.neural_process import CNP, AttentiveCNP, LatentNP, NeuralODEProcess
from uqdyn.physics import DampedPendulum


def _task(x_dim=1, y_dim=1, batch=2, n_context=4, n_target=5):
    g = torch.Generator().manual_seed(0)
    return Task(
        torch.rand(batch, n_context, x_dim, generator=g),
        torch.randn(batch, n_context, y_dim, generator=g),
        torch.ones(batch, n_context, dtype=torch.bool),
        torch.rand(batch, n_target, x_dim, generator=g),
        torch.randn(batch, n_target, y_dim, generator=g),
        torch.ones(batch, n_target, dtype=torch.bool),
    )


MODELS = [
    lambda: CNP(1, 1, width=8),
    lambda: AttentiveCNP(1, 1, width=8, num_heads=2, self_attention=1),
    lambda: LatentNP(1, 1, width=8, z_dim=4),
    lambda: NeuralODEProcess(1, width=8, latent_dim=2, control_dim=1),
]
IDS = ["cnp", "acnp", "np", "ndp"]


def _replace(task: Task, **changes) -> Task:
    fields = {k: getattr(task, k) for k in task.__dataclass_fields__}
    fields.update(changes)
    return Task(**fields)


@pytest.mark.parametrize("make", MODELS, ids=IDS)
def test_target_dimension_that_disagrees_with_the_context(make):
    model, task = make(), _task()
    with pytest.raises(ValueError, match=r"x_target has shape \(2, 5, 2\).*x_dim=1"):
        model(task.x_context, task.y_context, torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match=r"y_context has shape \(2, 4, 3\).*y_dim=1"):
        model(task.x_context, torch.randn(2, 4, 3), task.x_target)
    with pytest.raises(ValueError, match=r"y_target has shape \(2, 5, 2\)"):
        model.loss(_replace(task, y_target=torch.randn(2, 5, 2)))
    with pytest.raises(ValueError, match=r"y_context has shape \(2, 3, 1\) and x_context"):
        model(task.x_context, task.y_context[:, :3], task.x_target)
    with pytest.raises(ValueError, match="x_target has batch size 3"):
        model(task.x_context, task.y_context, torch.rand(3, 5, 1))


@pytest.mark.parametrize("make", MODELS, ids=IDS)
def test_empty_context_where_the_model_needs_one(make):
    model, task = make(), _task()
    mask = task.mask_context.clone()
    mask[1] = False
    with pytest.raises(ValueError, match="task 1 has 0 real context point.*min_context=1"):
        model.loss(_replace(task, mask_context=mask))
    with pytest.raises(ValueError, match="task 0 has 0 real context point"):
        model(task.x_context[:, :0], task.y_context[:, :0], task.x_target)


@pytest.mark.parametrize("make", MODELS, ids=IDS)
def test_nan_in_y_is_reported_before_any_step(make):
    model, task = make(), _task()
    before = [p.detach().clone() for p in model.parameters()]
    y = task.y_context.clone()
    y[1, 2, 0] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"y_context has 1 point.*task 1, point 2"):
        opt.zero_grad()
        model.loss(_replace(task, y_context=y)).backward()
        opt.step()
    yt = task.y_target.clone()
    yt[0, 4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"y_target has 1 point.*task 0, point 4"):
        model.loss(_replace(task, y_target=yt))
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
    # a NaN in a padded (masked) point is ignored
    mask = task.mask_context.clone()
    mask[1, 2] = False
    assert torch.isfinite(model.loss(_replace(task, y_context=y, mask_context=mask)))


def test_types_dtypes_and_masks_are_checked():
    model, task = CNP(1, 1, width=8), _task()
    with pytest.raises(TypeError, match="x_context is a ndarray"):
        model(task.x_context.numpy(), task.y_context, task.x_target)
    with pytest.raises(TypeError, match="y_context has dtype torch.float64.*model parameters"):
        model(task.x_context, task.y_context.double(), task.x_target)
    with pytest.raises(ValueError, match=r"x_context has shape \(4, 1\); expected 3 axes"):
        model(task.x_context[0], task.y_context, task.x_target)
    with pytest.raises(TypeError, match="mask_context is torch.float32"):
        model(task.x_context, task.y_context, task.x_target, mask_context=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask_context has shape \(2, 3\); expected \(2, 4\)"):
        model(
            task.x_context,
            task.y_context,
            task.x_target,
            mask_context=torch.ones(2, 3, dtype=torch.bool),
        )
    no_targets = _replace(task, mask_target=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="task 0 has no real target point"):
        model.loss(no_targets)
    with pytest.raises(TypeError, match="task is a dict"):
        model.loss({"x_context": task.x_context})


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="x_dim=0"):
        CNP(0, 1)
    with pytest.raises(ValueError, match="min_std=1.5"):
        CNP(1, 1, min_std=1.5)
    with pytest.raises(ValueError, match="width=30 is not divisible by num_heads=8"):
        AttentiveCNP(1, 1, width=30)
    with pytest.raises(ValueError, match="num_samples=0"):
        LatentNP(1, 1, num_samples=0)
    with pytest.raises(ValueError, match=r"physics has state_shape \(2,\).*latent_dim=1"):
        NeuralODEProcess(1, latent_dim=1, physics=DampedPendulum())
    with pytest.raises(ValueError, match="t0=nan"):
        NeuralODEProcess(1, t0=float("nan"))


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError)]
)
def test_bad_kl_warmup_is_rejected(value, error):
    with pytest.raises(error, match="kl_warmup"):
        LatentNP(1, 1, width=8, z_dim=4, kl_warmup=value)


@pytest.mark.parametrize(
    ("value", "error"), [(-0.1, ValueError), (1.5, ValueError), ("1", TypeError)]
)
def test_bad_kl_weight_is_rejected(value, error):
    model = NeuralODEProcess(1, width=8, latent_dim=2, control_dim=1)
    with pytest.raises(error, match="kl_weight"):
        model.loss(_task(), kl_weight=value)
