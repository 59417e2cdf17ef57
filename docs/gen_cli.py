"""Write docs/cli.md from the commands' own --help, so the reference never drifts (tests check it)."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from birdcls.cli import app

COMMANDS = ["", "scrape", "clean", "split", "train", "evaluate", "export", "predict", "demo", "recipes", "models",
            "datasets get", "datasets list"]


def render() -> str:
    runner = CliRunner()
    parts = ["# birdcls command-line reference\n", "Generated from `--help` by `python docs/gen_cli.py`; do not edit.\n"]
    for command in COMMANDS:
        result = runner.invoke(app, [*command.split(), "--help"], prog_name="birdcls", terminal_width=100,
                               env={"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"})
        parts.append(f"## `{' '.join(['birdcls', *command.split()])}`\n")
        parts.append("```\n" + result.output.rstrip() + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("cli.md")
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == text else "docs/cli.md is stale: run python docs/gen_cli.py")
    target.write_text(text)
    print(f"wrote {target}")
