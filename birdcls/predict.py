"""Batched inference from any export: a run directory, ``.pkl``, ``.safetensors`` (+ JSON) or ``.onnx``.

Every format goes through the same preprocessing (RGB, squish-resize to the training size, scale to
0..1, normalise with the training statistics) and the same batching, so their answers agree.
The ONNX path never imports torch or fastai, which keeps a one-image prediction quick to start.

Example:
    >>> model = load_model("models/birds.safetensors")
    >>> rows = predict(model, ["photo1.jpg", "some_dir/"], top_k=3).rows
    >>> rows[0]["label"], rows[0]["prob"]
"""

from __future__ import annotations

import json
import os
import sys
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._terminal import progress_mode, with_progress
from ._trust import is_trusted_pickle
from .config import check_device_name
from .data.decode import imap_ahead, load_image, load_image_or_reason, map_ahead
from .data.folders import IMAGE_EXTENSIONS
from .errors import BirdclsError, check_int
from .runtime import CPU_BATCH, GPU_BATCH, PKL_DIGEST, ModelInfo, check_precision, resolve_device, resolve_precision

__all__ = ["PredictionResult", "Predictor", "check_csv_target", "check_predict_options", "csv_header", "gather_images",
           "load_image", "load_model", "predict", "uint8_input_model"]

MODEL_SUFFIXES = (".pkl", ".safetensors", ".onnx")
BACKENDS = ("auto", "torch")


def normalise(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, scaled to 0..1 and normalised (for ONNX files that take float input;
    current exports do this inside the graph)."""
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class Predictor:
    """A loaded model: ``probabilities(uint8 batch)`` plus the info needed to label the answers."""

    def __init__(self, info: ModelInfo, backend: Any, path: Path | None = None):
        self.info, self._backend, self.path = info, backend, path
        self._pool: Any = None  # worker processes that decode for predict(), kept across calls (decode_pool)
        self._pool_workers = 0
        self._stop_pool: Any = None  # shuts _pool down, once: on close(), or when this predictor is collected

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoding worker processes, if a call started them (they also stop when the program ends,
        or on Linux when it is killed)."""
        if self._pool is not None:
            self._stop_pool()
            self._pool, self._pool_workers = None, 0

    def decode_pool(self, workers: int) -> Any:
        """``workers`` decoding processes, started on first use and kept for this predictor's later calls:
        forking them from a process that holds a GPU context costs a good part of a second, as much as
        decoding a thousand images in them."""
        if self._pool is None or self._pool_workers != workers or getattr(self._pool, "_broken", False):
            self.close()  # a pool that lost a worker (killed, out of memory) cannot decode again
            self._pool, self._pool_workers = decode_process_pool(workers), workers
            self._stop_pool = weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def __repr__(self) -> str:
        where = f"{self.device}, {self.precision}" if self.device is not None else "onnxruntime, CPU"
        return (f"Predictor({str(self.path) if self.path else 'in memory'!r}, {self.info.arch}, {len(self.classes)} "
                f"classes, {self.info.size} px, {where})")

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def network(self) -> Any:
        """The torch module (in eval mode, on :attr:`device`); None for ONNX models."""
        return getattr(self._backend, "model", None)

    @property
    def device(self) -> Any:
        """The torch device the network runs on; None for ONNX models (onnxruntime, on the CPU)."""
        return getattr(self._backend, "device", None)

    @property
    def precision(self) -> str:
        """``bf16`` where the network runs under bf16 autocast, else ``float32`` (ONNX models: their graph's own)."""
        return getattr(self._backend, "precision", "float32")

    @property
    def on_gpu(self) -> bool:
        """Whether the network runs on a CUDA GPU (ONNX always runs on the CPU)."""
        return self.device is not None and self.device.type == "cuda"

    @property
    def default_bs(self) -> int:
        """Batch size for inference: small on a CPU, where a batch's activations must stay in cache (224 px,
        2 cores: int8 ONNX 790 to 860 images/s at 8 against 590 to 680 at 32; PyTorch's body about 5 ms an
        image at 4 to 8 against 15 at 32); large on a GPU."""
        return GPU_BATCH if self.on_gpu else CPU_BATCH

    def probabilities(self, batch: Any) -> np.ndarray:
        """Softmax probabilities for a uint8 NHWC batch of images already at ``info.size`` (a numpy array, or
        for a torch model also a tensor, on its device or not)."""
        self._check_batch(batch)
        logits = self._backend(batch)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def _check_batch(self, batch: Any) -> None:
        """One shape and dtype for every backend: ONNX refused a wrong batch in its own words, torch could run
        one at the wrong size and answer."""
        want = (self.info.size, self.info.size, self.info.in_chans)
        shape, dtype = tuple(batch.shape), str(batch.dtype).removeprefix("torch.")
        if len(shape) != 4 or shape[1:] != want or dtype != "uint8":
            raise BirdclsError(f"probabilities() takes a uint8 batch of N x {want[0]} x {want[1]} x {want[2]} images "
                               f"(N, height, width, channels), got {dtype} {shape}: pass files or PIL images to "
                               "predict(), which resizes them")


def uint8_input_model(model: Any, info: ModelInfo, full_size_constants: bool = False) -> Any:
    """``model`` behind its preprocessing: uint8 NHWC in, scaled and normalised float NCHW to the network.

    The torch backend runs it (a uint8 batch crosses to a GPU at a quarter of the bytes, and NHWC
    permuted to NCHW is channels_last) and the ONNX export traces it (the numpy pass it replaces took
    ~1.8 ms of ~9 ms per 224 px image). A model trained with ``tta: true`` (``info.extra["tta"] ==
    "flip"``) averages its logits for each image and its mirror image here, so that evaluation, the
    torch backend and every export predict alike; with ``tta_shift`` too (``"flip_shift"``), half the
    average goes to the same pair moved one pixel up-left and one pixel down-right (six passes).

    ``full_size_constants`` (the ONNX export) stores the mean and scale as whole ``C x size x size``
    planes: onnxruntime runs an int8 graph channels-last, where a per-channel constant broadcasts over an
    innermost axis of 3 values (11 of 103 ms per batch of 32 on 2 cores); whole planes broadcast over the
    batch only (2.5 ms), for 1.2 MB more file."""
    import torch

    tta = info.extra.get("tta")

    class UInt8Input(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            shape = (1, len(info.mean), 1, 1)
            mean, inv_std = torch.tensor(info.mean).view(shape) * 255, 1 / (torch.tensor(info.std).view(shape) * 255)
            if full_size_constants:
                mean, inv_std = (t.expand(1, -1, info.size, info.size).contiguous() for t in (mean, inv_std))
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", inv_std)

        def mirrored(self, x):
            return (self.model(x) + self.model(x.flip(3))) / 2

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
            if tta == "flip":
                return self.mirrored(x)
            if tta == "flip_shift":  # airbench's level 2: also moved one pixel up-left and down-right
                padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
                h, w = x.shape[2], x.shape[3]
                shifted = (self.mirrored(padded[:, :, :h, :w]) + self.mirrored(padded[:, :, 2:, 2:])) / 2
                return (self.mirrored(x) + shifted) / 2
            return self.model(x)

    return UInt8Input().eval()


class _TorchBackend:
    """The network in channels_last (about twice the convolution speed on a CPU) behind
    :func:`uint8_input_model`, under bf16 autocast where ``precision`` resolves to it; ``model`` stays the
    bare network, which is what exports take."""

    def __init__(self, model: Any, info: ModelInfo, device: str = "cpu", precision: str = "auto"):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.net = uint8_input_model(self.model, info).to(self.device)

    def __call__(self, batch: Any) -> np.ndarray:
        from contextlib import nullcontext

        from .data.tensors import pad_batch

        torch = self.torch
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else nullcontext())
        with torch.inference_mode(), autocast:
            x = (batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)).to(self.device, non_blocking=True)
            out = self.net(pad_batch(x, GPU_BATCH))
        return out[:len(batch)].float().cpu().numpy()


class _OnnxBackend:
    """Current exports take the uint8 NHWC batch and normalise inside the graph; older ones take float NCHW."""

    def __init__(self, session: Any, info: ModelInfo):
        self.session, self.info = session, info
        spec = session.get_inputs()[0]
        self.input_name, self.takes_uint8 = spec.name, spec.type == "tensor(uint8)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = batch if self.takes_uint8 else normalise(batch, self.info.mean, self.info.std)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]


def predictor_from_learner(learn: Any, device: str = "cpu", precision: str = "auto") -> Predictor:
    """Wrap a trained fastai Learner (its ``birdcls_info`` attribute says how to preprocess)."""
    info = ModelInfo.from_dict(learn.birdcls_info)
    return Predictor(info, _TorchBackend(learn.model, info, device, precision))


def _corrupt(path: Path, exc: BaseException) -> BirdclsError:
    return BirdclsError(f"model file {path} is corrupt or not a birdcls export ({type(exc).__name__}): "
                        "re-export it with `birdcls export RUN`")


def _load_pickle(path: Path, trust: bool, device: str, precision: str) -> Predictor:
    if not trust and not is_trusted_pickle(path):
        raise BirdclsError(f"{path} is a pickle this user did not create, and loading a pickle runs its code: "
                           "pass --trust if you trust its source, or use a .safetensors export")
    import warnings

    from fastai.learner import load_learner

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn = load_learner(path, cpu=(device == "cpu"))
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise _corrupt(path, exc) from None
    if not hasattr(learn, "birdcls_info"):
        raise BirdclsError(f"{path} is a fastai learner that birdcls did not export: train it with `birdcls train`")
    return predictor_from_learner(learn, device, precision)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


#: What a model's answers depend on besides its weights: a sidecar that differs in one of these is another model's.
_ANSWER_FIELDS = ("arch", "classes", "size", "mean", "std", "in_chans", "tta", "tta_shift")


def _embedded_info(path: Path) -> dict[str, Any] | None:
    """The metadata export writes into the .safetensors file itself (None when it holds none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["birdcls"]) if "birdcls" in meta else None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise _corrupt(path, exc) from None


def _safetensors_info(path: Path) -> ModelInfo:
    """The model's arch, classes and input from its sidecar JSON, checked against the copy inside the file:
    a sidecar copied from another export of the same network would label every answer with its classes.
    Without a sidecar the copy inside does."""
    embedded, side = _embedded_info(path), sidecar_path(path)
    if not side.is_file():
        if embedded is None:
            raise BirdclsError(f"{path} has no sidecar {side.name} (arch, classes, size): export it again with "
                               "`birdcls export RUN --format safetensors`")
        return ModelInfo.from_dict(embedded)
    try:
        sidecar = json.loads(side.read_text())
        info = ModelInfo.from_dict(sidecar)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise _corrupt(side, exc) from None
    differ = [k for k in _ANSWER_FIELDS if embedded is not None and sidecar.get(k) != embedded.get(k)]
    if differ:
        raise BirdclsError(f"{side} does not describe {path.name} (its {', '.join(differ)} differ from the ones saved "
                           f"inside the model): it belongs to another export; remove it (the model's own are used) "
                           "or export again")
    return info


def _load_safetensors(path: Path, device: str, precision: str) -> Predictor:
    info = _safetensors_info(path)
    from safetensors.torch import load_file

    from .models.backbones import build_model

    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise _corrupt(path, exc) from None
    model, _ = build_model(info.arch, len(info.classes), pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise _corrupt(path, exc) from None
    return Predictor(info, _TorchBackend(model, info, device, precision), path)


def _load_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # idle compute threads sleep instead of spinning: the decoding threads need those cores between batches
        # (2,000 photos on 2 cores: about 5% more images/s, in alternating runs)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        info = ModelInfo.from_dict(json.loads(meta["birdcls"]))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise _corrupt(path, exc) from None
    return Predictor(info, _OnnxBackend(session, info), path)


def run_onnx_is_current(onnx: Path) -> bool:
    """Whether a run folder's ``model.onnx`` / ``model.int8.onnx`` is the network of its ``model.pkl`` (not one
    left from before a resume or a failed export): written after the pickle, or, where a copy of the run did not
    keep the files' times (``scp -r``, ``rsync`` without ``-t``, an archive unpacked with ``--touch``), recording
    the pickle's SHA-256, which training writes into it."""
    pkl = onnx.parent / "model.pkl"
    try:
        if onnx.stat().st_mtime >= pkl.stat().st_mtime:
            return True
        import onnx as onnx_lib

        from ._trust import file_sha256

        props = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
        return json.loads(props.get("birdcls", "{}")).get(PKL_DIGEST) == file_sha256(pkl)
    except Exception:  # noqa: BLE001 - missing, unreadable or not a birdcls export: not this run's
        return False


def load_model(path: str | os.PathLike, trust: bool = False, device: str = "auto", backend: str = "auto",
               int8: bool = True, precision: str = "auto") -> Predictor:
    """Load a run directory or an export for prediction.

    Args:
        path: a run directory, or a ``.pkl``, ``.safetensors`` or ``.onnx`` file.
        trust: allow unpickling a ``.pkl`` that this user did not create.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (ONNX always runs on the CPU).
        backend: for a run directory: ``auto`` runs its ``model.int8.onnx`` (else ``model.onnx``) in
            onnxruntime when the device is the CPU (about 4x faster there than PyTorch, its int8 copy about
            8x) and its ``model.pkl`` otherwise; ``torch`` always the pkl.
        int8: for a run directory: ``False`` passes over ``model.int8.onnx`` (``evaluate`` does, so its
            figures match the ones in metrics.json, computed without int8).
        precision: for a PyTorch model: ``auto`` (bf16 autocast on a CUDA GPU that has bf16, float32
            elsewhere), ``float32`` (and for a run directory, not its int8 copy) or ``bf16``. An ONNX file
            computes as its graph says.
    """
    check_precision(precision)
    if backend not in BACKENDS:
        raise BirdclsError(f"backend must be auto (ONNX on a CPU where the run has it) or torch, got {backend!r}")
    path = Path(path)
    if path.is_dir():
        if not (path / "model.pkl").is_file():
            raise BirdclsError(f"{path} is a folder without model.pkl: pass a run directory from `birdcls train` "
                               "or an exported model file")
        if backend == "auto" and precision != "bf16" and resolve_device(device) == "cpu":
            full = not int8 or precision == "float32"  # float32 asked for: not the int8 copy
            for onnx in (path / "model.int8.onnx", path / "model.onnx")[1 if full else 0:]:
                if run_onnx_is_current(onnx):
                    return _load_onnx(onnx)
        path = path / "model.pkl"
    if not path.is_file():
        raise BirdclsError(f"model {path} does not exist: pass a run directory or a .pkl/.safetensors/.onnx file")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise BirdclsError(f"{path} is not a model file: pass a run directory or a {'/'.join(MODEL_SUFFIXES)} file")
    if suffix == ".onnx":
        check_device_name(device)
        if precision == "bf16":
            raise BirdclsError(f"{path} is an ONNX model, which computes as its graph says: precision bf16 "
                               "needs a .pkl, .safetensors or run folder")
        return _load_onnx(path)
    device = resolve_device(device)
    predictor = (_load_pickle(path, trust, device, precision) if suffix == ".pkl"
                 else _load_safetensors(path, device, precision))
    predictor.path = path
    return predictor


def gather_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into image paths, in a stable order. Inside a folder, hidden
    entries are skipped as split, clean and evaluate skip them: clean's ``.quarantine`` (and its contact
    sheets), macOS's ``._photo.jpg`` companions."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in q.relative_to(p).parts))
        elif p.is_file():
            found.append(p)
        else:
            raise BirdclsError(f"{p} does not exist: pass image files or folders of images")
    if not found:
        raise BirdclsError("no images found in the given paths: pass .jpg/.png files or folders holding them")
    return found


@dataclass
class PredictionResult:
    """One row per readable image, and ``skipped[path] = reason`` for the rest."""

    rows: list[dict[str, Any]]
    skipped: dict[str, str]
    probs: np.ndarray  # (n_rows, n_classes), in the order of ``rows``
    classes: list[str] = field(default_factory=list)  # the columns of ``probs``

    def __repr__(self) -> str:
        first = f", first: {self.rows[0]['path']} -> {self.rows[0]['label']} {self.rows[0]['prob']:.3f}" if self.rows else ""
        return f"PredictionResult({len(self.rows)} rows, {len(self.skipped)} skipped{first})"

    def to_csv(self, dest: str | os.PathLike) -> Path:
        """Every image as a row, written atomically: ``path,label,prob``, then ``label_2,prob_2`` ... up to
        ``top_k``, then ``skipped``: empty for a predicted image, the reason for an unreadable one (those rows
        come last, without labels), so a spreadsheet or ``pandas.read_csv`` sees each answer in its own cell and
        no image goes missing. ``dest`` must be new or a CSV that predict wrote (:func:`check_csv_target`): a
        photo or a model given by mistake is never replaced."""
        import csv
        import io

        from ._io import write_text_atomic

        check_csv_target(dest)
        k = max((len(row["top_k"]) for row in self.rows), default=1)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(csv_header(k))
        for row in self.rows:
            ranked = [cell for label_prob in row["top_k"] for cell in label_prob]
            writer.writerow([row["path"], *ranked, *[""] * (2 * k - len(ranked)), ""])
        for path, reason in self.skipped.items():
            writer.writerow([path, *[""] * (2 * k), reason])
        return write_text_atomic(dest, buf.getvalue())


def csv_header(k: int) -> list[str]:
    """The columns of predict's CSV for ``k`` labels an image."""
    ranked = [name for i in range(2, k + 1) for name in (f"label_{i}", f"prob_{i}")]
    return ["path", "label", "prob", *ranked, "skipped"]


#: The headers of CSVs predict wrote before the flat columns (replaced like the current ones).
_EARLIER_CSV_HEADERS = ("path,label,prob,top_k",)


def _is_predict_csv_header(line: str) -> bool:
    fields = line.split(",")
    return line in _EARLIER_CSV_HEADERS or (len(fields) >= 4 and fields == csv_header((len(fields) - 2) // 2))


def check_csv_target(dest: str | os.PathLike) -> Path:
    """Before predicting: ``dest`` can be written, and is new or a CSV that predict wrote. `--csv photo.jpg
    more/` (the option taking the first photo) or `--csv model.onnx` must not destroy the file."""
    from ._io import check_writable

    dest = Path(dest)
    if dest.is_file():
        with dest.open("rb") as f:
            first = f.readline(1 << 20).decode("utf-8", "replace").strip()
        if not _is_predict_csv_header(first):
            raise BirdclsError(f"{dest} exists and is not a CSV that predict wrote: refusing to replace it; "
                               "give a new file name, e.g. predictions.csv")
    return check_writable(dest)


def _batch_of(chunk: list[Path], results: list[np.ndarray | str], size: int,
              channels: int) -> tuple[list[Path], np.ndarray, dict]:
    arrays, ok, bad = [], [], {}
    for p, res in zip(chunk, results):
        if isinstance(res, str):
            bad[str(p)] = res
        else:
            arrays.append(res)
            ok.append(p)
    return ok, (np.stack(arrays) if arrays else np.empty((0, size, size, channels), np.uint8)), bad


def _decoded_batches(paths: list[Path], size: int, bs: int, workers: int,
                     channels: int = 3) -> Iterator[tuple[list[Path], np.ndarray, dict]]:
    """Decode images in a thread pool, the next batch while the model runs on this one."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk, results in map_ahead(pool, partial(load_image_or_reason, size=size, channels=channels), paths, bs):
            yield _batch_of(chunk, results, size, channels)


def _decode_task(chunk: list[Path], size: int, channels: int) -> tuple[list[Path], Any, dict]:
    """One task of a decoding worker process: its images as one uint8 tensor, which crosses to the main
    process in shared memory (``torch.multiprocessing``'s pickling), not through the pipe."""
    import torch

    ok, batch, bad = _batch_of(chunk, [load_image_or_reason(p, size, channels) for p in chunk], size, channels)
    return ok, torch.from_numpy(batch), bad


def _start_decoding_worker(parent: int, forked_from_main_thread: bool) -> None:
    """A decoding worker's start. One torch thread, as in torch's DataLoader workers: torch's copy of a batch
    into shared memory would otherwise run on OpenMP threads, which hang in a process forked from one that
    has used them. Ctrl-C is the main process's to handle (each idle worker would print a traceback). On
    Linux the worker dies with its parent, even one killed outright (by the out-of-memory killer, say)."""
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the death signal comes when the forking *thread* ends: only the main thread lives as long as the process
    if sys.platform.startswith("linux") and forked_from_main_thread:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call
            os._exit(1)


def decode_process_pool(workers: int) -> Any:
    """``workers`` decoding processes, all started now. Forked on Linux (a spawned process would import torch
    before its first image), as torch's DataLoader does there: they never touch the GPU. Spawned elsewhere
    (macOS: forking after its GPU frameworks start is unsafe)."""
    import multiprocessing
    import threading
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    import torch.multiprocessing  # noqa: F401 - registers the shared-memory pickling of tensors

    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_decoding_worker,
                               initargs=(os.getpid(), threading.current_thread() is threading.main_thread()))
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        for future in [pool.submit(int) for _ in range(workers)]:  # forks every worker
            future.result()
    return pool


def _decoded_batches_in_processes(paths: list[Path], size: int, bs: int, workers: int, channels: int = 3,
                                  pool: Any = None) -> Iterator[tuple[list[Path], np.ndarray, dict]]:
    """:func:`_decoded_batches` in worker processes (``pool``, else ``workers`` new ones for this call):
    decoding in threads is bound by the interpreter lock to a few cores' worth, under what a GPU consumes.
    Workers decode tasks of 32 images (so that all of them have work even for a few batches), four tasks
    ahead per worker, joined here into batches of ``bs``, in order."""
    from concurrent.futures.process import BrokenProcessPool

    task = bs if bs <= 32 else max(d for d in range(1, 33) if bs % d == 0)  # whole tasks make whole batches
    tasks = [paths[start:start + task] for start in range(0, len(paths), task)]
    own = pool is None
    pool = decode_process_pool(workers) if own else pool
    parts: list[tuple[list[Path], Any, dict]] = []  # (paths, uint8 tensor, unreadable) per task
    try:
        decoded = imap_ahead(pool, partial(_decode_task, size=size, channels=channels), tasks,
                             4 * workers)
        for i, part in enumerate(decoded, 1):
            parts.append(part)
            if i * task >= len(paths) or len(parts) * task >= bs:
                ok = [p for part_ok, _, _ in parts for p in part_ok]
                batch = np.concatenate([arr.numpy() for _, arr, _ in parts])
                bad = {k: v for _, _, part_bad in parts for k, v in part_bad.items()}
                parts = []
                yield ok, batch, bad
    except BrokenProcessPool:
        raise BirdclsError("a decoding worker process died (out of memory?): predict with a smaller --bs") from None
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)


def _use_processes(model: Predictor, n_images: int, bs: int) -> bool:
    """Worker processes pay off where decoding is what waits: a GPU, several cores, several batches."""
    return model.on_gpu and (os.cpu_count() or 1) >= 4 and n_images > bs


def _default_workers(model: Predictor, processes: bool, cpus: int) -> int:
    """Decoding workers: a process a core (up to 16) or twice the cores in threads (up to 8) feed a GPU; on a
    CPU the network is what waits, and decoding in half the cores' threads leaves it the rest."""
    if processes:
        return min(16, cpus)
    return min(8, cpus * 2) if model.on_gpu else max(1, cpus // 2)


def _is_in_memory(item: Any) -> bool:
    from PIL import Image

    return isinstance(item, (Image.Image, np.ndarray))


def _check_in_memory(images: list[Any]) -> None:
    """Before any prediction: every array is uint8, height x width (x 1, 3 or 4 channels)."""
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray) and not (
                item.dtype == np.uint8 and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4)))):
            raise BirdclsError(f"image {i} is a {item.dtype} array of shape {item.shape}: pass uint8 height x width "
                               "(x 3 for colour), e.g. np.asarray(PIL.Image.open(path).convert('RGB'))")


def _in_memory_image(item: Any, size: int, channels: int) -> np.ndarray:
    """A PIL image or a checked uint8 array as ``size x size x channels`` uint8, resized as a file is."""
    from PIL import Image

    from .data.decode import image_array, to_8bit

    if isinstance(item, np.ndarray):
        item = Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    return image_array(to_8bit(item).convert("RGB" if channels == 3 else "L"), size, channels)


def _in_memory_batches(images: list[Any], names: list[str], size: int, bs: int,
                       channels: int) -> Iterator[tuple[list[str], Any, dict]]:
    for start in range(0, len(images), bs):
        chunk = images[start:start + bs]
        yield names[start:start + bs], np.stack([_in_memory_image(x, size, channels) for x in chunk]), {}


def check_predict_options(top_k: Any, bs: Any) -> int:
    """``top_k`` as a whole number of 1 or more, and ``bs`` one or None, else a one-line BirdclsError; the command
    checks them before loading the model (seconds for a pickle), :func:`predict` again for Python callers."""
    top_k = check_int(top_k, "top_k (--top-k)", 1)
    check_int(bs, "bs (--bs)", 1, optional=True)
    return top_k


def predict(model: Predictor, inputs: Iterable[str | os.PathLike | Any], top_k: int = 3, bs: int | None = None,
            workers: int | None = None, processes: bool | None = None,
            decode_on_device: bool = False, progress: str = "none") -> PredictionResult:
    """Classify every image in ``inputs`` (files or folders; or images in memory, PIL images or uint8 arrays,
    whose rows are named ``<image N>`` in the order given), ``bs`` at a time (default: the model's
    ``default_bs`` for its device). Images are decoded in ``workers`` threads, or worker processes with
    ``processes`` (default: on a GPU with 4 or more cores, where threads cannot decode as fast as it predicts).
    ``decode_on_device`` (torch models only) decodes JPEGs where the model runs instead, nvJPEG on a GPU
    (:mod:`birdcls.data.device_decode`); off by default until measured on a GPU. ``progress``: ``auto``,
    ``bars``, ``lines`` or ``none`` (shown on stderr, or as a notebook bar). Worker processes are started by
    the first call that needs them and kept for the model's later calls (``model.close()`` stops them).

    Unreadable files do not stop the run: they are listed in ``skipped`` with their reason.
    """
    if not isinstance(model, Predictor):
        raise BirdclsError(f"predict() takes a loaded model, got {type(model).__name__} {model!r:.80}: pass "
                           "load_model(path)")
    if isinstance(inputs, (str, os.PathLike)) or (_is_in_memory(inputs) and getattr(inputs, "ndim", 3) <= 3):
        inputs = [inputs]  # one path, not its characters; one image, not its rows
    top_k = check_predict_options(top_k, bs)
    check_int(workers, "workers", 1, optional=True)
    bs = model.default_bs if bs is None else bs
    mode = progress_mode(progress, sys.stderr)  # stdout carries the answers
    inputs = list(inputs)
    in_memory = [x for x in inputs if _is_in_memory(x)]
    if in_memory and len(in_memory) < len(inputs):
        raise BirdclsError("predict() takes files and folders, or images in memory (PIL images, uint8 arrays), not "
                           "both in one call: make two calls")
    if in_memory and decode_on_device:
        raise BirdclsError("decode_on_device decodes JPEG files: images in memory are decoded already")
    _check_in_memory(in_memory)
    paths = [f"<image {i}>" for i in range(len(inputs))] if in_memory else gather_images(inputs)
    k = min(top_k, len(model.classes))
    if processes is None:
        processes = _use_processes(model, len(paths), bs)
    cpus = os.cpu_count() or 1
    workers = workers or _default_workers(model, processes, cpus)
    if in_memory:
        batches = _in_memory_batches(in_memory, paths, model.info.size, bs, model.info.in_chans)
    elif decode_on_device:
        if model.device is None:
            raise BirdclsError("decoding on the device needs a torch model (.pkl, .safetensors or a run folder "
                               "with backend 'torch'); an ONNX model decodes on the host")
        from .data.device_decode import device_decoded_batches

        batches = device_decoded_batches(paths, model.info.size, bs, model.device, model.info.in_chans, workers)
    else:
        batches = (_decoded_batches_in_processes(paths, model.info.size, bs, workers, model.info.in_chans,
                                                 model.decode_pool(workers)) if processes
                   else _decoded_batches(paths, model.info.size, bs, workers, model.info.in_chans))
    rows, skipped, all_probs = [], {}, []
    if len(paths) <= bs:
        mode = "none"  # a single batch: nothing to watch
    for ok, batch, bad in with_progress(batches, len(paths), mode, "predict", "images",
                                        count=lambda item: len(item[0]) + len(item[2])):
        skipped.update(bad)
        if not ok:
            continue
        probs = model.probabilities(batch)
        all_probs.append(probs)
        for p, pr in zip(ok, probs):
            order = np.argsort(-pr)[:k]
            rows.append({"path": str(p), "label": model.classes[order[0]], "prob": round(float(pr[order[0]]), 6),
                         "top_k": [[model.classes[i], round(float(pr[i]), 6)] for i in order]})
    if not rows:  # nothing to answer with: an error, not an empty success
        path, reason = next(iter(skipped.items()))
        raise BirdclsError(f"none of the {len(paths)} image file(s) could be read ({path}: {reason}): "
                           "check that they are images (.jpg, .png, ...)")
    return PredictionResult(rows, skipped, np.concatenate(all_probs), list(model.classes))
