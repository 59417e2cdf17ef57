"""Export a trained run: fastai ``.pkl``, ``.safetensors`` + JSON sidecar, or ``.onnx``.

- ``pkl``: fastai's ``learn.export``; ``load_learner`` opens it in a fresh process. Loading it
  unpickles code, so only share it with people who trust you.
- ``safetensors``: the weights only, plus ``<name>.json`` (arch, classes, input size, normalisation,
  versions). Loading it never unpickles anything: the safe format for sharing.
- ``onnx``: the network with a dynamic batch axis and the same JSON in its metadata; takes uint8
  NHWC images (normalisation is inside the graph) and runs in onnxruntime without torch.
- ``onnx-int8``: the same, quantized to int8 (calibrated on the training images, checked on the
  validation images against float32); faster on a CPU.

Every file is written to a temp file and renamed, so a crash never leaves half a model.

Without a format, the output file's name says which: ``.pkl``, ``.safetensors``, ``.onnx``, or
``.int8.onnx`` for ``onnx-int8``.

Example:
    >>> export("models/birds", "onnx", "models/birds.onnx")  # doctest: +SKIP
    >>> export("models/birds", dest="models/birds.int8.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._io import write_json_atomic, write_with_atomic
from ._trust import is_trusted_pickle, register_pickle
from .data.folders import SplitLayout, find_splits, list_labelled_images, unknown_classes
from .errors import BirdclsError, describe
from .predict import load_model, run_onnx_is_current, sidecar_path, uint8_input_model
from .quantize import Int8Check, int8_if_it_keeps_accuracy
from .runtime import ModelInfo

__all__ = ["EXPORT_FORMATS", "export", "export_onnx", "format_for"]

EXPORT_FORMATS = ("pkl", "safetensors", "onnx", "onnx-int8")
#: File name endings and the format each asks for; ``.int8.onnx`` before ``.onnx``, which it also ends in.
SUFFIX_FORMATS = ((".int8.onnx", "onnx-int8"), (".onnx", "onnx"), (".safetensors", "safetensors"), (".pkl", "pkl"))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("birdcls", "torch", "torchvision", "timm", "fastai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _info_with_versions(info: ModelInfo, fmt: str) -> dict[str, Any]:
    return {**info.to_dict(), "format": fmt, "versions": _versions()}


def _export_safetensors(model, info: ModelInfo, dest: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = _info_with_versions(info, "safetensors")
    write_with_atomic(dest, lambda tmp: save_file(state, str(tmp), metadata={"birdcls": json.dumps(meta)}))
    write_json_atomic(sidecar_path(dest), meta)


def with_static_same_padding(model, size: int, in_chans: int = 3):
    """A copy of ``model`` whose TensorFlow-style "same" convolutions (timm's ``Conv2dSame``, in every
    ``tf_*`` backbone) pad by fixed amounts for ``size`` px input instead of working them out from the
    input's shape at run time.

    Traced as is, each one exports a chain of shape arithmetic and a Pad that onnxruntime cannot fold
    into its Conv: in float32 that Pad breaks the blocked memory layout around it, and in int8 it sits
    between a DequantizeLinear and a QuantizeLinear. Fixed pads fold away (see :func:`_foldable_pads`).
    An ONNX export takes one input size anyway."""
    import copy

    import torch
    import torch.nn.functional as F
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same_arg

    class StaticSameConv2d(torch.nn.Conv2d):
        pads: tuple[int, int, int, int] = (0, 0, 0, 0)

        def forward(self, x):
            return F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    model = copy.deepcopy(model)
    sizes: dict[torch.nn.Module, list[int]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, list(args[0].shape[-2:])))
             for m in model.modules() if type(m) is Conv2dSame]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    for conv, hw in sizes.items():
        conv.__class__ = StaticSameConv2d  # same parameters and buffers, fixed pads
        conv.pads = tuple(int(v) for v in pad_same_arg(hw, list(conv.weight.shape[-2:]), conv.stride, conv.dilation))
    return model


def _foldable_pads(proto) -> None:
    """Drop the empty ``constant_value`` input that torch writes on every Pad: onnxruntime folds a zero
    Pad into the Conv after it (PadFusion) only when every input it has is a constant, and an empty
    name is not one. Zero is the default value, so the graph computes the same."""
    for node in proto.graph.node:
        if node.op_type == "Pad" and len(node.input) == 3 and node.input[2] == "":
            del node.input[2]


def export_onnx(model, info: ModelInfo, dest: Path) -> None:
    """``model`` as an ONNX file that takes uint8 NHWC images (the normalisation in the graph) and keeps
    ``info`` in its metadata; training writes RUN/model.onnx with it. ``model`` is moved to the CPU."""
    import warnings

    import onnx
    import torch

    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    model = uint8_input_model(with_static_same_padding(model, info.size, info.in_chans), info, full_size_constants=True)
    dummy = torch.zeros(2, info.size, info.size, info.in_chans, dtype=torch.uint8)
    meta = _info_with_versions(info, "onnx")

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        proto = onnx.load(str(tmp))
        _foldable_pads(proto)
        entry = proto.metadata_props.add()
        entry.key, entry.value = "birdcls", json.dumps(meta)
        onnx.save(proto, str(tmp))

    write_with_atomic(dest, write)


def export_int8(model, info: ModelInfo, dest: Path, data: SplitLayout) -> Int8Check:
    """Quantize to int8 with ``data``'s training images, check it on its validation images, and write it
    only when it keeps accuracy (see :mod:`birdcls.quantize`)."""
    train, _ = list_labelled_images(data.train)
    val, _ = list_labelled_images(data.val)
    unknown = unknown_classes(val, info.classes)
    if unknown:
        known = ", ".join(info.classes[:5]) + ("..." if len(info.classes) > 5 else "")
        raise BirdclsError(f"{data.val} has classes the model does not know ({', '.join(unknown[:5])}): pass --data "
                           f"a dataset of the model's classes ({known})")
    pairs = [(p, c) for c, files in val.items() for p in files]
    with tempfile.TemporaryDirectory(prefix="birdcls-export-") as work:
        fp32 = Path(work) / "fp32.onnx"
        export_onnx(model, info, fp32)
        try:
            return int8_if_it_keeps_accuracy(fp32, dest, [p for files in train.values() for p in files],
                                             [p for p, _ in pairs], [c for _, c in pairs])
        except BirdclsError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many types
            raise BirdclsError(f"int8 quantization failed ({describe(exc)}): export float32 instead, with "
                               f"--format onnx and an -o name ending in .onnx (not .int8.onnx)") from None


def _calibration_data(run: Path, data: str | os.PathLike | None) -> SplitLayout:
    """The dataset whose train/ calibrates and val/ checks an int8 export: ``data``, or the run's own."""
    if data is None:
        metrics = run / "metrics.json" if run.is_dir() else run.with_name("metrics.json")
        try:
            data = json.loads(metrics.read_text())["data_root"]
        except (OSError, ValueError, KeyError):
            raise BirdclsError("--format onnx-int8 calibrates on the training images and checks on the validation "
                               f"images, and {run} does not record its dataset: pass --data DATASET") from None
        if not Path(data).is_dir():
            raise BirdclsError(f"--format onnx-int8 calibrates on the dataset {run} trained on, and {data} is not there "
                               "any more: pass --data DATASET (its train/ calibrates, its val/ checks)")
    return find_splits(data, require_test=False)


def _model_pickle(source: Path) -> Path:
    """The ``model.pkl`` that export reads: ``source`` itself or the one in the run folder ``source``;
    checked before any work, as export reads nothing else (not a .safetensors or .onnx export)."""
    if not source.exists():
        raise BirdclsError(f"{source} does not exist: pass a run folder from `birdcls train` or its model.pkl")
    path = source / "model.pkl" if source.is_dir() else source
    if source.is_dir() and not path.is_file():
        raise BirdclsError(f"{source} is a folder without model.pkl: pass a run folder from `birdcls train`")
    if path.suffix != ".pkl" or not path.is_file():
        raise BirdclsError(f"export reads a run directory or its model.pkl, not {source}: pass the run folder")
    return path


def _run_pickle(source: Path, trust: bool) -> Path:
    """The ``model.pkl`` of a run folder (or the ``.pkl`` given), refused unless trusted as ``load_model``
    would refuse it."""
    path = _model_pickle(source)
    if not trust and not is_trusted_pickle(path):
        raise BirdclsError(f"{path} is a pickle this user did not create, and loading a pickle runs its code: "
                           "pass --trust if you trust its source, or use a .safetensors export")
    return path


def format_for(dest: str | os.PathLike) -> str:
    """The export format ``dest``'s name asks for, so ``-o model.onnx`` needs no ``--format``."""
    name = Path(dest).name.lower()
    for suffix, fmt in SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    raise BirdclsError(f"-o {dest} does not say which format to write: end it in .pkl, .safetensors, .onnx or "
                       f".int8.onnx (onnx-int8), or pass --format {'/'.join(EXPORT_FORMATS)}")


def _checked_format(fmt: str | None, dest: Path) -> str:
    """``fmt`` (authoritative, but refused where ``dest``'s name says otherwise), or the one ``dest`` names."""
    if fmt is None:
        return format_for(dest)
    fmt = fmt.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise BirdclsError(f"unknown export format '{fmt}': use one of {', '.join(EXPORT_FORMATS)}")
    suffix = ".onnx" if fmt == "onnx-int8" else f".{fmt}"
    if dest.suffix.lower() != suffix:
        # onnx-int8's example keeps .int8 in the name, so that following it never replaces a float32 export
        example = dest.with_name(dest.stem + ".int8.onnx") if fmt == "onnx-int8" else dest.with_suffix(suffix)
        raise BirdclsError(f"-o {dest} should end in {suffix} for --format {fmt}: e.g. {example}")
    if fmt == "onnx" and dest.name.lower().endswith(".int8.onnx"):
        raise BirdclsError(f"-o {dest} names an int8 model but --format onnx writes float32: pass --format "
                           f"onnx-int8, or name it {dest.name[:-len('.int8.onnx')]}.onnx")
    return fmt


def _onnx_export_input(path: Path) -> int | None:
    """The element type of a birdcls ONNX export's input (2 = uint8, what exports since the uint8 graph take;
    1 = float, older ones), or None when ``path`` is not a birdcls ONNX export."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if not any(p.key == "birdcls" for p in proto.metadata_props):
        return None
    return proto.graph.input[0].type.tensor_type.elem_type


def _is_birdcls_pickle(path: Path) -> bool:
    """A learner pickle that birdcls wrote: this user's record of it, or (written on another machine) a
    torch zip whose pickle names the learner's ``birdcls_info``, found by reading bytes, never unpickling."""
    import zipfile

    if is_trusted_pickle(path):
        return True
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("data.pkl") and b"birdcls_info" in archive.read(name) for name in archive.namelist())


def _is_birdcls_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` holds a model birdcls wrote in ``fmt`` (its metadata), read without loading the network."""
    try:
        if fmt in ("onnx", "onnx-int8"):
            return _onnx_export_input(path) is not None
        if fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "numpy") as f:
                return "birdcls" in (f.metadata() or {})
        if fmt == "json":  # a .safetensors export's sidecar (a run's metrics.json has arch and classes too)
            return json.loads(path.read_text()).get("format") == "safetensors"
        return _is_birdcls_pickle(path)
    except Exception:  # noqa: BLE001 - not readable as that format: not an export
        return False


def _check_replaceable(dest: Path, fmt: str) -> None:
    """Export replaces an earlier export (or an empty file, a mktemp placeholder), never another file:
    `-o notes.onnx` over a text file, or a .safetensors export's sidecar over the user's own ``name.json``."""
    targets = [(dest, fmt)] + ([(sidecar_path(dest), "json")] if fmt == "safetensors" else [])
    for path, kind in targets:
        if path.is_file() and path.stat().st_size > 0 and not _is_birdcls_export(path, kind):
            what = "sidecar .json" if kind == "json" else f"{kind} export"
            raise BirdclsError(f"{path} exists and is not a birdcls {what}: refusing to replace it; choose another "
                               "-o (or move that file)")


def _current_run_onnx(source: Path) -> Path | None:
    """The run's own model.onnx when it is this model's export as export would write it now: written after
    model.pkl (so not left from before a resume or a failed export) and taking uint8 images (older runs'
    took floats). None otherwise."""
    made = source / "model.onnx"
    try:
        if run_onnx_is_current(made) and _onnx_export_input(made) == 2:
            return made
    except Exception:  # noqa: BLE001 - missing or unreadable: export it afresh
        pass
    return None


def export(run: str | os.PathLike, fmt: str | None = None, dest: str | os.PathLike | None = None, trust: bool = False,
           data: str | os.PathLike | None = None) -> Path:
    """Write the model of ``run`` (a run directory or its ``.pkl``) to ``dest`` in format ``fmt``.

    ``fmt=None`` takes the format from ``dest``'s name (see :data:`SUFFIX_FORMATS`), so a user names the
    file once (``export(run, dest="models/birds.onnx")``); a format given explicitly must agree with that
    name. An earlier export at ``dest`` is replaced
    (atomically: a failed export leaves it whole); any other file there is refused.
    ``onnx-int8`` calibrates on ``data``'s train/ (default: the dataset the run trained on) and is
    written only if, on its val/, it stays within one point of the float32 model's accuracy.
    """
    if dest is None:
        raise BirdclsError("export() needs dest, the file to write: e.g. export(run, dest='models/birds.onnx') "
                           "(its name gives the format)")
    dest = Path(dest)
    if dest.is_dir():
        example = "model" + (".onnx" if fmt == "onnx-int8" else f".{fmt or 'onnx'}")
        raise BirdclsError(f"-o {dest} is a folder: give a file name, e.g. {dest / example}")
    fmt = _checked_format(fmt, dest)
    _check_replaceable(dest, fmt)
    source = Path(run)
    made = _current_run_onnx(source) if fmt == "onnx" and source.is_dir() else None
    if made is not None:  # training exported this very model: a copy, not seconds of loading and tracing it
        write_with_atomic(dest, lambda tmp: shutil.copyfile(made, tmp))
        return dest
    if fmt == "pkl":  # a copy of the run's pickle: nothing to load (loading it imports fastai: seconds)
        write_with_atomic(dest, lambda tmp: shutil.copyfile(_run_pickle(source, trust), tmp))
        register_pickle(dest)
        return dest
    _model_pickle(source)
    layout = _calibration_data(source, data) if fmt == "onnx-int8" else None
    predictor = load_model(source, trust=trust, device="cpu", backend="torch")
    model = predictor.network
    if fmt == "onnx-int8":
        check = export_int8(model, predictor.info, dest, layout)
        if not check.kept:
            why = f": {check.why_not_kept()}" if check.images else ""
            float_name = dest.name[:-len(".int8.onnx")] + ".onnx" if dest.name.lower().endswith(".int8.onnx") else dest.name
            raise BirdclsError(f"{check.summary()}{why}, so nothing was written; export float32 instead: "
                               f"--format onnx -o {dest.with_name(float_name)}")
        print(check.summary(), flush=True)
    else:
        (_export_safetensors if fmt == "safetensors" else export_onnx)(model, predictor.info, dest)
    return dest
