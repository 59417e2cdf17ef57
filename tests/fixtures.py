"""Tiny real image datasets written into a temp folder (no downloaded data in unit tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Each class is a colour and a shape, so even a one-epoch model can tell them apart.
CLASS_COLOURS = {"cardinal": (200, 30, 30), "jay": (30, 60, 200), "parrot": (30, 170, 40)}


def make_image(rng: np.random.Generator, colour: tuple[int, int, int], size: int = 48) -> Image.Image:
    """The class colour as background, noise, and a dark square at a random place."""
    arr = np.array(colour, dtype=np.int16) + rng.integers(-30, 30, size=(size, size, 3))
    x0, y0 = rng.integers(0, size // 2, size=2)
    w = int(rng.integers(size // 4, size // 2))
    arr[y0:y0 + w, x0:x0 + w] //= 3
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_class_folders(root: Path, per_class: int = 20, classes: dict | None = None, seed: int = 0,
                       size: int = 48) -> Path:
    """``root/<class>/NNN.jpg``: an unsplit dataset (what ``birdcls split`` takes)."""
    rng = np.random.default_rng(seed)
    for name, colour in (classes or CLASS_COLOURS).items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(rng, colour, size).save(d / f"{i:03d}.jpg", quality=90)
    return root


def make_split_dataset(root: Path, counts=(12, 4, 4), classes: dict | None = None, seed: int = 0,
                       size: int = 48) -> Path:
    """``root/{train,val,test}/<class>/*.jpg``: a dataset ready for ``train``."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        for name, colour in (classes or CLASS_COLOURS).items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(rng, colour, size).save(d / f"{split}_{i:03d}.jpg", quality=90)
    return root
