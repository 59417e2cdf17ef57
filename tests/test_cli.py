"""Every command through the CLI: documented with an example, thin, and one-line errors with exit 2."""

import json

import pytest
from typer.testing import CliRunner

from birdcls.cli import app

from conftest import run_cli
from fixtures import make_class_folders

runner = CliRunner()
COMMANDS = ["scrape", "clean", "split", "train", "evaluate", "export", "predict", "demo", "recipes", "models"]


@pytest.mark.parametrize("command", [*COMMANDS, "datasets get", "datasets list"])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Example: birdcls " + command in " ".join(result.output.split())


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_split_then_train_then_evaluate_export_predict(tmp_path):
    raw = make_class_folders(tmp_path / "raw", per_class=12)
    result = runner.invoke(app, ["split", str(raw), str(tmp_path / "data"), "--seed", "3", "--ratio", "0.7", "0.15",
                                 "0.15"])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and (tmp_path / "data" / "split.json").is_file()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "--out", str(run), "--size", "32", "--bs", "8",
                                 "--epochs-head", "1", "--epochs", "1", "--set", "freeze_epochs=0",
                                 "--set", "lr=0.0042", "--progress", "lines"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.0042" in (run / "config.yaml").read_text()  # --set works for keys that also have a flag
    assert "head epoch 1/1" in result.output and "fine_tune epoch 1/1" in result.output
    assert "test accuracy" in result.output
    result = runner.invoke(app, ["evaluate", str(run), str(tmp_path / "data" / "test")])
    assert result.exit_code == 0, result.output
    assert (run / "eval-data-test" / "metrics.json").is_file()
    assert f"wrote the report to {run / 'eval-data-test'}" in result.output
    result = runner.invoke(app, ["export", str(run), "--format", "safetensors", "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "data" / "test"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 9
    on_host = json.loads(result.stdout)
    result = runner.invoke(app, ["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "data" / "test"),
                                 "--json", "--decode-on-device"])
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in json.loads(result.stdout)] == [r["label"] for r in on_host]
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "data" / "test"), "--decode-on-device"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 9, result.output  # the run's pkl
    _assert_one_line_error(runner.invoke(app, ["predict", str(run / "model.onnx"), str(tmp_path / "data" / "test"),
                                               "--decode-on-device"]), "needs a torch model")


def test_user_errors_are_one_line(tmp_path, trained_run, tiny_data):
    _assert_one_line_error(runner.invoke(app, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]),
                           "does not exist")
    _assert_one_line_error(runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "r"),
                                               "--arch", "resnet35"]), "unknown architecture")
    _assert_one_line_error(runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "r"),
                                               "--set", "epochz=3"]), "did you mean 'epochs'")
    _assert_one_line_error(runner.invoke(app, ["split", str(tmp_path / "nope"), str(tmp_path / "o")]),
                           "does not exist")
    _assert_one_line_error(runner.invoke(app, ["split", str(tmp_path), str(tmp_path / "o"), "--ratio", "0.5",
                                               "0.5", "0.5"]), "must sum to 1")
    _assert_one_line_error(runner.invoke(app, ["predict", str(tmp_path / "m.onnx"), str(tmp_path)]), "does not exist")
    for option, value in (("--bs", "0"), ("--top-k", "0")):  # refused before the model is looked for, let alone loaded
        _assert_one_line_error(runner.invoke(app, ["predict", str(tmp_path / "m.onnx"), str(tmp_path), option, value]),
                               f"{option}) must be a whole number 1 or more")
    onnx = trained_run.run_dir / "model.onnx"
    image = tmp_path  # the --csv check comes before any work
    (tmp_path / "a-folder").mkdir()
    _assert_one_line_error(runner.invoke(app, ["predict", str(onnx), str(image), "--csv", str(tmp_path / "a-folder")]),
                           "is a folder: give a file path")
    _assert_one_line_error(runner.invoke(app, ["predict", str(onnx), str(image), "--csv", "/proc/nope.csv"]),
                           "cannot write /proc/nope.csv")
    _assert_one_line_error(runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "tflite", "-o",
                                               str(tmp_path / "x.tflite")]), "unknown export format")


@pytest.mark.parametrize(("args", "fragment", "where"), [
    (["train"], "Missing argument 'data'", "birdcls train"),
    (["train", "d", "--bogus"], "No such option: --bogus", "birdcls train"),
    (["predict", "m.onnx", "x.jpg", "--top-k", "two"], "Invalid value for '--top-k'", "birdcls predict"),
    (["split", "raw", "data", "--progress"], "Option '--progress' requires an argument", "birdcls split"),
    (["datasets", "get", "cifar10"], "Missing argument 'dest'", "birdcls datasets get"),
    (["datasets", "fetch"], "No such command 'fetch'", "birdcls datasets"),
    (["trian"], "No such command 'trian'", "birdcls"),
])
def test_usage_errors_are_one_line_naming_the_help(args, fragment, where):
    """Click's own parse errors (wrong type, missing argument, unknown option), as a whole process shows them."""
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert result.stderr.strip().endswith(f"see '{where} --help'")


def test_a_group_alone_still_shows_its_help():
    for args in ([], ["datasets"]):
        result = run_cli(*args)
        assert "Usage: birdcls" in result.stdout + result.stderr and "Commands" in result.stdout + result.stderr


def test_a_folder_one_level_off_or_already_split_is_named_with_the_fix(tmp_path, trained_run):
    """Layouts students get wrong: a class's own folder, a dataset already split, an archive, Kaggle's
    capitalised Train/Test folders. Each gets the fix, not a false "holds no images"."""
    from fixtures import make_split_dataset

    data = make_split_dataset(tmp_path / "ds", counts=(2, 1, 1))
    (tmp_path / "photos.zip").write_bytes(b"PK")
    kaggle = make_split_dataset(tmp_path / "kaggle", counts=(2, 1, 1))
    (kaggle / "train").rename(kaggle / "Train")
    cls = data / "train" / "jay"
    _assert_one_line_error(runner.invoke(app, ["split", str(data), str(tmp_path / "again")]),
                           f"{data} is already split into train/, val/ and test/: train on it as it is")
    _assert_one_line_error(runner.invoke(app, ["split", str(tmp_path / "photos.zip"), str(tmp_path / "o")]),
                           "is a file, not a folder: unpack it first")
    for command in (["clean", str(cls), "--auto"], ["evaluate", str(trained_run.run_dir), str(cls)]):
        _assert_one_line_error(runner.invoke(app, command), f"{cls} holds images but no class folders: pass the "
                                                            f"folder above it ({cls.parent})")
    _assert_one_line_error(runner.invoke(app, ["train", str(kaggle), "--out", str(tmp_path / "r")]),
                           "has Train/ but split folder names are lower-case: rename Train/ to train/")
    assert not (tmp_path / "again").exists() and not (tmp_path / "r").exists()


def test_split_check_strict_fails_a_script_on_leakage(tmp_path):
    import shutil

    from fixtures import make_split_dataset

    data = make_split_dataset(tmp_path / "ds", counts=(3, 1, 1))
    assert runner.invoke(app, ["split", "--check", str(data), "--strict"]).exit_code == 0
    shutil.copyfile(data / "train" / "jay" / "train_000.jpg", data / "test" / "jay" / "copy.jpg")
    plain, strict = (runner.invoke(app, ["split", "--check", str(data), *flag]) for flag in ([], ["--strict"]))
    assert plain.exit_code == 0 and strict.exit_code == 1 and strict.stdout == plain.stdout
    assert "exact (same pixels): 1 pair;" in strict.stdout
    from PIL import Image

    runner.invoke(app, ["split", "--check", str(data), "--report", str(tmp_path / "pairs.png")])
    assert Image.open(tmp_path / "pairs.png").width < 600  # one pair's width, not four pairs' with three empty
    _assert_one_line_error(runner.invoke(app, ["split", str(data), str(tmp_path / "o"), "--strict"]),
                           "--strict goes with --check")


def test_train_refuses_unknown_arch_before_work(tmp_path, tiny_data):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "r"), "--arch", "resnet35"])
    _assert_one_line_error(result, "unknown architecture 'resnet35'")
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "r"), "--set", "bs=0"])
    _assert_one_line_error(result, "'bs' must be")
    assert not (tmp_path / "r").exists()


def test_train_weights_unavailable_offline(tmp_path, tiny_data, monkeypatch):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "r"), "--arch", "resnet34"])
    _assert_one_line_error(result, "--weights FILE")
    assert not (tmp_path / "r").exists()  # the same command can be run again once the weights are there
    (tmp_path / "here").mkdir()  # the same into the current folder, which stays (empty, as it was)
    monkeypatch.chdir(tmp_path / "here")
    result = runner.invoke(app, ["train", str(tiny_data), "--out", ".", "--arch", "resnet34"])
    _assert_one_line_error(result, "--weights FILE")
    assert (tmp_path / "here").is_dir() and not any((tmp_path / "here").iterdir())


def test_train_help_gives_the_defaults_the_config_has():
    from birdcls.config import TrainConfig

    text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    defaults = TrainConfig()
    for key in ("arch", "size", "bs", "epochs_head", "lr", "patience", "seed"):
        assert f"(default {getattr(defaults, key)})" in text or f"default {getattr(defaults, key)})" in text, key


def test_recipes_and_models_list():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0 and "demo" in result.output and "default" in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["dogs-vs-cats-fast"].rstrip().endswith(".") and "vs. cats" in lines["dogs-vs-cats-fast"]
    result = runner.invoke(app, ["models", "--all", "--filter", "lite0"])
    assert "tf_efficientnet_lite0  (offline weights)" in result.output
    none = runner.invoke(app, ["models", "--filter", "zzzz"])  # no bare header: a hint
    assert none.exit_code == 0 and none.stdout == "" and "no architecture name contains 'zzzz'" in none.stderr


def test_clean_settings_are_named_by_their_flags(tmp_path):
    for flag, value in (("--max-distance", "99"), ("--min-size", "0"), ("--dark", "300")):
        _assert_one_line_error(runner.invoke(app, ["clean", str(tmp_path), "--auto", flag, value]), flag, "e.g.")


def test_importing_birdcls_shortens_openmp_spinning_unless_the_user_set_it():
    import os
    import subprocess
    import sys

    code = "import os, birdcls; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout == "1000\n"
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "GOMP_SPINCOUNT": "5"}).stdout
    assert mine == "5\n"
    policy = "import os, birdcls; print(os.environ.get('GOMP_SPINCOUNT'))"  # it would override the policy
    assert subprocess.run([sys.executable, "-c", policy], capture_output=True, text=True,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout == "None\n"


def test_help_is_fast_and_lazy():
    """`birdcls --help` must not import torch or fastai (cold start)."""
    import subprocess
    import sys

    code = "import sys, birdcls.cli; print('torch' in sys.modules, 'fastai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    proc = run_cli("--help")
    assert proc.returncode == 0 and "train" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_leaves_the_best_checkpoint_and_resume_finishes(tmp_path, tiny_data, signame, code):
    """A real SIGINT (Ctrl-C) or SIGTERM (kill, timeout, a scheduler) to a training process: exit 130 or 143,
    best.pth on disk, no temp file left, the message says how to resume, and the resume finishes."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "birdcls", "train", str(tiny_data), "--out", str(run), "--size", "32", "--bs", "4",
            "--epochs-head", "200", "--epochs", "1", "--set", "early_stopping=false", "--progress", "lines"]
    # SIGINT back to its default in the child: a shell that starts the suite in the background ignores it,
    # and Python then never turns it into KeyboardInterrupt
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # fast epochs keep their best in memory (written every 30 s and at the end): the interrupt itself writes it
    deadline = time.time() + 240
    while not (run / "history.csv").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "resume with: birdcls train" in err and "--resume" in err
    assert "Traceback" not in err
    assert (run / "checkpoints" / "best.pth").is_file()
    assert not list(run.rglob("*.partial*"))
    if signame == "SIGTERM":  # the resume itself is the same after either signal: checked once, after SIGINT
        return
    resumed = run_cli("train", str(tiny_data), "--out", str(run), "--resume", "--epochs-head", "0",
                      "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["n_test"] == 12
    import csv

    rows = list(csv.DictReader((run / "history.csv").open()))
    assert rows and {r["phase"] for r in rows} == {"head (interrupted)", "fine_tune"}  # no epoch listed twice
    assert all(r["epoch"].isdigit() and r["n_epoch"].isdigit() for r in rows)  # 3, not 3.0, after the resume


def test_scrape_and_split_check_through_the_cli(tmp_path):
    from imageserver import ImageServer

    server = ImageServer()
    try:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"owl {server.url}/good/{i}.jpg\n" for i in range(8)) + f"owl {server.url}/404.jpg\n"
                        + "".join(f"kite {server.url}/good/{i}.jpg\n" for i in range(50, 58)))
        result = runner.invoke(app, ["scrape", "owl", "kite=black kite bird", "--engine", "urls", "--urls-file",
                                     str(urls), "--out", str(tmp_path / "raw"), "--per-class", "7", "--delay", "0",
                                     "--progress", "none"])
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "HTTP 404" not in result.output  # full before reaching the 404
    assert len(list((tmp_path / "raw" / "owl").iterdir())) == 7
    assert "img/s" not in result.output and "%|" not in result.output  # no tqdm bar with --progress none
    result = runner.invoke(app, ["split", str(tmp_path / "raw"), str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["split", "--check", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "exact (same pixels): 0 pairs" in result.output
    result = runner.invoke(app, ["split", str(tmp_path / "raw"), "-o", str(tmp_path / "data2"), "--progress", "none"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data2" / "split.json").read_text() == (tmp_path / "data" / "split.json").read_text()
    _assert_one_line_error(runner.invoke(app, ["split", str(tmp_path / "raw"), str(tmp_path / "x3"), "--out",
                                               str(tmp_path / "x4")]), "two output folders")
    assert not (tmp_path / "x3").exists() and not (tmp_path / "x4").exists()
    _assert_one_line_error(runner.invoke(app, ["split", str(tmp_path / "raw")]), "needs SRC and DST")
    _assert_one_line_error(runner.invoke(app, ["split", "--check", str(tmp_path / "data"), str(tmp_path / "x2")]),
                           "--check takes one split dataset, got a second folder")
    _assert_one_line_error(runner.invoke(app, ["scrape", "owl", "--engine", "urls", "--out", str(tmp_path / "r2")]),
                           "--urls-file")
    _assert_one_line_error(runner.invoke(app, ["scrape", "owl", "--engine", "altavista"]), "unknown engine")
    _assert_one_line_error(runner.invoke(app, ["scrape", "owl", "--progress", "loud"]), "progress must be one of")


def test_public_api_names_are_the_functions():
    """evaluate/export/predict share names with their modules: the package must keep the functions."""
    import birdcls
    import birdcls.evaluate  # noqa: F401 - importing the submodules must not rebind the names
    import birdcls.export  # noqa: F401
    import birdcls.predict  # noqa: F401

    for name in ("evaluate", "export", "predict", "load_model", "train", "split_dataset"):
        assert callable(getattr(birdcls, name)), name
    assert set(birdcls.__all__) >= {"train", "evaluate", "export", "load_model", "predict"}


def test_cli_reference_is_generated_from_help():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "gen_cli.py"
    spec = importlib.util.spec_from_file_location("gen_cli", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (path.parent / "cli.md").read_text() == gen.render(), "run: python docs/gen_cli.py"


def test_data_problems_are_reported_before_torch_and_fastai_are_imported(tmp_path):
    """Importing torch and fastai takes seconds to tens of seconds on a small machine: a dataset that cannot be
    trained on is refused before that."""
    import subprocess
    import sys

    from fixtures import make_split_dataset

    data = make_split_dataset(tmp_path / "d", counts=(3, 1, 1))
    for image in (data / "test" / "jay").iterdir():
        image.unlink()
    code = ("import sys\nfrom birdcls.errors import BirdclsError\nfrom birdcls.learn import train\n"
            f"try:\n    train({str(data)!r}, {str(tmp_path / 'run')!r}, progress='auto')\n"
            "except BirdclsError as exc:\n    print(exc)\n"
            "print(sorted(m for m in ('torch', 'fastai', 'timm') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "class(es) jay have no images" in out and out.strip().endswith("[]"), out
