import json
import os
from pathlib import Path

import pytest
from PIL import Image

from birdcls.data.folders import find_splits, list_labelled_images, verify_images
from birdcls.errors import BirdclsError

from fixtures import make_split_dataset


def test_find_splits_accepts_val_or_valid(tmp_path: Path):
    root = make_split_dataset(tmp_path / "d", counts=(1, 1, 1))
    assert find_splits(root).val.name == "val"
    (root / "val").rename(root / "valid")
    assert find_splits(root).val.name == "valid"


@pytest.mark.parametrize("remove, message", [("train", "no train/"), ("val", "no val/"), ("test", "no test/")])
def test_find_splits_names_the_missing_folder(tmp_path: Path, remove, message):
    import shutil

    root = make_split_dataset(tmp_path / "d", counts=(1, 1, 1))
    shutil.rmtree(root / remove)
    with pytest.raises(BirdclsError, match=message):
        find_splits(root)


def test_missing_and_file_dataset(tmp_path: Path):
    with pytest.raises(BirdclsError, match="does not exist"):
        find_splits(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(BirdclsError, match="is a file"):
        find_splits(tmp_path / "f")


def test_bad_files_are_found_with_reasons(tmp_path: Path):
    d = tmp_path / "cls"
    d.mkdir()
    Image.new("RGB", (20, 20), "red").save(d / "good.jpg")
    full = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "html.jpg").write_text("<html>404 not found</html>")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("hello")
    by_class, others = list_labelled_images(tmp_path)
    assert [p.name for p in others] == ["notes.txt"]
    check = verify_images(by_class["cls"])
    assert [p.name for p in check.good] == ["good.jpg"]
    assert {p.name for p in check.bad} == {"truncated.jpg", "html.jpg", "empty.png"}
    assert "not an image" in check.bad[d / "html.jpg"]


def test_hidden_folders_are_ignored(tmp_path: Path):
    root = make_split_dataset(tmp_path / "d", counts=(2, 1, 1))
    (root / "train" / ".quarantine").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train" / ".quarantine" / "x.jpg")
    by_class, _ = list_labelled_images(root / "train")
    assert ".quarantine" not in by_class


def test_check_cache_trusts_unchanged_files_and_rechecks_changed_ones(tmp_path: Path):
    """A file whose size and modification time match the cache is not decoded again; any change to either
    gets it checked again; a damaged cache costs a full check, not an error."""
    d = tmp_path / "cls"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (80 * i, 0, 0)).save(d / f"{i}.jpg")
    paths = sorted(d.iterdir())
    cache = tmp_path / "cache" / "checks.json"
    assert len(verify_images(paths, cache=cache).good) == 3 and cache.is_file()
    target, st = paths[0], paths[0].stat()
    target.write_bytes(b"\0" * st.st_size)  # garbage of the same size, with the old time put back
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(verify_images(paths, cache=cache).good) == 3  # trusted from the cache: not decoded
    assert len(verify_images(paths).good) == 2  # without the cache the garbage is found
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = verify_images(paths, cache=cache)
    assert list(again.bad) == [target] and len(again.good) == 2
    cache.write_text("{not json")
    assert list(verify_images(paths, cache=cache).bad) == [target]
    assert json.loads(cache.read_text())["files"][str(target)][2] is not None  # rewritten whole
