"""The papermill pipeline: its plan per mode, resume, failure messages naming the notebook and
the cell, and the whole pipeline at smoke size (marked `notebook`)."""

import nbformat
import pandas as pd
import pytest

from qlib import pipeline
from qlib.table import paper_table1


def tiny_notebook(path, parameters: str, body: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_plan_demo_runs_every_method_then_evaluates_and_tabulates():
    steps = pipeline.plan("demo")
    notebooks = [s.notebook for s in steps]
    assert notebooks[:2] == ["01_data_prep.ipynb", "02_mining_toy.ipynb"]
    assert notebooks[-1] == "05_table1.ipynb"
    train = [s for s in steps if s.notebook == "03_train.ipynb"]
    assert [s.parameters["method"] for s in train] == list(pipeline.METHODS)
    assert {s.parameters["preset"] for s in train} == {"demo"}
    assert {s.parameters["resume"] for s in train} == {False}  # the demo always retrains
    assert [s.name for s in train][2] == "03_train_method2.ipynb"
    evaluate = [s for s in steps if s.notebook == "04_evaluate.ipynb"]
    assert [s.parameters["run_name"] for s in evaluate] == [
        "random_seed0",
        "method1_seed0",
        "method2_seed0",
    ]
    assert notebooks.index("04_evaluate.ipynb") > max(
        i for i, n in enumerate(notebooks) if n == "03_train.ipynb"
    )
    for step in steps:
        assert step.parameters["run_root"].endswith("runs/demo")
        assert step.parameters["smoke"] is False
    assert steps[0].parameters["dataset"] == "synthetic"


def test_plan_reproduce_every_method_and_seed(tmp_path):
    steps = pipeline.plan("reproduce", tmp_path / "paper", root="/data/cars", seeds=[0, 1])
    train = [s for s in steps if s.notebook == "03_train.ipynb"]
    assert len(train) == 2 * len(pipeline.METHODS)
    assert {s.parameters["preset"] for s in train} == {"paper"}
    assert {s.parameters["resume"] for s in train} == {True}
    assert "03_train_method1_seed1.ipynb" in {s.name for s in train}
    assert train[0].run_dir == tmp_path / "paper" / "random_seed0"
    assert (
        steps[0].parameters | {"root": "/data/cars", "dataset": "stanford_cars"}
        == steps[0].parameters
    )
    assert len({s.name for s in steps}) == len(steps)  # no executed copy overwrites another
    # Stanford Cars figures stay with the runs: the committed figures/ are the demo's.
    assert {s.parameters["figures_dir"] for s in steps} == {str(tmp_path / "paper" / "figures")}


def test_plan_bad_inputs():
    with pytest.raises(ValueError, match="mode"):
        pipeline.plan("fast")
    with pytest.raises(ValueError, match="--root"):
        pipeline.plan("reproduce")
    with pytest.raises(ValueError, match="unknown methods"):
        pipeline.plan("smoke", methods=["clustering"])
    with pytest.raises(ValueError, match="seeds"):
        pipeline.plan("smoke", seeds=[-1])


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    steps = [
        s for s in pipeline.plan("reproduce", tmp_path, root="x") if s.notebook == "03_train.ipynb"
    ]
    finished = {steps[0].run_dir, steps[3].run_dir}
    monkeypatch.setattr(pipeline, "run_finished", lambda run_dir: run_dir in finished)
    ran = []
    monkeypatch.setattr(pipeline, "_execute", lambda step, output, **kw: ran.append(step.run_dir))
    records = pipeline.run_pipeline(steps, tmp_path / "executed", resume=True, echo=lambda s: None)
    assert [r["status"] for r in records].count("skipped") == 2
    assert set(ran) == {s.run_dir for s in steps} - finished
    assert (tmp_path / "pipeline_timings.json").is_file()


@pytest.mark.notebook
def test_failure_names_the_notebook_and_the_cell(tmp_path, monkeypatch):
    tiny_notebook(tmp_path / "01_data_prep.ipynb", "run_root = ''  # where", "y = 1\n1 / 0")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    step = pipeline.Step("01_data_prep.ipynb", {"run_root": str(tmp_path)}, "01_data_prep.ipynb")
    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.run_pipeline(
            [step], tmp_path / "executed", progress_bar=False, echo=lambda s: None
        )
    message = str(info.value)
    assert "01_data_prep" in message and "cell 3" in message  # the injected cell counts too
    assert "ZeroDivisionError" in message and "'y = 1'" in message
    assert (tmp_path / "executed" / "01_data_prep.ipynb").is_file()


@pytest.mark.notebook
def test_undeclared_parameter_is_refused(tmp_path, monkeypatch):
    tiny_notebook(tmp_path / "02_mining_toy.ipynb", "run_root = ''  # where", "pass")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    step = pipeline.Step("02_mining_toy.ipynb", {"run_root": "x", "sede": 1}, "02_mining_toy.ipynb")
    with pytest.raises(pipeline.PipelineError, match=r"02_mining_toy.*\['sede'\]"):
        pipeline.run_pipeline([step], tmp_path / "executed", echo=lambda s: None)


def test_main_reports_bad_arguments(capsys):
    assert pipeline.main(["reproduce"]) == 1
    assert "--root" in capsys.readouterr().err


@pytest.mark.notebook
def test_smoke_pipeline_produces_every_result(tmp_path):
    run_root = tmp_path / "smoke"  # a smoke experiment's own folder (see experiment_root)
    steps = pipeline.plan("smoke", run_root)
    records = pipeline.run_pipeline(steps, tmp_path / "executed", progress_bar=False, echo=print)
    assert [r["status"] for r in records] == ["ran"] * len(steps)
    for step in steps:
        assert (tmp_path / "executed" / step.name).is_file(), step.name
    assert (run_root / "data" / "manifest.csv").is_file()  # 01
    assert any((run_root / "toy").iterdir())  # 02
    for method in pipeline.METHODS:  # 03
        run_dir = run_root / f"{method}_seed0"
        assert (run_dir / "metrics.json").is_file() and (run_dir / "config.json").is_file()
    assert (run_root / "method2_seed0" / "eval.json").is_file()  # 04
    figures = run_root / "figures"
    for name in ("eval_umap_method2_seed0.png", "table1.md", "table1.csv", "table1_bars.png"):
        assert (figures / name).is_file(), name  # 04, 05: smoke figures stay under run_root
    table = pd.read_csv(figures / "table1.csv", index_col="method")
    assert list(table.index) == list(paper_table1().index)
    assert table.loc[list(pipeline.METHODS), "n_seeds"].eq(1).all()
    assert table.loc["clustering", "n_seeds"] == 0 and pd.isna(table.loc["clustering", "R@1"])
