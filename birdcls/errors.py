"""The one user-facing error type.

Library code raises :class:`BirdclsError` for anything the user can fix (a bad path, a bad value,
missing weights). The CLI prints its message as a single line on stderr and exits with code 2, so a
user never sees a traceback for their own mistake.
"""

from __future__ import annotations

__all__ = ["BirdclsError", "TrainingInterrupted", "describe"]


class BirdclsError(Exception):
    """A problem the user can fix; the message names the problem and the fix in one line."""

    exit_code = 2


class TrainingInterrupted(BirdclsError):
    """Ctrl-C during training: the best checkpoint is on disk and the message says how to resume."""

    exit_code = 130


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (cut to 120 characters): a library's exception in a one-line notice."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:120] if lines else ''}"
