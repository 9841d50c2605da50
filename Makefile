# Two entry points (README): `make repro` runs the pipeline, `make test` runs the tests.
# Each sets itself up first: a local virtualenv from requirements.txt in ONE pip call, then metric assets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export OMP_NUM_THREADS ?= 2
# pytest-xdist workers: one per core (each test process uses one torch thread); whole files per worker, so a
# module's fixtures are built once
TEST_WORKERS ?= auto
# pip-tools lives in its own virtualenv, outside the project's lock
LOCK_TOOLS ?= $(HOME)/.cache/siamdiff/lock-tools

.PHONY: setup repro test lint format lock bench clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $@

setup: $(VENV)/.installed
	$(BIN)/siamdiff assets

repro: setup
	$(BIN)/siamdiff check
	$(BIN)/dvc repro
	$(BIN)/siamdiff summary

test: setup lint
	$(BIN)/siamdiff check
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff check --fix .

# The lock: requirements.txt := pyproject.toml's dependencies + its `test` extra + requirements.in, resolved
# together (pip-compile keeps the current pins that still fit; `make lock LOCK_ARGS=--upgrade` moves them all).
# torch==2.13.0 is written without the local label `+cpu` of the CPU wheel the machines provide.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || \
	  { $(PY) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q pip-tools==7.6.2; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --allow-unsafe --unsafe-package pip \
	  --extra test --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS) \
	  -o requirements.txt pyproject.toml requirements.in
	sed -i -e 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' \
	  -e '1i # Exact lock used by `make` (ONE pip call: pip install -r requirements.txt -e .); edit pyproject.toml or' \
	  -e '1i # requirements.in, then run `make lock`.' requirements.txt

bench: setup
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)
