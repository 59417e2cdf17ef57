"""The fast data path: decode and resize every image once, then feed fastai whole batches of tensors.

fastai's default pipeline opens, decodes and resizes each JPEG with PIL in every epoch, one image at
a time; on a small machine that, not the network, is most of an epoch. Here each image is decoded
once (threads, the same squish-resize as prediction) into a uint8 store cached on disk under
``$BIRDCLS_HOME/cache/images`` and keyed by the files' paths, sizes and modification times, so a
second run on the same data skips decoding. Batches are cut from that store by index
(:class:`TensorBatchDL`, a fastai ``TfmdDL``), moved to the device, and prepared there in batches:
normalised, shifted and flipped in one transform (:class:`~birdcls.data.augment.StoreBatchPrep`), or by
fastai's own ``IntToFloatTensor``, ``aug_transforms`` and ``Normalize`` for its other augmentations. The Learner,
callbacks and export are fastai's as before; only what feeds them changes.

:func:`body_features` serves the head phase: with the body frozen, its output for an image never
changes, so it is computed once and the head trains on the pooled features.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .._trust import birdcls_home

__all__ = ["CacheRefused", "TensorSplit", "body_features", "decode_cached", "prune_cache", "tensor_dataloaders"]


class CacheRefused(Exception):
    """The fast path cannot apply (too big, no disk space); the message says why, for a one-line notice."""


def cache_dir() -> Path:
    return birdcls_home() / "cache" / "images"


def _cache_key(paths: Sequence[Path], size: int, channels: int) -> str:
    digest = hashlib.sha1(f"v2|{size}|{channels}".encode())  # v2: decode.open_image (EXIF turn, JPEG draft)
    folders: dict[Path, Path] = {}  # each folder resolved once: resolving 50,000 paths one by one took seconds
    for p in paths:
        folder = folders.get(p.parent)
        if folder is None:
            folder = folders[p.parent] = p.parent.resolve()
        st = p.stat()
        digest.update(f"\n{folder / p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_cache_fits(n: int, size: int, channels: int, max_gb: float) -> int:
    """Bytes the store needs; raise CacheRefused when it exceeds ``max_gb``, half the free memory or the disk."""
    need = n * size * size * channels
    gb = need / 1e9
    if gb > max_gb:
        raise CacheRefused(f"{n} images at {size} px need {gb:.2f} GB decoded, over cache_max_gb={max_gb:g}")
    free = _available_memory()
    if free is not None and need > free // 2:
        raise CacheRefused(f"{n} images at {size} px need {gb:.2f} GB decoded, over half the free memory "
                           f"({free / 1e9:.1f} GB)")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if need > shutil.disk_usage(folder).free * 0.9:
        raise CacheRefused(f"{n} images at {size} px need {gb:.2f} GB in {folder}, more than the free disk space")
    return need


def decode_cached(paths: Sequence[Path], size: int, channels: int = 3, max_gb: float = 8.0,
                  workers: int | None = None, progress: str = "none") -> np.ndarray:
    """Every image of ``paths`` as one ``(n, size, size, channels)`` uint8 array, decoded at most once
    (``progress``: ``bars``, ``lines`` or ``none`` on stderr, while it decodes).

    The array is a read-only memory map of the cache file; it is written to a temp file and renamed,
    so an interrupted decode never leaves a broken cache behind.
    """
    from .._io import atomic_path

    paths = [Path(p) for p in paths]
    check_cache_fits(len(paths), size, channels, max_gb)
    dest = cache_dir() / f"{_cache_key(paths, size, channels)}-{len(paths)}x{size}x{channels}.npy"
    if dest.is_file():
        try:
            cached = np.load(dest, mmap_mode="r")
            if cached.shape == (len(paths), size, size, channels) and cached.dtype == np.uint8:
                os.utime(dest)  # its modification time says when it was last used (prune_cache)
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache file is decoded again below
    with atomic_path(dest) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, channels))
        _fill(store, paths, size, channels, workers or min(8, (os.cpu_count() or 1) * 2), progress)
        store.flush()
        del store  # close the map before the rename
    return np.load(dest, mmap_mode="r")


def prune_cache(keep_gb: float, in_use: Sequence[Path] = ()) -> tuple[int, int]:
    """Remove the stores used longest ago until the rest fit in ``keep_gb`` (each data change makes a new
    store, so old ones would pile up); stores ``in_use`` stay. Returns (files removed, bytes freed).
    A store another process has mapped stays readable to it after removal (the file lives on until unmapped)."""
    stores = []
    for path in cache_dir().glob("*.npy"):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed meanwhile by another run
            continue
        stores.append((st.st_mtime, st.st_size, path))
    keep, kept, removed, freed = int(keep_gb * 1e9), 0, 0, 0
    protected = {Path(p).resolve() for p in in_use}
    for _, size, path in sorted(stores, reverse=True):  # most recently used first
        if path.resolve() in protected or kept + size <= keep:
            kept += size
            continue
        path.unlink(missing_ok=True)
        removed, freed = removed + 1, freed + size
    return removed, freed


def _fill(store: np.ndarray, paths: Sequence[Path], size: int, channels: int, workers: int,
          progress: str = "none") -> None:
    from .._terminal import with_progress
    from .decode import load_image

    def fill(i: int) -> None:
        store[i] = load_image(paths[i], size, channels)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(with_progress(pool.map(fill, range(len(paths))), len(paths), progress, "decode", "images"))


@dataclass
class TensorSplit:
    """One split held as tensors: ``x`` (images NHWC uint8, or features) and integer labels ``y``.

    ``split_idx`` tells fastai's random transforms whether this is training (0) or validation (1) data.
    """

    x: Any
    y: Any
    split_idx: int
    images: bool = True

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: Any) -> tuple[Any, Any]:
        from fastai.torch_core import TensorCategory, TensorImage

        x = self.x[idx]
        if self.images:  # NHWC storage viewed as NCHW: a channels_last tensor at no cost
            return TensorImage(x.permute(0, 3, 1, 2)), TensorCategory(self.y[idx])
        return x, TensorCategory(self.y[idx])

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        x, y = self.batch(torch.tensor([i], device=self.x.device))
        return x[0], y[0]

    def __iter__(self):  # fastai's DataLoader asks for one; batches come from create_batches instead
        return iter(())


@cache
def _tensor_batch_dl_class():
    from fastai.data.core import TfmdDL

    class TensorBatchDL(TfmdDL):
        """A fastai TfmdDL that cuts each batch from in-memory tensors by index: no per-item Python work."""

        def get_idxs(self) -> list:
            """The epoch's order as one tensor, drawn from fastai's seeded ``rng`` (so a seed repeats it):
            fastai shuffles a Python list of every index and then filters it index by index, about 20 ms an
            epoch of 45,000 images that a GPU waits on. fastai's index list is left empty."""
            import torch

            if self.shuffle:
                generator = torch.Generator().manual_seed(self.rng.getrandbits(63))
                self._order = torch.randperm(self.n, generator=generator)
            else:
                self._order = torch.arange(self.n)
            return []

        def create_batches(self, samps):
            ds: TensorSplit = self.dataset
            # the epoch's order goes to the device once: a copy per batch would make the host wait for the
            # device's queue to drain before every batch on a GPU
            order = self._order.to(ds.x.device)
            for start in range(0, len(order), self.bs):
                chunk = order[start:start + self.bs]
                if self.drop_last and len(chunk) < self.bs:
                    return
                yield ds.batch(chunk)

    return TensorBatchDL


def __getattr__(name: str) -> Any:
    if name == "TensorBatchDL":  # built on first use, so importing this module does not import fastai
        return _tensor_batch_dl_class()
    raise AttributeError(name)


def _place(x: Any, device: Any) -> Any:
    """Keep the whole store on the GPU when it takes under a quarter of the free memory, else pinned host memory."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if x.numel() * x.element_size() < free // 4:
            return x.to(device)
        return x.pin_memory()
    return x


def tensor_dataloaders(train: TensorSplit, valid: TensorSplit, bs: int, device: Any, after_batch: list | None = None,
                       shuffle: bool = True, seed: int | None = None):
    """fastai DataLoaders over two TensorSplits; ``after_batch`` runs on the device (augmentation, Normalize)."""
    from fastai.data.core import DataLoaders

    cls = _tensor_batch_dl_class()
    for split in (train, valid):
        split.x, split.y = _place(split.x, device), _place(split.y, device)
    # Drop a short last batch (fastai's default for training) unless it is the only one; a batch of
    # one image would break BatchNorm.
    drop_last = shuffle and len(train) > bs
    dl_train = cls(train, bs=bs, shuffle=shuffle, drop_last=drop_last, num_workers=0, device=device,
                   after_batch=after_batch)
    dl_valid = cls(valid, bs=bs * 2, shuffle=False, drop_last=False, num_workers=0, device=device,
                   after_batch=after_batch)
    if seed is not None:
        dl_train.rng.seed(seed)
    return DataLoaders(dl_train, dl_valid, device=device)


def pad_batch(x: Any, size: int) -> Any:
    """On a GPU, a batch shorter than ``size`` padded with zero images up to it (slice the output back to
    ``len(x)``): each new batch shape costs cuDNN seconds of set-up, more than the padding's arithmetic. In
    eval mode images don't interact, so the padding changes no real image's output. On a CPU, ``x`` as is."""
    import torch

    if x.device.type != "cuda" or len(x) >= size:
        return x
    return torch.cat([x, x.new_zeros((size - len(x), *x.shape[1:]))])


def body_features(body: Any, images: Any, bs: int, device: Any, prepare: Any, pool: Any,
                  progress: str = "none", label: str = "features") -> Any:
    """Pooled outputs of the frozen ``body`` for every image, in eval mode, without gradients; ``progress``
    (``bars``, ``lines`` or ``none``, on stderr) shows the pass, the longest wait of a run on a CPU.

    ``prepare`` maps a uint8 NCHW batch on the device to the network's input (scale, normalise);
    ``pool`` is the head's own pooling (fastai's AdaptiveConcatPool2d + Flatten), so the cached
    features are exactly what the rest of the head would have seen.
    """
    import torch

    from .._terminal import with_progress

    was_training = body.training
    body.eval()
    out = []
    from ..runtime import has_fast_bf16

    autocast = torch.autocast("cuda", dtype=torch.bfloat16 if has_fast_bf16(device) else torch.float16) \
        if device.type == "cuda" else nullcontext()
    try:
        with torch.inference_mode(), autocast:
            starts = range(0, len(images), bs)
            for start in with_progress(starts, len(images), progress, label, "images",
                                       count=lambda s: min(bs, len(images) - s)):
                x = images[start:start + bs].to(device, non_blocking=True).permute(0, 3, 1, 2)
                n = len(x)
                out.append(pool(body(prepare(pad_batch(x, bs))))[:n].float())
    finally:
        body.train(was_training)
    return torch.cat(out).clone()  # clone: inference tensors cannot be saved for backward later

