"""Shared plotting: figures drawn off-screen, and a contact sheet of images with captions (top losses,
flagged images, ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def figure(**kwargs: Any) -> Any:
    """A matplotlib Figure that is only ever saved to a file. It is made without pyplot, so nothing switches
    the user's backend (``matplotlib.use("Agg")`` would turn off a notebook's inline plots for the rest of
    its session) and nothing needs closing."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def contact_sheet(items: list[tuple[str | os.PathLike, str, bool]], dest: str | os.PathLike, title: str,
                  cols: int = 4, empty: str = "nothing to show", dpi: int = 80) -> Path:
    """A grid of ``(image path, caption, highlight)``; highlighted captions are red. Written atomically."""
    from ._io import save_figure_atomic
    from .data.decode import UNREADABLE, open_image

    n = max(1, len(items))
    cols = min(cols, n)
    rows = -(-n // cols)
    # constrained layout keeps the title clear of the first row's captions (tight_layout let them overlap)
    fig = figure(figsize=(3.2 * cols, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
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
    return Path(dest)
