"""Paired comparisons between two methods over the seeds both were trained with.

Seed s of method a pairs with seed s of method b; only seeds both have a finished run for
count. The interval is Student's t interval on the n paired differences, mean ± t_{n-1} · s / √n
(s: sample std, ddof=1), assuming normal, independent differences; with 3 to 5 seeds it is
wide, and an interval that holds 0 establishes no difference. With n < 2 it is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import table as qtable
from .train.config import BASELINE_METHODS, QUADRUPLET_METHODS

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
    """Two-sided Student's t interval (df = n - 1) of the mean of `differences` -> (low, high);
    (NaN, NaN) with fewer than two values."""
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


def _runs(run_root: str | Path | pd.DataFrame) -> pd.DataFrame:
    return run_root if isinstance(run_root, pd.DataFrame) else qtable.collect_runs(run_root)


def _seed_values(runs: pd.DataFrame, method: str, metric: str) -> dict[int, float]:
    """{seed: final `metric`} of the finished runs of `method`."""
    if metric not in qtable.METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {qtable.METRICS}.")
    rows = runs[(runs["method"] == method) & runs["final"].astype(bool)]
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
    a_values = _seed_values(runs_a, a, metric)
    b_values = _seed_values(runs_a if run_root_b is None else _runs(run_root_b), b, metric)
    seeds = tuple(sorted(set(a_values) & set(b_values)))
    differences = tuple(a_values[s] - b_values[s] for s in seeds)
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


def paired_table(
    run_root: str | Path | pd.DataFrame,
    pairs: Iterable[tuple[str, str]] = DEFAULT_PAIRS,
    metrics: Iterable[str] = qtable.METRICS,
) -> pd.DataFrame:
    """One row per (pair, metric), with the fields of `PairedComparison` as columns."""
    runs = _runs(run_root)
    rows = [paired_comparison(runs, a, b, metric).as_dict() for a, b in pairs for metric in metrics]
    return pd.DataFrame(rows, columns=list(PairedComparison.__dataclass_fields__))
