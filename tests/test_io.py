"""Atomic writes leave files and folders with the permissions a direct write would give them."""

import stat
from pathlib import Path

from birdcls._io import write_text_atomic, write_with_atomic
from birdcls.split import split_dataset

from fixtures import make_class_folders


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_are_readable_by_others_like_any_new_file(tmp_path: Path):
    direct = tmp_path / "direct.txt"
    direct.write_text("x")
    write_text_atomic(tmp_path / "atomic.txt", "x")
    write_with_atomic(tmp_path / "written.bin", lambda tmp: tmp.write_bytes(b"x"))
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "written.bin") == _mode(direct)


def test_a_split_folder_is_readable_by_others(tmp_path: Path):
    (tmp_path / "direct").mkdir()
    split_dataset(make_class_folders(tmp_path / "raw", per_class=7), tmp_path / "out")
    assert _mode(tmp_path / "out") == _mode(tmp_path / "direct")
    direct = tmp_path / "direct.json"
    direct.write_text("{}")
    assert _mode(tmp_path / "out" / "split.json") == _mode(direct)


def test_plots_of_classes_named_with_emoji_print_no_font_warnings(tmp_path: Path):
    """matplotlib's default font has no emoji: it draws a box and warns once per glyph per draw, on stderr."""
    import warnings

    import numpy as np

    from birdcls.evaluate import plot_confusion_matrix

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["chats", "chiens \N{DOG FACE}"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").is_file() and [str(w.message) for w in caught] == []
