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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.folders import class_files
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
        checks = [(self.min_size >= 1, f"min_size must be at least 1, got {self.min_size}"),
                  (self.max_aspect >= 1, f"max_aspect must be at least 1, got {self.max_aspect}"),
                  (-1 <= self.near_distance <= 16, f"near_distance must be -1..16, got {self.near_distance}"),
                  (self.dark is None or 0 <= self.dark <= 255, f"dark must be 0..255, got {self.dark}"),
                  (self.blurry is None or self.blurry >= 0, f"blurry must be >= 0, got {self.blurry}")]
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
    return out


def _brightness_and_blur(path: Path) -> tuple[float, float]:
    from PIL import Image

    with Image.open(path) as im:
        grey = im.convert("L")
        grey.thumbnail((256, 256))
        a = np.asarray(grey, dtype=np.float32)
    lap = -4 * a[1:-1, 1:-1] + a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]
    return float(a.mean()), float(lap.var()) if lap.size else 0.0


def find_issues(data: str | os.PathLike, config: CleanConfig = CleanConfig(), workers: int | None = None) -> CheckReport:
    """Run every check over ``data``; nothing is moved here (see ``clean_auto``)."""
    from ..hashing import hash_images, near_pairs

    data = Path(data)
    folders = class_folders(data)
    paths, labels = [], []
    for _, label, folder in folders:
        files, _ = class_files(folder)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise BirdclsError(f"{data} holds no images: put them in {data}/<class>/ (or train/val/test/<class>/)")
    hashes = hash_images(paths, workers=workers)
    report = CheckReport(data, len(paths))
    flagged: set[int] = set()

    def rel(i: int) -> str:
        return str(paths[i].relative_to(data))

    for i, err in hashes.errors.items():
        report.flags.append(Flag(paths[i], "unreadable", err))
        flagged.add(i)
    by_pixel: dict[str, list[int]] = {}
    for i, px in enumerate(hashes.pixel):
        if px:
            by_pixel.setdefault(px, []).append(i)
    for members in by_pixel.values():
        first = members[0]
        for i in members[1:]:
            same = labels[i] == labels[first]
            report.flags.append(Flag(paths[i], "exact duplicate" if same else "same image, other label",
                                     f"of {rel(first)}", move=same))
            flagged.add(i)
    if config.near_distance >= 0:
        valid = hashes.ok.copy()
        valid[list(flagged)] = False
        for a, b, d in near_pairs(hashes.phash, config.near_distance, valid=valid):
            if b in flagged or hashes.pixel[a] == hashes.pixel[b]:
                continue
            same = labels[a] == labels[b]
            report.flags.append(Flag(paths[b], "near duplicate" if same else "near duplicate, other label",
                                     f"of {rel(a)} ({d} bits)", move=same))
            if same:
                flagged.add(int(b))
    for i, (w, h) in enumerate(hashes.sizes):
        if i in flagged or i in hashes.errors:
            continue
        if min(w, h) < config.min_size:
            report.flags.append(Flag(paths[i], "too small", f"{w}x{h} < {config.min_size} px"))
            flagged.add(i)
        elif max(w, h) / max(1, min(w, h)) > config.max_aspect:
            report.flags.append(Flag(paths[i], "extreme aspect ratio", f"{w}x{h} > {config.max_aspect:g}:1"))
            flagged.add(i)
    if config.dark is not None or config.blurry is not None:
        for i, p in enumerate(paths):
            if i in flagged:
                continue
            mean, sharpness = _brightness_and_blur(p)
            if config.dark is not None and mean < config.dark:
                report.flags.append(Flag(p, "very dark", f"mean brightness {mean:.0f} < {config.dark:g}"))
            elif config.blurry is not None and sharpness < config.blurry:
                report.flags.append(Flag(p, "very blurry", f"Laplacian variance {sharpness:.0f} < {config.blurry:g}"))
    return report
