"""Table 1 from metrics files the test writes: rows, columns, differences, mean ± sample std,
missing runs shown as missing, malformed files named in the error."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from qlib import table
from qlib.utils import write_json

# Final metrics per (method, seed); random has no run (missing), method2 has three seeds.
RUNS = {
    ("method2", 0): [60.0, 70.0, 80.0, 90.0, 50.0],
    ("method2", 1): [62.0, 71.0, 81.0, 91.0, 52.0],
    ("method2", 2): [67.0, 75.0, 85.5, 92.0, 57.0],
    ("method1", 0): [55.5, 66.0, 77.0, 88.0, 44.0],
    ("semihard", 3): [40.0, 50.0, 60.0, 70.0, 30.0],
}


def write_run(run_root, method, seed, values, *, with_config=True, history=True, finished=True):
    run_dir = run_root / f"{method}_seed{seed}"
    run_dir.mkdir(parents=True)
    final = dict(zip(table.METRICS, values, strict=True)) | {"epoch": 2, "iteration": 20}
    final["final"] = finished
    # An earlier evaluation first: only the last entry is the final result.
    early = dict.fromkeys(table.METRICS, 1.0) | {"epoch": 1, "iteration": 10}
    write_json(run_dir / "metrics.json", [early, final] if history else [final])
    if with_config:
        config = {"method": method, "seed": seed, "preset": "smoke", "dataset": "synthetic"}
        write_json(run_dir / "config.json", {"config": config, "environment": {"device": "cpu"}})
    return run_dir


@pytest.fixture
def run_root(tmp_path):
    for (method, seed), values in RUNS.items():
        write_run(tmp_path, method, seed, values)
    # Folders without metrics.json (data, figures) are not runs.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "summary.json").write_text("{}")
    return tmp_path


def test_paper_table_is_the_papers_order_and_values():
    paper = table.paper_table1()
    assert list(paper.index) == [
        "semihard",
        "lifted",
        "npairs",
        "clustering",
        "triplet_global",
        "random",
        "method1",
        "method2",
    ]
    assert paper.loc["method2", "R@1"] == 66.06
    assert paper.loc["semihard", "NMI"] == 55.38
    assert paper.loc["clustering", "NMI_cars196"] == 59.04
    assert math.isnan(paper.loc["method1", "NMI_cars196"])
    assert list(paper["comparable"]) == [False] * 5 + [True] * 3


def test_collect_runs_reads_final_evaluation(run_root):
    runs = table.collect_runs(run_root)
    assert len(runs) == len(RUNS)
    assert set(zip(runs["method"], runs["seed"], strict=True)) == set(RUNS)
    for _, row in runs.iterrows():
        assert [row[m] for m in table.METRICS] == RUNS[(row["method"], row["seed"])]
        assert row["epoch"] == 2 and row["iteration"] == 20
        assert row["dataset"] == "synthetic"


def test_collect_runs_uses_folder_name_without_config(tmp_path):
    write_run(tmp_path, "triplet_global", 7, [1, 2, 3, 4, 5], with_config=False, history=False)
    runs = table.collect_runs(tmp_path)
    assert runs.loc[0, "method"] == "triplet_global" and runs.loc[0, "seed"] == 7


def test_build_table1_rows_columns_mean_std_and_differences(run_root):
    result = table.build_table1(table.collect_runs(run_root))
    paper = table.paper_table1()
    assert list(result.index) == list(paper.index)
    for metric in table.METRICS:
        for suffix in ("", "_std", "_paper", "_diff"):
            assert f"{metric}{suffix}" in result.columns
    for method in paper.index:
        seeds = sorted(s for m, s in RUNS if m == method)
        row = result.loc[method]
        assert row["n_seeds"] == len(seeds)
        for j, metric in enumerate(table.METRICS):
            values = [RUNS[(method, s)][j] for s in seeds]
            assert row[f"{metric}_paper"] == paper.loc[method, metric]
            if not values:
                assert math.isnan(row[metric]) and math.isnan(row[f"{metric}_diff"])
                continue
            expected_mean = sum(values) / len(values)
            assert row[metric] == pytest.approx(expected_mean)
            assert row[f"{metric}_diff"] == pytest.approx(expected_mean - paper.loc[method, metric])
            if len(values) > 1:
                # Sample standard deviation (ddof=1), as the docstring says.
                assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(values))
            else:
                assert math.isnan(row[f"{metric}_std"])


def test_missing_method_is_missing_not_zero(run_root):
    result = table.build_table1(table.collect_runs(run_root))
    for method in ("random", "lifted", "npairs", "clustering", "triplet_global"):
        assert result.loc[method, "n_seeds"] == 0
        assert result.loc[method, [*table.METRICS]].isna().all()
    markdown = table.to_markdown(result)
    random_line = next(line for line in markdown.splitlines() if "Random Quadruplet" in line)
    cells = [c.strip() for c in random_line.strip("|").split("|")]
    # name, seeds, then (measured, paper, Δ) per metric.
    assert cells[1] == "0"
    assert cells[2::3] == [table.MISSING] * 5
    assert cells[3::3] == ["61.49", "73.41", "82.88", "89.92", "54.50"]
    assert cells[4::3] == [table.MISSING] * 5
    assert " 0.00 " not in random_line


def test_markdown_shows_mean_plus_minus_std_and_signed_difference(run_root):
    result = table.build_table1(table.collect_runs(run_root))
    markdown = table.to_markdown(result)
    line = next(line for line in markdown.splitlines() if "Proposed Method 2" in line)
    cells = [c.strip() for c in line.strip("|").split("|")]
    r1 = [60.0, 62.0, 67.0]
    assert cells[1] == "3"
    assert cells[2] == f"{np.mean(r1):.2f} ± {statistics.stdev(r1):.2f}"
    assert cells[4] == f"{np.mean(r1) - 66.06:+.2f}".replace("-", "−")
    header = [c.strip() for c in markdown.splitlines()[0].strip("|").split("|")]
    assert len(header) == len(cells) == 2 + 3 * len(table.METRICS)
    # Non-comparable rows are starred.
    assert "Semi-Hard [18] *" in markdown


def test_writers_round_trip(run_root, tmp_path):
    result = table.build_table1(table.collect_runs(run_root))
    csv_path = table.to_csv(result, tmp_path / "out" / "table1.csv")
    back = pd.read_csv(csv_path, index_col="method")
    assert list(back.index) == list(result.index)
    np.testing.assert_allclose(back["R@1"], result["R@1"])
    md_path = table.write_markdown(result, tmp_path / "out" / "table1.md")
    text = md_path.read_text()
    assert "Harwood" in text and "CUB-200" in text and "Proposed Method 1" in text


def test_extra_method_is_kept_after_the_paper_rows(run_root):
    write_run(run_root, "mystery", 0, [10, 20, 30, 40, 50])
    result = table.build_table1(table.collect_runs(run_root))
    assert result.index[-1] == "mystery"
    assert result.loc["mystery", "R@1"] == 10 and math.isnan(result.loc["mystery", "R@1_paper"])


def test_empty_run_root_gives_all_missing(tmp_path):
    result = table.build_table1(table.collect_runs(tmp_path))
    assert len(result) == 8 and (result["n_seeds"] == 0).all()
    assert result[list(table.METRICS)].isna().all().all()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "no evaluations"),
        ('[{"R@1": 1, "R@2": 2, "R@4": 3, "R@8": 4}]', "lacks"),
        ('[{"R@1": 1, "R@2": 2, "R@4": 3, "R@8": 4, "NMI": null}]', "finite number"),
        ('[{"R@1": 1, "R@2": 2, "R@4": 3, "R@8": 400, "NMI": 5}]', "percentage"),
    ],
)
def test_malformed_metrics_file_is_named(run_root, content, message):
    bad = run_root / "lifted_seed0"
    bad.mkdir()
    (bad / "metrics.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        table.collect_runs(run_root)
    assert str(bad / "metrics.json") in str(info.value)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        table.collect_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="lacks columns"):
        table.build_table1(pd.DataFrame({"method": ["random"]}))
    odd = tmp_path / "odd_run"
    odd.mkdir()
    write_json(odd / "metrics.json", [dict.fromkeys(table.METRICS, 1.0)])
    with pytest.raises(ValueError, match="cannot tell the method and seed"):
        table.collect_runs(tmp_path)


def test_unfinished_run_is_counted_not_averaged(run_root):
    write_run(run_root, "method1", 5, [99, 99, 99, 99, 99], finished=False)
    runs = table.collect_runs(run_root)
    assert runs["final"].sum() == len(RUNS)
    result = table.build_table1(runs)
    assert result.loc["method1", "n_seeds"] == 1 and result.loc["method1", "n_unfinished"] == 1
    assert result.loc["method1", "R@1"] == RUNS[("method1", 0)][0]
    assert "1 unfinished run(s)" in table.to_markdown(result)


# ----------------------------------------------------------------------------------------------
# Every row filled, how the rows were trained, paired differences in the markdown
# ----------------------------------------------------------------------------------------------

DEMO_SETUP = {
    "dataset": "synthetic",
    "synthetic_size": "demo",
    "backbone": "smallcnn",
    "embedding_dim": 128,
    "optimizer": "adam",
    "init": "classifier",
    "classifier_epochs": 3,
    "epochs": 3,
    "warmup_epochs": 0,
    "batch_size": 16,
    "reduction": "sum",
}
PAPER_SETUP = {
    "dataset": "stanford_cars",
    "backbone": "resnet101",
    "embedding_dim": 1024,
    "optimizer": "sgd",
    "init": "imagenet",
    "epochs": 40,
    "lr": 3e-4,
}


def write_configured_run(run_root, method, seed, r1, setup):
    run_dir = write_run(run_root, method, seed, [r1, r1 + 1, r1 + 2, r1 + 3, r1 / 2])
    config = {"method": method, "seed": seed, **setup}
    write_json(run_dir / "config.json", {"config": config, "environment": {"torch_threads": 1}})
    return run_dir


def test_every_row_filled_clustering_included(tmp_path):
    for k, method in enumerate(table.paper_table1().index):
        for seed in range(3):
            write_configured_run(tmp_path, method, seed, 40.0 + k + seed, DEMO_SETUP)
    result = table.build_table1(table.collect_runs(tmp_path))
    assert (result["n_seeds"] == 3).all()
    assert result[list(table.METRICS)].notna().all().all()
    assert result.loc["clustering", "R@1"] == pytest.approx(44.0)
    assert "not built" not in " ".join(result["note"]).lower()
    markdown = table.to_markdown(result)
    assert table.MISSING not in markdown.split("\n\n")[0].replace("| — |", "")


def test_protocol_notes_say_how_each_learning_rate_was_chosen(tmp_path, monkeypatch):
    from qlib.train import config as qconfig

    monkeypatch.setitem(qconfig.METHOD_SETTINGS, "demo", {"method2": {"lr": 0.003}})
    write_configured_run(tmp_path, "method2", 0, 50.0, DEMO_SETUP | {"lr": 0.003})
    write_configured_run(tmp_path, "method2", 1, 51.0, DEMO_SETUP | {"lr": 0.003})
    write_configured_run(tmp_path, "random", 0, 50.0, DEMO_SETUP | {"lr": 1e-3})
    write_configured_run(tmp_path, "semihard", 0, 50.0, DEMO_SETUP | {"lr": 0.5})
    notes = table.protocol_notes(table.collect_runs(tmp_path))
    assert "method2 0.003 (chosen on validation classes by `make tune PRESET=demo`)" in notes
    assert "random 0.001 (the `demo` preset's value, not tuned)" in notes
    assert "semihard 0.5 (set by hand" in notes
    assert "Seeds: 0, 1" in notes and "classifier for 3 epoch(s)" in notes
    assert "Torch threads per run: 1" in notes


def test_protocol_notes_of_the_paper_preset(tmp_path, monkeypatch):
    from qlib.train import config as qconfig

    monkeypatch.setitem(qconfig.METHOD_SETTINGS, "paper", {})
    write_configured_run(tmp_path, "method1", 0, 60.0, PAPER_SETUP)
    write_configured_run(tmp_path, "lifted", 0, 60.0, PAPER_SETUP)
    notes = table.protocol_notes(table.collect_runs(tmp_path))
    assert "method1 0.0003 (the paper's)" in notes
    assert "lifted 0.0003 (the paper's rate, not tuned for this baseline" in notes
    assert "one step size for every method" in notes and "ImageNet weights" in notes


def test_markdown_holds_paired_differences_and_notes(tmp_path):
    from qlib import stats

    for seed, (m2, rnd) in enumerate([(55.0, 50.0), (53.0, 52.0), (54.0, 49.0)]):
        write_configured_run(tmp_path, "method2", seed, m2, DEMO_SETUP | {"lr": 1e-3})
        write_configured_run(tmp_path, "random", seed, rnd, DEMO_SETUP | {"lr": 1e-3})
    runs = table.collect_runs(tmp_path)
    comparisons = stats.paired_table(runs, [("method2", "random")], metrics=("R@1", "NMI"))
    text = table.comparisons_markdown(comparisons)
    row = next(line for line in text.splitlines() if line.startswith("| Proposed Method 2"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = stats.paired_comparison(runs, "method2", "random")
    assert cells[0] == "Proposed Method 2 − Random Quadruplet Selection [9]"
    assert cells[1] == "3"
    assert cells[2] == f"+{expected.mean:.2f} [{expected.low:.2f}, {expected.high:.2f}]".replace(
        "-", "−"
    )
    path = table.write_markdown(
        table.build_table1(runs),
        tmp_path / "table1.md",
        comparisons=comparisons,
        notes=table.protocol_notes(runs),
    )
    written = path.read_text()
    assert "Paired differences" in written and "Student's t interval" in written
    assert "How the measured rows were trained" in written and "Harwood" in written


def test_malformed_config_is_named(run_root):
    (run_root / "method2_seed0" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object") as info:
        table.collect_runs(run_root)
    assert "method2_seed0" in str(info.value)
