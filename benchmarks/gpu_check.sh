#!/usr/bin/env bash
# One command to check this project on a GPU (issue 11), at most about 5 minutes on one GPU:
# the CUDA tests, selection against its floor, paper-preset training throughput per method
# (ResNet-101, 224 px, AMP, random weights, synthetic cars196), the data-loading rate and a
# torchrun launch. Writes benchmarks/results/gpu_check.{json,md} and prints the table.
# Without a GPU it says so in one sentence and exits 0.
#
#   bash benchmarks/gpu_check.sh [--iterations 200] [--methods method2 semihard]
#   bash benchmarks/gpu_check.sh --cpu-self-test   # the same steps at toy size on the CPU
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
exec "$PYTHON" benchmarks/gpu_check.py "$@"
