"""Perceptual and exact image hashes for many files at once, and fast near-duplicate search.

``phash`` here is imagehash's ``phash`` (greyscale, 32x32 Lanczos resize, 2-D DCT, low 8x8 block
against its median), computed in batches: the per-image work is only decoding and resizing, done in
a process pool, and the DCTs run as one vectorised call. ``tests/test_hashing.py`` checks that every
hash equals ``imagehash.phash``. Exact duplicates are images with the same RGB pixels.

Near-duplicate search uses the pigeonhole principle: split the 64 bits into ``max_distance + 1``
chunks; two hashes within ``max_distance`` bits agree exactly on at least one chunk, so only hashes
sharing a chunk value are compared.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ._io import signals_deferred
from .data.decode import UNREADABLE, pixel_sha256, to_8bit, unreadable_reason
from .errors import check_int

__all__ = ["MIN_SPREAD", "ImageHashes", "hash_images", "hamming", "near_pairs", "phash_hex"]

_SIZE = 32  # imagehash.phash: hash_size 8 * highfreq_factor 4
# The perceptual hash ignores contrast, so below about 2 grey levels of spread in the 32x32 greyscale it is
# computed from, 8-bit rounding decides its bits: every flat or blank image hashes to 0x8000000000000000.
MIN_SPREAD = 2.0


@dataclass
class ImageHashes:
    """Hashes of ``paths``: ``phash`` (uint64, 0 where unreadable), ``pixel`` (hex sha256 or ''), errors,
    ``sizes`` (width, height; 0 where unreadable) and ``spread`` (standard deviation of the 32x32 greyscale
    the perceptual hash comes from; 0 where unreadable)."""

    paths: list[Path]
    phash: np.ndarray
    pixel: list[str]
    errors: dict[int, str]
    sizes: np.ndarray | None = None
    spread: np.ndarray | None = None

    @property
    def informative(self) -> np.ndarray:
        """Readable images whose perceptual hash says something about them: a flat or blank image's hash is
        the same as every other's, so near-duplicate matching must leave it out (exact copies still match
        by their pixel hash)."""
        if self.spread is None:
            return self.ok
        return self.ok & (self.spread >= MIN_SPREAD)

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.paths), bool)
        mask[list(self.errors)] = False
        return mask

    def exact_groups(self, indices: Iterable[int] | None = None) -> list[list[int]]:
        """Indices with the same pixels (two or more each), keeping the order of ``indices`` (default: all)
        inside each group; unreadable images have no pixel hash and match nothing."""
        by_pixel: dict[str, list[int]] = {}
        for i in range(len(self.paths)) if indices is None else indices:
            if self.pixel[i]:
                by_pixel.setdefault(self.pixel[i], []).append(i)
        return [members for members in by_pixel.values() if len(members) > 1]


def _load(path: str) -> tuple[np.ndarray | None, str, str, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            im = to_8bit(im)  # 16/32-bit: scaled, not clipped to white
            rgb = im.convert("RGB")
            pixel = pixel_sha256(rgb)
            grey = im.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS)
            return np.asarray(grey, dtype=np.uint8), pixel, "", im.size
    except UNREADABLE as exc:
        return None, "", unreadable_reason(exc, path), (0, 0)


def _load_chunk(paths: Sequence[str]) -> tuple[np.ndarray, list[str], list[str], list[tuple[int, int]]]:
    grey = np.zeros((len(paths), _SIZE, _SIZE), np.uint8)
    pixels, errors, sizes = [], [], []
    for i, p in enumerate(paths):
        arr, pixel, err, size = _load(p)
        if arr is not None:
            grey[i] = arr
        pixels.append(pixel)
        errors.append(err)
        sizes.append(size)
    return grey, pixels, errors, sizes


def _phash_batch(grey: np.ndarray) -> np.ndarray:
    """imagehash.phash for a stack of 32x32 greyscale images, as uint64 (first bit = most significant)."""
    from scipy.fft import dct

    pixels = grey.astype(np.float64)
    coeffs = dct(dct(pixels, axis=1), axis=2)[:, :8, :8].reshape(len(grey), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def phash_hex(value: int | np.uint64) -> str:
    """The same 16-hex-digit string as ``str(imagehash.phash(img))``."""
    return f"{int(value):016x}"


def hash_images(paths: Sequence[str | os.PathLike], workers: int | None = None, chunk: int = 250,
                progress: str = "none") -> ImageHashes:
    """Hash every file: decoding in ``workers`` processes (default: all cores), DCTs vectorised. ``progress``:
    ``auto``, ``bars``, ``lines`` or ``none`` (shown on stderr)."""
    from ._terminal import progress_mode, with_progress

    mode = progress_mode(progress, sys.stderr)
    check_int(workers, "workers", 1, optional=True)
    paths = [Path(p) for p in paths]
    if not paths:
        return ImageHashes([], np.zeros(0, np.uint64), [], {}, np.zeros((0, 2), int), np.zeros(0))
    workers = workers or os.cpu_count() or 1
    chunks = [[str(p) for p in paths[i:i + chunk]] for i in range(0, len(paths), chunk)]
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(chunks) > 1 else None
    try:
        loaded = pool.map(_load_chunk, chunks) if pool is not None else map(_load_chunk, chunks)
        parts = list(with_progress(loaded, len(paths), mode, "hash", "images", count=lambda part: len(part[1])))
    finally:
        if pool is not None:
            # a Ctrl-C or SIGTERM that cut the shutdown short left the exiting process waiting on its workers
            # forever (in about half the interrupts timed as the hashing ended): it waits until they are gone
            with signals_deferred(reraise=True):
                pool.shutdown(wait=True, cancel_futures=True)
    grey = np.concatenate([p[0] for p in parts])
    pixel = [x for p in parts for x in p[1]]
    errors = {i: e for i, e in enumerate(x for p in parts for x in p[2]) if e}
    sizes = np.array([x for p in parts for x in p[3]], dtype=int).reshape(-1, 2)
    hashes = _phash_batch(grey)
    hashes[list(errors)] = 0
    spread = grey.reshape(len(grey), -1).astype(np.float32).std(axis=1)
    spread[list(errors)] = 0.0
    return ImageHashes(paths, hashes, pixel, errors, sizes, spread)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int, groups: np.ndarray | None = None,
               valid: np.ndarray | None = None) -> np.ndarray:
    """All index pairs (i < j) whose hashes differ in at most ``max_distance`` bits, as rows (i, j, d).

    With ``groups`` (one int per hash), only pairs from different groups are returned, e.g. pairs that
    straddle two splits. ``valid`` masks out hashes (unreadable images) entirely.
    """
    n = len(hashes)
    idx_all = np.arange(n) if valid is None else np.flatnonzero(valid)
    h = hashes[idx_all]
    g = None if groups is None else groups[idx_all]
    parts = max_distance + 1
    bounds = np.linspace(0, 64, parts + 1).astype(int)
    found: set[tuple[int, int]] = set()
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        keys = (h >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = order[s:e]
            if g is not None and len(np.unique(g[members])) < 2:
                continue
            ii, jj = np.triu_indices(len(members), k=1)
            a, b = members[ii], members[jj]
            d = hamming(h[a], h[b])
            keep = d <= max_distance
            if g is not None:
                keep &= g[a] != g[b]
            for x, y, dist in zip(a[keep], b[keep], d[keep]):
                pair = (int(min(x, y)), int(max(x, y)))
                if pair not in found:
                    found.add(pair)
                    rows.append((idx_all[pair[0]], idx_all[pair[1]], int(dist)))
    return np.array(sorted(rows), dtype=np.int64).reshape(-1, 3)
