"""The one user-facing error type.

Library code raises :class:`BirdclsError` for anything the user can fix (a bad path, a bad value,
missing weights). The CLI prints its message as a single line on stderr and exits with code 2, so a
user never sees a traceback for their own mistake. Ctrl-C in long work raises :class:`Interrupted`, a
KeyboardInterrupt that says what was done and how to go on.
"""

from __future__ import annotations

__all__ = ["BirdclsError", "Interrupted", "Terminated", "TrainingInterrupted", "check_int", "describe",
           "interrupt_exit_code"]


class BirdclsError(Exception):
    """A problem the user can fix; the message names the problem and the fix in one line."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) in long work, with what was done and how to go on or back; exits 130 (or 143).

    A KeyboardInterrupt, not an Exception: a notebook loop that catches ``Exception`` around each run must
    still stop on Ctrl-C."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingInterrupted(Interrupted):
    """Training interrupted: the best checkpoint is on disk and the message says how to resume."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a scheduler or container stopping the job), raised where Ctrl-C would
    be so that the same clean-up runs: temp files removed, the best checkpoint written, a resume hint."""


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's code for the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (cut to 120 characters): a library's exception in a one-line notice."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:120] if lines else ''}"


def check_int(value: object, name: str, low: int, high: int | None = None, optional: bool = False) -> int | None:
    """``value`` as a whole number from ``low`` to ``high`` (``None`` too with ``optional``), else a BirdclsError
    that names the argument and the value. For the library's own arguments, which a Python caller can pass
    as a string, a float or None where the command line would have refused them."""
    import numbers

    if value is None and optional:
        return None
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"{low} or more"
        none = " (or left out, for the default)" if optional else ""
        raise BirdclsError(f"{name} must be a whole number {span}{none}, got {value!r}")
    return int(value)
