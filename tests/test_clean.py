"""Automatic checks, quarantine + log + undo, and the widget driven by its own buttons."""

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from birdcls.clean import CleanConfig, Quarantine, clean_auto, find_issues, undo_clean
from birdcls.cli import app
from birdcls.errors import BirdclsError, Interrupted

from fixtures import make_class_folders, make_split_dataset


def _dirty(tmp_path: Path) -> Path:
    """Class folders with one of every problem the checks look for."""
    data = make_class_folders(tmp_path / "raw", per_class=6, size=96)
    jay, parrot = data / "jay", data / "parrot"
    shutil.copyfile(sorted(jay.iterdir())[0], jay / "exact-copy.jpg")
    arr = np.asarray(Image.open(sorted(jay.iterdir())[1])).astype(int) + 2
    Image.fromarray(np.clip(arr, 0, 255).astype("uint8")).save(jay / "near-copy.jpg", quality=75)
    shutil.copyfile(sorted(parrot.iterdir())[0], jay / "parrot-as-jay.jpg")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(jay / "tiny.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 400, 3), dtype=np.uint8)).save(jay / "banner.jpg")
    Image.fromarray(rng.integers(0, 12, (96, 96, 3), dtype=np.uint8)).save(jay / "dark.jpg")
    (jay / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return data


def test_auto_clean_takes_symlinked_class_folders_and_images_as_the_datasets(tmp_path):
    """A class folder linked in from elsewhere, and a linked image, are where the dataset links them: their
    duplicates are quarantined (the link itself for a linked image), logged and undone. They had stopped the run
    part-way, with some files moved and the rest not, as "not inside the dataset"."""
    data = make_class_folders(tmp_path / "raw", per_class=6, size=96)
    elsewhere = make_class_folders(tmp_path / "elsewhere", per_class=6, size=96, classes={"owl": (90, 90, 90)}, seed=5)
    (data / "owl").symlink_to(elsewhere / "owl", target_is_directory=True)
    owl_copy = elsewhere / "owl" / "copy.jpg"
    shutil.copyfile(sorted((elsewhere / "owl").iterdir())[0], owl_copy)
    jay_first = sorted((data / "jay").iterdir())[0]
    (data / "jay" / "zz-link.jpg").symlink_to(jay_first)  # the same pixels again, through a link
    shutil.copyfile(sorted((data / "parrot").iterdir())[0], data / "parrot" / "copy.jpg")
    result = clean_auto(data, CleanConfig())
    assert result.moved == 3
    assert (data / ".quarantine" / "owl" / "copy.jpg").is_file() and not owl_copy.exists()
    assert (data / ".quarantine" / "jay" / "zz-link.jpg").is_symlink() and jay_first.is_file()
    log = [json.loads(x) for x in (data / ".quarantine" / "decisions.jsonl").read_text().splitlines()]
    assert sorted(row["file"] for row in log) == ["jay/zz-link.jpg", "owl/copy.jpg", "parrot/copy.jpg"]
    assert undo_clean(data) == 3
    assert owl_copy.is_file() and (data / "jay" / "zz-link.jpg").is_symlink() and (data / "parrot" / "copy.jpg").is_file()


def test_a_relative_symlink_still_reaches_its_image_in_quarantine_and_back(tmp_path):
    """Moved as it is, a link to ``000.jpg`` would point at ``.quarantine/jay/000.jpg``: nothing (the widget could not
    show it). It is made again relative to where it goes."""
    data = make_class_folders(tmp_path / "raw", per_class=6, size=96)
    link = data / "jay" / "zz-link.jpg"
    link.symlink_to("000.jpg")
    quarantine = Quarantine(data)
    decision = quarantine.quarantine(link, "duplicate")
    moved = data / decision.dest
    assert moved.is_symlink() and moved.exists() and moved.resolve() == (data / "jay" / "000.jpg").resolve()
    quarantine.undo("action")
    assert link.is_symlink() and os.readlink(link) == "000.jpg"
    # the link and then its image in one run: the link leads nowhere meanwhile, and undo puts both back
    quarantine = Quarantine(data, run="both")
    quarantine.quarantine(link, "duplicate")
    quarantine.quarantine(data / "jay" / "000.jpg", "reviewed")
    assert quarantine.undo("run") and os.readlink(link) == "000.jpg" and link.resolve() == data / "jay" / "000.jpg"
    # through a linked class folder, ".." is taken from the folder's real place, as the system takes it
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "owl").mkdir(parents=True)
    (elsewhere / "shared").mkdir()
    shutil.copyfile(data / "jay" / "001.jpg", elsewhere / "shared" / "s.jpg")
    (elsewhere / "owl" / "up.jpg").symlink_to("../shared/s.jpg")
    (data / "owl").symlink_to(elsewhere / "owl", target_is_directory=True)
    decision = Quarantine(data).quarantine(data / "owl" / "up.jpg", "duplicate")
    assert (data / decision.dest).resolve() == (elsewhere / "shared" / "s.jpg").resolve()
    Quarantine(data).undo("action")
    assert (elsewhere / "owl" / "up.jpg").resolve() == (elsewhere / "shared" / "s.jpg").resolve()


def test_checks_find_every_problem(tmp_path):
    data = _dirty(tmp_path)
    report = find_issues(data, CleanConfig(dark=20))
    flags = {f.path.name: f for f in report.flags if f.path.parent.name == "jay"}
    assert flags["exact-copy.jpg"].reason == "exact duplicate"
    assert flags["near-copy.jpg"].reason == "near duplicate"
    conflicts = [f for f in report.flags if f.reason == "same image, other label"]
    assert len(conflicts) == 1 and not conflicts[0].move
    assert {conflicts[0].path.parent.name, conflicts[0].detail.split("/")[0][3:]} == {"jay", "parrot"}
    assert flags["tiny.jpg"].reason == "too small"
    assert flags["banner.jpg"].reason == "extreme aspect ratio"
    assert flags["dark.jpg"].reason == "very dark"
    assert flags["broken.jpg"].reason == "unreadable"


def test_auto_clean_quarantines_logs_and_undoes(tmp_path):
    data = _dirty(tmp_path)
    before = sorted(p.relative_to(data) for p in data.rglob("*.jpg"))
    result = clean_auto(data, CleanConfig(dark=20), report=True)
    assert result.moved == 6 and result.reported >= 1  # the same image under two labels stays
    assert (data / ".quarantine" / "jay" / "exact-copy.jpg").is_file() and not (data / "jay" / "exact-copy.jpg").exists()
    assert (data / "jay" / "parrot-as-jay.jpg").is_file()  # a labelling question stays put
    log = [json.loads(x) for x in (data / ".quarantine" / "decisions.jsonl").read_text().splitlines()]
    assert len(log) == 6 and {row["action"] for row in log} == {"quarantine"}
    assert all(row["file"] and row["reason"] and row["time"] for row in log)
    assert result.report_png.stat().st_size > 1000 and "exact duplicate" in result.report_html.read_text()
    assert undo_clean(data) == 6
    after = sorted(p.relative_to(data) for p in data.rglob("*.jpg") if ".quarantine" not in p.parts)
    assert after == before
    with pytest.raises(BirdclsError, match="nothing to undo"):
        undo_clean(data)


def test_an_interrupted_auto_clean_says_what_it_moved_and_undo_restores_it(tmp_path, monkeypatch):
    data = _dirty(tmp_path)
    before = sorted(p.relative_to(data) for p in data.rglob("*.jpg"))
    real, calls = Quarantine.quarantine, []

    def interrupted_on_the_third(self, path, reason):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, path, reason)

    monkeypatch.setattr(Quarantine, "quarantine", interrupted_on_the_third)
    with pytest.raises(Interrupted, match=r"interrupted after quarantining 2 of 6 flagged files.*--undo") as info:
        clean_auto(data, CleanConfig(dark=20))
    assert info.value.exit_code == 130
    assert not isinstance(info.value, Exception)  # a loop catching Exception around each call still stops
    monkeypatch.undo()
    assert undo_clean(data) == 2
    assert sorted(p.relative_to(data) for p in data.rglob("*.jpg") if ".quarantine" not in p.parts) == before


def test_edited_quarantine_fails_cleanly(tmp_path):
    data = _dirty(tmp_path)
    clean_auto(data, CleanConfig())
    (data / ".quarantine" / "jay" / "tiny.jpg").unlink()
    with pytest.raises(BirdclsError, match="edited by hand"):
        undo_clean(data)
    assert (data / ".quarantine" / "jay" / "exact-copy.jpg").is_file()  # nothing was half-undone


def test_cli_clean(tmp_path):
    runner = CliRunner()
    data = _dirty(tmp_path)
    result = runner.invoke(app, ["clean", str(data), "--auto", "--dry-run"])
    assert result.exit_code == 0 and "exact duplicate" in result.output
    assert "would move 5 files" in result.output and "moved 0" not in result.output, result.output
    assert "broken.jpg: unreadable (not an image)" in result.output  # the reason said once
    assert not (data / ".quarantine").exists()
    result = runner.invoke(app, ["clean", str(data), "--auto"])
    assert result.exit_code == 0 and "moved 5 files" in result.output  # no --dark here
    assert f"reported, not moved: {data / 'jay' / 'parrot-as-jay.jpg'}" in result.output  # named, for a person
    result = runner.invoke(app, ["clean", str(data), "--undo"])
    assert result.exit_code == 0 and "undid 5 decisions" in result.output
    tidy = make_class_folders(tmp_path / "tidy", per_class=1, size=96)  # 64 px is the smallest kept
    result = runner.invoke(app, ["clean", str(tidy), "--auto"])
    assert result.exit_code == 0 and "nothing to quarantine;" in result.output and "moved 0" not in result.output
    for args, message in ((["clean", str(tmp_path / "nope"), "--auto"], "does not exist"),
                          (["clean", str(data), "--undo"], "nothing to undo"),
                          (["clean", str(data)], "--auto"),
                          (["clean", str(data), "--auto", "--max-aspect", "0.5"], "--max-aspect")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
    (tmp_path / "empty" / "a").mkdir(parents=True)
    result = runner.invoke(app, ["clean", str(tmp_path / "empty"), "--auto"])
    assert result.exit_code == 2 and "holds no images" in result.output


def _noise(path: Path, height: int, width: int, seed: int = 0, offset: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 200, (height, width, 3)) + offset
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def _flat(path: Path, height: int, width: int, grey: int) -> Path:
    Image.fromarray(np.full((height, width), grey, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("near_distance", [4, -1])
def test_per_image_checks_win_over_duplicates(tmp_path, near_distance):
    cats = tmp_path / "raw" / "cats"
    cats.mkdir(parents=True)
    for i in range(3):
        _noise(cats / f"cat.{i}.png", 96, 96, seed=i)
    _flat(cats / "one.png", 1, 1, 200)
    _flat(cats / "one-b.png", 1, 1, 10)
    _flat(cats / "strip.png", 3, 5000, 100)
    _flat(cats / "gray16.png", 80, 80, 16)
    _flat(cats / "white.png", 96, 120, 255)
    shutil.copyfile(cats / "gray16.png", cats / "gray16 copy.png")
    # Two blank pages, one vignette at two brightnesses: the same hash, decided by rounding alone.
    yy, xx = np.mgrid[0:200, 0:200] / 200
    for name, level in (("page-a.png", 240), ("page-b.png", 200)):
        Image.fromarray(np.round(level - 6 * ((xx - .5) ** 2 + (yy - .5) ** 2)).astype(np.uint8)).save(cats / name)
    _noise(cats / "small.png", 40, 40, seed=7)
    shutil.copyfile(cats / "small.png", cats / "small(1).png")
    flags = {f.path.name: f for f in find_issues(tmp_path / "raw", CleanConfig(near_distance=near_distance)).flags}
    assert (flags["one.png"].reason, flags["one.png"].detail) == ("too small", "1x1 < 64 px")
    assert (flags["one-b.png"].reason, flags["strip.png"].detail) == ("too small", "5000x3 < 64 px")
    assert flags["small.png"].reason == flags["small(1).png"].reason == "too small"  # never matched as copies
    assert (flags["gray16 copy.png"].reason, flags["gray16 copy.png"].detail) == ("exact duplicate", "of cats/gray16.png")
    flagged = {"one.png", "one-b.png", "strip.png", "small.png", "small(1).png", "gray16 copy.png"}
    assert set(flags) == flagged, flags  # flat and blank images (gray16, white, the pages) make no near pairs


def test_duplicates_keep_the_original_name(tmp_path):
    data = tmp_path / "raw"
    jay, parrot = data / "jay", data / "parrot"
    jay.mkdir(parents=True)
    parrot.mkdir()
    pairs = {"cat.4220(1).png": "cat.4220.png", "bird copy.png": "bird.png", "x - Copy (2).png": "x.png",
             "b-1.png": "abc.png", "photo_2.png": "photo.png", "zz.png": "aa.png"}  # copy -> the one that stays
    for seed, (copy, original) in enumerate(pairs.items()):
        _noise(jay / original, 80, 80, seed=seed)
        shutil.copyfile(jay / original, jay / copy)
    _noise(jay / "near (1).png", 80, 80, seed=50, offset=2)
    _noise(jay / "near.png", 80, 80, seed=50)
    shutil.copyfile(jay / "cat.4220.png", parrot / "cat.4220(1).png")
    flags = {f.path.relative_to(data).as_posix(): f for f in find_issues(data).flags}
    for copy, original in pairs.items():
        assert (flags[f"jay/{copy}"].reason, flags[f"jay/{copy}"].detail) == ("exact duplicate", f"of jay/{original}")
    assert flags["jay/near (1).png"].reason == "near duplicate" and flags["jay/near (1).png"].detail.startswith(
        "of jay/near.png")
    conflict = flags["parrot/cat.4220(1).png"]
    assert (conflict.reason, conflict.detail, conflict.move) == ("same image, other label", "of jay/cat.4220.png", False)
    assert len(flags) == len(pairs) + 2
    result = clean_auto(data)
    assert result.moved == len(pairs) + 1 and (jay / "cat.4220.png").is_file() and not (jay / "cat.4220(1).png").exists()


def test_dry_run_moves_nothing_and_says_what_it_would_move(tmp_path):
    data = _dirty(tmp_path)
    result = clean_auto(data, CleanConfig(dark=20), dry_run=True)
    assert result.moved == 6 and not (data / ".quarantine").exists()
    assert "would move 6 files" in result.table() and "(run " not in result.table()
    clean_auto(data, CleanConfig(dark=20))
    reasons = {json.loads(x)["file"]: json.loads(x)["reason"] for x in (data / ".quarantine" / "decisions.jsonl").open()}
    assert reasons["jay/broken.jpg"] == "unreadable (not an image)"


def test_large_images_checked_quietly_bombs_reported(tmp_path, monkeypatch):
    from birdcls.clean.widget import _thumbnail

    data = make_class_folders(tmp_path / "raw", per_class=3, size=96)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # what a 108 MP photo is to the real limit
    big = _noise(data / "jay" / "big.png", 120, 120)  # over the limit: PIL warns
    shutil.copyfile(big, data / "jay" / "big (1).png")  # flagged, so the contact sheet opens it too
    bomb = _noise(data / "jay" / "bomb.png", 150, 150)  # over twice the limit: PIL raises
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = {f.path.name: f for f in find_issues(data, CleanConfig(dark=20, blurry=1)).flags}
        thumb = _thumbnail(bomb, 32)
        report = clean_auto(data, report=True).report_png  # opens the big image and the bomb for the sheet
    assert [str(w.message) for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    bomb_flag, big_flag = flags.pop("bomb.png"), flags.pop("big (1).png")
    assert (bomb_flag.reason, bomb_flag.detail) == ("unreadable", "DecompressionBombError: more pixels than PIL's safety limit")
    assert big_flag.reason == "exact duplicate" and "big.png" not in flags  # the big image passes every check
    assert thumb.startswith(b"\x89PNG") and report.is_file()  # the Cleaner shows a grey tile instead of raising


def test_cli_clean_refuses_contradictory_options(tmp_path):
    runner = CliRunner()
    data = _dirty(tmp_path)
    clean_auto(data)
    for args, message in ((["--auto", "--undo"], "--undo cannot be combined with --auto"),
                          (["--undo", "--dry-run"], "--undo cannot be combined with --dry-run"),
                          (["--auto", "--all"], "--all only goes with --undo")):
        result = runner.invoke(app, ["clean", str(data), *args])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
    assert (data / ".quarantine" / "jay" / "exact-copy.jpg").is_file()  # nothing was undone


def test_widget_buttons_apply_and_log(tmp_path):
    from birdcls.clean import Cleaner

    data = make_split_dataset(tmp_path / "d", counts=(6, 2, 2), size=64)
    cleaner = Cleaner(data, page_size=4)
    assert cleaner.split == "train" and cleaner.class_box.value == "cardinal"
    assert len(cleaner.tiles) == 4 and cleaner.page_label.value.count("page 1/2")
    first = cleaner.tiles[0]["path"]
    cleaner.tiles[0]["delete"].click()
    assert (data / ".quarantine" / "train" / "cardinal" / first.name).is_file()
    second = cleaner.tiles[0]["path"]
    cleaner.tiles[0]["keep"].click()
    third = cleaner.tiles[1]["path"]
    cleaner.tiles[1]["move"].value = "jay"
    moved_to = data / "train" / "jay" / f"{third.stem}-2{third.suffix}"  # jay has its own file of that name
    assert moved_to.is_file() and not third.exists()
    cleaner.next_button.click()
    cleaner.split_box.value = "val"
    cleaner.class_box.value = "parrot"
    cleaner.split_box.value = "train"
    cleaner.class_box.value = "cardinal"
    assert cleaner.tiles[0]["path"] == second and cleaner.tiles[0]["keep"].button_style == "success"  # mark survived
    log = Quarantine(data).decisions()
    assert [d.action for d in log] == ["quarantine", "keep", "move"] and {d.source for d in log} == {"widget"}
    cleaner.undo_button.click()  # undoes the move
    assert (data / "train" / "cardinal" / third.name).is_file()
    assert "applied this session: 4" in cleaner.counter.value
    # A fresh Cleaner (a kernel restart) sees the same state from the folder and the log.
    again = Cleaner(data, page_size=4)
    assert again.tiles[0]["path"] == second and again.tiles[0]["keep"].button_style == "success"


def test_widget_filters_and_model_sorting(tmp_path, trained_run):
    from birdcls.clean import Cleaner

    data = make_split_dataset(tmp_path / "d", counts=(5, 2, 2), size=64)
    shutil.copyfile(data / "train" / "jay" / "train_000.jpg", data / "train" / "jay" / "train_000 copy.jpg")
    cleaner = Cleaner(data, model=trained_run.run_dir, page_size=20)
    cleaner.class_box.value = "jay"
    cleaner.filter_box.value = "duplicates"
    assert [t["path"].name for t in cleaner.tiles] == ["train_000 copy.jpg"]  # the original stays unflagged
    cleaner.filter_box.value = "all"
    cleaner.sort_box.value = "loss"
    losses = [cleaner._predictions[t["path"]][2] for t in cleaner.tiles]
    assert losses == sorted(losses, reverse=True) and len(losses) == 6
    assert "pred " in cleaner.tiles[0]["box"].children[1].value


def test_widget_shows_errors_instead_of_raising(tmp_path):
    from birdcls.clean import Cleaner

    missing = Cleaner(tmp_path / "nope")
    assert "does not exist" in missing.message.value and "does not exist" in repr(missing)
    with pytest.raises(BirdclsError, match="does not exist"):  # from Python: the reason, not a StopIteration
        missing.images()
    assert missing.delete(tmp_path / "x.jpg") is None and "does not exist" in missing.message.value
    data = make_split_dataset(tmp_path / "d", counts=(3, 1, 1), size=64)
    cleaner = Cleaner(data)
    cleaner.undo_button.click()
    assert "nothing to undo" in cleaner.message.value
    path = cleaner.tiles[0]["path"]
    path.unlink()  # deleted behind the widget's back
    cleaner.tiles[0]["delete"].click()
    assert "already moved" in cleaner.message.value


def test_widget_actions_from_python_take_strings_and_return_the_decision(tmp_path):
    from birdcls.clean import Cleaner

    data = make_split_dataset(tmp_path / "d", counts=(4, 1, 1), size=64)
    cleaner = Cleaner(data, page_size=4)
    assert repr(cleaner) == f"Cleaner({str(data)!r}: 3 classes in train, val, test, showing train/cardinal; 0 actions applied)"
    first, second = (str(p) for p in cleaner.images()[:2])
    decision = cleaner.delete(first)
    assert decision.action == "quarantine" and (data / ".quarantine" / "train" / "cardinal" / Path(first).name).is_file()
    assert cleaner.keep(second).action == "keep"
    assert cleaner.delete(first) is None and "already moved" in cleaner.message.value  # refused: None, and why
    undone = cleaner.undo()
    assert [d.action for d in undone] == ["keep"] and cleaner.applied == 3
