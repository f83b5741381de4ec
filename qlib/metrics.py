"""Retrieval metrics of the paper's Table 1 (docs/spec.md "Evaluation"): Recall@K and NMI.

Recall@K (Song et al. 2016): a query scores when any of its K nearest other samples shares its
label. The query itself is excluded by index, not by distance, so an exact duplicate of the query
counts as a neighbour. Neighbours at equal distance are ranked by bank index (lowest first), which
makes the result exact and deterministic: a query scores at K exactly when its first positive in
(distance, index) order has rank <= K. Queries are processed in chunks, so no N x N matrix is held.

NMI: k-means with k = number of distinct labels (scikit-learn KMeans, k-means++ initialisation,
random_state = seed, n_init = 1 by default: scikit-learn's own default for k-means++, and one run
per evaluation keeps evaluation cheap; the benchmark measures the seed-to-seed spread this leaves),
then normalized_mutual_info_score with the arithmetic average. k-means runs in float64 (faster
in scikit-learn than float32 for this shape, see nmi()).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# Elements of one (chunk, N) distance matrix (32 MiB in float32).
_CHUNK_ELEMENTS = 2**23

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_inputs(embeddings, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated (embeddings (N, d) float32/64, labels (N,) long, squared norms (N,))."""
    embeddings = torch.as_tensor(embeddings).detach()
    labels = torch.as_tensor(labels)
    if not embeddings.is_floating_point():
        raise ValueError(
            f"embeddings have dtype {embeddings.dtype}; expected a floating-point tensor (N, d)."
        )
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings have shape {tuple(embeddings.shape)}; expected a 2-D tensor (N, d)."
        )
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(
            f"labels have dtype {labels.dtype}; expected an integer tensor of class ids."
        )
    if labels.ndim != 1:
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected a 1-D tensor (N,).")
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(
            f"there are {embeddings.shape[0]} embeddings but {labels.numel()} labels; expected "
            "one label per embedding."
        )
    if embeddings.shape[0] < 2:
        raise ValueError(f"there are {embeddings.shape[0]} samples; expected at least 2.")
    if embeddings.dtype not in (torch.float32, torch.float64):
        embeddings = embeddings.float()
    norms = _squared_norms(embeddings)
    if not torch.isfinite(norms).all() or not torch.isfinite(4 * norms.max()):
        bad = (~torch.isfinite(embeddings)).any(1).nonzero().flatten()[:5].tolist()
        detail = f"rows {bad} hold NaN or inf" if bad else "values are too large to square"
        raise ValueError(f"embeddings {detail}; expected finite values.")
    return embeddings, labels.to(embeddings.device).long(), norms


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (N,) sums of squares, in row blocks (exact on integer data; ties stay ties)."""
    return torch.cat([block.square().sum(1) for block in x.split(4096)])


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


def first_positive_rank(embeddings, labels, chunk_size: int | None = None) -> torch.Tensor:
    """Rank of each query's nearest same-label other sample: (N, d), (N,) -> LongTensor (N,).

    Rank 1 = the nearest other sample; order by squared Euclidean distance, then by index; the
    query itself excluded by index. Queries with no other sample of their label get rank N (never
    within any K < N).
    """
    embeddings, labels, norms = _check_inputs(embeddings, labels)
    return _first_positive_rank(embeddings, labels, norms, chunk_size)


def _first_positive_rank(embeddings, labels, norms, chunk_size) -> torch.Tensor:
    n = labels.numel()
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // n)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size!r}; expected a positive int or None.")
    device = embeddings.device
    columns = torch.arange(n, device=device)
    ranks = torch.empty(n, dtype=torch.long, device=device)
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            local = torch.arange(stop - start, device=device)
            itself = local + start
            # ||e_j||^2 - 2 q.e_j: the squared distance less the query's own ||q||^2, which is
            # the same along a row and so changes no ranking; one fused product, no extra pass.
            sq = torch.addmm(norms[None, :], embeddings[start:stop], embeddings.T, alpha=-2.0)
            sq[local, itself] = float("inf")  # the query is excluded by index, not by distance
            positives = labels[None, :] == labels[start:stop, None]
            positives[local, itself] = False
            # One float scratch matrix serves the masked argmin and both counts: counting a
            # float 0/1 matrix is several times faster than summing a bool one on CPU.
            scratch = torch.where(positives, sq, float("inf"))
            first = scratch.argmin(1)  # the first positive: lowest index on ties
            has_positive = positives[local, first]
            del positives
            d_first = sq.gather(1, first[:, None])
            closer = torch.lt(sq, d_first, out=scratch).sum(1).long()
            # at the first positive's distance, the first positive itself included
            tied = torch.le(sq, d_first, out=scratch).sum(1).long() - closer
            rank = closer + 1
            # Ties with the first positive are rare: order them by index only where they occur.
            with_ties = (tied > 1).nonzero().flatten()
            if with_ties.numel():
                rows = sq[with_ties]
                before = (rows == d_first[with_ties]) & (columns[None, :] < first[with_ties, None])
                rank[with_ties] += torch.count_nonzero(before, dim=1)
            ranks[start:stop] = torch.where(has_positive, rank, torch.full_like(rank, n))
    return ranks


def recall_at_k(
    embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), chunk_size: int | None = None
) -> dict[int, float]:
    """Recall@K (Song et al. 2016): embeddings (N, d), labels (N,) -> {K: fraction of queries}.

    A query scores at K when any of its K nearest other samples shares its label (Euclidean
    distance, ties by lowest index, the query excluded by index). chunk_size = queries per chunk
    (default: about 8M distance-matrix elements per chunk).
    """
    embeddings, labels, norms = _check_inputs(embeddings, labels)
    ks = _check_ks(ks, labels.numel())
    ranks = _first_positive_rank(embeddings, labels, norms, chunk_size)
    return {k: float((ranks <= k).double().mean()) for k in ks}


def nmi(embeddings, labels, seed: int = 0, *, n_init: int = 1) -> float:
    """Normalised mutual information between k-means clusters and labels, in [0, 1].

    embeddings (N, d), labels (N,). k = number of distinct labels; scikit-learn KMeans with
    k-means++ initialisation, random_state=seed and n_init runs (default 1, scikit-learn's own
    default for k-means++); normalized_mutual_info_score with the arithmetic average.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeddings, labels, _ = _check_inputs(embeddings, labels)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed is {seed!r}; expected a non-negative int.")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(f"n_init is {n_init!r}; expected a positive int.")
    n_clusters = int(torch.unique(labels).numel())
    if n_clusters < 2:
        raise ValueError("labels hold a single class; expected at least 2 classes for NMI.")
    # float64 on purpose: scikit-learn's float32 distance path upcasts chunk by chunk, which made
    # the k-means++ initialisation about 5x slower on (8131, 1024) embeddings.
    x = embeddings.detach().cpu().double().numpy()
    y = labels.cpu().numpy()
    clusters = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, clusters, average_method="arithmetic"))


def retrieval_metrics(
    embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), seed: int = 0
) -> dict[str, float]:
    """{"R@1": pct, "R@2": pct, ..., "NMI": pct}: Recall@K and NMI in percent (Table 1's units)."""
    recalls = recall_at_k(embeddings, labels, ks)
    out = {f"R@{k}": 100.0 * value for k, value in recalls.items()}
    out["NMI"] = 100.0 * nmi(embeddings, labels, seed=seed)
    return out
