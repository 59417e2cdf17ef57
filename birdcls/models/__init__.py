"""Backbones: timm and torchvision architectures, with ImageNet weights that work offline."""

from .backbones import (
    OFFLINE_WEIGHTS,
    ModelSpec,
    build_model,
    list_architectures,
    load_offline_state_dict,
)

__all__ = ["OFFLINE_WEIGHTS", "ModelSpec", "build_model", "list_architectures", "load_offline_state_dict"]
