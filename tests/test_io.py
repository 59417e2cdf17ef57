"""Atomic writes leave files and folders with the permissions a direct write would give them; a folder lock
keeps out a second writer; deferred signals wait for the end of a step."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from birdcls._io import LOCK_NAME, folder_lock, signals_deferred, write_text_atomic, write_with_atomic
from birdcls.errors import BirdclsError
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


def test_plots_leave_the_users_matplotlib_backend_alone(tmp_path: Path):
    """A notebook draws inline through its own backend: writing a run's plots must not switch it to Agg,
    which would silence every later plot of the session."""
    import matplotlib
    import numpy as np

    from birdcls._plots import contact_sheet
    from birdcls.evaluate import plot_confusion_matrix, plot_curves
    from birdcls.split import check_leakage

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
        plot_curves([{"phase": "head", "train_loss": 1.0, "valid_loss": 0.9, "accuracy": 0.5}], tmp_path / "c.png")
        data = split_dataset(make_class_folders(tmp_path / "raw", per_class=7), tmp_path / "data").dst
        image = next((data / "train").rglob("*.jpg"))
        contact_sheet([(image, "caption", False)], tmp_path / "sheet.png", "title")
        check_leakage(data, report_png=tmp_path / "pairs.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("cm.png", "c.png", "sheet.png", "pairs.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_a_locked_folder_refuses_a_second_writer_until_the_first_ends(tmp_path: Path):
    """Another process holds the lock: refused with its pid; once that process has ended, the lock is free,
    even though it never unlocked (the system drops a dead process's flock)."""
    folder = tmp_path / "run"
    code = ("import sys, time; from birdcls._io import folder_lock\n"
            "with folder_lock(sys.argv[1], 'test'):\n    print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BirdclsError, match=rf"in use by another `birdcls train` \(pid {holder.pid}\): wait"):
            with folder_lock(folder, "`birdcls train`"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(folder, "`birdcls train`"):
        assert (folder / LOCK_NAME).read_text() == str(os.getpid())


def test_a_lock_file_removed_between_open_and_lock_is_not_trusted(tmp_path: Path, monkeypatch):
    """The holder before us removed its lock file (and folder) after we opened it: our lock on that unlinked file
    would guard nothing, since the next writer creates and locks a new file, so the lock is taken on the file
    that is there now and the next writer is refused."""
    import fcntl

    folder = tmp_path / "run"
    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_left(fd, op):
        if not calls:  # the first attempt: the file we opened goes away before we lock it
            (folder / LOCK_NAME).unlink()
            folder.rmdir()
        calls.append(op)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    with folder_lock(folder, "`birdcls train`"):
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert (folder / LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(BirdclsError, match="in use by another `birdcls train`"):
            with folder_lock(folder, "`birdcls train`"):
                pass


def test_signals_wait_for_the_end_of_a_deferred_step():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("moved")
            steps.append("logged")  # still reached: the interrupt waits for the block's end
        steps.append("after")  # never reached
    assert steps == ["moved", "logged"]


def test_deferred_signals_can_be_kept_and_sigterm_wins():
    """A step that completes may keep what came meanwhile (split's final swap); when both signals came, the
    one re-raised is SIGTERM (exit 143), and every handler is back afterwards."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with signals_deferred(reraise=False) as caught:
        os.kill(os.getpid(), signal.SIGINT)
    assert caught == [signal.SIGINT]
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before[signal.SIGTERM])
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_file_system_without_locks_runs_unlocked_and_clean(tmp_path: Path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ValueError) as info:
        with folder_lock(tmp_path / "run", "`birdcls train`"):
            raise ValueError("the run's own error")
    assert info.value.__context__ is None  # not reported as happening "during" the lock failure


def _fonts_in_a_collection(char: str, dest: Path) -> Path:
    """A TrueType collection (fontTools, matplotlib's own dependency) of two one-glyph fonts: the first,
    "Birdcls Empty", has no glyph for ``char``; the second, "Birdcls Square", draws it as a filled square."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTCollection

    def square(filled: bool):
        pen = TTGlyphPen(None)
        if filled:
            pen.moveTo((50, 0))
            pen.lineTo((50, 900))
            pen.lineTo((950, 900))
            pen.lineTo((950, 0))
            pen.closePath()
        return pen.glyph()

    def font(family: str, code_point: int):
        builder = FontBuilder(1000, isTTF=True)
        builder.setupGlyphOrder([".notdef", "square"])
        builder.setupCharacterMap({code_point: "square"})
        builder.setupGlyf({".notdef": square(False), "square": square(True)})
        builder.setupHorizontalMetrics({".notdef": (1000, 0), "square": (1000, 50)})
        builder.setupHorizontalHeader(ascent=900, descent=-100)
        builder.setupNameTable({"familyName": family, "styleName": "Regular"})
        builder.setupOS2()
        builder.setupPost()
        return builder.font

    collection = TTCollection()
    collection.fonts = [font("Birdcls Empty", ord("A")), font("Birdcls Square", ord(char))]
    collection.save(str(dest))
    return dest


def _solid_share(path: Path) -> float:
    """The share of dark pixels inside the box around all dark pixels: about 1 for a filled square."""
    import numpy as np
    from PIL import Image

    dark = np.asarray(Image.open(path).convert("L")) < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return float(dark[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].mean())


def test_a_class_name_the_default_font_lacks_draws_in_an_installed_font_that_has_it(tmp_path: Path, capsys,
                                                                                        monkeypatch):
    """A heron's Japanese name, 鷺: DejaVu Sans has no glyph for it. With no installed font that has it, it
    shows as a placeholder box and one note on stderr names the character and the fix, once; with one
    installed (here the second font of a .ttc collection, whose glyph is a filled square), the plot draws it
    through matplotlib's font fallback. Only matplotlib's own fonts count as installed here, so that the
    machine's fonts do not decide the outcome."""
    from matplotlib import font_manager

    import birdcls._plots
    from birdcls._io import save_figure_atomic
    from birdcls._plots import figure

    def draw(label: str, name: str) -> Path:
        fig = figure(figsize=(2, 1))
        fig.text(0.1, 0.2, label, fontsize=40)
        return save_figure_atomic(tmp_path / name, fig, dpi=100)

    manager = font_manager.fontManager
    bundled = [e for e in manager.ttflist if "mpl-data" in Path(e.fname).parts]
    monkeypatch.setattr(manager, "ttflist", bundled)
    monkeypatch.setattr(birdcls._plots, "_said_missing", set())
    manager._findfont_cached.cache_clear()
    heron = "\u9dfa"
    capsys.readouterr()
    try:
        assert _solid_share(draw(heron, "before.png")) < 0.6  # the placeholder: a frame with its block's name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no installed font draws \u9dfa" in err and "fonts-noto-cjk" in err
        draw(heron, "again.png")
        assert capsys.readouterr().err == ""  # said once a process
        manager.addfont(str(_fonts_in_a_collection(heron, tmp_path / "two.ttc")))
        assert {e.name for e in manager.ttflist} >= {"Birdcls Empty", "Birdcls Square"}
        assert _solid_share(draw(heron, "after.png")) > 0.95
        assert capsys.readouterr().err == ""
    finally:
        manager._findfont_cached.cache_clear()  # the fonts put back by monkeypatch are found again


def test_a_class_name_with_dollar_signs_is_a_name_not_mathtext(tmp_path: Path):
    """Read as mathtext, "a$b$" would draw b in math italics, and "$x^$" fails the whole plot."""
    import numpy as np

    from birdcls.evaluate import plot_confusion_matrix

    plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["$x^$", "a$b$"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").is_file()


def test_tick_numbers_a_style_writes_as_mathtext_still_draw_as_numbers(tmp_path: Path):
    """axes.formatter.use_mathtext (a user's style) makes the formatter write "$\\mathdefault{0.5}$": drawn
    as math, that is "0.5"; only the names birdcls wrote itself are kept from mathtext."""
    import matplotlib

    from birdcls._io import save_figure_atomic
    from birdcls._plots import figure

    with matplotlib.rc_context({"axes.formatter.use_mathtext": True}):
        fig = figure(figsize=(2, 2))
        ax = fig.subplots()
        ax.plot([0, 1], [0.5, 1.5])
        ax.set_title("a$b$")
        save_figure_atomic(tmp_path / "curve.png", fig, dpi=50)
    numbers = [t for t in ax.get_yticklabels() if t.get_text()]
    assert numbers and all("mathdefault" in t.get_text() and t.get_parse_math() for t in numbers)
    assert not ax.title.get_parse_math()
