"""Dataset importers on fixtures written in the real formats; downloads against a local HTTP server."""

import gzip
import hashlib
import os
import pickle
import tarfile
import threading
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


def test_digits_and_errors(tmp_path):
    out = get_dataset("digits", tmp_path / "digits")
    assert len(list((out / "train").iterdir())) == 10
    with pytest.raises(BirdclsError, match="already exists"):
        get_dataset("digits", tmp_path / "digits")
    with pytest.raises(BirdclsError, match="unknown dataset"):
        get_dataset("mnist", tmp_path / "x")
    with pytest.raises(BirdclsError, match="does not exist"):
        get_dataset("cifar10", tmp_path / "x", tmp_path / "missing.tar.gz")


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
    result = runner.invoke(app, ["datasets", "get", "cifar10", str(tmp_path / "c"), "--from", str(tmp_path / "raw")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
