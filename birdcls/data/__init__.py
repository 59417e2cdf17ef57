"""Dataset sources -> fastai DataLoaders."""

from .folders import (
    IMAGE_EXTENSIONS,
    ImageCheck,
    SplitLayout,
    find_splits,
    list_labelled_images,
    verify_images,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageCheck",
    "SplitLayout",
    "find_splits",
    "list_labelled_images",
    "verify_images",
]
