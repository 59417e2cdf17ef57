"""The fast data path: the cached tensor store, tensor DataLoaders, the head on cached features, fallbacks."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birdcls.data.tensors import (
    CacheRefused,
    TensorSplit,
    body_features,
    cache_dir,
    decode_cached,
    tensor_dataloaders,
)
from birdcls.fast import head_split
from birdcls.learn import train
from birdcls.predict import load_image

from conftest import FAST
from fixtures import make_split_dataset


def _images(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def test_store_holds_the_prediction_preprocessing_and_is_reused(tiny_data: Path):
    paths = _images(tiny_data / "train")
    store = decode_cached(paths, 40)
    assert store.shape == (len(paths), 40, 40, 3) and store.dtype == np.uint8
    for i in (0, len(paths) // 2, len(paths) - 1):  # the same pixels prediction will see
        assert np.array_equal(store[i], load_image(paths[i], 40))
    files = list(cache_dir().glob(f"*-{len(paths)}x40x3.npy"))
    assert len(files) == 1
    before = files[0].stat()
    os.utime(files[0], ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))
    again = decode_cached(paths, 40)
    after = files[0].stat()
    assert after.st_ino == before.st_ino  # not decoded again (a rebuild renames a new file into place)
    assert after.st_mtime_ns > before.st_mtime_ns - 10**9  # but marked as just used, for prune_cache
    assert np.array_equal(np.asarray(again), np.asarray(store))


def test_the_stores_used_longest_ago_are_pruned_beyond_the_limit(tmp_path, monkeypatch):
    from birdcls.data.tensors import prune_cache

    monkeypatch.setenv("BIRDCLS_HOME", str(tmp_path))
    cache_dir().mkdir(parents=True)
    now = time.time()
    for name, age_days, size in (("new", 0, 400), ("mid", 1, 300), ("old", 2, 300), ("oldest", 3, 200)):
        (cache_dir() / f"{name}.npy").write_bytes(bytes(size))
        os.utime(cache_dir() / f"{name}.npy", (now - age_days * 86400, now - age_days * 86400))
    (cache_dir() / "checks.json").write_text("{}")  # not a store: never touched
    # 1,000 bytes kept: new + mid (700) fit, old would make 1,000 and fits too, oldest does not
    assert prune_cache(1000 / 1e9) == (1, 200)
    assert sorted(p.name for p in cache_dir().iterdir()) == ["checks.json", "mid.npy", "new.npy", "old.npy"]
    # a store in use stays whatever its age; the others go, oldest first, down to the limit
    assert prune_cache(500 / 1e9, in_use=[cache_dir() / "old.npy"]) == (1, 300)
    assert sorted(p.name for p in cache_dir().glob("*.npy")) == ["new.npy", "old.npy"]
    assert prune_cache(0.0) == (2, 700) and not list(cache_dir().glob("*.npy"))


def test_store_is_rebuilt_when_a_file_changes(tmp_path: Path):
    data = make_split_dataset(tmp_path / "d", counts=(3, 1, 1))
    paths = _images(data / "train")
    first = np.array(decode_cached(paths, 24))
    Image.new("RGB", (30, 30), (255, 255, 255)).save(paths[0])
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    second = decode_cached(paths, 24)
    assert second[0].min() == 255 and not np.array_equal(first[0], second[0])
    assert np.array_equal(first[1:], second[1:])


def test_store_refuses_what_does_not_fit(tiny_data: Path):
    with pytest.raises(CacheRefused, match="over cache_max_gb"):
        decode_cached(_images(tiny_data / "train"), 64, max_gb=1e-6)


def test_tensor_dataloaders_cut_whole_batches(tiny_data: Path):
    from fastai.data.transforms import IntToFloatTensor

    paths = _images(tiny_data / "train")
    x = torch.from_numpy(np.array(decode_cached(paths, 32)))
    y = torch.arange(len(paths)) % 3
    dls = tensor_dataloaders(TensorSplit(x, y, 0), TensorSplit(x[:5], y[:5], 1), bs=8, device=torch.device("cpu"),
                             after_batch=[IntToFloatTensor()], seed=0)
    batches = list(dls.train)
    assert len(batches) == len(paths) // 8  # a short last batch is dropped when training
    xb, yb = batches[0]
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and float(xb.max()) <= 1.0
    assert xb.is_contiguous(memory_format=torch.channels_last)
    seen = torch.cat([b[1] for b in batches])
    assert len(seen) == 8 * len(batches)
    vx, vy = next(iter(dls.valid))
    assert torch.equal(vy, y[:5]) and torch.allclose(vx, x[:5].permute(0, 3, 1, 2).float() / 255)


def test_tensor_dataloaders_shuffle_each_epoch_from_the_seed():
    """Every training epoch is a new permutation (each image at most once, only the short last batch left out),
    the same permutations again for the same seed; validation keeps the files' order."""
    n, bs = 50, 8
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()
    y = torch.arange(n)

    def epochs(seed: int, count: int = 3):
        dls = tensor_dataloaders(TensorSplit(x, y, 0), TensorSplit(x[:20], y[:20], 1), bs=bs,
                                 device=torch.device("cpu"), seed=seed)
        return [torch.cat([b[1] for b in dls.train]).tolist() for _ in range(count)], dls

    orders, dls = epochs(0)
    for order in orders:
        assert len(order) == n // bs * bs and len(set(order)) == len(order)
    assert len({tuple(o) for o in orders}) == 3 and orders[0] != sorted(orders[0])
    assert epochs(0)[0] == orders and epochs(1)[0] != orders
    assert torch.cat([b[1] for b in dls.valid]).tolist() == list(range(20))
    xb, yb = next(iter(dls.train))
    assert xb[:, 0, 0, 0].tolist() == yb.tolist()  # images and labels cut by the same indices


def test_cached_features_are_what_the_body_and_pool_compute(trained_run, tiny_data: Path):
    learn = trained_run.learner
    body, pool, rest = head_split(learn.model.cpu())  # on a GPU machine the run left it on the GPU
    x = torch.from_numpy(np.array(decode_cached(_images(tiny_data / "val"), 32)))
    info = learn.birdcls_info
    mean, std = (torch.tensor(info[k]).view(1, 3, 1, 1) for k in ("mean", "std"))

    def prepare(b):
        return (b.float() / 255 - mean) / std

    feats = body_features(body, x, 5, torch.device("cpu"), prepare, pool)
    learn.model.eval()
    with torch.no_grad():
        whole = learn.model(prepare(x.permute(0, 3, 1, 2)))
        assert torch.allclose(rest.eval()(feats), whole, atol=1e-4)  # head(features) == the full network
    assert feats.requires_grad is False and not feats.is_inference()


def test_head_split_only_for_fastai_body_and_head():
    from torch import nn

    assert head_split(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())) is None
    assert head_split(nn.Linear(3, 2)) is None


def test_train_uses_the_store_and_features(tmp_path: Path, tiny_data: Path, capsys):
    result = train(tiny_data, tmp_path / "run", **{**FAST, "progress": "lines"})
    out = capsys.readouterr().out
    assert "body features of 48 images computed once" in out
    assert result.metrics["data_path"] == "tensor store"
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "best.pth").is_file() and not (ckpt / "best_head.pth").exists()
    state = torch.load(ckpt / "best.pth", weights_only=True)
    assert set(state) == set(result.learner.model.state_dict())  # the whole model, not just the head


def test_exported_learner_predicts_from_files_after_the_fast_path(trained_run, tiny_data: Path):
    """The Learner trained on tensors is exported with its file-based DataLoaders: learn.predict works."""
    from fastai.learner import load_learner

    learn = load_learner(trained_run.run_dir / "model.pkl")
    image = _images(tiny_data / "test")[0]
    label, _, probs = learn.predict(image)
    assert label in trained_run.learner.birdcls_info["classes"] and abs(float(probs.sum()) - 1) < 1e-5


def test_too_big_for_the_cache_falls_back_with_one_line(tmp_path: Path, tiny_data: Path, capsys):
    """The limit holds for the train and val stores together, which the run holds in memory at once: here
    each fits under it alone (36 and 12 images of 32x32x3 bytes), both do not."""
    limit_gb = 40 * 32 * 32 * 3 / 1e9
    result = train(tiny_data, tmp_path / "run", **{**FAST, "progress": "lines"}, cache_max_gb=limit_gb)
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if "fast data path off" in line]
    assert len(notices) == 1 and "cache_max_gb" in notices[0] and "per-image pipeline" in notices[0]
    assert result.metrics["data_path"] == "fastai per-image"
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0


def test_fewer_training_images_than_a_batch_still_train_on_the_per_image_path(tmp_path: Path, tiny_data: Path):
    """fastai drops a short last training batch: with 36 images and bs 64 that was every batch (a nan loss
    and an untrained model, exit 0). The lone short batch is kept, as on the tensor path."""
    import csv

    train(tiny_data, tmp_path / "run", **{**FAST, "bs": 64, "epochs": 0}, fast_data=False)
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert rows and all(float(row["train_loss"]) > 0 for row in rows)  # nan compares False


def test_plain_paths_still_train(tmp_path: Path, tiny_data: Path):
    plain = train(tiny_data, tmp_path / "plain", **FAST, fast_data=False, channels_last=False)
    assert plain.metrics["data_path"] == "fastai per-image"
    nofeat = train(tiny_data, tmp_path / "nofeat", **FAST, cache_features=False)
    rows = (tmp_path / "nofeat" / "history.csv").read_text()
    assert "head" in rows and nofeat.metrics["data_path"] == "tensor store"


def test_epochs_auto_keeps_a_pretrained_body_frozen(tmp_path: Path, tiny_data: Path, capsys):
    settings = {k: v for k, v in FAST.items() if k != "epochs"}
    result = train(tiny_data, tmp_path / "run", **{**settings, "progress": "lines"}, device="cpu")
    out = capsys.readouterr().out
    assert "epochs auto -> 0: the head trains on the frozen body's features" in out
    assert "runs the whole network backwards too, on a CPU" in out
    assert result.metrics["epochs_run"] == {"head": 1}
    assert "epochs: 0 " in (tmp_path / "run" / "config.yaml").read_text()  # the resolved value is saved
    scratch = train(tiny_data, tmp_path / "scratch", **{**settings, "epochs_head": 0}, pretrained=False, device="cpu")
    assert scratch.config.epochs == 10  # no frozen body to lean on: auto trains


def test_run_folder_predicts_through_its_onnx_on_cpu(trained_run, tiny_data: Path):
    from birdcls import load_model, predict

    images = _images(tiny_data / "test")
    assert (trained_run.run_dir / "model.onnx").is_file()
    assert load_model(trained_run.run_dir, device="cpu").path.suffix == ".onnx"  # int8 when kept (test_quantize)
    fast = load_model(trained_run.run_dir / "model.onnx")
    torch_side = load_model(trained_run.run_dir, device="cpu", backend="torch")
    assert torch_side.path.suffix == ".pkl"
    a, b = predict(fast, images), predict(torch_side, images)
    assert [r["label"] for r in a.rows] == [r["label"] for r in b.rows]
    assert np.allclose(a.probs, b.probs, atol=1e-4)


def test_a_model_onnx_cannot_express_keeps_the_pkl(tmp_path: Path, tiny_data: Path, capsys, monkeypatch):
    """The exporter's failure (here: an opset no exporter has) leaves a working run and one line."""
    import importlib

    export_module = importlib.import_module("birdcls.export")  # the module; birdcls.export is the function

    real = export_module.export_onnx

    def unsupported(model, info, dest):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(export_module, "export_onnx", unsupported)
    result = train(tiny_data, tmp_path / "run", **{**FAST, "export_onnx": True, "progress": "lines"})
    monkeypatch.setattr(export_module, "export_onnx", real)
    out = capsys.readouterr().out
    assert "model.onnx not written (RuntimeError: Exporting the operator 'aten::fancy'" in out
    assert not (tmp_path / "run" / "model.onnx").exists() and (tmp_path / "run" / "model.pkl").is_file()
    assert result.metrics["n_test"] == 12


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_batches_wait_on_nothing_from_the_device(tiny_data: Path, monkeypatch, mixed_precision: bool):
    """On a GPU every copy to the host, and every Python list made into a device tensor, waits for the queued
    work to finish: the host can then no longer run ahead of the device. None may happen per training batch
    (fastai's Recorder copies each loss to the host; the batches' indices used to go over one list a time).
    With mixed_precision, fastai's bf16 autocast callback is attached as a GPU run attaches it (on this CPU its
    autocast is off, but its per-batch steps run)."""
    from fastai.callback.core import Callback
    from fastai.data.transforms import IntToFloatTensor
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat

    from birdcls.callbacks import LossOnDevice
    from birdcls.models.small import create_small_model

    paths = _images(tiny_data / "train")
    x = torch.from_numpy(np.array(decode_cached(paths, 32)))
    y = torch.arange(len(paths)) % 3
    dls = tensor_dataloaders(TensorSplit(x, y, 0), TensorSplit(x[:4], y[:4], 1), bs=2, device=torch.device("cpu"),
                             after_batch=[IntToFloatTensor()], seed=0)
    learn = Learner(dls, create_small_model("cifar_small", 3), loss_func=CrossEntropyLossFlat(), cbs=[LossOnDevice()])
    if mixed_precision:
        import fastai.callback.fp16  # noqa: F401 - adds Learner.to_bf16

        learn.to_bf16()  # what build_learner does on a GPU with bf16
    counting, waits = [False], []

    class Window(Callback):  # counts from the start of the training loop to its end, batches fetched included
        order = -1000

        def before_train(self):
            counting[0] = True

        def after_train(self):
            counting[0] = False

    def counted(name, original):
        def call(*args, **kwargs):
            if counting[0]:
                waits.append(name)
            return original(*args, **kwargs)
        return call

    for name in ("cpu", "item", "tolist", "numpy", "__float__", "__format__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counted("torch.tensor", torch.tensor))
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        learn.fit(2, 1e-3, cbs=[Window()])
    batches = len(learn.recorder.losses)
    assert batches == 2 * (len(paths) // 2) and batches >= 20
    assert len(waits) <= 3 * 2, waits  # a few per epoch, none per batch
    assert all(t.device.type == "cpu" for t in learn.recorder.losses)
    assert float(learn.recorder.losses[-1]) > 0
    assert any(type(cb).__name__ == "MixedPrecision" for cb in learn.cbs) == mixed_precision


def test_training_removes_stores_beyond_cache_keep_gb_with_a_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("BIRDCLS_HOME", str(tmp_path / "home"))
    data = make_split_dataset(tmp_path / "d", counts=(3, 1, 1))
    settings = {**FAST, "progress": "lines", "cache_keep_gb": 0.0}
    train(data, tmp_path / "a", **settings)
    first = set(cache_dir().glob("*.npy"))
    assert len(first) == 2 and "cached image store" not in capsys.readouterr().out  # train + val stores, in use
    changed = next((data / "train").rglob("*.jpg"))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new train store; val's is reused
    train(data, tmp_path / "b", **settings)
    assert "removed 1 cached image store(s) used longest ago" in capsys.readouterr().out
    now = set(cache_dir().glob("*.npy"))
    assert len(now) == 2 and len(now & first) == 1


def test_freeze_epochs_auto_skips_fine_tunes_warm_up_after_the_head_phase():
    """fine_tune's frozen epoch warms up a new head; after the head phase the head is trained already, and on
    a CPU that epoch costs as much as an unfrozen one. Without a head phase fastai's 1 stays."""
    from birdcls.config import resolve_config
    from birdcls.learn import _resolve_auto

    def freeze_epochs(**overrides) -> int:
        return _resolve_auto(resolve_config(overrides=overrides), "cpu", lambda _msg: None).freeze_epochs

    assert resolve_config().freeze_epochs is None  # auto until the run resolves it
    assert freeze_epochs(epochs=2) == 0
    assert freeze_epochs(epochs=2, epochs_head=0) == 1
    assert freeze_epochs(epochs=2, freeze_epochs=3) == 3
    assert freeze_epochs(epochs=2, freeze_epochs="auto", epochs_head=0) == 1
