"""int8 ONNX for CPU prediction: calibrate on training images, quantize, check against float32.

onnxruntime's static QDQ quantization (per-channel int8 weights, uint8 activations, min/max ranges
from a sample of training images; Conv, Gemm, MatMul and the activations and residual adds between
them, so the graph stays int8 from stem to head) runs ``tf_efficientnet_lite0`` at 224 px in about
0.4x the time of the float32 graph on a 2-core AVX-512 VNNI CPU. Speed must not buy silent accuracy loss, so
:func:`check_int8` runs both graphs on labelled images and a run keeps its int8 model only when it
loses at most ``MAX_ACCURACY_DROP`` of accuracy and changes at most that share of the answers.

Example:
    >>> quantize_onnx("run/model.onnx", "run/model.int8.onnx", train_images)
    >>> check_int8("run/model.onnx", "run/model.int8.onnx", val_images, val_labels).kept
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_with_atomic
from .errors import BirdclsError

__all__ = ["CALIBRATION_IMAGES", "MAX_ACCURACY_DROP", "Int8Check", "check_int8", "int8_if_it_keeps_accuracy", "quantize_onnx"]

CALIBRATION_IMAGES = 128
CHECK_IMAGES = 1000  # a seeded sample of the validation images bounds the check's time on big datasets
MAX_ACCURACY_DROP = 0.01  # one point of accuracy on the check images, and 1% of their answers changed
# Clip (ReLU6), Relu and Add stay in int8 between convolutions; left out, each Conv -> Clip -> Conv step
# went back to float and forth (a DequantizeLinear and a QuantizeLinear per activation: half the time)
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Clip", "Relu", "Add"]


@dataclass(frozen=True)
class Int8Check:
    """float32 and int8 accuracy on the same labelled images, how often their top-1 agree, and how far
    apart their probabilities are (int8 can move a borderline image's probability a long way while
    keeping accuracy, so both are on record)."""

    images: int
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float
    mean_prob_difference: float = 0.0
    max_prob_difference: float = 0.0

    @property
    def kept(self) -> bool:
        """Within one point of float32's accuracy, and changing at most 1% of the answers: answers that change
        both ways keep the accuracy while the test report (float32) no longer says what predict returns; on a
        small val/ (3 images: 1 of 3 answers changed, accuracy unchanged) that was all the check saw."""
        return (self.images > 0 and self.int8_accuracy >= self.fp32_accuracy - MAX_ACCURACY_DROP
                and self.agreement >= 1 - MAX_ACCURACY_DROP)

    def why_not_kept(self) -> str:
        """Why :attr:`kept` is false, in words ("" when it is true)."""
        if not self.images:
            return "no readable validation images to check it against"
        if self.int8_accuracy < self.fp32_accuracy - MAX_ACCURACY_DROP:
            return (f"it lost more than {MAX_ACCURACY_DROP * 100:g} point(s) of accuracy on val/ "
                    f"({self.int8_accuracy:.4f} against {self.fp32_accuracy:.4f} for float32)")
        if not self.kept:
            changed = round((1 - self.agreement) * self.images)
            return (f"it changed {changed} of {self.images} answers on val/, more than {MAX_ACCURACY_DROP:.0%} "
                    f"(top-1 agreement {self.agreement:.4f})")
        return ""

    def summary(self) -> str:
        if not self.images:
            return "int8 check: no readable validation images to check the int8 model against"
        return (f"int8 check on {self.images} validation images: accuracy {self.int8_accuracy:.4f} "
                f"(float32 {self.fp32_accuracy:.4f}), top-1 agreement {self.agreement:.4f}, probabilities "
                f"{self.mean_prob_difference:.3f} apart on average ({self.max_prob_difference:.3f} at most)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept": self.kept, "max_accuracy_drop": MAX_ACCURACY_DROP}


def _uint8_input_name(model) -> str:
    """The input name of a loaded ONNX export, which must take uint8 images (normalisation in the graph)."""
    if not model._backend.takes_uint8:
        raise BirdclsError("this ONNX file takes float input (an export from an older birdcls): "
                           "export it again with `birdcls export RUN --format onnx` before quantizing")
    return model._backend.input_name


def _batches(paths: Sequence[Path], size: int, channels: int, bs: int = 32):
    """(uint8 batch, indices into ``paths`` it holds); unreadable files are left out, as training does."""
    from .data.decode import load_image_or_reason

    for start in range(0, len(paths), bs):
        arrays, kept = [], []
        for i in range(start, min(start + bs, len(paths))):
            image = load_image_or_reason(paths[i], size, channels)
            if not isinstance(image, str):
                arrays.append(image)
                kept.append(i)
        if arrays:
            yield np.stack(arrays), kept


def quantize_onnx(src: str | os.PathLike, dest: str | os.PathLike, calibration: Sequence[str | os.PathLike],
                  n_images: int = CALIBRATION_IMAGES, seed: int = 0) -> Path:
    """Write an int8 copy of the float32 export ``src`` to ``dest`` (atomically), with activation ranges
    measured on a seeded sample of ``n_images`` of ``calibration``; the birdcls metadata is carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .predict import load_model

    src, dest = Path(src), Path(dest)
    model = load_model(src)
    info, name = model.info, _uint8_input_name(model)
    paths = [Path(p) for p in calibration]
    if not paths:
        raise BirdclsError("int8 quantization needs calibration images: the training split is empty")
    paths = random.Random(seed).sample(paths, min(n_images, len(paths)))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = (batch for batch, _ in _batches(paths, info.size, info.in_chans))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="birdcls-int8-") as work:
            prepared = Path(work) / "prepared.onnx"
            quant_pre_process(str(src), str(prepared))
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=QUANTIZED_OPS,
                            calibrate_method=CalibrationMethod.MinMax)
        proto, meta = onnx.load(str(tmp)), onnx.load(str(src), load_external_data=False).metadata_props
        del proto.metadata_props[:]
        proto.metadata_props.extend(meta)
        onnx.save(proto, str(tmp))

    write_with_atomic(dest, write)
    return dest


def check_int8(fp32: str | os.PathLike, int8: str | os.PathLike, images: Sequence[str | os.PathLike],
               labels: Sequence[str]) -> Int8Check:
    """Accuracy of both graphs on the same labelled ``images`` (their class names in ``labels``; a seeded
    ``CHECK_IMAGES`` of them when there are more)."""
    from .data.folders import class_key
    from .predict import load_model

    models = [load_model(fp32), load_model(int8)]
    info = models[0].info
    if len(images) > CHECK_IMAGES:
        keep = sorted(random.Random(0).sample(range(len(images)), CHECK_IMAGES))
        images, labels = [images[i] for i in keep], [labels[i] for i in keep]
    index = {class_key(c): i for i, c in enumerate(info.classes)}
    preds: list[list[np.ndarray]] = [[], []]
    read: list[int] = []
    for batch, kept in _batches([Path(p) for p in images], info.size, info.in_chans, models[0].default_bs):
        read += kept
        for out, model in zip(preds, models):
            out.append(model.probabilities(batch))
    if not read:
        return Int8Check(0, 0.0, 0.0, 0.0)
    truth = np.array([index.get(class_key(labels[i]), -1) for i in read])
    pa, pb = (np.concatenate(p) for p in preds)
    a, b, gap = pa.argmax(1), pb.argmax(1), np.abs(pa - pb)
    return Int8Check(len(truth), round(float((a == truth).mean()), 6), round(float((b == truth).mean()), 6),
                     round(float((a == b).mean()), 6), round(float(gap.mean()), 6), round(float(gap.max()), 6))


def int8_if_it_keeps_accuracy(fp32: str | os.PathLike, dest: str | os.PathLike,
                              calibration: Sequence[str | os.PathLike], check_images: Sequence[str | os.PathLike],
                              check_labels: Sequence[str], remove_stale: bool = False) -> Int8Check:
    """Quantize ``fp32``, check it, and put it at ``dest`` only if :attr:`Int8Check.kept`. With
    ``remove_stale`` (a run folder's own ``model.int8.onnx``) an older file at ``dest`` is removed when the
    check fails, so what sits there has always passed; a user's file named by ``-o`` is left alone."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="birdcls-int8-") as work:
        int8 = quantize_onnx(fp32, Path(work) / "int8.onnx", calibration)
        check = check_int8(fp32, int8, check_images, check_labels)
        if check.kept:
            write_with_atomic(dest, lambda tmp: shutil.copyfile(int8, tmp))
        elif remove_stale:
            dest.unlink(missing_ok=True)
    return check
