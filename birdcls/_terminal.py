"""Where output goes: a terminal or notebook (progress bars) or a log or pipe (plain lines).

Kept apart from the fastai callbacks so that deciding it imports nothing heavy: commands check their input
before seconds of importing torch and fastai.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from .errors import BirdclsError

PROGRESS_MODES = ("auto", "bars", "lines", "none")
T = TypeVar("T")
QUIET_LINES_S = 2.0  # work this short logs its last line only


def output_is_interactive(stream: TextIO | None = None) -> bool:
    """True in a notebook, or when ``stream`` (default stdout) is a terminal: there fastprogress bars are
    wanted, elsewhere plain lines."""
    from fastcore.imports import IN_NOTEBOOK  # fastcore alone: milliseconds

    return bool(IN_NOTEBOOK) or (stream or sys.stdout).isatty()


def progress_mode(progress: str, stream: TextIO | None = None) -> str:
    """``progress`` checked and ``auto`` resolved: fastprogress bars in a notebook or when ``stream``
    (default stdout) is a terminal, else plain lines (logs, pipes)."""
    if progress not in PROGRESS_MODES:
        raise BirdclsError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {progress!r}")
    if progress != "auto":
        return progress
    return "bars" if output_is_interactive(stream) else "lines"


def with_progress(items: Iterable[T], total: int, mode: str, label: str, unit: str,
                  count: Callable[[T], int] = lambda _: 1) -> Iterator[T]:
    """``items`` as they are, shown on stderr (stdout carries commands' answers, ``--json`` included): a
    fastprogress bar (``bars``; a notebook's own bar there), lines for logs and pipes (``lines``: at every
    tenth of ``total`` once ``QUIET_LINES_S`` have passed, and at the end: a second's work logs one line), or
    nothing (``none``). ``count(item)`` says how many ``unit`` an item stands for."""
    if mode == "none" or total < 1:
        yield from items
    elif mode == "bars":
        yield from _bar(items, total, label, count)
    else:
        yield from _lines(items, total, label, unit, count)


def _bar(items: Iterable[T], total: int, label: str, count: Callable[[T], int]) -> Iterator[T]:
    import contextlib

    from fastcore.imports import IN_NOTEBOOK
    from fastprogress.fastprogress import progress_bar

    # stdout is redirected only while the bar draws, never across a yield: the swap is process-wide
    with contextlib.redirect_stdout(sys.stderr):
        bar = progress_bar(range(total), total=total)
        bar.comment = label  # named: split shows its hashing, then its copying
        bar.update(0)
    done = 0
    for item in items:
        yield item
        done += count(item)
        with contextlib.redirect_stdout(sys.stderr):
            bar.update(min(done, total))
    if not IN_NOTEBOOK:
        print(file=sys.stderr, flush=True)  # the console bar leaves the cursor at its end


def _lines(items: Iterable[T], total: int, label: str, unit: str, count: Callable[[T], int]) -> Iterator[T]:
    import time

    start, done, shown = time.perf_counter(), 0, 0
    for item in items:
        yield item
        done += count(item)
        elapsed = time.perf_counter() - start
        if (done * 10 // total > shown and elapsed >= QUIET_LINES_S) or done == total:
            shown = done * 10 // total
            rate = done / max(elapsed, 1e-9)
            print(f"{label}: {done:,}/{total:,} {unit}, {rate:,.0f} {unit}/s", file=sys.stderr, flush=True)
