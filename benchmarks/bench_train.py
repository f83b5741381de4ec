"""Training speed on the CPU with the `demo` preset: images per second, and the share of the time
spent refreshing the bank, selecting quadruplets and in forward/backward.

    .venv/bin/python benchmarks/bench_train.py [--methods method2 random semihard] [--epochs 2]

Targets (issue 5): selection under 10% of an iteration; the bank refresh under 20% of an epoch at
its default schedule (once per epoch). Prints a markdown table and writes it, with the machine
it ran on, to benchmarks/results/bench_train.md. The numbers come from the runs' own log.csv
(qlib.train times every iteration), so they measure the real training loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from qlib import train as qtrain
from qlib.utils import read_json, repo_root

RESULTS = repo_root() / "benchmarks" / "results" / "bench_train.md"


def measure(method: str, epochs: int, run_root: Path) -> dict[str, float | str]:
    """Train the demo preset for `epochs` epochs and summarise its log."""
    config = qtrain.config_from_preset(
        "demo",
        method=method,
        epochs=epochs,
        eval_every=epochs,
        eval_at_start=False,
        progress=False,
        run_root=str(run_root),
    )
    tic, cpu_tic = time.perf_counter(), time.process_time()
    run_dir = qtrain.train(config)
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu_tic
    log = qtrain.read_log(run_dir)
    data = read_json(run_dir / "config.json")["data"]
    images = 4 * config.batch_size * len(log)
    loop = float(log["time_iteration"].sum())
    bank = float(log["time_bank"].sum())
    refreshes = int((log["time_bank"] > 0).sum())
    shares = qtrain.time_shares(log)
    return {
        "method": method,
        "iterations": len(log),
        "images/s (training loop)": images / loop,
        "images/s (forward/backward)": images / float(log["time_step"].sum()),
        "bank refresh, share of epoch": shares["bank refresh"],
        "bank images/s": data["n_train"] * refreshes / bank if bank > 0 else float("nan"),
        "selection, share of iteration": float(log["time_selection"].sum()) / (loop - bank),
        "data, share of iteration": float(log["time_data"].sum()) / (loop - bank),
        "forward/backward, share of iteration": float(log["time_step"].sum()) / (loop - bank),
        "wall s (incl. setup + eval)": wall,
        "CPU s (all threads)": cpu,
    }


def markdown(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key in columns:
            value = row[key]
            if isinstance(value, str) or isinstance(value, int):
                cells.append(str(value))
            elif "share" in key:
                cells.append("n/a" if value != value else f"{100 * value:.1f}%")
            else:
                cells.append("n/a" if value != value else f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", nargs="+", default=["method2", "method1", "random", "semihard"]
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(m, args.epochs, Path(tmp)) for m in args.methods]
    table = markdown(rows)
    demo = qtrain.PRESETS["demo"]
    header = (
        "# bench_train: the demo preset on the CPU\n\n"
        f"`python benchmarks/bench_train.py --epochs {args.epochs}"
        f"{f' --threads {args.threads}' if args.threads else ''}` on {platform.machine()} "
        f"({os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"threads, load average {load:.1f} at the start), {time.strftime('%Y-%m-%d')}.\n"
        f"Demo preset: {demo['backbone']} at {demo['image_size']} px, batch {demo['batch_size']} "
        f"quadruplets = {4 * demo['batch_size']} images per iteration, bank refreshed once per "
        "epoch (the default schedule).\n\n"
        "Targets: selection < 10% of an iteration; bank refresh < 20% of an epoch. "
        "Shares of an iteration exclude the bank refresh; the bank's share is of the whole "
        "epoch (training loop time). The baselines have no bank and no quadruplet selection "
        "(their 'selection' is sampling the class-balanced batch).\n\n"
    )
    text = header + table + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
