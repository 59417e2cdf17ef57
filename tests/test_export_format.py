"""`export` takes its format from the output file's name when none is given, and names what it reads."""

import json

import pytest
from typer.testing import CliRunner

from birdcls.cli import app
from birdcls.errors import BirdclsError
from birdcls.export import export


def _onnx_meta(path):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["birdcls"])


def test_no_format_means_the_output_names_it(trained_run, tmp_path):
    run = trained_run.run_dir
    pkl = export(run, None, tmp_path / "m.pkl")
    assert pkl.read_bytes() == (run / "model.pkl").read_bytes()
    st = export(run, None, tmp_path / "m.safetensors")
    assert json.loads(st.with_suffix(".json").read_text())["format"] == "safetensors"
    onnx_file = export(run, None, tmp_path / "M.ONNX")  # the bug: this asked for a .pkl name
    assert _onnx_meta(onnx_file)["format"] == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M.ONNX", "m.json", "m.pkl", "m.safetensors"]


def test_python_callers_name_only_the_file(trained_run, tmp_path):
    """From Python the format is optional like the CLI's --format: ``export(run, dest=...)``."""
    pkl = export(trained_run.run_dir, dest=tmp_path / "m.pkl")
    assert pkl.read_bytes() == (trained_run.run_dir / "model.pkl").read_bytes()
    with pytest.raises(BirdclsError, match=r"export\(\) needs dest, the file to write: e\.g\. export\(run, dest="):
        export(trained_run.run_dir, "onnx")
    assert list(tmp_path.iterdir()) == [pkl]


def test_int8_onnx_name_means_onnx_int8(trained_run, tmp_path, capsys):
    """``.int8.onnx`` asks for onnx-int8, not float32 onnx: the int8 check runs. This one-epoch run may fail
    the check (then nothing is written); either way the check's summary says int8 was made."""
    dest = tmp_path / "m.int8.onnx"
    try:
        export(trained_run.run_dir, None, dest)
    except BirdclsError as exc:
        assert str(exc).startswith("int8 check") and not dest.exists()
    else:
        assert capsys.readouterr().out.startswith("int8 check")
        import onnx

        ops = {n.op_type for n in onnx.load(str(dest)).graph.node}
        assert ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear"}


@pytest.mark.parametrize("fmt, name, message", [
    ("onnx", "m.pkl", "should end in .onnx for --format onnx"),
    ("pkl", "m.onnx", "should end in .pkl for --format pkl"),
    ("safetensors", "m.onnx", "should end in .safetensors"),
    ("onnx-int8", "m.onnx-int8", r"should end in \.onnx for --format onnx-int8: e\.g\. .*m\.int8\.onnx$"),
    ("onnx", "m.int8.onnx", "names an int8 model but --format onnx writes float32: pass --format onnx-int8, or "
                            "name it m.onnx"),
    ("tflite", "m.tflite", "unknown export format 'tflite'"),
    (None, "m.bin", r"does not say which format to write: end it in \.pkl, \.safetensors, \.onnx or \.int8\.onnx "
                    r"\(onnx-int8\), or pass --format pkl/safetensors/onnx/onnx-int8"),
    (None, "model", "does not say which format to write"),
])
def test_an_explicit_format_stays_authoritative_and_bad_names_are_one_line(trained_run, tmp_path, fmt, name,
                                                                           message):
    with pytest.raises(BirdclsError, match=message) as err:
        export(trained_run.run_dir, fmt, tmp_path / name)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_source_errors_name_what_export_reads(trained_run, tmp_path):
    # the bug: a missing run was told to pass a .safetensors/.onnx file, which export cannot read
    for fmt in ("pkl", "onnx", "onnx-int8", None):
        with pytest.raises(BirdclsError) as err:
            export(tmp_path / "nonexistent", fmt, tmp_path / "out" / "m.onnx" if fmt != "pkl" else tmp_path / "m.pkl")
        assert str(err.value) == (f"{tmp_path / 'nonexistent'} does not exist: pass a run folder from "
                                  "`birdcls train` or its model.pkl")
    onnx_file = export(trained_run.run_dir, "onnx", tmp_path / "exported.onnx")
    with pytest.raises(BirdclsError, match="export reads a run directory or its model.pkl, not .*exported.onnx"):
        export(onnx_file, None, tmp_path / "again.safetensors")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(BirdclsError, match="empty-run is a folder without model.pkl: pass a run folder"):
        export(tmp_path / "empty-run", "onnx-int8", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-run", "exported.onnx"]


def test_cli_missing_run_is_one_accurate_line(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nonexistent"), "--format", "onnx",
                                      "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "does not exist: pass a run folder from `birdcls train` or its model.pkl" in result.output
    assert ".safetensors" not in result.output and not (tmp_path / "x.onnx").exists()
