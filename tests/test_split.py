import hashlib
import json
from pathlib import Path

import pytest

from birdcls.errors import BirdclsError
from birdcls.split import check_leakage, split_dataset

from fixtures import make_class_folders


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "split.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_split_is_70_15_15_and_reproducible(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=20)
    a = split_dataset(src, tmp_path / "a", seed=7)
    split_dataset(src, tmp_path / "b", seed=7)
    split_dataset(src, tmp_path / "c", seed=8)
    assert a.counts["jay"] == {"train": 14, "val": 3, "test": 3}
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    manifest = json.loads((tmp_path / "a" / "split.json").read_text())
    assert manifest["seed"] == 7 and manifest["ratio"] == [0.7, 0.15, 0.15]
    assert len(manifest["files"]) == 60
    assert all((src / v["source"]).is_file() for v in manifest["files"].values())
    assert not list(tmp_path.glob(".*partial"))


def test_non_images_are_skipped_and_counted(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=10)
    (src / "jay" / "readme.txt").write_text("x")
    report = split_dataset(src, tmp_path / "out")
    assert report.skipped_non_images == 1
    assert not list((tmp_path / "out").rglob("*.txt"))


def test_files_that_do_not_decode_are_left_out_named_and_left_in_place(tmp_path: Path):
    """An empty file, a cut-off JPEG and a text file named .png would have been copied into the splits (train
    and evaluate skip them later, so val/test silently shrink); split leaves them where they are and says why."""
    src = make_class_folders(tmp_path / "raw", per_class=10)
    (src / "jay" / "empty.jpg").write_bytes(b"")
    (src / "jay" / "cut.jpg").write_bytes((src / "jay" / "000.jpg").read_bytes()[:300])
    (src / "parrot" / "page.png").write_text("<html>moved</html>")
    for move in (False, True):
        raw = _copy(src, tmp_path / f"raw-{move}")
        report = split_dataset(raw, tmp_path / f"out-{move}", move=move)
        assert sorted(report.unreadable) == ["jay/cut.jpg", "jay/empty.jpg", "parrot/page.png"]
        assert report.unreadable["jay/empty.jpg"] == "unreadable (empty file)"
        assert report.unreadable["parrot/page.png"] == "unreadable (not an image)"
        assert "runcated" in report.unreadable["jay/cut.jpg"]  # PIL: "Truncated File Read" or "image file is truncated"
        assert all(sum(per.values()) == 10 for per in report.counts.values())
        manifest = json.loads((tmp_path / f"out-{move}" / "split.json").read_text())
        assert manifest["unreadable"] == report.unreadable
        assert not [p for p in (tmp_path / f"out-{move}").rglob("*") if p.name in ("empty.jpg", "cut.jpg", "page.png")]
        assert (raw / "jay" / "cut.jpg").is_file() and (raw / "parrot" / "page.png").is_file()
        assert report.unreadable_note(raw).startswith(f"left 3 unreadable images in {raw} out of the split "
                                                      "(jay/cut.jpg, jay/empty.jpg, parrot/page.png; ")
    assert split_dataset(src, tmp_path / "again", max_distance=-1).unreadable_note(src) != ""
    clean = make_class_folders(tmp_path / "clean", per_class=7)
    assert split_dataset(clean, tmp_path / "clean-out").unreadable_note(clean) == ""


def test_a_dataset_of_only_unreadable_files_is_refused_before_copying(tmp_path: Path):
    for cls in ("jay", "parrot"):
        (tmp_path / "raw" / cls).mkdir(parents=True)
        (tmp_path / "raw" / cls / "a.jpg").write_bytes(b"")
    with pytest.raises(BirdclsError, match=r"none of the 2 images in .* can be read \(e.g. jay/a.jpg: unreadable "
                                           r"\(empty file\)\): replace them with good copies"):
        split_dataset(tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial"))


def test_jpegs_named_jfif_jpe_or_jif_are_images(tmp_path: Path):
    """Windows saves a photo from a web page as .jfif: a class of them had been left out as "without readable
    images", leaving a one-class split."""
    src = make_class_folders(tmp_path / "raw", per_class=8)
    for i, image in enumerate(sorted((src / "jay").iterdir())):
        image.rename(image.with_suffix((".jfif", ".JFIF", ".jpe", ".jif")[i % 4]))
    report = split_dataset(src, tmp_path / "out", seed=1)
    assert report.empty_classes == [] and sum(report.counts["jay"].values()) == 8


def test_a_single_class_with_readable_images_is_refused_before_copying(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=8, classes={"jay": (30, 60, 200), "owl": (90, 90, 90)})
    for image in (src / "owl").iterdir():
        image.write_bytes(b"")
    with pytest.raises(BirdclsError, match=r"has readable images in 1 class folder \(jay\) \(owl has none\): a "
                                           "classifier needs at least 2"):
        split_dataset(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_raw_classes_called_train_and_test_are_split_not_refused_as_already_split(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=7, classes={"train": (200, 30, 30), "test": (30, 60, 200),
                                                                     "bus": (30, 170, 40)})
    report = split_dataset(src, tmp_path / "out")
    assert sorted(report.counts) == ["bus", "test", "train"] and report.counts["train"]["train"] == 4


def test_a_class_too_small_for_every_split_is_refused_before_copying(tmp_path: Path):
    """split-folders floors train and val: with 0.7 0.15 0.15 a class needs 7 images for val and test to get
    one each. Fewer is refused with the class, its count and the minimum, and nothing is written."""
    from birdcls.split import smallest_class, split_sizes

    assert smallest_class((0.7, 0.15, 0.15)) == 7 and split_sizes(7, (0.7, 0.15, 0.15)) == (4, 1, 2)
    assert min(split_sizes(6, (0.7, 0.15, 0.15))) == 0
    src = make_class_folders(tmp_path / "raw", per_class=10)
    for p in sorted((src / "jay").iterdir())[6:]:
        p.unlink()
    with pytest.raises(BirdclsError, match=r"class\(es\) jay \(6\) have too few images .* at least 7"):
        split_dataset(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial"))
    assert split_dataset(src, tmp_path / "out", ratio=(0.5, 0.25, 0.25)).counts["jay"] == {"train": 3, "val": 1,
                                                                                            "test": 2}


def test_hidden_and_empty_folders_stay_out_of_the_split(tmp_path: Path):
    """clean's .quarantine (hidden) is never copied or moved into a split; an empty class folder is left out
    and named, so train and evaluate never meet a class without images."""
    src = make_class_folders(tmp_path / "raw", per_class=10)
    quarantine = src / ".quarantine" / "jay"
    quarantine.mkdir(parents=True)
    (quarantine / "dup.jpg").write_bytes((src / "jay" / sorted(p.name for p in (src / "jay").iterdir())[0]).read_bytes())
    (src / ".quarantine" / "report.png").write_bytes(b"png")
    (src / "empty").mkdir()
    for move in (False, True):
        out = tmp_path / f"out-{move}"
        report = split_dataset(src, out, move=move) if not move else split_dataset(_copy(src, tmp_path / "m"), out,
                                                                                    move=True)
        assert report.empty_classes == ["empty"] and "empty" not in report.counts
        names = {p.relative_to(out).parts[1] for p in out.glob("*/*")}
        assert names == set(report.counts)  # no .quarantine, no empty
        assert sum(report.counts["jay"].values()) == 10
        assert json.loads((out / "split.json").read_text())["empty_classes"] == ["empty"]
    assert (tmp_path / "m" / ".quarantine" / "jay" / "dup.jpg").is_file()  # --move left it where it was


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("ratio, message", [
    ((0.7, 0.2, 0.2), "must sum to 1"),
    ((1.2, -0.1, -0.1), "must not be negative"),
    ((0.7, 0.3), r"ratio \(--ratio\) takes three numbers"),
    ((0.0, 0.5, 0.5), "train 0"),
    ((1.0, 0.0, 0.0), "val 0"),
    ((0.8, 0.2, 0.0), "test 0"),
])
def test_bad_ratios(tmp_path: Path, ratio, message):
    src = make_class_folders(tmp_path / "raw", per_class=3)
    with pytest.raises(BirdclsError, match=message):
        split_dataset(src, tmp_path / "out", ratio=ratio)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("bad", "message"), [
    ({"ratio": 0.7}, r"ratio takes three numbers \(train val test\), got 0.7"),
    ({"ratio": ("a", 0.2, 0.1)}, "ratio takes three numbers"),
    ({"seed": None}, r"seed \(--seed\) must be a whole number 0 or more, got None"),
    ({"seed": "abc"}, "seed"),
    ({"max_distance": "4"}, r"max_distance \(--max-distance\) must be a whole number from -1 to 16, got '4'"),
    ({"workers": -1}, "workers must be a whole number 1 or more"),
])
def test_bad_arguments_from_python_are_refused_before_any_work(tmp_path: Path, bad, message):
    raw = make_class_folders(tmp_path / "raw", per_class=7)
    with pytest.raises(BirdclsError, match=message):
        split_dataset(raw, tmp_path / "out", **bad)
    assert not (tmp_path / "out").exists()


def test_bad_paths(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=7)
    with pytest.raises(BirdclsError, match="does not exist"):
        split_dataset(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(BirdclsError, match="inside the source"):
        split_dataset(src, src / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BirdclsError, match="no class folders"):
        split_dataset(tmp_path / "empty", tmp_path / "out")
    split_dataset(src, tmp_path / "out")
    before = _tree_digest(tmp_path / "out")
    with pytest.raises(BirdclsError, match="already exists.*--overwrite"):
        split_dataset(src, tmp_path / "out", seed=99)
    assert _tree_digest(tmp_path / "out") == before  # nothing touched
    split_dataset(src, tmp_path / "out", seed=99, overwrite=True)
    assert _tree_digest(tmp_path / "out") != before


def test_move_empties_the_source(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=7)
    split_dataset(src, tmp_path / "out", move=True)
    assert not list(src.rglob("*.jpg"))
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 21


def _copy_with_noise(src: Path, dst: Path, seed: int) -> None:
    """A near duplicate: the same picture re-encoded at another JPEG quality, slightly brightened."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(src).convert("RGB")).astype(int) + np.random.default_rng(seed).integers(0, 4)
    Image.fromarray(np.clip(arr, 0, 255).astype("uint8")).save(dst, quality=70)


def test_duplicates_always_land_in_one_split(tmp_path: Path):
    import shutil

    src = make_class_folders(tmp_path / "raw", per_class=20, size=64)
    jay = sorted((src / "jay").iterdir())
    for k, original in enumerate(jay[:6]):
        shutil.copyfile(original, src / "jay" / f"copy{k}.jpg")  # exact duplicates
        _copy_with_noise(original, src / "jay" / f"near{k}.jpg", k)  # near duplicates
    for seed in range(4):
        report = split_dataset(src, tmp_path / f"s{seed}", seed=seed)
        manifest = json.loads((tmp_path / f"s{seed}" / "split.json").read_text())
        where = {v["source"]: v["split"] for v in manifest["files"].values()}
        for k, original in enumerate(jay[:6]):
            trio = {where[f"jay/{original.name}"], where[f"jay/copy{k}.jpg"], where[f"jay/near{k}.jpg"]}
            assert len(trio) == 1, (seed, original.name, trio)
        assert report.duplicate_groups >= 6
        leak = check_leakage(tmp_path / f"s{seed}")
        assert leak.count() == 0
    assert all(v["phash"] and v["pixel_sha256"] for v in manifest["files"].values())


def test_leakage_check_finds_planted_copies(tmp_path: Path):
    import shutil

    from fixtures import make_split_dataset

    data = make_split_dataset(tmp_path / "d", counts=(8, 3, 3), size=64)
    train_img = sorted((data / "train" / "jay").iterdir())[0]
    shutil.copyfile(train_img, data / "test" / "jay" / "leaked.jpg")
    _copy_with_noise(train_img, data / "val" / "jay" / "near.jpg", 1)
    shutil.copyfile(sorted((data / "train" / "parrot").iterdir())[0], data / "test" / "cardinal" / "mislabelled.jpg")
    report = check_leakage(data, report_png=tmp_path / "pairs.png")
    assert report.count(exact=True) == 2  # the two train images copied into test
    near = [p for p in report.pairs if not p["exact"] and "near.jpg" in (p["a"] + p["b"])]
    assert len(near) == 2  # the near copy in val, against its original in train and the leaked copy in test
    assert report.images_with_copy_in("test") == 2
    assert any(not p["same_label"] for p in report.pairs)
    assert (tmp_path / "pairs.png").stat().st_size > 1000
    assert "test images with a duplicate in train: 2" in report.summary()


def test_flat_images_are_not_near_duplicates_of_each_other(tmp_path: Path):
    """Every flat or blank image has the same perceptual hash: it says nothing about the picture, so such
    images are neither grouped by split nor reported as leakage (identical copies still are)."""
    from PIL import Image

    from birdcls.hashing import hash_images

    src = make_class_folders(tmp_path / "raw", per_class=10)
    for i, grey in enumerate((10, 60, 120, 200)):
        Image.new("RGB", (48, 48), (grey, grey, grey)).save(src / "jay" / f"flat{i}.png")
    hashes = hash_images(sorted((src / "jay").glob("flat*.png")), workers=1)
    assert len(set(hashes.phash.tolist())) == 1 and not hashes.informative.any()
    report = split_dataset(src, tmp_path / "out", seed=1)
    assert report.duplicate_groups == 0
    leakage = check_leakage(tmp_path / "out")
    assert not [p for p in leakage.pairs if "flat" in p["a"] or "flat" in p["b"]]


def _source_files(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too): relative path -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _no_work(monkeypatch) -> None:
    """Make hashing (the first real work of a split) fail the test, to prove a refusal comes before it."""
    import birdcls.hashing

    def fail(*_a, **_k):
        raise AssertionError("split started work before refusing the output")

    monkeypatch.setattr(birdcls.hashing, "hash_images", fail)


def test_a_file_as_the_output_is_refused_before_any_work(tmp_path: Path, monkeypatch):
    """A file at DST used to be copied into and then crash in rmtree (NotADirectoryError) with --overwrite."""
    src = make_class_folders(tmp_path / "raw", per_class=7)
    out = tmp_path / "out.txt"
    out.write_text("my notes")
    _no_work(monkeypatch)
    for overwrite in (False, True):
        with pytest.raises(BirdclsError, match=r"out\.txt is a file: choose a folder for the split dataset"):
            split_dataset(src, out, overwrite=overwrite)
    assert out.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "raw"]  # no staging folder was made


def test_overwrite_replaces_only_a_split_dataset_or_an_empty_folder(tmp_path: Path, monkeypatch):
    src = make_class_folders(tmp_path / "raw", per_class=7)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "split.json").write_text('{"not": "a birdcls manifest"}')
    with monkeypatch.context() as m:
        _no_work(m)
        for overwrite in (False, True):
            with pytest.raises(BirdclsError, match="mine is not empty and is not a split dataset .*refusing to "
                                                   "overwrite it; choose another output folder"):
                split_dataset(src, mine, overwrite=overwrite)
    assert _source_files(mine) == {"notes.txt": hashlib.sha256(b"keep me").hexdigest(),
                                   "split.json": hashlib.sha256(b'{"not": "a birdcls manifest"}').hexdigest()}
    (tmp_path / "empty").mkdir()
    assert sum(split_dataset(src, tmp_path / "empty").counts["jay"].values()) == 7  # empty: no --overwrite needed
    split_dataset(src, tmp_path / "empty", seed=5, overwrite=True)  # a split it made: replaced
    assert json.loads((tmp_path / "empty" / "split.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "raw"]  # no .old or .partial left


def test_an_interrupted_overwrite_keeps_the_old_split(tmp_path: Path, monkeypatch):
    """The old split is renamed aside, not deleted, until the new one is in place: Ctrl-C between the two
    renames puts it back."""
    import os

    src = make_class_folders(tmp_path / "raw", per_class=7)
    split_dataset(src, tmp_path / "out", seed=1)
    before = _source_files(tmp_path / "out")
    real_replace = os.replace

    def replace(a, b):
        if Path(a).is_dir() and Path(a).name.endswith(".partial"):  # the finished staging folder -> DST
            raise KeyboardInterrupt
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(src, tmp_path / "out", seed=2, overwrite=True)
    assert _source_files(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def _interrupt_move_on(monkeypatch, n: int, exc: BaseException, partial: bool = False, then=None) -> list[Path]:
    """Let split move n - 1 images, then raise ``exc`` on the n-th (after writing part of it to the target when
    ``partial``: a move across disks cut short; after calling ``then`` if given). Returns the sources moved."""
    import shutil

    import birdcls.split

    moved: list[Path] = []

    def move(source: Path, target: Path) -> None:
        if len(moved) == n - 1:
            if partial:
                target.write_bytes(source.read_bytes()[:100])
            if then is not None:
                then()
            raise exc
        shutil.move(source, target)
        moved.append(source)

    monkeypatch.setattr(birdcls.split, "_move_file", move)
    return moved


@pytest.mark.parametrize("partial", [False, True])
def test_ctrl_c_during_move_puts_every_image_back(tmp_path: Path, monkeypatch, partial):
    src = make_class_folders(tmp_path / "raw", per_class=10)
    (src / "jay" / "readme.txt").write_text("not an image")
    before = _source_files(src)
    moved = _interrupt_move_on(monkeypatch, 17, KeyboardInterrupt(), partial)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(src, tmp_path / "out", move=True)
    assert len(moved) == 16  # they really had been moved
    assert _source_files(src) == before  # every name back, byte for byte, nothing extra
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no DST, no staging folder


def test_a_failed_move_puts_every_image_back_and_says_so(tmp_path: Path, monkeypatch):
    src = make_class_folders(tmp_path / "raw", per_class=10)
    before = _source_files(src)
    _interrupt_move_on(monkeypatch, 25, OSError(28, "No space left on device"))
    with pytest.raises(BirdclsError, match=r"split --move stopped part-way \(OSError: .*No space left on device\): "
                                           r"every image already moved was moved back to .*raw") as info:
        split_dataset(src, tmp_path / "out", move=True)
    assert "\n" not in str(info.value)
    assert _source_files(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_when_moving_back_fails_the_error_says_where_the_images_are(tmp_path: Path, monkeypatch):
    import shutil

    src = make_class_folders(tmp_path / "raw", per_class=10)

    def broken_move(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    # Ctrl-C after 5 images are moved; from then on every move (moving back included) fails.
    _interrupt_move_on(monkeypatch, 6, KeyboardInterrupt(), then=lambda: monkeypatch.setattr(shutil, "move",
                                                                                             broken_move))
    with pytest.raises(BirdclsError, match=r"moving the images back failed .*: 5 images are still in (\S+)/<split>/"
                                           r"<class>/; move them back into .*raw/<class>/") as info:
        split_dataset(src, tmp_path / "out", move=True)
    staging = Path(str(info.value).split(" images are still in ")[1].split("/<split>")[0])
    assert staging.is_dir() and len([p for p in staging.rglob("*") if p.is_file()]) == 5  # kept, not deleted
    assert len(list(src.rglob("*.jpg"))) == 25


def test_images_in_sub_folders_of_a_class_are_left_out_and_counted(tmp_path: Path):
    """`predict raw/jay` goes into sub-folders; split takes only a class folder's own images and says how many
    it left out, and where, instead of dropping them silently."""
    src = make_class_folders(tmp_path / "raw", per_class=7)
    nested = src / "jay" / "nested"
    (nested / "deeper").mkdir(parents=True)
    (src / "jay" / ".hidden").mkdir()
    for p in (nested / "n.jpg", nested / "deeper" / "m.PNG", src / "parrot" / "old" / "o.jpg",
              src / "jay" / ".hidden" / "h.jpg"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((src / "jay" / "000.jpg").read_bytes())
    (nested / "notes.txt").write_text("not an image")
    for move in (False, True):
        raw = _copy(src, tmp_path / f"raw-{move}")
        report = split_dataset(raw, tmp_path / f"out-{move}", move=move)
        assert report.nested_images == {"jay": 2, "parrot": 1}
        assert report.nested_note() == ("3 images in sub-folders of class folders were left out: move them up into "
                                        "their class folder to include them (jay 2, parrot 1)")
        assert json.loads((tmp_path / f"out-{move}" / "split.json").read_text())["nested_images"] == {"jay": 2,
                                                                                                      "parrot": 1}
        assert sum(report.counts["jay"].values()) == 7
        assert not [p for p in (tmp_path / f"out-{move}").rglob("*") if p.name in ("n.jpg", "m.PNG", "o.jpg")]
        assert (raw / "jay" / "nested" / "deeper" / "m.PNG").is_file()  # --move left them where they were
    plain = split_dataset(make_class_folders(tmp_path / "plain", per_class=7), tmp_path / "plain-out")
    assert plain.nested_images == {} and plain.nested_note() == ""
    (tmp_path / "plain" / "jay" / "a").mkdir()
    (tmp_path / "plain" / "jay" / "a" / "x.jpg").write_bytes(b"")
    one = split_dataset(tmp_path / "plain", tmp_path / "plain-out", overwrite=True).nested_note()
    assert one == "1 image in a sub-folder of a class folder was left out: move it up into its class folder to include it (jay 1)"


def test_the_current_folder_as_output_is_refused_before_any_work(tmp_path: Path, monkeypatch):
    raw = make_class_folders(tmp_path / "a" / "raw", per_class=7)
    (tmp_path / "b" / "here").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b" / "here")
    for dst in (Path("."), tmp_path / "b"):
        with pytest.raises(BirdclsError, match="is the current folder or holds it: name a new folder"):
            split_dataset(raw, dst, overwrite=True)
    assert not any((tmp_path / "b" / "here").iterdir())


def test_split_check_and_clean_show_progress_on_stderr_only(tmp_path: Path, monkeypatch, capsys):
    """Lines for logs (the hashing, then the copying), a bar in a terminal, nothing with none; stdout keeps
    the table alone. The library is quiet unless asked."""
    from typer.testing import CliRunner

    from birdcls.cli import app

    monkeypatch.setattr("birdcls._terminal.QUIET_LINES_S", 0.0)  # as if the work took minutes
    src = make_class_folders(tmp_path / "raw", per_class=20)
    runner = CliRunner()
    lines = runner.invoke(app, ["split", str(src), str(tmp_path / "a"), "--progress", "lines"])
    assert lines.exit_code == 0, lines.output
    err = lines.stderr.splitlines()
    assert err[-1].startswith("copy: 60/60 images, ") and any(e.startswith("hash: 60/60 images, ") for e in err)
    assert "images/s" not in lines.stdout and "jay" in lines.stdout
    bars = runner.invoke(app, ["split", str(src), str(tmp_path / "b"), "--progress", "bars"])
    assert bars.exit_code == 0 and "60/60" in bars.stderr and "60/60" not in bars.stdout
    quiet = runner.invoke(app, ["split", str(src), str(tmp_path / "c"), "--progress", "none"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    check = runner.invoke(app, ["split", "--check", str(tmp_path / "a"), "--progress", "lines"])
    assert check.exit_code == 0 and check.stderr.splitlines()[-1].startswith("hash: 60/60 images, ")
    clean = runner.invoke(app, ["clean", str(src), "--auto", "--dry-run", "--progress", "lines"])
    assert clean.exit_code == 0 and clean.stderr.splitlines()[-1].startswith("hash: 60/60 images, ")
    bad = runner.invoke(app, ["split", str(src), str(tmp_path / "d"), "--progress", "loud"])
    assert bad.exit_code == 2 and "progress must be one of" in bad.stderr and not (tmp_path / "d").exists()
    capsys.readouterr()
    split_dataset(src, tmp_path / "e")  # the library's default: nothing shown
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupt_as_the_hashing_ends_exits_promptly(tmp_path: Path, signame):
    """A signal to the main process alone (`kill PID`) as the hashing pool shut down left the exiting process
    waiting on its workers forever, in about half the tries; now the shutdown finishes first."""
    import signal
    import subprocess
    import sys

    src = make_class_folders(tmp_path / "raw", per_class=200, size=24)  # 600 images: three hashing chunks
    sig = getattr(signal, signame)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "birdcls", "split", str(src), str(tmp_path / f"out{attempt}"),
                                 "--progress", "lines"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith("hash: 600/600"):
                proc.send_signal(sig)
                break
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-9", "-P", str(proc.pid)])
            proc.kill()
            raise AssertionError(f"split hung after {signame} (try {attempt + 1})") from None
        assert code in (0, 128 + sig)  # 0: the signal came after the split was in place
        assert not list(tmp_path.glob(".out*partial"))


def test_the_split_table_keeps_its_columns_for_long_class_names(tmp_path: Path):
    long_name = "a species named after a very long place name " * 4
    src = make_class_folders(tmp_path / "raw", per_class=8, classes={"jay": (30, 60, 200), long_name: (90, 90, 90)})
    lines = split_dataset(src, tmp_path / "out").table().splitlines()
    assert max(map(len, lines)) < 60 and len({len(line) for line in lines}) == 1
    cut = next(line for line in lines if "…" in line)
    assert cut.startswith("a species named") and cut.endswith("5      1      2")  # 8 images: 5/1/2
