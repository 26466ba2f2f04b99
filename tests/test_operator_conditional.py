"""The context-conditioned Fourier neural operator (ConditionalFNO) on tasks of a linear PDE.

Tasks are environments of the advection-diffusion equation ``u_t + w . grad u = D lap u`` on
the periodic domain ``[0, 2 pi)^2`` with a random velocity ``w`` and diffusion ``D`` per task,
stepped exactly in Fourier space: mode ``k`` is multiplied by ``exp(-(i k . w + D |k|^2)
dt)``. Band-limited fields are evaluated from their Fourier series, so one task gives the same
continuous fields on every grid. Checked: permutation invariance over context pairs, masked
and NaN context values, context and target on different grids, that the context helps
(against the same architecture with its context masked), the fitted model at a finer grid,
calibration diagnostics, errors, and the shared model contract (tests/_contract.py).
"""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from _contract import ModelContract
from torch import Tensor, nn

from uqdyn.calibration import coverage, pit
from uqdyn.models.operator import ConditionalFNO, ContextFieldBatch, FieldPairBatch, FNOForecaster
from uqdyn.predictive import Normal
from uqdyn.train import fit

BAND = 4  # fields hold the wavenumbers |k_y|, |k_x| <= BAND
DT = 0.5
VELOCITY = 1.5  # each component of w uniform in [-VELOCITY, VELOCITY]

# --------------------------------------------------------------------------- the tasks


def _coefficients(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Random Fourier coefficients ``(*shape, 2 BAND + 1, BAND + 1)``, fields of std ~ 1."""
    ky, kx = _wavenumbers()
    full = (*shape, 2 * BAND + 1, BAND + 1)
    noise = torch.complex(
        torch.randn(full, generator=g, dtype=torch.float64),
        torch.randn(full, generator=g, dtype=torch.float64),
    )
    return noise / (1.0 + ky[:, None] ** 2 + kx[None, :] ** 2).sqrt() / 2.4


def _wavenumbers() -> tuple[Tensor, Tensor]:
    ky = torch.arange(-BAND, BAND + 1, dtype=torch.float64)
    return ky, torch.arange(0, BAND + 1, dtype=torch.float64)


def _evaluate(a: Tensor, size: int) -> Tensor:
    """The real fields of coefficients ``a (..., ky, kx)`` on a ``size`` grid; ``(..., 1, H, W)``."""
    ky, kx = _wavenumbers()
    grid = torch.arange(size, dtype=torch.float64) * (2 * math.pi / size)
    ey = torch.exp(1j * ky[:, None] * grid[None, :])
    ex = torch.exp(1j * kx[:, None] * grid[None, :])
    return torch.einsum("...kl,ky,lx->...yx", a, ey, ex).real.unsqueeze(-3)


def _step(a: Tensor, w: Tensor, d: Tensor) -> Tensor:
    """The exact advection-diffusion step of ``a (..., ky, kx)``; ``w (..., 2)``, ``d (...)``."""
    ky, kx = _wavenumbers()
    phase = kx * w[..., 0, None, None] + ky[:, None] * w[..., 1, None, None]
    decay = d[..., None, None] * (ky[:, None] ** 2 + kx[None, :] ** 2)
    return a * torch.exp(-(1j * phase + decay) * DT)


def _tasks(
    n: int,
    pairs: int,
    size: int,
    g: torch.Generator,
    *,
    context_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> ContextFieldBatch:
    """``n`` environments, each with ``pairs`` context pairs and one target pair."""
    w = (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1) * VELOCITY
    d = 0.005 + 0.025 * torch.rand(n, generator=g, dtype=torch.float64)
    a_context = _coefficients((n, pairs), g)
    a_target = _coefficients((n,), g)
    context = size if context_size is None else context_size
    return ContextFieldBatch(
        _evaluate(a_context, context).to(dtype),
        _evaluate(_step(a_context, w[:, None], d[:, None]), context).to(dtype),
        _evaluate(a_target, size).to(dtype),
        _evaluate(_step(a_target, w, d), size).to(dtype),
    )


def _without_context(batch: ContextFieldBatch) -> ContextFieldBatch:
    shape = batch.context_inputs.shape[:2]
    return ContextFieldBatch(
        batch.context_inputs,
        batch.context_targets,
        batch.inputs,
        batch.targets,
        torch.zeros(shape, dtype=torch.bool),
        batch.mask,
    )


def _model(dtype: torch.dtype = torch.float64, **options: object) -> ConditionalFNO:
    settings: dict[str, object] = {"modes": BAND + 1, "width": 6, "depth": 2}
    settings.update(representation=6, seed=0)
    settings.update(options)
    return ConditionalFNO(1, 1, **settings).to(dtype)  # type: ignore[arg-type]


def _forecast(model: ConditionalFNO, batch: ContextFieldBatch) -> Normal:
    with torch.no_grad():
        return model.predict(
            batch.context_inputs, batch.context_targets, batch.inputs, batch.context_mask
        )


def _mse(forecast: Normal, targets: Tensor) -> float:
    return float((forecast.mean - targets).square().mean())


# --------------------------------------------------------------------------- the model's sets


def test_shapes_dtypes_and_a_context_on_another_grid() -> None:
    """Context at 32 x 32, targets at 64 x 64 (and 16 x 24): a finite Normal of the targets."""
    for dtype in (torch.float32, torch.float64):
        model = _model(dtype)
        batch = _tasks(3, 4, 64, torch.Generator().manual_seed(0), context_size=32, dtype=dtype)
        forecast = _forecast(model, batch)
        assert isinstance(forecast, Normal) and forecast.batch_shape == (3, 1, 64, 64)
        assert forecast.mean.dtype == dtype and bool(torch.isfinite(forecast.mean).all())
        assert bool((forecast.stddev >= model.min_scale).all())
        other = model.predict(
            batch.context_inputs, batch.context_targets, torch.randn(3, 1, 16, 24, dtype=dtype)
        )
        assert other.batch_shape == (3, 1, 16, 24)
        assert model.encode(batch.context_inputs, batch.context_targets).shape == (3, 6)
        assert model.loss(batch).dtype == dtype and model.loss(batch).shape == ()


def test_permutation_of_the_context_pairs_changes_nothing() -> None:
    model = _model()
    batch = _tasks(3, 5, 16, torch.Generator().manual_seed(1), dtype=torch.float64)
    order = torch.tensor([3, 0, 4, 2, 1])
    permuted = ContextFieldBatch(
        batch.context_inputs[:, order], batch.context_targets[:, order], batch.inputs, batch.targets
    )
    expected, got = _forecast(model, batch), _forecast(model, permuted)
    torch.testing.assert_close(got.mean, expected.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.stddev, expected.stddev, rtol=0, atol=1e-6)
    # ... while the context does matter: another environment's pairs change the forecast
    other = _tasks(3, 5, 16, torch.Generator().manual_seed(2), dtype=torch.float64)
    swapped = ContextFieldBatch(
        other.context_inputs, other.context_targets, batch.inputs, batch.targets
    )
    permutation_gap = float((got.mean - expected.mean).abs().max())
    context_gap = float((_forecast(model, swapped).mean - expected.mean).abs().max())
    assert context_gap > 1e-5 and context_gap > 1e6 * permutation_gap, (
        context_gap,
        permutation_gap,
    )


def test_masked_context_pairs_are_ignored_exactly() -> None:
    model = _model(min_context=0)
    batch = _tasks(2, 4, 16, torch.Generator().manual_seed(3), dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    junk_x, junk_y = batch.context_inputs.clone(), batch.context_targets.clone()
    junk_x[~mask] = 1e6
    junk_y[~mask] = float("nan")
    clean = ContextFieldBatch(
        batch.context_inputs, batch.context_targets, batch.inputs, batch.targets, mask
    )
    dirty = ContextFieldBatch(junk_x, junk_y, batch.inputs, batch.targets, mask)
    expected, got = _forecast(model, clean), _forecast(model, dirty)
    assert torch.equal(got.mean, expected.mean) and torch.equal(got.stddev, expected.stddev)
    # the same as leaving the masked pairs out (task 0 keeps pairs 0, 2, 3; task 1 pairs 1, 2)
    for task, keep in ((0, [0, 2, 3]), (1, [1, 2])):
        alone = _forecast(
            model,
            ContextFieldBatch(
                batch.context_inputs[task : task + 1, keep],
                batch.context_targets[task : task + 1, keep],
                batch.inputs[task : task + 1],
                batch.targets[task : task + 1],
            ),
        )
        torch.testing.assert_close(alone.mean, expected.mean[task : task + 1], rtol=0, atol=1e-12)
    # no real pair at all is the empty context, r = 0
    empty = _forecast(model, _without_context(batch))
    none = model.predict(batch.context_inputs[:, :0], batch.context_targets[:, :0], batch.inputs)
    torch.testing.assert_close(empty.mean, none.mean, rtol=0, atol=0)
    r = model.encode(
        batch.context_inputs, batch.context_targets, torch.zeros(2, 4, dtype=torch.bool)
    )
    assert torch.equal(r, torch.zeros_like(r))


def test_nan_in_the_context_fields_means_not_observed() -> None:
    model = _model()
    batch = _tasks(2, 3, 16, torch.Generator().manual_seed(4), dtype=torch.float64)
    gappy_x, gappy_y = batch.context_inputs.clone(), batch.context_targets.clone()
    gappy_x[:, 0, :, 2:7, 3:9] = float("nan")
    gappy_y[:, 1, :, :, :5] = float("nan")
    gappy = ContextFieldBatch(gappy_x, gappy_y, batch.inputs, batch.targets)
    forecast = _forecast(model, gappy)
    assert bool(torch.isfinite(forecast.mean).all() & torch.isfinite(forecast.stddev).all())
    assert not torch.equal(forecast.mean, _forecast(model, batch).mean)  # the gaps are seen
    loss = model.loss(gappy)
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())  # type: ignore[arg-type]
    # a pair without any observed value is a missing pair
    gappy_x[1, 2], gappy_y[1, 2] = float("nan"), float("nan")
    mask = torch.tensor([[True, True, True], [True, True, False]])
    masked = ContextFieldBatch(
        batch.context_inputs, batch.context_targets, batch.inputs, batch.targets, mask
    )
    all_nan = _forecast(model, ContextFieldBatch(gappy_x, gappy_y, batch.inputs, batch.targets))
    with_mask = _forecast(
        model, ContextFieldBatch(gappy_x, gappy_y, batch.inputs, batch.targets, mask)
    )
    assert torch.equal(all_nan.mean, with_mask.mean)
    assert not torch.equal(_forecast(model, masked).mean[1], all_nan.mean[1])  # other gaps in 0, 1


def test_the_representation_hardly_depends_on_the_context_grid() -> None:
    """The pooled code of the same continuous pairs at 32 x 32 and at 64 x 64 (random weights)."""
    model = _model()
    g = torch.Generator().manual_seed(5)
    coarse = _tasks(3, 4, 32, g, dtype=torch.float64)
    fine = _tasks(3, 4, 64, torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(fine.context_inputs[..., ::2, ::2], coarse.context_inputs)
    with torch.no_grad():
        r32 = model.encode(coarse.context_inputs, coarse.context_targets)
        r64 = model.encode(fine.context_inputs, fine.context_targets)
        r_other = model.encode(
            *(t.roll(1, dims=0) for t in (fine.context_inputs, fine.context_targets))
        )
    gap = float((r32 - r64).norm() / r64.norm())
    between_tasks = float((r_other - r64).norm() / r64.norm())
    assert gap < 1e-3 * between_tasks, (gap, between_tasks)


# --------------------------------------------------------------------------- fitted models

TRAIN_SIZE, PAIRS, STEPS = 32, 3, 300
SETTINGS: dict[str, object] = {"modes": BAND + 1, "width": 16, "depth": 2, "representation": 16}


@pytest.fixture(scope="module")
def fitted() -> dict[str, ConditionalFNO]:
    """The same architecture and seed fitted with its context and with the context masked."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {}
        for name in ("context", "no context"):
            model = ConditionalFNO(1, 1, min_context=0, seed=0, **SETTINGS)  # type: ignore[arg-type]

            def data(g: torch.Generator, masked: bool = name == "no context") -> ContextFieldBatch:
                batch = _tasks(8, PAIRS, TRAIN_SIZE, g)
                return _without_context(batch) if masked else batch

            fit(model, data, steps=STEPS, lr=3e-3, progress=False, seed=0)
            models[name] = model.eval()
    finally:
        torch.set_num_threads(threads)
    return models


def _test_tasks(size: int = TRAIN_SIZE, context_size: int | None = None) -> ContextFieldBatch:
    return _tasks(48, PAIRS, size, torch.Generator().manual_seed(123), context_size=context_size)


def test_the_context_beats_the_same_model_without_it(fitted: dict[str, ConditionalFNO]) -> None:
    """Velocity and diffusion vary over tasks: only the context pairs reveal them."""
    test = _test_tasks()
    scores = {}
    for name, model in fitted.items():
        batch = test if name == "context" else _without_context(test)
        with torch.no_grad():
            forecast, targets, _ = model.predict_batch(batch)
            scores[name] = (_mse(forecast, targets), float(model.loss(batch)))
    persistence = float((test.inputs - test.targets).square().mean())
    (mse, nll), (mse_none, nll_none) = scores["context"], scores["no context"]
    assert mse < 0.75 * mse_none < persistence, (scores, persistence)
    assert nll < nll_none - 0.3, scores


def test_the_fitted_model_keeps_its_error_on_a_finer_grid(
    fitted: dict[str, ConditionalFNO],
) -> None:
    """Fitted at 32 x 32; forecasts at 64 x 64 from contexts at 64 x 64 or at 32 x 32."""
    model = fitted["context"]
    errors = {
        grids: _mse(_forecast(model, _test_tasks(*grids)), _test_tasks(*grids).targets)
        for grids in ((32, 32), (64, 64), (64, 32))
    }
    assert errors[(64, 64)] < 1.25 * errors[(32, 32)], errors
    assert errors[(64, 32)] < 1.25 * errors[(32, 32)], errors


def test_calibration_tools_take_its_forecasts(fitted: dict[str, ConditionalFNO]) -> None:
    test = _test_tasks()
    forecast = _forecast(fitted["context"], test)
    covered = coverage(test.targets, forecast, [0.5, 0.9])
    assert covered.shape == (2,) and 0.3 < float(covered[0]) < 0.7 and float(covered[1]) > 0.75
    values = pit(test.targets, forecast)
    assert values.shape == test.targets.shape and 0.35 < float(values.mean()) < 0.65


# --------------------------------------------------------------------------- errors


def test_wrong_shapes_and_types_are_refused_with_the_argument_named() -> None:
    model = _model(torch.float32)
    b = _tasks(2, 3, 8, torch.Generator().manual_seed(6))
    cx, cy, x = b.context_inputs, b.context_targets, b.inputs
    with pytest.raises(ValueError, match=r"context_inputs must have shape \(2, K, 1"):
        model.predict(cx[:, 0], cy, x)
    with pytest.raises(ValueError, match="context_inputs must have shape"):
        model.predict(cx[:1], cy[:1], x)
    with pytest.raises(ValueError, match="context_targets must have shape"):
        model.predict(cx, torch.cat([cy, cy], dim=2), x)
    with pytest.raises(ValueError, match="context_targets must have the K and grid"):
        model.predict(cx, cy[:, :2], x)
    with pytest.raises(ValueError, match="context_targets must have the K and grid"):
        model.predict(cx, cy[..., :4], x)
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 1"):
        model.predict(cx, cy, torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 3\)"):
        model.predict(cx, cy, x, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="context_mask must be a bool"):
        model.predict(cx, cy, x, torch.ones(2, 3))
    with pytest.raises(TypeError, match="context_inputs are torch.float64"):
        model.predict(cx.double(), cy, x)
    with pytest.raises(TypeError, match="context_targets must be a floating"):
        model.predict(cx, cy.numpy(), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_context=1"):
        model.predict(cx, cy, x, torch.tensor([[True, True, True], [False, False, False]]))
    infinite = cy.clone()
    infinite[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="context_targets hold infinite"):
        model.predict(cx, infinite, x)
    with pytest.raises(ValueError, match="targets must have shape"):
        model.loss(ContextFieldBatch(cx, cy, x, b.targets[..., :4]))
    with pytest.raises(TypeError, match="ContextFieldBatch"):
        model.loss((cx, cy, x, b.targets))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="residual=True"):
        ConditionalFNO(1, 2, residual=True)
    with pytest.raises(ValueError, match="representation"):
        ConditionalFNO(1, 1, representation=0)


# --------------------------------------------------------------------------- the model contract


class TestConditionalFNOContract(ModelContract):
    """A batch: 2 tasks, 3 context pairs at 8 x 8, targets at 12 x 12; padding: masked pairs
    and masked target pixels holding junk."""

    predictive_type: ClassVar[type] = Normal

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return ConditionalFNO(1, 1, modes=3, width=4, depth=1, representation=4, seed=0).to(dtype)

    def batch(self, dtype: torch.dtype = torch.float32) -> ContextFieldBatch:
        return _tasks(2, 3, 12, torch.Generator().manual_seed(7), context_size=8, dtype=dtype)

    def padded(self, batch: ContextFieldBatch) -> ContextFieldBatch:
        extra_x = torch.full_like(batch.context_inputs[:, :2], 1e3)
        extra_y = torch.full_like(batch.context_targets[:, :2], float("nan"))
        context_mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
        mask = torch.ones(2, 12, 12, dtype=torch.bool)
        mask[:, :3] = False
        targets = batch.targets.clone()
        targets[:, :, :3] = 1e3
        return ContextFieldBatch(
            torch.cat([batch.context_inputs, extra_x], dim=1),
            torch.cat([batch.context_targets, extra_y], dim=1),
            batch.inputs,
            targets,
            context_mask,
            mask,
        )

    def non_finite(self, batch: ContextFieldBatch) -> ContextFieldBatch:
        inputs = batch.inputs.clone()
        inputs[1, 0, 2, 3] = float("inf")
        return ContextFieldBatch(batch.context_inputs, batch.context_targets, inputs, batch.targets)


def _compare() -> None:
    """Print the context-vs-no-context comparison the fitted tests check (one thread).

    Beside the two fitted models of the tests: an :class:`FNOForecaster` of the same
    processor size fitted on the target pairs alone, and each model's interval coverage.
    """
    torch.set_num_threads(1)
    models = fitted.__wrapped__()  # type: ignore[attr-defined]
    plain = FNOForecaster(1, 1, modes=BAND + 1, width=16, depth=2, seed=0)

    def pairs(g: torch.Generator) -> FieldPairBatch:
        batch = _tasks(8, PAIRS, TRAIN_SIZE, g)
        return FieldPairBatch(batch.inputs, batch.targets)

    fit(plain, pairs, steps=STEPS, lr=3e-3, progress=False, seed=0)
    test = _test_tasks()
    rows = []
    for name, model in models.items():
        batch = test if name == "context" else _without_context(test)
        with torch.no_grad():
            forecast, targets, _ = model.predict_batch(batch)
            rows.append((f"ConditionalFNO, {name}", forecast, float(model.loss(batch))))
    with torch.no_grad():
        plain_test = FieldPairBatch(test.inputs, test.targets)
        rows.append(("FNOForecaster", plain.predict(test.inputs), float(plain.loss(plain_test))))
    persistence = float((test.inputs - test.targets).square().mean())
    print(f"{len(test.inputs)} test tasks, {PAIRS} context pairs, {TRAIN_SIZE} x {TRAIN_SIZE}")
    print(f"{'model':32s} {'MSE':>7s} {'NLL':>7s} {'cov50':>6s} {'cov90':>6s}")
    print(f"{'persistence':32s} {persistence:7.4f}")
    for name, forecast, nll in rows:
        c50, c90 = (float(c) for c in coverage(test.targets, forecast, [0.5, 0.9]))
        print(f"{name:32s} {_mse(forecast, test.targets):7.4f} {nll:7.4f} {c50:6.3f} {c90:6.3f}")
    for size, context in ((32, 32), (64, 64), (64, 32)):
        batch = _test_tasks(size, context)
        error = _mse(_forecast(models["context"], batch), batch.targets)
        print(
            f"ConditionalFNO, target {size} x {size}, context {context} x {context}: MSE {error:.4f}"
        )


if __name__ == "__main__":  # python tests/test_operator_conditional.py
    _compare()
