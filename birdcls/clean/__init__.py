"""Cleaning: automatic checks, a quarantine with a decision log and undo, and the Jupyter Cleaner."""

from .auto import AutoCleanResult, clean_auto, undo_clean
from .checks import CheckReport, CleanConfig, Flag, find_issues
from .quarantine import Quarantine


def __getattr__(name: str):
    # The widget imports ipywidgets; load it only when asked for.
    if name == "Cleaner":
        from .widget import Cleaner

        return Cleaner
    raise AttributeError(name)


__all__ = ["AutoCleanResult", "CheckReport", "CleanConfig", "Cleaner", "Flag", "Quarantine", "clean_auto",
           "find_issues", "undo_clean"]
