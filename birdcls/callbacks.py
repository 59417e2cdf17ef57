"""fastai callbacks the training recipe needs beyond fastai's own.

- :class:`ReduceLROnPlateau`: fastai's version divides ``opt.hypers['lr']`` after a plateau, but under
  ``fit_one_cycle`` the ParamScheduler rewrites the lr before every batch, so the reduction is lost
  (fastai issue #4046). This one keeps a scale that it applies *after* the scheduler on every training
  batch: the one-cycle shape stays and is scaled down by ``factor`` after each plateau.
- :class:`AtomicSaveModelCallback`: SaveModelCallback that writes to a temp file and renames it, so a
  crash or Ctrl-C never leaves a half-written checkpoint.
- :class:`Lookahead`: every few steps, pull the weights back toward their running average, harder as
  training ends, and finish on the average (airbench's lookahead: steadier weights from a short run).
- :class:`FreezeWhiteningBias`: stop training the patch-whitening layer's bias after a few epochs
  (airbench94 does: it settles early and then only adds noise).
- :func:`fit_triangle`: ``fit`` under airbench's piecewise-linear learning-rate schedule (up from a fifth of
  the peak, then down to 7% of it), the one-cycle alternative the speed runs use.
- :class:`LossOnDevice`: fastai's Recorder moves every training batch's loss to the host for its smoothed
  loss, which on a GPU waits for the batch to finish; this keeps that average on the device and moves it
  once, at the end of training, so the host can queue batches ahead.
- :class:`ThrottledProgressCallback`: fastai's progress bars, with the loss in the bar's comment refreshed at
  most twice a second instead of every batch (reading it waits for the device).
- :func:`fast_event_dispatch`: fastai calls every callback on every event, each call missing through
  fastcore's ``__getattr__`` to the Learner when the callback does not handle it (some 70 calls a batch
  for ten callbacks); this calls only the callbacks that handle the event, in fastai's order.
- :class:`EpochHistory`: one row per epoch for ``history.csv`` (both phases), and one plain line per
  epoch when the output is not a terminal or notebook (readable CI logs).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback, TrackerCallback
from fastai.callback.tracker import ReduceLROnPlateau as _FastaiReduceLROnPlateau
from fastai.learner import AvgSmoothLoss, CancelFitException

__all__ = ["AtomicSaveModelCallback", "DeviceSmoothLoss", "EarlyStopping", "EpochHistory", "FreezeWhiteningBias", "Lookahead",
           "LossOnDevice", "ReduceLROnPlateau", "ThrottledProgressCallback",
           "fast_event_dispatch", "fit_triangle", "triangle_schedule"]


def _epochs_without_improvement(tracker: TrackerCallback) -> int:
    """Update ``tracker``'s best score for this epoch and count the epochs since it last improved (``wait``)."""
    TrackerCallback.after_epoch(tracker)
    tracker.wait = 0 if tracker.new_best else tracker.wait + 1
    return tracker.wait


class ReduceLROnPlateau(_FastaiReduceLROnPlateau):
    """Divide the learning rate by ``factor`` after ``patience`` epochs without improvement, on top of
    any lr schedule (one-cycle included) instead of being overwritten by it."""

    def __init__(self, *args, verbose: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.verbose = verbose

    def before_fit(self) -> None:
        super().before_fit()
        self.scale = 1.0
        self.reductions: list[tuple[int, float]] = []

    def _scheduled(self) -> bool:
        return any(isinstance(cb, ParamScheduler) and "lr" in cb.scheds for cb in self.learn.cbs)

    def before_batch(self) -> None:
        # Runs after ParamScheduler (higher order), so it scales the lr the schedule just set.
        if self.training and self.scale != 1.0 and self._scheduled():
            for h in self.opt.hypers:
                h["lr"] = max(h["lr"] * self.scale, self.min_lr)

    def after_epoch(self) -> None:
        if _epochs_without_improvement(self) < self.patience or self.epoch == self.n_epoch - 1:
            return  # improving, or patient still, or after the last epoch, where a smaller lr changes nothing
        self.wait = 0
        if self._scheduled():
            self.scale /= self.factor
        else:
            for h in self.opt.hypers:
                h["lr"] = max(h["lr"] / self.factor, self.min_lr)
        self.reductions.append((self.epoch, self.scale))
        if self.verbose:
            print(f"epoch {self.epoch + 1}: {self.monitor} has not improved for {self.patience} epoch(s); "
              f"learning rate divided by {self.factor:g}", flush=True)


class EarlyStopping(EarlyStoppingCallback):
    """fastai's EarlyStoppingCallback, saying which epoch was best as every other birdcls line counts epochs
    (from 1; fastai's message counts from 0) and only when ``verbose``."""

    def __init__(self, *args, verbose: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.verbose = verbose

    def after_epoch(self) -> None:
        if _epochs_without_improvement(self) >= self.patience:
            if self.verbose:
                print(f"{self.monitor} has not improved since epoch {self.epoch - self.wait + 1}: early stopping",
                      flush=True)
            raise CancelFitException()


class Lookahead(Callback):
    """Every ``every`` training steps: average = lerp(average, weights, 1 - d); weights = average, with
    d = ``decay`` * (fraction of training done)^3, so the pull is nil at first and strongest at the end,
    where the last step averages too and the run ends on the average. Covers every floating-point tensor of the
    state dict (BatchNorm statistics too), as airbench94 does."""

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5):
        self.every, self.decay = every, decay

    def _tensors(self) -> list:
        return [t for t in self.learn.model.state_dict().values() if t.is_floating_point()]

    def before_fit(self) -> None:
        self.total = self.n_epoch * len(self.dls.train)
        # the state dict's tensors, listed once (after fastai moved the model to its device): BatchNorm updates
        # its statistics in place, so these stay the model's own
        self.tensors = [t.detach() for t in self._tensors()]
        self.average = [t.clone() for t in self.tensors]

    def after_batch(self) -> None:
        if not self.training:
            return
        step = self.learn.train_iter  # steps done, this one included
        if step % self.every and step < self.total:  # the last step always averages
            return
        decay = self.decay * min(step / self.total, 1.0) ** 3
        with torch.no_grad():  # two foreach kernels per group of tensors, not two launches per tensor
            torch._foreach_lerp_(self.average, self.tensors, 1 - decay)
            torch._foreach_copy_(self.tensors, self.average)


class FreezeWhiteningBias(Callback):
    """From epoch ``epochs`` on, the bias of every :class:`~birdcls.models.small.PatchWhitening` layer stops
    training: its gradient is dropped after each backward pass, so fastai's optimizer skips it entirely (no
    momentum or decay keeps moving it). ``requires_grad`` stays as it was, so the optimizer's parameter
    groups (and the exported learner's) do not change shape."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def before_fit(self) -> None:
        from .models.small import PatchWhitening

        self.biases = [m.bias for m in self.learn.model.modules() if isinstance(m, PatchWhitening)]

    def after_backward(self) -> None:
        if self.epoch >= self.epochs:
            for bias in self.biases:
                bias.grad = None


class KeepBodyNormStats(Callback):
    """The pretrained body's BatchNorm layers stay in eval mode while the network trains: they normalise with
    the statistics the head learned on, and their weights still train. In train mode they would switch to
    each batch's statistics and drift their running ones toward the new data, which changes every feature
    the head was fitted to at once (Keras's transfer-learning guide gives the same advice)."""

    order = 1  # after fastai's TrainEvalCallback has put the whole model in train mode

    def before_fit(self) -> None:
        from torch import nn

        model = self.learn.model
        if not (isinstance(model, nn.Sequential) and len(model) == 2):
            from .errors import BirdclsError

            raise BirdclsError(f"keep_bn_stats needs a model built as (body, head), as fastai builds a pretrained "
                               f"one; this is a {type(model).__name__}: set keep_bn_stats=false")

    def before_train(self) -> None:
        from torch import nn

        body = self.learn.model[0]
        for m in body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _handles(cb: Callback, event_name: str) -> bool:
    return event_name == "after_fit" or hasattr(type(cb), event_name) or event_name in vars(cb)


def fast_event_dispatch(learn) -> Callable[[], None]:
    """Give ``learn`` an event dispatch that skips the callbacks without a handler for the event, and return
    the function that takes it off again.

    fastai's own (``Learner._call_one``) sorts the callbacks by ``order`` and calls each one for every event;
    a callback without a handler looks the event up through fastcore's ``GetAttr`` on the Learner before
    doing nothing. Per batch that is host time a GPU waits on. This one keeps, for the current list of
    callbacks, the sorted few that handle each event, and calls them through ``Callback.__call__`` as fastai
    does (``run``, ``run_train`` and ``run_valid`` still apply; every callback still gets ``after_fit``, which
    resets ``run``). The list is rebuilt whenever the callbacks change. It is set on the instance, so an
    exported learner's class is fastai's own."""
    from fastai.learner import event

    cache: dict = {"key": None, "events": {}}

    def call_one(event_name: str) -> None:
        key = tuple(map(id, learn.cbs))
        if key != cache["key"]:
            cache["key"], cache["events"] = key, {}
        cbs = cache["events"].get(event_name)
        if cbs is None:
            if not hasattr(event, event_name):
                raise Exception(f"missing {event_name}")  # fastai's own check and message
            cbs = cache["events"][event_name] = [cb for cb in learn.cbs.sorted("order") if _handles(cb, event_name)]
        for cb in cbs:
            cb(event_name)

    learn._call_one = call_one  # Learner.__call__ finds it on the instance before the class's

    def undo() -> None:
        learn.__dict__.pop("_call_one", None)

    return undo


def triangle_schedule(lr, warmup: float = 0.23, start: float = 0.2, end: float = 0.07):
    """lr (a float or one per parameter group) times a piecewise-linear curve: ``start`` to 1 over the first
    ``warmup`` of training, then down to ``end`` (airbench94's schedule)."""
    import numpy as np
    from fastai.callback.schedule import SchedLin, combine_scheds

    lr = np.asarray(lr, dtype=float) if np.ndim(lr) else float(lr)  # fastai's set_hyper takes a float or a 1-d array
    return combine_scheds([warmup, 1 - warmup], [SchedLin(lr * start, lr), SchedLin(lr, lr * end)])


def fit_triangle(learn, n_epoch: int, lr, cbs=None, **kwargs) -> None:
    """``learn.fit`` under :func:`triangle_schedule` (momentum stays as the optimizer has it)."""
    learn.fit(n_epoch, lr, cbs=[ParamScheduler({"lr": triangle_schedule(lr)}), *(cbs or [])], **kwargs)


class DeviceSmoothLoss(AvgSmoothLoss):
    """fastai's exponentially smoothed training loss, computed where the loss is (fastai's own copies each
    batch's loss to the host first)."""

    def accumulate(self, learn) -> None:
        self.count += 1
        loss = learn.loss.detach().mean().float()
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)


class LossOnDevice(Callback):
    """Swap the Recorder's smoothed loss for :class:`DeviceSmoothLoss` for one fit, then move the recorded
    losses to the host in one transfer, so that the exported learner and ``plot_loss`` see plain CPU values.
    fastai still reads the loss once an epoch for its log."""

    order = 51  # after the Recorder (50): its before_fit resets whichever smoothed loss it holds

    def before_fit(self) -> None:
        recorder = self.learn.recorder
        self.host_loss = recorder.smooth_loss
        # object.__setattr__: a Callback's own setattr warns when the Learner has an attribute of that name
        object.__setattr__(recorder, "smooth_loss", DeviceSmoothLoss(beta=recorder.smooth_loss.beta))

    def after_fit(self) -> None:
        recorder = self.learn.recorder
        if recorder.losses:
            recorder.losses = list(torch.stack([t.float() for t in recorder.losses]).cpu())
        if isinstance(getattr(self.learn, "smooth_loss", None), torch.Tensor):
            self.learn.smooth_loss = self.learn.smooth_loss.cpu()
        object.__setattr__(recorder, "smooth_loss", self.host_loss)


class ThrottledProgressCallback(ProgressCallback):
    """fastai's ProgressCallback, reading the smoothed loss for the bar's comment at most every ``every``
    seconds (fastai reads it, a host copy, after every batch)."""

    def __init__(self, every: float = 0.5):
        self.every, self._shown = every, -math.inf

    def after_batch(self) -> None:
        self.pbar.update(self.iter + 1)
        now = time.monotonic()
        if hasattr(self, "smooth_loss") and now - self._shown >= self.every:
            self._shown = now
            self.pbar.comment = f"{float(self.smooth_loss):.4f}"


class AtomicSaveModelCallback(SaveModelCallback):
    """SaveModelCallback whose checkpoints appear under their final name only when complete, and
    which says so only when ``verbose``.

    ``prior_best`` carries the best score of an earlier phase: this phase saves only what beats it,
    and if nothing does, the earlier phase's checkpoint (same file name) is reloaded at the end, so
    a fine_tune that makes things worse cannot replace a better head.

    ``whole``: the module to save and reload instead of ``learn.model``. The head phase on cached
    features trains a Learner over the head's layers only; passing the full network here keeps
    ``best.pth`` a checkpoint of the whole model (what fine_tune and ``--resume`` load) in every phase.

    ``write_every``: each new best is copied in memory (where the model is: no wait on a GPU) and written
    to disk when ``write_every`` seconds have passed since the last write, at the end of the fit (which
    reloads the copy) and by :meth:`flush` when training is interrupted. Epochs of minutes (a CPU) write
    every best as it comes; epochs of a fraction of a second (a GPU, or a head on cached features) write
    once, instead of a multi-megabyte file an epoch.
    """

    def __init__(self, *args, verbose: bool = True, prior_best: float | None = None, whole=None,
                 write_every: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.verbose, self.prior_best, self.whole, self.write_every = verbose, prior_best, whole, write_every
        self._kept: dict | None = None  # the best weights not yet written
        self._written_at = time.monotonic()

    def before_fit(self) -> None:
        super().before_fit()
        if self.prior_best is not None and self.last_saved_path is None:
            self.best = self.prior_best
        self._kept, self._written_at = None, time.monotonic()

    def _module(self):
        from fastai.torch_core import get_model

        return self.whole if self.whole is not None else get_model(self.learn.model)

    def after_epoch(self) -> None:
        if self.every_epoch:
            return super().after_epoch()
        TrackerCallback.after_epoch(self)
        if self.new_best:
            if self.verbose:
                print(f"  best so far: {self.monitor} {self.best:.4f} -> {self.fname}.pth", flush=True)
            if self.with_opt:
                self._save(self.fname)
                return
            self._kept = {k: v.detach().clone() for k, v in self._module().state_dict().items()}
            self.last_saved_path = self._path(self.fname)
            if time.monotonic() - self._written_at >= self.write_every:
                self.flush()

    def flush(self) -> None:
        """Write the best weights kept in memory, if any: at the end of a fit, and when training is
        interrupted (fastai calls no callback then; birdcls's training loop calls this on the way out)."""
        import torch

        if self._kept is not None:
            self._write(lambda tmp: torch.save(self._kept, tmp))
            self._kept = None

    def after_fit(self, **kwargs) -> None:
        # A zero-epoch fit (fine_tune with freeze_epochs=0 runs one) has changed nothing to reload over.
        if self.n_epoch == 0:
            return
        if self.at_end:
            self._save(self.fname)
        elif self.every_epoch:
            return
        elif self._kept is not None:
            self._module().load_state_dict(self._kept)
            self.flush()
        elif self.last_saved_path is not None:
            self._load()
        elif self.prior_best is not None and self._path(self.fname).is_file():
            if self.verbose:
                print(f"  no epoch beat the earlier best {self.monitor} {self.prior_best:.4f}: reloaded {self.fname}.pth",
                      flush=True)
            self._load()

    def _path(self, name: str):
        if self.learn is not None:  # fastai unsets it when a fit(cbs=...) ends: flush() may come after
            self._folder = self.learn.path / self.learn.model_dir
        return self._folder / f"{name}.pth"

    def _load(self) -> None:
        if self.whole is None:
            self.learn.load(self.fname, with_opt=self.with_opt)
            return
        import torch

        device = next(self.whole.parameters()).device
        self.whole.load_state_dict(torch.load(self._path(self.fname), map_location=device, weights_only=True))

    def _save(self, name: str) -> None:
        import torch

        if self.whole is None:
            self._write(lambda tmp: self.learn.save(tmp.with_suffix(""), with_opt=self.with_opt), name)
        else:
            self._write(lambda tmp: torch.save(self.whole.state_dict(), tmp), name)

    def _write(self, writer: Callable, name: str | None = None) -> None:
        """``writer(path)`` to a partial file, then renamed over ``name``.pth: never half a checkpoint."""
        final = self._path(name or self.fname)
        partial = final.with_name(f"{final.stem}.partial.pth")
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer(partial)
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.last_saved_path = final
        self._written_at = time.monotonic()


class EpochHistory(Callback):
    """Collect one row per epoch (phase, losses, metrics, lr, seconds); optionally print it as a line.

    Ordered after the Recorder (50), which computes the epoch's values, and before the tracker
    callbacks (60+), whose early stop would cut the epoch's remaining ``after_epoch`` calls short.
    """

    order = 55

    def __init__(self, phase: str = "", print_lines: bool = False, on_epoch: Callable[[dict], None] | None = None):
        self.phase, self.print_lines, self.on_epoch = phase, print_lines, on_epoch
        self.rows: list[dict] = []

    def before_epoch(self) -> None:
        self._start = time.perf_counter()

    def _main_group(self) -> int:
        """The parameter group whose lr the row shows: the last (fastai's head, the base lr of fine_tune's
        discriminative rates), except under the BatchNorm-bias split, whose last group runs at a multiple."""
        from .models.backbones import bn_bias_split

        return 0 if getattr(self.learn, "splitter", None) is bn_bias_split else -1

    def after_epoch(self) -> None:
        names = list(self.recorder.metric_names)[1:-1]  # drop 'epoch' and 'time'
        values = list(self.recorder.log)[1:len(names) + 1]
        row: dict = {"phase": self.phase, "epoch": self.epoch + 1, "n_epoch": self.n_epoch}
        for name, value in zip(names, values):
            row[name] = float(value) if value is not None else math.nan
        row["lr"] = float(self.opt.hypers[self._main_group()]["lr"])
        # the head phase may train a head-only Learner on cached features: its body is frozen by construction
        row["frozen"] = self.phase == "head" or bool(getattr(self.opt, "frozen_idx", 0))
        row["seconds"] = round(time.perf_counter() - self._start, 2)
        self.rows.append(row)
        if self.print_lines:
            label = f"{self.phase} (body frozen)" if row["frozen"] and self.phase != "head" else self.phase
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k in names)
            print(f"{label} epoch {row['epoch']}/{row['n_epoch']}  {shown}  lr {row['lr']:.2e}  "
                  f"{row['seconds']:.1f}s", flush=True)
        if self.on_epoch is not None:
            self.on_epoch(row)
