"""Where output goes: a terminal or notebook (progress bars) or a log or pipe (plain lines).

Kept apart from the fastai callbacks so that deciding it imports nothing heavy: commands check their input
before seconds of importing torch and fastai.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import BirdclsError

PROGRESS_MODES = ("auto", "bars", "lines", "none")


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
