"""Shared plotting: a contact sheet of images with captions (top losses, flagged images, ...)."""

from __future__ import annotations

import os
from pathlib import Path


def contact_sheet(items: list[tuple[str | os.PathLike, str, bool]], dest: str | os.PathLike, title: str,
                  cols: int = 4, empty: str = "nothing to show", dpi: int = 80) -> Path:
    """A grid of ``(image path, caption, highlight)``; highlighted captions are red. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import save_figure_atomic
    from .data.decode import UNREADABLE, open_image

    n = max(1, len(items))
    cols = min(cols, n)
    rows = -(-n // cols)
    # constrained layout keeps the title clear of the first row's captions (tight_layout let them overlap)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, caption, highlight) in zip(axes.flat, items):
        try:
            ax.imshow(open_image(path, size=3 * dpi))  # upright; a big JPEG decoded near the cell's size
        except UNREADABLE:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        ax.set_title(caption, fontsize=8, color="red" if highlight else "black")
    if not items:
        axes.flat[0].text(0.5, 0.5, empty, ha="center")
    fig.suptitle(title)
    save_figure_atomic(dest, fig, dpi=dpi)
    plt.close(fig)
    return Path(dest)
