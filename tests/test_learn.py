"""Training writes a complete run folder; bad datasets and run folders fail before any work."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from birdcls._io import folder_lock
from birdcls.config import TrainConfig
from birdcls.errors import BirdclsError
from birdcls.learn import train

from conftest import FAST
from fixtures import make_split_dataset


def test_run_folder_is_complete(trained_run):
    run = trained_run.run_dir
    for name in ("metrics.json", "history.csv", "curves.png", "confusion_matrix.png", "top_losses.png",
                 "config.yaml", "model.pkl", "predictions.csv", "checkpoints/best.pth"):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.partial*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 12
    assert metrics["classes"] == ["cardinal", "jay", "parrot"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["train_seconds"] > 0
    assert set(metrics["per_class"]["jay"]) == {"precision", "recall", "f1", "support"}
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == 12
    assert yaml.safe_load((run / "config.yaml").read_text())["size"] == 32


def test_the_summary_names_the_score_the_files_and_a_missing_int8_model(trained_run):
    import dataclasses

    m = {**trained_run.metrics, "most_confused": []}  # a perfect score: no line of mistakes
    lines = dataclasses.replace(trained_run, metrics=m).summary()
    assert lines[0] == f"test accuracy {m['test_accuracy']:.4f} on 12 images; trained in {m['train_seconds']:.1f}s"
    assert lines[1].startswith(f"run folder: {trained_run.run_dir} (metrics.json, history.csv, curves.png, ")
    assert "model.onnx" in lines[1] and "model.int8.onnx" not in lines[1] and len(lines) == 2
    dropped = {"kept": False, "images": 40, "max_accuracy_drop": 0.01, "int8_accuracy": 0.9, "fp32_accuracy": 0.95,
               "agreement": 0.9}
    lost = dataclasses.replace(trained_run, metrics={**m, "int8": dropped}).summary()
    assert repr(trained_run) == (f"TrainResult({str(trained_run.run_dir)!r}, tf_efficientnet_lite0 at 32 px, test accuracy "
                                 f"{m['test_accuracy']:.4f} on 12 images, {m['train_seconds']:.1f}s)")
    assert lost[2] == ("model.int8.onnx not written: it lost more than 1 point(s) of accuracy on val/ (0.9000 against "
                       "0.9500 for float32); predict uses model.onnx")
    mistakes = [{"actual": "jay", "predicted": "cardinal", "count": 3}, {"actual": "parrot", "predicted": "jay", "count": 1}]
    confused = dataclasses.replace(trained_run, metrics={**m, "most_confused": mistakes}).summary()
    assert confused[1] == "most confused (actual -> predicted): jay -> cardinal (3), parrot -> jay (1)"
    assert confused[2].startswith("run folder: ")


def test_history_has_both_phases(trained_run):
    rows = list(csv.DictReader((trained_run.run_dir / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head", "fine_tune"]
    assert [r["frozen"] for r in rows] == ["True", "False"]
    for row in rows:
        assert float(row["train_loss"]) > 0 and float(row["valid_loss"]) > 0 and 0 <= float(row["accuracy"]) <= 1


def test_learns_the_tiny_task(tmp_path):
    """A small accuracy check: a few epochs take three colour classes well above chance (1/3)."""
    data = make_split_dataset(tmp_path / "d", counts=(30, 5, 5))
    result = train(data, tmp_path / "run", size=48, bs=16, epochs_head=4, epochs=1, freeze_epochs=0, lr=1e-2,
                   augment=False, seed=1, progress="none")
    assert result.metrics["test_accuracy"] >= 0.7


def test_default_recipe_accuracy_on_cpu(tmp_path):
    """The guard rail on the fast paths: the default recipe, no flags (224 px, cached features, epochs auto),
    on a CPU must classify a held-out test split of photos-like images well."""
    data = make_split_dataset(tmp_path / "d", counts=(20, 6, 10))
    result = train(data, tmp_path / "run", progress="none", device="cpu")
    assert result.config.size == 224 and result.metrics["data_path"] == "tensor store"
    assert result.metrics["epochs_run"]["head"] >= 1 and "fine_tune" not in result.metrics["epochs_run"]
    assert result.metrics["test_accuracy"] >= 0.9


def test_unreadable_files_are_skipped_and_counted(tmp_path, capsys):
    data = make_split_dataset(tmp_path / "d", counts=(6, 2, 2))
    (data / "train" / "jay" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (data / "train" / "jay" / "notes.txt").write_text("not an image")
    (data / "test" / "parrot" / "empty.png").write_bytes(b"")
    for image in (data / "val" / "cardinal").iterdir():  # and a class val/ has only an unreadable file of
        image.write_bytes(image.read_bytes()[:100])
    result = train(data, tmp_path / "run", **{**FAST, "progress": "lines"})
    counts = result.metrics["data"]
    assert counts["train"] == {"images": 18, "unreadable": 1, "non_images": 1}
    assert counts["test"]["unreadable"] == 1
    assert counts["val"] == {"images": 4, "unreadable": 2, "non_images": 0}
    assert result.metrics["n_test"] == 6
    shown = capsys.readouterr()
    assert "train: 18 images, 1 unreadable skipped, 1 non-image file skipped" in shown.out
    assert f"{data / 'val'} has no images of cardinal: the validation scores that pick the best epoch leave them out" \
        in shown.out
    # the image store's decoding and the body's feature pass show their progress on stderr, as predict's does
    assert "features (train): 18/18 images" in shown.err and "features (val): 4/4 images" in shown.err
    train(data, tmp_path / "quiet", **{**FAST, "progress": "none"})  # quiet progress, not quiet warnings
    quiet = capsys.readouterr()
    assert "train: 18 images, 1 unreadable skipped, 1 non-image file skipped" in quiet.out
    assert f"{data / 'val'} has no images of cardinal" in quiet.out
    assert "head epoch" not in quiet.out and quiet.err == ""


def test_existing_run_needs_overwrite(trained_run, tiny_data):
    before = (trained_run.run_dir / "metrics.json").read_bytes()
    with pytest.raises(BirdclsError, match="already exists: pass --overwrite"):
        train(tiny_data, trained_run.run_dir, **FAST)
    assert (trained_run.run_dir / "metrics.json").read_bytes() == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_data):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(BirdclsError, match="not a birdcls run folder"):
        train(tiny_data, tmp_path / "precious", overwrite=True, **FAST)
    assert [p.name for p in (tmp_path / "precious").iterdir()] == ["thesis.tex"]  # not even a lock file
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "years of work"


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and p.name != ".birdcls.lock"}


def _run_with_the_users_files(trained_run, tmp_path: Path) -> Path:
    """A copy of a trained run holding the user's notes and export, and a report of evaluate's."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run, ignore=shutil.ignore_patterns(".birdcls.lock"))
    (run / "NOTES.txt").write_text("what I tried")
    (run / "deploy.onnx").write_bytes((run / "model.onnx").read_bytes())
    (run / "eval-other").mkdir()
    (run / "eval-other" / "metrics.json").write_text(json.dumps({"evaluated_on": "other", "test_accuracy": 1.0}))
    # a copy of a run kept inside it: its metrics.json names what it was tested on, as a report's does
    shutil.copytree(trained_run.run_dir, run / "backup_v1", ignore=shutil.ignore_patterns(".birdcls.lock"))
    (run / "report.tmp").write_text("the user's own temp file")
    (run / "results_v1").mkdir()  # the run's figures, kept by the user
    shutil.copyfile(trained_run.run_dir / "metrics.json", run / "results_v1" / "metrics.json")
    return run


def test_an_overwrite_that_cannot_start_leaves_the_earlier_run_whole(trained_run, tiny_data, tmp_path):
    """Weights that do not load are found after the run folder is checked: the earlier run, deleted first, had
    been lost to a retrain that never started. The learner is built before anything is removed."""
    run = _run_with_the_users_files(trained_run, tmp_path)
    before = _digests(run)
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(BirdclsError, match="junk.pth"):
        train(tiny_data, run, overwrite=True, **{**FAST, "weights": str(tmp_path / "junk.pth")})
    assert _digests(run) == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".birdcls.lock"]


def test_overwrite_replaces_the_run_and_keeps_the_users_files(trained_run, tiny_data, tmp_path, capsys):
    run = _run_with_the_users_files(trained_run, tmp_path)
    old_model = (run / "model.pkl").read_bytes()
    train(tiny_data, run, overwrite=True, **{**FAST, "seed": 7})
    assert (run / "model.pkl").read_bytes() != old_model and (run / "metrics.json").is_file()
    assert (run / "NOTES.txt").read_text() == "what I tried" and (run / "deploy.onnx").is_file()
    assert (run / "backup_v1" / "model.pkl").read_bytes() == old_model and (run / "report.tmp").is_file()
    assert not (run / "eval-other").exists()  # a report of the model replaced
    assert not any(p.name.endswith(".partial") for p in run.iterdir())
    assert (run / "results_v1" / "metrics.json").read_bytes() == (trained_run.run_dir / "metrics.json").read_bytes()
    assert (f"note: --overwrite replaced the run in {run} and kept 5 file(s) that train did not write: "
            "NOTES.txt, backup_v1, deploy.onnx, report.tmp, results_v1") in capsys.readouterr().out


def test_ctrl_c_while_a_run_sets_up_leaves_the_folder_as_it_was(trained_run, tiny_data, tmp_path, monkeypatch):
    """Not "resume with --resume": an overwrite's folder still holds the earlier run, and a new run's folder is
    not left behind."""
    import birdcls.learn as learn_module
    from birdcls.errors import TrainingInterrupted

    run = _run_with_the_users_files(trained_run, tmp_path)
    before = _digests(run)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(learn_module, "build_learner", interrupted)
    for out, how in ((run, {"overwrite": True}), (tmp_path / "new", {}), (tmp_path / "new2", {"overwrite": True})):
        with pytest.raises(TrainingInterrupted, match=f"interrupted before the run started, so {out} is as it was; "
                                                      "run the same command again"):
            train(tiny_data, out, **how, **FAST)
    assert _digests(run) == before
    assert not (tmp_path / "new").exists() and not (tmp_path / "new2").exists()


def test_ctrl_c_without_checkpoints_says_the_run_cannot_go_on(tiny_data, tmp_path, monkeypatch):
    """With save_best=false nothing is written to resume from: the message says so instead of
    "no epoch finished ... resume with --resume"."""
    import birdcls.learn as learn_module
    from birdcls.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(learn_module, "_finish_run", interrupted)  # after every epoch ran
    with pytest.raises(TrainingInterrupted, match="with save_best=false no checkpoint is written, so .* cannot go on "
                                                  "from here: train it again with --overwrite"):
        train(tiny_data, tmp_path / "run", **{**FAST, "epochs": 0, "save_best": False})


def test_an_interrupted_phase_counts_in_the_resumed_runs_train_seconds(tiny_data, tmp_path, monkeypatch):
    """state.json was written only when a phase finished: 8 head epochs before Ctrl-C, then a resume, had
    reported the resumed part's 1.6 s as the run's training time."""
    import time

    import birdcls.fast
    from birdcls.errors import TrainingInterrupted

    trained = birdcls.fast.train_head_on_features

    def slow_then_interrupted(*args, **kwargs):
        trained(*args, **kwargs)
        time.sleep(2.0)
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(birdcls.fast, "train_head_on_features", slow_then_interrupted)
        with pytest.raises(TrainingInterrupted):
            train(tiny_data, run, **{**FAST, "epochs": 0})
    state = json.loads((run / "state.json").read_text())
    assert state["completed_phases"] == [] and state["train_seconds"] >= 2.0
    resumed = train(tiny_data, run, resume=True)
    assert resumed.metrics["train_seconds"] >= state["train_seconds"]


def _dataset(tmp_path: Path) -> Path:
    return make_split_dataset(tmp_path / "d", counts=(3, 1, 1))


@pytest.mark.parametrize("damage, message", [
    (lambda d: shutil.rmtree(d / "test"), "no test/ folder"),
    (lambda d: [shutil.rmtree(d / s / c) for s in ("train", "val", "test") for c in ("jay", "parrot")],
     "a classifier needs at least 2 class folders"),
    (lambda d: shutil.rmtree(d / "test" / "jay"), "class\\(es\\) jay have no images in .*test"),
    (lambda d: (d / "val" / "owl").mkdir() or Image.new("RGB", (9, 9)).save(d / "val" / "owl" / "a.jpg"),
     "owl with no images in train"),
    (lambda d: [p.unlink() for p in (d / "val").rglob("*.jpg")], "holds no readable images"),
])
def test_bad_datasets_fail_before_training(tmp_path, damage, message):
    data = _dataset(tmp_path)
    damage(data)
    with pytest.raises(BirdclsError, match=message):
        train(data, tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()


def test_missing_dataset_and_run_inside_dataset(tmp_path):
    with pytest.raises(BirdclsError, match="does not exist"):
        train(tmp_path / "nope", tmp_path / "run", **FAST)
    data = _dataset(tmp_path)
    with pytest.raises(BirdclsError, match="inside the dataset"):
        train(data, data / "runs" / "x", **FAST)


def test_bad_config_fails_before_touching_the_run(tmp_path, tiny_data):
    with pytest.raises(BirdclsError, match="'size' must be"):
        train(tiny_data, tmp_path / "run", size=0)
    with pytest.raises(BirdclsError, match="'lr' must be"):  # a TrainConfig built in Python gets the same checks
        train(tiny_data, tmp_path / "run", config=TrainConfig(lr=-1.0, epochs_head=1))
    with pytest.raises(BirdclsError, match=r"'device' must be auto, cpu, cuda \(or cuda:N\) or mps, got 'gpu'"):
        train(tiny_data, tmp_path / "run", config=TrainConfig(device="gpu"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", [{}, {"overwrite": True}, {"resume": True}])
def test_a_run_folder_in_use_is_refused_even_with_overwrite_or_resume(trained_run, tiny_data, how):
    """A second train into a folder another train holds would mix its files with the first one's, or delete
    them from under it (--overwrite): refused, and the folder left as it was."""
    before = (trained_run.run_dir / "metrics.json").read_bytes()
    with folder_lock(trained_run.run_dir, "`birdcls train`"):
        with pytest.raises(BirdclsError, match="in use by another `birdcls train`"):
            train(tiny_data, trained_run.run_dir, **{**FAST, **how})
    assert (trained_run.run_dir / "metrics.json").read_bytes() == before


def test_resume_after_the_head_phase(tmp_path, tiny_data, capsys):
    """A run whose state says the head phase is done resumes with fine_tune only, from best.pth."""
    run = tmp_path / "run"
    first = train(tiny_data, run, **{**FAST, "epochs": 0})
    assert json.loads((run / "state.json").read_text())["completed_phases"] == ["head"]
    resumed = train(tiny_data, run, resume=True, epochs=1, progress="lines")
    assert (f"resuming {run}: head finished and skipped; fine_tune runs all its epochs again, from the best "
            "checkpoint") in capsys.readouterr().out
    phases = [r["phase"] for r in csv.DictReader((run / "history.csv").open())]
    assert phases == ["head", "fine_tune"]
    assert resumed.metrics["train_seconds"] > first.metrics["train_seconds"]
    assert resumed.config.size == 32  # the run's own config.yaml was used


def test_resume_refuses_a_finished_run_with_nothing_left_and_leaves_its_config(tmp_path, tiny_data):
    """--resume --epochs 3 --set lr=0.01 on a finished run had trained nothing and rewritten config.yaml as
    if it had."""
    run = tmp_path / "run"
    train(tiny_data, run, **FAST)
    before = (run / "config.yaml").read_text()
    with pytest.raises(BirdclsError, match=r"has finished its phases \(head, fine_tune\), so there is nothing to "
                                           r"resume.*train a new run \(--overwrite, or another --out\)"):
        train(tiny_data, run, resume=True, epochs=3, lr=0.01)
    assert (run / "config.yaml").read_text() == before


def test_resume_refuses_when_no_checkpoint_holds_the_finished_phase(tmp_path, tiny_data):
    """save_best=false writes no checkpoint: fine-tuning after a finished head phase would have started from an
    untrained head."""
    run = tmp_path / "run"
    train(tiny_data, run, **{**FAST, "epochs": 0, "save_best": False})
    with pytest.raises(BirdclsError, match=r"no checkpoint holds the weights of its finished phases \(head\).*"
                                           r"--overwrite"):
        train(tiny_data, run, resume=True, epochs=1)


def test_resume_from_python_with_a_whole_config_keeps_the_runs_network(tmp_path, tiny_data):
    from birdcls.config import resolve_config

    run = tmp_path / "run"
    train(tiny_data, run, **{**FAST, "epochs": 0})
    before = (run / "config.yaml").read_text()
    other = resolve_config(overrides={**{k: v for k, v in FAST.items() if k != "progress"}, "size": 48})
    with pytest.raises(BirdclsError, match=r"continues .* as it was set up \(size=32\)"):
        train(tiny_data, run, resume=True, config=other)
    assert (run / "config.yaml").read_text() == before


def test_a_weights_file_named_from_one_folder_resumes_from_another(tmp_path, tiny_data, monkeypatch):
    """The weights path is saved absolute: --resume (and --recipe RUN/config.yaml) from another folder found
    no 'r18.pth', and naming the file from there counted as a changed setting."""
    import torch
    import torchvision

    from birdcls.learn import _resumed_config

    (tmp_path / "w").mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "w" / "r18.pth")
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "w")
    train(tiny_data, run, **{**FAST, "epochs": 0}, arch="resnet18", weights="r18.pth")
    assert yaml.safe_load((run / "config.yaml").read_text())["weights"] == str(tmp_path / "w" / "r18.pth")
    monkeypatch.chdir(tmp_path)
    assert _resumed_config(run, None, {"weights": "w/r18.pth"}).weights == "w/r18.pth"  # the same file
    resumed = train(tiny_data, run, resume=True, epochs=1)
    assert [r["phase"] for r in csv.DictReader((run / "history.csv").open())] == ["head", "fine_tune"]
    assert resumed.config.weights == str(tmp_path / "w" / "r18.pth")


def test_scratch_training_without_pretrained_weights(tmp_path, tiny_data, capsys):
    result = train(tiny_data, tmp_path / "run", **{**FAST, "pretrained": False, "progress": "lines"})
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["scratch"]
    assert result.metrics["n_test"] == 12
    # FAST asks for a head epoch, which training from scratch has no frozen body for: said, not dropped silently
    assert "epochs_head does not apply from scratch" in capsys.readouterr().out


@pytest.mark.parametrize("arch, size", [("cifar_small", 32), ("fmnist_cnn", 28)])
def test_report_models_train_through_the_same_wrapper(tmp_path, tiny_data, arch, size):
    """Small CNNs use the same train/evaluate/export/predict path; greyscale where the model wants it."""
    from birdcls.export import export
    from birdcls.predict import load_model, predict

    result = train(tiny_data, tmp_path / "run", arch=arch, epochs=1, bs=8, progress="none")
    assert result.config.pretrained is False and result.config.size == size
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["scratch"]
    onnx = export(tmp_path / "run", "onnx", tmp_path / "m.onnx")
    info = load_model(onnx).info
    assert info.size == size and info.in_chans == (1 if arch.startswith("fmnist") else 3)
    assert len(predict(load_model(onnx), [tiny_data / "test"]).rows) == 12


def _recipes():
    from birdcls.config import list_recipes

    return sorted(list_recipes())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", _recipes())
def test_every_shipped_recipe_smoke_runs(tmp_path, tiny_data, recipe):
    """Each recipe (the reports' experiments and the fast ones), capped at one epoch per phase."""
    # 64 px keeps the 224/256 px recipes quick; fixed-size small CNNs take their own size regardless.
    result = train(tiny_data, tmp_path / "run", recipe=recipe, epoch_cap=1, progress="none", bs=8, size=64)
    assert result.metrics["n_test"] == 12
    for name in ("metrics.json", "history.csv", "curves.png", "confusion_matrix.png", "model.pkl"):
        assert (tmp_path / "run" / name).is_file()


def test_recipe_settings_reach_the_learner(tmp_path, tiny_data):
    """sgd/constant/raw255/subsets/shuffle from a recipe end up in the fastai Learner."""
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"arch": "cifar_small", "opt": "sgd", "momentum": 0.5, "schedule": "constant",
                                      "normalize": "raw255", "train_subset": 10, "valid_subset": 4, "shuffle": False,
                                      "epochs": 2, "lr": 0.01}))
    result = train(tiny_data, tmp_path / "run", recipe=recipe, bs=4, progress="none")
    learn = result.learner
    assert len(learn.dls.train_ds) == 10 and len(learn.dls.valid_ds) == 4
    assert learn.dls.train.shuffle is False
    assert learn.opt.hypers[0]["mom"] == 0.5 and "sqr_mom" not in learn.opt.hypers[0]  # SGD, not Adam
    lrs = set(round(x, 8) for x in learn.recorder.lrs)
    assert lrs == {0.01}  # constant: no schedule
    info = learn.birdcls_info
    assert info["mean"] == [0.0, 0.0, 0.0] and info["std"] == [pytest.approx(1 / 255)] * 3


def test_speedrun_recipe_fits_its_whitening_from_training_images(tmp_path, tiny_data, capsys):
    import torch

    result = train(tiny_data, tmp_path / "run", recipe="cifar10-speedrun", epochs=2, bs=8, progress="lines")
    assert "patch whitening fitted on 8 training images" in capsys.readouterr().out
    whiten = result.learner.model[0]
    assert bool(whiten.fitted) and whiten.weight.abs().sum() > 0
    assert whiten.bias.abs().sum() > 0  # its bias trains (whiten_bias_epochs: null)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.pth", map_location="cpu", weights_only=True)
    assert torch.equal(saved["0.weight"].cpu(), whiten.weight.cpu())
    assert result.metrics["n_test"] == 12
    # BatchNorm biases in their own parameter group at 64x the lr; momentum held at 0.85; BN scales fixed at 1
    learn = result.learner
    assert len(learn.opt.hypers) == 2
    first, biases = (h["lr"] for h in learn.opt.hypers)
    assert biases == pytest.approx(64 * first)
    assert [h["mom"] for h in learn.opt.hypers] == [0.85, 0.85]  # no schedule touches it (triangle: lr only)
    norms = [m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert any(m.bias.abs().sum() > 0 for m in norms)


def test_one_cycle_keeps_momentum_fixed_when_told(tmp_path, tiny_data):
    result = train(tiny_data, tmp_path / "run", recipe="cifar10-speedrun", epochs=1, bs=8, schedule="one_cycle",
                   export_int8=False, progress="none")
    assert set(result.learner.recorder.hps["mom"]) == {0.85}  # fastai would cycle 0.95-0.85-0.95


def test_speedrun_airbench_options_reach_the_optimizer(tmp_path, tiny_data):
    import torch

    from birdcls.optim import NesterovSGD

    result = train(tiny_data, tmp_path / "run", recipe="cifar10-speedrun", epochs=2, bs=8, nesterov=True,
                   schedule="triangle", whiten_bias_epochs=0, bn_bias_wd=True, lr=0.5, wd=0.01,
                   export_int8=False, progress="none")
    learn = result.learner
    assert isinstance(learn.opt, NesterovSGD)
    # the BatchNorm biases' 64x lr is offset in their decoupled decay: the same lr * wd per step as the weights
    assert [h["wd"] for h in learn.opt.hypers] == pytest.approx([0.01, 0.01 / 64])
    assert not any(s.get("do_wd") is False for s in learn.opt.state.values())
    # the recorder follows the last group (BatchNorm biases, lr 32): the schedule starts at a fifth
    lrs = learn.recorder.lrs
    assert lrs[0] == pytest.approx(0.2 * 32) and max(lrs) == pytest.approx(32, rel=0.1)
    assert lrs[-1] < 0.3 * max(lrs)  # and falls (to 0.07 of the peak at the very end)
    whiten = learn.model[0]
    assert torch.equal(whiten.bias.detach().cpu(), torch.zeros_like(whiten.bias.cpu()))  # frozen from epoch 0
    # the recipe's label smoothing through PyTorch's fused loss: the same values as fastai's own version
    from fastai.losses import LabelSmoothingCrossEntropyFlat

    torch.manual_seed(0)
    logits = torch.randn(32, 10) * 3
    targets = torch.where(torch.arange(32) % 2 == 0, logits.argmax(1), torch.randint(0, 10, (32,)))
    theirs = LabelSmoothingCrossEntropyFlat(eps=0.2)(logits, targets)
    assert float(learn.loss_func(logits, targets)) == pytest.approx(float(theirs), rel=1e-6)
    assert float(theirs) != pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-2)
    assert learn.loss_func.decodes(logits).tolist() == logits.argmax(1).tolist()


@pytest.mark.parametrize("shift", [False, True], ids=["flip", "flip_shift"])
def test_tta_model_averages_each_image_with_its_mirror_in_every_format(tmp_path, tiny_data, shift):
    import numpy as np
    import torch
    import torch.nn.functional as F

    from birdcls.export import export
    from birdcls.predict import load_image, load_model, predict

    result = train(tiny_data, tmp_path / "run", recipe="cifar10-speedrun", epochs=1, bs=8, tta=True,
                   tta_shift=shift, export_int8=False, progress="none")
    run = result.run_dir
    assert result.metrics["tta"] is True and result.metrics["tta_shift"] is shift
    images = sorted((tiny_data / "test").rglob("*.jpg"))
    info = result.learner.birdcls_info
    assert info["tta"] == ("flip_shift" if shift else "flip")
    # by hand: the bare network on each image and on its mirror image, logits averaged
    x = torch.from_numpy(np.stack([load_image(p, info["size"]) for p in images])).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(info["mean"]).view(1, 3, 1, 1)) / torch.tensor(info["std"]).view(1, 3, 1, 1)
    net = result.learner.model.cpu().eval()
    with torch.no_grad():
        plain, mirrored = net(x), net(x.flip(3))
        expected = (plain + mirrored) / 2
        if shift:  # and the pair moved one pixel up-left and down-right (reflected borders)
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            views = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
            moved = sum((net(v) + net(v.flip(3))) / 2 for v in views) / 2
            assert not torch.allclose(moved, expected, atol=1e-4)
            expected = (expected + moved) / 2
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the mirror changes the network's answer
    expected = torch.softmax(expected, 1).numpy()
    safetensors = export(run, "safetensors", tmp_path / "m.safetensors")
    for path in (run / "model.pkl", run / "model.onnx", safetensors):
        probs = predict(load_model(path, device="cpu"), images, bs=4).probs
        np.testing.assert_allclose(probs, expected, atol=1e-4, err_msg=str(path))


def test_tta_needs_flips(tmp_path, tiny_data):
    with pytest.raises(BirdclsError, match="set tta=false, or flip=true"):
        train(tiny_data, tmp_path / "run", recipe="cifar10-speedrun", tta=True, flip=False)
    assert not (tmp_path / "run").exists()


def test_test_images_removed_during_the_run_are_noted(tmp_path, monkeypatch, capsys):
    """The test figures can only cover the files still there; the run says so instead of a silent 10 of 12."""
    import sys

    learn_module = sys.modules["birdcls.learn"]
    data = make_split_dataset(tmp_path / "d")
    real = learn_module._run_phases

    def removing_two_test_images(*args, **kwargs):
        for path in sorted((data / "test" / "jay").iterdir())[:2]:
            path.unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(learn_module, "_run_phases", removing_two_test_images)
    result = train(data, tmp_path / "run", **{**FAST, "progress": "lines"})
    assert result.metrics["n_test"] == 10 and result.metrics["data"]["test"]["images"] == 12
    assert "test/ held 12 readable images when training began and 10 at the test" in capsys.readouterr().out


def test_build_learner_returns_a_learner_with_fastais_schedules(tiny_data, tmp_path):
    """In a fresh process (other tests import fastai's schedule module): the Learner build_learner returns can
    fit_one_cycle and fine_tune without the caller importing anything else of fastai."""
    import subprocess
    import sys

    code = ("import sys\nfrom birdcls.config import resolve_config\nfrom birdcls.learn import build_learner, scan_dataset\n"
            "learn = build_learner(scan_dataset(sys.argv[1]), resolve_config(overrides={'size': 32, 'bs': 8}), sys.argv[2])\n"
            "learn.fit_one_cycle(1, 1e-3)\nprint(len(learn.recorder.values), callable(learn.fine_tune))")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_data), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1].split() == ["1", "True"]  # after fastai's own progress table


def test_config_as_a_dict_is_overrides_and_anything_else_is_refused(tiny_data, tmp_path):
    with pytest.raises(BirdclsError, match="did you mean 'epochs'"):
        train(tiny_data, tmp_path / "run", config={"epochz": 3})
    with pytest.raises(BirdclsError, match="config must be a TrainConfig or a dict of its fields, got int"):
        train(tiny_data, tmp_path / "run", config=3)
    assert not (tmp_path / "run").exists()


def test_a_dataset_scan_reads_as_its_counts_not_its_paths(tiny_data):
    from birdcls.learn import scan_dataset

    assert repr(scan_dataset(tiny_data)) == f"DatasetScan({str(tiny_data)!r}, 3 classes, images: train 36, val 12, test 12)"


@pytest.mark.parametrize("keep", [True, False])
def test_fine_tune_keeps_the_bodys_batchnorm_statistics_unless_told_not_to(tiny_data, tmp_path, keep):
    """The head learns on features the body computes with its pretrained statistics; fine_tune keeps them
    (keep_bn_stats, the default) so that those features stay what the head learned on. fastai's way
    (keep_bn_stats=false) moves them toward the new data's."""
    import torch
    from torch import nn

    from birdcls.config import resolve_config
    from birdcls.learn import build_learner, scan_dataset

    def body_stats(model) -> list:
        return [m.running_mean.detach().cpu().clone() for m in model[0].modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    pretrained = body_stats(build_learner(scan_dataset(tiny_data), resolve_config(overrides={"size": 32}),
                                          tmp_path / "fresh").model)
    result = train(tiny_data, tmp_path / "run", **{**FAST, "save_best": False, "keep_bn_stats": keep})
    tuned = body_stats(result.learner.model)
    assert len(tuned) == len(pretrained) > 10
    same = all(torch.equal(a, b) for a, b in zip(tuned, pretrained))
    assert same is keep
