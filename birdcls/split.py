"""Seeded train/val/test split of class folders, with ``split-folders``.

``SRC/<class>/*.jpg`` becomes ``DST/{train,val,test}/<class>/*.jpg`` plus ``DST/split.json`` (seed,
ratio, per-class counts, every file's split). The same input and seed give the same split on any
machine: split-folders sorts each class's files before its seeded shuffle.

The split is built in a temporary folder beside DST and renamed into place only when complete.

Example:
    >>> split_dataset("data/raw", "data/birds", ratio=(0.7, 0.15, 0.15), seed=1337)
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import write_json_atomic
from .data.folders import IMAGE_EXTENSIONS, list_labelled_images
from .errors import BirdclsError

__all__ = ["SPLITS", "SplitReport", "split_dataset"]

SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    dst: Path
    counts: dict[str, dict[str, int]]  # class -> split -> images
    skipped_non_images: int
    too_small: list[str]

    def table(self) -> str:
        width = max([len(c) for c in self.counts] + [5])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>5}" for s in SPLITS)]
        for cls, per in self.counts.items():
            lines.append(f"{cls:<{width}}  " + "  ".join(f"{per[s]:>5}" for s in SPLITS))
        totals = {s: sum(per[s] for per in self.counts.values()) for s in SPLITS}
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{totals[s]:>5}" for s in SPLITS))
        return "\n".join(lines)


def _check_ratio(ratio: tuple[float, ...]) -> tuple[float, float, float]:
    if len(ratio) != 3:
        raise BirdclsError(f"--ratio takes three numbers (train val test), got {len(ratio)}: e.g. --ratio 0.7 0.15 0.15")
    if any(r < 0 for r in ratio):
        raise BirdclsError(f"--ratio values must not be negative, got {' '.join(map(str, ratio))}: e.g. 0.7 0.15 0.15")
    if not math.isclose(sum(ratio), 1.0, abs_tol=1e-6):
        raise BirdclsError(f"--ratio must sum to 1, got {' '.join(map(str, ratio))} = {sum(ratio):g}: e.g. 0.7 0.15 0.15")
    if ratio[0] == 0:
        raise BirdclsError("--ratio gives train 0: every class needs training images, e.g. 0.7 0.15 0.15")
    return ratio  # type: ignore[return-value]


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    if not src.is_dir():
        raise BirdclsError(f"source folder {src} does not exist: pass a folder with one sub-folder per class")
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise BirdclsError(f"output {dst} is inside the source {src}: choose an output folder outside it")
    if dst_abs in src_abs.parents:
        raise BirdclsError(f"output {dst} contains the source {src}: choose an output folder outside it")
    if dst.exists() and not (dst.is_dir() and not any(dst.iterdir())) and not overwrite:
        raise BirdclsError(f"output {dst} already exists: pass --overwrite to replace it or choose another folder")


def _ensure_one_train_image(staging: Path, classes: list[str]) -> None:
    """split-folders floors each share, so a class of 1-2 images can get none in train: move one there."""
    for cls in classes:
        train = staging / "train" / cls
        if train.is_dir() and any(train.iterdir()):
            continue
        for donor in ("test", "val"):
            folder = staging / donor / cls
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            if files:
                train.mkdir(parents=True, exist_ok=True)
                os.replace(files[0], train / files[0].name)
                break


def split_dataset(src: str | os.PathLike, dst: str | os.PathLike, ratio: tuple[float, ...] = (0.7, 0.15, 0.15),
                  seed: int = 1337, overwrite: bool = False, move: bool = False) -> SplitReport:
    """Split ``src/<class>/`` images into ``dst/{train,val,test}/<class>/`` (copies, or moves with ``move``).

    Non-image files are left behind and counted. Every class keeps at least one image in train; a class
    too small to fill all three splits is reported in ``too_small``.
    """
    import splitfolders

    src, dst = Path(src), Path(dst)
    ratio = _check_ratio(tuple(float(r) for r in ratio))
    _check_paths(src, dst, overwrite)
    by_class, others = list_labelled_images(src)
    by_class = {c: files for c, files in by_class.items() if files}
    if not by_class:
        raise BirdclsError(f"{src} has class folders but no images in them: add .jpg/.png files")
    formats = sorted(IMAGE_EXTENSIONS | {e.upper() for e in IMAGE_EXTENSIONS})
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        splitfolders.ratio(str(src), output=str(staging), seed=seed, ratio=ratio, move=move, formats=formats)
        _ensure_one_train_image(staging, list(by_class))
        files: dict[str, Any] = {}
        counts: dict[str, dict[str, int]] = {}
        for cls in sorted(by_class):
            counts[cls] = {}
            for split in SPLITS:
                folder = staging / split / cls
                names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
                counts[cls][split] = len(names)
                for name in names:
                    files[f"{split}/{cls}/{name}"] = {"split": split, "class": cls, "source": f"{cls}/{name}"}
        for split in SPLITS:  # split-folders leaves no folder for an empty split: make every split complete
            for cls in counts:
                (staging / split / cls).mkdir(parents=True, exist_ok=True)
        too_small = [c for c, per in counts.items() if any(per[s] == 0 for s in SPLITS if ratio[SPLITS.index(s)] > 0)]
        write_json_atomic(staging / "split.json", {
            "source": str(src.resolve()), "seed": seed, "ratio": list(ratio), "move": move,
            "counts": counts, "too_small": too_small, "files": files,
        })
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(staging, dst)
    except BaseException:
        if move:  # the moved images live in the staging folder now: never delete them
            raise BirdclsError(f"split stopped part-way; the moved images are in {staging}: move them back to {src}") from None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SplitReport(dst, counts, len(others), too_small)
