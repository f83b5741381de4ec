"""qlib.stats: paired differences over seeds and their t interval, held against a hand
computation and scipy.stats on small fake run folders."""

import math

import numpy as np
import pytest
from scipy import stats as sstats

from qlib import stats, table
from qlib.utils import write_json


def write_run(run_root, method, seed, r1, nmi=50.0, finished=True):
    run_dir = run_root / f"{method}_seed{seed}"
    run_dir.mkdir(parents=True)
    final = {"R@1": r1, "R@2": r1, "R@4": r1, "R@8": r1, "NMI": nmi, "epoch": 3, "final": finished}
    write_json(run_dir / "metrics.json", [final])
    write_json(run_dir / "config.json", {"config": {"method": method, "seed": seed}})


# R@1 per seed; method1 lacks seed 3, method2 has an unfinished seed 4.
R1 = {
    "random": {0: 50.0, 1: 52.0, 2: 49.0, 3: 51.0},
    "method1": {0: 53.0, 1: 52.5, 2: 50.0},
    "method2": {0: 55.0, 1: 53.0, 2: 54.0, 3: 50.0},
}


@pytest.fixture
def run_root(tmp_path):
    for method, values in R1.items():
        for seed, r1 in values.items():
            write_run(tmp_path, method, seed, r1, nmi=40.0 + seed)
    write_run(tmp_path, "method2", 4, 99.0, finished=False)
    return tmp_path


def test_paired_comparison_equals_a_hand_computation(run_root):
    result = stats.paired_comparison(run_root, "method2", "random")
    d = [55 - 50, 53 - 52, 54 - 49, 50 - 51]  # seeds 0-3; seed 4 is unfinished
    n = 4
    mean = sum(d) / n
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = 3.182446305284263  # t_{0.975, 3}, from a table
    assert result.n == n and result.seeds == (0, 1, 2, 3)
    assert result.differences == tuple(float(x) for x in d)
    assert result.mean == pytest.approx(mean)
    assert result.std == pytest.approx(s)
    assert result.low == pytest.approx(mean - t * s / math.sqrt(n))
    assert result.high == pytest.approx(mean + t * s / math.sqrt(n))
    assert (result.a, result.b, result.metric, result.confidence) == (
        "method2",
        "random",
        "R@1",
        0.95,
    )


def test_paired_comparison_equals_scipy_paired_t_test(run_root):
    result = stats.paired_comparison(run_root, "method1", "random", confidence=0.9)
    a = [R1["method1"][s] for s in (0, 1, 2)]  # the seeds both have
    b = [R1["random"][s] for s in (0, 1, 2)]
    reference = sstats.ttest_rel(a, b).confidence_interval(confidence_level=0.9)
    assert result.n == 3 and result.seeds == (0, 1, 2)
    assert result.low == pytest.approx(reference.low)
    assert result.high == pytest.approx(reference.high)
    assert result.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert result.excludes_zero == (reference.low > 0 or reference.high < 0)


def test_other_metric_and_antisymmetry(run_root):
    forward = stats.paired_comparison(run_root, "method2", "method1", metric="NMI")
    # NMI is 40 + seed for every method: every difference is 0.
    assert forward.differences == (0.0, 0.0, 0.0) and forward.mean == 0.0
    assert forward.low == forward.high == 0.0 and not forward.excludes_zero
    r1 = stats.paired_comparison(run_root, "method2", "method1")
    r1_back = stats.paired_comparison(run_root, "method1", "method2")
    assert r1.mean == pytest.approx(-r1_back.mean)
    assert r1.low == pytest.approx(-r1_back.high)


def test_too_few_seeds_give_no_interval(tmp_path):
    write_run(tmp_path, "method2", 0, 60.0)
    write_run(tmp_path, "random", 0, 55.0)
    write_run(tmp_path, "random", 1, 56.0)
    one = stats.paired_comparison(tmp_path, "method2", "random")
    assert one.n == 1 and one.mean == 5.0
    assert math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.high)
    assert not one.excludes_zero
    none = stats.paired_comparison(tmp_path, "method1", "random")
    assert none.n == 0 and math.isnan(none.mean)


def test_two_conditions_pair_by_seed(tmp_path):
    warm, scratch = tmp_path / "warm", tmp_path / "scratch"
    for seed, (w, s) in enumerate([(60.0, 50.0), (62.0, 51.0), (61.0, 55.0)]):
        write_run(warm, "method2", seed, w)
        write_run(scratch, "method2", seed, s)
    result = stats.paired_comparison(warm, "method2", "method2", run_root_b=scratch)
    assert result.differences == (10.0, 11.0, 6.0)
    reference = sstats.ttest_rel([60, 62, 61], [50, 51, 55]).confidence_interval()
    assert (result.low, result.high) == pytest.approx((reference.low, reference.high))


def test_paired_table_rows_and_data_frame_input(run_root):
    runs = table.collect_runs(run_root)
    result = stats.paired_table(runs, metrics=("R@1", "NMI"))
    assert list(zip(result["a"], result["b"], result["metric"], strict=True)) == [
        ("method2", "random", "R@1"),
        ("method2", "random", "NMI"),
        ("method1", "random", "R@1"),
        ("method1", "random", "NMI"),
        ("method2", "method1", "R@1"),
        ("method2", "method1", "NMI"),
    ]
    direct = stats.paired_comparison(run_root, "method1", "random")
    assert result.loc[2, "mean"] == pytest.approx(direct.mean)
    assert list(result["n"]) == [4, 4, 3, 3, 3, 3]


def test_bad_inputs(run_root):
    with pytest.raises(ValueError, match="unknown metric"):
        stats.paired_comparison(run_root, "method2", "random", metric="R@3")
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1.0, 2.0], confidence=95)
    with pytest.raises(FileNotFoundError):
        stats.paired_comparison(run_root / "nowhere", "method2", "random")
