"""Export a trained run: fastai ``.pkl``, ``.safetensors`` + JSON sidecar, or ``.onnx``.

- ``pkl``: fastai's ``learn.export``; ``load_learner`` opens it in a fresh process. Loading it
  unpickles code, so only share it with people who trust you.
- ``safetensors``: the weights only, plus ``<name>.json`` (arch, classes, input size, normalisation,
  versions). Loading it never unpickles anything: the safe format for sharing.
- ``onnx``: the network with a dynamic batch axis and the same JSON in its metadata; runs in
  onnxruntime without torch.

Every file is written to a temp file and renamed, so a crash never leaves half a model.

Example:
    >>> export("models/birds", "onnx", "models/birds.onnx")
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from ._io import write_json_atomic, write_with_atomic
from ._trust import register_pickle
from .errors import BirdclsError
from .predict import ModelInfo, load_model, sidecar_path

__all__ = ["EXPORT_FORMATS", "export"]

EXPORT_FORMATS = ("pkl", "safetensors", "onnx")


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


def _export_onnx(model, info: ModelInfo, dest: Path) -> None:
    import warnings

    import onnx
    import torch

    model = model.cpu().eval()
    dummy = torch.zeros(2, info.in_chans, info.size, info.size)
    meta = _info_with_versions(info, "onnx")

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "birdcls", json.dumps(meta)
        onnx.save(proto, str(tmp))

    write_with_atomic(dest, write)


def export(run: str | os.PathLike, fmt: str, dest: str | os.PathLike, trust: bool = False,
           overwrite: bool = True) -> Path:
    """Write the model of ``run`` (a run directory or a ``.pkl``) to ``dest`` in format ``fmt``."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise BirdclsError(f"unknown export format '{fmt}': use one of {', '.join(EXPORT_FORMATS)}")
    dest = Path(dest)
    if dest.is_dir():
        raise BirdclsError(f"-o {dest} is a folder: give a file name, e.g. {dest / ('model.' + fmt)}")
    if dest.suffix.lower() != f".{fmt}":
        raise BirdclsError(f"-o {dest} should end in .{fmt} for --format {fmt}: e.g. {dest.with_suffix('.' + fmt)}")
    if dest.exists() and not overwrite:
        raise BirdclsError(f"{dest} already exists: pass --overwrite or choose another -o")
    source = Path(run)
    predictor = load_model(source, trust=trust, device="cpu", backend="torch")
    if predictor.path is None or predictor.path.suffix != ".pkl":
        raise BirdclsError(f"export reads a run directory or its model.pkl, not {source}: pass the run folder")
    if fmt == "pkl":
        write_with_atomic(dest, lambda tmp: shutil.copyfile(predictor.path, tmp))
        register_pickle(dest)
    else:
        model = predictor._backend.model
        (_export_safetensors if fmt == "safetensors" else _export_onnx)(model, predictor.info, dest)
    return dest
