"""Table 1 of the paper beside the measured one, built from the runs' metrics files only.

`PAPER_TABLE1` quotes the paper's Table 1 (Stanford Cars 196); `collect_runs(run_root)` reads
every `<run_root>/<run>/metrics.json` (+ `config.json`); `build_table1(runs)` puts the measured
mean (and sample standard deviation over seeds, ddof=1) next to the paper's numbers with the
difference measured - paper. A method without a run stays missing (NaN, "—" in markdown), never
zero. `to_markdown` / `to_csv` write the table (markdown is written here, no `tabulate`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .utils import atomic_write_bytes

__all__ = [
    "ERRATA",
    "HARWOOD_CARS196_NMI",
    "METRICS",
    "PAPER_TABLE1",
    "PaperRow",
    "build_table1",
    "collect_runs",
    "comparability",
    "final_metrics",
    "paper_table1",
    "to_csv",
    "to_markdown",
    "write_markdown",
]

METRICS = ("R@1", "R@2", "R@4", "R@8", "NMI")


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1, as printed (percent)."""

    method: str  # the method key used by qlib.train ("clustering" is not built)
    name: str  # the paper's row label
    values: tuple[float, float, float, float, float]  # R@1, R@2, R@4, R@8, NMI
    comparable: bool  # obtained with the paper's own model (ResNet-101, 1024-d)?
    note: str


_HARWOOD = (
    "Quoted by the paper from Harwood et al. 2017 (GoogLeNet, 64-d embedding), not ResNet-101; "
    "its NMI is Harwood's CUB-200 value (Cars196: {nmi})."
)

# The paper's Table 1, typed from the paper (quotations, not measurements).
PAPER_TABLE1: tuple[PaperRow, ...] = (
    PaperRow(
        "semihard",
        "Semi-Hard [18]",
        (51.54, 63.78, 73.52, 82.41, 55.38),
        False,
        _HARWOOD.format(nmi=53.35),
    ),
    PaperRow(
        "lifted",
        "Lifted Structure [21]",
        (52.98, 65.70, 76.01, 84.27, 56.50),
        False,
        _HARWOOD.format(nmi=56.88),
    ),
    PaperRow(
        "npairs",
        "N-Pairs [4]",
        (53.90, 66.76, 77.75, 86.35, 57.24),
        False,
        _HARWOOD.format(nmi=57.79),
    ),
    PaperRow(
        "clustering",
        "Clustering [22]",
        (58.11, 70.64, 80.27, 87.81, 59.23),
        False,
        _HARWOOD.format(nmi=59.04) + " Not built in this project.",
    ),
    PaperRow(
        "triplet_global",
        "Triplet + Global [20]",
        (61.41, 72.51, 81.75, 88.39, 58.61),
        False,
        _HARWOOD.format(nmi=58.20),
    ),
    PaperRow(
        "random",
        "Random Quadruplet Selection [9]",
        (61.49, 73.41, 82.88, 89.92, 54.50),
        True,
        "The paper's own model and loss (eq. 6) with uniformly drawn quadruplets.",
    ),
    PaperRow(
        "method1",
        "Proposed Method 1",
        (64.85, 75.59, 83.41, 89.55, 57.32),
        True,
        "The paper's method (Section 3.3.1).",
    ),
    PaperRow(
        "method2",
        "Proposed Method 2",
        (66.06, 76.62, 84.84, 90.63, 57.00),
        True,
        "The paper's method (Section 3.3.2).",
    ),
)

# Harwood et al. 2017's Cars196 NMI for the five baselines (docs/spec.md, "Known errata").
HARWOOD_CARS196_NMI = {
    "semihard": 53.35,
    "lifted": 56.88,
    "npairs": 57.79,
    "clustering": 59.04,
    "triplet_global": 58.20,
}

ERRATA = (
    "The baseline rows (Semi-Hard, Lifted Structure, N-Pairs, Clustering, Triplet + Global) are "
    'quoted from Harwood et al. 2017 ("Smart mining for deep metric learning"), obtained with '
    "GoogLeNet and a 64-d embedding, not with the paper's ResNet-101 and 1024-d embedding.",
    "Their NMI column equals Harwood et al.'s CUB-200 NMI values, not their Cars196 values "
    "(Cars196 NMI there: 53.35, 56.88, 57.79, 59.04, 58.20 for the five baselines in order).",
)

_RUN_NAME = re.compile(r"^(?P<method>.+)_seed(?P<seed>\d+)$")


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 as a DataFrame indexed by method key, in the paper's order: columns
    `name`, R@1 … NMI, `NMI_cars196` (Harwood's Cars196 NMI where the paper quotes CUB-200),
    `comparable`, `note`."""
    rows = []
    for row in PAPER_TABLE1:
        rows.append(
            {
                "method": row.method,
                "name": row.name,
                **dict(zip(METRICS, row.values, strict=True)),
                "NMI_cars196": HARWOOD_CARS196_NMI.get(row.method, np.nan),
                "comparable": row.comparable,
                "note": row.note,
            }
        )
    return pd.DataFrame(rows).set_index("method")


# ----------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------


def _read_json_file(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); expected the file qlib.train writes."
        ) from err


def final_metrics(metrics_path: str | Path) -> dict:
    """The last evaluation of a run's metrics.json (a list of `{"epoch", "iteration", "R@1",
    "R@2", "R@4", "R@8", "NMI"}`), checked; `final` says whether the run completed (qlib.train
    marks the last entry of a finished run with `"final": true`)."""
    path = Path(metrics_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a run's metrics.json.")
    evaluations = _read_json_file(path)
    if isinstance(evaluations, dict) and "evaluations" in evaluations:
        evaluations = evaluations["evaluations"]
    if not isinstance(evaluations, list) or not evaluations:
        raise ValueError(f"{path} holds no evaluations; expected a non-empty JSON list of dicts.")
    last = evaluations[-1]
    if not isinstance(last, dict):
        raise ValueError(f"{path}: the last evaluation is {type(last).__name__}, expected a dict.")
    missing = [key for key in METRICS if key not in last]
    if missing:
        raise ValueError(
            f"{path}: the last evaluation lacks {missing}; expected keys {list(METRICS)}."
        )
    values = {}
    for key in METRICS:
        value = last[key]
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{path}: {key} = {value!r}; expected a finite number (percent).")
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"{path}: {key} = {value!r}; expected a percentage in [0, 100].")
        values[key] = float(value)
    values["epoch"] = last.get("epoch")
    values["iteration"] = last.get("iteration")
    values["n_evaluations"] = len(evaluations)
    # qlib.train marks the last evaluation of a completed run with "final": true.
    values["final"] = bool(last.get("final", False))
    return values


def _run_identity(run_dir: Path) -> dict:
    """Method, seed and setup of a run from its config.json; the folder name
    `<method>_seed<seed>` when there is no config.json."""
    config_path = run_dir / "config.json"
    identity: dict = {"method": None, "seed": None}
    if config_path.is_file():
        content = _read_json_file(config_path)
        if not isinstance(content, dict):
            raise ValueError(f"{config_path} is {type(content).__name__}; expected a JSON object.")
        config = content.get("config", content)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: 'config' is not a JSON object.")
        identity["method"] = config.get("method")
        identity["seed"] = config.get("seed")
        for key in (
            "dataset",
            "synthetic_size",
            "backbone",
            "init",
            "embedding_dim",
            "epochs",
        ):
            identity[key] = config.get(key)
    match = _RUN_NAME.match(run_dir.name)
    if identity["method"] is None and match:
        identity["method"] = match["method"]
    if identity["seed"] is None and match:
        identity["seed"] = int(match["seed"])
    if identity["method"] is None or identity["seed"] is None:
        raise ValueError(
            f"{run_dir}: cannot tell the method and seed; expected a config.json with "
            "'method' and 'seed' or a folder named <method>_seed<seed>."
        )
    return identity


def collect_runs(run_root: str | Path) -> pd.DataFrame:
    """One row per run folder `<run_root>/<run>/` holding a metrics.json: `method`, `seed`,
    R@1 … NMI of the last evaluation, `final` (the run completed), `epoch`, `iteration`, setup
    fields from config.json when
    present (`dataset`, `backbone`, `embedding_dim`, ...), `path`. Sorted by method and seed. A
    malformed file raises a ValueError naming it; no run is silently dropped."""
    root = Path(run_root)
    if not root.is_dir():
        raise FileNotFoundError(f"run_root {root} is not a folder; expected e.g. runs/demo.")
    rows = []
    for metrics_path in sorted(root.glob("*/metrics.json")):
        run_dir = metrics_path.parent
        rows.append({**_run_identity(run_dir), **final_metrics(metrics_path), "path": str(run_dir)})
    columns = ["method", "seed", *METRICS, "final", "epoch", "iteration", "path"]
    runs = pd.DataFrame(rows)
    if runs.empty:
        return pd.DataFrame(columns=columns)
    duplicated = runs.duplicated(["method", "seed"], keep=False)
    if duplicated.any():
        paths = runs.loc[duplicated, "path"].tolist()
        raise ValueError(f"several runs share a method and seed: {paths}; expected one per pair.")
    runs["seed"] = runs["seed"].astype(int)
    ordered = columns + [c for c in runs.columns if c not in columns]
    return runs[ordered].sort_values(["method", "seed"]).reset_index(drop=True)


def comparability(runs: pd.DataFrame) -> str:
    """One paragraph saying how the measured rows compare with the paper's, from the completed
    runs' recorded setup (dataset, backbone, embedding size)."""
    if "final" in runs.columns:
        runs = runs[runs["final"].astype(bool)]
    if runs.empty:
        return "No completed run yet: every measured cell is missing."
    setups = sorted(
        {
            (str(r.get("dataset")), str(r.get("backbone")), str(r.get("embedding_dim")))
            for r in runs.to_dict("records")
        }
    )
    described = "; ".join(f"dataset {d}, backbone {b}, {e}-d embedding" for d, b, e in setups)
    paper_setup = setups == [("stanford_cars", "resnet101", "1024")]
    if paper_setup:
        return (
            f"Measured with the paper's setup ({described}). The rows Random Quadruplet "
            "Selection, Proposed Method 1 and Proposed Method 2 are directly comparable with "
            "the paper's; the paper's baseline rows are not (they come from another model, "
            "see the errata), so compare our baselines with our quadruplet rows instead."
        )
    return (
        f"Measured with {described}: a demonstration on another dataset or model, not the "
        "paper's Stanford Cars with ResNet-101. The absolute numbers are not comparable with "
        "the paper's at all (the differences below say nothing about the paper); only the "
        "ordering of the methods under one protocol is informative. Only `make reproduce` "
        "(Stanford Cars, the paper preset) gives comparable numbers."
    )


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------


def build_table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Measured vs paper, one row per method in the paper's order (then any measured method the
    paper lacks), indexed by method key. Columns: `name`, `n_seeds`, `seeds`; per metric M in
    R@1 … NMI: `M` (mean over seeds), `M_std` (sample std, ddof=1; NaN with one seed),
    `M_paper`, `M_diff` (= `M` - `M_paper`); then `NMI_cars196`, `comparable`, `note`,
    `n_unfinished`. Only completed runs (`final`) are averaged; unfinished ones are counted in
    `n_unfinished`. A method with no completed run has NaN measured values and `n_seeds` 0."""
    missing_columns = [c for c in ("method", "seed", *METRICS) if c not in runs.columns]
    if missing_columns:
        raise ValueError(f"runs lacks columns {missing_columns}; expected collect_runs' output.")
    paper = paper_table1()
    extra = [m for m in dict.fromkeys(runs["method"]) if m not in paper.index]
    rows = []
    finished = (
        runs["final"].astype(bool) if "final" in runs.columns else pd.Series(True, runs.index)
    )
    for method in [*paper.index, *extra]:
        of_method = runs["method"] == method
        group = runs[of_method & finished]
        in_paper = method in paper.index
        row: dict = {
            "method": method,
            "name": paper.at[method, "name"] if in_paper else method,
            "n_seeds": len(group),
            "seeds": " ".join(str(s) for s in sorted(group["seed"])),
        }
        for metric in METRICS:
            values = group[metric].to_numpy(dtype=float)
            mean = values.mean() if len(values) else np.nan
            std = values.std(ddof=1) if len(values) > 1 else np.nan
            paper_value = paper.at[method, metric] if in_paper else np.nan
            row[metric] = mean
            row[f"{metric}_std"] = std
            row[f"{metric}_paper"] = paper_value
            row[f"{metric}_diff"] = mean - paper_value
        row["NMI_cars196"] = paper.at[method, "NMI_cars196"] if in_paper else np.nan
        row["comparable"] = bool(paper.at[method, "comparable"]) if in_paper else False
        row["note"] = paper.at[method, "note"] if in_paper else "Not in the paper's Table 1."
        row["n_unfinished"] = int((of_method & ~finished).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


MISSING = "—"


def _number(value: float, digits: int, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def _measured(table_row: pd.Series, metric: str, digits: int) -> str:
    mean, std = table_row[metric], table_row[f"{metric}_std"]
    if not np.isfinite(mean):
        return MISSING
    if np.isfinite(std):
        return f"{_number(mean, digits)} ± {_number(std, digits)}"
    return _number(mean, digits)


def to_markdown(
    table: pd.DataFrame,
    digits: int = 2,
    metrics: tuple[str, ...] = METRICS,
    layout: str = "wide",
) -> str:
    """A GitHub markdown table; "—" where there is no run. `layout="wide"`: per metric three
    columns, measured (mean ± sample std with several seeds), paper, Δ = measured − paper;
    `layout="compact"`: one column per metric with cells `measured (paper; Δ)`."""
    if layout not in ("wide", "compact"):
        raise ValueError(f"layout must be 'wide' or 'compact', got {layout!r}.")
    header = ["Method", "Seeds"]
    for metric in metrics:
        header += [metric, f"{metric} paper", f"Δ {metric}"] if layout == "wide" else [metric]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for _, row in table.iterrows():
        name = row["name"] if row["comparable"] else f"{row['name']} *"
        cells = [name, str(int(row["n_seeds"]))]
        for metric in metrics:
            measured = _measured(row, metric, digits)
            paper = _number(row[f"{metric}_paper"], digits)
            diff = _number(row[f"{metric}_diff"], digits, signed=True)
            if layout == "wide":
                cells += [measured, paper, diff]
            elif measured == MISSING:
                cells.append(f"{MISSING} ({paper})")
            else:
                cells.append(f"{measured} ({paper}; {diff})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    unfinished = int(table["n_unfinished"].sum()) if "n_unfinished" in table.columns else 0
    if unfinished:
        lines.append(f"{unfinished} unfinished run(s) are not counted.")
    cell = "Cells: measured (paper; Δ). " if layout == "compact" else ""
    lines.append(
        f"{cell}Measured: mean over seeds, ± sample standard deviation (ddof=1) with several "
        f"seeds; {MISSING}: no run. Δ = measured − paper. * the paper's row is not directly "
        "comparable (errata below)."
    )
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the full-precision table (index = method key) to `path`; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, table.to_csv(index=True).encode())
    return path


def write_markdown(
    table: pd.DataFrame, path: str | Path, *, preamble: str = "", layout: str = "wide"
) -> Path:
    """Write `preamble`, `to_markdown(table, layout=layout)` and the errata to `path`; returns
    the path."""
    errata = "\n".join(f"- {item}" for item in ERRATA)
    text = (preamble.strip() + "\n\n" if preamble.strip() else "") + to_markdown(
        table, layout=layout
    )
    text += f"\nKnown errata of the paper's Table 1:\n\n{errata}\n"
    path = Path(path)
    atomic_write_bytes(path, text.encode())
    return path
