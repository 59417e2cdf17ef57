"""The offline demo: scikit-learn's bundled handwritten digits, through the whole pipeline.

digits (1,797 real 8x8 scans) -> class folders of PNGs -> split -> train (recipe ``demo``) ->
evaluate -> export (safetensors and ONNX) -> predict in a fresh process. No network needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._io import write_json_atomic
from .errors import BirdclsError

__all__ = ["run_demo", "write_digits"]


def write_digits(dest: str | os.PathLike, size: int = 32) -> Path:
    """Write scikit-learn's digits as ``dest/<digit>/NNNN.png`` (grey, upscaled to ``size`` px)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from ._io import atomic_path

    dest = Path(dest)
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = dest / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        arr = (img * (255.0 / 16.0)).astype(np.uint8)
        with atomic_path(folder / f"{i:04d}.png") as tmp:
            Image.fromarray(arr, mode="L").resize((size, size), Image.BICUBIC).save(tmp, format="PNG")
    return dest


def run_demo(out: str | os.PathLike = "models/demo", progress: str = "auto") -> dict[str, Any]:
    """Run split -> train -> evaluate -> export -> predict on the digits; return what went where. ``out`` must be
    new, empty, or an earlier demo's folder (its raw/, data/ and run/ are replaced)."""
    from .export import export
    from .learn import train
    from .split import split_dataset

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BirdclsError(f"--out {out} is a file: choose a folder for the demo")
    if out.exists() and any(out.iterdir()) and not (out / "demo.json").is_file():
        raise BirdclsError(f"--out {out} holds other files and is not an earlier demo's folder: choose a new or "
                           "empty folder")
    start = time.perf_counter()
    # marked as a demo folder from the start, so that a demo stopped half-way can be run again into it
    write_json_atomic(out / "demo.json", {"out": str(out), "finished": False})
    raw = write_digits(out / "raw")
    print(f"[1/5] wrote {sum(1 for _ in raw.rglob('*.png'))} digit images to {raw}", flush=True)
    split = split_dataset(raw, out / "data", seed=1337, overwrite=True, progress=progress)
    print(f"[2/5] split 70/15/15 into {split.dst}", flush=True)
    print(split.table(), flush=True)
    print("[3/5] training (recipe 'demo': head fit_one_cycle, then fine_tune) ...", flush=True)
    result = train(split.dst, out / "run", recipe="demo", overwrite=True, progress=progress)
    print(f"      test accuracy {result.metrics['test_accuracy']:.4f} on {result.metrics['n_test']} images, "
          f"report in {result.run_dir}", flush=True)
    onnx_path = export(result.run_dir, "onnx", out / "digits.onnx")
    st_path = export(result.run_dir, "safetensors", out / "digits.safetensors")
    print(f"[4/5] exported {onnx_path} and {st_path} (+ {st_path.with_suffix('.json').name})", flush=True)
    samples = [str(sorted((split.dst / "test" / d).iterdir())[0]) for d in ("3", "7")]
    proc = subprocess.run([sys.executable, "-m", "birdcls", "predict", str(onnx_path), *samples, "--json"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BirdclsError(f"prediction in a fresh process failed: {proc.stderr.strip().splitlines()[-1:]}")
    rows = json.loads(proc.stdout)
    print("[5/5] predicted in a fresh process from the ONNX export:", flush=True)
    for row in rows:
        print(f"      {row['path']}: {row['label']} (p={row['prob']:.3f})", flush=True)
    summary = {"out": str(out), "finished": True, "run": str(result.run_dir), "test_accuracy": result.metrics["test_accuracy"],
               "exports": [str(onnx_path), str(st_path)], "predictions": rows,
               "seconds": round(time.perf_counter() - start, 1)}
    write_json_atomic(out / "demo.json", summary)
    return summary
