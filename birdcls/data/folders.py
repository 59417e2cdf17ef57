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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import BirdclsError

__all__ = ["IMAGE_EXTENSIONS", "ImageCheck", "class_files", "SplitLayout", "find_splits", "list_labelled_images", "verify_images"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_VAL_NAMES = ("val", "valid")


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
            parts.append(f"{len(self.not_images)} non-image files skipped")
        return ", ".join(parts)


def find_splits(root: str | os.PathLike, require_test: bool = True) -> SplitLayout:
    """Locate ``train/``, ``val/`` (or ``valid/``) and ``test/`` under ``root``, or explain what is missing."""
    root = Path(root)
    if not root.exists():
        raise BirdclsError(f"dataset folder {root} does not exist: pass a folder holding train/, val/ and test/")
    if not root.is_dir():
        raise BirdclsError(f"{root} is a file, not a dataset folder: pass a folder holding train/, val/ and test/")
    train = root / "train"
    val = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), None)
    test = root / "test"
    missing = [name for name, p in (("train/", train), ("val/", val), ("test/", test)) if p is None or not p.is_dir()]
    if not require_test and "test/" in missing:
        missing.remove("test/")
    if missing:
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
        raise BirdclsError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    found: dict[str, list[Path]] = {}
    others: list[Path] = []
    for cdir in classes:
        found[cdir.name], rest = class_files(cdir)
        others += rest
    return found, others


def _check_one(path: Path) -> str | None:
    """Decode the file fully (``verify()`` misses truncated JPEGs); return the reason it is bad, or None."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return type(exc).__name__ + (": not an image" if isinstance(exc, UnidentifiedImageError) else "")
    except (OSError, ValueError, SyntaxError) as exc:
        return f"unreadable ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
    return None


def verify_images(paths: list[Path], workers: int | None = None) -> ImageCheck:
    """Fully decode every file in a thread pool (PIL releases the GIL while decoding)."""
    check = ImageCheck()
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, reason in zip(paths, pool.map(_check_one, paths)):
            if reason is None:
                check.good.append(path)
            else:
                check.bad[path] = reason
    return check
