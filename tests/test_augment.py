"""Whole-pixel shifts and flips: every augmented image is an exact crop of its reflected border; the
tensor store's one-transform batch preparation computes what fastai's three do."""

import torch
import torch.nn.functional as F
from fastai.data.transforms import IntToFloatTensor, Normalize
from fastai.vision.core import TensorImage
from fasttransform import Pipeline

from birdcls.data.augment import RandomShiftFlip, StoreBatchPrep, shift_flip


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


def _uint8_batch(n: int = 16) -> TensorImage:
    torch.manual_seed(2)
    return TensorImage(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8))


MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def test_store_batch_prep_normalises_as_fastais_transforms_do():
    x = _uint8_batch()
    fastai_way = Pipeline([IntToFloatTensor(), Normalize.from_stats(MEAN, STD, cuda=False)], split_idx=1)(x)
    ours = StoreBatchPrep(MEAN, STD, shift=2, flip=True)(x, split_idx=1)  # validation: not augmented
    assert isinstance(ours, TensorImage) and ours.dtype == torch.float32
    assert torch.allclose(ours, fastai_way, atol=1e-5)


def test_store_batch_prep_augments_training_batches_only():
    x = _uint8_batch(64)
    tfm = StoreBatchPrep(MEAN, STD, shift=2, flip=True)
    normalised = tfm(x, split_idx=1).as_subclass(torch.Tensor)
    out = tfm(x, split_idx=0).as_subclass(torch.Tensor)
    chosen = []
    for image, result in zip(normalised, out):
        matches = [i for i, crop in enumerate(_candidates(image, 2)) if torch.allclose(crop, result)]
        assert matches, "not a whole-pixel shift of the normalised image"
        chosen.append(matches[0])
    assert len(set(chosen)) > 10
    plain = StoreBatchPrep(MEAN, STD)  # augment: false
    assert torch.equal(plain(x, split_idx=0), plain(x, split_idx=1))


def test_store_batch_prep_decodes_back_to_the_pixels():
    x = _uint8_batch()
    tfm = StoreBatchPrep(MEAN, STD)
    assert torch.equal(tfm.decode(tfm(x, split_idx=1)), x)
