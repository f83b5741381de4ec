"""Table 1 of the paper beside the measured one, built from the runs' metrics files only.

A method without a run stays missing (NaN, "—" in markdown), never zero. Markdown is written
here (no `tabulate`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .utils import atomic_write_bytes, resolve_path

METRICS = ("R@1", "R@2", "R@4", "R@8", "NMI")

# The paper's Table 1 (percent: R@1, R@2, R@4, R@8, NMI), typed from the paper, and for the
# baselines, which it quotes from Harwood et al. 2017, Harwood's Cars196 NMI (docs/spec.md,
# "Known errata"). Only the paper's own rows (_OWN_NOTES) used its model (ResNet-101, 1024-d).
_PAPER_ROWS = (
    ("semihard", "Semi-Hard [18]", (51.54, 63.78, 73.52, 82.41, 55.38), 53.35),
    ("lifted", "Lifted Structure [21]", (52.98, 65.70, 76.01, 84.27, 56.50), 56.88),
    ("npairs", "N-Pairs [4]", (53.90, 66.76, 77.75, 86.35, 57.24), 57.79),
    ("clustering", "Clustering [22]", (58.11, 70.64, 80.27, 87.81, 59.23), 59.04),
    ("triplet_global", "Triplet + Global [20]", (61.41, 72.51, 81.75, 88.39, 58.61), 58.20),
    ("random", "Random Quadruplet Selection [9]", (61.49, 73.41, 82.88, 89.92, 54.50), None),
    ("method1", "Proposed Method 1", (64.85, 75.59, 83.41, 89.55, 57.32), None),
    ("method2", "Proposed Method 2", (66.06, 76.62, 84.84, 90.63, 57.00), None),
)
_PAPER_NAMES = {method: name for method, name, _, _ in _PAPER_ROWS}
_OWN_NOTES = {
    "random": "The paper's own model and loss (eq. 6) with uniformly drawn quadruplets.",
    "method1": "The paper's method (Section 3.3.1).",
    "method2": "The paper's method (Section 3.3.2).",
}
_HARWOOD_NOTE = (
    "Quoted by the paper from Harwood et al. 2017 (GoogLeNet, 64-d embedding), not "
    "ResNet-101; its NMI is Harwood's CUB-200 value (Cars196: {})."
)

ERRATA = (
    "The baseline rows (Semi-Hard, Lifted Structure, N-Pairs, Clustering, Triplet + Global) are "
    'quoted from Harwood et al. 2017 ("Smart mining for deep metric learning"), obtained with '
    "GoogLeNet and a 64-d embedding, not with the paper's ResNet-101 and 1024-d embedding.",
    "Their NMI column equals Harwood et al.'s CUB-200 NMI values, not their Cars196 values "
    f"(Cars196 NMI there: {', '.join(f'{v:.2f}' for *_, v in _PAPER_ROWS if v)} for "
    "the five baselines in order).",
)

_RUN_NAME = re.compile(r"^(?P<method>.+)_seed(?P<seed>\d+)$")


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 indexed by method key, in the paper's order: columns `name`,
    R@1 … NMI, `NMI_cars196` (Harwood's Cars196 NMI where the paper quotes CUB-200),
    `comparable` (obtained with the paper's own model), `note`."""
    rows = [
        {
            "method": method,
            "name": name,
            **dict(zip(METRICS, values, strict=True)),
            "NMI_cars196": np.nan if cars196 is None else cars196,
            "comparable": method in _OWN_NOTES,
            "note": _OWN_NOTES.get(method) or _HARWOOD_NOTE.format(cars196),
        }
        for method, name, values, cars196 in _PAPER_ROWS
    ]
    return pd.DataFrame(rows).set_index("method")


# ----------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------


def final_metrics(metrics_path: str | Path) -> dict:
    """The last evaluation of a run's metrics.json (`metrics_path`, read by the run folder's
    reader), checked: R@1 … NMI, `epoch`, `iteration` and `final` (whether the run completed:
    qlib.train marks its last entry `"final": true`)."""
    from .train.runs import read_metrics

    path = Path(metrics_path)
    evaluations = read_metrics(path.parent)
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
    return values | {"final": bool(last.get("final", False))}


def _run_identity(run_dir: Path) -> dict:
    """Method, seed, settings and torch threads of a run from its config.json; method and seed
    from the folder name `<method>_seed<seed>` where config.json does not say."""
    from .train.runs import read_config

    config_path = run_dir / "config.json"
    identity: dict = {"method": None, "seed": None}
    if config_path.is_file():
        content = read_config(run_dir)
        if not isinstance(content, dict):
            raise ValueError(f"{config_path} is {type(content).__name__}; expected a JSON object.")
        config, environment = content.get("config", content), content.get("environment", {})
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: 'config' is not a JSON object.")
        identity |= config
        if isinstance(environment, dict):
            identity["torch_threads"] = environment.get("torch_threads")
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
    R@1 … NMI, `final`, `epoch`, `iteration` of the last evaluation, `path`, then the settings
    of config.json when present (`dataset`, `lr`, ...), sorted by method and seed. A malformed
    file raises a ValueError naming it; no run is silently dropped."""
    root = resolve_path(run_root)
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


# ----------------------------------------------------------------------------------------------
# How the rows were obtained (from the completed runs' config.json)
# ----------------------------------------------------------------------------------------------


def _completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["final"].astype(bool)]


def comparability(runs: pd.DataFrame) -> str:
    """One paragraph saying how the measured rows compare with the paper's, from the completed
    runs' dataset, backbone and embedding size."""
    runs = _completed(runs)
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


def _how_chosen(method: str, lrs: list, preset: str | None) -> str:
    """How `method`'s learning rate(s) `lrs` were chosen, read against `preset`'s value and the
    tuned entries of METHOD_SETTINGS (qlib.train.config)."""
    from .train.config import METHOD_SETTINGS, QUADRUPLET_METHODS, config_from_preset

    expected = config_from_preset(preset, method=method).lr if preset else None
    if len(lrs) > 1 or expected is None or lrs[0] != expected:
        return "set by hand (not the preset's value)"
    if "lr" in METHOD_SETTINGS.get(preset, {}).get(method, {}):
        return f"chosen on validation classes by `make tune PRESET={preset}`"
    if preset == "paper" and method in QUADRUPLET_METHODS:
        return "the paper's"
    if preset == "paper":
        return (
            "the paper's rate, not tuned for this baseline (no GPU and no Stanford Cars "
            "where this was built; `make tune PRESET=paper CARS_ROOT=...` tunes it)"
        )
    return f"the `{preset}` preset's value, not tuned"


def _learning_rates(runs: pd.DataFrame) -> str:
    """Each method's learning rate(s) (paper order, then other methods by name), grouped by
    how they were chosen."""
    preset = _matching_preset(runs)
    present = set(runs["method"])
    methods = [m for m in _PAPER_NAMES if m in present] + sorted(present - set(_PAPER_NAMES))
    by_how: dict[str, list[str]] = {}
    for method in methods:
        lrs = _values(runs[runs["method"] == method], "lr")
        if lrs:
            text = ", ".join(f"{lr:g}" for lr in lrs)
            by_how.setdefault(_how_chosen(method, lrs, preset), []).append(f"{method} {text}")
    return "; ".join(f"{', '.join(items)} ({how})" for how, items in by_how.items())


_STARTS = {
    "imagenet": "ImageNet weights (the paper's start)",
    "scratch": "random weights (from scratch)",
}


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
    return _STARTS[inits[0]] if len(inits) == 1 and inits[0] in _STARTS else _one(runs, "init")


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
    """How the completed runs were trained (seeds, start, budget, optimiser, each method's
    learning rate and how it was chosen, the reduction rule, threads), as markdown bullets."""
    runs = _completed(runs)
    if runs.empty:
        return "No completed run yet."
    lines = [
        f"- Seeds: {', '.join(str(s) for s in _values(runs, 'seed'))}; a row is the mean ± "
        "sample std over its seeds (column Seeds = n).",
        f"- Start: {_start(runs)}.",
        f"- Budget, the same for every method: {_one(runs, 'epochs')} epochs of ceil(valid "
        f"anchors / B) iterations, B = {_one(runs, 'batch_size')} quadruplets or 4B images "
        f"per iteration; warm-up epochs of Random: {_one(runs, 'warmup_epochs')}.",
        f"- Optimiser: {_one(runs, 'optimizer')}; learning rate per method: "
        f"{_learning_rates(runs)}.",
        f"- {_loss_scale_rule(runs)}",
        f"- Torch threads per run: {_one(runs, 'torch_threads')} (recorded in config.json; a "
        "run's numbers repeat bitwise on one machine).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------


def build_table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Measured vs paper, one row per method in the paper's order (then any measured method the
    paper lacks), indexed by method key. Columns: `name`, `n_seeds`, `seeds`; per metric M in
    R@1 … NMI: `M` (mean over completed seeds), `M_std` (ddof=1; NaN with one seed),
    `M_paper`, `M_diff` (= `M` - `M_paper`); then `NMI_cars196`, `comparable`, `note`,
    `n_unfinished` (runs not averaged because they did not complete)."""
    missing_columns = [c for c in ("method", "seed", *METRICS, "final") if c not in runs.columns]
    if missing_columns:
        raise ValueError(f"runs lacks columns {missing_columns}; expected collect_runs' output.")
    paper = paper_table1()
    extra = [m for m in dict.fromkeys(runs["method"]) if m not in paper.index]
    absent = {"comparable": False, "note": "Not in the paper's Table 1."}
    finished = runs["final"].astype(bool)
    rows = []
    for method in [*paper.index, *extra]:
        of_method = runs["method"] == method
        group = runs[of_method & finished]
        reference = paper.loc[method].to_dict() if method in paper.index else absent
        row: dict = {
            "method": method,
            "name": reference.get("name", method),
            "n_seeds": len(group),
            "seeds": " ".join(str(s) for s in sorted(group["seed"])),
        }
        for metric in METRICS:
            values = group[metric].to_numpy(dtype=float)
            row[metric] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric}_paper"] = reference.get(metric, np.nan)
            row[f"{metric}_diff"] = row[metric] - row[f"{metric}_paper"]
        row["NMI_cars196"] = reference.get("NMI_cars196", np.nan)
        row["comparable"] = bool(reference["comparable"])
        row["note"] = reference["note"]
        row["n_unfinished"] = int((of_method & ~finished).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


MISSING = "—"


def _number(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    return (f"{value:+.2f}" if signed else f"{value:.2f}").replace("-", "−")


def interval_cell(mean: float, low: float, high: float) -> str:
    """A paired difference as `mean [low, high]` (no interval when `low` is not finite)."""
    cell = _number(mean, signed=True)
    return f"{cell} [{_number(low)}, {_number(high)}]" if np.isfinite(low) else cell


def _measured(table_row: pd.Series, metric: str) -> str:
    mean, std = table_row[metric], table_row[f"{metric}_std"]
    if not np.isfinite(mean):
        return MISSING
    if np.isfinite(std):
        return f"{_number(mean)} ± {_number(std)}"
    return _number(mean)


def to_markdown(table: pd.DataFrame) -> str:
    """`build_table1`'s table as GitHub markdown: per metric the measured value (mean ± sample
    std with several seeds), the paper's and Δ = measured − paper; "—" where there is no run."""
    header = ["Method", "Seeds"]
    for metric in METRICS:
        header += [metric, f"{metric} paper", f"Δ {metric}"]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for _, row in table.iterrows():
        name = row["name"] if row["comparable"] else f"{row['name']} *"
        cells = [name, str(int(row["n_seeds"]))]
        for metric in METRICS:
            cells += [
                _measured(row, metric),
                _number(row[f"{metric}_paper"]),
                _number(row[f"{metric}_diff"], signed=True),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    unfinished = int(table["n_unfinished"].sum())
    if unfinished:
        lines.append(f"{unfinished} unfinished run(s) are not counted.")
    lines.append(
        "Measured: mean over seeds, ± sample standard deviation (ddof=1) with several "
        f"seeds; {MISSING}: no run. Δ = measured − paper. * the paper's row is not directly "
        "comparable (errata below)."
    )
    return "\n".join(lines) + "\n"


def comparisons_markdown(comparisons: pd.DataFrame) -> str:
    """The paired differences of `qlib.stats.paired_table` as a markdown table: one row per
    pair, one column per metric, cells `mean [low, high]`, n the seeds both methods have."""
    metrics = list(dict.fromkeys(comparisons["metric"]))
    confidence = comparisons["confidence"].iloc[0] if len(comparisons) else 0.95
    header = ["Comparison (a − b)", "n", *(f"Δ {m} [{confidence:.0%} CI]" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for (a, b), group in comparisons.groupby(["a", "b"], sort=False):
        by_metric = group.set_index("metric")
        names = (_PAPER_NAMES.get(a, a), _PAPER_NAMES.get(b, b))
        cells = [" − ".join(names), str(int(group["n"].max()))]
        for metric in metrics:
            row = by_metric.loc[metric]
            cells.append(interval_cell(row["mean"], row["low"], row["high"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Δ: the mean over seeds of the per-seed difference a − b (the same seed of both "
        f"methods forms a pair); [{confidence:.0%} CI]: Student's t interval on those "
        "differences, mean ± t(n−1) · s / √n, n = the seeds both methods have (no interval "
        "with n < 2). An interval that holds 0 does not establish a difference.",
    ]
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
    comparisons: pd.DataFrame | None = None,
    notes: str = "",
) -> Path:
    """Write `preamble`, `to_markdown(table)`, the paired `comparisons`
    (`qlib.stats.paired_table`), the training `notes` (`protocol_notes`) and the errata to
    `path`; returns the path."""
    text = (preamble.strip() + "\n\n" if preamble.strip() else "") + to_markdown(table)
    if comparisons is not None and len(comparisons):
        text += "\nPaired differences between methods:\n\n" + comparisons_markdown(comparisons)
    if notes.strip():
        text += f"\nHow the measured rows were trained:\n\n{notes.strip()}\n"
    errata = "\n".join(f"- {item}" for item in ERRATA)
    text += f"\nKnown errata of the paper's Table 1:\n\n{errata}\n"
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)
