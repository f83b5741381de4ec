"""Notebook 01 at smoke size under papermill: it writes the manifest and the summary, shows the
reader no warning, and prints no stray `Out[n]` under its figures."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

from qlib import data
from qlib.utils import read_json, repo_root

REPO = repo_root()


@pytest.mark.notebook
def test_notebook_01_smoke(tmp_path):
    papermill = pytest.importorskip("papermill")
    env_path = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_path + os.pathsep + os.environ.get("PATH", "")
    run_root = tmp_path / "smoke"  # a smoke run_root (others get a smoke/ subfolder)
    executed = tmp_path / "01_executed.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "01_data_prep.ipynb"),
        str(executed),
        parameters={"smoke": True, "run_root": str(run_root)},
        kernel_name="python3",
        cwd=str(REPO),
        progress_bar=False,
    )
    manifest = data.load_manifest(run_root / "data" / "manifest.csv")
    summary = read_json(run_root / "data" / "summary.json")
    assert summary["n_images"] == len(manifest) == 96
    assert 0 <= summary["baselines"]["untrained_smallcnn"]["R@1"] <= 100
    assert (run_root / "figures" / "data_examples.png").is_file()
    for cell in nbformat.read(executed, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        stderr = [o.get("text", "") for o in cell.outputs if o.get("name") == "stderr"]
        assert not stderr, f"the reader sees {stderr} under {cell.source[:60]!r}"
        if "save_figure" in cell.source:
            assert all(o.output_type != "execute_result" for o in cell.outputs), cell.source
