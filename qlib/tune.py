"""Learning rates chosen on validation classes (Musgrave et al. 2020, "A Metric Learning
Reality Check"): `make tune` / `python -m qlib.tune`.

For each method and each learning rate of a small grid, train the preset's run (its budget
unchanged: epochs, batch size, warm start) with `eval_split="val"`: the training classes are
split into classes to train on and held-out validation classes (`qlib.train.data.
validation_split`); the test classes are never read. The chosen rate is the one with the
highest mean validation Recall@1 over the tuning seeds (ties, within 0.05 points: the smaller
rate). Writes `<run_root>/tune.json` (every run's numbers and the choice) and `tune.md` (a
table and the `METHOD_SETTINGS` entry to paste into `qlib/train/config.py`).

    python -m qlib.tune                                   # the demo preset (synthetic data)
    python -m qlib.tune --preset paper --root /data/stanford_cars   # the baselines, on a GPU
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .utils import load_average, resolve_path, write_json

# Half-decade grids around each preset's optimiser default.
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": (3e-4, 1e-3, 3e-3, 1e-2),
    "sgd": (1e-4, 3e-4, 1e-3, 3e-3),
}
# The paper's own methods keep the paper's SGD rate under the paper preset.
PAPER_FIXED = ("random", "method1", "method2")
CRITERION = "R@1"
TIE = 0.05  # points of validation R@1 within which the smaller rate wins


def tune_runs(
    preset: str,
    methods: Sequence[str],
    grid: Sequence[float],
    seeds: Sequence[int],
    run_root: str | Path,
    overrides: dict[str, Any] | None = None,
) -> list[dict]:
    """The training parameters (for `qlib.pipeline.train_many`) of every tuning run."""
    return [
        {
            "preset": preset,
            "method": method,
            "seed": seed,
            "lr": float(lr),
            "eval_split": "val",
            "run_root": str(run_root),
            "run_name": f"{method}_lr{lr:g}_seed{seed}",
            **(overrides or {}),
        }
        for method in methods
        for lr in grid
        for seed in seeds
    ]


def choose(results: dict[float, list[float]]) -> float:
    """The learning rate with the highest mean score ({lr: [score per seed]}); among rates
    within TIE of the best, the smallest."""
    means = {lr: float(np.mean(v)) for lr, v in results.items() if v}
    if not means:
        raise ValueError("no finished tuning run to choose from; run the tuning first.")
    best = max(means.values())
    return min(lr for lr, m in means.items() if m >= best - TIE)


def summarize(runs: Sequence[dict], run_root: str | Path) -> dict:
    """Read every tuning run's final validation metrics and choose per method."""
    from .table import final_metrics

    per_method: dict[str, dict] = {}
    for params in runs:
        path = resolve_path(run_root) / params["run_name"] / "metrics.json"
        entry = per_method.setdefault(params["method"], {"runs": []})
        metrics = final_metrics(path)
        entry["runs"].append(
            {"lr": params["lr"], "seed": params["seed"], "final": metrics["final"]}
            | {k: metrics[k] for k in ("R@1", "R@2", "R@4", "R@8", "NMI")}
        )
    for entry in per_method.values():
        scores: dict[float, list[float]] = {}
        for run in entry["runs"]:
            if run["final"]:
                scores.setdefault(run["lr"], []).append(run[CRITERION])
        entry["mean"] = {str(lr): float(np.mean(v)) for lr, v in scores.items()}
        entry["std"] = {
            str(lr): float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
            for lr, v in scores.items()
        }
        entry["chosen_lr"] = choose(scores)
    return per_method


def _cell(entry: dict, lr: float) -> str:
    """Mean ± std (no std from one seed), bold at the chosen rate; — where no run finished."""
    if str(lr) not in entry["mean"]:
        return "—"
    mean, std = entry["mean"][str(lr)], entry["std"][str(lr)]
    text = f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")
    return f"**{text}**" if lr == entry["chosen_lr"] else text


def _markdown(report: dict) -> str:
    grid = report["grid"]
    start, end = (
        "n/a" if x is None else f"{x:.1f}" for x in (report["load_start"], report["load_end"])
    )
    lines = [
        f"# Learning rates on validation classes: preset `{report['preset']}`",
        "",
        f"`{report['command']}`, {report['seconds'] / 60:.1f} min on {report['workers']} "
        f"worker(s), {report['cpu_count']} CPUs, load average {start} at the start "
        f"and {end} at the end.",
        "",
        f"Each cell: mean validation {CRITERION} (%) over seeds {report['seeds']} ± sample std; "
        f"**bold**: the chosen rate (highest mean; within {TIE} points the smaller). The "
        f"runs train on the training classes left after carving out validation classes "
        f'(`eval_split="val"`) with the preset\'s budget ({report["epochs"]} epochs, '
        f"{report['optimizer']}); the test classes are never read.",
        "",
        "| Method | " + " | ".join(f"lr {lr:g}" for lr in grid) + " |",
        "|---|" + "---:|" * len(grid),
    ]
    for method, entry in report["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_cell(entry, lr) for lr in grid) + " |")
    chosen = ",\n".join(
        f'        "{m}": {{"lr": {e["chosen_lr"]:g}}}' for m, e in report["methods"].items()
    )
    lines += [
        "",
        f'`METHOD_SETTINGS["{report["preset"]}"]` in `qlib/train/config.py`:',
        "",
        "```python",
        f'    "{report["preset"]}": {{',
        chosen + ",",
        "    },",
        "```",
        "",
    ]
    return "\n".join(lines)


def _methods(preset: str, methods: Sequence[str] | None) -> Sequence[str]:
    """The checked methods to tune; by default every method (the paper preset: its baselines)."""
    from .train import METHODS, PRESETS
    from .train.config import check_methods

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    if methods is None:
        methods = [m for m in METHODS if preset != "paper" or m not in PAPER_FIXED]
    return list(check_methods(methods))


def tune(
    preset: str = "demo",
    *,
    methods: Sequence[str] | None = None,
    grid: Sequence[float] | None = None,
    seeds: Sequence[int] = (0, 1),
    run_root: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    workers: int | None = None,
    command: str = "",
) -> dict:
    """Train the grid on validation classes and write `<run_root>/tune.json` and `tune.md`
    (default run_root: runs/tune/<preset>); returns the report."""
    from . import pipeline
    from .train import config_from_preset

    methods = _methods(preset, methods)
    base = config_from_preset(preset, **(overrides or {}))
    grid = tuple(grid or DEFAULT_GRIDS[base.optimizer])
    run_root = resolve_path(run_root or f"runs/tune/{preset}")
    runs = tune_runs(preset, methods, grid, seeds, run_root, overrides)
    load_start, tic = load_average(), time.perf_counter()
    workers = workers or pipeline.default_workers()
    pipeline.train_many(runs, workers=workers)
    report = {
        "preset": preset,
        "command": command or f"python -m qlib.tune --preset {preset}",
        "criterion": f"mean validation {CRITERION} over the seeds; ties within {TIE}: smaller lr",
        "optimizer": base.optimizer,
        "epochs": base.epochs,
        "init": base.init,
        "grid": [float(g) for g in grid],
        "seeds": list(seeds),
        "overrides": overrides or {},
        "seconds": time.perf_counter() - tic,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_start": load_start,
        "load_end": load_average(),
        "methods": summarize(runs, run_root),
    }
    report["chosen"] = {m: e["chosen_lr"] for m, e in report["methods"].items()}
    write_json(run_root / "tune.json", report)
    (run_root / "tune.md").write_text(_markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from . import pipeline

    parser = argparse.ArgumentParser(
        prog="python -m qlib.tune",
        description="Choose each method's learning rate on validation classes.",
    )
    parser.add_argument("--preset", default="demo", help="training preset (demo, paper, ...)")
    parser.add_argument("--dataset", help="dataset (default: the preset's)")
    parser.add_argument("--root", help="dataset folder (e.g. Stanford Cars for the paper preset)")
    parser.add_argument("--methods", nargs="+", help="default: every method (paper: baselines)")
    parser.add_argument("--grid", type=float, nargs="+", help="learning rates to try")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="tuning seeds")
    parser.add_argument("--epochs", type=int, help="default: the preset's budget")
    parser.add_argument("--run-root", help="default runs/tune/<preset>")
    parser.add_argument("--workers", type=int, help="processes side by side")
    args = vars(parser.parse_args(argv))  # tune's arguments, and the training overrides
    overrides = {k: v for k in ("dataset", "root") if (v := args.pop(k))}
    if (epochs := args.pop("epochs")) is not None:
        overrides["epochs"] = epochs
    command = "python -m qlib.tune " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        report = tune(**args, overrides=overrides, command=command)
    except (ValueError, FileNotFoundError, pipeline.PipelineError) as err:
        print(f"\nTuning stopped: {err}", file=sys.stderr)
        return 1
    print(f"\nchosen learning rates: {report['chosen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
