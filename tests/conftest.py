"""Shared fixtures: tiny real datasets in temp folders, one trained run reused by many tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures import make_split_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Offline by construction: no test may reach a hub, and the trust registry lives in a temp folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def _birdcls_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("birdcls-home")
    os.environ["BIRDCLS_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")  # an empty cache: torchvision weights are "not cached"
    yield home


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Three colour/shape classes, 12/4/4 images per class in train/val/test, 48 px JPEGs."""
    return make_split_dataset(tmp_path_factory.mktemp("tiny") / "data")


FAST = dict(size=32, bs=8, epochs_head=1, epochs=1, freeze_epochs=0, lr=1e-2, progress="none", export_onnx=False)
# int8 is tested in test_quantize.py on a run trained to confident answers (tiny runs are often not)


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """One real training run (a few seconds at 32 px) shared by the export/predict/evaluate tests."""
    from birdcls.learn import train

    return train(tiny_data, tmp_path_factory.mktemp("runs") / "run", **{**FAST, "export_onnx": True, "export_int8": False})


def run_cli(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m birdcls ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "birdcls", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
