"""Names shown to people: cut to a width where a long one would push a table or a plot's axes out of shape."""

from __future__ import annotations


def middle_cut(name: str, most: int = 32) -> str:
    """``name`` cut in the middle to ``most`` characters: the two ends are what tell long names apart (class
    folders named after a species and a place, say)."""
    if len(name) <= most:
        return name
    keep = (most - 1) // 2
    return f"{name[:keep]}…{name[-(most - 1 - keep):]}"


def name_list(names: list[str], most: int) -> str:
    """The first ``most`` of ``names`` joined by commas, and ", ..." where there are more: a message names a few of
    many files or classes rather than all of them."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")
