"""Seeded, duplicate-aware train/val/test split of class folders, with ``split-folders``; leakage check.

``SRC/<class>/*.jpg`` becomes ``DST/{train,val,test}/<class>/*.jpg`` plus ``DST/split.json`` (seed,
ratio, per-class counts, every file's split and hashes). Exact duplicates (same pixels) and near
duplicates (perceptual hashes within ``max_distance`` bits) of a class are grouped and handed to
split-folders' ``group=`` hook, so a group always lands in one split: no leakage. The same input and
seed give the same split on any machine: split-folders sorts the groups before its seeded shuffle.

:func:`check_leakage` reports exact and near duplicates across the splits of any existing dataset.

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

import numpy as np

from ._io import with_default_mode, write_json_atomic
from .data.folders import IMAGE_EXTENSIONS, list_labelled_images
from .errors import BirdclsError

__all__ = ["SPLITS", "SplitReport", "split_dataset"]

SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    dst: Path
    counts: dict[str, dict[str, int]]  # class -> split -> images
    skipped_non_images: int
    empty_classes: list[str]  # class folders without images: left out of the split
    duplicate_groups: int = 0  # groups of 2+ images kept together

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
    for share, name, why in zip(ratio, SPLITS, ("every class needs training images",
                                                "training needs validation images (early stopping, best epoch)",
                                                "the test report needs test images")):
        if share == 0:
            raise BirdclsError(f"--ratio gives {name} 0: {why}; e.g. --ratio 0.7 0.15 0.15")
    return ratio  # type: ignore[return-value]


def split_sizes(n: int, ratio: tuple[float, float, float]) -> tuple[int, int, int]:
    """How split-folders divides ``n`` shuffled items (groups of duplicates count once): train and val floored,
    test the rest."""
    train = int(ratio[0] * n)
    val = int(ratio[1] * n)
    return train, val, n - train - val


def smallest_class(ratio: tuple[float, float, float]) -> int:
    """The fewest items a class can have for ``ratio`` to give each split at least one."""
    return next(n for n in range(3, 10_000) if min(split_sizes(n, ratio)) >= 1)


def _check_class_sizes(groups_per_class: dict[str, int], ratio: tuple[float, float, float]) -> None:
    """A class that would leave a split empty cannot be trained and tested on: refuse it before copying."""
    small = {c: n for c, n in groups_per_class.items() if min(split_sizes(n, ratio)) < 1}
    if small:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(small.items()))
        raise BirdclsError(f"class(es) {listed} have too few images for --ratio {' '.join(f'{r:g}' for r in ratio)}: "
                           f"each needs at least {smallest_class(ratio)} (duplicates count once) so that train, val "
                           "and test get one each; add images or remove the folder(s)")


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


def _duplicate_groups(paths: list[Path], hashes, max_distance: int) -> dict[Path, tuple[Path, ...]]:
    """Union-find over exact and near duplicates within one class: path -> its group (sorted tuple)."""
    from .hashing import near_pairs

    index = {p: i for i, p in enumerate(hashes.paths)}
    local = [index[p] for p in paths]
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_pixel: dict[str, int] = {}
    for k, i in enumerate(local):
        px = hashes.pixel[i]
        if px:
            union(k, by_pixel.setdefault(px, k))
    if max_distance >= 0 and len(local) > 1:
        for a, b, _ in near_pairs(hashes.phash[local], max_distance, valid=hashes.informative[local]):
            union(int(a), int(b))
    members: dict[int, list[Path]] = {}
    for k, p in enumerate(paths):
        members.setdefault(find(k), []).append(p)
    return {p: tuple(sorted(group)) for group in members.values() for p in group}


def split_dataset(src: str | os.PathLike, dst: str | os.PathLike, ratio: tuple[float, ...] = (0.7, 0.15, 0.15),
                  seed: int = 1337, overwrite: bool = False, move: bool = False, max_distance: int = 4,
                  workers: int | None = None) -> SplitReport:
    """Split ``src/<class>/`` images into ``dst/{train,val,test}/<class>/`` (copies, or moves with ``move``).

    Duplicates within ``max_distance`` perceptual-hash bits (and identical pixels) stay in one split;
    ``max_distance=-1`` groups exact duplicates only. Non-image files are left behind and counted.
    A class too small to give every split an image is refused before anything is copied; class folders
    without images and hidden folders (``.quarantine`` from ``birdcls clean``) are left out.
    """
    import splitfolders

    from .hashing import hash_images, phash_hex

    src, dst = Path(src), Path(dst)
    ratio = _check_ratio(tuple(float(r) for r in ratio))
    _check_paths(src, dst, overwrite)
    by_class, others = list_labelled_images(src)
    empty = sorted(c for c, files in by_class.items() if not files)
    by_class = {c: files for c, files in by_class.items() if files}
    if not by_class:
        raise BirdclsError(f"{src} has class folders but no images in them: add .jpg/.png files")
    if not -1 <= max_distance <= 16:
        raise BirdclsError(f"--max-distance must be between -1 and 16 bits, got {max_distance}: e.g. 4")
    formats = sorted(IMAGE_EXTENSIONS | {e.upper() for e in IMAGE_EXTENSIONS})
    all_paths = [p for files in by_class.values() for p in files]
    hashes = hash_images(all_paths, workers=workers)
    group_of: dict[Path, tuple[Path, ...]] = {}
    for files in by_class.values():
        group_of.update(_duplicate_groups(files, hashes, max_distance))
    info = {p: (phash_hex(h), px) for p, h, px in zip(hashes.paths, hashes.phash, hashes.pixel)}

    n_dup_groups = len({g for g in group_of.values() if len(g) > 1})
    _check_class_sizes({c: len({group_of.get(f, (f,)) for f in files}) for c, files in by_class.items()}, ratio)
    wanted = set(all_paths)

    def group(files: list[Path]) -> list[tuple[Path, ...]]:
        # split-folders hands over one folder's files (paths built from SRC as given, like ours); return each
        # duplicate group once, as a tuple, so the group moves as one unit. Files of folders that are not
        # classes (hidden ones, such as clean's .quarantine) are not handed back, so never copied or moved.
        return sorted({group_of.get(Path(f), (Path(f),)) for f in files if Path(f) in wanted})

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        splitfolders.ratio(str(src), output=str(staging), seed=seed, ratio=ratio, move=move, formats=formats,
                           group=group)
        for folder in staging.glob("*/*"):  # split-folders makes a folder for every source folder
            if folder.is_dir() and folder.name not in by_class:
                folder.rmdir()  # empty: its files were never handed over
        files: dict[str, Any] = {}
        counts: dict[str, dict[str, int]] = {}
        for cls in sorted(by_class):
            counts[cls] = {}
            for split in SPLITS:
                folder = staging / split / cls
                names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
                counts[cls][split] = len(names)
                for name in names:
                    phash, pixel = info.get(src / cls / name, ("", ""))
                    members = group_of.get(src / cls / name, ())
                    files[f"{split}/{cls}/{name}"] = {"split": split, "class": cls, "source": f"{cls}/{name}",
                                                      "phash": phash, "pixel_sha256": pixel,
                                                      "group": members[0].name if len(members) > 1 else None}
        write_json_atomic(staging / "split.json", {
            "source": str(src.resolve()), "seed": seed, "ratio": list(ratio), "move": move,
            "max_distance": max_distance, "counts": counts, "empty_classes": empty, "files": files,
        })
        if dst.exists():
            shutil.rmtree(dst)
        with_default_mode(staging, directory=True)
        os.replace(staging, dst)
    except BaseException:
        if move:  # the moved images live in the staging folder now: never delete them
            raise BirdclsError(f"split stopped part-way; the moved images are in {staging}: move them back to {src}") from None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SplitReport(dst, counts, len(others), empty, n_dup_groups)


@dataclass
class LeakageReport:
    """Exact and near duplicates that straddle two splits of a dataset."""

    root: Path
    n_images: int
    max_distance: int
    pairs: list[dict[str, Any]]  # a, b, split_a, split_b, distance, exact, same_label
    unreadable: int
    png: Path | None = None

    def count(self, exact: bool | None = None, splits: tuple[str, str] | None = None) -> int:
        rows = [p for p in self.pairs if exact is None or p["exact"] == exact]
        if splits is not None:
            rows = [p for p in rows if {p["split_a"], p["split_b"]} == set(splits)]
        return len(rows)

    def images_with_copy_in(self, split: str, other: str = "train") -> int:
        """How many images of ``split`` have at least one duplicate in ``other``."""
        hits = {p["a"] if p["split_a"] == split else p["b"] for p in self.pairs
                if {p["split_a"], p["split_b"]} == {split, other}}
        return len(hits)

    def summary(self) -> str:
        lines = [f"{self.n_images} images checked; duplicates across splits (perceptual hash within "
                 f"{self.max_distance} bits):",
                 f"  exact (same pixels): {self.count(exact=True)} pairs; near: {self.count(exact=False)} pairs"]
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            lines.append(f"  {a}-{b}: {self.count(splits=(a, b))} pairs")
        for split in ("val", "test"):
            lines.append(f"  {split} images with a duplicate in train: {self.images_with_copy_in(split)}")
        conflicts = sum(1 for p in self.pairs if not p["same_label"])
        if conflicts:
            lines.append(f"  pairs whose two images carry different labels: {conflicts}")
        if self.unreadable:
            lines.append(f"  unreadable files skipped: {self.unreadable}")
        if self.png:
            lines.append(f"  example pairs: {self.png}")
        return "\n".join(lines)


def _plot_pairs(pairs: list[dict[str, Any]], root: Path, dest: Path, per_row: int = 4) -> Path:
    """A grid of side-by-side pairs (``per_row`` pairs a row), each titled with its splits and distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import save_figure_atomic
    from .data.decode import open_image

    if not pairs:  # a small card, not a wide empty grid
        fig = plt.figure(figsize=(5, 1.2))
        fig.text(0.5, 0.5, "no duplicates across splits", ha="center", va="center", fontsize=12)
        save_figure_atomic(dest, fig, dpi=100)
        plt.close(fig)
        return dest
    n_rows = -(-len(pairs) // per_row)
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(2.0 * 2 * per_row, 2.3 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, pair in enumerate(pairs):
        row, col = divmod(k, per_row)
        kind = "exact" if pair["exact"] else f"{pair['distance']} bits"
        for offset, key, split in ((0, "a", pair["split_a"]), (1, "b", pair["split_b"])):
            ax = axes[row][2 * col + offset]
            ax.imshow(open_image(root / pair[key], size=200))
            name = f"{Path(pair[key]).parent.name}/{Path(pair[key]).name}"
            ax.set_title(f"{split} ({kind})\n{name[-26:]}" if offset == 0 else f"{split}\n{name[-26:]}", fontsize=7)
    save_figure_atomic(dest, fig, tight=True, dpi=100)
    plt.close(fig)
    return dest


def check_leakage(data: str | os.PathLike, max_distance: int = 4, report_png: str | os.PathLike | None = None,
                  examples: int = 16, workers: int | None = None) -> LeakageReport:
    """Find exact and near duplicates across the train/val/test splits of ``data``.

    Writes a PNG of example pairs (``report_png``, default ``DATA/leakage_pairs.png``), nearest first
    after a few exact ones, so a person can judge what the hash calls a duplicate.
    """
    from .hashing import hash_images, near_pairs

    if not 0 <= max_distance <= 16:
        raise BirdclsError(f"--max-distance must be between 0 and 16 bits, got {max_distance}: e.g. 4")
    root = Path(data)
    if not root.is_dir():
        raise BirdclsError(f"{root} is not a folder: pass a dataset with train/, val/ and/or test/ folders")
    names = [(name, root / folder) for name, folder in (("train", "train"), ("val", "val"), ("val", "valid"),
                                                          ("test", "test")) if (root / folder).is_dir()]
    if len(names) < 2:
        raise BirdclsError(f"{root} needs at least two of train/, val/ and test/ to check for leakage between them")
    paths, split_ids, labels = [], [], []
    for sid, (_, folder) in enumerate(names):
        by_class, _ = list_labelled_images(folder)
        for label, files in by_class.items():
            paths += files
            split_ids += [sid] * len(files)
            labels += [label] * len(files)
    if not paths:
        raise BirdclsError(f"{root} holds no images in its splits: nothing to check")
    hashes = hash_images(paths, workers=workers)
    groups = np.asarray(split_ids)
    found = near_pairs(hashes.phash, max_distance, groups=groups, valid=hashes.informative)
    # Exact copies can hash far apart only if decoding failed; the pixel hash catches them regardless.
    by_pixel: dict[str, list[int]] = {}
    for i, px in enumerate(hashes.pixel):
        if px:
            by_pixel.setdefault(px, []).append(i)
    seen = {(int(a), int(b)) for a, b, _ in found}
    extra = [(a, b, 0) for idx in by_pixel.values() for k, a in enumerate(idx) for b in idx[k + 1:]
             if split_ids[a] != split_ids[b] and (a, b) not in seen]
    pairs = []
    for a, b, d in [*map(tuple, found), *extra]:
        a, b = int(a), int(b)
        pairs.append({"a": str(paths[a].relative_to(root)), "b": str(paths[b].relative_to(root)),
                      "split_a": names[split_ids[a]][0], "split_b": names[split_ids[b]][0], "distance": int(d),
                      "exact": bool(hashes.pixel[a]) and hashes.pixel[a] == hashes.pixel[b],
                      "same_label": labels[a] == labels[b]})
    pairs.sort(key=lambda p: (not p["exact"], p["distance"], p["a"]))
    report = LeakageReport(root, len(paths), max_distance, pairs, len(hashes.errors))
    sample = [p for p in pairs if p["exact"]][: examples // 4]
    sample += [p for p in pairs if not p["exact"]][: examples - len(sample)]
    report.png = _plot_pairs(sample, root, Path(report_png) if report_png else root / "leakage_pairs.png")
    return report
