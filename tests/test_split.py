import hashlib
import json
from pathlib import Path

import pytest
from fixtures import make_class_folders

from birdcls.errors import BirdclsError
from birdcls.split import split_dataset


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


def test_small_class_is_reported_but_keeps_train(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=10)
    for p in sorted((src / "jay").iterdir())[1:]:
        p.unlink()
    report = split_dataset(src, tmp_path / "out")
    assert report.counts["jay"]["train"] == 1
    assert report.too_small == ["jay"]
    assert (tmp_path / "out" / "test" / "jay").is_dir()


@pytest.mark.parametrize("ratio, message", [
    ((0.7, 0.2, 0.2), "must sum to 1"),
    ((1.2, -0.1, -0.1), "must not be negative"),
    ((0.7, 0.3), "three numbers"),
    ((0.0, 0.5, 0.5), "train 0"),
])
def test_bad_ratios(tmp_path: Path, ratio, message):
    src = make_class_folders(tmp_path / "raw", per_class=3)
    with pytest.raises(BirdclsError, match=message):
        split_dataset(src, tmp_path / "out", ratio=ratio)
    assert not (tmp_path / "out").exists()


def test_bad_paths(tmp_path: Path):
    src = make_class_folders(tmp_path / "raw", per_class=3)
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
    src = make_class_folders(tmp_path / "raw", per_class=5)
    split_dataset(src, tmp_path / "out", move=True)
    assert not list(src.rglob("*.jpg"))
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 15
