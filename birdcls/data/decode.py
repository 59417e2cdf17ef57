"""Reading an image file the one way every stage does: upright, and decoded no larger than needed.

Training's image store, prediction from every export, the fastai file pipeline and the galleries all
open images here, so a model sees at prediction time what it saw in training:

- **EXIF orientation** is applied: a phone stores a portrait photo as a landscape frame plus a tag, and a
  CNN shown the frame as stored sees the subject lying on its side.
- **JPEG draft decoding**: when the image is wanted at ``size`` px, libjpeg decodes it at 1/2, 1/4 or
  1/8 scale straight from the DCT coefficients, as long as both sides stay at least ``size``. A 12 MP
  phone photo decodes in ~16 ms instead of ~130-210 ms (2-core CPU), and the resize that follows
  differs from a full decode's by under 1/255 on average.

Only PIL and numpy are imported, so the ONNX prediction path stays quick to start.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

__all__ = ["TURNING_TAGS", "load_image", "load_image_or_reason", "open_image"]

_ORIENTATION = 0x0112  # EXIF tag: 1 = stored upright; 2-8 = mirrored and/or rotated
TURNING_TAGS = (2, 3, 4, 5, 6, 7, 8)  # the orientation values that ask for a turn; anything else is read as 1


def open_image(path: str | os.PathLike, size: int | None = None, channels: int = 3) -> Image.Image:
    """The image at ``path`` as a loaded RGB (``channels=3``) or greyscale (``1``) PIL image, turned upright.

    With ``size``, a JPEG may come back reduced (never below ``size`` on either side) for a caller that
    resizes it to ``size`` anyway.
    """
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as im:
        if size is not None:
            im.draft(mode, (size, size))
        if im.getexif().get(_ORIENTATION, 1) in TURNING_TAGS:
            im = ImageOps.exif_transpose(im)  # a turned copy; the file closes below
        return im.convert(mode)  # loads the pixels before the file closes

def load_image(path: str | os.PathLike, size: int, channels: int = 3) -> np.ndarray:
    """An image as ``size x size x channels`` uint8, squish-resized like the training pipeline's ``Resize``."""
    im = open_image(path, size, channels)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)


def load_image_or_reason(path: str | os.PathLike, size: int, channels: int = 3) -> np.ndarray | str:
    """:func:`load_image`, or the reason the file cannot be read (batch work reports it per file and goes on)."""
    try:
        return load_image(path, size, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"unreadable image ({type(exc).__name__})"
