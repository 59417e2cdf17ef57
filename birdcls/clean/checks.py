"""Automatic quality checks for a dataset of class folders (split or not).

Flags unreadable files, exact duplicates (same pixels) and near duplicates (perceptual hash) within a
class, images below a minimum size, extreme aspect ratios and, when asked, very dark or very blurry
images. The same image under two labels is a labelling question: it is reported, never moved.

Example:
    >>> report = find_issues("data/raw", CleanConfig(dark=20))
    >>> report.table()
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.folders import class_files, no_class_folders
from ..errors import BirdclsError

__all__ = ["CleanConfig", "Flag", "CheckReport", "find_issues", "class_folders"]


@dataclass(frozen=True)
class CleanConfig:
    """Thresholds of the automatic checks (``None`` turns an optional check off)."""

    min_size: int = 64  # shorter side, pixels
    max_aspect: float = 3.0  # long side / short side
    near_distance: int = 4  # perceptual-hash bits; -1 turns near-duplicate detection off
    dark: float | None = None  # mean brightness 0-255 below this is "very dark"
    blurry: float | None = None  # variance of the Laplacian below this is "very blurry"

    def __post_init__(self):
        # named by their `birdcls clean` flags (min_size is --min-size, near_distance --max-distance), with a value
        checks = [(self.min_size >= 1, f"--min-size must be at least 1 pixel, got {self.min_size}: e.g. 64"),
                  (self.max_aspect >= 1, f"--max-aspect must be at least 1 (long side / short side), got "
                                         f"{self.max_aspect}: e.g. 3"),
                  (-1 <= self.near_distance <= 16, f"--max-distance must be between -1 (off) and 16 bits, got "
                                                   f"{self.near_distance}: e.g. 4"),
                  (self.dark is None or 0 <= self.dark <= 255, f"--dark must be a brightness from 0 to 255, got "
                                                               f"{self.dark}: e.g. 20"),
                  (self.blurry is None or self.blurry >= 0, f"--blurry must be 0 or more, got {self.blurry}: e.g. 30")]
        for ok, message in checks:
            if not ok:
                raise BirdclsError(message)


@dataclass
class Flag:
    path: Path
    reason: str  # short, groupable: "exact duplicate", "too small", ...
    detail: str  # e.g. "of train/jay/001.jpg"
    move: bool = True  # False: report only (a labelling question)


@dataclass
class CheckReport:
    data: Path
    n_images: int
    flags: list[Flag] = field(default_factory=list)

    def by_path(self) -> dict[Path, Flag]:
        return {f.path: f for f in self.flags}

    def table(self) -> str:
        counts = Counter((f.reason, "quarantine" if f.move else "report only") for f in self.flags)
        lines = [f"{self.n_images} images checked, {len(self.flags)} flagged"]
        for (reason, action), n in sorted(counts.items()):
            lines.append(f"  {reason:<28} {n:>6}  ({action})")
        return "\n".join(lines)


def class_folders(data: str | os.PathLike) -> list[tuple[str | None, str, Path]]:
    """(split or None, class, folder) for a raw dataset (``DATA/<class>/``) or a split one."""
    data = Path(data)
    if not data.is_dir():
        raise BirdclsError(f"{data} does not exist or is not a folder: pass a dataset of class folders")
    splits = [s for s in ("train", "val", "valid", "test") if (data / s).is_dir()]
    out = []
    for split in splits or [None]:
        root = data / split if split else data
        for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out.append((split, cdir.name, cdir))
    if not out and class_files(data)[0]:
        raise BirdclsError(no_class_folders(data))
    return out


_COPY_MARK = re.compile(r"(\s*\(\d+\)|[\s_-]+copy(\s*\(?\d+\)?)?|-\d{1,2})$", re.IGNORECASE)


@contextmanager
def _quiet_large_images() -> Iterator[None]:
    """Silence PIL's ``DecompressionBombWarning`` inside the block, even where the caller's filters show every
    warning (``python -W always``, pytest); ``birdcls.data.decode`` ignores it at import for the usual case.

    PIL warns about any image over ``Image.MAX_IMAGE_PIXELS`` (about 89 MP); such an image is only large and
    the checks read it fine. One over twice the limit still raises ``DecompressionBombError`` and is
    reported as unreadable.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _keep_order(path: Path, data: Path) -> tuple[bool, int, str]:
    """Sort key that puts the copy a user would call the original first (the rule is in ``find_issues``)."""
    return bool(_COPY_MARK.search(path.stem)), len(path.name), path.relative_to(data).as_posix()


@dataclass(frozen=True)
class _Look:
    brightness: float  # mean grey level, 0-255
    sharpness: float  # variance of the Laplacian of a greyscale thumbnail (256 px at most)


def _look(path: Path) -> _Look:
    from ..data.decode import open_image

    with _quiet_large_images():
        grey = open_image(path, 256, channels=1)  # a big JPEG decoded reduced
    grey.thumbnail((256, 256))
    a = np.asarray(grey, dtype=np.float32)
    lap = -4 * a[1:-1, 1:-1] + a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]
    return _Look(float(a.mean()), float(lap.var()) if lap.size else 0.0)


def _error_detail(err: str) -> str:
    # hash_images words an error "unreadable (not an image)"; the flag's reason already says "unreadable".
    return err[len("unreadable ("):-1] if err.startswith("unreadable (") and err.endswith(")") else err


def find_issues(data: str | os.PathLike, config: CleanConfig = CleanConfig(), workers: int | None = None,
                progress: str = "none") -> CheckReport:
    """Run every check over ``data``; nothing is moved here (see ``clean_auto``). Each image gets one flag at most.

    The per-image checks come first, in this order: unreadable, too small, extreme aspect ratio, very dark,
    very blurry. An image one of them flags is reported with that reason and never matched for duplicates
    (a 1x1 image is too small, not a duplicate of every other blank image). The other images are then
    matched: exact duplicates (same pixels), then near duplicates (perceptual hashes within
    ``near_distance`` bits). An image with almost no contrast (its 32x32 greyscale varies by less than
    2 grey levels: a blank or flat one) has a hash that says nothing about it, so it makes no near pair;
    its exact copies are still exact duplicates.

    Which duplicate stays: names without a copy mark (``(1)``, `` copy``, `` - Copy (2)``, ``-1``) first,
    then the shorter file name, then the path relative to ``data`` in alphabetical order. So
    ``cat.4220.jpg`` stays and ``cat.4220(1).jpg`` is quarantined as its exact duplicate. Images are taken
    in that order and each duplicate is flagged against one that stays. The same image (or a near one)
    under another label is reported on the later one in that order and moved nowhere.
    """
    from .._terminal import progress_mode
    from ..hashing import hash_images

    mode = progress_mode(progress, sys.stderr)  # ``progress``: the hashing's, on stderr
    data = Path(data)
    paths, labels = [], []
    for _, label, folder in class_folders(data):
        files, _ = class_files(folder)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise BirdclsError(f"{data} holds no images: put them in {data}/<class>/ (or train/val/test/<class>/)")
    with _quiet_large_images():  # hash_images' worker processes are forked inside, with the filter
        hashes = hash_images(paths, workers=workers, progress=mode)
    flags = _Flags(data, paths, labels, CheckReport(data, len(paths)))
    _flag_unusable(flags, hashes, config)
    order = sorted((i for i in range(len(paths)) if i not in flags.flagged),
                   key=lambda i: _keep_order(paths[i], data))
    _flag_exact_duplicates(flags, hashes, order)
    if config.near_distance >= 0:
        _flag_near_duplicates(flags, hashes, order, config.near_distance)
    return flags.report


@dataclass
class _Flags:
    """The report being built, and which images have a flag (matched no further) or are to be quarantined
    (no duplicate is flagged against them: the one that stays must stay)."""

    data: Path
    paths: list[Path]
    labels: list[str]
    report: CheckReport
    flagged: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)

    def add(self, i: int, reason: str, detail: str, move: bool = True) -> None:
        self.report.flags.append(Flag(self.paths[i], reason, detail, move=move))
        self.flagged.add(i)
        if move:
            self.gone.add(i)

    def rel(self, i: int) -> str:
        return str(self.paths[i].relative_to(self.data))


def _flag_unusable(flags: _Flags, hashes, config: CleanConfig) -> None:
    """The per-image checks, in order: unreadable, too small, extreme aspect ratio, very dark, very blurry."""
    for i, err in sorted(hashes.errors.items()):
        flags.add(i, "unreadable", _error_detail(err))
    for i, (w, h) in enumerate(hashes.sizes):
        if i in flags.flagged:
            continue
        if min(w, h) < config.min_size:
            flags.add(i, "too small", f"{w}x{h} < {config.min_size} px")
        elif max(w, h) / min(w, h) > config.max_aspect:
            flags.add(i, "extreme aspect ratio", f"{w}x{h} > {config.max_aspect:g}:1")
    if config.dark is None and config.blurry is None:
        return
    for i in range(len(flags.paths)):
        if i in flags.flagged:
            continue
        look = _look(flags.paths[i])
        if config.dark is not None and look.brightness < config.dark:
            flags.add(i, "very dark", f"mean brightness {look.brightness:.0f} < {config.dark:g}")
        elif config.blurry is not None and look.sharpness < config.blurry:
            flags.add(i, "very blurry", f"Laplacian variance {look.sharpness:.0f} < {config.blurry:g}")


def _flag_exact_duplicates(flags: _Flags, hashes, order: list[int]) -> None:
    """Each copy after the first of its label (in keep ``order``) is quarantined; the first copy under
    another label is reported only."""
    for members in hashes.exact_groups(order):
        stays: dict[str, int] = {}  # label -> the copy that stays, in keep order
        for i in members:
            original = stays.setdefault(flags.labels[i], i)
            if original != i:
                flags.add(i, "exact duplicate", f"of {flags.rel(original)}")
        first, *others = stays.values()
        for i in others:
            flags.add(i, "same image, other label", f"of {flags.rel(first)}", move=False)


def _flag_near_duplicates(flags: _Flags, hashes, order: list[int], max_distance: int) -> None:
    """Pairs within ``max_distance`` bits, nearest in keep order first: the later image is flagged against
    one that stays. A flat image's hash says nothing about it, so it makes no near pair."""
    from ..hashing import near_pairs

    rank = {i: r for r, i in enumerate(order)}
    valid = hashes.informative.copy()
    valid[list(flags.gone)] = False
    pairs = []
    for a, b, d in near_pairs(hashes.phash, max_distance, valid=valid):
        keep, other = sorted((int(a), int(b)), key=rank.__getitem__)
        pairs.append((rank[keep], rank[other], keep, other, int(d)))
    for _, _, keep, other, d in sorted(pairs):
        if keep in flags.gone or other in flags.flagged:
            continue
        same = flags.labels[keep] == flags.labels[other]
        flags.add(other, "near duplicate" if same else "near duplicate, other label",
                  f"of {flags.rel(keep)} ({d} bits)", move=same)
