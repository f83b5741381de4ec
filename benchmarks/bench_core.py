"""Benchmark of qlib's core: quadruplet selection against its floor, and the retrieval metrics
against pytorch-metric-learning with faiss (issues 11 and 14).

Run: `.venv/bin/python benchmarks/bench_core.py [--threads 2 1]` (about 4-5 minutes on 2 idle
CPU cores, more when they are shared; needs the dev extras: faiss-cpu, pytorch-metric-learning).
Writes benchmarks/results/bench_core.md.

1. Selection over a bank the size of Stanford Cars' training split (8,054 x 1,024, 98 fine classes
   in 17 coarse), 32 / 128 / 1,024 anchors: `Bank.select` (the fast path) and the reference
   `select_quadruplets`, against the floor `torch.cdist(bank[anchors], bank)`.
2. The same at Stanford Online Products' scale: 60,000 x 1,024, 11,318 fine classes in 12
   coarse, 32 / 128 anchors.
   Both on the CPU, and on CUDA as well when it is present.
3. recall_at_k + nmi on 8,131 x 1,024 (98 classes) against pytorch-metric-learning's
   AccuracyCalculator in its default setting (faiss k-NN and faiss k-means), with the
   torch.cdist floor of the k-NN, and the k-means alone: qlib's, faiss's, scikit-learn's.

Times are medians (and bests) of interleaved repeats: the machine is shared, so every row and its
floor take turns and the ratios are what to read. Peak memory is the growth of the process's
resident set (VmHWM, reset through /proc/self/clear_refs, after malloc_trim) over what it held
before the call, i.e. memory beyond the inputs; on CUDA, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qlib.metrics import nmi, recall_at_k  # noqa: E402
from qlib.miners import METHODS, Bank, select_quadruplets  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_core.md"
_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(fn, device: torch.device) -> float | None:
    """Peak memory (MiB) that fn() needs beyond what the process holds before it, or None."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    try:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)  # give freed heap back, so the baseline is what is really held
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def interleaved(fns: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each run of each fn; the fns take turns so that load spikes hit all of them."""
    for fn in fns.values():  # warm-up
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x.div_(x.norm(dim=1, keepdim=True))


def hierarchical_bank(n: int, dim: int, n_fine: int, n_coarse: int, seed: int = 0):
    """L2-normalised embeddings around coarse and fine centres, fine labels uniform over n_fine
    classes, each fine class in a random coarse class. The noise is set so that every P+ pick
    falls back and some P- picks do (like a partly trained embedding)."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, n_fine, (n,), generator=g)
    coarse_of_fine = torch.randperm(n_fine, generator=g) % n_coarse
    coarse = coarse_of_fine[fine]
    bank = unit_rows(torch.randn(n_coarse, dim, generator=g))[coarse]
    bank += 0.8 * unit_rows(torch.randn(n_fine, dim, generator=g))[fine]
    bank += torch.randn(n, dim, generator=g) * (4.0 / dim) ** 0.5
    return unit_rows(bank), fine, coarse


def clustered_embeddings(n: int, dim: int, n_classes: int, generator: torch.Generator):
    """Class centres on the sphere plus Gaussian noise, renormalised: Recall@1 about 0.6."""
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    centres = unit_rows(torch.randn(n_classes, dim, generator=generator))
    noise = torch.randn(n, dim, generator=generator) * (20.0 / dim) ** 0.5
    return unit_rows(centres[labels] + noise), labels


# --------------------------------------------------------------------------------------------
# 1-2. selection
# --------------------------------------------------------------------------------------------
def bench_selection(
    lines: list[str],
    device: torch.device,
    threads: int,
    title: str,
    n: int,
    n_fine: int,
    n_coarse: int,
    anchor_counts: tuple[int, ...],
    repeats: int,
    reference: bool,
) -> None:
    dim = 1024
    torch.set_num_threads(threads)
    bank, fine, coarse = hierarchical_bank(n, dim, n_fine, n_coarse)
    bank, fine, coarse = bank.to(device), fine.to(device), coarse.to(device)
    start = time.perf_counter()
    fast = Bank(bank, fine, coarse)
    _sync(device)
    build = time.perf_counter() - start
    held = peak_memory_mib(lambda: Bank(bank, fine, coarse), device)
    fast.select(fast.sample_anchors(2), "method1")  # makes the CPU's class-sorted copy
    lines += [
        f"### {title}: bank {n:,} x {dim:,} float32, {n_fine:,} fine classes in {n_coarse} "
        f"coarse ({device.type}{'' if device.type == 'cuda' else f', {threads} thread(s)'})",
        "",
        f"`Bank(...)` (once per bank refresh): {1e3 * build:,.0f} ms, peak {_mib(held)} MiB; "
        f"{int(fast.valid.sum()):,} valid anchors; window width {fast.width:,} (the largest "
        f"coarse class). On the CPU, Method 1 also keeps a class-sorted copy of the bank "
        f"({bank.numel() * bank.element_size() / 2**20:,.0f} MiB), made on its first call.",
        "",
        "| anchors | what | median ms | best ms | ratio to floor (median) | ratio (best) "
        "| peak MiB beyond inputs | fallbacks P+ / P- |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for n_anchors in anchor_counts:
        anchors = fast.sample_anchors(n_anchors, torch.Generator().manual_seed(n_anchors))
        fns = {"floor: cdist": lambda a=anchors: torch.cdist(bank[a], bank)}
        for method in METHODS:
            fns[f"Bank.select {method}"] = lambda a=anchors, m=method: fast.select(
                a, m, torch.Generator().manual_seed(1)
            )
        for method in METHODS if reference else ():
            fns[f"select_quadruplets {method}"] = lambda a=anchors, m=method: select_quadruplets(
                bank, fine, coarse, a, m, torch.Generator().manual_seed(1), return_fallbacks=True
            )
        times = interleaved(fns, repeats if n_anchors < 1024 else max(3, repeats // 3), device)
        floor, best_floor = statistics.median(times["floor: cdist"]), min(times["floor: cdist"])
        for name, fn in fns.items():
            median, best = statistics.median(times[name]), min(times[name])
            peak = peak_memory_mib(fn, device)
            fallbacks = "-"
            if name.startswith("Bank"):
                counts = fn()[1].sum(0).tolist()
                fallbacks = f"{counts[0]} / {counts[1]}"
            lines.append(
                f"| {n_anchors:,} | {name} | {1e3 * median:,.2f} | {1e3 * best:,.2f} | "
                f"{median / floor:.2f} | {best / best_floor:.2f} | {_mib(peak)} | {fallbacks} |"
            )
    lines.append("")


# --------------------------------------------------------------------------------------------
# 3. metrics
# --------------------------------------------------------------------------------------------
def bench_metrics(lines: list[str], threads: int) -> None:
    import faiss
    import numpy as np
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKMeans, FaissKNN
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    cpu = torch.device("cpu")
    n, dim, n_classes = 8131, 1024, 98
    x, labels = clustered_embeddings(n, dim, n_classes, torch.Generator().manual_seed(1))
    results = {}

    def keep(name, fn):
        return lambda: results.__setitem__(name, fn())

    pml = AccuracyCalculator(include=("precision_at_1", "NMI"), k=1, device=cpu)  # the default
    fns = {
        "qlib recall_at_k + nmi": keep(
            "qlib", lambda: (recall_at_k(x, labels), nmi(x, labels, seed=0))
        ),
        "PML AccuracyCalculator (faiss) P@1 + NMI": keep(
            "pml", lambda: pml.get_accuracy(x, labels)
        ),
        "qlib recall_at_k (K = 1, 2, 4, 8)": lambda: recall_at_k(x, labels),
        "PML FaissKNN, k = 2 (self + nearest)": lambda: FaissKNN()(x, 2, x, True),
        "floor: torch.cdist(x, x)": lambda: torch.cdist(x, x),
        "qlib nmi (k-means++ + Lloyd, torch)": lambda: nmi(x, labels, seed=0),
        "PML FaissKMeans (25 iterations, random init)": keep(
            "faiss_clusters", lambda: FaissKMeans()(x, n_classes)
        ),
    }
    times = interleaved(fns, repeats=5, device=cpu)
    peaks = {name: peak_memory_mib(fn, cpu) for name, fn in fns.items()}
    start = time.perf_counter()
    sk = KMeans(n_clusters=n_classes, n_init=1, random_state=0).fit_predict(x.double().numpy())
    sk_time = time.perf_counter() - start
    seeds = {seed: nmi(x, labels, seed=seed) for seed in (0, 1, 2)}

    recall, nmi_0 = results["qlib"]
    p1, pml_nmi = results["pml"]["precision_at_1"], results["pml"]["NMI"]
    y = labels.numpy()
    faiss_nmi = normalized_mutual_info_score(y, results["faiss_clusters"].numpy())
    sk_nmi = normalized_mutual_info_score(y, sk)
    ours, theirs = (
        times["qlib recall_at_k + nmi"],
        times["PML AccuracyCalculator (faiss) P@1 + NMI"],
    )
    knn_floor = statistics.median(times["floor: torch.cdist(x, x)"])
    lines += [
        f"## 3. Metrics on {n:,} x {dim:,} clustered embeddings ({n_classes} classes, CPU, "
        f"{threads} threads)",
        "",
        f"pytorch-metric-learning's `AccuracyCalculator(include=('precision_at_1', 'NMI'))` in its "
        f"default setting: `FaissKNN` (exact `IndexFlatL2`) and `FaissKMeans` (faiss.Kmeans "
        f"defaults: random initialisation, 25 iterations, seed 1234); faiss {faiss.__version__}. "
        "Median and best of 5 interleaved runs; ratio = time / the `torch.cdist(x, x)` floor of "
        "the k-NN.",
        "",
        "| what | median s | best s | ratio to cdist | peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in fns:
        median, best = statistics.median(times[name]), min(times[name])
        lines.append(
            f"| {name} | {median:.2f} | {best:.2f} | {median / knn_floor:.2f} | "
            f"{_mib(peaks[name])} |"
        )
    lines += [
        f"| scikit-learn KMeans(n_init=1) on float64 (qlib's previous k-means), 1 run | "
        f"{sk_time:.2f} | | | |",
        "",
        f"- qlib recall_at_k + nmi against PML with faiss: median {statistics.median(ours):.2f} s "
        f"vs {statistics.median(theirs):.2f} s (PML / qlib = "
        f"**{statistics.median(theirs) / statistics.median(ours):.1f}**), best {min(ours):.2f} s "
        f"vs {min(theirs):.2f} s (**{min(theirs) / min(ours):.1f}**).",
        f"- Recall@1 identical: {'yes' if recall[1] == p1 else '**no**'} (qlib "
        f"{recall[1]:.6f}, PML precision_at_1 {p1:.6f}); qlib R@2/4/8 {recall[2]:.4f} / "
        f"{recall[4]:.4f} / {recall[8]:.4f}.",
        f"- NMI: qlib {nmi_0:.4f} (seeds 0 / 1 / 2: "
        + " / ".join(f"{v:.4f}" for v in seeds.values())
        + f"); PML with faiss k-means {pml_nmi:.4f} (faiss clusters alone {faiss_nmi:.4f}); "
        f"scikit-learn k-means++ {sk_nmi:.4f}. The NMI formula is scikit-learn's in all of them; "
        "the k-means differs: faiss's random initialisation and 25 iterations stop at a worse "
        "clustering here, qlib's k-means++ and Lloyd to convergence match scikit-learn's.",
        f"- numpy {np.__version__}.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2, 1],
        help="CPU thread counts for the selection (default: 2 1); the metrics use the first",
    )
    threads = parser.parse_args().threads
    start, load = time.perf_counter(), os.getloadavg()[0]
    settings = [(torch.device("cpu"), t) for t in threads]
    if torch.cuda.is_available():
        settings.append((torch.device("cuda"), threads[0]))
    lines = [
        "## 1-2. Selection against its floor",
        "",
        "Floor = `torch.cdist(bank[anchors], bank)` alone, on the same device. Targets: "
        "`Bank.select` within 2x of the floor on this CPU, within 3x on a GPU. "
        "`select_quadruplets` is the reference (what `Bank` is tested against), for comparison at "
        "Cars scale. Peak = memory beyond the inputs (for `Bank.select`, beyond the bank and its "
        "precomputation).",
        "",
    ]
    for device, n_threads in settings:
        repeats = 9 if device.type == "cpu" else 50
        cars = ("Cars scale", 8054, 98, 17, (32, 128, 1024), repeats, True)
        bench_selection(lines, device, n_threads, *cars)
    for device, n_threads in settings:
        repeats = 5 if device.type == "cpu" else 30
        sop = ("SOP scale", 60_000, 11_318, 12, (32, 128), repeats, False)
        bench_selection(lines, device, n_threads, *sop)
    bench_metrics(lines, threads[0])
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    header = [
        "# bench_core: quadruplet selection and retrieval metrics",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()} with "
        f"{os.cpu_count()} cores{gpu}. The CPU is shared with other jobs while this runs (load "
        f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), so absolute "
        "times are noisy; read the ratios, which come from interleaved repeats. With other "
        "processes on the cores, a multi-threaded operation waits for whichever of its threads "
        "was descheduled, which costs a sequence of small operations (the selection) far more "
        "than one large one (the floor): the 1-thread rows are the steadier comparison. "
        f"Generated by `benchmarks/bench_core.py` in {time.perf_counter() - start:.0f} s.",
        "",
    ]
    report = "\n".join(header + lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)


if __name__ == "__main__":
    main()
