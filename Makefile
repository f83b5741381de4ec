# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# papermill kernels resolve `python` through PATH: keep the venv first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: demo test lint format reproduce bench clean-runs

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	@touch $@

demo: $(VENV)/.installed
	$(PY) -m qlib.pipeline demo

test: $(VENV)/.installed
	$(PY) -m ruff check qlib tests benchmarks scripts notebooks
	$(PY) -m pytest -n 2

lint: $(VENV)/.installed
	$(PY) -m ruff check qlib tests benchmarks scripts notebooks
	$(PY) -m ruff format --check qlib tests benchmarks scripts notebooks

format: $(VENV)/.installed
	$(PY) -m ruff format qlib tests benchmarks scripts notebooks
	$(PY) -m ruff check --fix qlib tests benchmarks scripts notebooks

# make reproduce CARS_ROOT=/path/to/stanford_cars [SEEDS="0 1 2"]
reproduce: $(VENV)/.installed
	@test -n "$(CARS_ROOT)" || { echo "Set CARS_ROOT to your Stanford Cars folder: make reproduce CARS_ROOT=/data/stanford_cars"; exit 2; }
	$(PY) -m qlib.pipeline reproduce --root "$(CARS_ROOT)" $(if $(SEEDS),--seeds $(SEEDS),)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_train.py
