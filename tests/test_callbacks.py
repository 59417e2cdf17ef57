"""ReduceLROnPlateau must really lower the lr under fit_one_cycle (fastai issue #4046); Lookahead averages;
the fast event dispatch calls what fastai's calls."""

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import ReduceLROnPlateau as FastaiReduceLROnPlateau
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.torch_core import set_seed
from torch import nn
from torch.utils.data import TensorDataset

from birdcls.callbacks import (
    AtomicSaveModelCallback,
    KeepBodyNormStats,
    Lookahead,
    ReduceLROnPlateau,
    fast_event_dispatch,
    fit_triangle,
    triangle_schedule,
)


def _learner(tmp_path):
    set_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    train = TensorDataset(x[:48], y[:48])
    valid = TensorDataset(x[48:], y[48:])
    dls = DataLoaders.from_dsets(train, valid, bs=8)
    return Learner(dls, nn.Linear(4, 2), loss_func=nn.CrossEntropyLoss(), path=tmp_path)


def _lrs(tmp_path, cbs, epochs=4):
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 1e-2, cbs=cbs)
    return np.array(learn.recorder.lrs)


# min_delta so large that no epoch after the first counts as an improvement: a plateau every epoch.
NEVER_IMPROVES = dict(min_delta=1e9, patience=1, factor=10.0)


def test_plateau_scales_the_one_cycle_schedule(tmp_path):
    plain = _lrs(tmp_path, [])
    reduced = _lrs(tmp_path, [ReduceLROnPlateau(**NEVER_IMPROVES)])
    per_epoch = len(plain) // 4
    ratio = reduced / plain
    # epoch 1 and 2 run at the full schedule; a plateau after epoch 2 (and 3) divides by 10 (then 100)
    np.testing.assert_allclose(ratio[: 2 * per_epoch], 1.0, rtol=1e-6)
    np.testing.assert_allclose(ratio[2 * per_epoch: 3 * per_epoch], 0.1, rtol=1e-6)
    np.testing.assert_allclose(ratio[3 * per_epoch:], 0.01, rtol=1e-6)
    # and the one-cycle shape survives inside each epoch
    assert np.argmax(reduced[: 2 * per_epoch]) == np.argmax(plain[: 2 * per_epoch])


def test_fastais_own_callback_is_overwritten_by_the_schedule(tmp_path):
    """Documents why birdcls has its own: fastai's reduction never reaches a batch under one-cycle."""
    plain = _lrs(tmp_path, [])
    fastai_reduced = _lrs(tmp_path, [FastaiReduceLROnPlateau(**NEVER_IMPROVES)])
    np.testing.assert_allclose(fastai_reduced, plain, rtol=1e-6)


def test_plateau_without_a_schedule_divides_the_lr(tmp_path):
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit(3, 1e-2, cbs=[ReduceLROnPlateau(**NEVER_IMPROVES)])
    lrs = np.array(learn.recorder.lrs)
    per_epoch = len(lrs) // 3
    # epochs 1-2 at 1e-2; the plateau seen after epoch 2 divides the lr for epoch 3
    np.testing.assert_allclose(lrs[: 2 * per_epoch], 1e-2)
    np.testing.assert_allclose(lrs[2 * per_epoch:], 1e-3)


def test_atomic_checkpoint_leaves_no_partial_file(tmp_path):
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-2, cbs=[AtomicSaveModelCallback(fname="best")])
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["best.pth"]
    state = torch.load(tmp_path / "models" / "best.pth", weights_only=True)
    assert set(state) == {"weight", "bias"}


class _Spy(Callback):
    """After each epoch (and the checkpoint callback's turn): whether best.pth exists, and the weights."""

    order = 100

    def __init__(self, path):
        self.path, self.on_disk, self.weights = path, [], []

    def after_epoch(self):
        self.on_disk.append(self.path.is_file())
        self.weights.append(self.learn.model.weight.detach().clone())


def test_checkpoint_writes_every_best_when_epochs_are_slow_and_once_when_they_are_fast(tmp_path):
    """write_every=0 (every epoch slower than it): each new best is on disk as it comes. Fast epochs: the
    best is kept in memory and written once at the end; either way the fit ends on the best epoch's weights,
    and best.pth holds exactly them."""
    for write_every, expect_early in ((0.0, True), (3600.0, False)):
        folder = tmp_path / str(write_every)
        learn = _learner(folder)
        spy = _Spy(folder / "models" / "best.pth")
        save = AtomicSaveModelCallback(fname="best", monitor="valid_loss", write_every=write_every, verbose=False)
        with learn.no_bar(), learn.no_logging():
            learn.fit(3, 1e-2, cbs=[save, spy])
        assert spy.on_disk[0] is expect_early
        losses = [row[1] for row in learn.recorder.values]
        best = int(np.argmin(losses))
        state = torch.load(folder / "models" / "best.pth", weights_only=True)
        assert torch.equal(state["weight"], spy.weights[best]) and torch.equal(learn.model.weight, spy.weights[best])
        assert sorted(p.name for p in (folder / "models").iterdir()) == ["best.pth"]


def test_an_interrupted_fit_flushes_its_best_epoch(tmp_path):
    """A KeyboardInterrupt reaches no fastai callback; training's way out calls ``flush``."""

    class Interrupt(Callback):
        order = 100

        def after_epoch(self):
            if self.epoch == 1:
                raise KeyboardInterrupt

    learn = _learner(tmp_path)
    spy = _Spy(tmp_path / "models" / "best.pth")
    save = AtomicSaveModelCallback(fname="best", monitor="valid_loss", write_every=3600.0, verbose=False)
    with learn.no_bar(), learn.no_logging(), pytest.raises(KeyboardInterrupt):
        learn.fit(5, 1e-2, cbs=[save, spy, Interrupt()])
    assert not (tmp_path / "models" / "best.pth").exists()
    save.flush()
    losses = [row[1] for row in learn.recorder.values]
    assert len(losses) == 2  # stopped after its second epoch
    state = torch.load(tmp_path / "models" / "best.pth", weights_only=True)
    assert torch.equal(state["weight"], spy.weights[int(np.argmin(losses))])
    save.flush()  # nothing left to write: no error, the file stays
    assert (tmp_path / "models" / "best.pth").is_file()


def _weights_after(tmp_path, cbs) -> torch.Tensor:
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(3, 0.5, cbs=cbs)
    return torch.cat([p.detach().flatten() for p in learn.model.parameters()])


def test_lookahead_ends_on_its_average_and_changes_the_path(tmp_path):
    plain = _weights_after(tmp_path, [])
    no_pull = _weights_after(tmp_path, [Lookahead(every=2, decay=0.0)])
    assert torch.allclose(no_pull, plain, atol=1e-6)  # lerp by 1 is a copy, to rounding: plain SGD
    cb = Lookahead(every=2, decay=0.9)
    averaged = _weights_after(tmp_path, [cb])
    assert not torch.allclose(averaged, plain, atol=1e-4)
    assert torch.equal(averaged, torch.cat([t.flatten() for t in cb.average]))


def test_triangle_schedule_rises_from_a_fifth_then_falls_to_seven_percent():
    sched = triangle_schedule(np.array([1.0, 64.0]))
    np.testing.assert_allclose(sched(0.0), [0.2, 12.8])
    np.testing.assert_allclose(sched(0.23), [1.0, 64.0])
    np.testing.assert_allclose(sched(0.23 / 2), [0.6, 38.4])
    np.testing.assert_allclose(sched(1.0), [0.07, 4.48])


def test_fit_triangle_drives_the_optimizer_and_a_plateau_still_scales_it(tmp_path):
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        fit_triangle(learn, 4, 0.1, cbs=[ReduceLROnPlateau(**NEVER_IMPROVES)])
    lrs = np.array(learn.recorder.lrs)
    per_epoch = len(lrs) // 4
    assert lrs[0] == pytest.approx(0.02)
    assert lrs[: 2 * per_epoch].max() == pytest.approx(0.1, rel=0.05)  # the peak, at 23% of training
    # the plateau after epoch 2 divides what the schedule sets by 10
    expected = np.array([triangle_schedule(0.1)(i / len(lrs)) for i in range(len(lrs))])
    np.testing.assert_allclose(lrs[: 2 * per_epoch], expected[: 2 * per_epoch], rtol=1e-6)
    np.testing.assert_allclose(lrs[2 * per_epoch: 3 * per_epoch], expected[2 * per_epoch: 3 * per_epoch] / 10, rtol=1e-6)


class _Journal(Callback):
    """Writes down every event it handles, with the phase it saw."""

    def __init__(self, journal: list, tag: str):
        self.journal, self.tag = journal, tag

    def _note(self, event: str) -> None:
        self.journal.append((self.tag, event, self.training if hasattr(self.learn, "training") else None))

    def before_fit(self): self._note("before_fit")
    def before_epoch(self): self._note("before_epoch")
    def before_batch(self): self._note("before_batch")
    def after_loss(self): self._note("after_loss")
    def after_batch(self): self._note("after_batch")
    def after_epoch(self): self._note("after_epoch")
    def after_fit(self): self._note("after_fit")


class _TrainOnlyJournal(_Journal):
    run_valid = False
    order = -5  # called before the others: order must be kept


class _SkipsItsFirstFit(Callback):
    """Turns itself off for the rest of each fit; fastai turns it on again at ``after_fit``, which this
    callback has no handler for."""

    def __init__(self, journal: list, tag: str):
        self.journal, self.tag = journal, tag

    def before_fit(self):
        self.journal.append((self.tag, "before_fit", None))

    def before_epoch(self):
        self.journal.append((self.tag, "before_epoch", None))
        self.run = False


def _journal_of_a_fit(tmp_path, fast: bool) -> tuple[list, Learner]:
    journal: list = []
    learn = _learner(tmp_path)
    learn.add_cbs([_Journal(journal, "all"), _TrainOnlyJournal(journal, "train"), _SkipsItsFirstFit(journal, "skip")])
    undo = fast_event_dispatch(learn) if fast else None
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-2, cbs=[Lookahead()])  # a callback added for one fit: the cached lists follow it
        learn.fit(1, 1e-2)
    if undo:
        undo()
    return journal, learn


def test_fast_event_dispatch_calls_what_fastai_calls_in_the_same_order(tmp_path):
    plain, _ = _journal_of_a_fit(tmp_path, fast=False)
    fast, learn = _journal_of_a_fit(tmp_path, fast=True)
    assert fast == plain
    assert ("train", "after_loss", False) not in fast and ("all", "after_loss", False) in fast  # run_valid
    skipper = [event for tag, event, _ in fast if tag == "skip"]
    assert skipper == ["before_fit", "before_epoch"] * 2  # off for the rest of each fit, on again for the next
    assert "_call_one" not in learn.__dict__  # taken off: the class's own again


def test_fast_event_dispatch_skips_callbacks_without_a_handler(tmp_path, monkeypatch):
    calls = []
    real = Callback.__call__
    monkeypatch.setattr(Callback, "__call__", lambda cb, name: (calls.append((type(cb).__name__, name)), real(cb, name))[1])
    for fast in (False, True):
        calls.clear()
        _journal_of_a_fit(tmp_path, fast=fast)
        counted = len(calls)
        if not fast:
            plain_calls = counted
    assert counted < plain_calls / 2
    assert ("Lookahead", "after_batch") in calls and ("Lookahead", "before_batch") not in calls


def test_plateau_after_the_last_epoch_and_early_stop_messages(tmp_path, capsys):
    """No plateau line after the last epoch, where a smaller lr would change nothing; early stopping names the
    best epoch counted from 1, as the epoch lines do."""
    from birdcls.callbacks import EarlyStopping

    learn = _learner(tmp_path)
    plateau = ReduceLROnPlateau(**NEVER_IMPROVES)
    with learn.no_bar(), learn.no_logging():
        learn.fit(3, 1e-2, cbs=[plateau])
    out = capsys.readouterr().out
    assert [epoch for epoch, _ in plateau.reductions] == [1] and "epoch 2:" in out and "epoch 3:" not in out
    learn = _learner(tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit(5, 1e-2, cbs=[EarlyStopping(min_delta=1e9, patience=2)])
    assert "valid_loss has not improved since epoch 1: early stopping" in capsys.readouterr().out
    assert len(learn.recorder.values) == 3  # epoch 1 best; 2 and 3 without improvement


def _bn_learner(tmp_path, cbs):
    """A body (Linear + BatchNorm) and a head, on data far from the BatchNorm's starting statistics (0 and 1)."""
    set_seed(0)
    x = torch.randn(64, 4) * 3 + 5
    y = (x[:, 0] > 5).long()
    dls = DataLoaders.from_dsets(TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]), bs=8)
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2))
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), path=tmp_path, cbs=cbs)
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-2)
    return learn.model[0][1]


def test_the_bodys_batchnorm_keeps_its_statistics_and_trains_its_weights(tmp_path):
    """What the head learned on stays what the body gives it: the running statistics do not move toward the
    new data, and the BatchNorm layer's own weights still train."""
    kept = _bn_learner(tmp_path, [KeepBodyNormStats()])
    assert torch.equal(kept.running_mean, torch.zeros(4)) and torch.equal(kept.running_var, torch.ones(4))
    assert int(kept.num_batches_tracked) == 0
    assert not torch.equal(kept.weight.detach(), torch.ones(4))
    moved = _bn_learner(tmp_path, [])  # fastai's way: train mode, the statistics drift to the data's
    assert int(moved.num_batches_tracked) == 12 and float(moved.running_mean.abs().max()) > 1


def test_keeping_the_bodys_statistics_refuses_a_model_without_a_body(tmp_path):
    """Only a (body, head) model has a body to keep: anything else is said, not silently left training."""
    from birdcls.errors import BirdclsError

    learn = _learner(tmp_path)
    with pytest.raises(BirdclsError, match="keep_bn_stats needs a model built as .body, head.*Linear"):
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-2, cbs=[KeepBodyNormStats()])
