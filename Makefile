# Switchboard developer tasks. `make test` is what CI runs (through .ci/run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
PYTHON    ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
HOST      ?= 127.0.0.1
PORT      ?= 8000
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install run test bench lint format clean distclean

help:
	@echo "make install    create $(VENV) and install the project with its dev extras"
	@echo "make run        migrate, then serve the demo on http://$(HOST):$(PORT)"
	@echo "make test       ruff, import contracts, pytest (PYTEST_ARGS='...' passes through)"
	@echo "make bench      run the benchmarks (python -m bench)"
	@echo "make lint       ruff check, ruff format --check, import contracts"
	@echo "make format     ruff format and ruff check --fix"
	@echo "make clean      remove caches; make distclean also removes $(VENV)"

install: $(STAMP)

# Re-runs only when pyproject.toml changes (or the venv is gone).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -e '.[dev]'
	@touch $@

run: install
	$(BIN)/switchboard migrate
	$(BIN)/switchboard serve --demo --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis .import_linter_cache build test-results bench/out
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) *.egg-info
