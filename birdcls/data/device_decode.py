"""JPEG batches decoded on the device the model runs on: nvJPEG on a CUDA GPU, libjpeg on a CPU.

Next to a GPU, prediction is bound by decoding on the host, not by the network (`docs/benchmarks.md`:
1,050 to 1,317 images/s from JPEG files on an H100, where the network needs a few tens of milliseconds for
2,000 images). Here the host only reads each file's bytes and its EXIF orientation tag (threads); torchvision's
``decode_jpeg`` decodes the whole batch on the device, and the turn and the squish-resize run there too.

Answers match the host path (:func:`birdcls.data.decode.load_image`) to within resampling: both resize
bilinearly with antialiasing, but the host path may start from a JPEG drafted at a reduced scale.
Files that are not JPEG, and JPEGs the device decoder refuses (damaged ones; with nvJPEG, also whatever
it does not support), go through ``load_image`` on the host, so every file gets the host path's answer or
its "unreadable" reason.

torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec, whose PyPI wheels decode on
the CPU only; torchvision's ship nvJPEG, so they are used here, with the warning silenced.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from .decode import UNREADABLE, exif_orientation, load_image_or_reason, map_ahead

__all__ = ["decode_batch_on", "device_decoded_batches"]

_JPEG_START = b"\xff\xd8\xff"
# Full-size pixels decoded in one call: a batch of 256 phone photos (12 MP each) would need 9 GB of device
# memory at once; in calls of at most 256 MP (768 MB of RGB) each call's images are resized, and their
# full-size buffers freed, before the next.
DECODE_PIXELS = 256 * 2**20


Read = tuple[bytes | None, int, int]  # (JPEG bytes or None, EXIF orientation, pixels)


def _read(path: Path) -> Read:
    """The file's bytes, EXIF orientation and pixel count when it is a JPEG the device can take;
    ``(None, 1, 0)`` sends it to the host path (other formats, unreadable files: ``load_image_or_reason``
    gives the reason)."""
    try:
        data = path.read_bytes()
        if not data.startswith(_JPEG_START):
            return None, 1, 0
        with Image.open(io.BytesIO(data)) as im:  # the header only: nothing is decoded here
            return data, exif_orientation(im), im.width * im.height
    except UNREADABLE:
        return None, 1, 0


def _calls(indices: list[int], reads: list[Read], budget: int) -> list[list[int]]:
    """``indices`` cut into runs whose pixels add up to at most ``budget`` (an image larger than it alone)."""
    calls: list[list[int]] = []
    total = budget + 1
    for i in indices:
        if total + reads[i][2] > budget:
            calls.append([])
            total = 0
        calls[-1].append(i)
        total += reads[i][2]
    return calls


def _upright(x: Any, orientation: int) -> Any:
    """A CHW tensor turned as PIL's ``ImageOps.exif_transpose`` turns the image for each EXIF tag."""
    if orientation in (5, 6, 7, 8):
        x = x.transpose(-1, -2)  # 5: transpose; the others are a transpose plus a mirror
    if orientation in (2, 3, 6, 7):
        x = x.flip(-1)
    if orientation in (3, 4, 7, 8):
        x = x.flip(-2)
    return x


def _decode_jpegs(blobs: list[bytes], channels: int, device: Any) -> list[Any]:
    """Each blob decoded on ``device`` (CHW uint8), or None where the decoder refuses it. One batched call;
    if it fails (it returns nothing when any image fails), one call per image to find which."""
    import torch

    with warnings.catch_warnings():  # torchvision's deprecation notice, on import and on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        if not tensors:
            return []
        try:
            return list(decode_jpeg(tensors, mode=mode, device=device))
        except RuntimeError:
            out = []
            for t in tensors:
                try:
                    out.append(decode_jpeg(t, mode=mode, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def decode_batch_on(device: Any, paths: Sequence[Path], size: int, channels: int = 3,
                    reads: list[Read] | None = None, pool: Executor | None = None,
                    budget: int = DECODE_PIXELS) -> tuple[list[Path], Any, dict[str, str]]:
    """``paths`` as one ``(n, size, size, channels)`` uint8 tensor on ``device`` (NHWC, as the models take
    it), the paths it holds in order, and ``{path: reason}`` for files that could not be read.

    ``reads`` (from :func:`_read`, done ahead in threads) saves reading the files here; JPEGs are decoded
    in calls of at most ``budget`` full-size pixels."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    paths = [Path(p) for p in paths]
    reads = reads if reads is not None else [_read(p) for p in paths]
    images: list[Any] = [None] * len(paths)
    on_device = [i for i, read in enumerate(reads) if read[0] is not None]
    for call in _calls(on_device, reads, budget):
        for i, x in zip(call, _decode_jpegs([reads[i][0] for i in call], channels, device)):
            if x is not None:
                x = _upright(x.to(device), reads[i][1])  # decode_jpeg decodes on the CPU for any device but CUDA
                images[i] = tvf.resize(x, [size, size], antialias=True) if x.shape[-2:] != (size, size) else x
    on_host = [i for i in range(len(paths)) if images[i] is None]
    loaded = (pool.map if pool else map)(lambda i: load_image_or_reason(paths[i], size, channels), on_host)
    bad: dict[str, str] = {}
    for i, res in zip(on_host, loaded):
        if isinstance(res, str):
            bad[str(paths[i])] = res
        else:
            images[i] = torch.tensor(res).permute(2, 0, 1).to(device)  # a copy: PIL's arrays are read-only
    ok = [i for i in range(len(paths)) if images[i] is not None]
    batch = (torch.stack([images[i] for i in ok]).permute(0, 2, 3, 1).contiguous() if ok
             else torch.empty((0, size, size, channels), dtype=torch.uint8, device=device))
    return [paths[i] for i in ok], batch, bad


def device_decoded_batches(paths: Sequence[Path], size: int, bs: int, device: Any, channels: int = 3,
                           workers: int | None = None) -> Iterator[tuple[list[Path], Any, dict[str, str]]]:
    """:func:`decode_batch_on` for ``bs`` paths at a time, the next batch's files read in threads while
    this one decodes and runs."""
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        for chunk, reads in map_ahead(pool, _read, [Path(p) for p in paths], bs):
            yield decode_batch_on(device, chunk, size, channels, reads, pool)
