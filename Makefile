# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow lint format
setup:
	@bash tools/setup.sh

# A short training run on bundled MNIST (1 epoch on 12,000 images), then its test-set report.
demo: setup
	$(PY) -m edgevit.train --epochs 1 --limit 12000 --out runs/demo.safetensors
	$(PY) -m edgevit.evaluate runs/demo.safetensors

test: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .
