"""What feeds the Learner fast: a cached tensor store instead of per-image PIL work, and the head
phase on features the frozen body computes once.

Both keep fastai's Learner, callbacks and export as the one training path; they only change the
DataLoaders it iterates. Each falls back to the plain path with a one-line notice when it cannot
apply (a dataset too big for the cache, a model without fastai's body + head split).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data.tensors import (
    CacheRefused,
    TensorSplit,
    body_features,
    check_cache_fits,
    decode_cached,
    prune_cache,
    tensor_dataloaders,
)
from .runtime import CPU_BATCH

__all__ = ["FastData", "attach_fast_data", "head_split", "train_head_on_features"]


@dataclass
class FastData:
    """The tensor store behind a Learner's DataLoaders, and the plain DataLoaders to restore for export."""

    plain_dls: Any
    train: TensorSplit
    valid: TensorSplit
    mean: list[float]
    std: list[float]
    decode_seconds: float

    def restore(self, learn: Any) -> None:
        """Give the Learner back its file-based DataLoaders, so its export predicts from image files."""
        learn.dls = self.plain_dls


def _labels(items: list[Path], classes: list[str]) -> Any:
    import torch

    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[p.parent.name] for p in items], dtype=torch.long)


def attach_fast_data(learn: Any, train_items: list[Path], valid_items: list[Path], classes: list[str],
                     cfg: TrainConfig, batch_tfms: list, say: Callable[[str], None] = print,
                     progress: str = "none") -> FastData | None:
    """Swap ``learn.dls`` for DataLoaders over decoded tensors, with ``batch_tfms`` (uint8 batches in; see
    :func:`birdcls.learn.store_batch_transforms`) after each batch. Returns None, after a line saying why,
    when the store cannot be built; the Learner then keeps fastai's per-image pipeline. ``say`` shows progress
    notes (none with ``progress="none"``)."""
    import numpy as np
    import torch

    info = learn.birdcls_info
    channels = int(info.get("in_chans", 3))
    start = time.perf_counter()
    try:  # both stores together: the limit and the memory check are on what the run holds at once
        check_cache_fits(len(train_items) + len(valid_items), cfg.size, channels, cfg.cache_max_gb)
        arrays = [decode_cached(items, cfg.size, channels, cfg.cache_max_gb, progress=progress)
                  for items in (train_items, valid_items)]
    except CacheRefused as exc:  # a fallback is said however quiet the progress
        print(f"fast data path off: {exc}; using fastai's per-image pipeline", flush=True)
        return None
    removed, freed = prune_cache(cfg.cache_keep_gb, in_use=[Path(a.filename) for a in arrays])
    if removed:  # files deleted: said however quiet the progress
        print(f"removed {removed} cached image store(s) used longest ago ({freed / 1e9:.2f} GB): the cache keeps "
              f"cache_keep_gb={cfg.cache_keep_gb:g}", flush=True)
    # np.array: one copy of the cached store into memory, where random batches are cheap to cut
    train, valid = (TensorSplit(torch.from_numpy(np.array(x)), _labels(items, classes), split_idx)
                    for x, items, split_idx in zip(arrays, (train_items, valid_items), (0, 1)))
    device, plain = learn.dls.device, learn.dls
    learn.dls = tensor_dataloaders(train, valid, cfg.bs, device, after_batch=batch_tfms,
                                   shuffle=cfg.shuffle, seed=cfg.seed)
    fast = FastData(plain, train, valid, list(info["mean"]), list(info["std"]), time.perf_counter() - start)
    return fast


def head_split(model: Any) -> tuple[Any, Any, Any] | None:
    """``(body, pool, rest_of_head)`` of a fastai vision model (Sequential(body, head) whose head starts
    with a pooling layer and Flatten), or None for any other shape."""
    from fastai.layers import AdaptiveConcatPool2d, Flatten
    from torch import nn

    if not (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)):
        return None
    head = model[1]
    pools = (AdaptiveConcatPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    if len(head) < 3 or not isinstance(head[0], pools) or not isinstance(head[1], Flatten):
        return None
    return model[0], head[:2], head[2:]


def feature_dataloaders(learn: Any, fast: FastData, cfg: TrainConfig, progress: str = "none") -> tuple[Any, Any, float]:
    """DataLoaders of the frozen body's pooled features (computed once), the head layers that train on
    them, and the seconds the features took."""
    import torch

    device = learn.dls.device
    body, pool, rest = head_split(learn.model.to(device))  # fastai moves the model at fit; this runs before
    mean = torch.tensor(fast.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(fast.std, device=device).view(1, -1, 1, 1)

    def prepare(x):
        return (x.float() / 255 - mean) / std

    start = time.perf_counter()
    # On a CPU, small batches keep the activations in cache (224 px, 2 cores: about 5 ms an image at 4 to 8,
    # 15 at 32, 30 at 64)
    bs = CPU_BATCH if device.type == "cpu" else max(cfg.bs, 256)
    feats = [body_features(body, split.x, bs, device, prepare, pool, progress, f"features ({name})")
             for split, name in ((fast.train, "train"), (fast.valid, "val"))]
    seconds = time.perf_counter() - start
    train, valid = (TensorSplit(f, split.y, split.split_idx, images=False)
                    for f, split in zip(feats, (fast.train, fast.valid)))
    dls = tensor_dataloaders(train, valid, cfg.bs, device, shuffle=cfg.shuffle, seed=cfg.seed)
    return dls, rest, seconds


def train_head_on_features(learn: Any, fast: FastData, cfg: TrainConfig, settings: dict[str, Any],
                           attach: Callable[[Any], Callable[[], None]], say: Callable[[str], None],
                           progress: str = "none") -> None:
    """The head phase as a fastai fit on cached body features; the trained layers are the full model's own.

    ``attach(learner)`` adds the run's callbacks to the head Learner and returns a function that removes
    them; its SaveModel checkpoints the whole network, so ``best.pth`` is what fine_tune and ``--resume``
    start from whichever phase wrote it.
    """
    from fastai.learner import Learner

    dls, rest, seconds = feature_dataloaders(learn, fast, cfg, progress)
    say(f"head: body features of {len(fast.train) + len(fast.valid)} images computed once in {seconds:.1f} s; "
        f"the head trains on them")
    head_learn = Learner(dls, rest, path=learn.path, model_dir=learn.model_dir, **settings)
    detach = attach(head_learn)
    try:
        fit = head_learn.fit_one_cycle if cfg.schedule == "one_cycle" else head_learn.fit
        fit(cfg.epochs_head, cfg.lr)
    finally:
        detach()
