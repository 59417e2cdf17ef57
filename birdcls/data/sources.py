"""Dataset sources: the reports' datasets imported (or downloaded) into the folder layout the pipeline trains on.

``get_dataset(NAME, DEST, source=None)`` writes ``DEST/{train,val,test}/<class>/*.png`` (plus a
``dataset.json``) from:

- ``cifar10``: the python-pickle batches (``data_batch_1..5``, ``test_batch``, as in
  ``cifar-10-python.tar.gz``) or a class-folder copy (``train/``, ``test/``). ``split="report"``
  keeps the CIFAR-10 report's split (batch 1 train, batch 2 validation, test batch test); ``"full"``
  uses batches 1-4 for train and 5 for validation. Class folders carry no batch numbers, so there
  ``"report"`` draws a seeded fifth of each class's training images for train and another fifth for
  validation (10,000 and 10,000 of CIFAR-10's 50,000, the sizes of batches 1 and 2), and ``"full"``
  keeps the source's ``val/`` or carves a seeded 10% of train out as validation (45,000/5,000).
  ``dataset.json`` records which split was made. ``--split`` applies to ``cifar10`` only.
- ``fashion-mnist``: the four IDX ``.gz`` files (train/t10k images and labels); validation is the last
  10,000 training images.
- ``dogs-vs-cats``: Kaggle's flat folder of ``cat.N.jpg``/``dog.N.jpg`` (label from the file name) or
  class folders; then a duplicate-aware seeded 70/15/15 split.
- ``digits``: scikit-learn's bundled handwritten digits (the offline demo's).

``source`` is a folder or an archive of one (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``,
``.zip``): an archive is unpacked into a temporary folder beside ``DEST`` (members that would land outside
it are refused) and removed afterwards; a single top folder inside it (``dogs-vs-cats/``, ``cifar10/``) is
stepped into, so the archive reads like the folder it holds.

Without ``source``, CIFAR-10 and Fashion-MNIST are downloaded from their canonical URLs and checked
against their MD5 sums. CIFAR batches are pickles: they are read with a restricted unpickler that only
accepts the dict/ndarray structure a CIFAR batch has, so a malicious pickle cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import with_default_mode, write_json_atomic
from ..errors import BirdclsError

__all__ = ["DATASETS", "get_dataset", "read_cifar_batch", "read_idx", "download"]

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str


REMOTES: dict[str, list[Remote]] = {
    "cifar10": [Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
    "fashion-mnist": [
        Remote("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
               "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Remote("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
               "25c81989df183df01b3e8a0aad5dffbe"),
        Remote("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
               "bef4ecab320f06d8554ea6380940ec79"),
        Remote("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
               "bb300cfdad3c16e7a12a480ee83cd310"),
    ],
}


# -- downloading ---------------------------------------------------------------------------------
def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - the checksum the dataset publishers give
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(remote: Remote, folder: Path, timeout: float = 30.0) -> Path:
    """Fetch ``remote`` into ``folder`` (kept if already there with the right MD5), verified, atomically."""
    import requests

    from .._io import atomic_path

    dest = folder / remote.url.rsplit("/", 1)[-1]
    if dest.is_file() and _md5(dest) == remote.md5:
        return dest
    try:
        with requests.get(remote.url, stream=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise BirdclsError(f"download of {remote.url} failed (HTTP {resp.status_code}): "
                                   "get the file yourself and pass it with --from")
            with atomic_path(dest) as tmp, tmp.open("wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
                fh.flush()
                if _md5(tmp) != remote.md5:
                    raise BirdclsError(f"{remote.url} does not match its published checksum (md5 {remote.md5}): "
                                       "the download is corrupt or changed; try again or use --from")
    except requests.RequestException as exc:
        raise BirdclsError(f"cannot download {remote.url} ({type(exc).__name__}); offline? get the file "
                           "elsewhere and pass it with --from") from None
    return dest


# -- archives ------------------------------------------------------------------------------------
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_FORMATS = ".tar, .tar.gz/.tgz, .tar.bz2, .tar.xz or .zip"


def _safe_member(archive: Path, name: str) -> None:
    """Refuse a member named to land outside the extraction folder (absolute, or climbing with ``..``)."""
    parts = Path(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts:
        raise BirdclsError(f"{archive} has a member named {name!r}, which would be written outside the folder it "
                           "is unpacked into: refusing it; get the dataset from a source you trust")


def _dataset_root(folder: Path) -> Path:
    """Step into single top folders (``dogs-vs-cats/``), ignoring hidden entries and macOS's ``__MACOSX``."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def _unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` (tar, compressed or not, or zip) into the empty folder ``into``; the dataset's root.

    Raises BirdclsError, in one line, for a format it does not know, a damaged archive, or a member that
    would be written outside ``into``; the caller removes ``into``.
    """
    name = archive.name.lower()
    is_zip = name.endswith(".zip") or (not name.endswith(_TAR_SUFFIXES) and zipfile.is_zipfile(archive))
    if not is_zip and not name.endswith(_TAR_SUFFIXES) and not tarfile.is_tarfile(archive):
        raise BirdclsError(f"--from {archive} is neither a folder nor an archive birdcls can unpack ({_FORMATS}): "
                           "extract it yourself and pass the folder")
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _safe_member(archive, member)
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _safe_member(archive, member.name)
                # a dataset needs only files and folders; "data" (Python >= 3.10.12/3.11.4) also vets the rest
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(into, members=[m for m in members if m.isfile() or m.isdir()], **safe)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk (space, permissions), not the archive
            raise BirdclsError(f"cannot unpack {archive} into {into.parent} ({exc.strerror}): check the space and "
                               "permissions there, or choose another DEST") from None
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        raise BirdclsError(f"{archive} is damaged or not a {_FORMATS} archive ({reason}): download it again, "
                           "or extract it yourself and pass the folder with --from") from None
    if not any(p.is_file() for p in into.rglob("*")):  # tar reads a zeroed header as a clean end
        raise BirdclsError(f"{archive} holds no files (empty or damaged): download it again, or extract it "
                           "yourself and pass the folder with --from")
    return _dataset_root(into)


# -- CIFAR-10 pickles, read safely ----------------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR batch needs (numpy array reconstruction); anything else is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(data: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N) from one CIFAR-10 python batch, validated."""
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise BirdclsError(f"{name} is not a CIFAR-10 batch ({str(exc)[:80]}): pass the python version's "
                           "data_batch_N / test_batch files") from None
    if not isinstance(batch, dict):
        raise BirdclsError(f"{name} is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    raw = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(raw, np.ndarray) or raw.ndim != 2 or raw.shape[1] != 3072 or not isinstance(labels, list):
        raise BirdclsError(f"{name} is not a CIFAR-10 batch (no N x 3072 'data' array and 'labels' list)")
    if len(labels) != raw.shape[0]:
        raise BirdclsError(f"{name}: {raw.shape[0]} images but {len(labels)} labels; the file is damaged")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() > 9):
        raise BirdclsError(f"{name}: labels outside 0..9; not a CIFAR-10 batch")
    return raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8), labels_arr


def _cifar_batches(source: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        hits = list(source.rglob(name))
        if hits:
            found[name] = hits[0].read_bytes()
    return found


# -- Fashion-MNIST IDX ----------------------------------------------------------------------------
def read_idx(data: bytes, name: str = "file") -> np.ndarray:
    """An IDX array (``.gz`` or raw bytes): magic 2049 (labels, 1-D) or 2051 (images, N x rows x cols)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise BirdclsError(f"{name} is a damaged gzip file ({exc}): download it again") from None
    if len(data) < 8:
        raise BirdclsError(f"{name} is too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (2049, 2051):
        raise BirdclsError(f"{name} has magic number {magic}, not an IDX labels (2049) or images (2051) file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise BirdclsError(f"{name} is truncated or padded: header says {dims} = {expected} bytes, "
                           f"file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_arrays(source: Path) -> dict[str, np.ndarray]:
    wanted = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
              "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    out = {}
    for key, stem in wanted.items():
        hits = sorted(source.glob(stem + "*")) if source.is_dir() else []
        if not hits:
            raise BirdclsError(f"{source} has no {stem}(.gz): pass the folder holding the four Fashion-MNIST IDX files")
        out[key] = read_idx(hits[0].read_bytes(), hits[0].name)
    for split in ("train", "test"):
        labels = out[f"{split}_labels"]
        if labels.ndim != 1:  # an images file named as the labels one
            raise BirdclsError(f"Fashion-MNIST {split} labels are not a list of labels (an IDX labels file, magic "
                               f"2049): pass the right files")
        if len(labels) and int(labels.max()) >= len(FASHION_CLASSES):
            raise BirdclsError(f"Fashion-MNIST {split} labels go up to {int(labels.max())}, beyond its "
                               f"{len(FASHION_CLASSES)} classes (0 to {len(FASHION_CLASSES) - 1}): the file is "
                               "damaged or another dataset's; download it again")
        n_img, n_lab = len(out[f"{split}_images"]), len(labels)
        if n_img != n_lab:
            raise BirdclsError(f"Fashion-MNIST {split}: {n_img} images but {n_lab} labels; the files do not match")
        if out[f"{split}_images"].ndim != 3:
            raise BirdclsError(f"Fashion-MNIST {split} images are not N x rows x cols")
    return out


# -- writing -------------------------------------------------------------------------------------
def _write_arrays(dest: Path, split: str, images: np.ndarray, labels: np.ndarray, classes: list[str],
                  prefix: str = "") -> None:
    from PIL import Image

    for name in classes:
        (dest / split / name).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        Image.fromarray(images[i]).save(dest / split / classes[labels[i]] / f"{prefix}{i:05d}.png", compress_level=1)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        list(pool.map(save, range(len(images))))


def _cifar10(source: Path | None, stage: Path, split: str = "full", work: Path | None = None,
             scratch: Path | None = None) -> dict[str, Any]:
    if source is None:
        source = _unpack(download(REMOTES["cifar10"][0], work), scratch)
    if source.is_dir() and (source / "train").is_dir() and (source / "test").is_dir() and not _cifar_batches(source):
        return _from_class_folders(source, stage, split)
    batches = _cifar_batches(source)
    missing = [n for n in ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if n not in batches]
    need = {"report": ["data_batch_1", "data_batch_2", "test_batch"]}.get(split, missing)
    if any(n in missing for n in need):
        raise BirdclsError(f"{source} lacks {', '.join(n for n in need if n in missing)}: pass the CIFAR-10 python "
                           "version (cifar-10-python.tar.gz or its extracted folder)")
    print("note: reading CIFAR-10 pickles with a restricted unpickler (arrays and lists only)", flush=True)
    plan = {"report": {"train": [1], "val": [2]}, "full": {"train": [1, 2, 3, 4], "val": [5]}}[split]
    for part, numbers in plan.items():
        for n in numbers:
            images, labels = read_cifar_batch(batches[f"data_batch_{n}"], f"data_batch_{n}")
            _write_arrays(stage, part, images, labels, CIFAR_CLASSES, prefix=f"b{n}_")
    images, labels = read_cifar_batch(batches["test_batch"], "test_batch")
    _write_arrays(stage, "test", images, labels, CIFAR_CLASSES)
    return {"split": split}


def _fashion_mnist(source: Path | None, stage: Path, work: Path | None = None, **_: Any) -> dict[str, Any]:
    if source is None:
        for remote in REMOTES["fashion-mnist"]:
            download(remote, work)
        source = work
    arrays = _fashion_arrays(source)
    n_val = min(10_000, len(arrays["train_images"]) // 6)
    cut = len(arrays["train_images"]) - n_val
    _write_arrays(stage, "train", arrays["train_images"][:cut], arrays["train_labels"][:cut], FASHION_CLASSES)
    _write_arrays(stage, "val", arrays["train_images"][cut:], arrays["train_labels"][cut:], FASHION_CLASSES, "v")
    _write_arrays(stage, "test", arrays["test_images"], arrays["test_labels"], FASHION_CLASSES)
    return {"val": f"last {n_val} training images"}


def _from_class_folders(source: Path, stage: Path, split: str = "full") -> dict[str, Any]:
    """A train/(val/)test class-folder layout, split as ``split`` asks (see the module docstring)."""
    if split == "report":
        return _report_from_class_folders(source, stage)
    for part in ("train", "val", "valid", "test"):
        if (source / part).is_dir():
            shutil.copytree(source / part, stage / ("val" if part == "valid" else part), dirs_exist_ok=True)
    if (stage / "val").exists():
        return {"from": "class folders", "split": "full", "val": "the source's own"}
    _carve_val(stage)
    return {"from": "class folders", "split": "full", "val": "a seeded 10% of each train class (seed 1337)"}


#: The report's batch 1 (train) and batch 2 (validation) are each a fifth of CIFAR-10's 50,000 training images.
_REPORT_SHARE = 0.2


def _training_pool(source: Path) -> dict[str, list[tuple[Path, str]]]:
    """Each class's training images (train/ plus any val/ or valid/, which were training images too), as
    (file, name to write it under): a val/ file keeps its part as a prefix so it cannot clash with train/'s."""
    pool: dict[str, list[tuple[Path, str]]] = {}
    for part in ("train", "val", "valid"):
        for cdir in sorted(p for p in (source / part).glob("*") if p.is_dir()):
            files = sorted(f for f in cdir.iterdir() if f.is_file() and not f.name.startswith("."))
            pool.setdefault(cdir.name, []).extend((f, f.name if part == "train" else f"{part}-{f.name}")
                                                  for f in files)
    return pool


def _report_from_class_folders(source: Path, stage: Path, seed: int = 1337) -> dict[str, Any]:
    """The report's split from class folders, which carry no batch numbers: a seeded fifth of each class
    stands in for batch 1 (train), another fifth for batch 2 (val); test/ is copied whole.

    Every class is checked before anything is copied, so a class too small for both parts fails at once.
    """
    pool = _training_pool(source)
    small = sorted(c for c, files in pool.items() if len(files) < 2)
    if small:
        raise BirdclsError(f"--split report needs at least 2 training images per class to draw train and val from, "
                           f"and {source} has fewer in {', '.join(small)}: use --split full with --from FOLDER")
    rng = np.random.default_rng(seed)
    plan: list[tuple[Path, Path]] = []
    for cls, files in sorted(pool.items()):
        order = rng.permutation(len(files))
        n = max(1, round(len(files) * _REPORT_SHARE))
        for part, picked in (("train", order[:n]), ("val", order[n:2 * n])):
            plan += [(files[i][0], stage / part / cls / files[i][1]) for i in sorted(picked)]
    print("note: class folders carry no CIFAR-10 batch numbers: a seeded fifth of each class stands in for "
          "batch 1 (train), another for batch 2 (val)", flush=True)
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    shutil.copytree(source / "test", stage / "test", dirs_exist_ok=True)
    return {"from": "class folders", "split": "report",
            "split_detail": f"no batch numbers in class folders: a seeded {_REPORT_SHARE:.0%} of each class's "
                            f"training images stands in for batch 1 (train), another {_REPORT_SHARE:.0%} for "
                            f"batch 2 (val), seed {seed}"}


def _carve_val(stage: Path, fraction: float = 0.1, seed: int = 1337) -> None:
    """Move a seeded ``fraction`` of each train class to val (for layouts that ship only train/test)."""
    rng = np.random.default_rng(seed)
    for cdir in sorted(p for p in (stage / "train").iterdir() if p.is_dir()):
        files = sorted(cdir.iterdir())
        take = rng.permutation(len(files))[: max(1, int(len(files) * fraction))]
        (stage / "val" / cdir.name).mkdir(parents=True, exist_ok=True)
        for i in sorted(take):
            os.replace(files[i], stage / "val" / cdir.name / files[i].name)


def _dogs_vs_cats(source: Path | None, stage: Path, **_: Any) -> dict[str, Any]:
    if source is None:
        raise BirdclsError("dogs-vs-cats comes from Kaggle, which needs a login: download it there and pass "
                           "the archive or folder (flat cat.N.jpg/dog.N.jpg, or class folders) with --from")
    from ..split import split_dataset

    raw = stage.parent / (stage.name + "-raw")
    flat = sorted(p for p in source.iterdir() if p.is_file() and p.name.split(".")[0] in ("cat", "dog")) \
        if source.is_dir() else []
    if flat:
        for p in flat:
            label = "cats" if p.name.startswith("cat") else "dogs"
            (raw / label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, raw / label / p.name)
    elif source.is_dir() and any(p.is_dir() for p in source.iterdir()):
        shutil.copytree(source, raw, dirs_exist_ok=True)
    else:
        raise BirdclsError(f"{source} holds neither cat.N.jpg/dog.N.jpg files nor class folders: pass Kaggle's "
                           "train.zip (or its folder) or one holding cats/ and dogs/")
    try:
        split_dataset(raw, stage, overwrite=True)
    except BirdclsError as exc:  # named as the folder the user passed, not the copy split read
        raise BirdclsError(str(exc).replace(str(raw), str(source))) from None
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    return {"split": "duplicate-aware 70/15/15, seed 1337"}


def _digits(source: Path | None, stage: Path, **_: Any) -> dict[str, Any]:
    from ..demo import write_digits
    from ..split import split_dataset

    if source is not None:
        raise BirdclsError("digits comes with scikit-learn, so there is nothing to read from --from: drop --from")
    raw = write_digits(stage.parent / (stage.name + "-raw"))
    try:
        split_dataset(raw, stage, overwrite=True)
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    return {"split": "duplicate-aware 70/15/15, seed 1337"}


DATASETS: dict[str, Callable[..., dict[str, Any]]] = {
    "cifar10": _cifar10, "fashion-mnist": _fashion_mnist, "dogs-vs-cats": _dogs_vs_cats, "digits": _digits,
}


def get_dataset(name: str, dest: str | os.PathLike, source: str | os.PathLike | None = None, split: str = "full",
                overwrite: bool = False) -> Path:
    """Import (``source``: a folder or an archive of one) or download a dataset into ``dest/{train,val,test}/<class>/``.

    Atomic: the dataset is built in a temporary folder beside ``dest`` and renamed onto it, and an archive is
    unpacked into another one, removed afterwards; on any error neither is left behind and ``dest`` is untouched.

    Example:
        >>> get_dataset("dogs-vs-cats", "data/dvc", "dogs-vs-cats.tar")  # doctest: +SKIP
    """
    if name not in DATASETS:
        raise BirdclsError(f"unknown dataset '{name}': use one of {', '.join(DATASETS)}")
    if split not in ("full", "report"):
        raise BirdclsError(f"--split must be full or report, got {split!r}")
    if split == "report" and name != "cifar10":
        raise BirdclsError(f"--split report applies to cifar10 only: {name} has one split (its report recipes "
                           "take their subsets when training); drop --split")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise BirdclsError(f"{dest} is a file: choose a folder for the dataset")
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise BirdclsError(f"{dest} already exists: pass --overwrite (overwrite=True) or choose another folder")
        if not ((dest / "dataset.json").is_file() or (dest / "split.json").is_file()):  # a user's own files
            raise BirdclsError(f"{dest} is not a dataset that birdcls wrote (no dataset.json or split.json): "
                               "refusing to replace it; choose another folder")
    src = Path(source) if source is not None else None
    if src is not None and not src.exists():
        raise BirdclsError(f"--from {src} does not exist: pass the archive or folder you downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpack", dir=dest.parent))
    from .._trust import birdcls_home

    work = birdcls_home() / "downloads" / name  # kept: a second `get` reuses verified downloads
    work.mkdir(parents=True, exist_ok=True)
    folder = src
    try:
        shutil.rmtree(stage)
        stage.mkdir()
        if src is not None and src.is_file():
            folder = _unpack(src, scratch)
        info = DATASETS[name](folder, stage, split=split, work=work, scratch=scratch)
        counts = {s: sum(1 for _ in (stage / s).rglob("*") if _.is_file()) for s in ("train", "val", "test")
                  if (stage / s).is_dir()}
        write_json_atomic(stage / "dataset.json", {"name": name, "source": str(src or "download"), "counts": counts,
                                                   **info})
        if dest.exists():
            shutil.rmtree(dest)
        with_default_mode(stage, directory=True)  # mkdtemp's folders are private
        os.replace(stage, dest)
    except BirdclsError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if folder == src:
            raise
        # the message names the archive the user passed, not the temporary folder it was unpacked into
        raise BirdclsError(str(exc).replace(str(folder), str(src))) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest
