"""Plain progress lines: their format and how often they are printed (no Ray, no terminal)."""

from __future__ import annotations

import contextlib
import io

import pytest
from rich.console import Console

from mp_ray.errors import InputError
from mp_ray.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(**options) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, width=200, force_terminal=False)
    return (
        Progress("datamodels", 955, "targets", console=console, clock=clock, **options),
        out,
        clock,
    )


def test_plain_lines_are_throttled_and_name_counts_rate_and_eta():
    progress, out, clock = plain(interval=5.0)
    with progress:
        for _ in range(10):  # 10 updates within 4.5 s: no line yet
            clock.now += 0.45
            progress.advance(12)
        assert out.getvalue() == ""
        clock.now = 8.45
        progress.advance(2)  # 122 targets in 8.45 s
        assert out.getvalue() == "datamodels: 122/955 targets, 14.4 targets/s, ETA 0:00:58\n"
        clock.now = 9.0
        progress.advance(10)  # within the interval: not printed
        clock.now = 10.0
        progress.update(955)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == "datamodels: 955/955 targets, 95.5 targets/s, done in 0:00:10"


def test_a_run_that_stops_early_says_so_with_its_note():
    progress, out, clock = plain()
    with progress:
        clock.now = 2.0
        progress.update(40, note="converged")
    assert out.getvalue() == (
        "datamodels: 40/955 targets, 20 targets/s, stopped after 0:00:02, converged\n"
    )


def test_skipped_units_are_not_in_the_rate_and_disabled_prints_nothing():
    progress, out, clock = plain(interval=1.0)
    with progress:
        clock.now = 2.0
        progress.update(905, skipped=900)  # resumed at 900: 5 done in 2 s
    assert "905/955 targets, 2.5 targets/s, stopped after 0:00:02" in out.getvalue()
    progress, out, clock = plain(enabled=False)
    with progress:
        clock.now = 10.0
        progress.advance(955)
    assert out.getvalue() == ""


def test_a_failure_before_any_work_leaves_the_error_alone():
    progress, out, clock = plain()
    with contextlib.suppress(ValueError), progress:
        raise ValueError("refused before the first unit")
    assert out.getvalue() == ""
    progress, out, clock = plain()
    with contextlib.suppress(KeyboardInterrupt), progress:
        clock.now = 2.0
        progress.advance(40)
        raise KeyboardInterrupt
    assert out.getvalue() == "datamodels: 40/955 targets, 20 targets/s, stopped after 0:00:02\n"


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MP_RAY_PROGRESS_INTERVAL_S", "30")
    progress, out, clock = plain()
    assert progress.interval == 30.0
    with progress:
        clock.now = 20.0
        progress.advance(100)  # within 30 s: no line yet
        assert out.getvalue() == ""
        clock.now = 31.0
        progress.advance(100)
        assert out.getvalue().startswith("datamodels: 200/955 targets")
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("MP_RAY_PROGRESS_INTERVAL_S", bad)
        with pytest.raises(InputError, match="MP_RAY_PROGRESS_INTERVAL_S"):
            plain()


def test_lines_mode_prints_plain_lines_on_a_terminal(monkeypatch):
    out, clock = io.StringIO(), Clock()
    terminal = Console(file=out, width=200, force_terminal=True)
    monkeypatch.setenv("MP_RAY_PROGRESS", "lines")
    with Progress("retrain", 40, "models", console=terminal, clock=clock, interval=0) as bar:
        clock.now = 2.0
        bar.advance(20)
    assert out.getvalue().splitlines() == [
        "retrain: 20/40 models, 10 models/s, ETA 0:00:02",
        "retrain: 20/40 models, 10 models/s, stopped after 0:00:02",
    ]
