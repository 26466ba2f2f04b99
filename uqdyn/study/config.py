"""Study configurations: TOML defaults shipped with the package, file and command-line overrides.

A study configuration is a nested table. The defaults of study ``NAME`` live in
``uqdyn/study/configs/NAME.toml``; its ``[quick]`` table holds the reduced settings applied
by ``--quick``. A user file (``--config FILE``) and ``--set key=value`` overrides may change
any existing key (dotted for nested tables, e.g. ``models.cnp.steps``) but never add one:
unknown keys are rejected with the list of valid ones, and values must have the type of the
default (an int is accepted where a float is expected).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from uqdyn._checks import as_float, as_int, is_integer_scalar, is_real_scalar

from ._checks import check_data_source, check_values

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "STUDIES",
    "StudyConfig",
    "load_config",
    "default_config",
    "valid_keys",
    "parse_override",
]

#: Study names and one-line descriptions, in the order of ``uqdyn study --list``.
STUDIES: dict[str, str] = {
    "advection-diffusion": "2D tracer forecast from a few noisy frames; ConvCNP, climatology, "
    "pixel CNP, grid GP, physics ensemble with uncertain velocity",
    "pendulum": "1D damped-pendulum forecast from noisy observations; CNP, GP, physics "
    "ensemble, hybrid deep ensemble",
    "lorenz96": "Lorenz-96 forecast with uncertain forcing; CNP, GP, physics ensemble, "
    "hybrid deep ensemble",
    "shallow-water-inverse": "reconstruct a shallow-water height field from sparse noisy pixels; "
    "GP, interpolation baseline, ConvCNP, pixel CNP, conditional ambient GAN (not in --quick)",
    "forecast": "your own series or field (--data FILE --var NAME): references, GP, neural "
    "process and ensemble, skill with confidence intervals",
    "elnino": "monthly El Nino-region SST 1950-2010 (statsmodels), leads 1-6 months, test "
    "1996-2010",
    "co2": "weekly Mauna Loa CO2 1958-2001 with gaps (statsmodels), leads 1-26 weeks, test "
    "1994-2001",
    "multi-environment": "Lotka-Volterra (or Gray-Scott) under several parameter settings, "
    "new settings adapted from one trajectory; CoDA, LEADS, one-for-all, fine-tuning, "
    "one-per-environment",
}

_TOP_LEVEL = ("name", "seed", "device", "threads", "out", "models")

#: The example of ``--set KEY=VALUE`` in messages and ``--help`` (a key of most studies).
OVERRIDE_EXAMPLE = "evaluation.n_boot=200"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or name not in STUDIES:
        raise ValueError(f"study name {name!r} is unknown; expected one of {sorted(STUDIES)}")
    return name


def default_config(name: str, *, quick: bool = False) -> dict[str, Any]:
    """The shipped default configuration of study ``name`` as a nested dict.

    With ``quick=True`` the file's ``[quick]`` table is merged in. The returned dict has no
    ``quick`` table.
    """
    name = _check_name(name)
    text = (
        resources.files("uqdyn.study")
        .joinpath("configs")
        .joinpath(f"{name}.toml")
        .read_text("utf-8")
    )
    data = tomllib.loads(text)
    quick_table = data.pop("quick", {})
    if quick:
        _merge(data, quick_table, valid=_flatten(data), source="the [quick] table")
    return data


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def valid_keys(name: str) -> list[str]:
    """Every dotted key that a configuration of study ``name`` may set, sorted."""
    return sorted(_flatten(default_config(name)))


def _type_name(value: Any) -> str:
    return "list" if isinstance(value, list) else type(value).__name__


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _plain_number(value: Any, key: str) -> Any:
    """A NumPy or 0-d scalar as a Python ``int`` / ``float``; anything else unchanged."""
    if is_integer_scalar(value):
        return as_int(value, key)
    if is_real_scalar(value):
        return as_float(value, key, finite=False)
    return value


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """``value`` checked against the type of ``default``; ints become floats where needed.

    NumPy scalars and 0-d arrays or tensors where a number is expected become Python numbers.
    """
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = is_integer_scalar(value)
        if ok:
            value = as_int(value, key)
    elif isinstance(default, float):
        ok = is_real_scalar(value)
        if ok:
            value = as_float(value, key, finite=False)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
        if ok:
            value = [_plain_number(v, key) for v in value]
    else:  # pragma: no cover - TOML has no other scalar types in our defaults
        ok = True
    if not ok:
        raise ValueError(
            f"{source}: {key} = {value!r} is {_article(_type_name(value))}; expected "
            f"{_article(_type_name(default))} like the default {default!r}"
        )
    return value


def _merge(
    target: dict[str, Any], overrides: Mapping[str, Any], *, valid: Mapping[str, Any], source: str
) -> None:
    """Merge nested or dotted ``overrides`` into ``target`` in place, checking keys and types."""
    for dotted, value in _flatten(overrides).items():
        if dotted not in valid:
            raise ValueError(
                f"{source}: unknown configuration key {dotted!r}; valid keys are: "
                + ", ".join(sorted(valid))
            )
        value = _coerce(dotted, value, valid[dotted], source)
        parts = dotted.split(".")
        node = target
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a ``key=value`` override; the value is read as TOML, else taken as a string.

    >>> parse_override("model.cnp.steps=200")
    ('model.cnp.steps', 200)
    >>> parse_override("models=['gp', 'cnp']")
    ('models', ['gp', 'cnp'])
    """
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"override {text!r}; expected KEY=VALUE, e.g. {OVERRIDE_EXAMPLE}")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ValueError(f"override {text!r} has an empty key; expected KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


@dataclass
class StudyConfig:
    """A complete, validated study configuration.

    Attributes
    ----------
    name:
        The study (a key of :data:`STUDIES`).
    seed:
        Seed of every random draw; the same seed gives the same scores.
    device:
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads:
        torch CPU threads while the study runs (``0``: leave torch's setting); the models of
        the studies are small, and one thread avoids oversubscribing shared CPUs.
    out:
        Output directory of :func:`uqdyn.study.run`.
    models:
        Model names to fit, in report order.
    quick:
        Whether the ``[quick]`` settings were applied.
    overwrite:
        Replace an existing non-empty ``out`` (atomically, at the end of the run).
    progress:
        Show progress bars.
    params:
        The remaining nested tables (``data``, ``models.<name>``, ``evaluation``).
    """

    name: str
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    out: str = "study-out"
    models: list[str] = field(default_factory=list)
    quick: bool = False
    overwrite: bool = False
    progress: bool = True
    params: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        """Value of a dotted key in :attr:`params`, e.g. ``cfg.get("data.n_train")``."""
        node: Any = self.params
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"configuration key {key!r} is missing from study {self.name!r}")
            node = node[part]
        return node

    def section(self, key: str) -> dict[str, Any]:
        """A copy of the table at dotted ``key`` (e.g. ``"models.cnp"``)."""
        value = self.get(key)
        if not isinstance(value, Mapping):
            raise KeyError(f"configuration key {key!r} is not a table")
        return dict(value)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as one nested dict (the TOML layout)."""
        out = copy.deepcopy(self.params)
        out.update(
            {
                "name": self.name,
                "seed": self.seed,
                "device": self.device,
                "threads": self.threads,
                "out": self.out,
                "models": list(self.models),
            }
        )
        return out

    def to_toml(self) -> str:
        """The configuration as TOML text (written next to the report)."""
        return _to_toml(self.to_dict())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _to_toml(table: Mapping[str, Any], prefix: str = "") -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, Mapping)]
    for key, value in table.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            body = _to_toml(value, name + ".")
            lines.append(f"\n[{name}]\n{body}" if body.strip() else f"\n[{name}]")
    return "\n".join(lines)


def load_config(
    name: str,
    *,
    quick: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    seed: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> StudyConfig:
    """Build the configuration of study ``name``: defaults, quick, file, overrides, arguments.

    Parameters
    ----------
    name:
        One of :data:`STUDIES`.
    quick:
        Apply the ``[quick]`` table of the defaults.
    config_file:
        A TOML file with keys to change (nested tables or dotted keys).
    overrides:
        ``{dotted_key: value}`` or ``["key=value", ...]``, applied after the file.
    seed, device, threads, out:
        Override ``seed``, ``device``, ``threads``, ``out`` when not ``None``.
    overwrite, progress:
        Stored on the config.

    Raises
    ------
    ValueError
        Unknown study name (listing the valid ones), unknown key (listing the valid keys),
        a value of the wrong type or out of its range (naming the full dotted key, e.g.
        ``data.n_test``), an unknown model name, or a data file that does not exist. Every
        value is checked here, before any simulation or training.
    """
    data = default_config(name, quick=quick)
    valid = _flatten(data)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(
                f"config_file={str(config_file)!r} does not exist; expected a TOML file"
            )
        try:
            file_data = tomllib.loads(path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config_file={str(config_file)!r} is not valid TOML: {err}") from None
        file_name = file_data.pop("name", name)
        if file_name != name:
            raise ValueError(
                f"config_file={str(config_file)!r} is for study {file_name!r}; expected {name!r}"
            )
        _merge(data, file_data, valid=valid, source=f"config file {path.name}")
    if overrides:
        if isinstance(overrides, Mapping):
            pairs = dict(overrides)
        elif isinstance(overrides, Sequence) and not isinstance(overrides, str):
            pairs = dict(parse_override(o) for o in overrides)
        else:
            raise TypeError(
                f"overrides is a {type(overrides).__name__}; expected a mapping or a list of "
                "'key=value' strings"
            )
        _merge(data, pairs, valid=valid, source="override")
    if seed is not None:
        data["seed"] = _coerce("seed", seed, 0, "argument")
    if device is not None:
        data["device"] = device
    if threads is not None:
        data["threads"] = _coerce("threads", threads, 0, "argument")
    if out is not None:
        data["out"] = os.fspath(out)
    models_table = data.get("model", {})
    known_models = sorted(models_table) if isinstance(models_table, Mapping) else []
    models = list(data["models"])
    for m in models:
        if m not in known_models:
            raise ValueError(
                f"models contains {m!r}, unknown for study {name!r}; expected names from "
                f"{known_models}"
            )
    if not models:
        raise ValueError("models is empty; expected at least one model name")
    flat = _flatten(data)
    check_values(name, flat)
    check_data_source(flat)
    params = {k: v for k, v in data.items() if k not in _TOP_LEVEL}
    return StudyConfig(
        name=name,
        seed=int(data["seed"]),
        device=str(data["device"]),
        threads=int(data["threads"]),
        out=str(data["out"]),
        models=models,
        quick=quick,
        overwrite=overwrite,
        progress=progress,
        params=params,
    )
