"""The scrape manifest: one JSON line per URL tried, kept or rejected, appended as results arrive.

It is what makes a re-run resume (every URL already tried is skipped, every kept image's pixel hash
is known) and what says where each image came from.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._io import append_jsonl, read_jsonl

__all__ = ["Manifest", "MANIFEST_NAME", "FIELDS"]

MANIFEST_NAME = "manifest.jsonl"
FIELDS = ("url", "query", "engine", "label", "file", "sha256", "pixel_sha256", "phash", "width", "height", "bytes",
          "time", "status", "reason")


class Manifest:
    """Append-only JSONL; a torn last line (a crash mid-write) is ignored when reading."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def rows(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            append_jsonl(self.path, {k: row.get(k) for k in FIELDS})
