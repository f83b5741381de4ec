# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# papermill kernels resolve `python` through PATH: keep the venv first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: demo figures tune study test lint format reproduce bench clean-runs

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	@touch $@

# make demo [SEEDS="0 1 2"]: every Table 1 method x 3 seeds from the warm start, 2 training
# processes side by side; everything under runs/demo (figures in runs/demo/figures).
# 5.4 to 7 min on this project's 2-core CPU (shared with other jobs).
demo: $(VENV)/.installed
	$(PY) -m qlib.pipeline demo $(if $(SEEDS),--seeds $(SEEDS),)

# The committed figures/ (and figures/table1.md/csv) from the demo's runs in runs/demo
# (finished runs are reused; missing ones are trained first).
figures: $(VENV)/.installed
	$(PY) -m qlib.pipeline figures $(if $(SEEDS),--seeds $(SEEDS),)

# make tune [PRESET=demo] [CARS_ROOT=/path/to/stanford_cars]: each method's learning rate on
# validation classes (runs/tune/<preset>/tune.json and tune.md); paste the result into
# METHOD_SETTINGS in qlib/train/config.py. PRESET=paper tunes the baselines (needs a GPU).
# Demo: 64 runs, 17 min on the 2-core CPU while other jobs loaded it.
PRESET ?= demo
tune: $(VENV)/.installed
	$(PY) -m qlib.tune --preset $(PRESET) $(if $(CARS_ROOT),--root "$(CARS_ROOT)",)

# Warm start vs scratch, and warm-up, for Random / Method 1 / Method 2, 5 seeds:
# runs/study/study.md. 65 runs, 17 min on the 2-core CPU.
study: $(VENV)/.installed
	$(PY) scripts/study.py $(if $(SEEDS),--seeds $(SEEDS),)

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
