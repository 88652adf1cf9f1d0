# The two commands a newcomer needs are `make run` and `make test`; both set up everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
TESTDATA ?= $(abspath ../shared/testdata)

.PHONY: install dev model run test lint typecheck bench clean

install: $(STAMP) model ## the shared set-up: venv, pinned dependencies, verified model

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	touch $@

dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

model: $(STAMP)
	$(BIN)/cutout models fetch

run: install
	$(BIN)/cutout remove $(TESTDATA)/images/alphamatting_GT03.png -o artifacts/sample-cutout.png
	@echo "wrote artifacts/sample-cutout.png"

lint: dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: dev
	$(BIN)/mypy

test: install dev lint typecheck
	CUTOUT_TESTDATA=$(TESTDATA) $(BIN)/pytest

bench: install dev
	CUTOUT_TESTDATA=$(TESTDATA) $(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache artifacts
