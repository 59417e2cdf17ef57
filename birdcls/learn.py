"""The one learner wrapper: build a fastai Learner from class folders, train it with the recipe, report.

The recipe is the reports' one: freeze the pretrained body and ``fit_one_cycle`` the head, then
``fine_tune`` the whole network, both with EarlyStopping, SaveModel (best epoch kept and reloaded)
and ReduceLROnPlateau (scaled onto the one-cycle schedule, see :mod:`birdcls.callbacks`). By default a
pretrained body's head trains on features computed once (:mod:`birdcls.fast`) and ``fine_tune`` runs only
when ``epochs`` is set. Then the test split is evaluated and everything lands in the run directory::

    RUN/
      config.yaml            resolved config (defaults < recipe < flags)
      history.csv            one row per epoch, both phases
      curves.png             loss and accuracy curves
      metrics.json           test accuracy, per-class precision/recall/F1, train_seconds, data counts
      confusion_matrix.png   counts and normalised
      top_losses.png         the worst test images
      predictions.csv        every test image's prediction
      model.pkl              fastai's learn.export, loadable with load_learner
      model.onnx             the ONNX export (export_onnx), and model.int8.onnx where int8 keeps accuracy
      state.json             finished phases, seconds and classes (what --resume reads)
      checkpoints/best.pth   best weights (what --resume starts from)

Example:
    >>> result = train("data/birds", "models/birds", epochs=3)
    >>> result.metrics["test_accuracy"]
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ._io import LOCK_NAME, folder_lock, is_within, write_json_atomic, write_text_atomic, write_with_atomic
from ._terminal import progress_mode
from ._text import name_list
from ._trust import register_pickle
from .config import TrainConfig, resolve_config, validate_config
from .data.folders import ImageCheck, SplitLayout, check_cache_for, find_splits, list_labelled_images, verify_images
from .errors import BirdclsError, TrainingInterrupted, describe, interrupt_exit_code

__all__ = ["DatasetScan", "TrainResult", "build_learner", "scan_dataset", "train"]



@dataclass
class DatasetScan:
    """The verified images of each split, and what was skipped."""

    layout: SplitLayout
    classes: list[str]
    items: dict[str, list[Path]]  # split name -> good image files
    checks: dict[str, ImageCheck]
    missing_in_val: list[str] = field(default_factory=list)  # classes of train/ without a readable val/ image

    def counts(self) -> dict[str, Any]:
        return {split: {"images": len(check.good), "unreadable": len(check.bad), "non_images": len(check.not_images)}
                for split, check in self.checks.items()}

    def __repr__(self) -> str:  # the dataclass's own lists every image path
        sizes = ", ".join(f"{split} {len(check.good)}" for split, check in self.checks.items())
        return f"DatasetScan({str(self.layout.root)!r}, {len(self.classes)} classes, images: {sizes})"


@dataclass
class TrainResult:
    """A finished run: its folder, its metrics.json as a dict, the resolved config, and the fastai Learner
    (still in memory, for more work in the same session)."""

    run_dir: Path
    metrics: dict[str, Any]
    config: TrainConfig
    learner: Any = None

    def __repr__(self) -> str:  # the dataclass's own prints every metric, every setting and the network
        m = self.metrics
        return (f"TrainResult({str(self.run_dir)!r}, {self.config.arch} at {self.config.size} px, test accuracy "
                f"{m.get('test_accuracy', float('nan')):.4f} on {m.get('n_test', 0)} images, "
                f"{m.get('train_seconds', 0.0):.1f}s)")

    def summary(self) -> list[str]:
        """What ``birdcls train`` prints at the end: the test score, the run folder's files, and why
        model.int8.onnx is missing where it is."""
        m = self.metrics
        from .evaluate import mistakes_line

        lines = [f"test accuracy {m['test_accuracy']:.4f} on {m['n_test']} images; trained in "
                 f"{m['train_seconds']:.1f}s", *mistakes_line(m)]
        names = ("metrics.json", "history.csv", "curves.png", "confusion_matrix.png", "top_losses.png",
                 "predictions.csv", "config.yaml", "model.pkl", "model.onnx", "model.int8.onnx")
        lines.append(f"run folder: {self.run_dir} ({', '.join(n for n in names if (self.run_dir / n).is_file())})")
        int8 = m.get("int8")
        if isinstance(int8, dict) and not int8.get("kept", True):
            from .quantize import Int8Check

            check = Int8Check(**{k: int8[k] for k in Int8Check.__dataclass_fields__ if k in int8})
            lines.append(f"model.int8.onnx not written: {check.why_not_kept()}; predict uses model.onnx")
        return lines


def scan_dataset(data: str | os.PathLike) -> DatasetScan:
    """Find the splits, verify every image, and check that the classes line up across the splits."""
    layout = find_splits(data)
    per_split = {"train": layout.train, "val": layout.val, "test": layout.test}
    items: dict[str, list[Path]] = {}
    checks: dict[str, ImageCheck] = {}
    classes_of: dict[str, set[str]] = {}
    for split, folder in per_split.items():
        by_class, not_images = list_labelled_images(folder)
        check = verify_images([p for files in by_class.values() for p in files], cache=check_cache_for(folder))
        check.not_images = not_images
        good = set(check.good)
        classes_of[split] = {c for c, files in by_class.items() if any(p in good for p in files)}
        items[split], checks[split] = check.good, check
    classes = sorted(classes_of["train"])
    if len(classes) < 2:
        raise BirdclsError(f"{layout.train} has {len(classes)} class with readable images ({', '.join(classes) or 'none'}): "
                           "a classifier needs at least 2 class folders")
    for split in ("val", "test"):
        folder = per_split[split]
        unknown = sorted(classes_of[split] - set(classes))
        if unknown:
            raise BirdclsError(f"{folder} has class(es) {', '.join(unknown)} with no images in train/: "
                               "add training images for them or remove the folders")
        if not items[split]:
            raise BirdclsError(f"{folder} holds no readable images: re-run `birdcls split` with a larger dataset")
    absent = sorted(set(classes) - classes_of["test"])
    if absent:
        raise BirdclsError(f"class(es) {', '.join(absent)} have no images in {layout.test}: the test report needs "
                           "every class; re-split with more images of them")
    return DatasetScan(layout, classes, items, checks, sorted(set(classes) - classes_of["val"]))


def _fit_small_arch(cfg: TrainConfig) -> TrainConfig:
    """The reports' small CNNs train from scratch, at the input size their layers fix."""
    from .models.small import SMALL_MODELS

    spec = SMALL_MODELS[cfg.arch]
    changes: dict[str, Any] = {}
    if cfg.pretrained:
        changes["pretrained"] = False
    if spec.fixed_size and cfg.size != spec.size:
        changes["size"] = spec.size
    if changes:
        why = ["it has no pretrained weights"] if "pretrained" in changes else []
        why += [f"it takes {spec.size} px inputs"] if "size" in changes else []
        print(f"{cfg.arch}: {' and '.join(why)}, so using " + ", ".join(f"{k}={v}" for k, v in changes.items()),
              flush=True)
    return dataclasses.replace(cfg, **changes)


#: What ``train`` writes into a run folder. ``--overwrite`` replaces these and the reports ``evaluate`` wrote in
#: it (they describe the model replaced), and leaves anything else there, the user's notes or exports, as it is.
RUN_FILES = frozenset({"config.yaml", "history.csv", "curves.png", "metrics.json", "confusion_matrix.png",
                       "top_losses.png", "predictions.csv", "model.pkl", "model.onnx", "model.int8.onnx", "state.json",
                       "checkpoints"})


def _replaced_by_a_new_run(path: Path) -> bool:
    """One of the run's own files, a report of ``evaluate``'s, or what an atomic write of either left behind
    (hidden, ending in .partial: see :func:`birdcls._io.atomic_path`)."""
    from .evaluate import is_report_folder

    return (path.name in RUN_FILES or (path.name.startswith(".") and path.name.endswith(".partial"))
            or is_report_folder(path))


def _clear_old_run(out: Path) -> None:
    """Remove what ``--overwrite`` replaces (see :data:`RUN_FILES`), saying which of the user's files stay."""
    old = [p for p in _run_files(out) if _replaced_by_a_new_run(p)]
    kept = sorted(p.name for p in _run_files(out) if p not in old)
    for path in old:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if kept:
        print(f"note: --overwrite replaced the run in {out} and kept {len(kept)} file(s) that train did not write: "
              f"{name_list(kept, 5)}", flush=True)


@contextmanager
def _locked_run_dir(out: Path, data_root: Path, overwrite: bool, resume: bool) -> Iterator[Callable[[], None]]:
    """Check ``out`` for this run and hold the run folder's lock while the block trains in it: a second
    `birdcls train` into the same folder (even with --overwrite or --resume) is refused, not mixed in. Yields
    the function the run calls once it is set up (its learner built, the weights loaded), which removes an
    earlier run that --overwrite replaces: a retrain that cannot start leaves the earlier run as it was."""
    if is_within(out, data_root):
        raise BirdclsError(f"out (--out) {out} is inside the dataset {data_root}: put runs elsewhere, e.g. models/<name>")
    if resume and not (out / "config.yaml").is_file():
        raise BirdclsError(f"cannot resume: {out} is not a birdcls run (no config.yaml); drop --resume (resume=True)")
    if out.exists() and not out.is_dir():
        raise BirdclsError(f"out (--out) {out} is a file: choose a folder for the run")
    if not resume and _run_files(out) and not (out / "config.yaml").is_file():  # no lock file left in it either
        raise BirdclsError(f"{out} is not empty and is not a birdcls run folder: refusing to write into it; "
                           "choose another --out")
    with folder_lock(out, "`birdcls train`"):  # a run in progress here is the first thing to know
        if not resume and _run_files(out):
            if not overwrite:
                raise BirdclsError(f"run folder {out} already exists: pass --overwrite to replace it, --resume to "
                                   "continue it (in Python: overwrite=True, resume=True), or choose another --out")
            yield partial(_clear_old_run, out)
            return
        yield lambda: None


def _run_files(out: Path) -> list[Path]:
    """What a run folder holds besides its lock file."""
    return [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []


def _num_workers(cfg: TrainConfig) -> int:
    if cfg.num_workers >= 0:
        return cfg.num_workers
    cpus = os.cpu_count() or 1
    # On small machines decoding in the main process beats forking workers that fight the model for cores.
    return 0 if cpus <= 2 else min(8, cpus - 1)


def build_learner(scan: DatasetScan, cfg: TrainConfig, run_dir: str | os.PathLike = "."):
    """A fastai Learner for ``scan``'s images: pretrained body + head, DataLoaders, loss and metrics."""
    import fastai.callback.schedule  # noqa: F401 - fit_one_cycle, fine_tune and lr_find on the Learner returned
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import GrandparentSplitter, parent_label
    from fastai.learner import Learner
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, ResizeMethod

    from .data.blocks import image_block
    from .models.backbones import build_model, splitter_for
    from .runtime import ModelInfo, resolve_device

    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    # set both ways: an earlier run in this process may have left the other setting
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cfg.deterministic, not cfg.deterministic
    model, spec = build_model(cfg.arch, len(scan.classes), pretrained=cfg.pretrained, weights=cfg.weights)
    mean, std = _normalisation(cfg, spec)
    batch_tfms = batch_transforms(cfg, mean, std)
    block = DataBlock(
        blocks=(image_block(cfg.size, spec.in_chans), CategoryBlock(vocab=scan.classes)),
        get_y=parent_label,
        splitter=GrandparentSplitter(train_name="train", valid_name=scan.layout.val.name),
        item_tfms=Resize(cfg.size, method=ResizeMethod.Squish),
        batch_tfms=batch_tfms,
    )
    train_items, valid_items = _train_valid_items(scan, cfg)
    # fastai drops a short last training batch; with fewer images than bs that would be every image (as in
    # tensor_dataloaders, a lone batch is kept)
    dls = block.dataloaders(train_items + valid_items, bs=cfg.bs, num_workers=_num_workers(cfg),
                            device=torch.device(device), shuffle=cfg.shuffle,
                            drop_last=cfg.shuffle and len(train_items) > cfg.bs)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    learn = Learner(dls, model, splitter=splitter_for(cfg.arch, bn_bias_group=_bn_bias_group(cfg)),
                    path=Path(run_dir), model_dir="checkpoints",
                    train_bn=cfg.train_bn, **_learner_settings(cfg))
    if cfg.mixed_precision and torch.device(device).type == "cuda":
        import fastai.callback.fp16  # noqa: F401 - adds Learner.to_bf16 and to_fp16

        from .runtime import has_fast_bf16

        # fastai's autocast callback: bf16 where the GPU has it (no loss scaling), fp16 + GradScaler below 8.0
        learn.to_bf16() if has_fast_bf16(device) else learn.to_fp16()
    if cfg.pretrained:
        learn.freeze()
    tta = ("flip_shift" if cfg.tta_shift else "flip") if cfg.tta else None
    extra = {"weights_from": spec.weights_from, **({"tta": tta} if tta else {})}
    learn.birdcls_info = ModelInfo(cfg.arch, list(scan.classes), cfg.size, mean, std,
                                   spec.source, spec.in_chans, extra=extra).to_dict()
    return learn


def batch_transforms(cfg: TrainConfig, mean: list[float], std: list[float]) -> list:
    """fastai's batch transforms of the recipe: aug_transforms (training batches only) and Normalize."""
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import aug_transforms

    from .data.augment import RandomShiftFlip

    if not cfg.augment:
        tfms = []
    elif cfg.augment_style == "shift":
        tfms = [RandomShiftFlip(shift=2, flip=cfg.flip)]
    elif cfg.augment_style == "light":
        tfms = aug_transforms(do_flip=cfg.flip, max_rotate=0.0, max_zoom=1.1, max_lighting=0.0, max_warp=0.0)
    else:
        tfms = aug_transforms(do_flip=cfg.flip)
    return [*tfms, Normalize.from_stats(mean, std)]


def store_batch_transforms(cfg: TrainConfig, mean: list[float], std: list[float]) -> list:
    """The batch transforms of the tensor-store DataLoaders (uint8 batches): one :class:`StoreBatchPrep`
    where the recipe augments with shifts and flips or not at all, else fastai's own around aug_transforms."""
    from fastai.data.transforms import IntToFloatTensor

    from .data.augment import StoreBatchPrep

    if not cfg.augment:
        return [StoreBatchPrep(mean, std)]
    if cfg.augment_style == "shift":
        return [StoreBatchPrep(mean, std, shift=2, flip=cfg.flip)]
    return [IntToFloatTensor(), *batch_transforms(cfg, mean, std)]


def _bn_bias_group(cfg: TrainConfig) -> bool:
    return not cfg.pretrained and cfg.bn_bias_lr_mult != 1.0


def _scratch_lr(cfg: TrainConfig):
    """The from-scratch learning rate: one value, or one per parameter group (BatchNorm biases last)."""
    import numpy as np

    return np.array([cfg.lr, cfg.lr * cfg.bn_bias_lr_mult]) if _bn_bias_group(cfg) else cfg.lr


def _learner_settings(cfg: TrainConfig) -> dict[str, Any]:
    """Loss, optimizer, metrics and weight decay: the same for the full Learner and the head-on-features one."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy, error_rate
    from fastai.optimizer import SGD, Adam

    from .optim import nesterov_sgd

    # PyTorch's own label smoothing: the same loss as fastai's LabelSmoothingCrossEntropyFlat, in one fused
    # call instead of eight Python-level tensor operations a batch
    loss = CrossEntropyLossFlat(label_smoothing=cfg.label_smoothing) if cfg.label_smoothing > 0 else CrossEntropyLossFlat()
    sgd = nesterov_sgd if cfg.nesterov else SGD
    settings = {"loss_func": loss, "opt_func": partial(sgd, mom=cfg.momentum) if cfg.opt == "sgd" else Adam,
                "metrics": [accuracy] + ([error_rate] if cfg.monitor == "error_rate" else [])}
    if cfg.wd is not None:
        settings["wd"] = cfg.wd
    if cfg.bn_bias_wd and cfg.wd is not None and _bn_bias_group(cfg):
        # decoupled decay is lr * wd per step: the biases' 64x lr would decay them 64x harder than the weights
        settings.update(wd=[cfg.wd, cfg.wd / cfg.bn_bias_lr_mult], wd_bn_bias=True)
    if not cfg.cycle_momentum:
        settings["moms"] = (cfg.momentum,) * 3
    return settings


def _train_valid_items(scan: DatasetScan, cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    return (_subset(scan.items["train"], cfg.train_subset, cfg.seed),
            _subset(scan.items["val"], cfg.valid_subset, cfg.seed + 1))


def _normalisation(cfg: TrainConfig, spec) -> tuple[list[float], list[float]]:
    """Mean/std for Normalize: the backbone's, none (inputs stay 0..1), or raw255 (x*255: raw pixel values)."""
    c = spec.in_chans
    if cfg.normalize == "none":
        return [0.0] * c, [1.0] * c
    if cfg.normalize == "raw255":
        return [0.0] * c, [1 / 255] * c
    return list(spec.mean), list(spec.std)


def _subset(items: list[Path], n: int | None, seed: int) -> list[Path]:
    """A seeded random ``n`` of ``items`` (all of them when n is None or larger)."""
    if n is None or n >= len(items):
        return items
    import random

    return sorted(random.Random(seed).sample(items, n))


def _history_rows(path: Path, completed: list[str] | None = None) -> list[dict[str, Any]]:
    """history.csv's rows as written (epoch counts as ints). Given the ``completed`` phases of a resumed run,
    the rows of a phase that was interrupted are labelled ``PHASE (interrupted)``: the resumed run runs that
    phase again from its first epoch, and its rows must not read as a second copy of the same epochs."""
    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        if completed is not None and row["phase"] not in completed and not row["phase"].endswith(" (interrupted)"):
            row["phase"] = f"{row['phase']} (interrupted)"
        for k, v in row.items():
            if k in ("epoch", "n_epoch"):
                row[k] = int(float(v))
            elif k not in ("phase", "frozen"):
                row[k] = float(v) if v not in ("", None) else float("nan")
    return rows


def _write_history(rows: list[dict[str, Any]], dest: Path) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(dest, buf.getvalue())


def _callback_attacher(cfg: TrainConfig, progress: str, history: list[dict], out: Path):
    """A function that adds the run's callbacks (history, SaveModel, EarlyStopping, ReduceLROnPlateau)
    to a Learner for one phase and returns the function that takes them off again."""
    from fastai.callback.progress import ProgressCallback
    from fastcore.basics import noop

    from .callbacks import (
        AtomicSaveModelCallback,
        EarlyStopping,
        EpochHistory,
        FreezeWhiteningBias,
        KeepBodyNormStats,
        Lookahead,
        LossOnDevice,
        ReduceLROnPlateau,
        ThrottledProgressCallback,
        fast_event_dispatch,
    )

    def on_epoch(row: dict) -> None:
        history.append(row)
        _write_history(history, out / "history.csv")

    def attach(learn, phase: str, whole=None):
        cbs = [EpochHistory(phase=phase, print_lines=(progress == "lines"), on_epoch=on_epoch), LossOnDevice()]
        if cfg.lookahead:
            cbs.append(Lookahead())
        if cfg.whiten_bias_epochs is not None and phase == "scratch":
            cbs.append(FreezeWhiteningBias(cfg.whiten_bias_epochs))
        if cfg.keep_bn_stats and phase == "fine_tune":
            cbs.append(KeepBodyNormStats())
        if cfg.save_best:
            prior = _best_valid(history, cfg.monitor)
            cbs.append(AtomicSaveModelCallback(monitor=cfg.monitor, fname="best", reset_on_fit=False,
                                               verbose=progress != "none", whole=whole,
                                               prior_best=prior[cfg.monitor] if prior else None))
        if cfg.early_stopping:
            cbs.append(EarlyStopping(monitor=cfg.monitor, patience=cfg.patience, verbose=progress != "none"))
        if cfg.reduce_lr:
            cbs.append(ReduceLROnPlateau(monitor=cfg.monitor, patience=cfg.lr_patience, factor=cfg.lr_factor,
                                         verbose=progress != "none"))
        learn.remove_cb(ProgressCallback)
        if progress == "bars":
            cbs.append(ThrottledProgressCallback())
        else:
            learn.logger = noop  # without the bar, fastai's Recorder would print raw lists
        learn.add_cbs(cbs)
        undo_dispatch = fast_event_dispatch(learn)

        def detach() -> None:  # also on the way out of an interrupted fit: its best epoch reaches the disk
            for cb in cbs:
                if isinstance(cb, AtomicSaveModelCallback):
                    cb.flush()
            undo_dispatch()
            learn.remove_cbs(cbs)
            learn.logger = print
            if not any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
                learn.add_cb(ProgressCallback())  # the exported learner shows fastai's bars in a notebook

        return detach

    return attach


def _run_phases(learn, cfg: TrainConfig, out: Path, done: list[str], history: list[dict], progress: str,
                prior_seconds: float = 0.0, fast: Any = None, say: Callable[[str], None] = print,
                resuming: bool = False) -> float:
    """Head phase then fine_tune phase, skipping those already done (resume). Returns total train seconds,
    counting ``prior_seconds`` from the interrupted runs before.

    With ``fast`` (the tensor store) and ``cache_features``, the head phase trains on the frozen body's
    features, computed once, instead of running the body in every epoch.
    """
    from .callbacks import fit_triangle
    from .fast import head_split, train_head_on_features

    attach = _callback_attacher(cfg, progress, history, out)
    state_file = out / "state.json"
    seconds = prior_seconds

    def save_state(train_seconds: float) -> None:  # what --resume reads
        write_json_atomic(state_file, {"completed_phases": done, "train_seconds": train_seconds,
                                       "classes": list(learn.birdcls_info["classes"])})
    one_cycle = cfg.schedule == "one_cycle"
    # the head phase and training from scratch (triangle is refused with a pretrained body)
    scheduled_fit = {"one_cycle": learn.fit_one_cycle, "constant": learn.fit,
                     "triangle": partial(fit_triangle, learn)}[cfg.schedule]

    def head_phase() -> None:
        if fast is not None and cfg.cache_features and head_split(learn.model) is not None:
            train_head_on_features(learn, fast, cfg, _learner_settings(cfg),
                                   lambda lrn: attach(lrn, "head", whole=learn.model), say,
                                   progress)  # already resolved: bars, lines or none
            return
        if fast is not None and cfg.cache_features:
            say(f"head: {cfg.arch} has no fastai body + head split, so the head trains with the body in the loop")
        learn.freeze()
        detach = attach(learn, "head")
        try:
            scheduled_fit(cfg.epochs_head, cfg.lr)
        finally:
            detach()

    def tune_phase(name: str, run: Callable[[], Any]) -> Callable[[], None]:
        def phase() -> None:
            detach = attach(learn, name)
            try:
                run()
            finally:
                detach()
        return phase

    if one_cycle:
        fine_tune = tune_phase("fine_tune", lambda: learn.fine_tune(
            cfg.epochs, base_lr=cfg.lr, freeze_epochs=cfg.freeze_epochs, lr_mult=cfg.lr_mult))
    else:  # constant lr: unfreeze and train with discriminative rates, no schedule
        fine_tune = tune_phase("fine_tune", lambda: (learn.unfreeze(), learn.fit(cfg.epochs,
                                                                                  slice(cfg.lr / cfg.lr_mult, cfg.lr))))
    runs = {"head": head_phase, "fine_tune": fine_tune,
            "scratch": tune_phase("scratch", lambda: (_init_from_data(learn, say),
                                                      scheduled_fit(cfg.epochs, _scratch_lr(cfg))))}
    for name in _phase_names(cfg):
        run_phase = runs[name]
        if name in done:
            continue
        if resuming:
            finished = f"{', '.join(done)} finished and skipped; " if done else ""
            origin = "the best checkpoint" if (out / "checkpoints" / "best.pth").is_file() else "the start"
            say(f"resuming {out}: {finished}{name} runs all its epochs again, from {origin}")
            resuming = False
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Saved file doesn't contain an optimizer.*")
                run_phase()
        except KeyboardInterrupt:  # the epochs run so far count: a resumed run's train_seconds is the whole time
            save_state(seconds + time.perf_counter() - start)
            raise
        seconds += time.perf_counter() - start
        done.append(name)
        save_state(seconds)
    return seconds


def _init_from_data(learn, say: Callable[[str], None]) -> None:
    """Layers that start from the data (the speed-run network's patch whitening) see one training batch."""
    from .models.small import unfitted_whitening

    layers = unfitted_whitening(learn.model)  # none after --resume: the checkpoint holds the fitted filters
    if layers:
        xb = learn.dls.train.one_batch()[0]
        for layer in layers:
            layer.fit(xb)
        say(f"patch whitening fitted on {len(xb)} training images")


def _resolve_auto(cfg: TrainConfig, device: str, say: Callable[[str], None]) -> TrainConfig:
    """Fill in the ``auto`` settings.

    ``epochs``: a pretrained body stays frozen and the head trains on its cached features; from scratch, 10
    epochs. Measured on dogs-vs-cats on a 2-core CPU, fine_tune after the head did not raise test accuracy
    (0.978 against 0.982, with ``keep_bn_stats``) and took 5.5 minutes for 3 epochs.
    ``freeze_epochs``: fine_tune's frozen epochs warm up a new head (fastai's default is 1); after the head
    phase the head is trained, and on a CPU such an epoch costs as much as an unfrozen one (``train_bn``
    trains BatchNorm layers all through the body), so 0 then.
    """
    if cfg.freeze_epochs is None:
        cfg = dataclasses.replace(cfg, freeze_epochs=0 if cfg.epochs_head > 0 else 1)
    if cfg.epochs is not None:
        return cfg
    epochs = 0 if cfg.pretrained else 10
    if epochs == 0:
        slow = ", and each of its epochs runs the whole network backwards too, on a CPU" if device == "cpu" else ""
        say(f"epochs auto -> 0: the head trains on the frozen body's features (fine-tuning the body did not raise "
            f"test accuracy in our measurements{slow}); set epochs (--epochs N) to fine-tune")
    return dataclasses.replace(cfg, epochs=epochs)


def _check_resumed_classes(out: Path, classes: list[str]) -> None:
    """A resumed run's data must have the classes it trained on (state.json records them after each phase)."""
    try:
        saved = json.loads((out / "state.json").read_text()).get("classes")
    except (OSError, ValueError, AttributeError):
        return  # no phase finished yet: the checkpoint's shape is checked when it loads
    if saved is not None and list(saved) != list(classes):
        raise BirdclsError(f"cannot resume {out}: it trained on classes {', '.join(saved)}, and this data has "
                           f"{', '.join(classes)}; resume with the data it trained on, or train a new run")


def _check_resumable(out: Path, cfg: TrainConfig) -> None:
    """Before anything is written: a resume of a finished run needs a phase left to train (``--epochs N`` after
    a head-only run fine-tunes it; an interrupted run with none left is finished from its best checkpoint), and
    the weights of the finished phases it skips must be in checkpoints/best.pth."""
    try:
        done = list(json.loads((out / "state.json").read_text()).get("completed_phases", []))
    except (OSError, ValueError, AttributeError):
        return  # no phase finished yet: the resume starts the first one again
    finished = (out / "metrics.json").is_file()
    if finished and not [name for name in _phase_names(cfg) if name not in done]:
        raise BirdclsError(f"{out} has finished its phases ({', '.join(done)}), so there is nothing to resume: "
                           "--resume continues an interrupted run; to train more, train a new run (--overwrite, or "
                           "another --out)")
    if done and not (out / "checkpoints" / "best.pth").is_file():
        raise BirdclsError(f"cannot resume {out}: no checkpoint holds the weights of its finished phases "
                           f"({', '.join(done)}): save_best was false, or checkpoints/ was removed; train it again "
                           "with --overwrite")


def _phase_names(cfg: TrainConfig) -> list[str]:
    """The phases a config trains, in order: ``head`` (a pretrained body, frozen, for ``epochs_head``), then
    ``fine_tune`` (pretrained) or ``scratch`` for ``epochs``; a phase with no epochs is left out."""
    names = ["head"] if cfg.pretrained and cfg.epochs_head > 0 else []
    if cfg.epochs > 0:
        names.append("fine_tune" if cfg.pretrained else "scratch")
    return names


def _check_there_is_work(cfg: TrainConfig) -> None:
    """Before the run folder is made: a config with no phase to train is refused, naming the right flag."""
    if _phase_names(cfg):
        return
    if not cfg.pretrained:
        raise BirdclsError("nothing to train: a network trained from scratch has no head phase (--epochs-head does "
                           "not apply) and epochs is 0; set --epochs N")
    raise BirdclsError("nothing to train: epochs_head and epochs are both 0; set --epochs or --epochs-head")


# what the checkpoint's weights are and what input they expect: a resumed run keeps these (epochs, rates and
# the like may change: `--resume --epochs-head 0` ends an interrupted head phase where it stopped)
FIXED_ON_RESUME = ("arch", "weights", "pretrained", "size", "normalize")


def _resumed_config(out: Path, recipe: str | os.PathLike | None, overrides: dict[str, Any],
                    config: TrainConfig | None = None) -> TrainConfig:
    """The run's own config.yaml with ``overrides`` (or ``config``, a whole TrainConfig from Python). A resumed
    run keeps its network and input: another recipe, or a setting of ``FIXED_ON_RESUME`` that differs (a new
    size, say), is refused rather than mixed into weights trained another way."""
    if recipe is not None:
        raise BirdclsError(f"--resume continues {out} with its own config.yaml: drop --recipe")
    saved = resolve_config(recipe=out / "config.yaml")
    cfg = validate_config(config) if config is not None else resolve_config(recipe=out / "config.yaml",
                                                                            overrides=overrides)

    def differs(key: str) -> bool:
        now, then = getattr(cfg, key), getattr(saved, key)
        if key == "weights" and now and then:  # one file, named from another folder
            return Path(now).resolve() != Path(then).resolve()
        return now != then

    changed = [f"{key}={getattr(saved, key)!r}" for key in FIXED_ON_RESUME if differs(key)]
    if changed:
        raise BirdclsError(f"--resume continues {out} as it was set up ({', '.join(changed)}): drop the settings "
                           "that differ, or train a new run (--overwrite or another --out)")
    return cfg


def train(data: str | os.PathLike, out: str | os.PathLike, recipe: str | os.PathLike | None = None, *,
          overwrite: bool = False, resume: bool = False, progress: str = "auto",
          config: TrainConfig | Mapping[str, Any] | None = None, epoch_cap: int | None = None, **overrides: Any) -> TrainResult:
    """Train on ``data`` (``train/``, ``val/``, ``test/`` class folders) and write a run directory ``out``.

    Args:
        data: the split dataset folder.
        out: the run directory to create.
        recipe: a shipped recipe name (``birdcls recipes``) or a YAML file.
        overwrite: replace an existing run directory.
        resume: continue an interrupted run from its best checkpoint (its config.yaml is used).
        progress: ``auto`` (bars in a terminal/notebook, one line per epoch otherwise), ``bars``,
            ``lines`` or ``none``.
        config: a ready TrainConfig (then ``recipe`` and ``overrides`` must be empty), or a dict of
            TrainConfig fields, taken as overrides.
        epoch_cap: cap every phase at this many epochs (smoke runs of long recipes).
        **overrides: any TrainConfig field, e.g. ``epochs=3, size=160``.
    """
    data, out = Path(data), Path(out)
    progress = progress_mode(progress)  # epoch lines and bars go to stdout
    if isinstance(config, Mapping):
        config, overrides = None, {**config, **overrides}
    if config is not None and not isinstance(config, TrainConfig):
        raise BirdclsError(f"config must be a TrainConfig or a dict of its fields, got {type(config).__name__}: e.g. "
                           "train(data, out, size=160) or config=resolve_config(recipe='demo')")
    if config is not None and (recipe is not None or overrides):
        raise BirdclsError("pass either config= or recipe/overrides, not both")
    if resume and overwrite:
        raise BirdclsError("--resume continues a run and --overwrite replaces it: pass one of them")
    if resume and (out / "config.yaml").is_file():
        cfg = _resumed_config(out, recipe, overrides, config)
    else:
        cfg = validate_config(config) if config is not None else resolve_config(recipe=recipe, overrides=overrides)
    if cfg.weights and not Path(cfg.weights).is_file():
        raise BirdclsError(f"weights file {cfg.weights} does not exist: pass the path of a .pth or .safetensors file")
    if cfg.weights:  # saved as an absolute path, so that --resume and --recipe RUN/config.yaml work from anywhere
        cfg = dataclasses.replace(cfg, weights=str(Path(cfg.weights).resolve()))
    scan = scan_dataset(data)  # the data's problems first: before seconds of importing torch and fastai
    if resume:
        _check_resumed_classes(out, scan.classes)
    from .models.backbones import check_arch
    from .runtime import resolve_device

    say = print if progress != "none" else (lambda _msg: None)
    if check_arch(cfg.arch) == "small":
        cfg = _fit_small_arch(cfg)
    notes: list[str] = []  # said once the data and the run folder have passed their checks
    if scan.missing_in_val:
        notes.append(f"{scan.layout.val} has no images of {', '.join(scan.missing_in_val)}: the validation scores "
                     "that pick the best epoch leave them out; re-split with more images of them")
    cfg = _resolve_auto(cfg, resolve_device(cfg.device), notes.append)
    if not cfg.pretrained and "epochs_head" in overrides and cfg.epochs_head > 0:  # asked for, and not applied
        notes.append("epochs_head does not apply from scratch (there is no pretrained body to freeze): the run trains "
                     f"for epochs={cfg.epochs}; set epochs (--epochs N) to change that")
    if epoch_cap is not None:
        cfg = dataclasses.replace(cfg, epochs_head=min(cfg.epochs_head, epoch_cap), epochs=min(cfg.epochs, epoch_cap),
                                  freeze_epochs=min(cfg.freeze_epochs, epoch_cap))
    _check_there_is_work(cfg)
    with _locked_run_dir(out, scan.layout.root, overwrite, resume) as set_up:
        if resume:  # the folder's lock held: its state is not changing under this check
            _check_resumable(out, cfg)
        started: list[bool] = []  # whether the new run is set up, and an earlier one it replaces removed

        def set_up_and_note() -> None:
            set_up()
            started.append(True)

        try:
            return _train_in(out, data, scan, cfg, notes, resume, progress, say, set_up_and_note)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM, wherever it came: the run can go on from here
            code = interrupt_exit_code(exc)
            if not started:  # nothing written or removed yet: nothing to resume
                raise TrainingInterrupted(f"training interrupted before the run started, so {out} is as it was; run "
                                          "the same command again", code) from None
            if not (out / "config.yaml").is_file():
                raise TrainingInterrupted("training interrupted before anything was written; run the same command "
                                          "again", code) from None
            best = out / "checkpoints" / "best.pth"
            if not best.is_file() and not cfg.save_best:
                raise TrainingInterrupted(f"training interrupted; with save_best=false no checkpoint is written, so "
                                          f"{out} cannot go on from here: train it again with --overwrite", code) from None
            where = f"best checkpoint so far: {best}" if best.is_file() else "no epoch finished, so no checkpoint yet"
            raise TrainingInterrupted(f"training interrupted; {where}; resume with: birdcls train {data} --out {out} "
                                      "--resume (in Python: train(..., resume=True))", code) from None


def _train_in(out: Path, data: Path, scan: DatasetScan, cfg: TrainConfig, notes: list[str], resume: bool,
              progress: str, say: Callable[[str], None], set_up: Callable[[], None]) -> TrainResult:
    """The run itself, in its checked and locked folder ``out``: set up, the phases, then test and export.
    ``set_up()`` is called once the learner is built (see :func:`_locked_run_dir`)."""
    try:  # first, before anything in ``out`` is written or removed
        learn = build_learner(scan, cfg, out)
    except BaseException:  # no weights for the architecture, say, or Ctrl-C: leave no folder this run made
        if not _run_files(out):
            (out / LOCK_NAME).unlink(missing_ok=True)
            if not out.is_symlink() and out.resolve() != Path.cwd().resolve():
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise
    set_up()
    if not resume:  # a resume writes its config once its checkpoint has loaded
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
    for note in notes:  # what is wrong with the data or the settings: said however quiet the progress
        print(note, flush=True)
    fast = None
    if cfg.fast_data:
        from .fast import attach_fast_data

        info = learn.birdcls_info
        fast = attach_fast_data(learn, *_train_valid_items(scan, cfg), scan.classes, cfg,
                                store_batch_transforms(cfg, info["mean"], info["std"]), say,
                                progress)  # already resolved: bars, lines or none
    state = {}
    if resume:
        state = json.loads((out / "state.json").read_text()) if (out / "state.json").is_file() else {}
        if (out / "checkpoints" / "best.pth").is_file():
            try:
                learn.load("best", with_opt=False)
            except RuntimeError as exc:  # "size mismatch": a run from before state.json recorded its classes
                raise BirdclsError(f"cannot resume {out}: its checkpoint does not fit this data's {len(scan.classes)} "
                                   f"classes ({str(exc).splitlines()[-1].strip()[:100]}); resume with the data it "
                                   "trained on") from None
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
    done = list(state.get("completed_phases", []))
    history = _history_rows(out / "history.csv", completed=done) if resume else []
    for split, check in scan.checks.items():
        if check.bad or check.not_images:
            print(f"{split}: {check.summary()}", flush=True)
    prior = float(state.get("train_seconds", 0.0)) + (fast.decode_seconds if fast else 0.0)
    seconds = _run_phases(learn, cfg, out, done, history, progress, prior, fast=fast, say=say, resuming=resume)
    data_path = "tensor store" if fast else "fastai per-image"
    if fast:
        fast.restore(learn)
    return _finish_run(learn, cfg, scan, out, history, seconds, data_path, say,
                       decode_seconds=fast.decode_seconds if fast else 0.0, progress=progress)


def _finish_run(learn, cfg: TrainConfig, scan: DatasetScan, out: Path, history: list[dict], seconds: float,
                data_path: str = "fastai per-image", say: Callable[[str], None] = print,
                decode_seconds: float = 0.0, progress: str = "none") -> TrainResult:
    """Export model.pkl, evaluate on test/, write metrics, history and curves. ``seconds`` counts the
    tensor store's decoding (``decode_seconds``, near 0 when the store was cached) as training time."""
    from .data.blocks import fastai_decoding
    from .evaluate import evaluate_predictor, plot_curves
    from .predict import predictor_from_learner

    model_path = out / "model.pkl"
    with fastai_decoding(learn):  # a pickle that loads without birdcls
        write_with_atomic(model_path, lambda tmp: learn.export(tmp.resolve()))
    register_pickle(model_path)
    onnx_written = cfg.export_onnx and _write_run_onnx(learn, out)
    report = evaluate_predictor(predictor_from_learner(learn, str(learn.dls.device)), scan.layout.test, out,
                                top_losses=cfg.top_losses, progress=progress)
    listed = len(scan.checks["test"].good)
    if report["n_test"] + len(report["skipped_unreadable"]) < listed:
        print(f"note: test/ held {listed} readable images when training began and {report['n_test']} at the test; "
              "files were removed during the run, so the test figures cover only those left", flush=True)
    metrics = {
        **report,
        "train_seconds": round(seconds, 2),
        "decode_seconds": round(decode_seconds, 2),
        "epochs_run": {phase: sum(1 for r in history if r.get("phase") == phase) for phase in dict.fromkeys(
            r.get("phase") for r in history)},
        "best_valid": _best_valid(history, cfg.monitor),
        "data": scan.counts(),
        "arch": cfg.arch,
        "size": cfg.size,
        "tta": cfg.tta,
        "tta_shift": cfg.tta_shift,  # the config refuses it without tta
        "device": str(learn.dls.device),
        "data_path": data_path,
        "data_root": str(scan.layout.root.resolve()),
    }
    write_json_atomic(out / "metrics.json", metrics)
    _write_history(history, out / "history.csv")
    if history:
        plot_curves(history, out / "curves.png")
    # last: the run's report is on disk even if quantizing a big network runs out of memory
    if onnx_written and cfg.export_int8:
        int8 = _write_run_int8(out, *_train_valid_items(scan, cfg), say=say)
        if int8:
            metrics["int8"] = int8
            write_json_atomic(out / "metrics.json", metrics)
    return TrainResult(out, metrics, cfg, learn)


def _write_run_onnx(learn, out: Path) -> bool:
    """model.onnx beside model.pkl, for fast CPU prediction; a model ONNX cannot express keeps only the pkl."""
    import copy

    from ._trust import file_sha256
    from .export import export_onnx
    from .runtime import PKL_DIGEST, ModelInfo

    (out / "model.int8.onnx").unlink(missing_ok=True)  # a stale one from an earlier run must not outlive it
    # the pickle's digest tells a copy of the run whose files lost their times that this is its network
    info = ModelInfo.from_dict({**learn.birdcls_info, PKL_DIGEST: file_sha256(out / "model.pkl")})
    try:
        export_onnx(copy.deepcopy(learn.model), info, out / "model.onnx")
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the pkl is still there
        print(f"model.onnx not written ({describe(exc)}); prediction uses model.pkl", flush=True)
        return False
    return True


def _write_run_int8(out: Path, train_items: list[Path], valid_items: list[Path],
                    say: Callable[[str], None] = print) -> dict[str, Any] | None:
    """model.int8.onnx beside model.onnx when it keeps accuracy on val/; the check goes into metrics.json."""
    from .quantize import int8_if_it_keeps_accuracy

    try:
        check = int8_if_it_keeps_accuracy(out / "model.onnx", out / "model.int8.onnx", train_items, valid_items,
                                          [p.parent.name for p in valid_items], remove_stale=True)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; model.onnx is still there
        print(f"model.int8.onnx not written ({describe(exc)}); prediction uses model.onnx", flush=True)
        return None
    say(check.summary() + ("; wrote model.int8.onnx" if check.kept else ""))  # the summary says why not
    return check.to_dict()


def _best_valid(history: list[dict], monitor: str) -> dict[str, Any] | None:
    rows = [r for r in history if monitor in r]
    if not rows:
        return None
    pick = max if monitor == "accuracy" else min
    best = pick(rows, key=lambda r: r[monitor])
    return {"phase": best["phase"], "epoch": int(best["epoch"]), monitor: best[monitor]}
