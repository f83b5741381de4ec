"""The notebooks as a reader meets them: committed without outputs (what the nbstripout filter
keeps), the pipeline's parameters declared, smoke runs kept out of real experiments, and
executed cells free of warnings and of stray `Out[n]` under figures."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qlib import pipeline
from qlib.utils import experiment_root, repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("*.ipynb"))
# What JupyterLab adds to a notebook's metadata and the Makefile's nbstripout filter removes.
LAB_KEYS = " ".join(
    f"metadata.language_info.{k}"
    for k in (
        "codemirror_mode", "file_extension", "mimetype", "nbconvert_exporter", "pygments_lexer",
        "version",
    )
)  # fmt: skip


def test_experiment_root_keeps_smoke_runs_out_of_real_experiments(tmp_path):
    assert experiment_root(tmp_path / "demo", smoke=False) == tmp_path / "demo"
    assert experiment_root(tmp_path / "demo", smoke=True) == tmp_path / "demo" / "smoke"
    assert experiment_root(tmp_path / "smoke", smoke=True) == tmp_path / "smoke"
    assert experiment_root(tmp_path / "my_smoke_test", smoke=True) == tmp_path / "my_smoke_test"
    assert experiment_root("runs/demo", smoke=True) == repo_root() / "runs" / "demo" / "smoke"
    # Idempotent: notebook 04 maps the folder notebook 03 mapped to the same place.
    once = experiment_root(tmp_path / "paper", smoke=True)
    assert experiment_root(once, smoke=True) == once
    # The pipeline's smoke mode hands every notebook the folder 03/04 would use.
    steps = pipeline.plan("smoke", tmp_path / "runs")
    assert {s.parameters["run_root"] for s in steps} == {str(tmp_path / "runs" / "smoke")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    assert "widgets" not in nb.metadata
    stripped = _nbstripout(path.read_bytes())
    if stripped is not None:  # the git filter would not change the committed file
        assert stripped == path.read_bytes(), f"{path.name}: run `nbstripout --keep-id` on it"


def test_the_git_filter_undoes_an_interactive_session():
    """What JupyterLab saves after Run All (outputs, counts, widget state, language details)
    goes back to the committed bytes through the filter `make` registers."""
    path = repo_root() / "notebooks" / "03_train.ipynb"
    nb = nbformat.read(path, as_version=4)
    for count, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = count + 1
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="hello\n"),
            nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"}),
        ]
        cell.metadata["scrolled"] = True
    nb.metadata["language_info"] |= {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
        "mimetype": "text/x-python", "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3", "version": "3.11.7",
    }  # fmt: skip
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    saved = nbformat.writes(nb).encode()
    assert _nbstripout(saved) == path.read_bytes()


def _nbstripout(content: bytes) -> bytes | None:
    pytest.importorskip("nbstripout")
    result = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--keep-id", "--extra-keys", LAB_KEYS, "-t"],
        input=content,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_notebooks_03_04_declare_what_the_pipeline_passes():
    for step in pipeline.plan("demo") + pipeline.plan("reproduce", root="/data"):
        if step.notebook in ("03_train.ipynb", "04_evaluate.ipynb"):
            declared = pipeline.declared_parameters(repo_root() / "notebooks" / step.notebook)
            assert set(step.parameters) <= set(declared), step.name
    declared = pipeline.declared_parameters(repo_root() / "notebooks" / "03_train.ipynb")
    assert {"progress", "n_shown", "smoke", "run_root", "resume"} <= set(declared)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _execute(notebook: str, output: Path, parameters: dict) -> nbformat.NotebookNode:
    import papermill as pm

    pm.execute_notebook(
        str(repo_root() / "notebooks" / notebook),
        str(output),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(repo_root() / "notebooks"),
        execution_timeout=900,  # a cell that hangs fails the test instead of blocking the suite
    )
    return nbformat.read(output, as_version=4)


def _reader_sees(nb: nbformat.NotebookNode) -> list[str]:
    """What a reader would find ugly: warnings or other stderr text, and a cell that both
    draws a figure and prints a value as Out[n]."""
    problems = []
    for index, cell in enumerate(nb.cells):
        outputs = cell.get("outputs", [])
        for out in outputs:
            if out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {index} writes to stderr: {out.text[:200]!r}")
            if out.output_type == "error":
                problems.append(f"cell {index} raised {out.ename}")
        figure = any("image/png" in out.get("data", {}) for out in outputs)
        result = [out for out in outputs if out.output_type == "execute_result"]
        if figure and result:
            shown = result[0]["data"].get("text/plain", "")[:80]
            problems.append(f"cell {index} shows Out[n] under a figure: {shown}")
    return problems


@pytest.mark.notebook
def test_smoke_notebooks_never_touch_a_real_experiment(tmp_path):
    """03 then 04 at smoke=True, given a real experiment's folder: everything they write goes
    to <run_root>/smoke, the experiment's files stay as they were, and 04 finds 03's run."""
    real = tmp_path / "demo"
    (real / "data").mkdir(parents=True)
    (real / "data" / "manifest.csv").write_text("path,fine,coarse,split\nnot/used.png,0,0,train\n")
    (real / "method2_seed0").mkdir()
    (real / "method2_seed0" / "config.json").write_text('{"config": "a real run"}')
    before = _snapshot(real)

    common = {"run_root": str(real), "smoke": True, "figures_dir": ""}
    nb03 = _execute("03_train.ipynb", tmp_path / "03.ipynb", {**common, "method": "method2"})
    nb04 = _execute(
        "04_evaluate.ipynb", tmp_path / "04.ipynb", {**common, "run_name": "method2_seed0"}
    )

    # Run again, as a reader would: the finished smoke run resumes (is not retrained).
    again = _execute("03_train.ipynb", tmp_path / "03b.ipynb", {**common, "method": "method2"})
    assert _reader_sees(again) == []

    after = _snapshot(real)
    assert {k: v for k, v in after.items() if not k.startswith("smoke/")} == before
    smoke = real / "smoke"
    assert (smoke / "method2_seed0" / "metrics.json").is_file()
    assert (smoke / "method2_seed0" / "eval.json").is_file()
    assert (smoke / "method2_seed0" / "embeddings_test.npz").is_file()
    assert (smoke / "figures" / "fig_dissection_iteration.png").is_file()
    assert _reader_sees(nb03) == [] and _reader_sees(nb04) == []
    shutil.rmtree(smoke)


def test_figure_slider_redraws_without_an_output_widget(capsys):
    """The notebooks' sliders: the figure for the slider's value is shown at once, and moving the
    slider redraws it (no ipywidgets.interact, whose Output widget can hang papermill)."""
    widgets = pytest.importorskip("ipywidgets")
    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.instance()  # display() then returns handles, as in a kernel

    from qlib import plots

    drawn = []

    def draw(value):
        drawn.append(value)
        fig, ax = plt.subplots()
        ax.plot([0, value])
        return fig

    slider = widgets.IntSlider(min=0, max=5, value=2)
    try:
        plots.figure_slider(draw, slider)
        slider.value = 4
    finally:
        InteractiveShell.clear_instance()
    assert drawn == [2, 4]
    assert plt.get_fignums() == []  # closed: shown only through the display
