"""Batch augmentation that keeps small images sharp.

fastai's ``aug_transforms`` zooms, rotates and shifts through ``grid_sample``: each pixel of the result
is interpolated, which at 32x32 blurs every training image while the test images stay sharp. The CIFAR-10
speed runs (airbench, hlb-cifar10) augment with whole-pixel shifts and mirror flips only, which move
pixels without resampling them. :class:`RandomShiftFlip` does that to a whole batch on its device.

:class:`StoreBatchPrep` does the whole of a tensor-store batch's preparation in one transform: uint8 to
float, normalised, and shifted and flipped when it is a training batch (fastai's ``IntToFloatTensor``,
:class:`RandomShiftFlip` and ``Normalize``: three type-dispatched transforms, each operation of theirs
through fastai's Python ``__torch_function__``, host time a GPU step waits on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastai.vision.augment import RandTransform
from fastai.vision.core import TensorImage
from fasttransform import Transform

__all__ = ["RandomShiftFlip", "StoreBatchPrep", "shift_flip"]


def shift_flip(x: torch.Tensor, shift: int, flip: bool) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W, float) moved by its own whole-pixel offset in [-shift, shift] along
    each axis (the border filled by reflection), and mirrored left-right with probability 1/2."""
    n, c, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        dy, dx = torch.randint(0, 2 * shift + 1, (2, n), device=x.device)
        rows = (torch.arange(h, device=x.device)[None] + dy[:, None])[:, None, :, None].expand(n, c, h, w + 2 * shift)
        cols = (torch.arange(w, device=x.device)[None] + dx[:, None])[:, None, None, :].expand(n, c, h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if flip:
        mirrored = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    return x


class RandomShiftFlip(RandTransform):
    """fastai batch transform (training batches only): :func:`shift_flip` after ``IntToFloatTensor``."""

    split_idx, order = 0, 30

    def __init__(self, shift: int = 2, flip: bool = True):
        super().__init__(p=1.0)
        self.shift, self.flip = shift, flip

    def encodes(self, x: TensorImage) -> TensorImage:
        # on a plain tensor: each operation on a TensorImage goes through fastai's Python __torch_function__,
        # host time a GPU step waits on
        return TensorImage(shift_flip(x.as_subclass(torch.Tensor), self.shift, self.flip))


class StoreBatchPrep(Transform):
    """uint8 image batch -> ``(x / 255 - mean) / std`` as float, then, on training batches only (fastai's
    ``split_idx`` 0), :func:`shift_flip` with ``shift`` and ``flip``. ``decodes`` undoes the normalisation
    for fastai's ``show_batch``."""

    order = 10

    def __init__(self, mean: list[float], std: list[float], shift: int = 0, flip: bool = False):
        super().__init__()
        self.mean, self.std, self.shift, self.flip = list(mean), list(std), shift, flip
        self._constants: dict = {}
        self._training = False

    def _scale_and_offset(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x * scale + offset`` normalises a 0..255 batch; built once per device."""
        if x.device not in self._constants:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (self.mean, self.std))
            self._constants[x.device] = ((1 / (255 * std)).to(x.device), (-mean / std).to(x.device))
        return self._constants[x.device]

    def __call__(self, b, split_idx: int | None = None, **kwargs):
        self._training = split_idx == 0
        return super().__call__(b, split_idx=split_idx, **kwargs)

    def encodes(self, x: TensorImage) -> TensorImage:
        scale, offset = self._scale_and_offset(x)
        out = torch.addcmul(offset, x.as_subclass(torch.Tensor).float(), scale)
        if self._training and (self.shift or self.flip):
            out = shift_flip(out, self.shift, self.flip)
        return TensorImage(out)

    def decodes(self, x: TensorImage) -> TensorImage:
        scale, offset = self._scale_and_offset(x)
        return TensorImage(((x.as_subclass(torch.Tensor) - offset) / scale).clamp(0, 255).round().byte())
