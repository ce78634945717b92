# skyscore — `make demo` and `make test` each set everything up from a fresh clone.
SHELL := /bin/bash
# Python 3.13, the runtime of every function (Lambda python3.13, Azure Functions, Cloud Run functions):
# a python3.13 on PATH, else pyenv's (its shim answers only when 3.13 is the selected version).
PYTHON ?= $(shell PYENV_VERSION=3.13 python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -1 || echo python3.13)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov checks the Terraform offline; it pins boto3 and friends below what the project needs,
# so it lives in a venv of its own
CHECKOV := $(VENV)/tools/checkov
CHECKOV_VERSION := 3.3.30

.PHONY: setup tools demo test lint typecheck unit bench bench-aws aws-deploy clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --only-binary=pyyaml -e '.[train,parquet,dev,azure,gcp]'
	@touch $(STAMP)

demo: setup
	$(BIN)/skyscore demo

lint: setup
	$(BIN)/ruff check shared tests bench functions infra
	$(BIN)/ruff format --check shared tests bench functions infra

typecheck: setup
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/mypy --strict infra/aws/rehearse.py  # the images' build rehearsal (no Docker here)
	# the handlers, one package per cloud (functions/ is the package root each deploy ships)
	MYPYPATH=shared:. $(BIN)/mypy --explicit-package-bases $(patsubst %,-p functions.%,$(notdir $(wildcard functions/*)))

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(CHECKOV)/.installed:
	@test -x $(CHECKOV)/bin/python || $(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

tools: $(CHECKOV)/.installed

unit: setup node_modules/.installed tools
	bash scripts/ensure-chromium.sh
	$(BIN)/pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python -m bench

bench-aws: setup node_modules/.installed
	$(BIN)/python -m bench.aws

# a real AWS account: serverless deploy, then the training image (infra/aws/Makefile)
aws-deploy: node_modules/.installed
	$(MAKE) -f infra/aws/Makefile deploy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .skyscore
