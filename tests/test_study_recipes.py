"""The registry of learned-model recipes and the progress lines of the studies."""

from __future__ import annotations

import pytest
import torch

from uqdyn.data import Task
from uqdyn.models.neural_process import CNP, ConvCNP, GridTask
from uqdyn.predictive import Normal
from uqdyn.study import RECIPES, Recipe
from uqdyn.study.base import forecast_models
from uqdyn.train import fit


def _tasks(g: torch.Generator) -> Task:
    """Noisy sine curves: 4 tasks of 5 context and 7 target points."""
    x = torch.rand(4, 12, 1, generator=g) * 4 - 2
    phase = torch.rand(4, 1, 1, generator=g) * 3
    y = torch.sin(x + phase) + 0.05 * torch.randn(x.shape, generator=g)
    ones = torch.ones(4, 12, dtype=torch.bool)
    return Task(x[:, :5], y[:, :5], ones[:, :5], x[:, 5:], y[:, 5:], ones[:, 5:])


def _grids(g: torch.Generator) -> GridTask:
    field = torch.randn(2, 1, 8, 8, generator=g).cumsum(-1)
    seen = torch.rand(field.shape, generator=g) > 0.5
    return GridTask(torch.where(seen, field, torch.nan), seen, field, None)


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], rtol=0, atol=0, msg=name)


def test_the_registry_names_every_learned_model() -> None:
    assert set(RECIPES) == {
        "cnp",
        "convcnp",
        "hybrid",
        "ambient_gan",
        "gp_forecaster",
        "np_forecaster",
    }
    for name, recipe in RECIPES.items():
        assert isinstance(recipe, Recipe) and recipe.name == name and recipe.label


def test_cnp_recipe_is_the_explicit_seeded_fit(one_thread, capsys) -> None:
    settings = {"width": 16, "steps": 6, "lr": 1e-3}
    model = RECIPES["cnp"].fit(
        settings, _tasks, seed=5, device=torch.device("cpu"), progress=False, x_dim=1, y_dim=1
    )
    assert capsys.readouterr().err == ""  # progress=False: silent
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        reference = CNP(1, 1, width=16, min_std=1e-3)
    fit(reference, _tasks, steps=6, lr=1e-3, grad_clip=10.0, seed=5, progress=False)
    _same_parameters(model, reference)
    assert not model.training
    # another seed gives another model
    other = RECIPES["cnp"].fit(
        settings, _tasks, seed=6, device=torch.device("cpu"), progress=False, x_dim=1, y_dim=1
    )
    assert not torch.equal(next(other.parameters()), next(model.parameters()))


def test_convcnp_recipe_is_the_explicit_seeded_fit_with_cosine_decay(one_thread, capsys) -> None:
    settings = {
        "width": 8,
        "depth": 2,
        "kernel_size": 3,
        "architecture": "resnet",
        "steps": 4,
        "lr": 2e-3,
    }
    model = RECIPES["convcnp"].fit(
        settings,
        _grids,
        seed=3,
        device=torch.device("cpu"),
        progress=True,
        in_channels=1,
        out_channels=1,
    )
    err = capsys.readouterr().err
    assert "training ConvCNP (4 steps)" in err
    reference = ConvCNP(
        1,
        1,
        width=8,
        depth=2,
        kernel_size=3,
        architecture="resnet",
        padding="circular",
        min_std=1e-3,
        seed=3,
    )
    fit(
        reference,
        _grids,
        steps=4,
        lr=2e-3,
        scheduler="cosine",
        grad_clip=10.0,
        seed=3,
        progress=False,
    )
    _same_parameters(model, reference)


def test_models_report_their_stages_in_order(capsys) -> None:
    normal = Normal(torch.zeros(2, 1), torch.ones(2, 1))
    calls: list[str] = []

    def model(name: str):
        def run():
            calls.append(name)
            return normal, normal, f"model {name}"

        return run

    out = forecast_models(
        ["b", "a"], {"a": model("a"), "b": model("b")}, cases="2 cases", progress=True
    )
    assert [f.name for f in out] == ["b", "a"] == calls
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1].split(" in ")[0] for line in lines] == [
        "model 1/2 b: 2 cases",
        "model 1/2 b: done",
        "model 2/2 a: 2 cases",
        "model 2/2 a: done",
    ]
    forecast_models(["a"], {"a": model("a")}, cases="2 cases", progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="'c' is not available"):
        forecast_models(["c"], {"a": model("a")}, cases="", progress=False)
