"""Paired comparisons between two methods over the seeds both were trained with.

Two methods trained with the same seeds form pairs: seed s of method a against seed s of method
b. `paired_comparison(run_root, a, b, metric)` reports the mean of the per-seed differences
a - b, a 95% confidence interval and n, the number of seeds both methods have a finished run
for (unfinished runs and seeds only one method has are left out).

The interval is Student's t interval on the paired differences: mean ± t_{n-1, 0.975} · s / √n,
s the sample standard deviation (ddof=1) of the n differences. It assumes the differences are
independent draws from a normal distribution; with 3 to 5 seeds it is wide, and that width is
the point: a difference whose interval holds 0 is not established. With n < 2 there is no
interval (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import table as qtable
from .train.config import BASELINE_METHODS, QUADRUPLET_METHODS

__all__ = [
    "BASELINE_PAIRS",
    "DEFAULT_PAIRS",
    "PairedComparison",
    "compare_values",
    "paired_comparison",
    "paired_table",
    "seed_values",
    "t_interval",
]

# The comparisons Table 1 reports: the paper's two selections against Random and each other.
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("method2", "random"),
    ("method1", "random"),
    ("method2", "method1"),
)
# Each baseline against each quadruplet selection (notebook 05, table1.md).
BASELINE_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (baseline, method) for baseline in BASELINE_METHODS for method in QUADRUPLET_METHODS
)


@dataclass(frozen=True)
class PairedComparison:
    """a - b on `metric` over the `n` seeds both have: `mean` of the per-seed `differences`,
    their sample std (ddof=1), and the `confidence` t interval [`low`, `high`] (NaN if n < 2)."""

    a: str
    b: str
    metric: str
    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    seeds: tuple[int, ...]
    differences: tuple[float, ...]

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (False without an interval)."""
        return bool(self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        return asdict(self)


def t_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of `differences` (two-sided, df = n - 1) ->
    (low, high); (NaN, NaN) with fewer than two values."""
    from scipy import stats as sstats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}.")
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = sstats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    mean = values.mean()
    return float(mean - half), float(mean + half)


def compare_values(
    a_values: Mapping[int, float],
    b_values: Mapping[int, float],
    *,
    a: str = "a",
    b: str = "b",
    metric: str = "R@1",
    confidence: float = 0.95,
) -> PairedComparison:
    """The paired comparison of two {seed: value} maps over the seeds they share."""
    seeds = tuple(sorted(set(a_values) & set(b_values)))
    differences = tuple(float(a_values[s]) - float(b_values[s]) for s in seeds)
    n = len(differences)
    low, high = t_interval(differences, confidence)
    return PairedComparison(
        a=a,
        b=b,
        metric=metric,
        n=n,
        mean=float(np.mean(differences)) if n else math.nan,
        std=float(np.std(differences, ddof=1)) if n > 1 else math.nan,
        low=low,
        high=high,
        confidence=confidence,
        seeds=seeds,
        differences=differences,
    )


def _runs(run_root: str | Path | pd.DataFrame) -> pd.DataFrame:
    return run_root if isinstance(run_root, pd.DataFrame) else qtable.collect_runs(run_root)


def seed_values(runs: str | Path | pd.DataFrame, method: str, metric: str = "R@1") -> dict:
    """{seed: final `metric`} of the finished runs of `method` (a run_root or collect_runs'
    DataFrame)."""
    runs = _runs(runs)
    if metric not in qtable.METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {qtable.METRICS}.")
    finished = runs["final"].astype(bool) if "final" in runs.columns else True
    rows = runs[(runs["method"] == method) & finished]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[metric], strict=True)}


def paired_comparison(
    run_root: str | Path | pd.DataFrame,
    a: str,
    b: str,
    metric: str = "R@1",
    confidence: float = 0.95,
    *,
    run_root_b: str | Path | pd.DataFrame | None = None,
) -> PairedComparison:
    """Method `a` minus method `b` on `metric` over the seeds both have finished runs for, in
    `run_root` (a folder of `<method>_seed<seed>` runs, or `qlib.table.collect_runs`' output).
    With `run_root_b`, b's runs are read there (the same method under two conditions)."""
    runs_a = _runs(run_root)
    runs_b = runs_a if run_root_b is None else _runs(run_root_b)
    return compare_values(
        seed_values(runs_a, a, metric),
        seed_values(runs_b, b, metric),
        a=a,
        b=b,
        metric=metric,
        confidence=confidence,
    )


def paired_table(
    run_root: str | Path | pd.DataFrame,
    pairs: Iterable[tuple[str, str]] = DEFAULT_PAIRS,
    metrics: Iterable[str] = qtable.METRICS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per (pair, metric): `a`, `b`, `metric`, `n`, `mean`, `std`, `low`, `high`,
    `confidence`, `seeds`, `differences` (the columns of `PairedComparison`)."""
    runs = _runs(run_root)
    rows = [
        paired_comparison(runs, a, b, metric, confidence).as_dict()
        for a, b in pairs
        for metric in metrics
    ]
    columns = list(PairedComparison.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)
