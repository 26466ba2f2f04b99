"""Multi-environment data and the LEADS / CoDA models (with their baselines)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from _contract import ModelContract
from torch import nn

import uqdyn
from uqdyn.data import LOTKA_VOLTERRA_CODA, coda_protocol_datasets, multi_environment
from uqdyn.models.hybrid import MLPAugmentation
from uqdyn.models.multienv import (
    LEADS,
    CoDA,
    EnvironmentBatch,
    OneForAll,
    OnePerEnv,
    environment_batch,
)
from uqdyn.physics import LotkaVolterra, simulate
from uqdyn.predictive import Normal

PARAMS = {"beta": [0.5, 1.0, 0.75], "delta": [0.5, 0.75, 1.0]}


def _small_batch(dtype: torch.dtype = torch.float32) -> EnvironmentBatch:
    ds = multi_environment(
        "lotka_volterra",
        PARAMS,
        n_per_env=2,
        horizon=2.0,
        dt=0.5,
        system_kwargs={"alpha": 0.5, "gamma": 0.5},
        step_size=0.1,
    )
    batch = environment_batch(ds, dtype=dtype)
    mask = torch.ones(batch.trajectories.shape[:2], dtype=torch.bool)
    mask[1, 3:] = False
    return replace(batch, mask=mask)


def _net() -> nn.Module:
    net = MLPAugmentation(2, hidden=8)
    nn.init.normal_(net.net[-1].weight, std=0.3)
    return net


# ---------------------------------------------------------------------------- data
def test_multi_environment_shapes_coords_and_physics() -> None:
    ds = multi_environment(
        "lotka_volterra", PARAMS, n_per_env=3, horizon=2.0, dt=0.5, step_size=0.05, seed=4
    )
    assert ds["state"].dims == ("env", "sample", "time", "dim")
    assert ds["state"].shape == (3, 3, 5, 2)
    np.testing.assert_array_equal(ds["time"].values, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(ds["beta"].values, PARAMS["beta"])
    assert ds["delta"].dims == ("env",)
    # environment 1 is LotkaVolterra(beta=1.0, delta=0.75) from its own initial states
    system = LotkaVolterra(beta=1.0, delta=0.75)
    state0 = torch.as_tensor(ds["state"].values[1, :, 0])
    expected = simulate(system, state0, torch.arange(5) * 0.5, step_size=0.05)
    np.testing.assert_allclose(
        ds["state"].values[1], expected.detach().numpy(), rtol=1e-5, atol=1e-6
    )
    # same seed, same numbers; an environment does not depend on the others
    again = multi_environment(
        "lotka_volterra", [{"beta": 0.5, "delta": 0.5}], n_per_env=3, horizon=2.0, dt=0.5,
        step_size=0.05, seed=4,
    )  # fmt: skip
    np.testing.assert_array_equal(again["state"].values[0], ds["state"].values[0])


def test_coda_protocol_settings() -> None:
    p = LOTKA_VOLTERRA_CODA
    assert p.fixed == {"alpha": 0.5, "gamma": 0.5}
    assert len(p.train_params) == 9 and len(p.adapt_params) == 4
    assert {(q["beta"], q["delta"]) for q in p.adapt_params} == {
        (a, b) for a in (0.625, 1.125) for b in (0.625, 1.125)
    }
    assert (p.n_train, p.n_adapt, p.n_test, p.horizon, p.dt) == (4, 1, 32, 10.0, 0.5)
    sets = coda_protocol_datasets(n_test=2)
    assert sets["train"]["state"].shape == (9, 4, 21, 2)
    assert sets["adapt"]["state"].shape == (4, 1, 21, 2)
    assert sets["adapt_test"]["state"].shape == (4, 2, 21, 2)
    assert not np.array_equal(sets["train"]["state"][:, 0, 0], sets["test"]["state"][:, 0, 0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_per_env": 0}, ValueError, "n_per_env"),
        ({"dt": 3.0}, ValueError, "dt"),
        ({"dt": 0.3}, ValueError, "horizon"),
        ({"params": {"beta": [0.5, 1.0], "delta": [0.5]}}, ValueError, "params"),
        ({"params": [{"beta": 0.5}, {"delta": 0.5}]}, ValueError, r"params\[1\]"),
        ({"params": 3}, TypeError, "params"),
        ({"system_kwargs": {"beta": 1.0}}, ValueError, "system_kwargs"),
        ({"system": "no_such_system"}, ValueError, "system"),
    ],
)
def test_multi_environment_names_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    args: dict[str, Any] = {
        "system": "lotka_volterra", "params": PARAMS, "n_per_env": 1, "horizon": 1.0, "dt": 0.5
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(error, match=match):
        multi_environment(args.pop("system"), args.pop("params"), **args)


# ---------------------------------------------------------------------------- contract
class _MultiEnvContract(ModelContract):
    predictive_type: ClassVar[type] = Normal

    def batch(self, dtype: torch.dtype = torch.float32) -> EnvironmentBatch:
        return _small_batch(dtype)

    def padded(self, batch: EnvironmentBatch) -> EnvironmentBatch:
        assert batch.mask is not None
        unseen = (~batch.mask)[..., None]
        junk = torch.full_like(batch.trajectories, 55.0)
        return replace(batch, trajectories=torch.where(unseen, junk, batch.trajectories))

    def non_finite(self, batch: EnvironmentBatch) -> EnvironmentBatch:
        data = batch.trajectories.clone()
        data[0, 2, 1] = float("nan")
        return replace(batch, trajectories=data)


class TestCoDAContract(_MultiEnvContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return CoDA(_net, 3, (2,), hyper_init_std=0.1, seed=0).to(dtype)


class TestLEADSContract(_MultiEnvContract):
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return LEADS(_net, 3, (2,), seed=0).to(dtype)


# ---------------------------------------------------------------------------- adaptation
def _one_env(batch: EnvironmentBatch, env: int) -> EnvironmentBatch:
    rows = batch.env == env
    mask = None if batch.mask is None else batch.mask[rows]
    return EnvironmentBatch(batch.times, batch.trajectories[rows], batch.env[rows], mask)


def test_coda_context_only_adaptation_leaves_shared_weights_bit_for_bit() -> None:
    model = CoDA(_net, 2, (2,), hyper_init_std=0.1, seed=1)
    batch = _small_batch()
    train = replace(batch, mask=None)
    train = EnvironmentBatch(train.times, train.trajectories[:4], train.env[:4])
    uqdyn.train.fit(model, [train], steps=5, lr=1e-2, progress=False, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    new = model.adapt(_one_env(batch, 2), steps=20, lr=5e-2)
    assert new == 2 and model.n_envs == 3
    after = model.state_dict()
    for name, value in before.items():
        if name == "contexts":
            assert torch.equal(after[name][:2], value)
        else:
            assert torch.equal(after[name], value), name
    assert float(after["contexts"][2].abs().sum()) > 0  # the new context moved
    assert all(p.requires_grad for p in model.parameters())
    assert all(
        p.grad is None or torch.equal(grads[n], p.grad)
        for n, p in model.named_parameters()
        if n in grads
    )


def test_coda_adaptation_recovers_the_closed_form_context() -> None:
    """A linear field, one Euler step: the adapted context is a ridge regression's solution.

    With ``f(x) = (Theta + sum_k c_k W_k) x`` and ``x_1 = x_0 + dt f(x_0)``, the loss
    ``mean_{b,i} (x_1 - y)^2 + lam ||c||^2`` is quadratic in ``c``, minimised by
    ``c* = (sum_b G_b^T G_b / (B D) + lam I)^{-1} sum_b G_b^T r_b / (B D)`` with
    ``G_b = dt [W_1 x_0, ..., W_d x_0]`` and ``r_b = y_b - x_0 - dt Theta x_0``.
    """
    dtype = torch.float64
    lam, dt, d = 1e-2, 0.1, 3
    model = CoDA(
        lambda: nn.Linear(2, 2, bias=False), 1, (2,), context_dim=d, context_penalty=lam,
        hyper_init_std=1.0, method="euler", seed=3,
    ).to(dtype)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, generator=g, dtype=dtype)
    y = x0 + 0.3 * torch.randn(5, 2, generator=g, dtype=dtype)
    times = torch.tensor([0.0, dt], dtype=dtype)
    batch = EnvironmentBatch(times, torch.stack([x0, y], dim=1), torch.zeros(5, dtype=torch.int64))
    new = model.adapt(batch, steps=2000, lr=0.05)  # Adam: L-BFGS stops at its tolerances

    theta = model.net.weight.detach()
    basis = model.hyper.detach().T.reshape(d, 2, 2)  # W_k, as (out, in) matrices
    G = dt * torch.einsum("kij,bj->bik", basis, x0)  # (batch, D, d)
    r = y - x0 - dt * x0 @ theta.T
    n = x0.numel()
    lhs = torch.einsum("bik,bil->kl", G, G) / n + lam * torch.eye(d, dtype=dtype)
    rhs = torch.einsum("bik,bi->k", G, r) / n
    expected = torch.linalg.solve(lhs, rhs)
    torch.testing.assert_close(model.contexts[new].detach(), expected, rtol=1e-6, atol=1e-8)


def test_one_for_all_on_one_environment_equals_plain_training() -> None:
    dtype = torch.float64
    batch = _small_batch(dtype)
    one = _one_env(batch, 0)
    one = EnvironmentBatch(one.times, one.trajectories, one.env)
    model = OneForAll(_net, 1, (2,), seed=5).to(dtype)
    uqdyn.train.fit(model, [one], steps=15, lr=1e-2, progress=False, device="cpu")

    with uqdyn.seeded(5):
        plain = _net().to(dtype)
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)

    class _F(nn.Module):
        def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return plain(x)

    for _ in range(15):
        optimizer.zero_grad()
        rollout = simulate(_F(), one.initial_state, one.times)
        loss = ((rollout[:, 1:] - one.trajectories[:, 1:]) ** 2).mean()
        loss.backward()
        optimizer.step()
    for a, b in zip(model.net.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_leads_penalty_and_adaptation_keep_the_shared_field() -> None:
    batch = _small_batch(torch.float64)
    model = LEADS(_net, 3, (2,), penalty=0.5, seed=2).to(torch.float64)
    # the penalty by hand: lam * sum_e mean over observed states of ||g_e(x)||^2
    expected = 0.0
    for e in range(3):
        rows = batch.env == e
        states = batch.trajectories[rows][batch.mask[rows]]
        expected += float(model.env_parts[e](states).pow(2).sum(dim=1).mean())
    assert float(model.penalty(batch)) == pytest.approx(0.5 * expected, rel=1e-12)
    shared = {k: v.clone() for k, v in model.shared.state_dict().items()}
    parts = [p.detach().clone() for p in model.env_parts.parameters()]
    new = model.adapt(_one_env(batch, 1), steps=5, lr=1e-2)
    assert new == 3 and model.n_envs == 4
    for k, v in model.shared.state_dict().items():
        assert torch.equal(v, shared[k])
    old = [p.detach() for p in model.env_parts[:3].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(old, parts, strict=True))


def test_baseline_adaptation_adds_an_environment() -> None:
    batch = _small_batch()
    for model in (OneForAll(_net, 3, (2,)), OnePerEnv(_net, 3, (2,))):
        net0 = [p.detach().clone() for p in model.parameters()]
        new = model.adapt(_one_env(batch, 2), steps=3, lr=1e-2)
        assert new == 3
        first = list(model.parameters())[: len(net0)]
        assert all(torch.equal(a, b) for a, b in zip(first, net0, strict=True))
        prediction = model(batch.initial_state[:2], batch.times, torch.tensor([new, 0]))
        assert prediction.mean.shape == (2, 4, 2)


# ---------------------------------------------------------------------------- errors
def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="regularization"):
        CoDA(_net, 2, (2,), regularization="l3")
    with pytest.raises(TypeError, match="network"):
        LEADS(_net(), 2, (2,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_envs"):
        CoDA(_net, 0, (2,))
    with pytest.raises(ValueError, match="context_penalty"):
        CoDA(_net, 2, (2,), context_penalty=-1.0)
    model = CoDA(_net, 2, (2,))
    with pytest.raises(ValueError, match=r"batch\.env"):
        model.loss(_small_batch())  # environments 0..2 for a 2-environment model
    with pytest.raises(TypeError, match="EnvironmentBatch"):
        model.loss(_small_batch().trajectories)
    bad = replace(_small_batch(), env=torch.zeros(6))
    with pytest.raises(TypeError, match="int64"):
        LEADS(_net, 3, (2,)).loss(bad)


@pytest.mark.parametrize("kind", ["coda", "leads", "one_for_all", "one_per_env"])
def test_batched_rollout_equals_the_per_environment_loop(kind: str) -> None:
    """Equal-sized environment groups are integrated at once; the result is the loop's."""
    dtype = torch.float64
    batch = _small_batch(dtype)
    builders = {
        "coda": lambda: CoDA(_net, 3, (2,), hyper_init_std=0.3, seed=0),
        "leads": lambda: LEADS(_net, 3, (2,), seed=0),
        "one_for_all": lambda: OneForAll(_net, 3, (2,), seed=0),
        "one_per_env": lambda: OnePerEnv(_net, 3, (2,), seed=0),
    }
    model = builders[kind]().to(dtype)
    if kind == "coda":
        with torch.no_grad():
            model.contexts.normal_(generator=torch.Generator().manual_seed(1))
    if kind == "one_for_all":
        model.adapt(_one_env(batch, 1), steps=2, lr=1e-1)  # env 3: an adapted network
        batch = replace(batch, env=torch.tensor([0, 0, 3, 3, 1, 1]))
    assert model._batched_tendency(sorted(set(batch.env.tolist()))) is not None
    batched = model.rollout(batch.initial_state, batch.times, batch.env)
    model._batched_tendency = lambda envs: None  # type: ignore[method-assign]
    loop = model.rollout(batch.initial_state, batch.times, batch.env)
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    # gradients reach every environment's own parameters through the batched path
    del model._batched_tendency
    model.zero_grad()
    model.loss(
        replace(batch, env=torch.tensor([0, 0, 1, 1, 2, 2])) if kind != "one_for_all" else batch
    ).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_gray_scott_and_navier_stokes_protocols_simulate() -> None:
    from uqdyn.data import GRAY_SCOTT_CODA, NAVIER_STOKES_CODA

    assert len(GRAY_SCOTT_CODA.train_params) == 4 and len(NAVIER_STOKES_CODA.train_params) == 5
    assert {p["viscosity"] for p in NAVIER_STOKES_CODA.adapt_params} == {
        8.5e-4, 9.5e-4, 1.05e-3, 1.15e-3
    }  # fmt: skip
    ns = multi_environment(
        "navier_stokes", NAVIER_STOKES_CODA.train_params[:2], n_per_env=1, horizon=1.0, dt=1.0,
        system_kwargs=NAVIER_STOKES_CODA.fixed, step_size=0.05,
    )  # fmt: skip
    assert ns["w"].dims == ("env", "sample", "time", "y", "x")
    assert ns["w"].shape == (2, 1, 2, 32, 32) and np.isfinite(ns["w"].values).all()
    np.testing.assert_allclose(ns["viscosity"].values, [8e-4, 9e-4])
