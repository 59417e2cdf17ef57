"""Commands refuse, in one line and before any work, to write over what they did not write: a photo or a model
under --csv, a run's own report, a folder of the user's files, a training image under --report. A resumed
run goes on as it was set up. File-system errors on a path the user gave are one line too."""

import hashlib
import json
from pathlib import Path

from test_cli import _assert_one_line_error
from typer.testing import CliRunner

from birdcls.cli import app

from fixtures import make_split_dataset

runner = CliRunner()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_predict_csv_replaces_only_a_csv_that_predict_wrote(trained_run, tiny_data, tmp_path):
    model = trained_run.run_dir / "model.onnx"
    photo = next((tiny_data / "test" / "jay").iterdir())
    before = {p: _digest(p) for p in (photo, model)}
    for target in (photo, model):  # `--csv photo.jpg more/`: the option took the first photo
        _assert_one_line_error(runner.invoke(app, ["predict", str(model), "--csv", str(target), str(tiny_data / "val")]),
                               "is not a CSV that predict wrote")
    assert {p: _digest(p) for p in before} == before
    csv_path = tmp_path / "out.csv"
    for _ in range(2):  # its own CSV is replaced by the next run
        result = runner.invoke(app, ["predict", str(model), "--csv", str(csv_path), str(tiny_data / "val")])
        assert result.exit_code == 0, result.output
    assert csv_path.read_text().splitlines()[0] == "path,label,prob,label_2,prob_2,label_3,prob_3,skipped"


def test_predictions_to_csv_from_python_replaces_only_a_csv_that_predict_wrote(trained_run, tiny_data, tmp_path):
    import shutil

    import pytest

    from birdcls import load_model, predict
    from birdcls.errors import BirdclsError

    result = predict(load_model(trained_run.run_dir / "model.onnx"), [tiny_data / "val"])
    photo = shutil.copy(next((tiny_data / "test" / "jay").iterdir()), tmp_path / "photo.jpg")
    before = _digest(photo)
    with pytest.raises(BirdclsError, match="is not a CSV that predict wrote"):
        result.to_csv(photo)
    assert _digest(photo) == before
    result.to_csv(tmp_path / "rows.csv")
    result.to_csv(tmp_path / "rows.csv")  # its own CSV is replaced
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 1 + len(result.rows)


def test_export_replaces_an_earlier_export_and_nothing_else(trained_run, tmp_path, monkeypatch):
    """`-o notes.onnx` over a text file, a .safetensors export's sidecar over the user's own name.json, or a
    pickle this user's birdcls did not write: refused. Exporting again to the same names replaces the exports."""
    run = trained_run.run_dir
    notes, mine, pkl = tmp_path / "notes.onnx", tmp_path / "mine.json", tmp_path / "theirs.pkl"
    notes.write_text("my notes")
    mine.write_text('{"mine": 1}')
    pkl.write_bytes(b"not from birdcls")
    for dest, what in ((notes, "onnx export"), (tmp_path / "mine.safetensors", "sidecar .json"),
                       (pkl, "pkl export")):
        _assert_one_line_error(runner.invoke(app, ["export", str(run), "-o", str(dest)]),
                               f"{dest if what != 'sidecar .json' else mine} exists and is not a birdcls {what}")
    assert notes.read_text() == "my notes" and mine.read_text() == '{"mine": 1}' and not (tmp_path / "mine.safetensors").exists()
    for name in ("m.onnx", "m.safetensors", "m.pkl"):
        for _ in range(2):
            result = runner.invoke(app, ["export", str(run), "-o", str(tmp_path / name)])
            assert result.exit_code == 0, result.output
    # the run's own model.onnx is this model's ONNX export: copied, not traced again
    assert (tmp_path / "m.onnx").read_bytes() == (run / "model.onnx").read_bytes()
    (tmp_path / "placeholder.onnx").write_bytes(b"")  # mktemp's empty file: nothing to lose
    assert runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "placeholder.onnx")]).exit_code == 0
    (tmp_path / "metrics.json").write_text((run / "metrics.json").read_text())  # has arch and classes too
    _assert_one_line_error(runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "metrics.safetensors")]),
                           "metrics.json exists and is not a birdcls sidecar .json")
    monkeypatch.setenv("BIRDCLS_HOME", str(tmp_path / "another-machine"))  # m.pkl is in no trust list there
    result = runner.invoke(app, ["export", str(run), "--trust", "-o", str(tmp_path / "m.pkl")])
    assert result.exit_code == 0, result.output  # still recognised as a birdcls export, by its bytes


def test_an_older_runs_float_input_onnx_is_exported_again_not_copied(trained_run, tmp_path):
    """Runs from before the uint8 graph kept a float-input model.onnx with the same metadata: `export --format
    onnx` traces the model again for them instead of handing that file out."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    run = tmp_path / "old-run"
    shutil.copytree(trained_run.run_dir, run)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "old",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    old = helper.make_model(graph)
    info = next(p.value for p in onnx.load(str(run / "model.onnx")).metadata_props if p.key == "birdcls")
    old.metadata_props.add(key="birdcls", value=info)
    onnx.save(old, str(run / "model.onnx"))  # newer than model.pkl, as training wrote it
    from birdcls.export import _onnx_export_input

    assert _onnx_export_input(run / "model.onnx") == TensorProto.FLOAT  # a birdcls export, of the old kind
    result = runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8


def test_evaluate_keeps_off_a_run_the_dataset_and_files(trained_run, tiny_data, tmp_path):
    run = trained_run.run_dir
    metrics = _digest(run / "metrics.json")
    _assert_one_line_error(runner.invoke(app, ["evaluate", str(run), str(tiny_data), "-o", str(run)]),
                           "is a training run")
    _assert_one_line_error(runner.invoke(app, ["evaluate", str(run), str(tiny_data), "-o", str(tiny_data / "test")]),
                           "inside the dataset")
    (tmp_path / "afile").write_text("x")
    _assert_one_line_error(runner.invoke(app, ["evaluate", str(run), str(tiny_data), "-o", str(tmp_path / "afile")]),
                           "is a file")
    assert _digest(run / "metrics.json") == metrics and (tmp_path / "afile").read_text() == "x"
    assert not list((tiny_data / "test").glob("*.json"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "predictions.csv").write_text("my own results\n")
    _assert_one_line_error(runner.invoke(app, ["evaluate", str(run), str(tiny_data), "-o", str(mine)]),
                           "holds predictions.csv that evaluate did not write")
    assert [p.name for p in mine.iterdir()] == ["predictions.csv"]
    for _ in range(2):  # a folder holding evaluate's own report is replaced
        result = runner.invoke(app, ["evaluate", str(run), str(tiny_data), "-o", str(tmp_path / "report")])
        assert result.exit_code == 0, result.output


def test_split_overwrite_refuses_to_take_the_users_files_with_the_old_split(tmp_path):
    """--overwrite swaps in a whole new folder: notes or photos the user put beside train/ val/ test/ went with
    the old split."""
    from fixtures import make_class_folders

    raw = make_class_folders(tmp_path / "raw", per_class=8)
    out = tmp_path / "out"
    assert runner.invoke(app, ["split", str(raw), str(out)]).exit_code == 0
    (out / "leakage_pairs.png").write_bytes(b"a report split --check wrote")
    assert runner.invoke(app, ["split", str(raw), str(out), "--overwrite", "--seed", "2"]).exit_code == 0
    (out / "NOTES.md").write_text("where the photos came from")
    (out / "extra_test_photos").mkdir()
    before = {p: _digest(p) for p in out.rglob("*") if p.is_file()}
    _assert_one_line_error(runner.invoke(app, ["split", str(raw), str(out), "--overwrite"]),
                           "also holds what split did not write (NOTES.md, extra_test_photos/): move that out")
    assert {p: _digest(p) for p in out.rglob("*") if p.is_file()} == before


def test_an_unwritable_output_is_one_line_not_a_traceback(trained_run, tiny_data):
    result = runner.invoke(app, ["evaluate", str(trained_run.run_dir), str(tiny_data), "-o", "/proc/birdcls-report"])
    _assert_one_line_error(result, "/proc/birdcls-report")


def test_datasets_overwrite_replaces_only_a_dataset(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _assert_one_line_error(runner.invoke(app, ["datasets", "get", "digits", str(mine), "--overwrite"]),
                           "not a dataset that birdcls wrote")
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    _assert_one_line_error(runner.invoke(app, ["datasets", "get", "digits", str(tmp_path / "afile")]), "is a file")


def test_a_resumed_run_goes_on_as_it_was_set_up(trained_run, tiny_data, tmp_path):
    run = trained_run.run_dir
    config = _digest(run / "config.yaml")
    assert json.loads((run / "state.json").read_text())["classes"] == ["cardinal", "jay", "parrot"]
    base = ["train", str(tiny_data), "--out", str(run), "--resume"]
    _assert_one_line_error(runner.invoke(app, [*base, "--overwrite"]), "pass one of them")
    _assert_one_line_error(runner.invoke(app, [*base, "--size", "64"]), "as it was set up (size=32)")
    _assert_one_line_error(runner.invoke(app, [*base, "--recipe", "demo"]), "drop --recipe")
    other = make_split_dataset(tmp_path / "other", classes={"owl": (90, 90, 90), "jay": (30, 60, 200)})
    _assert_one_line_error(runner.invoke(app, ["train", str(other), "--out", str(run), "--resume"]),
                           "it trained on classes cardinal, jay, parrot")
    assert _digest(run / "config.yaml") == config


def test_nothing_to_train_from_scratch_names_the_flag_and_makes_no_folder(tiny_data, tmp_path):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "rz"),
                                 "--scratch", "--epochs-head", "3", "--epochs", "0"])
    _assert_one_line_error(result, "from scratch", "--epochs N")
    assert not (tmp_path / "rz").exists()


def test_an_int8_check_on_other_classes_is_refused(trained_run, tmp_path):
    other = make_split_dataset(tmp_path / "other", classes={"owl": (90, 90, 90), "jay": (30, 60, 200)})
    result = runner.invoke(app, ["export", str(trained_run.run_dir), "-o", str(tmp_path / "m.int8.onnx"),
                                 "--data", str(other)])
    _assert_one_line_error(result, "classes the model does not know (owl)")
    assert not (tmp_path / "m.int8.onnx").exists()


def test_split_check_report_is_a_png_outside_the_splits(tiny_data, tmp_path):
    image = next((tiny_data / "train" / "jay").iterdir())
    before = _digest(image)
    _assert_one_line_error(runner.invoke(app, ["split", "--check", str(tiny_data), "--report", str(image)]),
                           "ending in .png")
    inside = tiny_data / "train" / "jay" / "pairs.png"
    _assert_one_line_error(runner.invoke(app, ["split", "--check", str(tiny_data), "--report", str(inside)]),
                           "inside the dataset's splits")
    assert _digest(image) == before and not inside.exists()
    ok = runner.invoke(app, ["split", "--check", str(tiny_data), "--report", str(tmp_path / "pairs.png")])
    assert ok.exit_code == 0, ok.output
