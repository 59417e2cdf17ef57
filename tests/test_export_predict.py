"""Every export format loads (in a fresh process too) and predicts the same thing."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from birdcls.cli import app
from birdcls.errors import BirdclsError
from birdcls.export import export
from birdcls.predict import load_model, predict

from conftest import run_cli


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {fmt: export(trained_run.run_dir, fmt, out / f"model.{fmt}") for fmt in ("pkl", "safetensors", "onnx")}


def test_all_formats_agree(exports, tiny_data):
    results = {fmt: predict(load_model(path), [tiny_data / "test"], top_k=2) for fmt, path in exports.items()}
    labels = {fmt: [r["label"] for r in res.rows] for fmt, res in results.items()}
    assert labels["pkl"] == labels["safetensors"] == labels["onnx"]  # top-1 identical
    np.testing.assert_allclose(results["onnx"].probs, results["pkl"].probs, atol=1e-4)
    np.testing.assert_array_equal(results["safetensors"].probs, results["pkl"].probs)
    row = results["onnx"].rows[0]
    assert set(row) == {"path", "label", "prob", "top_k"} and len(row["top_k"]) == 2
    assert row["top_k"][0] == [row["label"], row["prob"]]


def test_a_sidecar_of_another_export_is_refused_not_believed(exports, tiny_data, tmp_path):
    """The same network with other class names beside it would have labelled every answer wrongly."""
    import shutil

    model = Path(shutil.copyfile(exports["safetensors"], tmp_path / "m.safetensors"))
    side = json.loads(exports["safetensors"].with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**side, "classes": ["crow", "dove", "wren"]}))
    with pytest.raises(BirdclsError, match=r"m\.json does not describe m\.safetensors \(its classes differ from the ones "
                                           r"saved inside the model\): it belongs to another export"):
        load_model(model)
    model.with_suffix(".json").write_text(json.dumps({**side, "versions": {"torch": "0.0"}}))  # not an answer's
    rows = predict(load_model(model), [tiny_data / "test" / "jay"]).rows
    assert rows == predict(load_model(exports["safetensors"]), [tiny_data / "test" / "jay"]).rows


def test_a_run_copied_without_its_files_times_still_predicts_from_its_onnx(trained_run, tmp_path):
    """Copies that do not keep times (scp -r, rsync without -t) can leave model.onnx older than model.pkl, which
    had passed it over for the pickle (and, on another machine, asked for --trust). The digest of the pickle
    that training records in it tells the run's own ONNX from a stale one."""
    import os
    import shutil

    import onnx

    run = Path(shutil.copytree(trained_run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(".birdcls.lock")))
    pkl_time = (run / "model.pkl").stat().st_mtime
    os.utime(run / "model.onnx", (pkl_time - 60, pkl_time - 60))
    assert load_model(run).path == run / "model.onnx"
    proto = onnx.load(str(run / "model.onnx"))
    meta = next(p for p in proto.metadata_props if p.key == "birdcls")
    meta.value = json.dumps({**json.loads(meta.value), "pkl_sha256": "0" * 64})  # another pickle's network
    onnx.save(proto, str(run / "model.onnx"))
    os.utime(run / "model.onnx", (pkl_time - 60, pkl_time - 60))
    assert load_model(run).path == run / "model.pkl"


def test_safetensors_sidecar_and_no_pickle(exports):
    side = json.loads(exports["safetensors"].with_suffix(".json").read_text())
    assert side["arch"] == "tf_efficientnet_lite0" and side["classes"] == ["cardinal", "jay", "parrot"]
    assert side["size"] == 32 and side["mean"] == [0.5, 0.5, 0.5]
    assert {"torch", "fastai", "timm"} <= set(side["versions"])
    assert not exports["safetensors"].read_bytes().startswith(b"\x80")  # a pickle would start with PROTO


def test_pkl_loads_with_fastai_in_a_fresh_process(exports, tiny_data):
    import subprocess
    import sys

    # birdcls made unimportable: the pickle must need fastai (and timm) only
    code = ("import sys; sys.modules['birdcls'] = None; from fastai.learner import load_learner; "
            "learn = load_learner(sys.argv[1]); print(learn.dls.vocab, learn.predict(sys.argv[2])[0])")
    image = next((tiny_data / "test" / "jay").iterdir())
    proc = subprocess.run([sys.executable, "-c", code, str(exports["pkl"]), str(image)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "['cardinal', 'jay', 'parrot']" in proc.stdout


def test_predict_from_onnx_in_a_fresh_process(exports, tiny_data, tmp_path):
    csv_path = tmp_path / "rows.csv"
    proc = run_cli("predict", str(exports["onnx"]), str(tiny_data / "test" / "jay"), "--json", "--top-k", "3",
                   "-o", str(csv_path))  # -o: --csv by its other name
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and all(len(r["top_k"]) == 3 for r in rows)
    in_process = predict(load_model(exports["onnx"]), [tiny_data / "test" / "jay"]).rows
    assert [r["label"] for r in rows] == [r["label"] for r in in_process]
    assert csv_path.read_text().splitlines()[0] == "path,label,prob,label_2,prob_2,label_3,prob_3,skipped"
    assert proc.stderr.strip().splitlines()[-1] == f"wrote 4 rows to {csv_path}"


def test_predict_csv_has_a_cell_per_answer_and_a_row_per_image(exports, tiny_data, tmp_path):
    """Each ranked label and probability in its own column, as a spreadsheet reads it; unreadable files get a
    row that names the reason instead of going missing."""
    import csv
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((tiny_data / "test" / "jay").iterdir())[:2]:
        shutil.copy(image, photos / image.name)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("not a picture")
    csv_path = tmp_path / "rows.csv"
    proc = run_cli("predict", str(exports["onnx"]), str(photos), "--json", "--top-k", "2", "--csv", str(csv_path))
    assert proc.returncode == 0, proc.stderr
    answers = {r["path"]: r for r in json.loads(proc.stdout)}
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "label", "prob", "label_2", "prob_2", "skipped"]
        rows = list(reader)
    assert [r["path"] for r in rows[:2]] == sorted(answers) and len(rows) == 4
    for row in rows[:2]:
        (label, prob), (label_2, prob_2) = answers[row["path"]]["top_k"]
        assert (row["label"], float(row["prob"]), row["label_2"], float(row["prob_2"]), row["skipped"]) == (
            label, prob, label_2, prob_2, "")
    skipped = {Path(r["path"]).name: r for r in rows[2:]}
    assert skipped["empty.jpg"]["skipped"] == "unreadable (empty file)"
    assert skipped["notes.jpg"]["skipped"].startswith("unreadable")
    assert all(r["label"] == r["prob"] == r["label_2"] == "" for r in skipped.values())
    assert proc.stderr.strip().splitlines()[-1] == f"wrote 2 rows and 2 skipped to {csv_path}"


def test_predict_csv_replaces_its_own_earlier_layouts_only(exports, tiny_data, tmp_path):
    """A CSV predict wrote, with another top-k or the earlier JSON-cell layout, is replaced; a CSV that merely
    looks alike is not."""
    result = predict(load_model(exports["onnx"]), [tiny_data / "test" / "jay"], top_k=1)
    for header in ("path,label,prob,top_k", "path,label,prob,label_2,prob_2,label_3,prob_3,skipped",
                   "path,label,prob,skipped"):
        target = tmp_path / "earlier.csv"
        target.write_text(header + "\nx.jpg,jay,0.9\n")
        result.to_csv(target)
        assert target.read_text().splitlines()[0] == "path,label,prob,skipped"
    for header in ("path,label,prob,notes,skipped", "path,label,prob,label_3,prob_3,skipped", "path,label,prob"):
        other = tmp_path / "other.csv"
        other.write_text(header + "\n")
        with pytest.raises(BirdclsError, match="is not a CSV that predict wrote"):
            result.to_csv(other)
        assert other.read_text() == header + "\n"


def test_foreign_pickle_needs_trust(exports, tmp_path):
    foreign = tmp_path / "from-a-stranger.pkl"
    data = exports["pkl"].read_bytes()
    foreign.write_bytes(data + b"\x00")  # not byte-identical to anything this user created
    with pytest.raises(BirdclsError, match="did not create.*--trust.*safetensors"):
        load_model(foreign)
    assert load_model(foreign, trust=True).classes == ["cardinal", "jay", "parrot"]


def test_corrupt_and_missing_models(tmp_path, exports):
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"garbage")
    with pytest.raises(BirdclsError, match="corrupt or not a birdcls export"):
        load_model(bad_onnx)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"garbage")
    bad_st.with_suffix(".json").write_text(exports["safetensors"].with_suffix(".json").read_text())
    with pytest.raises(BirdclsError, match="corrupt or not a birdcls export"):
        load_model(bad_st)
    import shutil

    alone = Path(shutil.copyfile(exports["safetensors"], tmp_path / "alone.safetensors"))
    assert load_model(alone).classes == ["cardinal", "jay", "parrot"]  # the metadata saved inside the file
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare.safetensors"  # weights and nothing else
    save_file(load_file(str(alone)), str(bare))
    with pytest.raises(BirdclsError, match="has no sidecar"):
        load_model(bare)
    with pytest.raises(BirdclsError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(BirdclsError, match="not a model file"):
        (tmp_path / "x.txt").write_text("x")
        load_model(tmp_path / "x.txt")
    with pytest.raises(BirdclsError, match="without model.pkl"):
        load_model(tmp_path)


def test_unreadable_images_are_skipped_not_fatal(exports, tmp_path, tiny_data):
    good = next((tiny_data / "test" / "jay").iterdir())
    (tmp_path / "bad.jpg").write_text("<html>not an image</html>")
    result = predict(load_model(exports["onnx"]), [good, tmp_path / "bad.jpg"])
    assert len(result.rows) == 1 and list(result.skipped) == [str(tmp_path / "bad.jpg")]


def test_bad_predict_inputs(exports, tmp_path):
    model = load_model(exports["onnx"])
    with pytest.raises(BirdclsError, match="does not exist"):
        predict(model, [tmp_path / "nope.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BirdclsError, match="no images found"):
        predict(model, [tmp_path / "empty"])
    with pytest.raises(BirdclsError, match="top-k"):
        predict(model, [tmp_path], top_k=0)
    for bad, match in (({"top_k": "3"}, r"top_k \(--top-k\) must be a whole number 1 or more, got '3'"),
                       ({"bs": 2.5}, r"bs \(--bs\) must be a whole number 1 or more \(or left out, for the default\), got 2.5"),
                       ({"workers": 0}, "workers must be")):
        with pytest.raises(BirdclsError, match=match):
            predict(model, [tmp_path], **bad)
    (tmp_path / "a.jpg").write_text("<html>not an image</html>")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(BirdclsError, match=r"none of the 2 image file\(s\) could be read \(.*a.jpg: unreadable"):
        predict(model, [tmp_path])


def test_api_mistakes_get_one_line_answers(exports, tiny_data):
    """What a notebook user gets wrong first: a path where a loaded model goes, one path instead of a list, a
    device name torch does not know, an unknown backend. And the objects say what they are."""
    image = next((tiny_data / "test" / "jay").iterdir())
    with pytest.raises(BirdclsError, match="predict\\(\\) takes a loaded model, got str .*: pass load_model\\(path\\)"):
        predict(str(exports["onnx"]), [image])
    model = load_model(exports["onnx"])
    one = predict(model, image)  # a single path is one image, not a list of characters
    assert [r["path"] for r in one.rows] == [str(image)]
    assert repr(one).startswith("PredictionResult(1 rows, 0 skipped, first: ") and str(image) in repr(one)
    assert repr(model) == f"Predictor('{exports['onnx']}', tf_efficientnet_lite0, 3 classes, 32 px, onnxruntime, CPU)"
    assert repr(load_model(exports["safetensors"], device="cpu")).endswith("32 px, cpu, float32)")
    for device, message in [("gpu", "'device' must be auto, cpu, cuda \\(or cuda:N\\) or mps, got 'gpu'"),
                            ("cuda:x", "got 'cuda:x'"), ("mps", "no Apple GPU \\(MPS\\) is available")]:
        with pytest.raises(BirdclsError, match=message):
            load_model(exports["safetensors"], device=device)
    with pytest.raises(BirdclsError, match="got 'cuda:'"):
        load_model(exports["onnx"], device="cuda:")  # checked for an ONNX file too, though it runs on the CPU
    with pytest.raises(BirdclsError, match="backend must be auto .* or torch, got 'tensorrt'"):
        load_model(exports["safetensors"], backend="tensorrt")
    proc = run_cli("predict", str(exports["safetensors"]), str(image), "--device", "gpu")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "got 'gpu'" in proc.stderr


def test_export_errors_and_atomicity(trained_run, tmp_path):
    with pytest.raises(BirdclsError, match="unknown export format 'tflite'"):
        export(trained_run.run_dir, "tflite", tmp_path / "m.tflite")
    with pytest.raises(BirdclsError, match="should end in .onnx"):
        export(trained_run.run_dir, "onnx", tmp_path / "m.bin")
    with pytest.raises(BirdclsError, match="does not exist"):
        export(tmp_path / "no-run", "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_any_format_on_a_labelled_folder(exports, tiny_data, tmp_path):
    from birdcls.evaluate import evaluate

    report = evaluate(exports["safetensors"], tiny_data / "val", out=tmp_path / "eval")
    assert report["n_test"] == 12
    cm = np.array(report["confusion_matrix"])  # 3 classes: at most 6 kinds of mistake, all listed
    assert sum(m["count"] for m in report["most_confused"]) == cm.sum() - np.trace(cm)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["most_confused"] == report["most_confused"]
    for name in ("metrics.json", "confusion_matrix.png", "top_losses.png", "predictions.csv"):
        assert (tmp_path / "eval" / name).is_file()
    from_root = evaluate(exports["onnx"], tiny_data, out=tmp_path / "eval2")  # a dataset root: its test/
    assert from_root["evaluated_on"].endswith("test")


def test_an_interrupted_evaluation_leaves_the_previous_report_whole(exports, tiny_data, tmp_path, monkeypatch):
    """The report's files are written aside and moved in together: interrupted half-way (its plots written,
    its metrics not), the folder still holds the earlier report, all of it, and no staging folder."""
    import sys

    ev = sys.modules["birdcls.evaluate"]  # the package's `evaluate` attribute is the function

    out = tmp_path / "eval"
    ev.evaluate(exports["onnx"], tiny_data / "val", out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(ev, "_write_predictions", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(exports["onnx"], tiny_data / "test", out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    assert ev.evaluate(exports["onnx"], tiny_data / "test", out=out)["n_test"] == 12
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_refused_or_interrupted_evaluation_leaves_no_new_empty_folder(exports, tiny_data, tmp_path, monkeypatch):
    """The report folder is made before the predictions (to check it can be written); a refusal found after
    that (a class the model does not know) or a Ctrl-C removes it again, so the same -o works next time."""
    import shutil
    import sys

    ev = sys.modules["birdcls.evaluate"]
    labelled = tmp_path / "labelled"
    shutil.copytree(tiny_data / "val", labelled)
    shutil.copytree(labelled / "jay", labelled / "robin")
    with pytest.raises(BirdclsError, match="robin that the model does not know"):
        ev.evaluate(exports["onnx"], labelled, out=tmp_path / "new" / "deep" / "report")
    assert not (tmp_path / "new").exists()  # nor the parents it made
    monkeypatch.setattr(ev, "_write_predictions", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(exports["onnx"], tiny_data / "val", out=tmp_path / "new" / "report")
    assert not (tmp_path / "new" / "report").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(exports["onnx"], tiny_data / "val", out=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()  # a folder the user had is theirs


def test_evaluate_says_when_the_images_are_ones_the_model_trained_on(trained_run, tiny_data, tmp_path, capsys):
    import sys

    ev = sys.modules["birdcls.evaluate"]
    report = ev.evaluate(trained_run.run_dir, tiny_data / "train", out=tmp_path / "on-train")
    assert report["seen_in_training"].startswith(f"{tiny_data / 'train'} is the train/ split this model trained on")
    assert capsys.readouterr().err == f"note: {report['seen_in_training']}\n"  # from Python too, not only the dict
    from typer.testing import CliRunner

    from birdcls.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(trained_run.run_dir), str(tiny_data / "train"), "-o",
                                      str(tmp_path / "cli"), "--progress", "none"])
    assert result.exit_code == 0 and result.stderr == f"note: {report['seen_in_training']}\n"  # once, on stderr
    assert json.loads((tmp_path / "on-train" / "metrics.json").read_text())["seen_in_training"] == \
        report["seen_in_training"]
    assert "seen_in_training" not in ev.evaluate(trained_run.run_dir / "model.onnx", tiny_data, out=tmp_path / "t")
    run, data, raw = tmp_path / "run", tmp_path / "data", tmp_path / "raw"  # a dataset split from raw/
    for folder in (run, data / "valid", raw):
        folder.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"data_root": str(data.resolve())}))
    (data / "split.json").write_text(json.dumps({"source": str(raw.resolve())}))
    assert "is the folder this model's dataset was split from" in ev.trained_on(run / "model.onnx", raw)
    assert "is the valid/ split" in ev.trained_on(run, data / "valid")
    assert ev.trained_on(run, tmp_path / "elsewhere") is None and ev.trained_on(tmp_path / "m.onnx", raw) is None


def test_evaluate_default_reports_never_overwrite_each_other(exports, tiny_data, tmp_path):
    """Two exports in one folder, or two datasets whose test/ share a name, get their own report folders;
    an empty class folder (one the model does not know) changes nothing."""
    import shutil

    from birdcls.evaluate import default_report_dir, evaluate

    data = tmp_path / "birds"
    shutil.copytree(tiny_data, data)
    (data / "test" / "owl").mkdir()  # empty, and not a class the model knows
    reports = [evaluate(exports[fmt], data) for fmt in ("onnx", "safetensors")]
    dirs = [Path(r["report_dir"]) for r in reports]
    assert dirs == [exports["onnx"].parent / "eval-model-onnx-birds-test",
                    exports["safetensors"].parent / "eval-model-safetensors-birds-test"]
    for d, fmt in zip(dirs, ("onnx", "safetensors")):
        assert json.loads((d / "metrics.json").read_text())["model"] == str(exports[fmt])
    assert reports[0]["n_test"] == 12 and "owl" not in reports[0]["classes"]
    (tmp_path / "run").mkdir()
    assert default_report_dir(tmp_path / "run", data / "val") == tmp_path / "run" / "eval-birds-val"
    assert default_report_dir(tmp_path / "run", data / "valid") == tmp_path / "run" / "eval-birds-valid"
    shutil.rmtree(data / "val")  # evaluate reads test/ alone: a dataset without val/ is fine
    assert evaluate(exports["onnx"], data, out=tmp_path / "no-val")["n_test"] == 12
    assert default_report_dir(tmp_path / "run", tmp_path / "photos") == tmp_path / "run" / "eval-photos"
    (tmp_path / "empty" / "jay").mkdir(parents=True)
    with pytest.raises(BirdclsError, match="holds no images"):  # said before a model is loaded
        evaluate(tmp_path / "no-such-model", tmp_path / "empty")


@pytest.mark.parametrize("bs", [5, 40])
def test_decoding_in_worker_processes_gives_the_same_answers(exports, tmp_path, tiny_data, bs):
    """Worker processes (what a GPU gets) and threads decode the same images into the same batches, in the
    same order, skipping the same unreadable file. At bs 5 a worker's task is a batch; at 40 two tasks of 20
    are joined into one batch."""
    (tmp_path / "bad.jpg").write_text("<html>not an image</html>")
    inputs = [tiny_data / "test", tmp_path / "bad.jpg", tiny_data / "val"]
    model = load_model(exports["safetensors"])
    threads = predict(model, inputs, bs=bs, processes=False)
    procs = predict(model, inputs, bs=bs, workers=2, processes=True)
    assert [r["path"] for r in procs.rows] == [r["path"] for r in threads.rows] and len(procs.rows) == 24
    assert procs.skipped == threads.skipped == {str(tmp_path / "bad.jpg"): "unreadable (not an image)"}
    np.testing.assert_array_equal(procs.probs, threads.probs)


def test_worker_processes_are_started_once_and_kept_for_the_models_later_calls(exports, tiny_data):
    """Starting the workers (forking a process that holds a GPU context) costs more than decoding a few
    thousand images, so a model's later calls reuse them; close() stops them."""
    with load_model(exports["safetensors"]) as model:
        first = predict(model, [tiny_data / "test"], bs=4, workers=2, processes=True)
        pool = model.decode_pool(2)
        worker_pids = {p.pid for p in pool._processes.values()}
        again = predict(model, [tiny_data / "test"], bs=4, workers=2, processes=True)
        assert model.decode_pool(2) is pool and {p.pid for p in pool._processes.values()} == worker_pids
        np.testing.assert_array_equal(first.probs, again.probs)
        assert model.decode_pool(3) is not pool  # another count: a new pool, the old one stopped
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(int)
        pool = model.decode_pool(3)
    with pytest.raises(RuntimeError, match="shutdown"):  # leaving the with block closed the model
        pool.submit(int)


def test_a_broken_pool_is_replaced_and_workers_do_not_hold_a_folder_lock(exports, tiny_data, tmp_path):
    """A worker killed (out of memory, say) breaks its pool: the model's next call starts a new one instead
    of failing forever. Workers forked inside a run folder's lock do not keep the folder locked."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from birdcls._io import folder_lock
    from birdcls.predict import _decoded_batches_in_processes

    model = load_model(exports["safetensors"])
    with folder_lock(tmp_path / "run", "`birdcls train`"):
        predict(model, [tiny_data / "test"], bs=4, workers=2, processes=True)
    code = "import sys; from birdcls._io import folder_lock\nwith folder_lock(sys.argv[1], 'x'): print('ok')"
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert other.stdout.strip() == "ok", other.stderr  # free, though the workers forked inside it still run
    pool = model.decode_pool(2)
    os.kill(next(iter(pool._processes)), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not pool._broken and time.monotonic() < deadline:  # the pool's own thread notices the death
        time.sleep(0.05)
    assert pool._broken
    images = sorted((tiny_data / "test").rglob("*.jpg"))
    with pytest.raises(BirdclsError, match="a decoding worker process died"):  # what a call on it says
        list(_decoded_batches_in_processes(images, 32, 4, 2, pool=pool))
    again = predict(model, [tiny_data / "test"], bs=4, workers=2, processes=True)
    assert len(again.rows) == 12 and model.decode_pool(2) is not pool
    model.close()


def test_a_pool_started_from_a_short_lived_thread_outlives_it(exports, tiny_data):
    """Linux's death signal for the workers follows the thread that forked them: a pool made in a thread
    that then ends must not lose its workers (they are tied to their parent only from the main thread)."""
    import threading

    model = load_model(exports["safetensors"])
    starter = threading.Thread(target=model.decode_pool, args=(2,))
    starter.start()
    starter.join()
    result = predict(model, [tiny_data / "test"], bs=4, workers=2, processes=True)
    assert len(result.rows) == 12
    model.close()


def test_float32_from_a_run_folder_passes_over_its_int8_copy(exports, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(exports["pkl"], run / "model.pkl")
    for name in ("model.onnx", "model.int8.onnx"):  # the same graph under both names: only the name is checked
        shutil.copyfile(exports["onnx"], run / name)
    assert load_model(run, device="cpu").path.name == "model.int8.onnx"
    assert load_model(run, device="cpu", precision="float32").path.name == "model.onnx"


def test_bf16_autocast_on_request_and_float32_by_default_on_a_cpu(exports, tiny_data, tmp_path):
    """bf16 is what ``auto`` picks on a CUDA GPU (tested here on the CPU, explicitly): the same answers
    within bf16's rounding, and evaluate's report says which precision computed it."""
    inputs = [tiny_data / "test", tiny_data / "val"]
    default = load_model(exports["safetensors"], device="cpu")
    bf16 = load_model(exports["safetensors"], device="cpu", precision="bf16")
    assert default.precision == "float32" and bf16.precision == "bf16"
    exact, rounded = predict(default, inputs).probs, predict(bf16, inputs).probs
    assert not np.array_equal(exact, rounded)  # autocast really ran
    np.testing.assert_allclose(rounded, exact, atol=0.03)
    # in this process (CliRunner): the command's flags as a user passes them, without importing torch again
    report = CliRunner().invoke(app, ["evaluate", str(exports["pkl"]), str(tiny_data / "test"), "--precision", "bf16",
                                      "--device", "cpu", "--out", str(tmp_path / "eval")])
    assert report.exit_code == 0, (report.output, report.exception)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["precision"] == "bf16"
    with pytest.raises(BirdclsError, match="ONNX model.*bf16 needs a .pkl"):
        load_model(exports["onnx"], precision="bf16")
    proc = run_cli("predict", str(exports["safetensors"]), str(tiny_data / "test"), "--precision", "fp8")
    assert proc.returncode == 2 and "precision must be one of auto, float32, bf16, got 'fp8'" in proc.stderr


def _optimized_ops(path: Path, tmp_path: Path) -> list[str]:
    """The op types onnxruntime actually runs for ``path`` on the CPU, after its graph optimizations."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_onnx_same_padding_folds_into_the_convolutions(exports, tmp_path):
    """tf_efficientnet_lite0's stride-2 'same' convolutions pad asymmetrically. Exported with fixed pads,
    onnxruntime folds every Pad into its Conv and no shape arithmetic is left in the graph."""
    import onnx

    raw = [node.op_type for node in onnx.load(str(exports["onnx"])).graph.node]
    assert raw.count("Pad") == 5  # one per stride-2 convolution: they are there to be folded
    ops = _optimized_ops(exports["onnx"], tmp_path)
    assert "Pad" not in ops
    assert not {"Shape", "Gather", "Div", "ConstantOfShape"} & set(ops)


@pytest.mark.parametrize("size", [32, 33, 57])
def test_static_same_padding_computes_what_timm_computes(size):
    import timm
    import torch

    from birdcls.export import with_static_same_padding

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3).eval()
    fixed = with_static_same_padding(model, size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), model(x), rtol=0, atol=0)
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # the original is left as it was
    assert fixed.conv_stem.pads == ((1, 1, 1, 1) if size % 2 else (0, 1, 0, 1))


def test_a_phone_photo_tagged_on_its_side_is_predicted_upright(exports, tiny_data, tmp_path):
    """EXIF orientation reaches ``predict`` from every export format."""
    from PIL import Image

    upright = tmp_path / "upright.png"
    with Image.open(next((tiny_data / "test" / "parrot").iterdir())) as im:
        picture = im.convert("RGB")
    picture.paste((255, 255, 255), (0, 0, picture.width, picture.height // 3))  # a top that differs from the bottom
    picture.save(upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    picture.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "tagged.png", exif=exif)
    picture.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "untagged.png")
    for fmt in ("onnx", "safetensors", "pkl"):
        probs = predict(load_model(exports[fmt]), [upright, tmp_path / "tagged.png", tmp_path / "untagged.png"]).probs
        np.testing.assert_array_equal(probs[1], probs[0])
        assert not np.array_equal(probs[2], probs[0])  # the turn matters to this model, so the check has teeth


def test_the_learner_opens_files_as_birdcls_does_and_exports_as_plain_fastai(trained_run, tmp_path):
    from birdcls.data.blocks import ImageFileOpener, fastai_decoding

    learn = trained_run.learner

    def openers():
        return [f for dl in learn.dls.loaders for tl in dl.dataset.tls for f in tl.tfms.fs
                if isinstance(f, ImageFileOpener)]

    assert openers()
    with fastai_decoding(learn):
        assert not openers()
        learn.export(tmp_path / "plain.pkl")
    assert openers()  # put back for any further use of the learner
    import zipfile

    with zipfile.ZipFile(tmp_path / "plain.pkl") as z:  # torch.save's archive: the pickle is data.pkl
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"birdcls." not in pickled and b"ImageFileOpener" not in pickled


def test_progress_goes_to_stderr_and_never_into_the_answers(exports, tiny_data, capsys, monkeypatch):
    model = load_model(exports["onnx"])
    predict(model, [tiny_data / "test"], bs=2, progress="lines")  # 12 images, 6 batches, well under 2 s
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("predict: 12/12 images, ")  # the last line only
    monkeypatch.setattr("birdcls._terminal.QUIET_LINES_S", 0.0)  # as if each batch took seconds
    predict(model, [tiny_data / "test"], bs=2, progress="lines")
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and 2 <= len(lines) <= 10 and lines[-1].startswith("predict: 12/12 images, ")
    predict(model, [tiny_data / "test"], bs=2, progress="bars")
    out, err = capsys.readouterr()
    assert out == "" and "12/12" in err
    import sys

    from birdcls._terminal import with_progress

    stdout = sys.stdout
    for _ in with_progress(iter([([Path("a")], None, {})] * 3), 3, "bars", "predict", "images"):
        assert sys.stdout is stdout  # the bar borrows stdout only while it draws, never between batches
    assert sys.stdout is stdout and capsys.readouterr().out == ""
    for quiet in ({"bs": 2, "progress": "none"}, {"bs": 32, "progress": "lines"}):  # off; a single batch
        predict(model, [tiny_data / "test"], **quiet)
        assert capsys.readouterr() == ("", "")
    with pytest.raises(BirdclsError, match="progress must be one of"):
        predict(model, [tiny_data / "test"], progress="loud")


def test_predict_cli_shows_progress_lines_beside_json(exports, tiny_data):
    from typer.testing import CliRunner

    from birdcls.cli import app

    result = CliRunner().invoke(app, ["predict", str(exports["onnx"]), str(tiny_data / "test"), "--json", "--bs", "4",
                                      "--progress", "lines"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 12
    assert result.stderr.strip().splitlines()[-1].startswith("predict: 12/12 images")
    run = exports["onnx"].parent  # a run folder: the model file it chose is named first
    result = CliRunner().invoke(app, ["predict", str(run), str(tiny_data / "test"), "--json", "--progress", "lines"])
    assert result.exit_code == 0 and result.stderr.splitlines()[0] == f"model: {run / 'model.onnx'}", result.stderr


def test_evaluate_shows_the_same_progress(exports, tiny_data, tmp_path, capsys):
    from birdcls.evaluate import evaluate

    report = evaluate(exports["onnx"], tiny_data, tmp_path / "report", bs=4, progress="lines")
    assert report["n_test"] == 12
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("predict: 12/12 images")


def test_a_cpu_model_leaves_the_network_most_cores_and_onnx_threads_do_not_spin(exports):
    """On a CPU the network is what waits: decoding takes half the cores' threads, and onnxruntime's idle
    compute threads sleep rather than spin on the cores the decoding threads need between batches."""
    import sys

    default_workers = sys.modules["birdcls.predict"]._default_workers
    onnx_model, torch_model = load_model(exports["onnx"]), load_model(exports["safetensors"], device="cpu")
    options = onnx_model._backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for model in (onnx_model, torch_model):
        assert [default_workers(model, False, cpus) for cpus in (1, 2, 8)] == [1, 1, 4]
        assert [default_workers(model, True, cpus) for cpus in (4, 32)] == [4, 16]


def test_evaluate_refuses_a_negative_gallery_size_before_any_work(exports, tiny_data, tmp_path):
    from birdcls import evaluate

    with pytest.raises(BirdclsError, match="top_losses must be a whole number 0 or more, got -1"):
        evaluate(exports["onnx"], tiny_data, out=tmp_path / "report", top_losses=-1)
    assert not (tmp_path / "report").exists()


def test_predict_takes_images_in_memory_and_answers_as_for_their_files(exports, tiny_data):
    from PIL import Image

    files = sorted((tiny_data / "test" / "jay").iterdir())[:3]
    model = load_model(exports["onnx"])
    from_files = predict(model, files)
    images = [Image.open(f) for f in files]
    from_memory = predict(model, images)
    assert [r["path"] for r in from_memory.rows] == ["<image 0>", "<image 1>", "<image 2>"]
    assert from_memory.classes == ["cardinal", "jay", "parrot"]  # the columns of probs
    np.testing.assert_allclose(from_memory.probs, from_files.probs, atol=1e-6)
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    np.testing.assert_allclose(predict(model, arrays, bs=2).probs, from_files.probs, atol=1e-6)
    assert predict(model, arrays[0]).rows[0]["label"] == from_files.rows[0]["label"]  # one image, not its rows
    with pytest.raises(BirdclsError, match=r"image 1 is a float64 array of shape \(8, 8, 3\): pass uint8"):
        predict(model, [arrays[0], np.zeros((8, 8, 3))])
    with pytest.raises(BirdclsError, match="files and folders, or images in memory"):
        predict(model, [files[0], images[0]])


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_probabilities_refuses_a_batch_of_the_wrong_shape_or_type_in_one_way(exports, fmt):
    model = load_model(exports[fmt], device="cpu")
    size = model.info.size
    for batch in (np.zeros((2, size // 2, size // 2, 3), np.uint8), np.zeros((2, size, size, 3), np.float32),
                  np.zeros((size, size, 3), np.uint8)):
        with pytest.raises(BirdclsError, match=f"takes a uint8 batch of N x {size} x {size} x 3 images"):
            model.probabilities(batch)
    assert model.probabilities(np.zeros((2, size, size, 3), np.uint8)).shape == (2, 3)
