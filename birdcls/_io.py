"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file under the final name."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    The temp file lives in the same directory so that ``os.replace`` is a same-filesystem rename.
    On any exception the temp file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_figure_atomic(dest: str | os.PathLike, fig: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (the format comes from ``dest``'s suffix)."""
    fmt = Path(dest).suffix.lstrip(".") or "png"
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return Path(dest)


def write_with_atomic(dest: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``dest`` only if it succeeded."""
    with atomic_path(dest) as tmp:
        writer(tmp)
    return Path(dest)


def append_jsonl(dest: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and fsync it: an append-only log survives a crash up to its last line."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file; a torn or foreign line (a crash mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row
