"""Seeded, duplicate-aware train/val/test split of class folders, with ``split-folders``; leakage check.

``SRC/<class>/*.jpg`` becomes ``DST/{train,val,test}/<class>/*.jpg`` plus ``DST/split.json`` (seed,
ratio, per-class counts, every file's split and hashes). Exact duplicates (same pixels) and near
duplicates (perceptual hashes within ``max_distance`` bits) of a class are grouped and handed to
split-folders' ``group=`` hook, so a group always lands in one split: no leakage. The same input and
seed give the same split on any machine: split-folders sorts the groups before its seeded shuffle.

:func:`check_leakage` reports exact and near duplicates across the splits of any existing dataset.

split-folders' own per-class steps decide where each image goes without copying it, so the whole plan
(source -> target for every file) is known before one image is copied or moved; a ``--move`` that fails or is
interrupted part-way moves every image back. The split is built in a temporary folder beside DST and
swapped into place only when complete; ``--overwrite`` replaces only a split dataset (one with
``split.json``) or an empty folder, and the old split is deleted only once the new one is in place.

Example:
    >>> split_dataset("data/raw", "data/birds", ratio=(0.7, 0.15, 0.15), seed=1337)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import LOCK_NAME, is_within, signals_deferred, with_default_mode, write_json_atomic
from ._text import middle_cut, name_list
from .data.folders import IMAGE_EXTENSIONS, SPLIT_NAMES, class_files, list_labelled_images
from .errors import BirdclsError, check_int, describe

__all__ = ["SPLITS", "SplitReport", "split_dataset"]

SPLITS = ("train", "val", "test")
MANIFEST = "split.json"  # what makes a folder a split dataset that --overwrite may replace

Plan = list[tuple[Path, Path]]  # (source image, its place in the staging folder), one per image


@dataclass
class SplitReport:
    dst: Path
    counts: dict[str, dict[str, int]]  # class -> split -> images
    skipped_non_images: int
    empty_classes: list[str]  # class folders without readable images: left out of the split
    duplicate_groups: int = 0  # groups of 2+ images kept together
    nested_images: dict[str, int] = field(default_factory=dict)  # class -> images in its sub-folders: left out
    unreadable: dict[str, str] = field(default_factory=dict)  # "class/name" -> why it did not decode: left out

    def table(self) -> str:
        width = max([len(middle_cut(c)) for c in self.counts] + [5])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>5}" for s in SPLITS)]
        for cls, per in self.counts.items():
            lines.append(f"{middle_cut(cls):<{width}}  " + "  ".join(f"{per[s]:>5}" for s in SPLITS))
        totals = {s: sum(per[s] for per in self.counts.values()) for s in SPLITS}
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{totals[s]:>5}" for s in SPLITS))
        return "\n".join(lines)

    def nested_note(self) -> str:
        """One line on the images left out because they sit in sub-folders of class folders ("" when none):
        ``birdcls predict CLASS_DIR`` goes into sub-folders, so without it a user may think they were split."""
        n = sum(self.nested_images.values())
        if not n:
            return ""
        where = ", ".join(f"{cls} {k}" for cls, k in sorted(self.nested_images.items()))
        if n == 1:
            return (f"1 image in a sub-folder of a class folder was left out: move it up into its class folder to "
                    f"include it ({where})")
        return (f"{n} images in sub-folders of class folders were left out: move them up into their class folder "
                f"to include them ({where})")

    def unreadable_note(self, src: Path) -> str:
        """One line on the files with an image suffix that do not decode ("" when none): left where they are,
        since training would skip them anyway, and named so that the user can look."""
        n = len(self.unreadable)
        if not n:
            return ""
        shown = name_list(sorted(self.unreadable), 3)
        return (f"left {n} unreadable image{'s' if n != 1 else ''} in {src} out of the split ({shown}; split.json "
                f"says why): replace {'them' if n != 1 else 'it'} with good copies, or run `birdcls clean {src}`")


def _check_ratio(given: Any) -> tuple[float, float, float]:
    try:
        ratio = tuple(float(r) for r in given)
    except (TypeError, ValueError):
        raise BirdclsError(f"ratio takes three numbers (train val test), got {given!r}: e.g. ratio=(0.7, 0.15, 0.15) "
                           "or --ratio 0.7 0.15 0.15") from None
    if len(ratio) != 3:
        raise BirdclsError(f"ratio (--ratio) takes three numbers (train val test), got {len(ratio)}: e.g. --ratio 0.7 0.15 0.15 "
                           "(ratio=(0.7, 0.15, 0.15))")
    if any(r < 0 for r in ratio):
        raise BirdclsError(f"ratio (--ratio) values must not be negative, got {' '.join(map(str, ratio))}: e.g. 0.7 0.15 0.15")
    if not math.isclose(sum(ratio), 1.0, abs_tol=1e-6):
        raise BirdclsError(f"ratio (--ratio) must sum to 1, got {' '.join(map(str, ratio))} = {sum(ratio):g}: e.g. 0.7 0.15 0.15")
    for share, name, why in zip(ratio, SPLITS, ("every class needs training images",
                                                "training needs validation images (early stopping, best epoch)",
                                                "the test report needs test images")):
        if share == 0:
            raise BirdclsError(f"ratio (--ratio) gives {name} 0: {why}; e.g. --ratio 0.7 0.15 0.15")
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


#: What a split dataset's folder holds of birdcls's own: --overwrite replaces these (with the folder) and no more.
_SPLIT_OWN = frozenset({*SPLIT_NAMES, MANIFEST, "leakage_pairs.png", LOCK_NAME, ".DS_Store"})


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse, before any work, a source or output that the split would fail on or destroy."""
    if src.is_file():
        raise BirdclsError(f"source {src} is a file, not a folder: unpack it first, then pass the folder with one "
                           "sub-folder per class")
    if not src.is_dir():
        raise BirdclsError(f"source folder {src} does not exist: pass a folder with one sub-folder per class")
    if _is_split_dataset(src) or _looks_split(src):
        raise BirdclsError(f"{src} is already split into train/, val/ and test/: train on it as it is (birdcls "
                           f"train {src} --out RUN), or split the class folders it came from")
    if is_within(dst, src):
        raise BirdclsError(f"output {dst} is inside the source {src}: choose an output folder outside it")
    if is_within(src, dst):
        raise BirdclsError(f"output {dst} contains the source {src}: choose an output folder outside it")
    if dst.exists() and not dst.is_dir():
        raise BirdclsError(f"output {dst} is a file: choose a folder for the split dataset")
    if is_within(Path.cwd(), dst):  # it would be swapped out from under the shell standing in it
        raise BirdclsError(f"output {dst} is the current folder or holds it: name a new folder, e.g. data/split")
    if not dst.is_dir() or not any(dst.iterdir()):
        return  # new or empty: nothing to lose
    if not _is_split_dataset(dst):
        raise BirdclsError(f"output {dst} is not empty and is not a split dataset (no {MANIFEST}): refusing to "
                           "overwrite it; choose another output folder")
    if not overwrite:
        raise BirdclsError(f"output {dst} already exists: pass --overwrite (overwrite=True) to replace it or choose "
                           "another folder")
    others = sorted(p.name + ("/" if p.is_dir() else "") for p in dst.iterdir() if p.name not in _SPLIT_OWN)
    if others:  # the swap replaces the whole folder: the user's notes or photos in it would go with the old split
        raise BirdclsError(f"output {dst} also holds what split did not write ({name_list(others, 5)}): move that out before "
                           "--overwrite replaces the folder, or choose another output folder")


def _looks_split(folder: Path) -> bool:
    """train/ and test/ holding class folders rather than images: a split dataset without split.json (one from
    `datasets get` or Kaggle). Raw classes that happen to be called train and test hold their images directly."""
    return all((folder / s).is_dir() and not class_files(folder / s)[0]
               and any(p.is_dir() and not p.name.startswith(".") for p in (folder / s).iterdir())
               for s in ("train", "test"))


def _is_split_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a split that ``birdcls split`` wrote (its split.json), so --overwrite may replace
    it; any other folder may hold a user's own files."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"seed", "ratio", "counts", "files"} <= manifest.keys()


def _nested_images(src: Path, classes: list[str]) -> dict[str, int]:
    """Images inside sub-folders of each class folder (hidden entries skipped): split leaves them out, since
    a class's images are the ones directly in its folder, and says so instead of dropping them silently."""
    found: dict[str, int] = {}
    for cls in classes:
        n = 0
        for sub in (p for p in (src / cls).iterdir() if p.is_dir() and not p.name.startswith(".")):
            for _root, dirs, names in os.walk(sub):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                n += sum(1 for f in names if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        if n:
            found[cls] = n
    return found


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

    position = {i: k for k, i in enumerate(local)}
    for first, *others in hashes.exact_groups(local):
        for i in others:
            union(position[first], position[i])
    if max_distance >= 0 and len(local) > 1:
        for a, b, _ in near_pairs(hashes.phash[local], max_distance, valid=hashes.informative[local]):
            union(int(a), int(b))
    members: dict[int, list[Path]] = {}
    for k, p in enumerate(paths):
        members.setdefault(find(k), []).append(p)
    return {p: tuple(sorted(group)) for group in members.values() for p in group}


def split_dataset(src: str | os.PathLike, dst: str | os.PathLike, ratio: tuple[float, ...] = (0.7, 0.15, 0.15),
                  seed: int = 1337, overwrite: bool = False, move: bool = False, max_distance: int = 4,
                  workers: int | None = None, progress: str = "none") -> SplitReport:
    """Split ``src/<class>/`` images into ``dst/{train,val,test}/<class>/`` (copies, or moves with ``move``).

    Duplicates within ``max_distance`` perceptual-hash bits (and identical pixels) stay in one split;
    ``max_distance=-1`` groups exact duplicates only. Non-image files are left behind and counted.
    A class too small to give every split an image is refused before anything is copied; class folders
    without images, images in sub-folders of class folders, files that do not decode (empty, truncated or
    not really images) and hidden folders (``.quarantine`` from ``birdcls clean``) are left out, and the
    report says so. A ``move`` that fails or is interrupted part-way puts every image back in ``src``
    before the error (or KeyboardInterrupt) goes on. ``progress`` (``auto``, ``bars``, ``lines`` or ``none``,
    on stderr) shows the hashing and the copying.
    """
    from ._terminal import progress_mode
    from .hashing import hash_images, phash_hex

    mode = progress_mode(progress, sys.stderr)
    src, dst = Path(src), Path(dst)
    ratio = _check_ratio(ratio)
    check_int(seed, "seed (--seed)", 0)
    check_int(max_distance, "max_distance (--max-distance)", -1, 16)
    _check_paths(src, dst, overwrite)
    by_class, others = list_labelled_images(src)
    nested = _nested_images(src, sorted(by_class))
    empty = sorted(c for c, files in by_class.items() if not files)
    by_class = {c: files for c, files in by_class.items() if files}
    if not by_class:
        raise BirdclsError(f"{src} has class folders but no images in them: add .jpg/.png files")
    hashes = hash_images([p for files in by_class.values() for p in files], workers=workers, progress=mode)
    readable, unreadable = _readable(by_class, hashes, src)
    empty = sorted(empty + [c for c in by_class if c not in readable])  # all its images unreadable
    by_class = readable
    if len(by_class) < 2:  # train refuses it: say so before copying, not after
        left_out = f" ({', '.join(empty[:5])} {'has' if len(empty) == 1 else 'have'} none)" if empty else ""
        raise BirdclsError(f"{src} has readable images in 1 class folder ({next(iter(by_class))}){left_out}: a "
                           f"classifier needs at least 2; add a folder of images for each class to {src}")
    group_of: dict[Path, tuple[Path, ...]] = {}
    for files in by_class.values():
        group_of.update(_duplicate_groups(files, hashes, max_distance))
    info = {p: (phash_hex(h), px) for p, h, px in zip(hashes.paths, hashes.phash, hashes.pixel)}

    n_dup_groups = len({g for g in group_of.values() if len(g) > 1})
    _check_class_sizes({c: len({group_of.get(f, (f,)) for f in files}) for c, files in by_class.items()}, ratio)

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    started: Plan = []  # with move: every (source, target) begun, the one in flight included
    try:
        plan = _plan(src, staging, by_class, group_of, ratio, seed)
        _place(plan, move, started, mode)
        counts, files = _manifest_files(plan, staging, info, group_of)
        write_json_atomic(staging / MANIFEST, {
            "source": str(src.resolve()), "seed": seed, "ratio": list(ratio), "move": move,
            "max_distance": max_distance, "counts": counts, "empty_classes": empty, "nested_images": nested,
            "unreadable": unreadable, "files": files,
        })
        with_default_mode(staging, directory=True)
        # a Ctrl-C here waits for the new split to be in place and the old one gone, then counts as having come
        # after the split: it is finished, and with --move its source is empty, so nothing is undone
        with signals_deferred(reraise=False):
            old = _swap_into_place(staging, dst)
            started.clear()  # nothing to move back any more
            if old is not None:
                old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        _undo(exc, staging, src, started if move else [])
        raise
    return SplitReport(dst, counts, len(others), empty, n_dup_groups, nested, unreadable)


def _readable(by_class: dict[str, list[Path]], hashes, src: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """The images that decoded, by class (classes left with none dropped), and ``class/name -> reason`` for the
    files that did not; none readable at all is an error."""
    broken = {hashes.paths[i]: reason for i, reason in hashes.errors.items()}
    readable = {c: [p for p in files if p not in broken] for c, files in by_class.items()}
    readable = {c: files for c, files in readable.items() if files}
    if not readable:
        first = min(broken)
        raise BirdclsError(f"none of the {len(broken)} images in {src} can be read (e.g. {first.parent.name}/"
                           f"{first.name}: {broken[first]}): replace them with good copies")
    return readable, {f"{p.parent.name}/{p.name}": broken[p] for p in sorted(broken)}


def _plan(src: Path, staging: Path, by_class: dict[str, list[Path]], group_of: dict[Path, tuple[Path, ...]],
          ratio: tuple[float, float, float], seed: int) -> Plan:
    """Where each image goes: split-folders' own steps for one class folder (its seeded shuffle of the sorted
    duplicate groups, then its cut at the ratios), as ``splitfolders.ratio`` runs them, but without its
    copying, so that every image's source and target are known before the first one is touched (a --move
    stopped part-way can then be undone). Hidden folders' files (``.quarantine``) are never handed back."""
    from splitfolders.split import setup_files, split_files

    wanted = {p for files in by_class.values() for p in files}

    def group(files: list[Path]) -> list[tuple[Path, ...]]:  # each duplicate group once: it lands in one split
        return sorted({group_of.get(Path(f), (Path(f),)) for f in files if Path(f) in wanted})

    plan: Plan = []
    for cls in by_class:
        units = setup_files(src / cls, seed, group=group)
        train, val, _ = split_sizes(len(units), ratio)
        for units_of_split, split in split_files(units, train, train + val, True):
            plan += [(source, staging / split / cls / source.name) for unit in units_of_split for source in unit]
    for split in SPLITS:  # every class in every split, as split-folders makes them
        for cls in by_class:
            (staging / split / cls).mkdir(parents=True, exist_ok=True)
    return plan


def _move_file(source: Path, target: Path) -> None:
    """Move one image: a rename on one disk, a copy then delete across disks."""
    shutil.move(source, target)


def _copy_file(source: Path, target: Path) -> None:
    """Copy one image with its timestamps, as split-folders does."""
    shutil.copy2(source, target)


def _place(plan: Plan, move: bool, started: Plan, progress: str) -> None:
    """Copy or move every image to its target. Each pair joins ``started`` just before it is moved, so that
    after a failure or Ctrl-C part-way ``started`` lists all there is to move back."""
    from ._terminal import with_progress

    put = _move_file if move else _copy_file
    for source, target in with_progress(plan, len(plan), progress, "move" if move else "copy", "images"):
        started.append((source, target))
        put(source, target)


def _manifest_files(plan: Plan, staging: Path, info: dict[Path, tuple[str, str]],
                    group_of: dict[Path, tuple[Path, ...]]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """split.json's per-class counts and its entry for every file (class, then split, then name order)."""
    where = {source: target.relative_to(staging).parts for source, target in plan}
    counts: dict[str, dict[str, int]] = {cls: dict.fromkeys(SPLITS, 0) for cls in sorted({c for _, c, _ in
                                                                                          where.values()})}
    files: dict[str, Any] = {}
    for source, (split, cls, name) in sorted(where.items(), key=lambda kv: (kv[1][1], SPLITS.index(kv[1][0]),
                                                                          kv[1][2])):
        counts[cls][split] += 1
        phash, pixel = info.get(source, ("", ""))
        members = group_of.get(source, ())
        files[f"{split}/{cls}/{name}"] = {"split": split, "class": cls, "source": f"{cls}/{name}",
                                          "phash": phash, "pixel_sha256": pixel,
                                          "group": members[0].name if len(members) > 1 else None}
    return counts, files


def _swap_into_place(staging: Path, dst: Path) -> Path | None:
    """Rename the finished split to ``dst``. An existing ``dst`` is first renamed aside (hidden, beside it) and
    renamed back if the second rename fails or is interrupted, so there is always one whole split at ``dst``.
    Returns the old split, for the caller to delete."""
    old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old") if dst.exists() else None
    try:
        if old is not None:
            os.replace(dst, old)
        os.replace(staging, dst)
    except BaseException:
        if old is not None and old.exists() and not dst.exists():
            os.replace(old, dst)
        raise
    return old


def _undo(exc: BaseException, staging: Path, src: Path, moved: Plan) -> None:
    """After a failed or interrupted split: move back what was moved, remove the staging folder, and turn a
    failure of a --move into a one-line error that says the source is whole again (Ctrl-C stays Ctrl-C)."""
    if moved:
        _move_back(moved, staging, src)  # raises, keeping the staging folder, only if it cannot
    shutil.rmtree(staging, ignore_errors=True)
    if moved and not isinstance(exc, KeyboardInterrupt):
        why = str(exc) if isinstance(exc, BirdclsError) else describe(exc)
        raise BirdclsError(f"split --move stopped part-way ({why}): every image already moved was moved back "
                           f"to {src}, so the source is as it was; fix the problem and run it again") from exc


def _move_back(moved: Plan, staging: Path, src: Path) -> None:
    """Put every moved image back where it came from, last moved first. A target whose source still exists
    is a copy across disks that was cut short (or not yet followed by the delete): it is dropped."""
    lost: list[Path] = []
    try:
        for source, target in reversed(moved):
            if source.exists():
                target.unlink(missing_ok=True)
            elif target.exists():
                shutil.move(target, source)
            else:
                lost.append(source)
    except BaseException as exc:  # a second Ctrl-C included: say where the images are rather than lose track
        left = sum(1 for split in SPLITS if (staging / split).is_dir()
                   for f in (staging / split).rglob("*") if f.is_file())
        raise BirdclsError(f"split --move stopped part-way and moving the images back failed ({describe(exc)}): "
                           f"{left} images are still in {staging}/<split>/<class>/; move them back into "
                           f"{src}/<class>/") from exc
    if lost:
        raise BirdclsError(f"split --move stopped part-way; the moved images are back in {src} except {len(lost)} "
                           f"not found in {src} or {staging} (e.g. {lost[0]}): look for them there")


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
        def pairs(n: int) -> str:
            return f"{n} pair{'s' if n != 1 else ''}"

        lines = [f"{self.n_images} images checked; duplicates across splits (perceptual hash within "
                 f"{self.max_distance} bits):",
                 f"  exact (same pixels): {pairs(self.count(exact=True))}; near: {pairs(self.count(exact=False))}"]
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            lines.append(f"  {a}-{b}: {pairs(self.count(splits=(a, b)))}")
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
    from ._io import save_figure_atomic
    from ._plots import figure
    from .data.decode import open_image

    if not pairs:  # a small card, not a wide empty grid
        fig = figure(figsize=(5, 1.2))
        fig.text(0.5, 0.5, "no duplicates across splits", ha="center", va="center", fontsize=12)
        save_figure_atomic(dest, fig, dpi=100)
        return dest
    per_row = min(per_row, len(pairs))  # one pair: one pair wide, not a row of empty frames
    n_rows = -(-len(pairs) // per_row)
    fig = figure(figsize=(2.0 * 2 * per_row, 2.3 * n_rows))
    axes = fig.subplots(n_rows, 2 * per_row, squeeze=False)
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
    return dest


def _check_report_png(dest: Path, splits: list[Path]) -> None:
    """Before the hashing: the pairs' plot is a .png outside the splits (it would otherwise replace a training
    image, or fail at the end on a suffix matplotlib cannot write)."""
    if dest.suffix.lower() != ".png":
        raise BirdclsError(f"--report {dest}: the report is a PNG; give a file name ending in .png")
    if any(is_within(dest, folder) for folder in splits):
        raise BirdclsError(f"--report {dest} is inside the dataset's splits: write it elsewhere, e.g. leakage_pairs.png")


def check_leakage(data: str | os.PathLike, max_distance: int = 4, report_png: str | os.PathLike | None = None,
                  examples: int = 16, workers: int | None = None, progress: str = "none") -> LeakageReport:
    """Find exact and near duplicates across the train/val/test splits of ``data``.

    Writes a PNG of example pairs (``report_png``, default ``DATA/leakage_pairs.png``), nearest first
    after a few exact ones, so a person can judge what the hash calls a duplicate. ``progress`` shows the
    hashing (``auto``, ``bars``, ``lines`` or ``none``, on stderr).
    """
    from ._terminal import progress_mode
    from .hashing import hash_images, near_pairs

    mode = progress_mode(progress, sys.stderr)

    check_int(max_distance, "max_distance (--max-distance)", 0, 16)
    check_int(examples, "examples", 0)
    root = Path(data)
    if not root.is_dir():
        raise BirdclsError(f"{root} is not a folder: pass a dataset with train/, val/ and/or test/ folders")
    names = [(name, root / folder) for name, folder in (("train", "train"), ("val", "val"), ("val", "valid"),
                                                          ("test", "test")) if (root / folder).is_dir()]
    if len(names) < 2:
        raise BirdclsError(f"{root} needs at least two of train/, val/ and test/ to check for leakage between them")
    if report_png is not None:
        _check_report_png(Path(report_png), [folder for _, folder in names])
    paths, split_ids, labels = [], [], []
    for sid, (_, folder) in enumerate(names):
        by_class, _ = list_labelled_images(folder)
        for label, files in by_class.items():
            paths += files
            split_ids += [sid] * len(files)
            labels += [label] * len(files)
    if not paths:
        raise BirdclsError(f"{root} holds no images in its splits: nothing to check")
    hashes = hash_images(paths, workers=workers, progress=mode)
    groups = np.asarray(split_ids)
    found = near_pairs(hashes.phash, max_distance, groups=groups, valid=hashes.informative)
    # Exact copies can hash far apart only if decoding failed; the pixel hash catches them regardless.
    seen = {(int(a), int(b)) for a, b, _ in found}
    extra = [(a, b, 0) for idx in hashes.exact_groups() for k, a in enumerate(idx) for b in idx[k + 1:]
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
