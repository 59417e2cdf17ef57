"""Which pickled models this user created, so that loading someone else's ``.pkl`` needs ``--trust``.

A ``.pkl`` export unpickles code when loaded. Every ``.pkl`` that birdcls writes has its SHA-256
recorded in ``$BIRDCLS_HOME/trusted-pickles.txt`` (default ``~/.cache/birdcls``); any other pickle is
refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ._io import write_text_atomic


def birdcls_home() -> Path:
    return Path(os.environ.get("BIRDCLS_HOME") or Path.home() / ".cache" / "birdcls")


def _registry() -> Path:
    return birdcls_home() / "trusted-pickles.txt"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _known() -> set[str]:
    reg = _registry()
    return set(reg.read_text().split()) if reg.is_file() else set()


def register_pickle(path: str | os.PathLike) -> None:
    """Record that this user created ``path``."""
    known = _known() | {file_sha256(path)}
    write_text_atomic(_registry(), "\n".join(sorted(known)) + "\n")


def is_trusted_pickle(path: str | os.PathLike) -> bool:
    return file_sha256(path) in _known()
