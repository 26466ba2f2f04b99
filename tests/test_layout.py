"""The package layout shows the flow: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "uqdyn"

# What each subpackage may import from the rest of uqdyn (private ``uqdyn._*`` helpers are
# shared by all). Anything not listed is above it in the flow.
ALLOWED: dict[str, set[str]] = {
    "scoring": set(),
    "predictive": {"scoring"},
    "calibration": {"scoring", "predictive"},
    "physics": set(),
    "observe": {"physics"},
    "data": {"physics", "observe"},
    "forecast": {"data", "predictive", "scoring", "calibration"},
    "train": {"predictive", "scoring"},
    "models": {
        "physics", "observe", "data", "forecast", "train", "predictive", "scoring", "calibration"
    },
    "da": {"physics", "observe", "data", "models", "train", "predictive", "scoring"},
    "study": {
        "physics", "observe", "data", "forecast", "train", "models", "predictive", "scoring",
        "calibration", "da",
    },
    "verify": {"scoring", "calibration", "predictive", "study"},
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """The uqdyn subpackages ``path`` imports (absolute or relative imports)."""
    module = path.relative_to(ROOT.parent).with_suffix("").parts
    package = module if path.name == "__init__.py" else module[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "uqdyn" and len(parts) > 1 and not parts[1].startswith("_"):
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(package: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        extra = _imports(path) - ALLOWED[package] - {package}
        if extra:
            bad[str(path.relative_to(ROOT.parent))] = sorted(extra)
    assert not bad, f"imports above the {package} layer: {bad}"


def test_scoring_and_predictive_do_not_import_each_other_both_ways() -> None:
    scoring = set().union(*(_imports(p) for p in (ROOT / "scoring").rglob("*.py")))
    assert "predictive" not in scoring


def test_no_benchmark_harness_inside_models() -> None:
    harnesses = [p for p in (ROOT / "models").rglob("*.py") if "benchmark" in p.stem]
    assert not harnesses, harnesses


def test_no_model_or_data_generator_inside_da() -> None:
    """``uqdyn.da`` holds forecast operators and adapters; models and data live elsewhere."""
    found = []
    for path in sorted((ROOT / "da").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                if bases & {"nn.Module", "torch.nn.Module", "Module", "Dynamics"}:
                    found.append(f"{path.name}:{node.name}")
    assert not found, found


def test_one_training_loop() -> None:
    """Only ``uqdyn.train`` back-propagates and steps optimizers; every ``fit_*`` is a recipe."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] == "train":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"backward", "zero_grad"}
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()")
    assert not found, found
