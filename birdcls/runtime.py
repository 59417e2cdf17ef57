"""Where and how a trained model runs: the device, the precision, the batch size, and the
:class:`ModelInfo` every export stores so that preprocessing and labels travel with the weights.

Training, evaluation, export and prediction all read these, so they live apart from any one stage.
Nothing here imports torch at import time: a one-image ONNX prediction must start quickly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from .config import check_device_name
from .errors import BirdclsError

__all__ = ["CPU_BATCH", "GPU_BATCH", "PKL_DIGEST", "PRECISIONS", "ModelInfo", "check_precision", "has_fast_bf16",
           "no_accelerator_visible", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "float32", "bf16")
CPU_BATCH = 8  # images per inference batch on a CPU (see Predictor.default_bs)
GPU_BATCH = 256  # images per inference batch on a GPU; shorter batches are padded to it (pad_batch)


#: The key of ModelInfo's metadata under which training records the SHA-256 of the run's model.pkl in its ONNX files.
PKL_DIGEST = "pkl_sha256"


@dataclass
class ModelInfo:
    """What preprocessing and labelling need; stored in every export."""

    arch: str
    classes: list[str]
    size: int
    mean: list[float]
    std: list[float]
    source: str = "timm"
    in_chans: int = 3  # 1: the model takes greyscale input
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "classes": list(self.classes), "size": self.size, "mean": list(self.mean),
                "std": list(self.std), "source": self.source, "in_chans": self.in_chans, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        known = {"arch", "classes", "size", "mean", "std", "source", "in_chans"}
        return cls(**{k: d[k] for k in known if k in d}, extra={k: v for k, v in d.items() if k not in known})


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BirdclsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve_precision(precision: str, device: Any) -> str:
    """``auto`` -> ``bf16`` on a CUDA GPU that has it (training there runs under bf16 autocast, and the head
    of a pretrained body is fitted on bf16 features), ``float32`` elsewhere; a CPU's bf16 is slow where it
    has no bf16 units, so only an explicit ``bf16`` gets it."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if has_fast_bf16(device) else "float32"


def has_fast_bf16(device: Any) -> bool:
    """Whether ``device`` is a CUDA GPU with bf16 units (compute capability 8: A100, H100, RTX 30xx and
    later); older GPUs only emulate bf16, slower than float32 (torch's ``is_bf16_supported`` counts them)."""
    import torch

    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, mps or cpu; torch is imported only when a GPU could be there (seconds at start).
    ``cuda:N`` picks one of several GPUs."""
    kind, index = check_device_name(device)
    if device == "cpu" or (device == "auto" and no_accelerator_visible()):
        return "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_available = mps is not None and mps.is_available()
    if kind == "mps" and not mps_available:
        raise BirdclsError("device 'mps' was asked for but no Apple GPU (MPS) is available here: use --device cpu "
                           "or auto")

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise BirdclsError(f"device {device!r} was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise BirdclsError(f"device {device!r} was asked for but {torch.cuda.device_count()} CUDA GPU(s) are "
                           f"visible: use --device cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def no_accelerator_visible() -> bool:
    """True when no GPU can be there, decided without importing torch (which costs seconds at a cold start):
    Linux with no NVIDIA, ROCm or WSL GPU device node. Elsewhere torch is asked."""
    return sys.platform.startswith("linux") and not any(
        os.path.exists(node) for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))
