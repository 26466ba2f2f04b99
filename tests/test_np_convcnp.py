"""Convolutional CNPs: shapes, devices, translation equivariance, masks, seeds, learning, errors."""

from __future__ import annotations

import math

import pytest
import torch

from uqdyn.data import Task
from uqdyn.models.neural_process import ConvCNP, ConvCNPEnsemble, GridTask, OffGridConvCNP
from uqdyn.predictive import GaussianMixture, Normal
from uqdyn.train import fit


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one CPU thread."""


def _fields(batch=3, channels=2, size=16, seed=0, dtype=torch.float32, observed=0.4):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, channels, size, size, generator=g, dtype=dtype)
    mask = torch.rand(batch, channels, size, size, generator=g) < observed
    return y, mask


def _small(**kwargs):
    options = dict(width=8, depth=2, seed=0)
    options.update(kwargs)
    return ConvCNP(2, 3, **options)


# ----------------------------------------------------------------------------- shapes, devices


def test_shapes_types_and_device(device):
    y, mask = _fields()
    model = _small().to(device)
    pred = model(y.to(device), mask_context=mask.to(device))
    assert isinstance(pred, Normal)
    assert pred.batch_shape == (3, 3, 16, 16)
    assert pred.mean.device.type == device.type
    assert bool((pred.stddev >= 0.01 - 1e-6).all())
    shared = model(y.to(device), mask_context=mask[:, 0].to(device))  # (B, H, W) mask
    assert shared.batch_shape == (3, 3, 16, 16)

    ens = ConvCNPEnsemble(2, 3, members=4, width=8, depth=2, seed=0).to(device)
    mix = ens(y.to(device), mask_context=mask.to(device))
    assert isinstance(mix, GaussianMixture)
    assert mix.loc.shape == (4, 3, 3, 16, 16)
    assert mix.loc.device.type == device.type

    off = OffGridConvCNP(2, points_per_unit=16, width=8, depth=2, seed=0).to(device)
    g = torch.Generator().manual_seed(1)
    xc, yc = torch.rand(3, 9, 1, generator=g), torch.randn(3, 9, 2, generator=g)
    xt = torch.rand(3, 5, 1, generator=g)
    p = off(xc.to(device), yc.to(device), xt.to(device))
    assert isinstance(p, Normal) and p.batch_shape == (3, 5, 2)
    assert p.mean.device.type == device.type


@pytest.mark.parametrize("architecture", ["resnet", "cnn", "unet"])
def test_float64_in_float64_out_and_gradients_reach_every_parameter(architecture):
    y, mask = _fields(dtype=torch.float64)
    model = _small(architecture=architecture).double()
    task = GridTask(y, mask, torch.randn(3, 3, 16, 16, dtype=torch.float64), None)
    assert model.predict(task).mean.dtype == torch.float64
    model.loss(task).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


# ----------------------------------------------------------------------------- equivariance


@pytest.mark.parametrize(
    ("architecture", "shift"), [("resnet", (3, -5)), ("cnn", (7, 2)), ("unet", (4, -8))]
)
def test_circular_shift_of_the_context_shifts_the_prediction(architecture, shift):
    y, mask = _fields(dtype=torch.float64, size=16)
    model = _small(architecture=architecture, padding="circular").double()
    base = model(y, mask_context=mask)
    rolled = model(
        torch.roll(y, shift, dims=(-2, -1)), mask_context=torch.roll(mask, shift, dims=(-2, -1))
    )
    expected_loc = torch.roll(base.loc, shift, dims=(-2, -1))
    torch.testing.assert_close(rolled.loc, expected_loc, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        rolled.scale, torch.roll(base.scale, shift, dims=(-2, -1)), rtol=0, atol=1e-12
    )


def test_zero_padding_is_not_circularly_equivariant():
    # the same check fails where it should: zero padding sees the edges of the grid
    y, mask = _fields(dtype=torch.float64)
    model = _small(padding="zeros").double()
    with torch.no_grad():
        base = model(y, mask_context=mask).loc
        rolled = model(torch.roll(y, 5, -1), mask_context=torch.roll(mask, 5, -1)).loc
    assert float((rolled - torch.roll(base, 5, -1)).abs().max()) > 1e-4


def test_off_grid_shift_by_grid_spacings_shifts_the_prediction():
    torch.manual_seed(0)
    model = OffGridConvCNP(1, points_per_unit=16, width=8, depth=3, seed=0).double()
    g = torch.Generator().manual_seed(3)
    xc = 2 * torch.rand(2, 12, 1, generator=g, dtype=torch.float64)
    yc = torch.randn(2, 12, 1, generator=g, dtype=torch.float64)
    xt = 2 * torch.rand(2, 9, 1, generator=g, dtype=torch.float64)
    shift = 37 / 16
    a = model(xc, yc, xt)
    b = model(xc + shift, yc, xt + shift)
    torch.testing.assert_close(b.loc, a.loc, rtol=0, atol=1e-9)
    torch.testing.assert_close(b.scale, a.scale, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- masks and NaN


@torch.no_grad()
def test_masked_and_nan_entries_never_change_the_prediction(device):
    y, mask = _fields()
    model = _small().to(device)
    reference = model(y.to(device), mask_context=mask.to(device))
    garbage = torch.where(mask, y, 1e6 * torch.randn_like(y))
    garbage[~mask & (torch.rand_like(y) < 0.3)] = float("nan")
    perturbed = model(garbage.to(device), mask_context=mask.to(device))
    assert torch.equal(perturbed.loc, reference.loc)
    assert torch.equal(perturbed.scale, reference.scale)
    # NaN alone (no mask) means "not observed" too
    nan_only = model(torch.where(mask, y, float("nan")).to(device))
    assert torch.equal(nan_only.loc, reference.loc)
    # and an observed value does matter (so the checks above can fail)
    changed = y.clone()
    b, c, i, j = (int(v) for v in mask.nonzero()[0])
    changed[b, c, i, j] += 3.0
    other = model(changed.to(device), mask_context=mask.to(device))
    assert float((other.loc - reference.loc).abs().max()) > 1e-4


def test_off_grid_padding_and_nan_values_never_change_the_prediction():
    model = OffGridConvCNP(2, points_per_unit=16, width=8, depth=2, seed=0)
    g = torch.Generator().manual_seed(4)
    xc, yc = torch.rand(3, 6, 1, generator=g), torch.randn(3, 6, 2, generator=g)
    xt = torch.rand(3, 5, 1, generator=g)
    reference = model(xc, yc, xt)
    pad_x = 0.5 + 0.1 * torch.randn(3, 4, 1, generator=g)  # inside the grid: only the mask hides
    pad_y = 1e6 * torch.randn(3, 4, 2, generator=g)
    pad_y[0, 0, 0] = float("nan")
    mask = torch.cat([torch.ones(3, 6, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)], 1)
    order = torch.randperm(10, generator=g)
    padded = model(
        torch.cat([xc, pad_x], 1)[:, order],
        torch.cat([yc, pad_y], 1)[:, order],
        xt,
        mask_context=mask[:, order],
    )
    torch.testing.assert_close(padded.loc, reference.loc, rtol=1e-5, atol=1e-6)
    # a NaN in one channel of a real point hides that channel only
    yc_nan = yc.clone()
    yc_nan[1, 2, 0] = float("nan")
    with_nan = model(xc, yc_nan, xt)
    keep = torch.ones(3, 6, dtype=torch.bool)
    drop = model(xc, yc.clone(), xt, mask_context=keep)
    assert torch.isfinite(with_nan.loc).all()
    assert not torch.allclose(with_nan.loc[1], drop.loc[1])  # channel 0 lost a point
    torch.testing.assert_close(with_nan.loc[0], drop.loc[0])


def test_fully_unobserved_context_gives_the_learned_constant_field():
    y, _ = _fields(dtype=torch.float64)
    model = _small().double()
    none = torch.zeros_like(y, dtype=torch.bool)
    a = model(y, mask_context=none)
    b = model(torch.randn_like(y), mask_context=none)
    assert torch.isfinite(a.loc).all() and torch.isfinite(a.scale).all()
    assert torch.equal(a.loc, b.loc)
    # circular padding and no data: nothing distinguishes one pixel from another
    spread = a.loc - a.loc.mean(dim=(-2, -1), keepdim=True)
    assert float(spread.abs().max()) < 1e-12
    # off the grid: an empty context is allowed (min_context=0) and finite
    off = OffGridConvCNP(points_per_unit=16, width=8, depth=2, seed=0)
    p = off(torch.zeros(2, 0, 1), torch.zeros(2, 0, 1), torch.rand(2, 4, 1))
    assert torch.isfinite(p.loc).all()


# ----------------------------------------------------------------------------- loss


def test_grid_loss_is_the_masked_gaussian_nll_per_observed_target():
    y, mask = _fields(dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    yt = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    mt = torch.rand(3, 16, 16, generator=g) < 0.5
    yt[0, 1, 0, 0] = float("nan")  # not observed either
    model = _small().double()
    task = GridTask(y, mask, yt, mt)
    pred = model.predict(task)
    observed = mt[:, None].expand_as(yt) & ~torch.isnan(yt)
    logp = torch.distributions.Normal(pred.loc, pred.scale).log_prob(torch.nan_to_num(yt))
    per_task = [logp[b][observed[b]].mean() for b in range(3)]
    torch.testing.assert_close(model.loss(task), -torch.stack(per_task).mean())


def test_off_grid_loss_is_the_gaussian_nll_per_target_point():
    model = OffGridConvCNP(2, points_per_unit=16, width=8, depth=2, seed=0).double()
    g = torch.Generator().manual_seed(9)
    xc, yc = torch.rand(2, 5, 1, generator=g), torch.randn(2, 5, 2, generator=g)
    xt, yt = torch.rand(2, 6, 1, generator=g), torch.randn(2, 6, 2, generator=g)
    mc = torch.ones(2, 5, dtype=torch.bool)
    mt = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    task = Task(xc, yc, mc, xt, yt, mt).to(dtype=torch.float64)
    pred = model.predict(task)
    logp = torch.distributions.Normal(pred.loc, pred.scale).log_prob(task.y_target).sum(-1)
    per_task = [logp[b][mt[b]].sum() / mt[b].sum() for b in range(2)]
    torch.testing.assert_close(model.loss(task), -torch.stack(per_task).mean())


def test_ensemble_is_the_equal_weight_mixture_of_separately_seeded_members():
    y, mask = _fields(dtype=torch.float64)
    ens = ConvCNPEnsemble(2, 3, members=3, width=8, depth=2, seed=5).double()
    mix = ens(y, mask_context=mask)
    for k in range(3):
        alone = ConvCNP(2, 3, width=8, depth=2, seed=5 + k).double()(y, mask_context=mask)
        torch.testing.assert_close(mix.loc[k], alone.loc)
        torch.testing.assert_close(mix.scale[k], alone.scale)
    torch.testing.assert_close(mix.weights, torch.full_like(mix.weights, 1 / 3))
    assert not torch.allclose(mix.loc[0], mix.loc[1])
    task = GridTask(y, mask, torch.randn(3, 3, 16, 16, dtype=torch.float64), None)
    members = torch.stack([m.loss(task) for m in ens.members])
    torch.testing.assert_close(ens.loss(task), members.mean())


# ----------------------------------------------------------------------------- seeds


def test_same_seed_same_weights_and_the_callers_rng_is_untouched():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = ConvCNP(2, 1, width=8, depth=2, seed=7)
    after = torch.rand(3)
    torch.testing.assert_close(after, expected_next)  # building did not draw from it
    b = ConvCNP(2, 1, width=8, depth=2, seed=7)
    c = ConvCNP(2, 1, width=8, depth=2, seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)
    o1 = OffGridConvCNP(seed=3, width=8, depth=2)
    o2 = OffGridConvCNP(seed=3, width=8, depth=2)
    for pa, pb in zip(o1.parameters(), o2.parameters(), strict=True):
        assert torch.equal(pa, pb)


# ----------------------------------------------------------------------------- learning


def _smooth_fields(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Random periodic fields: a few low Fourier modes with random amplitudes, ``(n, 1, s, s)``."""
    grid = torch.arange(size) * 2 * math.pi / size
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for kx in range(3):
        for ky in range(-2, 3):
            a, b = torch.randn(2, n, 1, 1, generator=g) / (1.0 + kx * kx + ky * ky)
            phase = kx * xx + ky * yy
            out[:, 0] += a * torch.cos(phase) + b * torch.sin(phase)
    return out / out.std()


def test_learns_to_interpolate_smooth_fields_from_sparse_pixels():
    size, noise = 16, 0.05

    def sample(g: torch.Generator) -> GridTask:
        clean = _smooth_fields(16, size, g)
        mask = torch.rand(16, 1, size, size, generator=g) < 0.15
        obs = clean + noise * torch.randn(clean.shape, generator=g)
        return GridTask(obs, mask, clean, None)

    model = ConvCNP(1, 1, width=16, depth=3, seed=0)
    fit(model, sample, steps=250, lr=3e-3, device="cpu", progress=False)
    test = sample(torch.Generator().manual_seed(999))
    with torch.no_grad():
        pred = model.predict(test)
    truth = test.y_target
    # trivial baseline: each field's observed mean and spread, the same at every pixel
    obs = torch.where(test.mask_context, test.y_context, torch.nan)
    base_loc = obs.nanmean(dim=(-2, -1), keepdim=True).expand_as(truth)
    base_std = (obs - base_loc).square().nanmean(dim=(-2, -1), keepdim=True).sqrt()
    baseline = Normal(base_loc, base_std.expand_as(truth))
    crps_model = float(pred.crps(truth).mean())
    crps_base = float(baseline.crps(truth).mean())
    assert crps_model < 0.5 * crps_base, (crps_model, crps_base)
    # the prediction follows the field: its spatial spread is that of the truth, not flat
    ratio = pred.mean.std(dim=(-2, -1)) / truth.std(dim=(-2, -1))
    assert float(ratio.min()) > 0.5


def test_off_grid_convcnp_learns_gp_samples():
    def sample(g: torch.Generator, n_context: int | None = None) -> Task:
        nc = int(torch.randint(3, 20, (1,), generator=g)) if n_context is None else n_context
        x = 4 * torch.rand(16, nc + 30, generator=g, dtype=torch.float64) - 2
        d = x[:, :, None] - x[:, None, :]
        cov = torch.exp(-0.5 * (d / 0.5).square()) + 0.01 * torch.eye(nc + 30)
        y = torch.linalg.cholesky(cov) @ torch.randn(16, nc + 30, 1, generator=g).double()
        x, y = x.float()[..., None], y.float()
        ones = torch.ones
        return Task(
            x[:, :nc],
            y[:, :nc],
            ones(16, nc, dtype=torch.bool),
            x[:, nc:],
            y[:, nc:],
            ones(16, 30, dtype=torch.bool),
        )

    model = OffGridConvCNP(points_per_unit=8, width=16, depth=3, receptive_field=2.0, seed=0)
    fit(model, sample, steps=200, lr=3e-3, device="cpu", progress=False)
    with torch.no_grad():
        nll = float(model.loss(sample(torch.Generator().manual_seed(5), n_context=15)))
    prior_nll = 0.5 * math.log(2 * math.pi * 1.01) + 0.5  # N(0, 1.01) on the unit-variance GP
    assert nll < prior_nll - 0.5, (nll, prior_nll)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_are_refused_naming_the_argument():
    model = _small()
    y, mask = _fields()
    with pytest.raises(
        ValueError, match=r"y_context has shape \(3, 1, 16, 16\); expected \(batch, 2"
    ):
        model(y[:, :1])
    with pytest.raises(ValueError, match=r"y_context has shape \(2, 16, 16\)"):
        model(y[0])
    with pytest.raises(TypeError, match="mask_context is torch.float32; expected a bool"):
        model(y, mask_context=mask.float())
    with pytest.raises(ValueError, match=r"mask_context has shape \(3, 2, 8, 8\)"):
        model(y, mask_context=mask[..., :8, :8])
    with pytest.raises(TypeError, match="y_context has dtype torch.float64 but the model"):
        model(y.double())
    with pytest.raises(TypeError, match="y_context is a ndarray"):
        model(y.numpy())
    bad = y.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="y_context has infinite values at observed"):
        model(bad, mask_context=torch.ones_like(mask))
    with pytest.raises(ValueError, match="U-Net with depth 2 needs height and width divisible"):
        _small(architecture="unet")(torch.randn(1, 2, 10, 12))
    with pytest.raises(TypeError, match="task is a Task; expected a GridTask"):
        xc = torch.zeros(1, 1, 1)
        model.loss(Task(xc, xc, xc[..., 0].bool(), xc, xc, xc[..., 0].bool()))
    with pytest.raises(ValueError, match="task 1 has no observed target"):
        mt = torch.ones(3, 16, 16, dtype=torch.bool)
        mt[1] = False
        model.loss(GridTask(y, mask, torch.randn(3, 3, 16, 16), mt))
    with pytest.raises(ValueError, match=r"y_target has shape \(3, 3, 8, 8\) and y_context"):
        model.loss(GridTask(y, mask, torch.randn(3, 3, 8, 8), None))


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="padding='reflect'"):
        ConvCNP(1, padding="reflect")
    with pytest.raises(ValueError, match="architecture='mlp'"):
        ConvCNP(1, architecture="mlp")
    with pytest.raises(ValueError, match="kernel_size=4; expected an odd"):
        ConvCNP(1, kernel_size=4)
    with pytest.raises(ValueError, match="in_channels=0"):
        ConvCNP(0)
    with pytest.raises(ValueError, match="min_std=2"):
        ConvCNP(1, min_std=2)
    with pytest.raises(TypeError, match="seed='0' is a str"):
        ConvCNP(1, seed="0")
    with pytest.raises(ValueError, match="init_lengthscale=-1"):
        ConvCNP(1, init_lengthscale=-1.0)
    with pytest.raises(ValueError, match="expected at most one of them"):
        OffGridConvCNP(kernel_size=5, receptive_field=1.0)
    with pytest.raises(ValueError, match="points_per_unit=0"):
        OffGridConvCNP(points_per_unit=0)
    with pytest.raises(ValueError, match="margin=-0.5"):
        OffGridConvCNP(margin=-0.5)
    with pytest.raises(ValueError, match="members=0"):
        ConvCNPEnsemble(1, members=0)


def test_off_grid_inputs_are_checked_like_the_other_neural_processes():
    model = OffGridConvCNP(points_per_unit=8, width=8, depth=2)
    xc, yc, xt = torch.rand(2, 4, 1), torch.randn(2, 4, 1), torch.rand(2, 3, 1)
    with pytest.raises(ValueError, match=r"x_target has shape \(2, 3, 2\).*x_dim=1"):
        model(xc, yc, torch.rand(2, 3, 2))
    with pytest.raises(TypeError, match="mask_context is torch.int64"):
        model(xc, yc, xt, mask_context=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="y_context has dtype torch.float64"):
        model(xc, yc.double(), xt)
    bad = xc.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="x_context has 1 point"):
        model(bad, yc, xt)
