"""Bad input: NaNs, ill-conditioning from duplicated inputs, mismatched shapes and types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _gp_reference import _single_thread  # noqa: F401  (autouse)
from gpytorch.utils.warnings import NumericalWarning

from uqdyn.models.gp import (
    ContextGP,
    ExactGP,
    GridGP,
    MetaGP,
    MultitaskGP,
    PhysicsMean,
    SparseGP,
    make_kernel,
)
from uqdyn.physics import DampedPendulum


def _xy(n: int = 12):
    x = torch.linspace(0, 1, n).unsqueeze(-1)
    return x, torch.sin(3 * x)


@pytest.mark.parametrize("model", [ExactGP(1), SparseGP(1, num_inducing=4), MultitaskGP(1, 2)])
def test_nans_in_training_data_are_rejected(model) -> None:
    x, y = _xy()
    y = y.repeat(1, model.y_dim)
    bad_y = y.clone()
    bad_y[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"y contains 1 NaN or infinite entries \(shape \(12, "):
        model.fit(x, bad_y, progress=False)
    bad_x = x.clone()
    bad_x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        model.fit(bad_x, y, progress=False)


def test_duplicated_inputs_escalate_jitter_with_a_warning_then_fail_clearly() -> None:
    x = torch.linspace(0, 1, 10).repeat(5).unsqueeze(-1)  # every input five times
    y = torch.sin(3 * x)
    opts = {"kernel": "rbf", "min_noise": 0.0, "noise": 1e-9, "learn_noise": False}
    gp = ExactGP(1, **opts)
    with pytest.warns(NumericalWarning, match="added jitter"):
        gp.fit(x, y, steps=3, progress=False)
        pred = gp.predict(torch.rand(4, 1, generator=torch.Generator().manual_seed(0)))
    assert bool(torch.isfinite(pred.mean).all()) and bool((pred.stddev > 0).all())
    strict = ExactGP(1, jitter=1e-12, max_jitter_tries=2, **opts)
    with (
        pytest.warns(NumericalWarning, match="added jitter of 1.0e-11"),
        pytest.raises(
            ValueError, match="not positive definite even after adding jitter up to 1.0e-11"
        ),
    ):
        strict.fit(x, y, steps=3, progress=False)


def test_joint_latent_prediction_at_duplicated_targets() -> None:
    x, y = _xy()
    gp = ExactGP(1, kernel="rbf").condition(x.double(), y.double())
    xs = torch.tensor([[0.3], [0.3], [0.3], [0.31], [5.0], [5.0]], dtype=torch.float64)
    with pytest.warns(NumericalWarning, match="added jitter"):
        joint = gp.predict(xs, noisy=False, joint=True)
    assert bool(torch.isfinite(joint.scale_tril).all())
    np.testing.assert_allclose(
        joint.stddev.detach().numpy(),
        gp.predict(xs, noisy=False).stddev[:, 0].detach().numpy(),
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="joint predictive covariance is not positive definite"):
        ExactGP(1, kernel="rbf", jitter=1e-30, max_jitter_tries=1).condition(
            x.double(), y.double()
        ).predict(xs, noisy=False, joint=True)


def test_mismatched_shapes_and_types() -> None:
    x, y = _xy()
    gp = ExactGP(1)
    with pytest.raises(ValueError, match=r"y has shape \(11, 1\); expected \(12, 1\)"):
        gp.fit(x, y[:11], progress=False)
    with pytest.raises(ValueError, match=r"x has shape \(12, 2\); expected \(points, 1\)"):
        gp.fit(x.repeat(1, 2), y, progress=False)
    with pytest.raises(ValueError, match=r"y has shape \(12, 2\); expected \(12, 1\)"):
        gp.fit(x, y.repeat(1, 2), progress=False)
    with pytest.raises(TypeError, match="x is a ndarray; expected a torch.Tensor"):
        gp.fit(x.numpy(), y, progress=False)
    with pytest.raises(TypeError, match="y is torch.float64 on cpu but x is torch.float32"):
        gp.fit(x, y.double(), progress=False)
    with pytest.raises(ValueError, match="no data; call fit"):
        ExactGP(1).predict(x)
    gp.fit(x, y, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\); expected \(points, 1\)"):
        gp.predict(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="kernel name 'gaussian' is unknown"):
        make_kernel("gaussian", 1)
    with pytest.raises(ValueError, match="empty term"):
        make_kernel("rbf + ", 1)
    with pytest.raises(ValueError, match="y_dim=1; expected >= 2"):
        MultitaskGP(1, 1)
    with pytest.raises(ValueError, match="kernel has 2 entries; expected one per axis"):
        GridGP(3, kernel=["rbf", "rbf"])
    with pytest.raises(ValueError, match="steps=-1"):
        gp.fit(x, y, steps=-1, progress=False)


def test_task_interface_rejects_bad_tasks() -> None:
    xc = torch.rand(2, 5, 1)
    yc = torch.rand(2, 5, 1)
    xt = torch.rand(2, 4, 1)
    model = ContextGP(1, steps=1)
    with pytest.raises(ValueError, match=r"y_context has shape \(2, 4, 1\); expected \(2, 5, 1\)"):
        model(xc, yc[:, :4], xt)
    with pytest.raises(ValueError, match=r"x_target has shape \(3, 4, 1\); expected \(2, Nt, 1\)"):
        model(xc, yc, torch.rand(3, 4, 1))
    with pytest.raises(ValueError, match=r"mask_context has shape \(2, 4\); expected \(2, 5\)"):
        model(xc, yc, xt, mask_context=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask_context is torch.float32; expected a boolean"):
        model(xc, yc, xt, mask_context=torch.ones(2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"tasks \[1\] have no context points"):
        MetaGP(1)(xc, yc, xt, mask_context=mask)
    bad = yc.clone()
    bad[0, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"y_context has 1 point\(s\) with NaN .*task 0, point 2"):
        model(xc, bad, xt)
    # a NaN in a padded (masked-out) row is ignored
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 2] = False
    assert model(xc, bad, xt, mask_context=mask).batch_shape == (2, 4, 1)


def test_physics_mean_rejects_bad_input() -> None:
    system = DampedPendulum(linear=True)
    with pytest.raises(ValueError, match="state0 contains 1 NaN"):
        PhysicsMean(system, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"state0 has shape \(1, 2\); expected \(state_dim,\)"):
        PhysicsMean(system, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"components=\(2,\); expected indices in \[0, 2\)"):
        PhysicsMean(system, torch.zeros(2), components=(2,))
    mean = PhysicsMean(system, torch.tensor([0.5, 0.0]), t0=1.0)
    with pytest.raises(ValueError, match="input time 0.0 precedes t0=1.0"):
        mean(torch.tensor([[0.0], [2.0]]))
