"""Table 1 of the paper beside the measured one, built from the runs' metrics files only.

`PAPER_TABLE1` quotes the paper's Table 1 (Stanford Cars 196); `collect_runs(run_root)` reads
every `<run_root>/<run>/metrics.json` (+ `config.json`); `build_table1(runs)` puts the measured
mean (and sample standard deviation over seeds, ddof=1) next to the paper's numbers with the
difference measured - paper. A method without a run stays missing (NaN, "—" in markdown), never
zero. `to_markdown` / `to_csv` write the table (markdown is written here, no `tabulate`);
`protocol_notes(runs)` says how the rows were trained (seeds, start, budget, each method's
learning rate and how it was chosen), `comparisons_markdown` formats the paired differences of
`qlib.stats.paired_table`, and `write_markdown` puts it all in one file with the errata.
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
    "SETUP_FIELDS",
    "comparability",
    "comparisons_markdown",
    "final_metrics",
    "learning_rate_notes",
    "paper_table1",
    "protocol_notes",
    "to_csv",
    "to_markdown",
    "write_markdown",
]

METRICS = ("R@1", "R@2", "R@4", "R@8", "NMI")


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1, as printed (percent)."""

    method: str  # the method key used by qlib.train
    name: str  # the paper's row label
    values: tuple[float, float, float, float, float]  # R@1, R@2, R@4, R@8, NMI
    comparable: bool  # obtained with the paper's own model (ResNet-101, 1024-d)?
    note: str


# Harwood et al. 2017's Cars196 NMI for the five baselines (docs/spec.md, "Known errata").
HARWOOD_CARS196_NMI = {
    "semihard": 53.35,
    "lifted": 56.88,
    "npairs": 57.79,
    "clustering": 59.04,
    "triplet_global": 58.20,
}
_OWN_NOTES = {
    "random": "The paper's own model and loss (eq. 6) with uniformly drawn quadruplets.",
    "method1": "The paper's method (Section 3.3.1).",
    "method2": "The paper's method (Section 3.3.2).",
}


def _note(method: str) -> str:
    if method in _OWN_NOTES:
        return _OWN_NOTES[method]
    return (
        "Quoted by the paper from Harwood et al. 2017 (GoogLeNet, 64-d embedding), not "
        f"ResNet-101; its NMI is Harwood's CUB-200 value (Cars196: {HARWOOD_CARS196_NMI[method]})."
    )


# The paper's Table 1, typed from the paper (quotations, not measurements). Only its own rows
# were obtained with its model (ResNet-101, 1024-d): the baselines are quoted from Harwood.
PAPER_TABLE1: tuple[PaperRow, ...] = tuple(
    PaperRow(method, name, values, method in _OWN_NOTES, _note(method))
    for method, name, values in (
        ("semihard", "Semi-Hard [18]", (51.54, 63.78, 73.52, 82.41, 55.38)),
        ("lifted", "Lifted Structure [21]", (52.98, 65.70, 76.01, 84.27, 56.50)),
        ("npairs", "N-Pairs [4]", (53.90, 66.76, 77.75, 86.35, 57.24)),
        ("clustering", "Clustering [22]", (58.11, 70.64, 80.27, 87.81, 59.23)),
        ("triplet_global", "Triplet + Global [20]", (61.41, 72.51, 81.75, 88.39, 58.61)),
        ("random", "Random Quadruplet Selection [9]", (61.49, 73.41, 82.88, 89.92, 54.50)),
        ("method1", "Proposed Method 1", (64.85, 75.59, 83.41, 89.55, 57.32)),
        ("method2", "Proposed Method 2", (66.06, 76.62, 84.84, 90.63, 57.00)),
    )
)

ERRATA = (
    "The baseline rows (Semi-Hard, Lifted Structure, N-Pairs, Clustering, Triplet + Global) are "
    'quoted from Harwood et al. 2017 ("Smart mining for deep metric learning"), obtained with '
    "GoogLeNet and a 64-d embedding, not with the paper's ResNet-101 and 1024-d embedding.",
    "Their NMI column equals Harwood et al.'s CUB-200 NMI values, not their Cars196 values "
    f"(Cars196 NMI there: {', '.join(f'{v:.2f}' for v in HARWOOD_CARS196_NMI.values())} for "
    "the five baselines in order).",
)

# The settings of a run's config.json that collect_runs reports beside its metrics.
SETUP_FIELDS = (
    "dataset",
    "synthetic_size",
    "backbone",
    "init",
    "classifier_epochs",
    "embedding_dim",
    "epochs",
    "warmup_epochs",
    "batch_size",
    "optimizer",
    "lr",
    "reduction",
    "eval_split",
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
    for key in METRICS:
        value = last[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ValueError(f"{path}: {key} = {value!r}; expected a finite number (percent).")
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"{path}: {key} = {value!r}; expected a percentage in [0, 100].")
    values = {key: float(last[key]) for key in METRICS}
    values |= {"epoch": last.get("epoch"), "iteration": last.get("iteration")}
    return values | {"n_evaluations": len(evaluations), "final": bool(last.get("final", False))}


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
        identity |= {key: config.get(key) for key in ("method", "seed", *SETUP_FIELDS)}
        environment = content.get("environment", {})
        if isinstance(environment, dict):
            identity["torch_threads"] = environment.get("torch_threads")
            identity["device"] = environment.get("device")
    match = _RUN_NAME.match(run_dir.name)
    if match:  # the folder name stands in for what config.json does not say
        fallback = {"method": match["method"], "seed": int(match["seed"])}
        identity |= {key: value for key, value in fallback.items() if identity[key] is None}
    if identity["method"] is None or identity["seed"] is None:
        raise ValueError(
            f"{run_dir}: cannot tell the method and seed; expected a config.json with "
            "'method' and 'seed' or a folder named <method>_seed<seed>."
        )
    return identity


def collect_runs(run_root: str | Path) -> pd.DataFrame:
    """One row per run folder `<run_root>/<run>/` holding a metrics.json: `method`, `seed`,
    R@1 … NMI of the last evaluation, `final` (the run completed), `epoch`, `iteration`, setup
    fields from config.json when present (`dataset`, `backbone`, `embedding_dim`, ...), `path`.
    Sorted by method and seed. A malformed file raises a ValueError naming it; no run is
    silently dropped."""
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


def _completed(runs: pd.DataFrame) -> pd.Series:
    """(rows,) bool: the runs that completed (all of them when `runs` does not say)."""
    if "final" not in runs.columns:
        return pd.Series(True, runs.index)
    return runs["final"].astype(bool)


def comparability(runs: pd.DataFrame) -> str:
    """One paragraph saying how the measured rows compare with the paper's, from the completed
    runs' recorded setup (dataset, backbone, embedding size)."""
    runs = runs[_completed(runs)]
    if runs.empty:
        return "No completed run yet: every measured cell is missing."
    setups = sorted(
        {
            (str(r.get("dataset")), str(r.get("backbone")), str(r.get("embedding_dim")))
            for r in runs.to_dict("records")
        }
    )
    described = "; ".join(f"dataset {d}, backbone {b}, {e}-d embedding" for d, b, e in setups)
    if setups == [("stanford_cars", "resnet101", "1024")]:
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


def _values(runs: pd.DataFrame, key: str) -> list:
    if key not in runs.columns:
        return []
    return sorted({v for v in runs[key].tolist() if v is not None and v == v}, key=str)


def _one(runs: pd.DataFrame, key: str) -> str:
    values = _values(runs, key)
    return "unknown" if not values else " / ".join(str(v) for v in values)


def _matching_preset(runs: pd.DataFrame) -> str | None:
    """The preset whose data, model and optimiser every run used, if exactly one is."""
    from .train.config import PRESETS, TrainConfig

    keys = ("dataset", "synthetic_size", "backbone", "embedding_dim", "optimizer")
    found = []
    for name, preset in PRESETS.items():
        wanted = {k: preset.get(k, getattr(TrainConfig, k)) for k in keys}
        if wanted["dataset"] != "synthetic":
            wanted.pop("synthetic_size")
        if all(_values(runs, k) == [v] for k, v in wanted.items()):
            found.append(name)
    return found[0] if len(found) == 1 else None


def learning_rate_notes(runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Per method (paper order): (its learning rate from the runs' config.json, how it was
    chosen), read against the presets of `qlib.train.config` (tuned entries of
    METHOD_SETTINGS)."""
    from .train.config import METHOD_SETTINGS, QUADRUPLET_METHODS, config_from_preset

    preset = _matching_preset(runs)
    order = [r.method for r in PAPER_TABLE1]
    methods = sorted(
        dict.fromkeys(runs["method"]),
        key=lambda m: (m not in order, order.index(m) if m in order else 0, m),
    )
    notes = {}
    for method in methods:
        lrs = _values(runs[runs["method"] == method], "lr")
        if not lrs:
            continue
        text = ", ".join(f"{lr:g}" for lr in lrs)
        expected = config_from_preset(preset, method=method).lr if preset else None
        tuned = "lr" in METHOD_SETTINGS.get(preset, {}).get(method, {}) if preset else False
        if len(lrs) > 1 or expected is None or lrs[0] != expected:
            how = "set by hand (not the preset's value)"
        elif tuned:
            how = f"chosen on validation classes by `make tune PRESET={preset}`"
        elif preset == "paper" and method in QUADRUPLET_METHODS:
            how = "the paper's"
        elif preset == "paper":
            how = (
                "the paper's rate, not tuned for this baseline (no GPU and no Stanford Cars "
                "where this was built; `make tune PRESET=paper CARS_ROOT=...` tunes it)"
            )
        else:
            how = f"the `{preset}` preset's value, not tuned"
        notes[method] = (text, how)
    return notes


def _start(runs: pd.DataFrame) -> str:
    """Where the runs' weights started, in words."""
    inits = _values(runs, "init")
    if inits == ["classifier"]:
        return (
            "the same warm start for every method and seed: the network first trained as a "
            f"fine-class classifier for {_one(runs, 'classifier_epochs')} epoch(s) on the "
            'training classes only (`init="classifier"`, standing in for the paper\'s ImageNet '
            "weights)"
        )
    words = {"imagenet": "ImageNet weights (the paper's start)",
             "scratch": "random weights (from scratch)"}  # fmt: skip
    return words[inits[0]] if len(inits) == 1 and inits[0] in words else _one(runs, "init")


def _loss_scale_rule(runs: pd.DataFrame) -> str:
    """Why one learning rate means one step size for every method (docs/spec.md)."""
    rule = (
        'Every method\'s batch loss is B x its own per-unit mean (`reduction="sum"`, '
        'docs/spec.md "Baselines"), so one SGD learning rate is one step size for every method'
    )
    if _values(runs, "optimizer") == ["adam"]:
        return (
            rule + "; under Adam, whose steps do not depend on the loss's scale, this matters less."
        )
    return rule + ": the paper's 3e-4 means the same for the baselines as for its own methods."


def protocol_notes(runs: pd.DataFrame) -> str:
    """How the measured rows were trained, from the completed runs' config.json: seeds, start,
    budget, optimiser and each method's learning rate with how it was chosen, the reduction
    rule, threads. Markdown bullets."""
    runs = runs[_completed(runs)]
    if runs.empty:
        return "No completed run yet."
    by_how: dict[str, list[str]] = {}
    for method, (lr, how) in learning_rate_notes(runs).items():
        by_how.setdefault(how, []).append(f"{method} {lr}")
    lrs = "; ".join(f"{', '.join(items)} ({how})" for how, items in by_how.items())
    lines = [
        f"- Seeds: {', '.join(str(s) for s in _values(runs, 'seed'))}; a row is the mean ± "
        "sample std over its seeds (column Seeds = n).",
        f"- Start: {_start(runs)}.",
        f"- Budget, the same for every method: {_one(runs, 'epochs')} epochs of ceil(valid "
        f"anchors / B) iterations, B = {_one(runs, 'batch_size')} quadruplets or 4B images "
        f"per iteration; warm-up epochs of Random: {_one(runs, 'warmup_epochs')}.",
        f"- Optimiser: {_one(runs, 'optimizer')}; learning rate per method: {lrs}.",
        f"- {_loss_scale_rule(runs)}",
        f"- Torch threads per run: {_one(runs, 'torch_threads')} (recorded in config.json; a "
        "run's numbers repeat bitwise on one machine).",
    ]
    return "\n".join(lines)


def comparisons_markdown(comparisons: pd.DataFrame, digits: int = 2) -> str:
    """The paired differences of `qlib.stats.paired_table` as a markdown table: one row per
    pair, one column per metric, cells `mean [low, high]`, n the seeds both methods have."""
    names = {row.method: row.name for row in PAPER_TABLE1}
    metrics = list(dict.fromkeys(comparisons["metric"]))
    confidence = comparisons["confidence"].iloc[0] if len(comparisons) else 0.95
    header = ["Comparison (a − b)", "n", *(f"Δ {m} [{confidence:.0%} CI]" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for (a, b), group in comparisons.groupby(["a", "b"], sort=False):
        by_metric = group.set_index("metric")
        cells = [f"{names.get(a, a)} − {names.get(b, b)}", str(int(group["n"].max()))]
        for metric in metrics:
            row = by_metric.loc[metric]
            mean = _number(row["mean"], digits, signed=True)
            if np.isfinite(row["low"]):
                low, high = _number(row["low"], digits), _number(row["high"], digits)
                cells.append(f"{mean} [{low}, {high}]")
            else:
                cells.append(mean)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Δ: the mean over seeds of the per-seed difference a − b (the same seed of both "
        f"methods forms a pair); [{confidence:.0%} CI]: Student's t interval on those "
        "differences, mean ± t(n−1) · s / √n, n = the seeds both methods have (no interval "
        "with n < 2). An interval that holds 0 does not establish a difference.",
    ]
    return "\n".join(lines) + "\n"


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
    finished = _completed(runs)
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
            row[metric] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric}_paper"] = paper.at[method, metric] if in_paper else np.nan
            row[f"{metric}_diff"] = row[metric] - row[f"{metric}_paper"]
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
    atomic_write_bytes(Path(path), table.to_csv(index=True).encode())
    return Path(path)


def write_markdown(
    table: pd.DataFrame,
    path: str | Path,
    *,
    preamble: str = "",
    layout: str = "wide",
    comparisons: pd.DataFrame | None = None,
    notes: str = "",
) -> Path:
    """Write `preamble`, `to_markdown(table, layout=layout)`, the paired `comparisons`
    (`qlib.stats.paired_table`), the training `notes` (`protocol_notes`) and the errata to
    `path`; returns the path."""
    errata = "\n".join(f"- {item}" for item in ERRATA)
    text = (preamble.strip() + "\n\n" if preamble.strip() else "") + to_markdown(
        table, layout=layout
    )
    if comparisons is not None and len(comparisons):
        text += "\nPaired differences between methods:\n\n" + comparisons_markdown(comparisons)
    if notes.strip():
        text += f"\nHow the measured rows were trained:\n\n{notes.strip()}\n"
    text += f"\nKnown errata of the paper's Table 1:\n\n{errata}\n"
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)
