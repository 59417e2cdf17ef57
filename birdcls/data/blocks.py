"""fastai blocks that read image files the way the rest of birdcls does (:mod:`birdcls.data.decode`).

The file-based DataLoaders (training when the image store is off, and ``learn.predict`` on an exported
``model.pkl``) would otherwise open files with fastai's ``PILImage.create``, which ignores EXIF
orientation: a phone photo would reach the model on its side there and upright everywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastai.data.block import TransformBlock
from fastai.data.transforms import IntToFloatTensor
from fastai.vision.core import PILBase, PILImage, PILImageBW
from fasttransform import Transform
from numpy import ndarray
from PIL import Image
from torch import Tensor

from .decode import open_image

__all__ = ["ImageFileOpener", "image_block"]


class ImageFileOpener(Transform):
    """fastai type transform: a file path -> :func:`open_image` (upright; a JPEG drafted down towards
    ``size``, which the item transform ``Resize`` then reaches); anything else fastai's ``PILImage.create``
    takes (PIL images, arrays, tensors, bytes) goes to it unchanged."""

    # what fastai's test_dl (so learn.predict) checks an input's type against, as for PILImage.create
    input_types = (Path, str, Tensor, ndarray, bytes, Image.Image)

    def __init__(self, size: int, channels: int = 3):
        super().__init__()
        self.size, self.channels = size, channels

    def encodes(self, item) -> PILBase:
        cls = PILImage if self.channels == 3 else PILImageBW
        if isinstance(item, (str, os.PathLike)):
            return cls(open_image(item, self.size, self.channels))
        return cls.create(item)


def image_block(size: int, channels: int = 3) -> TransformBlock:
    """fastai's ``ImageBlock`` with files opened by :class:`ImageFileOpener`."""
    return TransformBlock(type_tfms=ImageFileOpener(size, channels), batch_tfms=IntToFloatTensor)
