"""Dataset importers on fixtures written in the real formats; downloads against a local HTTP server."""

import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from birdcls.cli import app
from birdcls.data import sources
from birdcls.data.sources import Remote, download, get_dataset, read_cifar_batch, read_idx
from birdcls.errors import BirdclsError


def _cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"x", b"labels": [int(x) for x in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}
    return pickle.dumps(batch, protocol=2)


def _cifar_folder(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True)
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(_cifar_batch(n, i))
    (root / "test_batch").write_bytes(_cifar_batch(n, 9))
    return root


def _idx(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _fashion_folder(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(rng.integers(0, 255, (n, 28, 28))))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(rng.integers(0, 10, n)))
    return root


def test_cifar_batches_report_and_full_splits(tmp_path):
    src = _cifar_folder(tmp_path / "cifar-10-batches-py")
    report = get_dataset("cifar10", tmp_path / "report", src, split="report")
    assert sum(1 for _ in (report / "train").rglob("*.png")) == 20  # batch 1 only
    assert sum(1 for _ in (report / "val").rglob("*.png")) == 20  # batch 2
    assert sum(1 for _ in (report / "test").rglob("*.png")) == 20
    full = get_dataset("cifar10", tmp_path / "full", src)
    assert sum(1 for _ in (full / "train").rglob("*.png")) == 80
    img = np.asarray(Image.open(next((full / "test").rglob("*.png"))))
    assert img.shape == (32, 32, 3)
    # the archive works too, and the pixels are the batch's (CHW -> HWC)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    from_tar = get_dataset("cifar10", tmp_path / "tar", tmp_path / "cifar-10-python.tar.gz", split="report")
    images, labels = read_cifar_batch((src / "test_batch").read_bytes())
    first = sorted((from_tar / "test" / sources.CIFAR_CLASSES[labels[0]]).glob("00000.png"))[0]
    assert np.array_equal(np.asarray(Image.open(first)), images[0])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/birdcls-pwned",))


def test_malicious_or_foreign_pickles_are_refused(tmp_path):
    with pytest.raises(BirdclsError, match="not a CIFAR-10 batch.*refusing to load"):
        read_cifar_batch(pickle.dumps({b"data": _Evil()}))
    assert not Path("/tmp/birdcls-pwned").exists()
    with pytest.raises(BirdclsError, match="not a CIFAR-10 batch"):
        read_cifar_batch(pickle.dumps([1, 2, 3]))
    with pytest.raises(BirdclsError, match="not a CIFAR-10 batch"):
        read_cifar_batch(b"garbage")
    bad = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2]}
    with pytest.raises(BirdclsError, match="3 images but 2 labels"):
        read_cifar_batch(pickle.dumps(bad))


def test_fashion_mnist_idx(tmp_path):
    out = get_dataset("fashion-mnist", tmp_path / "fm", _fashion_folder(tmp_path / "raw"))
    counts = {s: sum(1 for _ in (out / s).rglob("*.png")) for s in ("train", "val", "test")}
    assert counts == {"train": 50, "val": 10, "test": 20}
    assert Image.open(next((out / "train").rglob("*.png"))).mode == "L"


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-5], "truncated or padded"),
    (lambda d: (1234).to_bytes(4, "big") + d[4:], "magic number 1234"),
    (lambda d: d[:6], "too short"),
])
def test_bad_idx_files(damage, message):
    raw = gzip.decompress(_idx(np.zeros((4, 28, 28))))
    with pytest.raises(BirdclsError, match=message):
        read_idx(damage(raw))


def test_fashion_count_mismatch(tmp_path):
    root = _fashion_folder(tmp_path / "raw")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.zeros(19)))
    with pytest.raises(BirdclsError, match="20 images but 19 labels"):
        get_dataset("fashion-mnist", tmp_path / "fm", root)
    assert not (tmp_path / "fm").exists() and not list(tmp_path.glob(".fm*"))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 200] + [1] * 18), r"test labels go up to 200, beyond its 10 classes \(0 to 9\)"),
    (np.zeros((20, 28, 28)), "test labels are not a list of labels"),  # an images file under the labels' name
])
def test_fashion_labels_that_are_not_its_classes_are_refused_in_one_line(tmp_path, labels, message):
    """They had ended in an IndexError (or TypeError) traceback half-way through writing the images."""
    root = _fashion_folder(tmp_path / "raw")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    with pytest.raises(BirdclsError, match=message):
        get_dataset("fashion-mnist", tmp_path / "fm", root)
    assert not (tmp_path / "fm").exists() and not list(tmp_path.glob(".fm*"))


def test_kaggle_flat_dogs_vs_cats(tmp_path):
    flat = tmp_path / "train"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(flat / f"{label}.{i}.jpg")
    out = get_dataset("dogs-vs-cats", tmp_path / "dvc", flat)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cats", "dogs"]
    assert sum(1 for _ in out.rglob("*.jpg")) == 20
    with pytest.raises(BirdclsError, match="Kaggle"):
        get_dataset("dogs-vs-cats", tmp_path / "dvc2")


# -- --from an archive: the layouts of ../shared/data's archives (and Kaggle's train.zip), made tiny here --
def _jpegs(root: Path, names: dict[str, int], seed: int = 0) -> None:
    """``names`` maps a relative path pattern with ``{i}`` to how many small random JPEGs to write there."""
    rng = np.random.default_rng(seed)
    for pattern, n in names.items():
        for i in range(n):
            path = root / pattern.format(i=i)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _archive(tree: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``tree``'s contents (their paths relative to it) as a .tar/.tar.gz/.tgz/.zip, plus raw ``extra`` members."""
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for f in files:
                zf.write(f, f.relative_to(tree).as_posix())
            for name, data in (extra or {}).items():
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz" if archive.name.endswith(("gz", "tgz")) else "w") as tar:
            for f in files:
                tar.add(f, f.relative_to(tree).as_posix())
            for name, data in (extra or {}).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return archive


def _dogs_vs_cats_tree(root: Path) -> Path:
    """``dogs-vs-cats/{cats,dogs}/{cat,dog}.N.jpg``, as in dogs-vs-cats.tar."""
    _jpegs(root, {"dogs-vs-cats/cats/cat.{i}.jpg": 10, "dogs-vs-cats/dogs/dog.{i}.jpg": 10})
    return root


def _leftovers(folder: Path, dest_name: str) -> list[Path]:
    """The dataset's temporary folders (``.DEST.*.partial``/``.unpack``, ``DEST-raw``) still beside it."""
    return sorted(folder.glob(f".{dest_name}.*")) + sorted(folder.glob(f"{dest_name}*-raw"))


@pytest.mark.parametrize("archive", ["dvc.tar", "dvc.tar.gz", "dvc.tgz", "dvc.zip"])
def test_dogs_vs_cats_from_archive(tmp_path, archive):
    src = _archive(_dogs_vs_cats_tree(tmp_path / "tree"), tmp_path / archive)
    out = get_dataset("dogs-vs-cats", tmp_path / "dvc", src)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cats", "dogs"]
    assert sum(1 for _ in out.rglob("*.jpg")) == 20
    assert json.loads((out / "dataset.json").read_text())["source"] == str(src)
    assert _leftovers(tmp_path, "dvc") == []


def test_dogs_vs_cats_from_kaggle_zip(tmp_path):
    # Kaggle's train.zip: one top folder of flat cat.N.jpg/dog.N.jpg; the label comes from the name
    _jpegs(tmp_path / "tree", {"train/cat.{i}.jpg": 10, "train/dog.{i}.jpg": 10})
    out = get_dataset("dogs-vs-cats", tmp_path / "dvc", _archive(tmp_path / "tree", tmp_path / "train.zip"))
    assert {p.parent.name for p in out.rglob("*.jpg")} == {"cats", "dogs"}
    assert sum(1 for _ in out.rglob("*.jpg")) == 20


def test_cifar10_jpeg_class_folders_from_archive_through_cli(tmp_path):
    # cifar10-jpg.tar.gz's layout: cifar10/{train,test}/<class>/NNNN.jpg; val is carved out of train
    _jpegs(tmp_path / "tree", {f"cifar10/{part}/{cls}/{{i:04d}}.jpg": n for part, n in (("train", 10), ("test", 3))
                               for cls in ("airplane", "cat")})
    src = _archive(tmp_path / "tree", tmp_path / "cifar10-jpg.tar.gz")
    result = CliRunner().invoke(app, ["datasets", "get", "cifar10", str(tmp_path / "c10"), "--from", str(src)])
    assert result.exit_code == 0, result.output
    counts = {s: sum(1 for _ in (tmp_path / "c10" / s).rglob("*.jpg")) for s in ("train", "val", "test")}
    assert counts == {"train": 18, "val": 2, "test": 6}
    assert sorted(p.name for p in (tmp_path / "c10" / "test").iterdir()) == ["airplane", "cat"]
    assert _leftovers(tmp_path, "c10") == []


def _cifar_class_folders(root: Path, train: int = 10, test: int = 3) -> Path:
    """cifar10-jpg.tar.gz's layout, tiny: ``cifar10/{train,test}/<class>/NNNN.jpg``."""
    _jpegs(root, {f"cifar10/{part}/{cls}/{{i:04d}}.jpg": n for part, n in (("train", train), ("test", test))
                  for cls in ("airplane", "cat")})
    return root / "cifar10"


def _jpeg_counts(out: Path) -> dict[str, int]:
    return {s: sum(1 for _ in (out / s).rglob("*.jpg")) for s in ("train", "val", "test")}


def test_cifar10_class_folders_honour_split_report(tmp_path):
    # the bug: --split report from JPEG class folders gave --split full's 90/10 train/val, and said nothing
    src = _cifar_class_folders(tmp_path / "tree", train=10)
    runner = CliRunner()
    result = runner.invoke(app, ["datasets", "get", "cifar10", str(tmp_path / "report"), "--from", str(src),
                                 "--split", "report"])
    assert result.exit_code == 0, result.output
    assert "stands in for batch 1" in result.output
    report = tmp_path / "report"
    assert _jpeg_counts(report) == {"train": 4, "val": 4, "test": 6}  # a fifth of each class each, as batches 1, 2
    train = {p.relative_to(report / "train") for p in (report / "train").rglob("*.jpg")}
    val = {p.relative_to(report / "val") for p in (report / "val").rglob("*.jpg")}
    assert not train & val and {p.parent.name for p in train} == {"airplane", "cat"}
    info = json.loads((report / "dataset.json").read_text())
    assert info["split"] == "report" and "batch 1" in info["split_detail"] and info["from"] == "class folders"
    # seeded: the same images every time
    again = get_dataset("cifar10", tmp_path / "again", src, split="report")
    assert {p.relative_to(again / "train") for p in (again / "train").rglob("*.jpg")} == train
    # --split full is still the whole train set less a 10% validation carve, and says so
    full = get_dataset("cifar10", tmp_path / "full", src)
    assert _jpeg_counts(full) == {"train": 18, "val": 2, "test": 6}
    assert json.loads((full / "dataset.json").read_text())["split"] == "full"


def test_cifar10_class_folders_with_val_pool_it_for_split_report(tmp_path):
    # a class-folder copy that already has val/ (e.g. an earlier `datasets get`): all of it is training images
    src = _cifar_class_folders(tmp_path / "tree", train=8)
    _jpegs(src, {f"val/{cls}/{{i:04d}}.jpg": 2 for cls in ("airplane", "cat")}, seed=1)
    out = get_dataset("cifar10", tmp_path / "out", src, split="report")
    assert _jpeg_counts(out) == {"train": 4, "val": 4, "test": 6}
    full = get_dataset("cifar10", tmp_path / "full", src)
    assert _jpeg_counts(full) == {"train": 16, "val": 4, "test": 6}
    assert json.loads((full / "dataset.json").read_text())["val"] == "the source's own"


def test_split_report_errors_are_one_line_and_leave_nothing(tmp_path):
    src = _cifar_class_folders(tmp_path / "tree", train=10)
    for f in sorted((src / "train" / "cat").iterdir())[1:]:
        f.unlink()  # one training image left in cat: too few to draw train and val from
    with pytest.raises(BirdclsError, match=r"at least 2 training images per class.* in cat: use --split full") as err:
        get_dataset("cifar10", tmp_path / "out", src, split="report")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path, "out") == []
    # --split is CIFAR-10's: elsewhere it is refused before anything is written, not ignored
    result = CliRunner().invoke(app, ["datasets", "get", "dogs-vs-cats", str(tmp_path / "dvc"), "--from",
                                      str(_dogs_vs_cats_tree(tmp_path / "dvc-tree")), "--split", "report"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--split report applies to cifar10 only" in result.output
    assert not (tmp_path / "dvc").exists() and _leftovers(tmp_path, "dvc") == []


def test_fashion_mnist_from_archive(tmp_path):
    _fashion_folder(tmp_path / "tree" / "fashion-mnist")  # the four .gz files in one top folder
    src = _archive(tmp_path / "tree", tmp_path / "fashion-mnist.zip")
    out = get_dataset("fashion-mnist", tmp_path / "fm", src)
    assert sum(1 for _ in (out / "test").rglob("*.png")) == 20
    assert _leftovers(tmp_path, "fm") == []


def test_cifar10_download_is_unpacked_like_from(file_server, tmp_path, monkeypatch):
    root, url = file_server
    src = _cifar_folder(tmp_path / "cifar-10-batches-py")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    md5 = hashlib.md5((root / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(sources.REMOTES, "cifar10", [Remote(f"{url}/cifar-10-python.tar.gz", md5)])
    monkeypatch.setenv("BIRDCLS_HOME", str(tmp_path / "home"))
    out = get_dataset("cifar10", tmp_path / "c10", split="report")
    assert sum(1 for _ in (out / "val").rglob("*.png")) == 20
    assert (tmp_path / "home" / "downloads" / "cifar10" / "cifar-10-python.tar.gz").is_file()  # kept for reuse
    assert _leftovers(tmp_path, "c10") == []


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bad_crc(data: bytes) -> bytes:
    # flip a byte inside the first stored member's data: the zip opens, the CRC check fails mid-extraction
    at = data.index(b"JFIF") + 100
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("archive, damage, message", [
    ("dvc.tar.gz", _truncated, "is damaged or not a"),
    ("dvc.tar", _truncated, "is damaged or not a"),
    ("dvc.tar", lambda d: b"\0" * 512 + d[512:], "holds no files \\(empty or damaged\\)"),
    ("dvc.zip", _truncated, "is damaged or not a"),
    ("dvc.zip", _bad_crc, "is damaged or not a"),
    ("dvc.rar", lambda d: b"Rar!\x1a\x07\x00" + d[:2000], "neither a folder nor an archive birdcls can unpack"),
])
def test_corrupt_or_unknown_archive_is_one_line_and_leaves_nothing(tmp_path, archive, damage, message):
    good = _archive(_dogs_vs_cats_tree(tmp_path / "tree"), tmp_path / ("good" + archive[3:]))
    if archive.endswith(".zip"):  # stored, so _bad_crc finds the JPEG bytes
        good.unlink()
        with zipfile.ZipFile(good, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted((tmp_path / "tree").rglob("*.jpg")):
                zf.write(f, f.relative_to(tmp_path / "tree").as_posix())
    bad = tmp_path / archive
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(BirdclsError, match=message) as err:
        get_dataset("dogs-vs-cats", tmp_path / "out", bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path, "out") == []
    result = CliRunner().invoke(app, ["datasets", "get", "dogs-vs-cats", str(tmp_path / "out"), "--from", str(bad)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "--from" in result.output or "extract it yourself" in result.output
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("archive", ["dvc.tar", "dvc.zip"])
@pytest.mark.parametrize("member", ["../escaped.jpg", "dogs-vs-cats/cats/../../../escaped.jpg", "/tmp/escaped.jpg"])
def test_path_traversal_member_is_refused(tmp_path, archive, member):
    src = _archive(_dogs_vs_cats_tree(tmp_path / "tree"), tmp_path / archive, extra={member: b"not an image"})
    with pytest.raises(BirdclsError, match="would be written outside the folder it is unpacked into"):
        get_dataset("dogs-vs-cats", tmp_path / "work" / "out", src)
    assert not list(tmp_path.rglob("escaped.jpg")) and not Path("/tmp/escaped.jpg").exists()
    assert not (tmp_path / "work" / "out").exists() and _leftovers(tmp_path / "work", "out") == []


def test_tar_links_are_not_extracted(tmp_path):
    # a link out of the extraction folder, and a file written through it: neither leaves the folder
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    src = _archive(_dogs_vs_cats_tree(tmp_path / "tree"), tmp_path / "dvc.tar")
    with tarfile.open(src, "a") as tar:
        link = tarfile.TarInfo("dogs-vs-cats/cats/cat.99.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, str(secret)
        tar.addfile(link)
        hop = tarfile.TarInfo("dogs-vs-cats/up")
        hop.type, hop.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(hop)
    out = get_dataset("dogs-vs-cats", tmp_path / "out", src)
    assert sum(1 for _ in out.rglob("*.jpg")) == 20 and not any(p.is_symlink() for p in out.rglob("*"))
    assert secret.read_text() == "outside"


def test_digits_and_errors(tmp_path):
    out = get_dataset("digits", tmp_path / "digits")
    assert len(list((out / "train").iterdir())) == 10
    with pytest.raises(BirdclsError, match="already exists"):
        get_dataset("digits", tmp_path / "digits")
    with pytest.raises(BirdclsError, match="unknown dataset"):
        get_dataset("mnist", tmp_path / "x")
    with pytest.raises(BirdclsError, match="does not exist"):
        get_dataset("cifar10", tmp_path / "x", tmp_path / "missing.tar.gz")
    (tmp_path / "mine").mkdir()
    with pytest.raises(BirdclsError, match="digits comes with scikit-learn.*drop --from"):
        get_dataset("digits", tmp_path / "d2", tmp_path / "mine")  # it had been ignored, and named as the source
    assert not (tmp_path / "d2").exists()


def test_dogs_vs_cats_errors_name_the_users_folder_not_a_temporary_copy(tmp_path):
    """A folder already split (train/ and test/) passed as dogs-vs-cats: split's refusal named the hidden
    copy it read, and advised training on it."""
    src = tmp_path / "cf"
    for part in ("train", "test"):
        for label in ("cats", "dogs"):
            (src / part / label).mkdir(parents=True)
            Image.new("RGB", (32, 32), (10, 20, 30)).save(src / part / label / "a.jpg")
    with pytest.raises(BirdclsError) as caught:
        get_dataset("dogs-vs-cats", tmp_path / "dvc", src)
    assert str(src) in str(caught.value) and "-raw" not in str(caught.value) and ".partial" not in str(caught.value)


@pytest.fixture()
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_checksums(file_server, tmp_path, monkeypatch):
    root, url = file_server
    _fashion_folder(root)
    remotes = [Remote(f"{url}/{p.name}", hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(root.iterdir())]
    monkeypatch.setitem(sources.REMOTES, "fashion-mnist", remotes)
    out = get_dataset("fashion-mnist", tmp_path / "fm")
    assert sum(1 for _ in (out / "test").rglob("*.png")) == 20
    with pytest.raises(BirdclsError, match="does not match its published checksum"):
        download(Remote(remotes[0].url, "0" * 32), tmp_path / "dl")
    assert not list((tmp_path / "dl").glob("*")) if (tmp_path / "dl").exists() else True
    with pytest.raises(BirdclsError, match="HTTP 404"):
        download(Remote(f"{url}/nope.gz", "0" * 32), tmp_path)


def test_cli_datasets(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["datasets", "get", "fashion-mnist", str(tmp_path / "fm"), "--from",
                                 str(_fashion_folder(tmp_path / "raw"))])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {tmp_path / 'fm'}: fashion-mnist, train ") and "{" not in result.output
    result = runner.invoke(app, ["datasets", "get", "cifar10", str(tmp_path / "c"), "--from", str(tmp_path / "raw")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
