"""Reading an image file the one way every stage does: upright, and decoded no larger than needed.

Training's image store, prediction from every export, the fastai file pipeline and the galleries all
open images here, so a model sees at prediction time what it saw in training:

- **EXIF orientation** is applied: a phone stores a portrait photo as a landscape frame plus a tag, and a
  CNN shown the frame as stored sees the subject lying on its side.
- **16-bit and 32-bit pixels** (scientific PNGs and TIFFs) are scaled to 8 bits: PIL's ``convert`` clips
  them to 255, which made a 16-bit greyscale photo an all-white image.
- **HEIC/HEIF** (iPhones' default photo format) opens through pillow-heif's Pillow plugin, registered when
  this module is imported (about 30 ms), so every stage that reads images reads those too.
- **JPEG draft decoding**: when the image is wanted at ``size`` px, libjpeg decodes it at 1/2, 1/4 or
  1/8 scale straight from the DCT coefficients, as long as both sides stay at least ``size``. A 12 MP
  phone photo decodes in ~16 ms instead of ~130-210 ms (2-core CPU), and the resize that follows
  differs from a full decode's by under 1/255 on average.

Only PIL, numpy and pillow-heif are imported, so the ONNX prediction path stays quick to start.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from itertools import islice
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["UNREADABLE", "exif_orientation", "image_array", "imap_ahead", "load_image", "load_image_or_reason", "map_ahead",
           "open_image", "pixel_sha256", "to_8bit", "unreadable_reason"]

T, R = TypeVar("T"), TypeVar("R")
_ORIENTATION = 0x0112  # EXIF tag: 1 = stored upright; 2-8 = mirrored and/or rotated
_TURNING_TAGS = (2, 3, 4, 5, 6, 7, 8)
# Images past PIL's pixel limit only warn (twice the limit raises, and is reported as unreadable): a large
# photo is what draft decoding is for, so the warning would only be noise on stderr
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _register_heif() -> None:
    """Let PIL open HEIC/HEIF files (pillow-heif, a dependency; without it they are reported unreadable)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()
# What opening or decoding a file can raise when it is not a readable image (damaged, truncated, not an image,
# or over twice PIL's pixel limit): every stage catches these and reports the file instead of stopping
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def pixel_sha256(rgb: Image.Image) -> str:
    """A picture's identity whatever its file: the same pixels in a PNG and a lossless WebP hash equal. The
    size is hashed too, so that 2x3 and 3x2 images of the same bytes differ."""
    import hashlib

    return hashlib.sha256(rgb.tobytes() + f"{rgb.width}x{rgb.height}".encode()).hexdigest()


def unreadable_reason(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """Why a file did not decode, worded the same by every stage (split, clean, train's check, predict):
    ``unreadable (empty file)``, ``unreadable (not an image)``, or PIL's own first line, without the path."""
    if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
        detail = "empty file"
    elif isinstance(exc, UnidentifiedImageError):
        detail = "not an image"
    elif isinstance(exc, Image.DecompressionBombError):
        detail = "DecompressionBombError: more pixels than PIL's safety limit"
    else:
        detail = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
    return f"unreadable ({detail})"


def exif_orientation(im: Image.Image) -> int:
    """``im``'s EXIF orientation as ``ImageOps.exif_transpose`` reads it: 2-8 ask for a turn; anything else,
    a missing tag or a malformed value, is 1 (upright). Reads the header only."""
    orientation = im.getexif().get(_ORIENTATION, 1)
    return orientation if orientation in _TURNING_TAGS else 1


def open_image(path: str | os.PathLike, size: int | None = None, channels: int = 3) -> Image.Image:
    """The image at ``path`` as a loaded RGB (``channels=3``) or greyscale (``1``) PIL image, turned upright.

    With ``size``, a JPEG may come back reduced (never below ``size`` on either side) for a caller that
    resizes it to ``size`` anyway.
    """
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as im:
        if size is not None:
            im.draft(mode, (size, size))
        if exif_orientation(im) != 1:
            im = ImageOps.exif_transpose(im)  # a turned copy; the file closes below
        return to_8bit(im).convert(mode)  # loads the pixels before the file closes


def to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) greyscale image as 8-bit ``L``, scaled
    rather than clipped: 16-bit range to 0-255; ``I`` as 16-bit when any value is above 255, else as is;
    ``F`` from 0-1 when no value is above 1, else clipped to 0-255. A palette image with a transparent colour
    comes back as RGBA, the same colours (PIL warns on stderr, for every such GIF or PNG, when one is converted
    straight to RGB). Any other image comes back as it is."""
    if im.mode == "P" and "transparency" in im.info:
        return im.convert("RGBA")
    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    arr = np.asarray(im)
    if im.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        scaled = arr * 255 if arr.size and arr.max() <= 1.0 else arr
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    arr = arr.astype(np.int64)
    if im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = (np.clip(arr, 0, 65535) + 128) // 257
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def load_image(path: str | os.PathLike, size: int, channels: int = 3) -> np.ndarray:
    """An image as ``size x size x channels`` uint8, squish-resized like the training pipeline's ``Resize``."""
    return image_array(open_image(path, size, channels), size, channels)


def image_array(im: Image.Image, size: int, channels: int = 3) -> np.ndarray:
    """A loaded RGB or ``L`` image as ``size x size x channels`` uint8, squish-resized: what every image a
    model sees goes through, from a file (:func:`load_image`) or already in memory."""
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)


def load_image_or_reason(path: str | os.PathLike, size: int, channels: int = 3) -> np.ndarray | str:
    """:func:`load_image`, or the reason the file cannot be read (batch work reports it per file and goes on)."""
    try:
        return load_image(path, size, channels)
    except UNREADABLE as exc:
        return unreadable_reason(exc, path)


def imap_ahead(pool: Executor, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in order, with up to ``ahead`` calls submitted to ``pool`` beyond
    the one being handed over. Unlike ``Executor.map``, which submits every item at once, the results held
    at any time stay bounded, whatever the number of items; closing the iterator early cancels the rest."""
    it = iter(items)
    pending = deque(pool.submit(fn, item) for item in islice(it, max(1, ahead)))
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, item) for item in islice(it, 1))
            yield result
    finally:
        for future in pending:
            future.cancel()


def map_ahead(pool: Executor, fn: Callable[[T], R], items: Sequence[T], chunk: int) -> Iterator[tuple[list[T], list[R]]]:
    """``items`` ``chunk`` at a time, each with ``fn`` applied to its items in ``pool``; the next chunk's
    work is under way while the caller handles this one."""
    results = imap_ahead(pool, fn, items, 2 * chunk)
    for start in range(0, len(items), chunk):
        this = list(items[start:start + chunk])
        yield this, [next(results) for _ in this]
