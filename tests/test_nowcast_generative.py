"""The generative ensemble nowcaster: its fair-CRPS loss, members, training and interface."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.models.nowcast.generative import (
    GenerativeNowcaster,
    fair_crps,
    fit_generative_nowcaster,
)
from uqdyn.predictive import Ensemble
from uqdyn.scoring import crps_ensemble

N_IN, LEADS, SIZE = 3, 3, 16


def _blobs(n: int, seed: int, frames: int = N_IN + LEADS, size: int = SIZE) -> torch.Tensor:
    """Rain blobs moving one pixel right and one down per frame (periodic, torch.roll).

    Gaussian blobs of random centre, width 1.5-2.5 px and peak 2-10 mm/h, minus 0.3 mm/h
    and clipped at 0, so most of the grid is exactly dry.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * size
    width = 1.5 + torch.rand(n, generator=g)
    peak = 2.0 + 8.0 * torch.rand(n, generator=g)
    dy = (yy - centre[:, 0, None, None] + size / 2) % size - size / 2
    dx = (xx - centre[:, 1, None, None] + size / 2) % size - size / 2
    field = peak[:, None, None] * torch.exp(-(dy**2 + dx**2) / (2 * width[:, None, None] ** 2))
    field = (field - 0.3).clamp_min(0.0)
    return torch.stack([field.roll((t, t), dims=(-2, -1)) for t in range(frames)], dim=1)


def _tiny(seed: int = 0, dtype: torch.dtype = torch.float32, **kw: object) -> GenerativeNowcaster:
    options: dict[str, object] = {"hidden": 4, "depth": 1, "pool_scales": (4,)}
    options.update(kw)
    with uqdyn.seeded(seed):
        return GenerativeNowcaster(N_IN, LEADS, **options).to(dtype)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained() -> GenerativeNowcaster:
    torch.set_num_threads(1)
    sequences = SimpleNamespace(rain=_blobs(64, seed=1), n_input=N_IN)
    return fit_generative_nowcaster(
        sequences, steps=300, batch_size=8, lr=3e-3, seed=0, hidden=8, device="cpu", augment=False
    )


# ---------------------------------------------------------------------- the score
def test_fair_crps_matches_uqdyn_scoring_and_a_dense_pair_sum() -> None:
    g = torch.Generator().manual_seed(0)
    for m in (2, 3, 8):
        members = torch.randn(m, 5, 7, generator=g, dtype=torch.float64)
        target = torch.randn(5, 7, generator=g, dtype=torch.float64)
        ours = fair_crps(members, target)
        ref = crps_ensemble(target, members, member_dim=0, estimator="fair")
        torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=1e-12, atol=1e-12)
        pairs = (members[:, None] - members[None, :]).abs().sum((0, 1))
        dense = (members - target).abs().mean(0) - pairs / (2 * m * (m - 1))
        torch.testing.assert_close(ours, dense, rtol=1e-12, atol=1e-12)
    # the fair CRPS of two members is unbiased: E over draws equals the exact CRPS of N(0,1)
    draws = torch.randn(2, 200_000, generator=g, dtype=torch.float64)
    exact = 2 * (1 / np.sqrt(2 * np.pi)) - 1 / np.sqrt(np.pi)  # CRPS(N(0, 1), y = 0)
    assert (
        abs(float(fair_crps(draws, torch.zeros(200_000, dtype=torch.float64)).mean()) - exact)
        < 4e-3
    )


def test_loss_is_the_fair_crps_of_its_members_over_observed_pixels_in_float64() -> None:
    model = _tiny(dtype=torch.float64, pool_scales=(4,), pool_weight=0.7, rain_weight=0.3)
    rain = _blobs(3, seed=2).double()
    inputs, targets = rain[:, :N_IN].clone(), rain[:, N_IN:].clone()
    targets[0, :, :6, :] = float("nan")  # a window of 4 x 4 half observed counts, less not
    targets[1, 1, 3, 5] = float("nan")
    inputs[2, 0, 2:5, 2:9] = float("nan")
    torch.manual_seed(5)
    loss = model.loss((inputs, targets))
    torch.manual_seed(5)  # the same latents
    values, observed = model._prepare(inputs)
    members = model._generate(values, observed, model.members_per_batch, None).detach()
    raw = members.numpy()
    v = np.where(raw > 0, raw, 0.01 * raw)  # members censored at dry (slope 0.01 below)
    keep = ~torch.isnan(targets).numpy()
    tv = np.log1p(np.nan_to_num(targets.numpy()) / 0.1)
    pixel = crps_ensemble(tv, v, member_dim=0, estimator="fair")[keep].mean()
    rain_m = np.maximum(0.1 * np.expm1(raw), 0.0)
    in_rain = crps_ensemble(targets.numpy(), rain_m, member_dim=0, estimator="fair")[keep].mean()
    # pooled 4 x 4 windows, averages over their observed pixels, kept when >= half observed
    pooled, valid = [], []
    for b in range(3):
        for t in range(LEADS):
            for i in range(0, SIZE, 4):
                for j in range(0, SIZE, 4):
                    k = keep[b, t, i : i + 4, j : j + 4]
                    if k.mean() < 0.5:
                        continue
                    y = tv[b, t, i : i + 4, j : j + 4][k].mean()
                    x = v[:, b, t, i : i + 4, j : j + 4][:, k].mean(-1)
                    pooled.append(float(crps_ensemble(y, x, member_dim=0, estimator="fair")))
                    valid.append(1)
    expected = pixel + 0.7 * np.mean(pooled) + 0.3 * in_rain
    assert 0 < len(valid) < 3 * LEADS * 16
    assert abs(loss.item() - expected) < 1e-10
    loss.backward()  # differentiable end to end
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------------- the members
def _neighbour_correlation(members: torch.Tensor) -> float:
    """Correlation of member-minus-mean differences between horizontally adjacent pixels."""
    d = members - members.mean(0)
    a, b = d.flatten(), d.roll(-1, dims=-1).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_members_differ_and_are_spatially_coherent(trained: GenerativeNowcaster) -> None:
    rain = _blobs(4, seed=3)
    ens = trained.nowcast(rain[:, :N_IN], LEADS, 16, seed=0).members
    spread = ens.std(0)
    wet = rain[:, N_IN:] > 0.5
    assert float(spread[wet].mean()) > 0.05  # members differ where it rains
    coherent = _neighbour_correlation(torch.log1p(ens / 0.1))
    independent = _neighbour_correlation(torch.randn(16, 4, LEADS, SIZE, SIZE))
    assert abs(independent) < 0.05
    assert coherent > 0.6, coherent


def test_trained_ensemble_beats_persistence_at_leads_1_to_3(
    trained: GenerativeNowcaster,
) -> None:
    rain = _blobs(32, seed=4)
    inputs, targets = rain[:, :N_IN], rain[:, N_IN:]
    ens = trained.nowcast(inputs, LEADS, 16, seed=0)
    crps = torch.as_tensor(ens.crps(targets)).mean((0, 2, 3))
    persistence = (inputs[:, -1:] - targets).abs().mean((0, 2, 3))
    print("lead CRPS", crps.tolist(), "persistence MAE", persistence.tolist())
    assert bool((crps < 0.5 * persistence).all()), (crps, persistence)
    # dry forecasts are exactly dry in a good fraction, as in the data
    dry_truth = float((targets == 0).float().mean())
    dry_members = float((ens.members == 0).float().mean())
    assert dry_members > 0.8 * dry_truth, (dry_members, dry_truth)


# ---------------------------------------------------------------------- the interface
def test_nowcast_shape_dtype_sign_and_seed() -> None:
    model = _tiny()
    rain = _blobs(2, seed=5)[:, :N_IN]
    a = model.nowcast(rain, LEADS, 5, seed=3)
    assert isinstance(a, Ensemble)
    assert tuple(a.members.shape) == (5, 2, LEADS, SIZE, SIZE)
    assert a.members.dtype == torch.float32
    assert bool(torch.isfinite(a.members).all()) and bool((a.members >= 0).all())
    torch.manual_seed(123)  # global RNG state plays no part
    b = model.nowcast(rain, LEADS, 5, seed=3)
    assert torch.equal(a.members, b.members)
    c = model.nowcast(rain, LEADS, 5, seed=4)
    assert not torch.equal(a.members, c.members)
    assert not torch.equal(a.members[0], a.members[1])
    d = model.nowcast(rain.double(), 2, 5, seed=3)
    assert d.members.dtype == torch.float64
    torch.testing.assert_close(d.members.float(), a.members[:, :, :2], rtol=1e-4, atol=1e-5)
    # longer than the trained leads: autoregressive, the first block unchanged
    long = model.nowcast(rain, 2 * LEADS + 1, 5, seed=3).members
    assert tuple(long.shape) == (5, 2, 2 * LEADS + 1, SIZE, SIZE)
    assert torch.equal(long[:, :, :LEADS], a.members)
    assert bool(torch.isfinite(long).all()) and bool((long >= 0).all())


def test_nan_inputs_are_handled() -> None:
    model = _tiny()
    rain = _blobs(2, seed=6)[:, :N_IN].clone()
    rain[0, :, :5] = float("nan")
    rain[1] = float("nan")  # nothing observed at all
    ens = model.nowcast(rain, LEADS, 3, seed=0).members
    assert bool(torch.isfinite(ens).all()) and bool((ens >= 0).all())
    targets = _blobs(2, seed=6)[:, N_IN:].clone()
    targets[0, 0] = float("nan")
    assert torch.isfinite(model.loss((rain, targets)))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.rand(2, N_IN, 16), LEADS, 2), ValueError, "inputs has shape"),
        ((torch.rand(2, N_IN + 1, 16, 16), LEADS, 2), ValueError, "expected 3 frames"),
        ((torch.rand(2, N_IN, 15, 16), LEADS, 2), ValueError, "multiples of 2"),
        ((torch.rand(2, N_IN, 16, 16), 0, 2), ValueError, "steps"),
        ((torch.rand(2, N_IN, 16, 16), LEADS, 0), ValueError, "members"),
        ((torch.ones(2, N_IN, 16, 16, dtype=torch.int64), LEADS, 2), TypeError, "dtype"),
        ((np.ones((2, N_IN, 16, 16)), LEADS, 2), TypeError, "inputs is a ndarray"),
        ((torch.full((2, N_IN, 16, 16), float("inf")), LEADS, 2), ValueError, "infinite"),
    ],
)
def test_clear_errors(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _tiny().nowcast(*args)


def test_batch_errors_and_options() -> None:
    model = _tiny()
    x, y = torch.rand(2, N_IN, 16, 16), torch.rand(2, LEADS, 16, 16)
    with pytest.raises(TypeError, match="batch is a Tensor"):
        model.loss(x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 3 frames"):
        model.loss((x, y[:, :2]))
    with pytest.raises(ValueError, match="same batch size"):
        model.loss((x, y[:1]))
    with pytest.raises(ValueError, match="all NaN"):
        model.loss((x, torch.full_like(y, float("nan"))))
    with pytest.raises(ValueError, match="members_per_batch"):
        GenerativeNowcaster(N_IN, LEADS, members_per_batch=1)
    with pytest.raises(TypeError, match="pool_scales"):
        GenerativeNowcaster(N_IN, LEADS, pool_scales=4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RadarSequences"):
        fit_generative_nowcaster(torch.rand(2, 6, 16, 16), steps=1)
    with pytest.raises(ValueError, match="at least"):
        fit_generative_nowcaster(SimpleNamespace(rain=torch.rand(2, 4, 16, 16), n_input=4), steps=1)


def test_recipe_is_seeded_end_to_end() -> None:
    seq = SimpleNamespace(rain=_blobs(8, seed=7), n_input=N_IN)
    val = SimpleNamespace(rain=_blobs(4, seed=8), n_input=N_IN)
    kw = {"steps": 4, "batch_size": 2, "lr": 1e-3, "seed": 3, "hidden": 4, "device": "cpu"}
    a = fit_generative_nowcaster(seq, depth=1, **kw)  # type: ignore[arg-type]
    b = fit_generative_nowcaster(seq, depth=1, **kw)  # type: ignore[arg-type]
    c = fit_generative_nowcaster(seq, depth=1, **{**kw, "seed": 4})  # type: ignore[arg-type]
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    assert not torch.equal(a.net.head.weight, c.net.head.weight)
    v = fit_generative_nowcaster(seq, depth=1, val_sequences=val, **kw)  # type: ignore[arg-type]
    assert v.fit_result.history[-1]["val_crps"] is not None


# ---------------------------------------------------------------------- the contract
class TestGenerativeNowcasterContract(ModelContract):
    predictive_type: ClassVar[type] = Ensemble
    padding_reason: ClassVar[str] = (
        "a not-observed pixel is NaN (the model builds its own mask channel from it), so "
        "there is no separate padding value to vary; NaN targets are left out of the loss"
    )

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return _tiny(0, dtype)

    def batch(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        rain = _blobs(2, seed=9).to(dtype)
        targets = rain[:, N_IN:].clone()
        targets[0, 0, :3] = float("nan")
        return rain[:, :N_IN], targets

    def padded(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        return None

    def non_finite(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = batch[0].clone()
        inputs[0, 1, 2, 3] = float("inf")
        return inputs, batch[1]


def test_pooling_helper_is_an_average_pool_when_all_is_observed() -> None:
    from uqdyn.models.nowcast.generative import _pooled

    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(_pooled(x, torch.ones_like(x), 4), F.avg_pool2d(x, 4))
