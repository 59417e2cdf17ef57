"""birdcls: from named classes to a trained, evaluated, exported image classifier.

The public API, importable without loading torch or fastai until a function is first used::

    from birdcls import split_dataset, train, evaluate, export, load_model, predict
    split_dataset("data/raw", "data/birds")
    result = train("data/birds", "models/birds", epochs=3)
    export("models/birds", "safetensors", "models/birds.safetensors")
    rows = predict(load_model("models/birds.safetensors"), ["photo.jpg"]).rows
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

# torch's CPU threads (GNU OpenMP in the Linux wheels) spin up to 300,000 times at every barrier before they
# sleep. With another busy process on the machine, the spinning threads keep a late one off the cores, at every
# one of a network's small layers: training steps ran 25x slower (54 s against 2.2 s, tf_efficientnet_lite0 on
# 2 cores beside a matrix-multiplying process), 2x with 1,000 spins, which cost about 10% on an idle machine
# (2.37 s against 2.15 s). Read once, when torch loads: set before it. A user's own choice stays: GOMP_SPINCOUNT,
# or OMP_WAIT_POLICY (which a set GOMP_SPINCOUNT would override).
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

# fastai's import triggers torch's deprecation notice for torch.jit.script: noise for our users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"

# These three share their names with their modules. Importing them eagerly binds the functions to the
# package names for good (a submodule import sets the package attribute only on first import); they
# need numpy and Pillow, not torch.
from .evaluate import evaluate as evaluate  # noqa: E402
from .export import export as export  # noqa: E402
from .predict import load_model as load_model  # noqa: E402
from .predict import predict as predict  # noqa: E402

_EXPORTS = {
    "BirdclsError": "errors",
    "TrainConfig": "config",
    "resolve_config": "config",
    "list_recipes": "config",
    "split_dataset": "split",
    "train": "learn",
    "build_learner": "learn",
    "scan_dataset": "learn",
    "build_model": "models.backbones",
    "list_architectures": "models.backbones",
    "run_demo": "demo",
}

__all__ = sorted([*_EXPORTS, "evaluate", "export", "load_model", "predict"])


def __getattr__(name: str) -> Any:
    # Lazy: `import birdcls` (and so `birdcls --help`) must not pay for importing torch and fastai.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'birdcls' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
