"""Interruptions (Ctrl-C, SIGTERM) that no library code can swallow.

``uqdyn study`` turns SIGINT and SIGTERM into exceptions raised in the main thread
(:func:`raise_interruption`). Such an exception can be lost when it is raised inside code
that clears every error (C extensions calling back into Python during an import, for
instance); the interruption is therefore also remembered, and :func:`checkpoint`, called at
every stage of a study (each model, each per-case step, each output), raises it again.
"""

from __future__ import annotations

__all__ = ["raise_interruption", "checkpoint", "clear"]

_pending: list[type[BaseException]] = []


def raise_interruption(kind: type[BaseException]) -> None:
    """Remember the interruption ``kind`` and raise it."""
    if kind not in _pending:
        _pending.append(kind)
    raise kind()


def checkpoint() -> None:
    """Raise a remembered interruption again (nothing when there is none)."""
    if _pending:
        raise _pending[0]()


def clear() -> None:
    """Forget remembered interruptions (at the end of a command)."""
    _pending.clear()
