"""benchmarks/gpu_check.sh on a machine without a GPU: one sentence, exit 0; and its steps at toy
size on the CPU (--cpu-self-test), so the script a GPU session runs is known to work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_sentence():
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("No CUDA GPU on this machine")
    assert len(done.stdout.strip().splitlines()) == 1


def test_cpu_self_test_runs_every_step():
    done = run("--cpu-self-test", "--iterations", "6")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = done.stdout
    assert "all checks passed" in report
    assert "Selection over a 2,000 x 64 bank" in report
    for method in ("method2", "method1", "random", "semihard"):
        assert f"| {method} |" in report
    assert "Data loading" in report
