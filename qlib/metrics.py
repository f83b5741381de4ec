"""Retrieval metrics of the paper's Table 1 (docs/spec.md "Evaluation"): Recall@K and NMI.

Recall@K: the query is excluded by index, not by distance (an exact duplicate counts as a
neighbour), and neighbours at equal distance are ranked by index, so a query scores at K exactly
when its first positive in (distance, index) order has rank <= K. Queries go in chunks: no N x N
matrix is held.

NMI: our torch k-means (faster here than scikit-learn's and faiss's, benchmarks/results/
bench_core.md), then scikit-learn's normalized_mutual_info_score (arithmetic mean). An empty
cluster keeps its centre; deterministic for a seed on the CPU, where evaluation runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from . import checks
from .distances import chunk_rows, shifted_squared_distances, squared_norms


def _check_inputs(embeddings, labels) -> tuple[Tensor, Tensor, Tensor]:
    """Validated embeddings (N, d) float32/64, labels (N,) long on their device, and the squared
    norms (N,) (which check that the embeddings are finite)."""
    embeddings = checks.embeddings("embeddings", embeddings, finite=False)
    labels = checks.labels("labels", labels)
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(
            f"there are {embeddings.shape[0]} embeddings but {labels.numel()} labels; expected "
            "one label per embedding."
        )
    if embeddings.shape[0] < 2:
        raise ValueError(f"there are {embeddings.shape[0]} samples; expected at least 2.")
    return embeddings, labels.to(embeddings.device), squared_norms(embeddings)


def _check_ks(ks: Iterable[int], n: int) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty; expected at least one K, e.g. (1, 2, 4, 8).")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks holds {k!r}; expected positive ints.")
        if k >= n:
            raise ValueError(
                f"K = {k} needs more than {k} samples but there are {n}; expected K < N "
                "(each query has N - 1 other samples)."
            )
    return ks


# --- Recall@K ---
def first_positive_rank(embeddings, labels, chunk_size: int | None = None) -> Tensor:
    """Rank of each query's nearest same-label other sample: (N, d), (N,) -> LongTensor (N,).

    Rank 1 = the nearest other sample, in (squared Euclidean distance, index) order, the query
    itself excluded by index. A query with no other sample of its label gets rank N (never within
    any K < N). chunk_size = queries per chunk (default: about 8M distance-matrix elements).
    """
    return _first_positive_rank(*_check_inputs(embeddings, labels), chunk_size)


def _first_positive_rank(x: Tensor, labels: Tensor, norms: Tensor, chunk_size) -> Tensor:
    n = labels.numel()
    chunk = chunk_rows(n, chunk_size)
    # Each class as a contiguous run of a stable sort by label (ascending index inside); the
    # window of a query = `width` sorted positions that cover its class.
    _, class_of = torch.unique(labels, return_inverse=True)
    order = torch.argsort(class_of, stable=True)
    sizes = torch.bincount(class_of)
    width = int(sizes.max())
    window_start = (sizes.cumsum(0) - sizes).clamp(max=n - width)[class_of]
    offsets = torch.arange(width, device=x.device)
    ranks = torch.empty(n, dtype=torch.long, device=x.device)
    scratch = torch.empty((min(chunk, n), n), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for rows in torch.arange(n, device=x.device).split(chunk):
            local = torch.arange(rows.numel(), device=x.device)
            d = shifted_squared_distances(x[rows], x, norms)  # same order as the distance
            d[local, rows] = float("inf")  # the query is excluded by index, not by distance
            # The first positive: argmin over the query's class window (ties: lowest index).
            columns = order[window_start[rows, None] + offsets]
            on_window = d.gather(1, columns)
            on_window.masked_fill_(labels[columns] != labels[rows, None], float("inf"))
            best = on_window.argmin(1, keepdim=True)
            first, d_first = columns.gather(1, best), on_window.gather(1, best)
            # rank = 1 + samples closer + samples at the same distance with a lower index. A
            # float 0/1 matrix counts several times faster than a bool one on the CPU.
            buffer = scratch[: rows.numel()]
            closer = torch.lt(d, d_first, out=buffer).sum(1).long()
            tied = torch.le(d, d_first, out=buffer).sum(1).long() - closer  # first included
            rank = closer + 1
            with_ties = (tied > 1).nonzero().flatten()  # rare: sort those out by index
            if with_ties.numel():
                lower = torch.arange(n, device=x.device) < first[with_ties]
                ahead = (d[with_ties] == d_first[with_ties]) & lower
                rank[with_ties] += ahead.sum(1)
            has_positive = torch.isfinite(d_first[:, 0])
            ranks[rows] = torch.where(has_positive, rank, n)
    return ranks


def recall_at_k(
    embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), chunk_size: int | None = None
) -> dict[int, float]:
    """Recall@K (Song et al. 2016): embeddings (N, d), labels (N,) -> {K: fraction of queries}.

    A query scores at K when any of its K nearest other samples shares its label (Euclidean
    distance, ties by lowest index, the query excluded by index).
    """
    x, labels, norms = _check_inputs(embeddings, labels)
    ks = _check_ks(ks, labels.numel())  # before the distance pass: bad ks fail fast
    ranks = _first_positive_rank(x, labels, norms, chunk_size)
    return {k: float((ranks <= k).double().mean()) for k in ks}


# --- NMI ---
def kmeans(embeddings, k: int, seed: int = 0, *, n_init: int = 1, max_iter: int = 300) -> Tensor:
    """k-means clusters of embeddings (N, d) -> LongTensor (N,) of cluster ids in [0, k).

    Greedy k-means++ initialisation from a CPU generator seeded with `seed`, Lloyd iterations
    until no assignment changes (at most max_iter), the run of lowest inertia among n_init.
    """
    x = checks.embeddings("embeddings", embeddings, finite=False)
    return _kmeans(x, squared_norms(x), k, seed, n_init, max_iter)


def _kmeans(x: Tensor, norms: Tensor, k: int, seed: int, n_init: int, max_iter: int) -> Tensor:
    k = checks.integer("k", k, 1)
    seed, n_init = checks.integer("seed", seed, 0), checks.integer("n_init", n_init, 1)
    max_iter = checks.integer("max_iter", max_iter, 1)
    if k > x.shape[0]:
        raise ValueError(f"k = {k} clusters need at least {k} samples; there are {x.shape[0]}.")
    generator = torch.Generator().manual_seed(seed)
    best, best_inertia = None, math.inf
    with torch.no_grad():
        for _ in range(n_init):
            centres = _kmeans_plus_plus(x, norms, k, generator)
            assignment, inertia = _lloyd(x, norms, centres, max_iter)
            if inertia < best_inertia:
                best, best_inertia = assignment, inertia
    return best


def _kmeans_plus_plus(x: Tensor, norms: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k initial centres (k, d): each new one the best of 2 + ln k candidates drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    n, trials = x.shape[0], 2 + int(math.log(k))

    def squared_distances_from(indices: Tensor) -> Tensor:  # (len(indices), N)
        shifted = shifted_squared_distances(x[indices], x, norms)
        return shifted.add_(norms[indices, None]).clamp_min_(0)

    chosen = [int(torch.randint(n, (1,), generator=generator))]
    nearest = squared_distances_from(torch.tensor(chosen, device=x.device))[0]
    for _ in range(1, k):
        cumulative = nearest.double().cumsum(0)
        u = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device)
        candidates = torch.searchsorted(cumulative, u * cumulative[-1], right=True)
        candidates.clamp_(max=n - 1)
        with_candidate = torch.minimum(squared_distances_from(candidates), nearest)
        best = int(with_candidate.sum(1).argmin())
        chosen.append(int(candidates[best]))
        nearest = with_candidate[best]
    return x[chosen]


def _lloyd(x: Tensor, norms: Tensor, centres: Tensor, max_iter: int) -> tuple[Tensor, float]:
    """Lloyd iterations from centres (k, d) -> (assignment (N,), inertia)."""
    assignment = None
    for _ in range(max_iter):
        shifted = shifted_squared_distances(x, centres, centres.square().sum(1))
        nearest, new = shifted.min(1)
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=centres.shape[0])[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return assignment, float((nearest + norms).sum())


def nmi(embeddings, labels, seed: int = 0, *, n_init: int = 1) -> float:
    """Normalised mutual information between k-means clusters and labels, in [0, 1].

    embeddings (N, d), labels (N,); k = number of distinct labels (see `kmeans`);
    scikit-learn's normalized_mutual_info_score with the arithmetic average.
    """
    from sklearn.metrics import normalized_mutual_info_score

    x, labels, norms = _check_inputs(embeddings, labels)
    n_clusters = int(torch.unique(labels).numel())
    if n_clusters < 2:
        raise ValueError("labels hold a single class; expected at least 2 classes for NMI.")
    clusters = _kmeans(x, norms, n_clusters, seed, n_init, max_iter=300)
    return float(
        normalized_mutual_info_score(
            labels.cpu().numpy(), clusters.cpu().numpy(), average_method="arithmetic"
        )
    )


def retrieval_metrics(
    embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), seed: int = 0
) -> dict[str, float]:
    """{"R@1": pct, "R@2": pct, ..., "NMI": pct}: Recall@K and NMI in percent (Table 1's units)."""
    recalls = recall_at_k(embeddings, labels, ks)
    out = {f"R@{k}": 100.0 * value for k, value in recalls.items()}
    out["NMI"] = 100.0 * nmi(embeddings, labels, seed=seed)
    return out
