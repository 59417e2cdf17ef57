"""Both notebooks run headless (nbclient), and the Cleaner works in a real browser (Voilà + Chromium)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fixtures import make_split_dataset

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _run(name: str, env: dict[str, str], timeout: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_clean_notebook_runs(tmp_path):
    data = make_split_dataset(tmp_path / "d", counts=(4, 2, 2), size=64)
    nb = _run("clean.ipynb", {"BIRDCLS_CLEAN_DATA": str(data)})
    assert "images checked" in _outputs(nb)
    widget_output = nb.cells[-1].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in widget_output


@pytest.mark.slow
def test_walkthrough_notebook_runs_the_whole_pipeline(tmp_path):
    nb = _run("walkthrough.ipynb", {"BIRDCLS_WALKTHROUGH_DIR": str(tmp_path / "w"), "BIRDCLS_WALKTHROUGH_EPOCHS": "1",
                                    "BIRDCLS_WALKTHROUGH_PER_CLASS": "40"})
    text = _outputs(nb)
    assert "complete" in text and "test accuracy" in text and "macro F1" in text
    assert '"GET /' not in text  # the notebook's local image server logs no line per request
    assert "report in" in text and "eval-data-test" in text
    assert (tmp_path / "w" / "digits.onnx").is_file() and (tmp_path / "w" / "run" / "model.pkl").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is absent: apt-get install chromium")
def test_cleaner_in_a_real_browser(tmp_path):
    """Voilà serves clean.ipynb on 127.0.0.1; headless Chromium clicks a thumbnail's delete button."""
    from playwright.sync_api import sync_playwright

    data = make_split_dataset(tmp_path / "d", counts=(4, 2, 2), size=64)
    port = _free_port()
    env = {**os.environ, "BIRDCLS_CLEAN_DATA": str(data), "JUPYTER_PLATFORM_DIRS": "1"}
    voila = subprocess.Popen([sys.executable, "-m", "voila", str(NOTEBOOKS / "clean.ipynb"), "--no-browser",
                              f"--port={port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=5).read(100)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                              "--disable-background-networking", "--disable-component-update",
                                              "--no-first-run"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url, timeout=120_000)
            delete = page.locator(".birdcls-delete").first
            delete.wait_for(timeout=180_000)
            target = (delete.get_attribute("title") or "").removeprefix("delete ")
            assert target.startswith("train/cardinal/"), target
            delete.click()
            moved = data / ".quarantine" / target
            for _ in range(120):
                if moved.is_file():
                    break
                time.sleep(0.25)
            page.wait_for_timeout(500)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "cleaner-in-chromium.png"), full_page=True)
            browser.close()
        assert moved.is_file() and not (data / target).exists()
        log = [json.loads(x) for x in (data / ".quarantine" / "decisions.jsonl").read_text().splitlines()]
        assert [(r["file"], r["action"], r["source"]) for r in log] == [(target, "quarantine", "widget")]
    finally:
        voila.terminate()
        try:
            voila.wait(timeout=20)
        except subprocess.TimeoutExpired:
            voila.kill()
