"""Progress reports: a tqdm bar on a terminal, plain timestamped lines in a log.

Every long stage of uqdyn (a model's training, a study's evaluation) reports through
:class:`Progress`. On a terminal it is a tqdm bar; when stderr is a file or a pipe (a log, a
batch job, CI), it writes one plain line at the start, about every tenth of the work (at
most one every ``min_interval`` seconds) and at the end, so logs hold no carriage-return
bars.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["Progress", "stage", "is_terminal"]


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def stage(message: str, *, stream: IO[str] | None = None) -> None:
    """Write one progress line ``[uqdyn hh:mm:ss] message`` to ``stream`` (default stderr)."""
    stream = sys.stderr if stream is None else stream
    print(f"[uqdyn {time.strftime('%H:%M:%S')}] {message}", file=stream, flush=True)


class Progress:
    """Progress of ``total`` units of work named ``desc``; a no-op when not ``enabled``.

    ``update(n)`` advances by ``n``; ``set_postfix(values)`` sets the figures shown (loss,
    validation scores); ``close()`` ends it (also as a context manager). ``initial`` is
    the work already done (a resumed fit).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        initial: int = 0,
        stream: IO[str] | None = None,
        min_interval: float = 10.0,
    ) -> None:
        self.total, self.desc, self.enabled = int(total), desc, bool(enabled)
        self.done = int(initial)
        self.stream = sys.stderr if stream is None else stream
        self.min_interval = float(min_interval)
        self.postfix: dict[str, str] = {}
        self.started = time.perf_counter()
        self._last_line = -float("inf")
        self._next_fraction = 0.1
        self._bar: Any = None
        if not self.enabled:
            return
        if is_terminal(self.stream):
            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=desc,
                dynamic_ncols=True,
                file=self.stream,
                leave=False,
            )
        else:
            self._line("started")

    def _line(self, what: str) -> None:
        figures = " ".join(f"{k} {v}" for k, v in self.postfix.items())
        seconds = time.perf_counter() - self.started
        stage(
            f"{self.desc}: {what} {self.done}/{self.total}"
            + (f", {figures}" if figures else "")
            + f", {seconds:.1f} s",
            stream=self.stream,
        )
        self._last_line = time.perf_counter()

    def set_postfix(self, values: dict[str, str]) -> None:
        """Show these figures (strings) next to the count."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(self.postfix)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self.done += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        fraction = self.done / max(self.total, 1)
        if fraction >= self._next_fraction and self.done < self.total:
            while self._next_fraction <= fraction:
                self._next_fraction += 0.1
            if time.perf_counter() - self._last_line >= self.min_interval:
                self._line("step")

    def close(self) -> None:
        """End the report (a final line in a log)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last_line != -float("inf") or self.done:
            self._line("done")
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
