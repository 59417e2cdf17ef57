"""int8 ONNX: calibrated on training images, kept only when it holds accuracy on val/, preferred on a CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdcls import export, load_model, predict
from birdcls.errors import BirdclsError
from birdcls.quantize import MAX_ACCURACY_DROP, Int8Check, int8_if_it_keeps_accuracy


def _images(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


@pytest.fixture(scope="module")
def confident_run(tiny_data: Path, tmp_path_factory):
    """A run whose answers are confident (head-only, 8 epochs on cached features): the one-epoch
    ``trained_run`` sits near 0.5 on some images, where int8's small errors flip answers and the check
    rightly refuses it."""
    from birdcls.learn import train

    return train(tiny_data, tmp_path_factory.mktemp("int8") / "run", size=32, bs=8, epochs_head=8, epochs=0,
                 lr=2e-2, progress="none", export_onnx=True)


def test_a_run_keeps_an_int8_model_that_passed_its_check(confident_run, tiny_data: Path):
    run = confident_run.run_dir
    check = confident_run.metrics["int8"]
    assert check["kept"] and check["images"] == len(_images(tiny_data / "val"))
    assert check["int8_accuracy"] >= check["fp32_accuracy"] - MAX_ACCURACY_DROP
    assert 0 < check["mean_prob_difference"] <= check["max_prob_difference"] < 1  # int8 is close, not equal
    assert (run / "model.int8.onnx").is_file()
    fast = load_model(run, device="cpu")
    assert fast.path.name == "model.int8.onnx"  # what `birdcls predict RUN` runs on a CPU
    assert load_model(run, device="cpu", int8=False).path.name == "model.onnx"  # what `evaluate` scores
    images = _images(tiny_data / "test")
    a, b = predict(fast, images), predict(load_model(run, device="cpu", backend="torch"), images)
    agree = np.mean([x["label"] == y["label"] for x, y in zip(a.rows, b.rows)])
    assert agree >= 0.9
    assert np.abs(a.probs - b.probs).max() < 0.2  # quantized, so close rather than equal
    assert (run / "model.int8.onnx").stat().st_size < 0.5 * (run / "model.onnx").stat().st_size


def test_int8_that_loses_accuracy_is_not_kept(confident_run, tiny_data: Path, tmp_path: Path):
    """Calibrated on black images, the activation ranges are wrong for real ones: the check catches it
    and an older int8 file at the destination is removed, so what sits there always passed."""
    black = []
    for i in range(8):
        black.append(tmp_path / f"black{i}.jpg")
        Image.new("RGB", (48, 48)).save(black[-1])
    dest = tmp_path / "model.int8.onnx"
    dest.write_bytes(b"an older int8 model")
    val = _images(tiny_data / "val")
    labels = [p.parent.name for p in val]
    fp32 = confident_run.run_dir / "model.onnx"
    check = int8_if_it_keeps_accuracy(fp32, dest, black, val, labels)
    assert not check.kept and check.int8_accuracy < check.fp32_accuracy - MAX_ACCURACY_DROP
    assert dest.read_bytes() == b"an older int8 model"  # a user's file named by -o is not touched
    assert not int8_if_it_keeps_accuracy(fp32, dest, black, val, labels, remove_stale=True).kept
    assert not dest.exists()  # a run folder's own stale int8 model is
    assert "int8 check on 12 validation images" in check.summary()


def test_an_empty_check_keeps_nothing():
    assert not Int8Check(0, 0.0, 0.0, 0.0).kept
    assert "no readable validation images" in Int8Check(0, 0.0, 0.0, 0.0).summary()
    assert Int8Check(200, 0.9, 0.89, 0.995).kept and not Int8Check(10, 0.9, 0.85, 0.9).kept
    # answers that change both ways keep the accuracy: 1 of 3 changed is not "within one point"
    changed = Int8Check(3, 0.6667, 0.6667, 0.6667)
    assert not changed.kept
    assert changed.why_not_kept() == "it changed 1 of 3 answers on val/, more than 1% (top-1 agreement 0.6667)"
    assert Int8Check(10, 0.9, 0.85, 1.0).why_not_kept().startswith("it lost more than 1 point(s) of accuracy on val/")
    assert Int8Check(200, 0.9, 0.9, 0.995).why_not_kept() == ""


def test_export_onnx_int8_from_the_cli(confident_run, tmp_path: Path):
    from typer.testing import CliRunner

    from birdcls.cli import app

    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(confident_run.run_dir), "--format", "onnx-int8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "int8 check on 12 validation images" in result.output and out.is_file()
    rows = predict(load_model(out), [tiny for tiny in _images(Path(json.loads(
        (confident_run.run_dir / "metrics.json").read_text())["data_root"]) / "test")]).rows
    assert len(rows) == 12


def test_int8_export_of_a_run_that_does_not_record_its_data(confident_run, tiny_data: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from birdcls.cli import app

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(confident_run.run_dir / "model.pkl", lone / "model.pkl")
    result = CliRunner().invoke(app, ["export", str(lone), "--format", "onnx-int8", "-o", str(tmp_path / "m.onnx"),
                                      "--trust"])
    assert result.exit_code == 2
    assert "does not record its dataset: pass --data DATASET" in result.output
    assert not (tmp_path / "m.onnx").exists()
    (lone / "metrics.json").write_text(json.dumps({"data_root": str(tmp_path / "moved-away")}))
    result = CliRunner().invoke(app, ["export", str(lone), "--format", "onnx-int8", "-o", str(tmp_path / "m.onnx"),
                                      "--trust"])
    assert result.exit_code == 2 and "moved-away is not there any more: pass --data DATASET" in result.output
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(BirdclsError, match="should end in .onnx for --format onnx-int8"):
        export(confident_run.run_dir, "onnx-int8", tmp_path / "m.int8")
    # a dataset with files training would skip as unreadable: calibration and check skip them too
    data = shutil.copytree(tiny_data, tmp_path / "data")
    for split in ("train", "val"):
        cls = sorted((data / split).iterdir())[0]
        (cls / "broken.jpg").write_bytes(b"not a jpeg")
    done = export(lone / "model.pkl", "onnx-int8", tmp_path / "m.onnx", trust=True, data=data)
    assert done.is_file()


def test_current_onnx_exports_take_uint8_images(trained_run):
    import onnxruntime as ort

    session = ort.InferenceSession(str(trained_run.run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    assert spec.type == "tensor(uint8)" and spec.shape[1:] == [32, 32, 3]


def test_float_input_onnx_from_older_exports_still_predicts(trained_run, tiny_data: Path, tmp_path: Path):
    """Exports made before normalisation moved into the graph take float NCHW; they keep working."""
    import onnx
    import torch

    torch_side = load_model(trained_run.run_dir, device="cpu", backend="torch")
    old = tmp_path / "old.onnx"
    model = torch_side._backend.model.to(memory_format=torch.contiguous_format)
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), str(old), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(old))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "birdcls", json.dumps(torch_side.info.to_dict())
    onnx.save(proto, str(old))
    images = _images(tiny_data / "test")
    np.testing.assert_allclose(predict(load_model(old), images).probs, predict(torch_side, images).probs, atol=1e-4)
    with pytest.raises(BirdclsError, match="takes float input"):
        int8_if_it_keeps_accuracy(old, tmp_path / "q.onnx", images, images, [p.parent.name for p in images])


def test_predicting_from_a_run_folder_on_a_cpu_never_imports_torch(confident_run, tiny_data: Path):
    """The run folder's ONNX path is the quick one to start: deciding that no GPU is there must not cost
    the seconds of importing torch."""
    import subprocess
    import sys

    from birdcls.runtime import no_accelerator_visible

    if not no_accelerator_visible():
        pytest.skip("a GPU device node is visible here, so torch is asked")
    image = _images(tiny_data / "test")[0]
    code = ("import sys; from birdcls.predict import load_model, predict; "
            f"m = load_model({str(confident_run.run_dir)!r}); r = predict(m, [{str(image)!r}]); "
            "print(m.path.name, len(r.rows), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["model.int8.onnx", "1", "False"]


def test_int8_graph_stays_int8_from_the_stem_to_the_head(confident_run, tmp_path: Path):
    """Activations (ReLU6 as Clip) and residual Adds are quantized too, so the network does not go back
    to float between convolutions: a handful of (De)QuantizeLinear at the ends, not one pair per layer."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(confident_run.run_dir / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 49
    assert ops.count("QuantizeLinear") + ops.count("DequantizeLinear") <= 8
    assert "Clip" not in ops and "Pad" not in ops
