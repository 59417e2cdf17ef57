"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file under the final name; and a lock
that keeps two processes from writing into one folder."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    """The process's umask: read from /proc on Linux; elsewhere set and put straight back (the only way)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once, at import, not while threads may be creating files


def with_default_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (always private: 0600, 0700) the permissions any new file
    gets (0644 and 0755 under the usual umask 022), so exports and reports can be read by other users and
    services, as if written directly."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


LOCK_NAME = ".birdcls.lock"  # inside a locked folder; holds the pid of the process that locked it last


_HELD_LOCKS: set[int] = set()  # descriptors of the folder locks this process holds


def _drop_held_locks_in_child() -> None:
    """A forked child (decoding or data-loading workers) closes its copies of the lock descriptors: a flock
    belongs to the open file, so a child outliving its parent would otherwise keep the folder locked."""
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_held_locks_in_child)


@contextmanager
def folder_lock(folder: str | os.PathLike, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (made if missing) while the block runs, so that a second
    ``holder`` (e.g. "`birdcls train`") gets a one-line BirdclsError instead of writing its files among the
    first one's. The lock is ``flock`` on a hidden file in the folder: the system releases it when the
    process ends, however it ends. Where there is no ``fcntl`` (Windows), or the file system cannot lock,
    the block runs unlocked."""
    from .errors import BirdclsError

    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise BirdclsError(f"{folder} is in use by another {holder}{f' (pid {pid})' if pid else ''}: wait for "
                               "it to finish or choose another folder") from None
        except OSError:  # a file system without locks (some network and FUSE mounts)
            locked = False
        if not locked or _still_linked(fd, folder / LOCK_NAME):
            break
        os.close(fd)  # the holder removed the file (its folder) after we opened it: lock the one there now
    try:
        if not locked:
            yield
            return
        _HELD_LOCKS.add(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            _HELD_LOCKS.discard(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _still_linked(fd: int, path: Path) -> bool:
    """Whether the locked file ``fd`` is still the one at ``path``: a lock on a file its holder unlinked
    guards nothing, since the next process creates and locks a new one."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def signals_deferred(reraise: bool = True) -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM until the block ends, for steps that must not be cut apart (a file moved and
    its move logged, so that undo can find it): their handlers only note the signal meanwhile (the block gets
    the list), and it is raised again at the end (SIGTERM first) unless ``reraise`` is false. Python runs
    signal handlers in the main thread only, so elsewhere the block runs as it is."""
    import signal
    import threading

    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
        yield caught
    finally:
        failure: BaseException | None = None
        for sig, handler in previous.items():  # every handler back, even if a signal's handler raises meanwhile
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, once all are restored
                failure = failure or exc
        if failure is not None:
            raise failure
        if caught and reraise:
            signal.raise_signal(signal.SIGTERM if signal.SIGTERM in caught else caught[0])


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or inside it, links and ``..`` resolved: the test before writing output
    into a dataset, or a source into its own output."""
    path_abs, folder_abs = Path(path).resolve(), Path(folder).resolve()
    return path_abs == folder_abs or folder_abs in path_abs.parents


def check_writable(dest: str | os.PathLike) -> Path:
    """Make ``dest``'s folder if needed and check that a file can be written there; a user-fixable problem
    (a folder in the way, no permission, a read-only place) is a one-line BirdclsError. Commands call it
    before long work whose result goes to ``dest``, so the work is not lost at the end."""
    dest = Path(dest)
    os.unlink(_temp_beside(dest, ".probe"))
    return dest


def _temp_beside(dest: Path, suffix: str) -> Path:
    """A new empty private file in ``dest``'s folder (made if missing), or a one-line BirdclsError."""
    from .errors import BirdclsError

    if dest.is_dir():
        raise BirdclsError(f"{dest} is a folder: give a file path to write to, e.g. {dest / 'out'}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    except OSError as exc:
        raise BirdclsError(f"cannot write {dest} ({exc.strerror or type(exc).__name__}): "
                           "choose a folder you can write to") from None
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    The temp file lives in the same directory so that ``os.replace`` is a same-filesystem rename.
    On any exception the temp file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    tmp_path = _temp_beside(dest, ".partial")
    try:
        yield tmp_path
        with_default_mode(tmp_path)
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


def save_figure_atomic(dest: str | os.PathLike, fig: Any, tight: bool = False, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (the format comes from ``dest``'s suffix), after ``tight_layout``
    with ``tight``."""
    import warnings

    from ._plots import fit_fonts

    fmt = Path(dest).suffix.lstrip(".") or "png"
    fit_fonts(fig)
    with atomic_path(dest) as tmp, warnings.catch_warnings():
        # what no installed font draws is a box; fit_fonts said so once, and matplotlib would warn for every glyph
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        if tight:
            # long class names can leave tight_layout no room (it warns and does nothing): then the saved image is
            # cut to what was drawn instead, so that no label is cut off
            gave_up = r"tight[ _]layout not applied"  # matplotlib words it both ways
            with warnings.catch_warnings(record=True) as caught:
                warnings.filterwarnings("always", message=gave_up)
                fig.tight_layout()
            if any(re.match(gave_up, str(w.message), re.IGNORECASE) for w in caught):
                kwargs.setdefault("bbox_inches", "tight")
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
