"""Pyro SVI for the latent neural processes estimates the same ELBO as the native loss."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from uqdyn.data import Task
from uqdyn.models.neural_process import CNP, LatentNP, NeuralODEProcess
from uqdyn.models.neural_process.svi import elbo_loss, make_svi, model_guide
from uqdyn.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    batch, n_context, n_target = 3, 5, 6
    mc = torch.arange(n_context) < torch.tensor([[2], [5], [3]])
    mt = torch.arange(n_target) < torch.tensor([[6], [1], [4]])
    return Task(
        torch.rand(batch, n_context, 1, generator=g, dtype=torch.float64),
        torch.randn(batch, n_context, 2, generator=g, dtype=torch.float64),
        mc,
        torch.rand(batch, n_target, 1, generator=g, dtype=torch.float64),
        torch.randn(batch, n_target, 2, generator=g, dtype=torch.float64),
        mt,
    )


def _models():
    return {
        "np": lambda: LatentNP(1, 2, width=16, z_dim=3),
        "ndp": lambda: NeuralODEProcess(
            2, latent_dim=3, control_dim=1, width=8, method="euler", options={"step_size": 0.5}
        ),
    }


@pytest.mark.parametrize(("name", "n_draws"), [("np", 150), ("ndp", 40)])
def test_pyro_trace_elbo_agrees_with_the_native_elbo(name, n_draws):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = _models()[name]().double()
    task = _task()
    model_fn, guide_fn = model_guide(model)
    torch.manual_seed(1)
    with torch.no_grad():
        native = float(model.loss(task, num_samples=4000))
        # Monte Carlo KL: single-particle estimates, their mean and standard error
        draws = torch.tensor([Trace_ELBO().loss(model_fn, guide_fn, task) for _ in range(n_draws)])
        # closed-form KL as in the native loss: only the likelihood term is sampled
        mean_field = torch.tensor(
            [TraceMeanField_ELBO().loss(model_fn, guide_fn, task) for _ in range(n_draws)]
        )
    for values in (draws, mean_field):
        mean, se = float(values.mean()), float(values.std() / math.sqrt(values.numel()))
        assert abs(mean - native) < 4.0 * se + 2e-3, (mean, se, native)
    # a wrong per-task scaling (e.g. a sum over tasks or targets) would be off by far more
    assert 4.0 * float(draws.std() / math.sqrt(n_draws)) < 0.1 * abs(native)


def test_svi_steps_lower_the_loss_and_update_the_network():
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = LatentNP(1, 2, width=16, z_dim=3).double()
    task = _task(seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        start = float(model.loss(task, num_samples=2000))
    svi = make_svi(model, lr=1e-2)
    for _ in range(40):
        svi.step(task)
    with torch.no_grad():
        end = float(model.loss(task, num_samples=2000))
    assert end < start - 0.2
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_pyro_elbo_trains_through_the_one_loop_like_svi():
    """fit(loss_fn=elbo_loss(model)) takes the same Adam steps on the same ELBO as SVI."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = LatentNP(1, 2, width=16, z_dim=3).double()
    task = _task(seed=3)
    with torch.no_grad():
        start = float(model.loss(task, num_samples=2000))
    fit(model, [task], loss_fn=elbo_loss(model), steps=40, lr=1e-2, progress=False, seed=0)
    with torch.no_grad():
        end = float(model.loss(task, num_samples=2000))
    assert end < start - 0.2
    with pytest.raises(ValueError, match="another model"):
        elbo_loss(model)(LatentNP(1, 2, width=16, z_dim=3), task)
    with pytest.raises(TypeError, match="pyro ELBO"):
        elbo_loss(model, elbo=object())


def test_svi_rejects_a_conditional_model_and_bad_lr():
    with pytest.raises(TypeError, match="model is a CNP"):
        model_guide(CNP(1, 1, width=8))
    with pytest.raises(ValueError, match="lr"):
        make_svi(LatentNP(1, 1, width=8, z_dim=2), lr=0.0)
