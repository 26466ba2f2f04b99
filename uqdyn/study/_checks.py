"""Checks of every study configuration value, run when a configuration is built.

:func:`check_values` is called by :func:`uqdyn.study.load_config` after the defaults, the
``[quick]`` table, a configuration file and the overrides are merged, so that a bad value
(``data.n_test = 0``, ``model.cnp.lr = -1``, an unknown ``architecture``) fails at once, before
any simulation or training, with a message naming the full dotted key. Every key of every
shipped configuration has a rule here (the tests check it). Where a number is expected, NumPy
scalars and 0-d arrays or tensors pass as Python numbers do (the checks of
:mod:`uqdyn._checks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from uqdyn._checks import as_float, as_int, describe_type

__all__ = ["check_values", "check_data_source", "rule_for"]

#: A rule returns ``None`` when the value is fine, else what was expected ("an int >= 1").
Rule = Callable[[Any], "str | None"]


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _integer(value: Any) -> int | None:
    """``value`` as an ``int`` when it is an integer scalar (not a bool), else ``None``."""
    try:
        return as_int(value, "value")
    except TypeError:
        return None


def _real(value: Any) -> float | None:
    """``value`` as a ``float`` when it is a real scalar (not a bool), else ``None``."""
    try:
        return as_float(value, "value", finite=False)
    except TypeError:
        return None


def _int_at_least(low: int) -> Rule:
    def rule(value: Any) -> str | None:
        number = _integer(value)
        ok = number is not None and number >= low
        return None if ok else f"an int >= {low}"

    return rule


def _number(low: float, *, strict: bool, high: float | None = None, closed: bool = False) -> Rule:
    """A finite float ``> low`` (``strict``) or ``>= low``, and ``< high`` (``<= high`` if closed)."""

    def describe() -> str:
        text = f"a float {'>' if strict else '>='} {low:g}"
        if high is not None:
            text += f" and {'<=' if closed else '<'} {high:g}"
        return text

    def rule(value: Any) -> str | None:
        v = _real(value)
        if v is None:
            return describe()
        ok = math.isfinite(v) and (v > low if strict else v >= low)
        if ok and high is not None:
            ok = v <= high if closed else v < high
        return None if ok else describe()

    return rule


def _choice(*options: str) -> Rule:
    def rule(value: Any) -> str | None:
        if value in options:
            return None
        return "one of " + ", ".join(repr(o) for o in options)

    return rule


def _text(*, empty: bool) -> Rule:
    def rule(value: Any) -> str | None:
        ok = isinstance(value, str) and (empty or bool(value.strip()))
        return None if ok else ("a string" if empty else "a non-empty string")

    return rule


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "a bool (true or false)"


def _levels(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and bool(value)
        and all((p := _real(v)) is not None and 0.0 < p < 1.0 for v in value)
    )
    return None if ok else "a non-empty list of probabilities strictly between 0 and 1"


def _range(low: float | None = None, *, strict: bool = False) -> Rule:
    """``[lo, hi]`` with ``lo <= hi`` (and ``lo > low`` / ``>= low`` when ``low`` is given)."""

    def rule(value: Any) -> str | None:
        bound = "" if low is None else f", lo {'>' if strict else '>='} {low:g}"
        expected = f"a list [lo, hi] of two numbers with lo <= hi{bound}"
        if not (isinstance(value, list) and len(value) == 2):
            return expected
        lo, hi = _real(value[0]), _real(value[1])
        if lo is None or hi is None:
            return expected
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            return expected
        if low is not None and not (lo > low if strict else lo >= low):
            return expected
        return None

    return rule


def _kernel(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return "a kernel name (e.g. 'rbf') or a non-empty list of kernel names"


def _leads(value: Any) -> str | None:
    expected = "a non-empty list of lead steps (ints >= 1) or time offsets ('6h', '1D')"
    if not isinstance(value, list) or not value:
        return expected
    kinds = set()
    for v in value:
        step = _integer(v)
        if step is not None:
            if step < 1:
                return expected
            kinds.add("step")
        elif isinstance(v, str) and v.strip():
            kinds.add("step" if v.strip().isdigit() else "offset")
        else:
            return expected
    if len(kinds) > 1:
        return expected + ", all of one kind"
    return None


def _split(value: Any) -> str | None:
    expected = "three positive fractions (train, validation, test) summing to 1"
    if not isinstance(value, list) or len(value) != 3:
        return expected
    fractions = [_real(v) for v in value]
    if any(f is None or not f > 0 for f in fractions):
        return expected
    return None if abs(sum(f for f in fractions if f is not None) - 1.0) <= 1e-6 else expected


def _split_dates(value: Any) -> str | None:
    expected = "[] or two increasing dates ['YYYY-MM-DD', 'YYYY-MM-DD']"
    if not isinstance(value, list) or len(value) not in (0, 2):
        return expected
    if not value:
        return None
    numbers = [_real(v) for v in value]
    if not all(isinstance(v, str) or n is not None for v, n in zip(value, numbers, strict=True)):
        return expected
    first_n, second_n = numbers
    if first_n is not None and second_n is not None:  # numeric time coordinates
        return None if first_n < second_n else expected
    import pandas as pd

    try:
        first, second = (pd.Timestamp(str(v)) for v in value)
    except (ValueError, TypeError):
        return expected
    return None if first < second else expected


def _span(value: Any) -> str | None:
    if not isinstance(value, str):
        return "a time span string such as '30D' (or '' for none)"
    if not value.strip():
        return None
    import pandas as pd

    try:
        ok = pd.Timedelta(value) > pd.Timedelta(0)
    except (ValueError, TypeError):
        ok = False
    return None if ok else "a positive time span such as '30D' or '12h' (or '' for none)"


def _candidates(value: Any) -> str | None:
    from uqdyn.calibration.selection import CANDIDATES

    ok = isinstance(value, list) and bool(value) and all(v in CANDIDATES for v in value)
    return None if ok else "a non-empty list of names from " + ", ".join(CANDIDATES)


def _source(value: Any) -> str | None:
    if not isinstance(value, str):
        return "a file path or 'statsmodels:elnino' / 'statsmodels:co2'"
    return None  # emptiness and existence are checked by check_data_source


_POSITIVE = _int_at_least(1)
_NONNEGATIVE = _int_at_least(0)
_POSITIVE_FLOAT = _number(0.0, strict=True)

#: Rules of the keys by their full dotted name.
_BY_KEY: dict[str, Rule] = {
    "seed": _NONNEGATIVE,
    "threads": _NONNEGATIVE,
    "out": _text(empty=False),
    "device": _choice("auto", "cpu", "cuda"),
    # data of the simulated studies
    "data.n_train": _POSITIVE,
    "data.n_valid": _POSITIVE,
    "data.n_test": _POSITIVE,
    "data.size": _int_at_least(4),
    "data.dim": _int_at_least(4),
    "data.dt": _POSITIVE_FLOAT,
    "data.step_size": _POSITIVE_FLOAT,
    "data.snapshot_time": _POSITIVE_FLOAT,
    "data.noise_std": _POSITIVE_FLOAT,
    "data.context_frames": _int_at_least(2),
    "data.lead_frames": _POSITIVE,
    "data.context_steps": _int_at_least(2),
    "data.lead_steps": _POSITIVE,
    "data.spinup_steps": _NONNEGATIVE,
    "data.drop": _number(0.0, strict=False, high=1.0),
    "data.velocity_range": _range(),
    "data.diffusion_range": _range(0.0),
    "data.omega0_range": _range(0.0, strict=True),
    "data.alpha_range": _range(0.0),
    "data.forcing_range": _range(),
    "data.coriolis_range": _range(),
    # data of the forecast studies
    "data.source": _source,
    "data.var": _text(empty=True),
    "data.time_dim": _text(empty=False),
    "data.duplicates": _choice("raise", "drop"),
    "data.leads": _leads,
    "data.context": _POSITIVE,
    "data.context_span": _span,
    "data.stride": _POSITIVE,
    "data.split": _split,
    "data.split_dates": _split_dates,
    "data.season": _choice("auto", "month", "dayofyear", "hour", "none"),
    # the multi-environment study
    "data.system": _choice("lotka_volterra", "gray_scott"),
    "training.members": _POSITIVE,
    "training.steps": _POSITIVE,
    "training.lr": _POSITIVE_FLOAT,
    "training.adapt_steps": _POSITIVE,
    "training.adapt_lr": _POSITIVE_FLOAT,
    "training.adapt_lr_network": _POSITIVE_FLOAT,
    "training.hidden": _POSITIVE,
}

#: Rules of the keys of ``[model.*]`` and ``[evaluation]`` by their last part.
_BY_LEAF: dict[str, Rule] = {
    "steps": _POSITIVE,
    "batch_size": _POSITIVE,
    "width": _POSITIVE,
    "depth": _POSITIVE,
    "kernel_size": _POSITIVE,
    "members": _POSITIVE,
    "particles": _POSITIVE,
    "hidden": _POSITIVE,
    "epochs": _POSITIVE,
    "steps_per_epoch": _POSITIVE,
    "context_points": _POSITIVE,
    "target_points": _POSITIVE,
    "base_channels": _POSITIVE,
    "max_points": _POSITIVE,
    "val_every": _POSITIVE,
    "distance_bins": _POSITIVE,
    "lr": _POSITIVE_FLOAT,
    "lr_g": _POSITIVE_FLOAT,
    "length": _POSITIVE_FLOAT,
    "score_weight": _number(0.0, strict=False),
    "consistency_weight": _number(0.0, strict=False),
    "ess_fraction": _number(0.0, strict=True, high=1.0, closed=True),
    "architecture": _choice("unet", "resnet", "cnn"),
    "pooling": _choice("pixel", "domain"),
    "kernel": _kernel,
    "optimizer": _choice("lbfgs", "adam"),
    "center": _choice("last", "mean", "none"),
    "scale": _choice("global", "window", "climatology", "none"),
    "season_features": _flag,
    "model": _choice("cnp", "attentive"),
    "scheduler": _choice("cosine", "none"),
    "context_dim": _POSITIVE,
    "regularization": _choice("l1", "l2"),
    "laplace_draws": _NONNEGATIVE,
    # evaluation
    "coverage_levels": _levels,
    "quantiles": _levels,
    "rank_members": _POSITIVE,
    "pit_bins": _POSITIVE,
    "spread_bins": _POSITIVE,
    "example_cases": _NONNEGATIVE,
    "isotonic_nodes": _int_at_least(2),
    "figures": _flag,
    "n_boot": _POSITIVE,
    "ci_level": _number(0.0, strict=True, high=1.0),
    "bootstrap_block": _NONNEGATIVE,
    "selection_candidates": _candidates,
}


def rule_for(key: str) -> Rule | None:
    """The rule of dotted ``key`` (``None`` when there is none)."""
    if key in _BY_KEY:
        return _BY_KEY[key]
    if key.startswith(("model.", "evaluation.")):
        return _BY_LEAF.get(key.rsplit(".", 1)[-1])
    return None


def _show(value: Any) -> str:
    return f"{value!r} ({'a list' if isinstance(value, list) else _article(describe_type(value))})"


def check_values(study: str, flat: Mapping[str, Any]) -> None:
    """Check every ``{dotted key: value}`` of a merged configuration of ``study``.

    Raises
    ------
    ValueError
        Naming the first bad key, its value and what was expected, e.g.
        ``data.n_test = 0 (an int); expected an int >= 1``.
    """
    for key, value in flat.items():
        if key in ("name", "models"):
            continue  # checked by load_config (study and model names)
        rule = rule_for(key)
        if rule is None:
            raise ValueError(
                f"configuration key {key!r} of study {study!r} has no value check; expected "
                "every key to have one (uqdyn.study._checks)"
            )
        expected = rule(value)
        if expected is not None:
            raise ValueError(f"{key} = {_show(value)}; expected {expected}")
    _cross_checks(study, flat)


def _cross_checks(study: str, flat: Mapping[str, Any]) -> None:
    """Checks that involve several keys (only for the models that run)."""
    size, models = flat.get("data.size"), flat.get("models", [])
    if "convcnp" in models and "model.convcnp.architecture" in flat and size is not None:
        depth = int(flat["model.convcnp.depth"])
        if flat["model.convcnp.architecture"] == "unet" and int(size) % 2**depth:
            raise ValueError(
                f"model.convcnp.depth = {depth} with data.size = {size}; expected a U-Net "
                "depth d with data.size divisible by 2**d (or model.convcnp.architecture = "
                "'resnet')"
            )


def check_data_source(flat: Mapping[str, Any]) -> None:
    """``data.source`` of a forecast study: a built-in series or a file that exists."""
    if "data.source" not in flat:
        return
    source = str(flat["data.source"])
    if source.startswith("statsmodels:"):
        builtin = ("statsmodels:elnino", "statsmodels:co2")
        if source not in builtin:
            raise ValueError(f"data.source = {source!r}; expected a file or one of {builtin}")
        return
    if not source.strip():
        raise ValueError(
            "data.source is empty; expected a data file: uqdyn study forecast --data FILE "
            "--var NAME (CSV, netCDF or zarr)"
        )
    from pathlib import Path

    if not Path(source).exists():
        raise ValueError(
            f"data.source = {source!r}: no such file or directory; expected an existing CSV, "
            "netCDF or zarr file"
        )
