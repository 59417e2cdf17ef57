"""Labelled image folders: find the splits, list the images, verify every file before training.

The layout a split dataset has (what ``birdcls split`` writes)::

    DATA/
      train/<class>/*.jpg
      val/<class>/*.jpg      (``valid/`` is accepted too)
      test/<class>/*.jpg

Unreadable, truncated and non-image files are skipped and counted up front, so that training never
crashes mid-epoch on a bad file.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .._io import write_json_atomic
from .._trust import birdcls_home
from ..errors import BirdclsError
from .decode import UNREADABLE, unreadable_reason  # importing decode registers the HEIC/HEIF opener too

__all__ = ["IMAGE_EXTENSIONS", "SPLIT_NAMES", "VAL_NAMES", "ImageCheck", "SplitLayout", "check_cache_for",
           "class_files", "class_key", "find_splits", "list_labelled_images", "no_class_folders", "unknown_classes",
           "verify_images"]

#: .jfif, .jpe and .jif are JPEGs too (.jfif is what Windows names a photo saved from a web page).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".jif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".avif", ".heic", ".heif"})
VAL_NAMES = ("val", "valid")  # what a validation folder may be called
SPLIT_NAMES = ("train", *VAL_NAMES, "test")


@dataclass(frozen=True)
class SplitLayout:
    """Where the three splits of a dataset live."""

    root: Path
    train: Path
    val: Path
    test: Path | None


@dataclass
class ImageCheck:
    """The outcome of verifying a set of files: the good ones, and each bad one with its reason."""

    good: list[Path] = field(default_factory=list)
    bad: dict[Path, str] = field(default_factory=dict)
    not_images: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.good)} images"]
        if self.bad:
            parts.append(f"{len(self.bad)} unreadable skipped")
        if self.not_images:
            parts.append(f"{len(self.not_images)} non-image file{'s' if len(self.not_images) != 1 else ''} skipped")
        return ", ".join(parts)


def find_splits(root: str | os.PathLike, require_test: bool = True) -> SplitLayout:
    """Locate ``train/``, ``val/`` (or ``valid/``) and ``test/`` under ``root``, or explain what is missing."""
    root = Path(root)
    if not root.exists():
        raise BirdclsError(f"dataset folder {root} does not exist: pass a folder holding train/, val/ and test/")
    if not root.is_dir():
        raise BirdclsError(f"{root} is a file, not a dataset folder: pass a folder holding train/, val/ and test/")
    train = root / "train"
    val = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
    test = root / "test"
    missing = [name for name, p in (("train/", train), ("val/", val), ("test/", test)) if p is None or not p.is_dir()]
    if not require_test and "test/" in missing:
        missing.remove("test/")
    if missing:
        other_case = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES
                            and p.name != p.name.lower())
        if other_case:
            raise BirdclsError(f"{root} has {', '.join(f'{n}/' for n in other_case)} but split folder names are "
                               f"lower-case: rename {other_case[0]}/ to {other_case[0].lower()}/ (and the others)")
        hint = "run `birdcls split SRC DATA` first" if "train/" in missing else "add it, or re-run `birdcls split`"
        raise BirdclsError(f"{root} has no {' or '.join(missing)} folder: {hint}")
    return SplitLayout(root=root, train=train, val=val, test=test if test.is_dir() else None)


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly inside one class folder, sorted; hidden files are ignored."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]


def no_class_folders(folder: Path) -> str:
    """The error for a folder without class sub-folders: the fix differs when it is itself a class's folder
    (images directly in it: the user meant the folder above)."""
    if class_files(folder)[0]:
        return (f"{folder} holds images but no class folders: pass the folder above it ({folder.parent}), whose "
                "sub-folders are the classes")
    return f"{folder} has no class folders: put each class's images in {folder}/<class>/"


def list_labelled_images(split_dir: str | os.PathLike) -> tuple[dict[str, list[Path]], list[Path]]:
    """Return ``{class: [image files]}`` for one split folder, plus the non-image files found.

    Only files directly inside each class folder count (the label is the folder's name); hidden entries
    (``.quarantine`` and the like) are ignored.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise BirdclsError(f"{split_dir} is not a folder: pass a folder with one sub-folder per class")
    classes = _class_dirs(split_dir)
    if not classes:
        raise BirdclsError(no_class_folders(split_dir))
    found: dict[str, list[Path]] = {}
    others: list[Path] = []
    for cdir in classes:
        found[cdir.name], rest = class_files(cdir)
        others += rest
    return found, others


def class_key(name: str) -> str:
    """A class name as compared with a model's: Unicode-normalised (NFC), since the same "é" can be one code
    point or two, and a folder copied from a Mac spells it with two where Linux kept one."""
    return unicodedata.normalize("NFC", name)


def unknown_classes(by_class: dict[str, list[Path]], known: Sequence[str]) -> list[str]:
    """The class folders holding images under a name not in ``known`` (a model's classes), sorted: scoring
    them would compare answers with labels the model cannot give. Empty folders do not matter."""
    keys = {class_key(k) for k in known}
    return sorted(c for c, files in by_class.items() if files and class_key(c) not in keys)


def _check_one(path: Path) -> str | None:
    """Decode the file fully (``verify()`` misses truncated JPEGs); return the reason it is bad, or None."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except UNREADABLE as exc:
        return unreadable_reason(exc, path)
    return None


def verify_images(paths: list[Path], workers: int | None = None, cache: Path | None = None) -> ImageCheck:
    """Fully decode every file in a thread pool (PIL releases the GIL while decoding).

    With ``cache`` (a JSON file), files whose size and modification time match an earlier check are not
    decoded again: on CIFAR-10's 60,000 files the check takes about half a minute, longer than a GPU run's
    training. A changed or new file is checked again; the cache is rewritten atomically.
    """
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    known = _read_check_cache(cache) if cache else {}
    stamps = {p: _stamp(p) for p in paths}
    reasons: dict[Path, str | None] = {}
    todo = []
    for p in paths:
        entry = known.get(str(p))
        if isinstance(entry, list) and len(entry) == 3 and stamps[p] is not None and entry[:2] == stamps[p]:
            reasons[p] = entry[2]
        else:
            todo.append(p)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons.update(zip(todo, pool.map(_check_one, todo)))
    check = ImageCheck()
    for path in paths:
        if reasons[path] is None:
            check.good.append(path)
        else:
            check.bad[path] = reasons[path]
    if cache and (todo or len(known) != len(paths)):
        entries = {str(p): [*stamps[p], reasons[p]] for p in paths if stamps[p] is not None}
        try:
            write_json_atomic(cache, {"version": 1, "files": entries})
        except OSError:
            pass  # a cache that cannot be written only costs the next run the same check
    return check


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_check_cache(cache: Path) -> dict[str, list]:
    try:
        data = json.loads(cache.read_text())
        return data["files"] if data.get("version") == 1 else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # absent or damaged: check everything


def check_cache_for(folder: Path) -> Path:
    """The check cache of one split folder, under ``$BIRDCLS_HOME/cache/checks``."""
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:24]
    return birdcls_home() / "cache" / "checks" / f"{key}.json"
