"""Every example script with a ``--quick`` flag runs to completion with ``--quick``.

Each runs as a subprocess (one torch thread, Agg matplotlib backend) in a temporary working
directory, with a timeout of ``UQDYN_EXAMPLE_TIMEOUT`` seconds (default 300). An example whose
source contains the comment ``# uqdyn-example: slow`` is marked ``slow`` (deselect with
``-m "not slow"``); one that imports a missing optional package is skipped, naming it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
#: Packages that are not core dependencies of uqdyn: an example needing a missing one skips.
OPTIONAL = {
    "matplotlib",
    "dask",
    "zarr",
    "netCDF4",
    "h5netcdf",
    "scoringrules",
    "numba",
    "dapper",  # the da extra
    "filterpy",  # the da extra
}
TIMEOUT_S = int(os.environ.get("UQDYN_EXAMPLE_TIMEOUT", "300"))
SLOW_TAG = "# uqdyn-example: slow"


def _imports(path: Path) -> set[str]:
    """Top-level module names imported anywhere in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _has_quick_flag(path: Path) -> bool:
    return '"--quick"' in path.read_text(encoding="utf-8")


def _params() -> list:
    return [
        pytest.param(
            p,
            id=p.name,
            marks=[pytest.mark.slow] if SLOW_TAG in p.read_text(encoding="utf-8") else [],
        )
        for p in EXAMPLES
    ]


@pytest.mark.parametrize("path", _params())
def test_example_runs_quick(path: Path, tmp_path: Path) -> None:
    if not _has_quick_flag(path):
        pytest.skip(f"{path.name} has no --quick flag")
    missing = sorted(m for m in _imports(path) & OPTIONAL if importlib.util.find_spec(m) is None)
    if missing:
        pytest.skip(f"{path.name} needs optional package(s) {missing}, not installed")
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(path), "--quick"],
            cwd=tmp_path,  # examples that write files write them here
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} --quick did not finish within {TIMEOUT_S} s")
    if proc.returncode != 0:
        found = re.search(r"No module named '([\w.]+)'", proc.stderr)
        if found and found.group(1).split(".")[0] in OPTIONAL:
            pytest.skip(f"{path.name} needs optional package {found.group(1)!r}, not installed")
        pytest.fail(
            f"{path.name} --quick exited with {proc.returncode}\n--- stdout\n"
            f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
    assert proc.stdout.strip(), f"{path.name} --quick printed nothing"
