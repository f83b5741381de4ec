"""The papermill pipeline: its plan per mode, resume, failure messages naming the notebook and
the cell, and the whole pipeline at smoke size (marked `notebook`)."""

import json

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


def test_plan_demo_trains_every_method_and_seed_then_notebooks():
    steps = pipeline.plan("demo")
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    assert names[0] == "01_data_prep.ipynb" and names[-1] == "05_table1.ipynb"
    assert [s.notebook for s in steps if s.kind == "notebook"] == [
        "01_data_prep.ipynb",
        "02_mining_toy.ipynb",
        "04_evaluate.ipynb",
        "04_evaluate.ipynb",
        "04_evaluate.ipynb",
        "03_train.ipynb",
        "05_table1.ipynb",
    ]
    train = [s for s in steps if s.kind == "train"]
    assert len(train) == 8 * 3  # every Table 1 row, clustering included, 3 seeds
    assert {(s.parameters["method"], s.parameters["seed"]) for s in train} == {
        (m, seed) for m in pipeline.METHODS for seed in (0, 1, 2)
    }
    assert "clustering" in pipeline.METHODS
    assert {s.parameters["preset"] for s in train} == {"demo"}
    assert {s.parameters["resume"] for s in train} == {False}  # the demo always retrains
    for s in train:
        assert s.run_dir.name == f"{s.parameters['method']}_seed{s.parameters['seed']}"
    # The warm start is trained before the runs that start from it.
    warm = [s for s in steps if s.kind == "warmstart"]
    assert warm and all(len(s.after) == 1 and s.after[0].startswith("warmstart") for s in train)
    assert {a for s in train for a in s.after} == {w.name for w in warm}
    assert all(w.after == ("01_data_prep.ipynb",) for w in warm)
    evaluate = [s for s in steps if s.notebook == "04_evaluate.ipynb"]
    assert [s.parameters["run_name"] for s in evaluate] == [
        "random_seed0",
        "method1_seed0",
        "method2_seed0",
    ]
    assert [s.after for s in evaluate] == [
        ("train random_seed0",),
        ("train method1_seed0",),
        ("train method2_seed0",),
    ]
    (showcase,) = [s for s in steps if s.notebook == "03_train.ipynb"]
    assert showcase.parameters["resume"] is True  # shows a finished run, does not retrain
    assert showcase.parameters["method"] == "method2" and showcase.parameters["seed"] == 0
    assert set(steps[-1].after) == {s.name for s in train}
    run_root = steps[0].parameters["run_root"]
    assert run_root == "runs/demo"  # relative: a moved or cloned repository resumes its runs
    for step in steps:
        assert step.parameters["run_root"] == run_root
        if step.kind == "notebook":  # a fresh clone stays clean: figures under runs/
            assert step.parameters["figures_dir"] == run_root + "/figures"
            assert step.parameters["smoke"] is False
    assert steps[0].parameters["dataset"] == "synthetic"
    # Every step comes after the steps it waits for (priority order is a valid order).
    seen = set()
    for step in steps:
        assert set(step.after) <= seen, step.name
        seen.add(step.name)


def test_plan_seeds_and_figures_mode():
    steps = pipeline.plan("demo", seeds=[4, 7], methods=["random", "method2"])
    train = [s for s in steps if s.kind == "train"]
    assert [s.name for s in train] == [
        "train random_seed4",
        "train method2_seed4",
        "train random_seed7",
        "train method2_seed7",
    ]
    assert [s.parameters["run_name"] for s in steps if s.notebook == "04_evaluate.ipynb"] == [
        "random_seed4",
        "method2_seed4",
    ]
    figures = pipeline.plan("figures")
    assert {s.parameters["figures_dir"] for s in figures if s.kind == "notebook"} == {"figures"}
    assert {s.parameters["resume"] for s in figures if s.kind == "train"} == {True}


def test_plan_reproduce_every_method_and_seed(tmp_path):
    steps = pipeline.plan("reproduce", tmp_path / "paper", root="/data/cars", seeds=[0, 1])
    train = [s for s in steps if s.kind == "train"]
    assert len(train) == 2 * len(pipeline.METHODS)
    assert {s.parameters["preset"] for s in train} == {"paper"}
    assert {s.parameters["resume"] for s in train} == {True}
    assert {s.parameters["root"] for s in train} == {"/data/cars"}
    assert "train method1_seed1" in {s.name for s in train}
    assert train[0].run_dir == tmp_path / "paper" / "random_seed0"
    assert not [s for s in steps if s.kind == "warmstart"]  # ImageNet weights, no classifier
    assert (
        steps[0].parameters | {"root": "/data/cars", "dataset": "stanford_cars"}
        == steps[0].parameters
    )
    assert len({s.name for s in steps}) == len(steps)  # no executed copy overwrites another
    # Stanford Cars figures stay with the runs: the committed figures/ are the demo's.
    notebooks = [s for s in steps if s.kind == "notebook"]
    assert {s.parameters["figures_dir"] for s in notebooks} == {str(tmp_path / "paper" / "figures")}


@pytest.mark.parametrize("dataset", ["sop", "cub200"])
def test_plan_reproduce_on_another_dataset(dataset):
    steps = pipeline.plan("reproduce", root="/data/x", dataset=dataset, seeds=[0])
    data, train = steps[0], [s for s in steps if s.kind == "train"]
    assert data.parameters["dataset"] == dataset and data.parameters["coarse"] == ""
    assert {s.parameters["dataset"] for s in train} == {dataset}
    assert {s.run_dir.parent.name for s in train} == {f"paper-{dataset}"}  # not runs/paper
    config = pipeline.training_config(train[0].parameters)
    assert (config.dataset, config.root, config.coarse) == (dataset, "/data/x", "")
    (showcase,) = [s for s in steps if s.notebook == "03_train.ipynb"]
    assert showcase.parameters["dataset"] == dataset


def test_plan_bad_inputs():
    with pytest.raises(ValueError, match="mode"):
        pipeline.plan("fast")
    with pytest.raises(ValueError, match="--root"):
        pipeline.plan("reproduce")
    with pytest.raises(ValueError, match="only reproduce"):
        pipeline.plan("demo", dataset="sop")
    with pytest.raises(ValueError, match="one of"):
        pipeline.plan("reproduce", root="x", dataset="imagenet")
    with pytest.raises(ValueError, match="unknown methods"):
        pipeline.plan("smoke", methods=["facility"])
    with pytest.raises(ValueError, match="seeds"):
        pipeline.plan("smoke", seeds=[-1])
    with pytest.raises(ValueError, match="seeds"):
        pipeline.plan("smoke", seeds=[1, 1])


def test_steps_wait_for_their_dependencies_and_resume_skips_finished_runs(tmp_path, monkeypatch):
    steps = pipeline.plan("reproduce", tmp_path, root="x", methods=["random", "method2"])
    trained = [s for s in steps if s.kind == "train"]
    finished = {trained[0].run_dir, trained[3].run_dir}
    monkeypatch.setattr(pipeline, "run_finished", lambda step: step.run_dir in finished)
    ran = []

    def fake_run(step, options):
        assert set(step.after) <= {r.name for r in ran} | skipped_names, step.name
        ran.append(step)
        return 0.0

    skipped_names = {s.name for s in trained if s.run_dir in finished}
    monkeypatch.setattr(pipeline, "_run_step", fake_run)
    records = pipeline.run_pipeline(steps, tmp_path / "executed", echo=lambda s: None)
    assert [r["status"] for r in records].count("skipped") == 2
    assert {s.run_dir for s in ran if s.kind == "train"} == {s.run_dir for s in trained} - finished
    assert len(records) == len(steps)
    timings = (tmp_path / "pipeline_timings.json").read_text()
    assert "load_average_start" in timings and "torch_threads_per_training" in timings


def test_a_warm_start_is_skipped_only_when_all_its_trainings_are(tmp_path, monkeypatch):
    steps = pipeline.plan("smoke", tmp_path, methods=["random", "method2"])
    warm_starts = [s for s in steps if s.kind == "warmstart"]
    assert warm_starts
    for finished in ({"random_seed0", "method2_seed0"}, {"random_seed0"}):
        is_finished = lambda step, done=finished: step.run_dir.name in done  # noqa: E731
        monkeypatch.setattr(pipeline, "run_finished", is_finished)
        skipped = {s.name for s in steps if pipeline._resumable(s, steps)}
        trainings = {s.name for s in steps if s.kind == "train" and s.run_dir.name in finished}
        all_finished = len(finished) == 2
        assert skipped == trainings | ({w.name for w in warm_starts} if all_finished else set())


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


@pytest.mark.notebook
def test_kernels_run_headless_without_widgets(tmp_path, monkeypatch):
    # ipywidgets.interact cells can hang a headless nbclient at random: the pipeline's kernels
    # behave as an install without ipywidgets (the notebooks handle that), tqdm falls back.
    body = (
        "try:\n    import ipywidgets\nexcept ImportError:\n    ipywidgets = None\n"
        "assert ipywidgets is None\n"
        "from tqdm.auto import tqdm\nassert sum(tqdm(range(3))) == 3"
    )
    tiny_notebook(tmp_path / "02_mining_toy.ipynb", "run_root = ''  # where", body)
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    step = pipeline.Step("02_mining_toy.ipynb", {"run_root": str(tmp_path)}, "02_mining_toy.ipynb")
    records = pipeline.run_pipeline(
        [step], tmp_path / "executed", progress_bar=False, cell_timeout=120, echo=lambda s: None
    )
    assert records[0]["status"] == "ran"


def test_main_reports_bad_arguments(capsys):
    assert pipeline.main(["reproduce"]) == 1
    assert "--root" in capsys.readouterr().err


@pytest.mark.notebook
def test_smoke_pipeline_produces_every_result(tmp_path):
    run_root = tmp_path / "smoke"  # a smoke experiment's own folder (see experiment_root)
    steps = pipeline.plan("smoke", run_root)
    records = pipeline.run_pipeline(
        steps, tmp_path / "executed", workers=2, progress_bar=False, echo=print
    )
    assert sorted(r["name"] for r in records) == sorted(s.name for s in steps)
    assert {r["status"] for r in records} == {"ran"}
    for step in steps:
        if step.kind == "notebook":
            assert (tmp_path / "executed" / step.name).is_file(), step.name
    assert (run_root / "data" / "manifest.csv").is_file()  # 01
    assert any((run_root / "toy").iterdir())  # 02
    assert list((run_root / "warmstart").glob("classifier_*.pt"))  # the warm start
    for method in pipeline.METHODS:  # every Table 1 row trained
        run_dir = run_root / f"{method}_seed0"
        assert (run_dir / "metrics.json").is_file() and (run_dir / "config.json").is_file()
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["config"]["init"] == "classifier"
        assert saved["environment"]["torch_threads"] == 1
    assert (run_root / "method2_seed0" / "eval.json").is_file()  # 04
    figures = run_root / "figures"
    for name in (
        "eval_umap_method2_seed0.png",
        "train_method2_seed0.png",
        "table1.md",
        "table1.csv",
        "table1_bars.png",
        "table1_paired.png",
    ):
        assert (figures / name).is_file(), name  # 03, 04, 05: figures stay under run_root
    table = pd.read_csv(figures / "table1.csv", index_col="method")
    assert list(table.index) == list(paper_table1().index)
    assert table["n_seeds"].eq(1).all()  # every row filled, clustering included
    text = (figures / "table1.md").read_text()
    assert "Paired differences" in text and "How the measured rows were trained" in text


def test_results_do_not_depend_on_the_process_layout(tmp_path):
    """The same runs trained in this process, or two at a time in worker processes, or with
    the warm start trained inside train(): identical classifier, weights and metrics."""
    import torch

    from qlib import train as qtrain

    def runs(root):
        return [
            {"preset": "smoke", "method": m, "seed": 1, "run_root": str(root), "init": "classifier"}
            for m in ("method2", "semihard")
        ]

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    pipeline.train_many(runs(serial), workers=1, echo=lambda s: None)
    pipeline.train_many(runs(parallel), workers=2, echo=lambda s: None)
    direct = qtrain.train(pipeline.training_config(runs(tmp_path / "direct")[0]))
    for method in ("method2", "semihard"):
        a, b = serial / f"{method}_seed1", parallel / f"{method}_seed1"
        assert qtrain.read_metrics(a) == qtrain.read_metrics(b)
        state_a, state_b = qtrain.load_run(a)[1].state_dict(), qtrain.load_run(b)[1].state_dict()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), method
    assert qtrain.read_metrics(direct) == qtrain.read_metrics(serial / "method2_seed1")
    (one,) = (serial / "warmstart").glob("classifier_*.pt")
    (two,) = (tmp_path / "direct" / "warmstart").glob("classifier_*.pt")
    assert one.name == two.name
    first, second = torch.load(one)["model"], torch.load(two)["model"]
    assert all(torch.equal(first[k], second[k]) for k in first)
