"""Progress of long work (import, rebuild, repair, recovery, full scans), shown on a terminal.

Library code reports with :func:`report` (stage, done, total); nothing is shown unless the
caller installed a reporter with :func:`reporting`, as the CLI does when stderr is a terminal
and neither ``--json`` nor ``--quiet`` was given. :class:`TerminalProgress` rewrites one line on
stderr at most every 0.2 s with the count, the rate and, when the total is known, the time
left; it never writes to stdout. Under ``NO_COLOR`` or ``TERM=dumb`` it uses no escape sequence
(a carriage return and padding only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TextIO


class Reporter(Protocol):
    def update(self, stage: str, done: int, total: int | None) -> None: ...
    def finish(self) -> None: ...


_current: ContextVar[Reporter | None] = ContextVar("ledger_progress", default=None)


def report(stage: str, done: int, total: int | None = None) -> None:
    """How far ``stage`` has got: ``done`` of ``total`` (None: unknown). A no-op by default."""
    reporter = _current.get()
    if reporter is not None:
        reporter.update(stage, done, total)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Show the reports made inside the block with ``reporter`` (None: show nothing)."""
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)
        if reporter is not None:
            reporter.finish()


class TerminalProgress:
    """One line on ``stream``, rewritten in place: ``stage: done/total, rate/s, time left``."""

    INTERVAL = 0.2

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.plain = "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb"
        self._stage: str | None = None
        self._started = 0.0
        self._shown_at = 0.0
        self._width = 0

    def update(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if stage != self._stage:
            if self._stage is not None:
                self._end_line()
            self._stage, self._started, self._shown_at = stage, now, 0.0
        final = total is not None and done >= total
        if not final and now - self._shown_at < self.INTERVAL:
            return
        self._shown_at = now
        self._write(_line(stage, done, total, now - self._started))

    def finish(self) -> None:
        if self._stage is not None:
            self._end_line()
            self._stage = None

    def _write(self, text: str) -> None:
        shown = "\r" + text.ljust(self._width) if self.plain else "\r" + text + "\x1b[K"
        self._width = max(self._width, len(text))
        self.stream.write(shown)
        self.stream.flush()

    def _end_line(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
        self._width = 0


def _line(stage: str, done: int, total: int | None, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total is None:
        return f"{stage}: {done:,} ({rate:,.0f}/s)"
    left = (total - done) / rate if rate > 0 else 0.0
    return f"{stage}: {done:,}/{total:,} ({rate:,.0f}/s, {_duration(left)} left)"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
