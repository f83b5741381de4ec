"""One GPU check (issue 11): `bash benchmarks/gpu_check.sh`, about 4-5 minutes on one H100/H200.

1. the CUDA tests (`pytest -m cuda`, the files that hold them), among them
   a torchrun launch of `python -m qlib.train` on the GPUs (nccl, SyncBatchNorm);
2. quadruplet selection (`qlib.miners.Bank.select`) over a bank of Stanford Cars' training size
   (8,054 x 1,024) against its floor, `torch.cdist(bank[anchors], bank)` (target: within 3x);
3. training throughput of the `paper` preset (ResNet-101, 224 px, random weights, AMP on) for
   `--iterations` iterations of each quadruplet method and one baseline on the synthetic
   `cars196` set (no download): images/s of the training loop after a warm-up, peak GPU memory,
   and no NaN (the run stops on one; its bank refresh and final evaluation run too);
4. the data-loading rate of that run's training loader alone (its workers, no GPU work).

Writes benchmarks/results/gpu_check.json and gpu_check.md and prints the table. Without CUDA it
prints one sentence and exits 0; `--cpu-self-test` runs the same steps at toy sizes on the CPU
(into a temporary folder) to check the script itself. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qlib import miners as qminers  # noqa: E402
from qlib import train as qtrain  # noqa: E402
from qlib.train import loop as qloop  # noqa: E402
from qlib.train.batches import augmentation_keys  # noqa: E402
from qlib.train.data import make_loader  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
NO_GPU = (
    "No CUDA GPU on this machine: gpu_check skips its GPU checks (CUDA tests, selection against "
    "its floor, paper-preset throughput, data loading)."
)
SELECTION_TARGET = 3.0  # issue 11: selection within 3x its floor on a GPU
THROUGHPUT_TARGET = 2000  # issue 11: training images/s of the paper preset on one H100/H200


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# 1. CUDA tests
# ----------------------------------------------------------------------------------------------


def cuda_tests(timeout: int) -> dict[str, Any]:
    # Only the files that hold `cuda`-marked tests: the others import notebook tooling
    # (papermill, nbformat) that a bare GPU machine need not have.
    files = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "tests").glob("test_*.py")
        if "mark.cuda" in path.read_text()
    )
    select = ["-m", "cuda"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, *files]
    tic = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        out, code = f"{err.stdout or ''}\ntimed out after {timeout} s", -1
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    return {
        "command": " ".join(["pytest", *select, *files]),
        "ok": code in (0, 5) and not counts.get("failed") and not counts.get("error"),
        "counts": counts,
        "seconds": time.perf_counter() - tic,
        "tail": out.strip().splitlines()[-12:] if code not in (0, 5) else [],
    }


# ----------------------------------------------------------------------------------------------
# 2. Selection against its floor
# ----------------------------------------------------------------------------------------------


def median_ms(fn, device: torch.device, repeats: int) -> float:
    for _ in range(3):  # warm-up: allocator, kernels' first launches
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return 1e3 * statistics.median(times)


def selection(
    device: torch.device,
    n: int,
    d: int,
    anchors: list[int],
    repeats: int,
    classes: tuple[int, int] = (98, 17),
) -> dict:
    """Bank.select per method vs torch.cdist(bank[anchors], bank), on random unit embeddings
    of `classes` = (fine, coarse) classes: Stanford Cars' training hierarchy by default, SOP's
    (11,318 products in 12 super-categories) for the SOP-scale bank."""
    gen = torch.Generator().manual_seed(0)
    fine = torch.randint(classes[0], (n,), generator=gen)
    coarse = fine % classes[1]
    embeddings = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
    bank = qminers.Bank(embeddings.to(device), fine.to(device), coarse.to(device))
    rows = []
    for n_anchors in anchors:
        picked = bank.sample_anchors(n_anchors, torch.Generator().manual_seed(1))
        on_device = embeddings.to(device)
        floor = median_ms(lambda: torch.cdist(on_device[picked], on_device), device, repeats)  # noqa: B023
        row = {"anchors": n_anchors, "floor_ms": floor}
        for method in qminers.METHODS:
            g = torch.Generator().manual_seed(2)
            ms = median_ms(lambda: bank.select(picked, method, g), device, repeats)  # noqa: B023
            row[method] = ms / floor
        rows.append(row)
    worst = max(max(r[m] for m in qminers.METHODS) for r in rows)
    return {
        "bank": [n, d],
        "classes": list(classes),
        "rows": rows,
        "worst_ratio": worst,
        "ok": worst <= SELECTION_TARGET,
    }


# ----------------------------------------------------------------------------------------------
# 3. Training throughput, 4. data loading
# ----------------------------------------------------------------------------------------------


class LoopClock:
    """Wall time of the training loop between iteration `warm` and the last, read from the
    loop's own per-iteration hook (`Run.log_step`), the GPU synchronised at both ends."""

    def __init__(self, warm: int, last: int) -> None:
        self.warm, self.last, self.start, self.stop = warm, last, None, None
        self.original = qloop.Run.log_step

    def __enter__(self) -> LoopClock:
        clock = self

        def log_step(run, *args, **kwargs):
            clock.original(run, *args, **kwargs)
            if run.iteration == clock.warm:
                sync(run.device)
                clock.start = time.perf_counter()
            elif run.iteration == clock.last:
                sync(run.device)
                clock.stop = time.perf_counter()

        qloop.Run.log_step = log_step
        return self

    def __exit__(self, *exc: object) -> None:
        qloop.Run.log_step = self.original


def throughput(config: qtrain.TrainConfig, warm: int) -> dict[str, Any]:
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    iterations = config.iterations_per_epoch
    row: dict[str, Any] = {"method": config.method, "iterations": iterations}
    tic = time.perf_counter()
    try:
        with LoopClock(warm, iterations) as clock:
            run_dir = qtrain.train(config)
    except (qtrain.NonFiniteLossError, ValueError) as err:  # NaN in a step, the bank or a metric
        return row | {"ok": False, "error": f"{type(err).__name__}: {err}"}
    log = qtrain.read_log(run_dir)
    final = qtrain.read_metrics(run_dir)[-1]
    images = 4 * config.batch_size * (iterations - warm)
    finite = bool(log["loss"].notna().all()) and all(
        math.isfinite(v) for k, v in final.items() if k.startswith(("R@", "NMI"))
    )
    return row | {
        "images_per_s": images / (clock.stop - clock.start),
        "step_images_per_s": 4 * config.batch_size / float(log["time_step"][warm:].median()),
        "data_wait_share": float(log["time_data"][warm:].sum())
        / float(log["time_iteration"][warm:].sum()),
        "bank_refresh_s": float(log["time_bank"].sum()),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "final_R@1": final.get("R@1"),
        "no_nan": finite,
        "wall_s": time.perf_counter() - tic,
        "ok": finite,
    }


def data_loading(config: qtrain.TrainConfig, n_batches: int) -> dict[str, Any]:
    """The training loader alone (its workers: decode, resize, crop, flip; uint8 to pinned
    memory), for random batches of 4B images: images/s after the first batch."""
    data = qtrain.build_datasets(config)
    gen = torch.Generator().manual_seed(0)
    n, size = len(data.train_fine), 4 * config.batch_size
    batches = [
        augmentation_keys(torch.randint(n, (size,), generator=gen), gen)
        for _ in range(n_batches + 1)
    ]
    loader = make_loader(
        data.train_aug_set, config, torch.device(config.device), batch_sampler=batches
    )
    items = iter(loader)
    next(items)  # the workers' start
    tic = time.perf_counter()
    for _ in range(n_batches):
        next(items)
    seconds = time.perf_counter() - tic
    return {
        "workers": config.num_workers,
        "images_per_s": n_batches * size / seconds,
        "image_size": data.image_size,
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {
            "gpu": props.name,
            "gpu_memory_gib": props.total_memory / 2**30,
            "gpus": torch.cuda.device_count(),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    return env


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    where = (
        f"{env['gpu']} ({env['gpu_memory_gib']:.0f} GiB), {env['cpus']} CPUs"
        if "gpu" in env
        else f"CPU self-test, {env['cpus']} CPUs"
    )
    lines = [
        "# gpu_check",
        "",
        f"`bash benchmarks/gpu_check.sh` on {where}; torch {env['torch']}, CUDA {env['cuda']}, "
        f"{env['date']}; {report['seconds']:.0f} s in all. Verdict: "
        f"**{'all checks passed' if report['ok'] else 'FAILED: ' + ', '.join(report['failed'])}**.",
        "",
        "Targets (issue 11): "
        + "; ".join(f"{name}: {'yes' if met else 'no'}" for name, met in report["targets"].items())
        + ".",
        "",
    ]
    tests = report.get("cuda_tests")
    if tests:
        counts = ", ".join(f"{v} {k}" for k, v in tests["counts"].items()) or "no tests"
        lines += [f"CUDA tests (`{tests['command']}`): {counts}, {tests['seconds']:.0f} s.", ""]
    for sel in filter(None, (report.get("selection"), report.get("selection_sop"))):
        n, d = sel["bank"]
        fine, coarse = sel.get("classes", (98, 17))
        lines += [
            f"Selection over a {n:,} x {d:,} bank ({fine:,} fine classes in {coarse} coarse), "
            "median time / floor (`torch.cdist` of the anchors against the bank); target within "
            f"{SELECTION_TARGET:g}x:",
            "",
            "| anchors | floor ms | " + " | ".join(qminers.METHODS) + " |",
            "|---:|---:|" + "---:|" * len(qminers.METHODS),
        ]
        for r in sel["rows"]:
            ratios = " | ".join(f"{r[m]:.2f}x" for m in qminers.METHODS)
            lines.append(f"| {r['anchors']} | {r['floor_ms']:.3f} | {ratios} |")
        lines.append("")
    runs = report.get("training")
    if runs:
        cfg = report["training_config"]
        lines += [
            f"Training, `{cfg['preset']}` preset ({cfg['backbone']}, {cfg['image_size']} px, "
            f"{cfg['batch_size']} quadruplets = {4 * cfg['batch_size']} images per iteration, "
            f"random weights, amp={cfg['amp']}) on synthetic `{cfg['synthetic_size']}`, "
            f"{cfg['iterations']} iterations each, images/s after {cfg['warm']} warm-up "
            f"iterations (target {THROUGHPUT_TARGET:,} on one H100/H200):",
            "",
            "| method | images/s (loop) | images/s (step) | data wait | bank refresh s | "
            "peak GiB | no NaN | R@1 |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in runs:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['error']} | | | | | no | |")
                continue
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "n/a"
            lines.append(
                f"| {r['method']} | {r['images_per_s']:,.0f} | {r['step_images_per_s']:,.0f} | "
                f"{100 * r['data_wait_share']:.1f}% | {r['bank_refresh_s']:.1f} | {peak} | "
                f"{'yes' if r['no_nan'] else 'NO'} | {r['final_R@1']:.1f} |"
            )
        lines.append("")
    loading = report.get("data_loading")
    if loading:
        lines += [
            f"Data loading (the training loader alone, {loading['workers']} workers, "
            f"{loading['image_size']} px crops): {loading['images_per_s']:,.0f} images/s.",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="per training run")
    parser.add_argument("--warm", type=int, default=20, help="iterations left out of images/s")
    parser.add_argument(
        "--methods", nargs="+", default=["method2", "method1", "random", "semihard"]
    )
    parser.add_argument("--out", default=str(RESULTS), help="folder of gpu_check.json/.md")
    parser.add_argument(
        "--cpu-self-test",
        action="store_true",
        help="the same steps at toy sizes on the CPU, written to a temporary folder",
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_self_test:
        print(NO_GPU)
        return 0
    self_test = args.cpu_self_test
    device = torch.device("cpu" if self_test else "cuda")
    tic = time.perf_counter()
    report: dict[str, Any] = {"environment": environment(device)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) if self_test else Path(args.out)
        report["cuda_tests"] = cuda_tests(timeout=150)
        print(f"CUDA tests: {report['cuda_tests']['counts']}", flush=True)
        if self_test:
            report["selection"] = selection(device, 2000, 64, [32, 128], repeats=3)
        else:
            report["selection"] = selection(device, 8054, 1024, [32, 128, 1024], repeats=20)
        print(f"selection: worst {report['selection']['worst_ratio']:.2f}x", flush=True)
        if not self_test:  # issue 14: Stanford Online Products' training size, on the GPU
            sop = (60_000, 1024, [32, 128, 1024], 20, (11_318, 12))
            report["selection_sop"] = selection(device, *sop)

        preset = "smoke" if self_test else "paper"
        iterations = 6 if self_test else args.iterations
        warm = 2 if self_test else min(args.warm, iterations - 1)
        common = {
            "device": device.type,
            "init": "scratch",
            "epochs": 1,
            "iterations_per_epoch": iterations,
            "eval_at_start": False,
            "progress": False,
            "run_root": str(Path(tmp) / "runs"),
        }
        if not self_test:
            common |= {
                "dataset": "synthetic",
                "synthetic_size": "cars196",
                "num_workers": max(1, min(8, (os.cpu_count() or 2) - 2)),
            }
        runs = []
        for method in args.methods:
            config = qtrain.config_from_preset(preset, method=method, **common)
            runs.append(throughput(config, warm))
            print(f"training {method}: {runs[-1]}", flush=True)
        report["training"] = runs
        report["training_config"] = {
            "preset": preset,
            "iterations": iterations,
            "warm": warm,
            **{
                k: getattr(config, k)
                for k in ("backbone", "image_size", "batch_size", "amp", "synthetic_size")
            },
        }
        report["data_loading"] = data_loading(config, 3 if self_test else 40)
        # Pass/fail: correctness. The speed targets are reported, met or not.
        checks = {
            "CUDA tests": report["cuda_tests"]["ok"],
            "training without NaN": all(r["ok"] for r in runs),
        }
        report["failed"] = [name for name, ok in checks.items() if not ok]
        report["ok"] = not report["failed"]
        fastest = min((r.get("images_per_s", 0.0) for r in runs), default=0.0)
        report["targets"] = {
            f"selection within {SELECTION_TARGET:g}x its floor": report["selection"]["ok"],
            f"training >= {THROUGHPUT_TARGET:,} images/s (every method)": fastest
            >= THROUGHPUT_TARGET,
            "data loading faster than training": report["data_loading"]["images_per_s"]
            > max((r.get("images_per_s", 0.0) for r in runs), default=0.0),
        }
        report["seconds"] = time.perf_counter() - tic
        text = markdown(report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(text + "\n")
    print()
    print(text)
    if not self_test:
        print(f"written to {out}/gpu_check.json and gpu_check.md")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
