"""Shared plotting: figures drawn off-screen, and a contact sheet of images with captions (top losses,
flagged images, ...)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

_said_missing: set[str] = set()  # characters already named in a note, so that each is said once a process


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


@functools.lru_cache(maxsize=16)
def _open_font(path: str, index: int) -> Any:
    """A font file's face ``index`` (fonts in a .ttc collection are faces of one file), or None when matplotlib
    cannot draw with it (a colour-emoji bitmap font, say). The few used last stay open."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(path, face_index=index)
    except (OSError, RuntimeError, ValueError):
        return None
    return font if font.scalable else None


@functools.cache
def _draws(path: str, index: int, char: str) -> bool:
    """Whether the font at ``path`` (face ``index``) has a glyph for ``char``."""
    font = _open_font(path, index)
    return font is not None and font.get_char_index(ord(char)) != 0


@functools.cache
def _fallback_families(needed: frozenset[str], fonts: tuple[tuple[str, int, str], ...]) -> tuple[tuple[str, ...],
                                                                                                frozenset[str]]:
    """Families among ``fonts`` (path, face index, family name: matplotlib's list of installed fonts, in name
    order) that together draw ``needed``, and the characters none of them draws. Last Resort, which matplotlib
    ships, is not one: its glyphs are placeholders that name a character's block."""
    families: list[str] = []
    left = set(needed)
    for path, index, name in fonts:
        if not left:
            break
        if name in families or name.startswith("Last Resort"):
            continue
        drawn = {c for c in left if _draws(path, index, c)}
        if drawn:
            families.append(name)
            left -= drawn
    return tuple(families), frozenset(left)


def _installed_fonts() -> tuple[tuple[str, int, str], ...]:
    from matplotlib import font_manager

    entries = sorted(font_manager.fontManager.ttflist, key=lambda e: (e.name, e.weight != 400, e.fname, e.index))
    return tuple((e.fname, e.index, e.name) for e in entries)


def fit_fonts(fig: Any) -> None:
    """Make every text of ``fig`` draw as written, before it is saved.

    Class names come from folder names: a ``$`` pair in one is not mathtext, and a name in a script the default
    font lacks (a bird's Chinese or Japanese name, say) draws in an installed font that has it, through
    matplotlib's font fallback. What no installed font draws shows as boxes, said once on stderr with the fix.
    """
    from matplotlib import font_manager
    from matplotlib.text import Text

    lacking: dict[Any, set[str]] = {}
    for text in fig.findobj(Text):
        label = text.get_text()
        if "$" in label:  # only texts written so far: tick numbers a formatter writes as mathtext stay so
            text.set_parse_math(False)
            text.set_usetex(False)
        found = font_manager.findfont(text.get_fontproperties())
        path, index = getattr(found, "path", str(found)), getattr(found, "face_index", 0)
        missing = {c for c in label if c.isprintable() and not c.isspace() and not _draws(path, index, c)}
        if missing:
            lacking[text] = missing
    if not lacking:
        return
    families, undrawn = _fallback_families(frozenset(set().union(*lacking.values())), _installed_fonts())
    for text in lacking:
        text.set_fontfamily([*text.get_fontfamily(), *families])
    new = sorted(undrawn - _said_missing)
    if new:
        _said_missing.update(new)
        shown = "".join(new[:10]) + ("..." if len(new) > 10 else "")
        print(f"note: no installed font draws {shown}, so those characters show as boxes in the plots: install a "
              f"font that has them (for Chinese, Japanese or Korean names, Noto Sans CJK: Debian's fonts-noto-cjk)",
              file=sys.stderr, flush=True)
