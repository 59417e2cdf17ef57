"""The README's first command: the offline digits demo, end to end, in a fresh process."""

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", str(out), "--progress", "lines", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "demo.json").read_text())
    assert summary["test_accuracy"] >= 0.9
    assert (out / "run" / "metrics.json").is_file()
    assert (out / "digits.onnx").is_file() and (out / "digits.safetensors").is_file()
    assert len(summary["predictions"]) == 2
    assert "predicted in a fresh process" in proc.stdout
