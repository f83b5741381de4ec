# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
# The Python that creates .venv (3.10 or newer): make PYTHON=python3.11 where python3 is older.
PYTHON ?= python3
# The environment: .venv by default, or one that exists already (conda: make VENV=$CONDA_PREFIX).
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
# Where torch comes from: empty = PyPI (on Linux x86-64 the CUDA build, elsewhere the CPU one);
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU-only build, or .../whl/cu126.
TORCH_INDEX ?=
# The git filter that strips notebooks' outputs, execution counts and what JupyterLab adds to
# their metadata (cell ids kept: they are the committed ones).
NBSTRIPOUT = "$(PY)" -m nbstripout --keep-id --extra-keys "$(foreach k,codemirror_mode \
  file_extension mimetype nbconvert_exporter pygments_lexer version,metadata.language_info.$(k))"
# papermill kernels resolve `python` through PATH: keep the environment first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: demo figures tune study test lint format reproduce bench clean-runs

# The environment: created with $(PYTHON) unless it exists, checked for Python >= 3.10, torch
# from TORCH_INDEX when given, qlib installed editable with its dev tools, and git's nbstripout
# filter set up for notebooks/*.ipynb (.gitattributes), so notebooks stay clean in git.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "qlib needs Python 3.10 or newer, but '$(PYTHON)' is $$($(PYTHON) --version 2>&1)."; \
	  echo "Install one (e.g. apt install python3.11 python3.11-venv, or conda, uv, pyenv) and run: make PYTHON=python3.11"; \
	  exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "qlib needs Python 3.10 or newer, but $(PY) is $$($(PY) --version 2>&1)."; exit 2; }
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
	  git config filter.nbstripout.smudge cat && \
	  git config diff.ipynb.textconv '$(NBSTRIPOUT) -t' && \
	  echo "git: notebooks/*.ipynb are committed without outputs (nbstripout filter)"; fi
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
# runs/study/study.md (a copy: figures/study.md). 65 runs, 16 min on the 2-core CPU.
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

# make reproduce CARS_ROOT=/path/to/stanford_cars [SEEDS="0 1 2"]     (runs/paper)
# make reproduce DATASET=sop ROOT=/path/to/Stanford_Online_Products   (runs/paper-sop)
# make reproduce DATASET=cub200 ROOT=/path/to/CUB_200_2011             (runs/paper-cub200)
DATASET ?= stanford_cars
ROOT ?= $(CARS_ROOT)
reproduce: $(VENV)/.installed
	@test -n "$(ROOT)" || { echo "Set ROOT (or CARS_ROOT) to your $(DATASET) folder: make reproduce DATASET=$(DATASET) ROOT=/data/..."; exit 2; }
	$(PY) -m qlib.pipeline reproduce --dataset $(DATASET) --root "$(ROOT)" $(if $(SEEDS),--seeds $(SEEDS),)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py
