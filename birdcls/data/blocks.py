"""fastai blocks that read image files the way the rest of birdcls does (:mod:`birdcls.data.decode`).

fastai's file-based DataLoaders (training when the image store cannot be used) would otherwise open files
with ``PILImage.create``, which ignores EXIF orientation: a phone photo would reach the model on its side
there and upright on every other path. The exported ``model.pkl`` gets fastai's own ``create`` back
(:func:`fastai_decoding`), so that ``load_learner`` opens it without birdcls installed (a timm backbone's
needs fastai and timm only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastai.data.block import TransformBlock
from fastai.data.transforms import IntToFloatTensor
from fastai.vision.core import PILBase, PILImage, PILImageBW
from fasttransform import Transform
from numpy import ndarray
from PIL import Image
from torch import Tensor

from .decode import open_image

__all__ = ["ImageFileOpener", "fastai_decoding", "image_block"]


class ImageFileOpener(Transform):
    """fastai type transform: a file path -> :func:`open_image` (upright; a JPEG drafted down towards
    ``size``, which the item transform ``Resize`` then reaches); anything else fastai's ``PILImage.create``
    takes (PIL images, arrays, tensors, bytes) goes to it unchanged."""

    # what fastai's test_dl (so learn.predict) checks an input's type against, as for PILImage.create
    input_types = (Path, str, Tensor, ndarray, bytes, Image.Image)

    def __init__(self, size: int, channels: int = 3):
        super().__init__()
        self.size, self.channels = size, channels

    @property
    def image_type(self) -> type[PILBase]:
        return PILImage if self.channels == 3 else PILImageBW

    def encodes(self, item) -> PILBase:
        if isinstance(item, (str, os.PathLike)):
            return self.image_type(open_image(item, self.size, self.channels))
        return self.image_type.create(item)


def image_block(size: int, channels: int = 3) -> TransformBlock:
    """fastai's ``ImageBlock`` with files opened by :class:`ImageFileOpener`."""
    return TransformBlock(type_tfms=ImageFileOpener(size, channels), batch_tfms=IntToFloatTensor)


@contextmanager
def fastai_decoding(learn: Any) -> Iterator[None]:
    """While the block runs, ``learn``'s DataLoaders open files with fastai's own ``PILImage.create`` (what
    ``ImageBlock`` gives) instead of :class:`ImageFileOpener`: ``learn.export`` inside it writes a pickle
    that does not need birdcls to load. ``learn.predict`` on that pickle then decodes as fastai does (no EXIF
    turn, no JPEG draft); ``birdcls predict`` on it decodes as everywhere else in birdcls."""
    swapped: list[tuple[Any, int, ImageFileOpener]] = []
    for dl in learn.dls.loaders:
        for tl in getattr(dl.dataset, "tls", []):
            for i, f in enumerate(tl.tfms.fs):
                if isinstance(f, ImageFileOpener):
                    swapped.append((tl.tfms.fs, i, f))
                    tl.tfms.fs[i] = Transform(f.image_type.create)
    try:
        yield
    finally:
        for fs, i, f in reversed(swapped):
            fs[i] = f
