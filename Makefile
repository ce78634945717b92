# skyscore — `make demo` and `make test` each set everything up from a fresh clone.
SHELL := /bin/bash
# Python 3.13, the runtime of every function (Lambda python3.13, Azure Functions, Cloud Run functions):
# a python3.13 on PATH, else pyenv's (its shim answers only when 3.13 is the selected version).
PYTHON ?= $(shell PYENV_VERSION=3.13 python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -1 || echo python3.13)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench bench-aws clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --only-binary=pyyaml -e '.[train,parquet,dev,azure,gcp]'
	@touch $(STAMP)

demo: setup
	$(BIN)/skyscore demo

lint: setup
	$(BIN)/ruff check shared tests bench functions
	$(BIN)/ruff format --check shared tests bench functions

typecheck: setup
	$(BIN)/mypy
	$(BIN)/mypy bench

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

unit: setup node_modules/.installed
	bash scripts/ensure-chromium.sh
	$(BIN)/pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python -m bench

bench-aws: setup node_modules/.installed
	$(BIN)/python -m bench.aws

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .skyscore
