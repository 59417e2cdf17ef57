"""The Jupyter cleaner: a paged thumbnail grid per class (and split) with keep / delete / move actions.

Every click is applied at once and logged (see :mod:`birdcls.clean.quarantine`): deleted images go to
``DATA/.quarantine/``, moved ones to their new class folder, kept ones are remembered in the log. So
marks survive paging, switching class or split, and a kernel restart. Undo reverts the last action.
With a model (a run folder or any export), images can be sorted by loss or by low confidence, and
each tile shows the predicted label and its probability.

Example (in a notebook)::

    from birdcls.clean import Cleaner
    Cleaner("data/raw", model="models/birds")
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from ..data.folders import class_files
from ..errors import BirdclsError
from .checks import CleanConfig, _quiet_large_images, class_folders, find_issues
from .quarantine import Decision, Quarantine

__all__ = ["Cleaner"]

_FILTERS = ("all", "flagged", "duplicates")


def _thumbnail(path: Path, size: int) -> bytes:
    from PIL import Image

    from ..data.decode import UNREADABLE, open_image

    buf = io.BytesIO()
    try:
        with _quiet_large_images():
            im = open_image(path, size)
        im.thumbnail((size, size))
        im.save(buf, format="PNG")
    except UNREADABLE:
        Image.new("RGB", (size, size), (200, 200, 200)).save(buf, format="PNG")
    return buf.getvalue()


class Cleaner:
    """Review one class at a time; decisions are applied and logged as they are made."""

    def __init__(self, data: str | os.PathLike, model: Any = None, page_size: int = 12, thumb: int = 128,
                 trust: bool = False, config: CleanConfig = CleanConfig()):
        import ipywidgets as w

        self.data, self.page_size, self.thumb, self.config = Path(data), page_size, thumb, config
        self.message = w.HTML()
        self.counter = w.HTML()
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(4, {thumb + 40}px)", grid_gap="6px"))
        self.applied = 0
        self.page = 0
        self._flags: dict[Path, Any] | None = None
        self._predictions: dict[Path, tuple[str, float, float]] = {}
        self.tiles: list[dict[str, Any]] = []
        self.problem: str | None = None  # why this Cleaner cannot work (a bad folder or model), shown in place of it
        try:
            self.folders = class_folders(self.data)
            if not self.folders:
                raise BirdclsError(f"{self.data} has no class folders: put images in {self.data}/<class>/")
            self.quarantine = Quarantine(self.data, source="widget")
            self.model = self._load_model(model, trust)
        except BirdclsError as exc:
            self.folders, self.model, self.problem = [], None, str(exc)
            self._error(str(exc))
            self.widget = w.VBox([self.message])
            return
        splits = list(dict.fromkeys(s for s, _, _ in self.folders))
        self.split_box = w.Dropdown(options=[s for s in splits if s] or ["(none)"], description="split",
                                    layout=w.Layout(display="" if splits[0] else "none", width="180px"))
        self.class_box = w.Dropdown(description="class", layout=w.Layout(width="220px"))
        self.filter_box = w.Dropdown(options=_FILTERS, value="all", description="show", layout=w.Layout(width="200px"))
        sorts = ["name"] + (["loss", "low confidence"] if self.model is not None else [])
        self.sort_box = w.Dropdown(options=sorts, value="name", description="sort", layout=w.Layout(width="200px"))
        self.prev_button = w.Button(description="◀ prev", layout=w.Layout(width="80px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="80px"))
        self.page_label = w.HTML()
        self.undo_button = w.Button(description="undo last action", icon="undo")
        self.undo_button.add_class("birdcls-undo")
        self._refresh_classes()
        self.split_box.observe(lambda _: self._refresh_classes(), names="value")
        for box in (self.class_box, self.filter_box, self.sort_box):
            box.observe(lambda _: self._goto(0), names="value")
        self.prev_button.on_click(lambda _: self._goto(self.page - 1))
        self.next_button.on_click(lambda _: self._goto(self.page + 1))
        self.undo_button.on_click(lambda _: self.undo())
        controls = w.HBox([self.split_box, self.class_box, self.filter_box, self.sort_box])
        paging = w.HBox([self.prev_button, self.page_label, self.next_button, self.undo_button, self.counter])
        self.widget = w.VBox([controls, paging, self.message, self.grid])
        self.render()

    # -- display ---------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        if self.problem:
            return f"Cleaner({str(self.data)!r}: {self.problem})"
        classes = len({c for _, c, _ in self.folders})
        splits = [s for s in dict.fromkeys(s for s, _, _ in self.folders) if s]
        where = f" in {', '.join(splits)}" if splits else ""
        model = f", model {self.model.path or 'in memory'}" if self.model is not None else ""
        return (f"Cleaner({str(self.data)!r}: {classes} classes{where}, showing {self.split or ''}"
                f"{'/' if self.split else ''}{self.class_box.value}{model}; {self.applied} actions applied)")

    def _error(self, text: str) -> None:
        import html

        self.message.value = f"<b style='color:#b00'>⚠ {html.escape(text)}</b>"

    def _info(self, text: str) -> None:
        import html

        self.message.value = f"<span style='color:#070'>{html.escape(text)}</span>"

    # -- state -----------------------------------------------------------------------------------
    @staticmethod
    def _load_model(model: Any, trust: bool):
        if model is None:
            return None
        from ..predict import Predictor, load_model

        return model if isinstance(model, Predictor) else load_model(model, trust=trust, device="cpu")

    @property
    def split(self) -> str | None:
        value = self.split_box.value
        return None if value == "(none)" else value

    def _refresh_classes(self) -> None:
        names = [c for s, c, _ in self.folders if s == self.split]
        self.class_box.options = names
        if names and self.class_box.value not in names:
            self.class_box.value = names[0]
        self._goto(0)

    @property
    def folder(self) -> Path:
        return next(f for s, c, f in self.folders if s == self.split and c == self.class_box.value)

    def flags(self) -> dict[Path, Any]:
        if self._flags is None:
            self._flags = find_issues(self.data, self.config).by_path()
        return self._flags

    def _predict(self, paths: list[Path]) -> None:
        import numpy as np

        from ..predict import predict

        todo = [p for p in paths if p not in self._predictions]
        if not todo or self.model is None:
            return
        result = predict(self.model, todo, top_k=1)
        label = self.folder.name
        for row, probs in zip(result.rows, result.probs):
            true = self.model.classes.index(label) if label in self.model.classes else None
            loss = -math.log(max(float(probs[true]), 1e-12)) if true is not None else float("nan")
            self._predictions[Path(row["path"])] = (row["label"], float(np.max(probs)), loss)

    def images(self) -> list[Path]:
        """The current class folder's images after the filter and sort."""
        if self.problem:
            raise BirdclsError(self.problem)
        files, _ = class_files(self.folder)
        if self.filter_box.value != "all":
            flags = self.flags()
            wanted = (lambda f: True) if self.filter_box.value == "flagged" else (lambda f: "duplicate" in f.reason)
            files = [p for p in files if p in flags and wanted(flags[p])]
        if self.sort_box.value != "name":
            self._predict(files)
            key = (lambda p: -self._predictions[p][2]) if self.sort_box.value == "loss" else (
                lambda p: self._predictions[p][1])
            files.sort(key=lambda p: (math.isnan(key(p)), key(p)))
        return files

    # -- actions ---------------------------------------------------------------------------------
    def _act(self, fn, done: str, files_return: bool = False) -> Any:
        """Apply one decision and return what it returned, or None when it was refused: the widget's message
        says why (a click has nowhere else to show it). ``files_return`` (an undo) brings files back, so the
        checks' flags are stale."""
        if self.problem:
            self._error(self.problem)
            return None
        try:
            result = fn()
        except BirdclsError as exc:
            self._error(str(exc))
            return None
        self.applied += 1
        if files_return:
            self._flags = None
        self._info(done)
        self.render(keep_message=True)
        return result

    def delete(self, path: str | os.PathLike) -> Decision | None:
        """Move ``path`` to the quarantine (logged; undo brings it back)."""
        path = Path(path)
        return self._act(lambda: self.quarantine.quarantine(path, "deleted in the cleaner"),
                         f"moved {path.name} to quarantine")

    def keep(self, path: str | os.PathLike) -> Decision | None:
        """Mark ``path`` as reviewed and kept."""
        path = Path(path)
        return self._act(lambda: self.quarantine.keep(path), f"kept {path.name}")

    def move(self, path: str | os.PathLike, new_class: str) -> Decision | None:
        """Move ``path`` into the folder of ``new_class`` (a relabelling, logged)."""
        path = Path(path)
        return self._act(lambda: self.quarantine.move(path, new_class, f"moved to {new_class} in the cleaner"),
                         f"moved {path.name} to {new_class}")

    def undo(self) -> list[Decision] | None:
        """Revert the last action (what the undo button does); returns the decisions reverted."""
        return self._act(lambda: self.quarantine.undo("action"), "undid the last action", files_return=True)

    def _goto(self, page: int) -> None:
        if not hasattr(self, "class_box") or not self.class_box.options:
            return
        self.page = page
        self.render()

    def _tile(self, path: Path, kept: set[str]) -> dict[str, Any]:
        import html

        import ipywidgets as w

        rel = str(path.relative_to(self.data))
        lines = [html.escape(path.name[-24:])]
        flag = self.flags().get(path) if self._flags is not None else None
        if flag is not None:
            lines.append(f"<span style='color:#b60'>{html.escape(flag.reason)}</span>")
        if path in self._predictions:
            label, prob, loss = self._predictions[path]
            lines.append(f"pred {html.escape(label)} {prob:.2f} · loss {loss:.2f}")
        keep = w.Button(description="keep", tooltip=f"keep {rel}", layout=w.Layout(width="60px"),
                        button_style="success" if rel in kept else "")
        delete = w.Button(description="delete", tooltip=f"delete {rel}", layout=w.Layout(width="64px"),
                          button_style="danger")
        delete.add_class("birdcls-delete")
        others = [c for s, c, _ in self.folders if s == self.split and c != path.parent.name]
        move = w.Dropdown(options=["move to…", *others], value="move to…", layout=w.Layout(width=f"{self.thumb + 20}px"))
        keep.on_click(lambda _: self.keep(path))
        delete.on_click(lambda _: self.delete(path))
        move.observe(lambda change: change["new"] != "move to…" and self.move(path, change["new"]), names="value")
        image = w.Image(value=_thumbnail(path, self.thumb), format="png", width=self.thumb)
        box = w.VBox([image, w.HTML("<br>".join(lines)), w.HBox([keep, delete]), move],
                     layout=w.Layout(border="2px solid #2a2" if rel in kept else "1px solid #ccc", padding="3px"))
        return {"path": path, "box": box, "keep": keep, "delete": delete, "move": move}

    def render(self, keep_message: bool = False) -> None:
        if not keep_message:
            self.message.value = ""
        files = self.images()
        pages = max(1, -(-len(files) // self.page_size))
        self.page = min(max(self.page, 0), pages - 1)
        shown = files[self.page * self.page_size:(self.page + 1) * self.page_size]
        kept = self.quarantine.kept()
        self.tiles = [self._tile(p, kept) for p in shown]
        self.grid.children = [t["box"] for t in self.tiles]
        self.page_label.value = f"&nbsp;page {self.page + 1}/{pages} · {len(files)} images&nbsp;"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= pages - 1
        in_force = self.quarantine.active()
        n_kept = sum(d.action == "keep" for d in in_force)
        pending = sum(1 for p in files if str(p.relative_to(self.data)) not in kept)
        self.counter.value = (f"&nbsp;pending review here: {pending} · applied this session: {self.applied} · "
                              f"in force: {len(in_force) - n_kept} moved, {n_kept} kept")
        if not files:
            self.grid.children = []
            if not keep_message:
                self._info("no images in this view")
