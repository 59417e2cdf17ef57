"""Whole-pixel shifts and flips: every augmented image is an exact crop of its reflected border."""

import torch
import torch.nn.functional as F
from fastai.vision.core import TensorImage

from birdcls.data.augment import RandomShiftFlip, shift_flip


def _candidates(image: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Every crop of ``image`` with a reflected border of ``shift`` px, and its mirror image."""
    c, h, w = image.shape
    padded = F.pad(image[None], (shift,) * 4, mode="reflect")[0]
    crops = [padded[:, y:y + h, x:x + w] for y in range(2 * shift + 1) for x in range(2 * shift + 1)]
    return crops + [crop.flip(2) for crop in crops]


def test_each_image_is_a_shifted_or_mirrored_copy_of_itself():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 8)
    out = shift_flip(images, shift=2, flip=True)
    assert out.shape == images.shape
    chosen = []
    for image, result in zip(images, out):
        matches = [i for i, crop in enumerate(_candidates(image, 2)) if torch.equal(crop, result)]
        assert matches, "not a whole-pixel shift of the image"
        chosen.append(matches[0])
    assert len(set(chosen)) > 10  # the offsets and flips vary from image to image
    assert any(i >= 25 for i in chosen) and any(i < 25 for i in chosen)


def test_no_shift_and_no_flip_leaves_the_batch_alone():
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(shift_flip(images, shift=0, flip=False), images)


def test_only_training_batches_are_augmented():
    torch.manual_seed(1)
    images = TensorImage(torch.rand(16, 3, 8, 8))
    tfm = RandomShiftFlip(shift=2)
    assert torch.equal(tfm(images, split_idx=1), images)
    assert not torch.equal(tfm(images, split_idx=0), images)
