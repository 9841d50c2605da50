# Two entry points (README): `make repro` runs the pipeline, `make test` runs the tests.
# Each sets itself up first: a local virtualenv from requirements.txt in ONE pip call, then metric assets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export OMP_NUM_THREADS ?= 2

.PHONY: setup repro test bench clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $@

setup: $(VENV)/.installed
	$(BIN)/siamdiff assets

repro: setup
	$(BIN)/dvc repro
	$(BIN)/siamdiff summary

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)
