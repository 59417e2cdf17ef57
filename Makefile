# Every target bootstraps uv and the locked environment itself: a fresh machine needs only Python 3.10+ and make.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
UV_DEP := $(filter .tools/bin/uv,$(UV))
RUN := $(UV) run --frozen

.PHONY: demo test test-fast lint bench env clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml $(UV_DEP)
	$(UV) sync --frozen
	@touch $@

env: .venv/.synced

demo: env
	$(RUN) birdcls demo --out models/demo

test: env
	$(RUN) pytest

test-fast: env
	$(RUN) pytest -m "not slow"

lint: env
	$(RUN) ruff check birdcls tests

clean:
	rm -rf .tools .venv .pytest_cache models/demo

bench: env
	$(RUN) python benchmarks/run.py --case all
