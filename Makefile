# Two quickstart commands: `make demo` and `make test`. Both create .venv when missing.
# `make docs` builds the documentation site (the dev extra includes the docs extra).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.lafslib-installed

.PHONY: install demo test lint format docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lafslib.demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

lint: $(STAMP)
	$(BIN)/ruff check lafslib tests benchmarks docs
	$(BIN)/ruff format --check lafslib tests benchmarks docs

format: $(STAMP)
	$(BIN)/ruff format lafslib tests benchmarks docs
	$(BIN)/ruff check --fix lafslib tests benchmarks docs

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs build dist site *.egg-info .pytest_cache .ruff_cache
