"""qlib.tune: the grid of runs on validation classes, the choice rule, the summary files."""

import json

import pytest

from qlib import tune
from qlib.utils import write_json


def test_runs_are_on_validation_classes_with_the_presets_budget(tmp_path):
    runs = tune.tune_runs("demo", ["random", "lifted"], [1e-3, 3e-3], [0, 1], tmp_path)
    assert len(runs) == 2 * 2 * 2
    assert {r["eval_split"] for r in runs} == {"val"}
    assert {r["preset"] for r in runs} == {"demo"}
    assert "epochs" not in runs[0] and "init" not in runs[0]  # the preset's budget and start
    assert len({r["run_name"] for r in runs}) == len(runs)
    assert runs[0]["run_name"] == "random_lr0.001_seed0"


def test_choose_takes_the_best_mean_and_the_smaller_rate_on_ties():
    assert tune.choose({1e-3: [50.0, 52.0], 3e-3: [53.0, 50.0]}) == 3e-3
    assert tune.choose({1e-3: [50.0, 52.0], 3e-4: [51.0, 50.96]}) == 3e-4  # within 0.05
    assert tune.choose({1e-2: [10.0], 1e-3: [9.0]}) == 1e-2
    with pytest.raises(ValueError, match="no finished tuning run"):
        tune.choose({})


def test_summarize_reads_the_final_validation_metrics(tmp_path):
    runs = tune.tune_runs("demo", ["method2"], [1e-3, 3e-3], [0, 1], tmp_path)
    scores = {(1e-3, 0): 50.0, (1e-3, 1): 54.0, (3e-3, 0): 51.0, (3e-3, 1): 40.0}
    for run in runs:
        r1 = scores[(run["lr"], run["seed"])]
        final = {"R@1": r1, "R@2": r1, "R@4": r1, "R@8": r1, "NMI": 1.0, "final": True}
        write_json(tmp_path / run["run_name"] / "metrics.json", [final])
    summary = tune.summarize(runs, tmp_path)["method2"]
    assert summary["chosen_lr"] == 1e-3
    assert summary["mean"] == {"0.001": 52.0, "0.003": 45.5}
    assert len(summary["runs"]) == 4
    json.dumps(summary)  # the report is plain JSON


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown preset"):
        tune.tune("huge")
    with pytest.raises(ValueError, match="unknown methods"):
        tune.tune("demo", methods=["facility"])
    assert tune.main(["--preset", "huge"]) == 1
