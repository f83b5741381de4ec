"""`make study`: does Method 2 beat Random, and under which condition?

Trains Random, Method 1 and Method 2 under the demo preset (its data, network, budget and each
method's tuned learning rate) with 5 seeds, under these conditions, each in its own folder
`runs/study/<condition>/`:

    warm            the demo's warm start (init="classifier"), the paper's condition
    scratch         random initial weights, the same budget
    warm_warmup     the warm start, then Random quadruplets for the first epoch, then the method
    scratch_warmup  random weights, Random for the first epoch, then the method
    scratch_long    random weights, twice the budget

and writes `runs/study/study.md` (+ `study.json`): each condition's mean ± std, and the paired
differences with 95% t intervals (`qlib.stats`): the selections against Random within each
condition, and each condition against another for the same method (pairs share a seed).

    python scripts/study.py [--seeds 0 1 2 3 4] [--conditions warm scratch ...] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from qlib import pipeline, stats, table
from qlib.train import config_from_preset
from qlib.utils import repo_root, write_json

METHODS = ("random", "method1", "method2")
CONDITIONS = {
    "warm": ({"init": "classifier"}, METHODS),
    "scratch": ({"init": "scratch"}, METHODS),
    "warm_warmup": ({"init": "classifier", "warmup_epochs": 1}, ("method1", "method2")),
    "scratch_warmup": ({"init": "scratch", "warmup_epochs": 1}, ("method1", "method2")),
    "scratch_long": ({"init": "scratch", "epochs": 2 * config_from_preset("demo").epochs}, METHODS),
}
# (label, condition a, method a, condition b, method b): a - b paired by seed.
COMPARISONS = [
    *(
        (f"{cond}: {a} − {b}", cond, a, cond, b)
        for cond in ("warm", "scratch", "scratch_long")
        for a, b in stats.DEFAULT_PAIRS
    ),
    *(
        (f"{cond}: {m} (warm-up) − random", cond, m, cond.removesuffix("_warmup"), "random")
        for cond in ("warm_warmup", "scratch_warmup")
        for m in ("method1", "method2")
    ),
    *((f"{m}: warm − scratch", "warm", m, "scratch", m) for m in METHODS),
    *((f"{m}: warm − scratch_long", "warm", m, "scratch_long", m) for m in METHODS),
    *(
        (f"{m}: warm-up − none ({start})", f"{start}_warmup", m, start, m)
        for start in ("warm", "scratch")
        for m in ("method1", "method2")
    ),
]


def _cell(values: np.ndarray) -> str:
    if len(values) == 0:
        return "—"
    std = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{std} (n={len(values)})"


def _interval(c: stats.PairedComparison) -> str:
    return table.interval_cell(c.mean, c.low, c.high) + (" *" if c.excludes_zero else "")


def report(root: Path, conditions: list[str], timing: dict, args) -> str:
    """study.md from the run folders; `timing`: timing.json (command, seconds, load, workers,
    cpus of the run that trained)."""
    seconds, loads = timing["seconds"], timing["load"]
    runs = {c: table.collect_runs(root / c) for c in conditions if (root / c).is_dir()}
    lines = [
        "# Study: Random vs Method 1 vs Method 2, warm start vs scratch, warm-up",
        "",
        f"`{timing['command']}`: {seconds / 60:.1f} min on "
        f"{timing['workers']} worker(s) of 1 torch thread on {timing['cpus']} CPUs; load average "
        f"{loads[0]:.1f} at the start and {loads[1]:.1f} at the end (a load above the CPU "
        "count means other jobs shared the machine).",
        "",
        "Demo preset (synthetic data, small CNN, Adam at each method's tuned learning rate, "
        f"{config_from_preset('demo').epochs} epochs) except where the condition says "
        "otherwise; every condition uses the learning rates tuned for the warm start; final "
        "test-split metrics in percent.",
        "",
        "## Mean ± sample std over seeds",
        "",
        "| Condition | Method | R@1 | NMI |",
        "|---|---|---:|---:|",
    ]
    for cond, frame in runs.items():
        done = frame[frame["final"].astype(bool)]
        for method in CONDITIONS[cond][1]:
            rows = done[done["method"] == method]
            r1, nmi = (_cell(rows[m].to_numpy(float)) for m in ("R@1", "NMI"))
            lines.append(f"| {cond} | {method} | {r1} | {nmi} |")
    lines += [
        "",
        "## Paired differences a − b (same seed), 95% Student's t interval",
        "",
        "`*`: the interval excludes 0.",
        "",
        "| Comparison | n | Δ R@1 [95% CI] | Δ NMI [95% CI] |",
        "|---|---:|---:|---:|",
    ]
    results = []
    for label, cond_a, a, cond_b, b in COMPARISONS:
        if cond_a not in runs or cond_b not in runs:
            continue
        pair = [
            stats.paired_comparison(runs[cond_a], a, b, metric, run_root_b=runs[cond_b])
            for metric in ("R@1", "NMI")
        ]
        results.append({"label": label, **{p.metric: p.as_dict() for p in pair}})
        lines.append(f"| {label} | {pair[0].n} | {_interval(pair[0])} | {_interval(pair[1])} |")
    write_json(root / "study.json", {"seconds": seconds, "load": loads, "comparisons": results})
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--run-root", default="runs/study")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--report-only", action="store_true", help="only rewrite study.md")
    args = parser.parse_args()
    args.workers = args.workers or pipeline.default_workers()
    root = Path(args.run_root)
    root = root if root.is_absolute() else repo_root() / root
    runs = [
        {"preset": "demo", "method": m, "seed": s, "run_root": str(root / cond), **overrides}
        for s in args.seeds
        for cond in args.conditions
        for overrides, methods in [CONDITIONS[cond]]
        for m in methods
    ]
    timing = root / "timing.json"
    if not args.report_only:
        load_start, tic = os.getloadavg()[0], time.perf_counter()
        records = pipeline.train_many(runs, workers=args.workers)
        seconds = time.perf_counter() - tic
        # A rerun that only skipped finished runs keeps the time of the run that trained them.
        if any(r["status"] == "ran" for r in records) or not timing.is_file():
            command = " ".join(["python scripts/study.py", *sys.argv[1:]])
            loads = [load_start, os.getloadavg()[0]]
            saved = {"seconds": seconds, "load": loads, "command": command}
            write_json(timing, saved | {"workers": args.workers, "cpus": os.cpu_count()})
    if not timing.is_file():
        sys.exit(f"{timing} does not exist: run `python scripts/study.py` without --report-only.")
    saved = json.loads(timing.read_text())
    # timing.json from before it recorded workers and CPUs: this command's
    defaults = {"command": "python scripts/study.py", "workers": args.workers}
    saved = defaults | {"cpus": os.cpu_count()} | saved
    text = report(root, args.conditions, saved, args)
    (root / "study.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
