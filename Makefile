# skyscore — `make demo` and `make test` each set everything up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench bench-aws clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,parquet,dev]'
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
