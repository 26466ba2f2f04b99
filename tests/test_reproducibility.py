# ruff: noqa: NPY002 - the tests exercise numpy's legacy global RNG on purpose
"""Same command, same numbers: seeding of model construction, examples and their output.

``uqdyn.seed_everything`` / ``uqdyn.seeded`` fix the initial weights of every model (which
``uqdyn.train.fit(seed=...)`` does not cover); an example run twice in fresh processes must
print the same numbers.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import uqdyn
from uqdyn.models.gp import ContextGP, ExactGP, GridGP, MetaGP, MultitaskGP, SparseGP
from uqdyn.models.neural_process import (
    CNP,
    AttentiveCNP,
    AttentiveNP,
    LatentNP,
    NeuralODEProcess,
)

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")

CONSTRUCTORS = {
    "CNP": lambda: CNP(2, 1, width=16),
    "AttentiveCNP": lambda: AttentiveCNP(2, 1, width=16, num_heads=2),
    "LatentNP": lambda: LatentNP(2, 1, width=16, z_dim=4),
    "AttentiveNP": lambda: AttentiveNP(2, 1, width=16, z_dim=4, num_heads=2),
    "NeuralODEProcess": lambda: NeuralODEProcess(1, latent_dim=3, control_dim=2, width=16),
    "ExactGP": lambda: ExactGP(2, 2, kernel="matern52 + periodic"),
    "MultitaskGP": lambda: MultitaskGP(1, 3, num_latents=2, rank=2),
    "SparseGP": lambda: SparseGP(1, 2, num_inducing=8),
    "GridGP": lambda: GridGP(2, kernel="rbf"),
    "ContextGP": lambda: ContextGP(1, 2),
    "MetaGP": lambda: MetaGP(1, 1, kernel="spectral_mixture"),
}
#: constructors that draw random initial values (the others are deterministic by design)
RANDOM_INIT = {"CNP", "AttentiveCNP", "LatentNP", "AttentiveNP", "NeuralODEProcess", "MultitaskGP"}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_the_same_seed_builds_the_same_model(name):
    build = CONSTRUCTORS[name]
    with uqdyn.seeded(7):
        a = _state(build())
    torch.rand(5)  # the global RNG moves on between the two constructions
    with uqdyn.seeded(7):
        b = _state(build())
    uqdyn.seed_everything(7)
    c = _state(build())
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    with uqdyn.seeded(8):
        d = _state(build())
    differs = any(not torch.equal(a[k], d[k]) for k in a)
    assert differs == (name in RANDOM_INIT), "another seed should change exactly the random ones"


def test_seeded_restores_every_global_rng():
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    with uqdyn.seeded(0):
        inside = (torch.rand(3), np.random.rand(3), random.random())
    after = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(after[0], expected[0])
    np.testing.assert_array_equal(after[1], expected[1])
    assert after[2] == expected[2]
    with uqdyn.seeded(0):  # the block itself depends only on the seed
        again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(inside[0], again[0]) and inside[2] == again[2]
    np.testing.assert_array_equal(inside[1], again[1])
    torch.manual_seed(5)
    with pytest.raises(RuntimeError), uqdyn.seeded(1):  # restored on an exception too
        torch.rand(4)
        raise RuntimeError
    assert torch.equal(torch.rand(2), torch.rand(2, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(
    ("seed", "error"), [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_seeds_are_refused(seed, error):
    with pytest.raises(error, match="seed"):
        uqdyn.seed_everything(seed)
    with pytest.raises(error, match="seed"), uqdyn.seeded(seed):
        pass


def test_every_example_seeds_its_models():
    for path in sorted((ROOT / "examples").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "uqdyn.seed_everything(" in text or "uqdyn.seeded(" in text, path.name


def _run_example(path: Path, cwd: Path) -> str:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(path), "--quick"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=int(os.environ.get("UQDYN_EXAMPLE_TIMEOUT", "300")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cnp_forecast_prints_the_same_numbers_in_fresh_processes(tmp_path):
    path = ROOT / "examples" / "cnp_forecast.py"
    first = _run_example(path, tmp_path)
    second = _run_example(path, tmp_path)
    numbers = NUMBER.findall(first)
    assert len(numbers) >= 4, first  # CRPS, climatology CRPS, two coverages
    assert numbers == NUMBER.findall(second), (first, second)
    assert first == second
