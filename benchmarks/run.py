"""birdcls benchmarks: both sides of each comparison in one process, one line per side, JSON out.

    python benchmarks/run.py [--case transfer|scratch|predict|coldstart|overhead|photos|all] [--quick] [--data DIR] [--repeat N]

Cases (each skips with a message when its data in ../shared/data is absent):
  transfer   dogs-vs-cats: plain fastai (the reports' recipe as a user writes it) vs `birdcls train` defaults
  scratch    CIFAR-10 JPEG: the CIFAR-10 report's recipe vs the fastest birdcls recipe (cifar10-speedrun)
  predict    JPEG files on disk: a loop of learn.predict vs birdcls batched predict (images/s; three rounds
             of the loop then each side, medians, each ratio within its round)
  coldstart  whole processes: `birdcls --help`, and `birdcls predict` of one image from the ONNX export
             of the run `make demo` writes (run it first)
  overhead   host time per training step: `birdcls train` (fastai's Learner, the cifar10-speedrun recipe's
             callbacks, schedule and augmentation), as shipped and with fastai's stock per-step pieces (event
             dispatch, batch transforms, loss, zero_grad, epoch order), vs a bare PyTorch loop, on the speed-run
             network cut to 8 channels a layer so that
             compute is small (synthetic 32 px images; needs no data; one thread on a CPU)
  photos     12 MP phone-sized JPEGs (dogs-vs-cats scaled up; synthetic without the data) decoded to a 224 px
             model input: full decode + resize vs birdcls's load_image (JPEG draft decoding); images/s and
             the mean pixel difference
--quick caps epochs and image counts so a CPU run finishes in minutes; the JSON records what ran.
--data points at another copy of the shared data folder; --repeat N runs the fast scratch recipe N times
(seeds 0..N-1) and reports the mean, since one run's accuracy moves by a few tenths of a point.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # --data replaces it
RESULTS = ROOT / "benchmarks" / "results"
PROGRESS = "none"  # birdcls's own output during the cases; --progress lines shows each epoch
OVERRIDES: dict = {}  # --set KEY=VALUE: config overrides for every birdcls training run
DECODE_BREAKDOWN = False  # predict: also time decoding alone (always on a GPU); --decode-breakdown
warnings.filterwarnings("ignore")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def line(case: str, side: str, **fields) -> dict:
    shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
    print(f"[{case}] {side:<28} {shown}", flush=True)
    return {"side": side, **fields}


def extract(archive: str, work: Path) -> Path | None:
    src = SHARED / archive  # module global: main() points it at --data
    if not src.is_file():
        print(f"skip: {src} is absent (see ../shared/data/README.md)", flush=True)
        return None
    with tarfile.open(src) as tar:
        tar.extractall(work, filter="data")
    return work


def dogs_vs_cats_split(work: Path) -> Path | None:
    if extract("dogs-vs-cats.tar", work) is None:
        return None
    from birdcls.split import split_dataset

    return split_dataset(work / "dogs-vs-cats", work / "dvc", seed=1337, overwrite=True).dst


def epoch_counter():
    """A fastai callback that counts epochs across every fit (fastai is imported inside the cases)."""
    from fastai.callback.core import Callback

    class EpochCounter(Callback):
        seen = 0

        def after_epoch(self) -> None:
            self.seen += 1

    return EpochCounter()


def case_transfer(work: Path, quick: bool, plain_epochs: tuple[int, int] | None = None) -> list[dict] | None:
    data = dogs_vs_cats_split(work)
    if data is None:
        return None
    from fastai.vision.all import (
        EarlyStoppingCallback,
        ImageDataLoaders,
        ReduceLROnPlateau,
        Resize,
        SaveModelCallback,
        accuracy,
        vision_learner,
    )

    from birdcls import train
    from birdcls.models.backbones import load_offline_state_dict

    head, tune = plain_epochs or ((1, 1) if quick else (10, 10))
    n_train = sum(1 for _ in (data / "train").rglob("*.jpg"))
    rows = []
    # Plain fastai, as a user writes the reports' recipe (offline: the lite0 weights loaded by hand).
    start = time.perf_counter()
    dls = ImageDataLoaders.from_folder(data, train="train", valid="val", item_tfms=Resize(224), bs=64)
    learn = vision_learner(dls, "tf_efficientnet_lite0", pretrained=False, metrics=accuracy, path=work / "plain")
    learn.model[0].model.load_state_dict(load_offline_state_dict("tf_efficientnet_lite0"), strict=False)
    learn.freeze()
    cbs = [EarlyStoppingCallback(patience=3), SaveModelCallback(), ReduceLROnPlateau(patience=2)]
    counter = epoch_counter()
    learn.add_cb(counter)  # counts all fits: head, frozen and unfrozen
    with learn.no_bar():
        learn.fit_one_cycle(head, cbs=cbs)
        learn.fine_tune(tune, cbs=cbs)
    seconds = time.perf_counter() - start
    epochs_run = counter.seen  # read before get_preds, which fires the epoch events too
    test = dls.test_dl(sorted((data / "test").rglob("*.jpg")), with_labels=True)
    preds, targs = learn.get_preds(dl=test)
    rows.append(line("transfer", "plain fastai", size=224, train_images=n_train, seconds=seconds,
                     images_per_s=n_train * epochs_run / seconds,
                     test_acc=float((preds.argmax(1) == targs).float().mean()), epochs=f"{head}+{tune} ({epochs_run} run)"))
    start = time.perf_counter()
    result = train(data, work / "birdcls-run", overwrite=True, progress=PROGRESS,
                   **({"epochs_head": head, "epochs": tune} if quick else {}), **OVERRIDES)
    seconds = time.perf_counter() - start
    train_s = result.metrics["train_seconds"]
    runs = result.metrics["epochs_run"]
    rows.append(line("transfer", "birdcls train (defaults)", size=result.config.size, train_images=n_train,
                     seconds=seconds, train_seconds=train_s, test_acc=result.metrics["test_accuracy"],
                     epochs="+".join(f"{k} {v}" for k, v in runs.items()), ratio=rows[0]["seconds"] / train_s))
    return rows


def case_scratch(work: Path, quick: bool, repeat: int = 1, baseline: bool = True) -> list[dict] | None:
    if extract("cifar10-jpg.tar.gz", work) is None:
        return None
    from birdcls import train

    root = work / "cifar10"
    (root / "val").mkdir(exist_ok=True)
    from birdcls.data.sources import _carve_val

    _carve_val(root, fraction=0.1)
    rows = []
    # The report trained on batch 1 (10,000 images) and validated on batch 2; cifar10-speedrun, the fastest
    # birdcls recipe, takes all 45,000.
    sides = [("cifar10-report-small", {"train_subset": 10000, "valid_subset": 5000})] if baseline else []
    sides += [("cifar10-speedrun", {"seed": seed}) for seed in range(repeat)]
    for recipe, subset in sides:
        cap = 1 if quick else None
        start = time.perf_counter()
        result = train(root, work / recipe, recipe=recipe, overwrite=True, progress=PROGRESS, epoch_cap=cap,
                       **{**OVERRIDES, **subset})
        m = result.metrics
        n = min(subset.get("train_subset", 10**9), m["data"]["train"]["images"])
        epochs = sum(m["epochs_run"].values())
        loop_s = m["train_seconds"] - m.get("decode_seconds", 0.0)
        rows.append(line("scratch", recipe, size=32, train_images=n, epochs=epochs, seconds=time.perf_counter() - start,
                         train_seconds=m["train_seconds"], decode_seconds=m.get("decode_seconds", 0.0),
                         loop_seconds=loop_s,
                         images_per_s=n * epochs / loop_s, test_acc=m["test_accuracy"], tta=m.get("tta", False),
                         tta_shift=m.get("tta_shift", False), seed=result.config.seed))
    fast = rows[1:] if baseline else rows
    if len(fast) > 1:
        accs = [r["test_acc"] for r in fast]
        rows.append(line("scratch", f"cifar10-speedrun mean of {len(fast)}", test_acc=sum(accs) / len(accs),
                         test_acc_min=min(accs), test_acc_max=max(accs),
                         train_seconds=sum(r["train_seconds"] for r in fast) / len(fast),
                         loop_seconds=sum(r["loop_seconds"] for r in fast) / len(fast)))
    if baseline:
        rows[-1]["time_ratio"] = rows[0]["train_seconds"] / rows[-1]["train_seconds"]
    return rows


def case_predict(work: Path, quick: bool) -> list[dict] | None:
    data = dogs_vs_cats_split(work)
    if data is None:
        return None
    import numpy as np
    from fastai.learner import load_learner

    from birdcls import load_model, predict, train

    # a real model (defaults: about half a minute on a CPU), so its int8 copy faces a meaningful accuracy check
    result = train(data, work / "pred-run", size=224, progress=PROGRESS, overwrite=True,
                   **({"epochs_head": 1, "epochs": 0, "train_subset": 64, "valid_subset": 32} if quick else {}),
                   **OVERRIDES)
    images = sorted(data.rglob("*.jpg"))
    n = 200 if quick else 2000
    images = (images * (n // len(images) + 1))[:n]
    learn = load_learner(result.run_dir / "model.pkl")
    loop_n = min(len(images), 100 if quick else 300)
    from birdcls import export

    onnx = export(result.run_dir, "onnx", work / "model.onnx")
    int8 = result.run_dir / "model.int8.onnx"  # what `birdcls predict RUN` runs on a CPU when it passed its check
    sides = [("birdcls predict (pkl, torch)", result.run_dir, "torch", False, "auto"),
             ("birdcls predict (onnx)", onnx, "auto", False, "auto")]
    if int8.is_file():
        sides.append(("birdcls predict (int8 onnx)", int8, "auto", False, "auto"))
    else:
        print(f"no int8 row: {result.metrics.get('int8', 'int8 export off')}", flush=True)
    if load_model(result.run_dir, backend="torch").on_gpu:
        # the default there is bf16 autocast; float32 beside it, and JPEGs decoded on the GPU itself (nvJPEG)
        sides[1:1] = [("birdcls predict (pkl, torch, float32)", result.run_dir, "torch", False, "float32"),
                      ("birdcls predict (pkl, torch, decoded on the GPU)", result.run_dir, "torch", True, "auto")]
    models = {}
    for side, source, backend, on_device, precision in sides:
        models[side] = load_model(source, backend=backend, precision=precision)
        # warm-up: cuDNN's set-up for the batch shape, and the decoding workers a model keeps across calls
        predict(models[side], images[:64], decode_on_device=on_device)
    # rounds of the loop then every side, so that each ratio compares runs minutes apart at most: this
    # machine's speed moves 10-25% over a longer span
    loop_rates: list[float] = []
    rates: dict[str, list[float]] = {side: [] for side, *_ in sides}
    answered: dict[str, int] = {}
    test_acc: dict[str, float] = {}  # on the test split's images (repeated), so that no side loses accuracy
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        with learn.no_bar():
            for p in images[:loop_n]:
                learn.predict(p)
        loop_rates.append(loop_n / (time.perf_counter() - start))
        for side, _, _, on_device, _ in sides:
            start = time.perf_counter()
            rows = predict(models[side], images, decode_on_device=on_device).rows
            rates[side].append(len(images) / (time.perf_counter() - start))
            answered[side] = len(rows)
            tested = [r for r in rows if Path(r["path"]).parent.parent.name == "test"]
            test_acc[side] = sum(r["label"] == Path(r["path"]).parent.name for r in tested) / max(len(tested), 1)
    rows = [line("predict", "learn.predict loop", size=224, images=loop_n, images_per_s=float(np.median(loop_rates)),
                 runs=[round(r, 1) for r in loop_rates])]
    for side, *_ in sides:
        ratios = [r / loop for r, loop in zip(rates[side], loop_rates)]
        rows.append(line("predict", side, size=224, images=len(images), bs=models[side].default_bs,
                         images_per_s=float(np.median(rates[side])), ratio=float(np.median(ratios)),
                         ratios=[round(r, 2) for r in ratios], answered=answered[side], test_acc=test_acc[side],
                         **({"precision": models[side].precision} if models[side].device is not None else {})))
    torch_model = models[sides[0][0]]
    if torch_model.on_gpu or DECODE_BREAKDOWN:
        rows += decode_breakdown(images, torch_model.default_bs, torch_model.device)
        rows += network_breakdown(images, [models[side] for side, _, backend, on_device, _ in sides
                                           if backend == "torch" and not on_device])
    for model in models.values():
        model.close()
    return rows


def decode_breakdown(images: list[Path], bs: int, device) -> list[dict]:
    """Decoding alone, no network: the same files through threads and worker processes of several counts,
    and on ``device`` when it is a GPU (nvJPEG). Where a GPU's prediction rate falls short, this tells
    whether decoding is the limit, and what starting the workers costs (``first_batch_s``: worker processes
    are forked from a process holding the GPU context, one after another)."""
    import torch

    from birdcls.data.device_decode import device_decoded_batches
    from birdcls.predict import _decoded_batches, _decoded_batches_in_processes, decode_process_pool

    cpus = os.cpu_count() or 1
    counts = sorted({min(n, cpus) for n in (2, 4, 8, 16)})
    variants = [(f"{n} threads", partial(_decoded_batches, workers=n)) for n in counts]
    variants += [(f"{n} processes", partial(_decoded_batches_in_processes, workers=n)) for n in counts]
    kept = decode_process_pool(counts[-1])  # what a model's later predict calls use: started already
    variants.append((f"{counts[-1]} processes, started before", partial(_decoded_batches_in_processes,
                                                                         workers=counts[-1], pool=kept)))
    if device.type == "cuda":
        variants.append(("nvJPEG on the GPU", partial(device_decoded_batches, device=device, workers=min(16, cpus))))
    rows = []
    for side, decode in variants:
        start, first, n = time.perf_counter(), None, 0
        for ok, _batch, _ in decode(images, size=224, bs=bs):
            first = first or time.perf_counter() - start
            n += len(ok)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append(line("predict", f"decode only, {side}", size=224, images=n, bs=bs, images_per_s=n / seconds,
                         first_batch_s=first))
    kept.shutdown()
    return rows


def network_breakdown(images: list[Path], models: list) -> list[dict]:
    """The network alone, no decoding: the images decoded beforehand, then every batch through each PyTorch
    model (each precision) as predict sends it, host to device and back included."""
    from birdcls.predict import _decoded_batches

    model = models[0]
    batches = [batch for _, batch, _ in _decoded_batches(images, model.info.size, model.default_bs, 8)]
    rows = []
    for model in models:
        model.probabilities(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            model.probabilities(batch)
        seconds = time.perf_counter() - start
        n = sum(len(b) for b in batches)
        rows.append(line("predict", f"network only, {model.precision}", size=224, images=n, bs=model.default_bs,
                         images_per_s=n / seconds))
    return rows


def case_coldstart(work: Path, quick: bool) -> list[dict] | None:
    from birdcls import export
    from birdcls.demo import write_digits

    raw = write_digits(work / "digits")
    image = next((raw / "3").iterdir())
    runs = sorted((ROOT / "models" / "demo" / "run").glob("model.pkl"))
    if not runs:
        print("skip: no trained run at models/demo (run `make demo` first)", flush=True)
        return None
    onnx = export(runs[0].parent, "onnx", work / "m.onnx")
    rows = []
    for side, args in (("birdcls --help", ["--help"]), ("birdcls predict (onnx, 1 image)", ["predict", str(onnx), str(image)])):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "birdcls", *args], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        rows.append(line("coldstart", side, seconds=min(times), runs=len(times)))
    return rows


@contextlib.contextmanager
def _narrow_speedrun():
    """``cifar_speedrun`` built at 8 channels a layer while the block runs: the recipe's loop, little compute."""
    import dataclasses
    from functools import partial

    from birdcls.models import small

    entry = small.SMALL_MODELS["cifar_speedrun"]
    small.SMALL_MODELS["cifar_speedrun"] = dataclasses.replace(entry, build=partial(small.cifar_speedrun, widths=(8, 8, 8)))
    try:
        yield
    finally:
        small.SMALL_MODELS["cifar_speedrun"] = entry


def _bare_loop_ms_per_step(x, y, bs: int, epochs: int, device) -> float:
    """The same network, batches, augmentation, loss and Nesterov SGD as a plain PyTorch loop (no callbacks,
    no schedule, no lookahead); the best epoch's milliseconds per training step, a validation pass included."""
    import torch
    import torch.nn.functional as F

    from birdcls.data.augment import shift_flip
    from birdcls.models.small import cifar_speedrun

    torch.manual_seed(0)
    model = cifar_speedrun(10, widths=(8, 8, 8)).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True, weight_decay=5e-4)
    x, y = x.to(device), y.to(device)
    mean, std = torch.full((1, 3, 1, 1), 127.5, device=device), torch.full((1, 3, 1, 1), 63.75, device=device)
    valid = x[:400]  # the size of birdcls's validation split below
    steps, best = len(x) // bs, float("inf")
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), device=device)
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            xb = shift_flip((x[idx].permute(0, 3, 1, 2).float() - mean) / std, 2, True)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.2)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            for i in range(0, len(valid), bs * 2):
                model((valid[i:i + bs * 2].permute(0, 3, 1, 2).float() - mean) / std)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1000


@contextlib.contextmanager
def _fastai_stock_pieces():
    """birdcls training with fastai's stock per-step pieces in place of its host-time changes, while the block
    runs: fastai's event dispatch; IntToFloatTensor, shift-and-flip and Normalize as three batch transforms;
    fastai's LabelSmoothingCrossEntropyFlat; fastai's zero_grad (each gradient zeroed from Python); fastai's
    epoch order (a shuffled Python list, filtered index by index)."""
    from fastai.data.core import TfmdDL
    from fastai.data.transforms import IntToFloatTensor
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.optimizer import Optimizer

    from birdcls import callbacks, learn
    from birdcls.data.tensors import TensorBatchDL
    from birdcls.optim import NesterovSGD

    def stock_settings(cfg):
        settings = saved[2](cfg)
        if cfg.label_smoothing > 0:
            settings["loss_func"] = LabelSmoothingCrossEntropyFlat(eps=cfg.label_smoothing)
        return settings

    def stock_order(self):
        self._order = None
        return TfmdDL.get_idxs(self)

    def stock_batches(self, samps):
        import torch

        if self._order is None:
            self._order = torch.tensor(list(samps), dtype=torch.long)
        return saved[4](self, samps)

    saved = (callbacks.fast_event_dispatch, learn.store_batch_transforms, learn._learner_settings,
             NesterovSGD.zero_grad, TensorBatchDL.create_batches, TensorBatchDL.get_idxs)
    callbacks.fast_event_dispatch = lambda lrn: (lambda: None)
    learn.store_batch_transforms = lambda cfg, mean, std: [IntToFloatTensor(), *learn.batch_transforms(cfg, mean, std)]
    learn._learner_settings = stock_settings
    NesterovSGD.zero_grad = Optimizer.zero_grad
    TensorBatchDL.get_idxs, TensorBatchDL.create_batches = stock_order, stock_batches
    try:
        yield
    finally:
        (callbacks.fast_event_dispatch, learn.store_batch_transforms, learn._learner_settings,
         NesterovSGD.zero_grad, TensorBatchDL.create_batches, TensorBatchDL.get_idxs) = saved


def case_overhead(work: Path, quick: bool) -> list[dict] | None:
    import numpy as np
    import torch
    from PIL import Image

    from birdcls import train

    cuda = torch.cuda.is_available()
    bs, n_train, epochs = (1024, 20480, 3) if cuda else (16, 1600 if quick else 3200, 3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n_train)
    root = work / "synthetic"
    for split, n in (("train", n_train), ("val", 400), ("test", 200)):
        for i in range(n):
            folder = root / split / f"c{y[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i}.png")
    # On a CPU, one thread: the network is too small to gain from two, and two threads' hand-offs add more
    # noise than the difference measured here (2-core CPU: medians 13.1 against 11.6 ms a step on one thread;
    # no difference to be seen through the noise on two)
    threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(1)
    try:
        ms: dict[str, list[float]] = {"fastai's stock pieces": [], "as shipped": []}
        with _narrow_speedrun():
            for _ in range(1 if quick else 3):  # the two sides alternate, so the machine's load falls on both
                for side, context in (("fastai's stock pieces", _fastai_stock_pieces),
                                      ("as shipped", contextlib.nullcontext)):
                    with context():
                        result = train(root, work / "run", recipe="cifar10-speedrun", overwrite=True,
                                       progress=PROGRESS, bs=bs, epochs=epochs, export_onnx=False,
                                       export_int8=False, **OVERRIDES)
                    steps = result.metrics["data"]["train"]["images"] // bs
                    with open(result.run_dir / "history.csv") as f:
                        ms[side].append(min(float(r["seconds"]) for r in csv.DictReader(f)) / steps * 1000)
        bare_ms = _bare_loop_ms_per_step(torch.from_numpy(x), torch.from_numpy(y), bs, epochs,
                                         torch.device("cuda" if cuda else "cpu"))
    finally:
        torch.set_num_threads(threads)
    rows = [line("overhead", "bare PyTorch loop", bs=bs, steps=steps, ms_per_step=bare_ms)]
    for side, runs in ms.items():
        best = min(runs)
        rows.append(line("overhead", f"birdcls train, {side}", bs=bs, steps=steps, ms_per_step=best,
                         median_ms=float(np.median(runs)), runs=len(runs), host_ms_over_bare=best - bare_ms,
                         ratio=best / bare_ms))
    return rows


def _phone_photos(work: Path, n: int) -> tuple[list[Path], str]:
    """``n`` 12 MP (4032x3024) JPEGs at quality 90, as a phone takes them: dogs-vs-cats photos scaled up when
    the shared data is there, else smooth synthetic pictures. Written under ``work`` only."""
    import numpy as np
    from PIL import Image

    have_data = (SHARED / "dogs-vs-cats.tar").is_file() and extract("dogs-vs-cats.tar", work)
    sources = sorted((work / "dogs-vs-cats").rglob("*.jpg"))[:n] if have_data else []
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if sources:
            with Image.open(sources[i % len(sources)]) as im:
                small = im.convert("RGB")
        else:
            small = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        out.append(work / f"photo{i:03d}.jpg")
        small.resize((4032, 3024), Image.BICUBIC).save(out[-1], quality=90)
    return out, "dogs-vs-cats scaled up" if sources else "synthetic"


def case_photos(work: Path, quick: bool) -> list[dict] | None:
    """Decoding 12 MP phone photos to a 224 px model input, on a thread pool as ``birdcls predict`` does:
    a full decode then resize (what fastai's ``PILImage.create`` + ``Resize`` do) vs ``load_image``."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from birdcls.data.decode import load_image

    def full_decode(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR))

    photos, content = _phone_photos(work, 8 if quick else 48)
    sides = {"full decode + resize": full_decode, "birdcls load_image": lambda p: load_image(p, 224)}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in range(3):  # alternating, so the machine's load falls on both sides alike
            for side, fn in sides.items():
                start = time.perf_counter()
                list(pool.map(fn, photos))
                rates[side].append(len(photos) / (time.perf_counter() - start))
        diff = np.mean([np.abs(full_decode(p).astype(np.int16) - load_image(p, 224)).mean() for p in photos[:8]])
    rows = []
    for side in sides:
        best = max(rates[side])
        rows.append(line("photos", side, size=224, images=len(photos), source=f"4032x3024 JPEG, {content}",
                         images_per_s=best,
                         runs=len(rates[side]), ratio=best / max(rates["full decode + resize"]),
                         **({"mean_abs_pixel_diff": float(diff)} if side != "full decode + resize" else {})))
    return rows


CASES = {"transfer": case_transfer, "scratch": case_scratch, "predict": case_predict, "coldstart": case_coldstart,
         "overhead": case_overhead, "photos": case_photos}


def main() -> None:
    global SHARED, PROGRESS, DECODE_BREAKDOWN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="all", choices=[*CASES, "all"])
    parser.add_argument("--quick", action="store_true", help="cap epochs and image counts")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--progress", default="none", choices=["none", "lines"], help="birdcls's epoch lines")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a birdcls config key in every case's birdcls runs (YAML value)")
    parser.add_argument("--repeat", type=int, default=1, help="scratch: runs of the fast recipe (seeds 0..N-1)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="scratch: skip the report's recipe (minutes on a GPU too) and run only cifar10-speedrun")
    parser.add_argument("--decode-breakdown", action="store_true",
                        help="predict: also time decoding alone, threads against worker processes (always on a GPU)")
    parser.add_argument("--plain-epochs", metavar="HEAD,TUNE", help="transfer: cap the plain fastai side's epochs "
                        "(the full recipe takes over an hour on a 2-core CPU)")
    args = parser.parse_args()
    SHARED, PROGRESS, DECODE_BREAKDOWN = args.data, args.progress, args.decode_breakdown
    import yaml

    OVERRIDES.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    dev = device_name()
    print(f"device: {dev}", flush=True)
    for name in CASES if args.case == "all" else [args.case]:
        work = Path(tempfile.mkdtemp(prefix=f"birdcls-bench-{name}-"))
        try:
            extra = {}
            if name == "transfer" and args.plain_epochs:
                extra["plain_epochs"] = tuple(int(v) for v in args.plain_epochs.split(","))
            if name == "scratch":
                extra.update(repeat=args.repeat, baseline=not args.no_baseline)
            rows = CASES[name](work, args.quick, **extra)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if rows:
            out = RESULTS / f"{name}-{time.strftime('%Y%m%d')}-{'gpu' if 'CPU' not in dev else 'cpu'}.json"
            out.write_text(json.dumps({"case": name, "device": dev, "quick": args.quick, "date": time.strftime("%F"),
                                       "rows": rows}, indent=2))
            print(f"[{name}] wrote {out.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
