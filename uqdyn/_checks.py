"""Checks of scalar numeric arguments shared by the whole library.

A scalar argument may arrive as a Python number, a NumPy scalar (``np.int64(3)``,
``np.float32(0.5)``), a 0-d NumPy array (``np.array(0.05)``) or a 0-d torch tensor
(``torch.tensor(0.05)``). :func:`as_int` and :func:`as_float` accept all of these, return a
plain Python ``int`` / ``float`` and refuse everything else with a ``TypeError`` that names
the argument, the value and its type (``numpy.ndarray of shape (3,)``):

>>> import numpy as np, torch
>>> as_int(np.int64(40), "dim", minimum=4)
40
>>> as_float(torch.tensor(0.05), "dt", positive=True)
0.05000000074505806
>>> as_int(3.0, "n")
Traceback (most recent call last):
...
TypeError: n=3.0 is a float; expected an int

Booleans are not numbers here, and an integer-valued float is not an int.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["as_float", "as_int", "describe_type", "is_integer_scalar", "is_real_scalar"]

_REPR_LIMIT = 80


def describe_type(value: Any) -> str:
    """Readable type of ``value`` for error messages.

    Builtins by their name (``float``), other types with their module
    (``numpy.float32``, ``torch.Tensor``); arrays and tensors add shape and dtype.

    >>> import numpy as np
    >>> describe_type(np.zeros(3))
    'numpy.ndarray of shape (3,) and dtype float64'
    """
    kind = type(value)
    module = kind.__module__
    if module == "builtins":
        text = kind.__qualname__
    else:
        top = module.split(".")[0]
        # torch.Tensor is defined in torch._tensor, numpy scalars in numpy._core...: name the
        # public package.
        text = f"{top}.{kind.__qualname__}" if top in ("numpy", "torch") else kind.__qualname__
    if isinstance(value, (np.ndarray, torch.Tensor)):
        dtype = str(value.dtype).removeprefix("torch.")
        text += f" of shape {tuple(value.shape)} and dtype {dtype}"
    return text


def _short_repr(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _zero_d_kind(value: Any) -> str | None:
    """NumPy dtype kind (``'b'``, ``'i'``, ``'u'``, ``'f'``, ``'c'``...) of a scalar-like value.

    ``None`` when ``value`` is not a NumPy scalar, 0-d array or 0-d tensor.
    """
    if isinstance(value, np.generic):
        return value.dtype.kind
    if isinstance(value, np.ndarray):
        return value.dtype.kind if value.ndim == 0 else None
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            return None
        if value.dtype == torch.bool:
            return "b"
        if value.dtype.is_complex:
            return "c"
        return "f" if value.dtype.is_floating_point else "i"
    return None


def is_integer_scalar(value: Any) -> bool:
    """Whether :func:`as_int` accepts the type of ``value`` (its range is not checked)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return _zero_d_kind(value) in ("i", "u")


def is_real_scalar(value: Any) -> bool:
    """Whether :func:`as_float` accepts the type of ``value`` (its range is not checked)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return _zero_d_kind(value) in ("i", "u", "f")


def _item(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().item()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item()
    return value


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python ``int``, checked against ``[minimum, maximum]``.

    Parameters
    ----------
    value : int, numpy integer, 0-d integer array or 0-d integer tensor
    name : str
        The argument's name, used in error messages.
    minimum, maximum : int, optional
        Inclusive bounds.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        If ``value`` is not an integer scalar (bools and floats, even integer-valued ones,
        are refused).
    ValueError
        If it lies outside the bounds.
    """
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    expected = "an int" + (" " + " and ".join(bounds) if bounds else "")
    if not is_integer_scalar(value):
        raise TypeError(
            f"{name}={_short_repr(value)} is a {describe_type(value)}; expected {expected}"
        )
    number = int(_item(value))
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name}={_short_repr(value)}; expected {expected}")
    return number


def as_float(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a Python ``float``, optionally required finite, ``> 0`` or ``>= 0``.

    Parameters
    ----------
    value : int, float, numpy integer/floating scalar, 0-d real array or 0-d real tensor
    name : str
        The argument's name, used in error messages.
    positive : bool
        Require ``value > 0``.
    nonnegative : bool
        Require ``value >= 0``.
    finite : bool
        Require a finite value (default ``True``); with ``False``, ``inf`` passes (``nan``
        still fails a sign requirement).

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``value`` is not a real scalar (bools, complex numbers, strings, arrays or
        tensors with more than one element are refused).
    ValueError
        If it is not finite (when required) or has the wrong sign.
    """
    expected = "a finite float" if finite else "a float"
    if positive:
        expected += " > 0"
    elif nonnegative:
        expected += " >= 0"
    if not is_real_scalar(value):
        raise TypeError(
            f"{name}={_short_repr(value)} is a {describe_type(value)}; expected {expected}"
        )
    number = float(_item(value))
    bad = (finite and not math.isfinite(number)) or (
        (positive and not number > 0) or (nonnegative and not number >= 0)
    )
    if bad:
        raise ValueError(f"{name}={_short_repr(value)}; expected {expected}")
    return number
