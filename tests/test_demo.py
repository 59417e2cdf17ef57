"""The README's first command: the offline digits demo, end to end, in a fresh process."""

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text('{"finished": false}')  # a demo stopped half-way: run again into its folder
    (out / "run").mkdir()
    proc = run_cli("demo", "--out", str(out), "--progress", "lines", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "demo.json").read_text())
    assert summary["test_accuracy"] >= 0.9 and summary["finished"]
    assert (out / "run" / "metrics.json").is_file()
    assert (out / "digits.onnx").is_file() and (out / "digits.safetensors").is_file()
    assert len(summary["predictions"]) == 2
    assert "predicted in a fresh process" in proc.stdout


def test_demo_refuses_a_folder_that_holds_other_things(tmp_path):
    """`--out ~/project` would write raw/, data/ and run/ among the user's files; refused before any work."""
    (tmp_path / "project" / "raw").mkdir(parents=True)
    (tmp_path / "project" / "raw" / "0.png").write_bytes(b"mine")
    proc = run_cli("demo", "--out", str(tmp_path / "project"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --out ") and "choose a new or empty folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "project" / "raw" / "0.png").read_bytes() == b"mine"
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["raw"]
    (tmp_path / "file").write_text("x")
    proc = run_cli("demo", "--out", str(tmp_path / "file"))
    assert proc.returncode == 2 and "is a file: choose a folder" in proc.stderr
