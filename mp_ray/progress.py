"""Progress of long commands on stderr: a live bar on a terminal, else a plain line at most
every few seconds (job logs, CI, pipes), so stdout keeps only results.

    with Progress("datamodels", total=955, unit="targets") as progress:
        run(..., on_progress=progress.advance)

prints, when stderr is not a terminal (a Ray job's log, a pod's, CI, a pipe), lines such as
``datamodels: 120/955 targets, 14.2 targets/s, ETA 0:00:59`` and a last line when done.
Two environment variables tune it: ``MP_RAY_PROGRESS_INTERVAL_S`` (seconds between two plain
lines, default 5) and ``MP_RAY_PROGRESS=lines`` (plain lines on a terminal too, say for a
``kubectl logs -f`` of a pod given a TTY).
Library code never prints: it takes a callback, and the command line passes
:meth:`Progress.advance` (or a function calling :meth:`Progress.update`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from rich import progress as rich_progress
from rich.console import Console

from mp_ray.cli_support import console as stderr_console
from mp_ray.errors import InputError

PLAIN_INTERVAL_S = 5.0
INTERVAL_ENV = "MP_RAY_PROGRESS_INTERVAL_S"
MODE_ENV = "MP_RAY_PROGRESS"  # "lines": plain lines even on a terminal


def plain_interval() -> float:
    """Seconds between two plain lines: ``MP_RAY_PROGRESS_INTERVAL_S``, else 5."""
    value = os.environ.get(INTERVAL_ENV, "")
    if not value:
        return PLAIN_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN too
        raise InputError(f"{INTERVAL_ENV}={value!r}: give a number of seconds, 0 or more")
    return seconds


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _number(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


class Progress:
    """Units of work done out of ``total`` (None when unknown), their rate and the time left.

    ``enabled=False`` shows nothing; ``interval`` is the least time between two plain lines
    (None: :func:`plain_interval`); ``clock`` gives seconds (monotonic)."""

    def __init__(
        self,
        label: str,
        total: float | None,
        unit: str,
        *,
        enabled: bool = True,
        console: Console | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.completed, self.note = 0.0, ""
        self.console = console or stderr_console
        self.enabled, self.clock = enabled, clock
        self.interval = plain_interval() if interval is None else interval
        self._skipped = 0.0  # done before this run (a resumed one): not in the rate
        self._start = self._last_line = clock()
        self._printed: str | None = None
        self._finished = False
        self._bar: rich_progress.Progress | None = None
        self._task: rich_progress.TaskID | None = None

    def __enter__(self) -> Progress:
        self._start = self._last_line = self.clock()
        if self.enabled and self.console.is_terminal and os.environ.get(MODE_ENV) != "lines":
            self._bar = rich_progress.Progress(
                rich_progress.TextColumn(self.label),
                rich_progress.BarColumn(),
                rich_progress.TextColumn("{task.description}"),
                rich_progress.TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.status(), total=self.total)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._finished = True
        failed_at_once = error is not None and not self.completed  # the error says it all
        if self._bar is not None and self._task is not None:
            if failed_at_once:
                self._bar.update(self._task, visible=False)
            else:
                self._bar.update(self._task, description=self.status())
            self._bar.stop()
        elif self.enabled and not failed_at_once and self._printed != self.line():
            self.console.print(self.line(), markup=False, highlight=False)

    def advance(self, amount: float = 1, note: str | None = None) -> None:
        """``amount`` more units done."""
        self.update(self.completed + amount, note)

    def update(
        self,
        completed: float,
        note: str | None = None,
        skipped: float = 0,
        total: float | None = None,
    ) -> None:
        """``completed`` units done in all, of which ``skipped`` were done before this run
        (they do not count in the rate); ``note`` is shown after the counts; ``total``, when
        given, replaces the total."""
        self.completed = completed
        if total is not None:
            self.total = total
        self._skipped = max(self._skipped, skipped)
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task, completed=completed, total=self.total, description=self.status()
            )
        elif self.clock() - self._last_line >= self.interval:
            self._last_line = self.clock()
            self._printed = self.line()
            self.console.print(self._printed, markup=False, highlight=False)

    def status(self) -> str:
        """Counts, rate, time left (or taken, once finished) and the note."""
        elapsed = self.clock() - self._start
        rate = (self.completed - self._skipped) / elapsed if elapsed > 0 else 0.0
        count = _number(self.completed) + (f"/{_number(self.total)}" if self.total else "")
        parts = [f"{count} {self.unit}", f"{_number(rate)} {self.unit}/s"]
        if self.total and self.completed >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        elif self._finished:
            parts.append(f"stopped after {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.completed) / rate)}")
        return ", ".join(parts + ([self.note] if self.note else []))

    def line(self) -> str:
        """The plain line: ``label: status``."""
        return f"{self.label}: {self.status()}"
