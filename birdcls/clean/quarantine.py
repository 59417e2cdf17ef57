"""Non-destructive cleaning: files move to ``DATA/.quarantine/``, every decision goes to a log, undo works.

The decision log ``DATA/.quarantine/decisions.jsonl`` holds one line per decision: ``id``, ``run``,
``file`` (where the image was, relative to DATA), ``action`` (``quarantine``, ``move``, ``keep`` or
``undo``), ``reason``, ``dest`` (where it went), ``time`` and ``source`` (``auto`` or ``widget``).
Nothing is ever deleted: undo moves files back and logs that it did.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .._io import append_jsonl, read_jsonl, signals_deferred
from ..errors import BirdclsError

__all__ = ["Quarantine", "QUARANTINE_DIR", "LOG_NAME"]

QUARANTINE_DIR = ".quarantine"
LOG_NAME = "decisions.jsonl"


@dataclass
class Decision:
    id: str
    run: str
    file: str
    action: str
    reason: str
    dest: str | None
    time: float
    source: str
    undoes: str | None = None


def _relocate(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``: a rename, or a copy where a linked class folder is on another file system. A
    relative symlink is made again relative to its new folder, so that it still reaches its image there (moved
    as it is, ``a.jpg`` would point at ``.quarantine/jay/a.jpg``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink() and not os.path.isabs(os.readlink(src)):
        # from the folders' real places, as the system follows a link's ".." (a class folder may be a link)
        target = os.path.normpath(os.path.join(os.path.realpath(src.parent), os.readlink(src)))
        os.symlink(os.path.relpath(target, os.path.realpath(dst.parent)), dst)
        src.unlink()
        return
    shutil.move(src, dst)


class Quarantine:
    """Moves, keeps and undoes for one dataset folder, all logged."""

    def __init__(self, data: str | os.PathLike, source: str = "auto", run: str | None = None):
        self.data = Path(data)
        if not self.data.is_dir():
            raise BirdclsError(f"{self.data} does not exist or is not a folder: pass a dataset of class folders")
        self.dir = self.data / QUARANTINE_DIR
        self.log = self.dir / LOG_NAME
        self.source = source
        self.run = run or time.strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]

    # -- reading the log -------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        out = []
        for row in read_jsonl(self.log):
            try:
                out.append(Decision(**{k: row.get(k) for k in Decision.__dataclass_fields__}))
            except TypeError:
                continue
        return out

    def active(self) -> list[Decision]:
        """Decisions in force: not undone, in the order they were made."""
        decisions = self.decisions()
        undone = {d.undoes for d in decisions if d.action == "undo"}
        return [d for d in decisions if d.action != "undo" and d.id not in undone]

    def kept(self) -> set[str]:
        return {d.file for d in self.active() if d.action == "keep"}

    # -- making decisions ------------------------------------------------------------------------
    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the dataset, as the log records it. A class folder or an image that is a
        symlink counts as where it is linked in, not where it points: found through the dataset, it is the
        dataset's (and moving it moves the link of a linked image, never its target)."""
        for inside, root in ((Path(os.path.abspath(path)), Path(os.path.abspath(self.data))),
                             (Path(path).resolve(), self.data.resolve())):
            try:
                return str(inside.relative_to(root))
            except ValueError:
                continue
        raise BirdclsError(f"{path} is not inside the dataset {self.data}: pass images found under {self.data}")

    def _record(self, file: str, action: str, reason: str, dest: str | None, undoes: str | None = None) -> Decision:
        d = Decision(uuid.uuid4().hex[:12], self.run, file, action, reason, dest, time.time(), self.source, undoes)
        append_jsonl(self.log, d.__dict__)
        return d

    @staticmethod
    def _free(dst: Path) -> Path:
        """``dst``, or ``name-2.jpg``, ``name-3.jpg`` ... when a file of that name is already there."""
        k = 1
        candidate = dst
        while candidate.exists() or candidate.is_symlink():  # a link, even one that leads nowhere, takes the name
            k += 1
            candidate = dst.with_name(f"{dst.stem}-{k}{dst.suffix}")
        return candidate

    def _move(self, src: Path, dst: Path) -> Path:
        dst = self._free(dst)
        _relocate(src, dst)
        return dst

    def quarantine(self, path: str | os.PathLike, reason: str) -> Decision:
        """Move ``path`` to ``DATA/.quarantine/<same relative path>`` and log it."""
        path = Path(path)
        if not path.is_file():
            raise BirdclsError(f"{path} does not exist (already moved?): refresh the view")
        rel = self.relative(path)
        with signals_deferred():  # an interrupt never leaves a move that the log (and so undo) misses
            dest = self._move(path, self.data / QUARANTINE_DIR / rel)
            return self._record(rel, "quarantine", reason, self.relative(dest))

    def move(self, path: str | os.PathLike, new_class: str, reason: str = "relabelled") -> Decision:
        """Move ``path`` into the sibling class folder ``new_class`` (same split) and log it."""
        path = Path(path)
        if not path.is_file():
            raise BirdclsError(f"{path} does not exist (already moved?): refresh the view")
        rel = self.relative(path)
        target_dir = path.parent.parent / new_class
        if not target_dir.is_dir():
            raise BirdclsError(f"class folder {target_dir} does not exist: pick one of the existing classes")
        with signals_deferred():
            dest = self._move(path, target_dir / path.name)
            return self._record(rel, "move", reason or f"relabelled as {new_class}", self.relative(dest))

    def keep(self, path: str | os.PathLike, reason: str = "reviewed") -> Decision:
        return self._record(self.relative(Path(path)), "keep", reason, None)

    # -- undoing ---------------------------------------------------------------------------------
    def _undo_one(self, d: Decision) -> None:
        moves_back = d.action in ("quarantine", "move")
        if moves_back:
            moved, original = self.data / d.dest, self.data / d.file
            if original.exists():
                raise BirdclsError(f"cannot undo: {original} exists again; move it away first")
        with signals_deferred():  # a file moved back is logged as undone, or not moved at all
            if moves_back:
                _relocate(moved, original)
            self._record(d.file, "undo", f"undo {d.action}", d.dest, undoes=d.id)

    def undo(self, scope: str = "run") -> list[Decision]:
        """Undo the last decision (``action``), the last run's decisions (``run``) or all of them (``all``).

        Every move is checked before any is undone, so an edited quarantine fails cleanly.
        """
        active = self.active()
        if scope == "action":
            chosen = active[-1:]
        elif scope == "run":
            last_run = active[-1].run if active else None
            chosen = [d for d in active if d.run == last_run]
        elif scope == "all":
            chosen = active
        else:
            raise BirdclsError(f"undo scope must be action, run or all, got {scope!r}")
        if not chosen:
            raise BirdclsError(f"nothing to undo in {self.data}: no cleaning decisions are in force")
        for d in chosen:
            moved = self.data / d.dest if d.action in ("quarantine", "move") else None
            # a link counts even where it leads nowhere now (its image was moved too)
            if moved is not None and not (moved.is_file() or moved.is_symlink()):
                raise BirdclsError(f"cannot undo: {moved} is missing, so the quarantine was edited by hand; "
                                   f"put the file back or remove that line from {self.log}")
        for d in reversed(chosen):
            self._undo_one(d)
        return chosen

