"""What notebook 04 computes beyond the headline metrics: nearest neighbours, metrics per coarse
class, the distances of a quadruplet selection under a model, a 2-D UMAP, display images.

Shapes: N = test (or bank) size, d = embedding dimension, K = neighbours, B = anchors.
Distances are Euclidean (the SPEC), neighbours exclude the query itself, ties go to the lowest
index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "DISTANCE_COLUMNS",
    "distance_summary",
    "histogram_method",
    "json_records",
    "load_display_images",
    "nearest_neighbors",
    "per_coarse_metrics",
    "pick_queries",
    "retrieval_hits",
    "selection_distances",
    "umap_2d",
    "umap_neighbors",
]

DISTANCE_COLUMNS = ("d_rpp", "d_rpn", "d_rn")  # D(R,P+), D(R,P-), D(R,N)


def _check_embeddings(embeddings: object) -> Tensor:
    if (
        not isinstance(embeddings, Tensor)
        or embeddings.dim() != 2
        or not embeddings.is_floating_point()
    ):
        got = (
            tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        )
        raise ValueError(f"embeddings must be a float tensor of shape (N, d), got {got}.")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or inf; expected finite values.")
    return embeddings


def _check_labels(name: str, labels: object, n: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(
            f"{name} must be an integer tensor of shape ({n},), got {tuple(labels.shape)}."
        )
    return labels.long()


def nearest_neighbors(embeddings: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """(N, d) -> LongTensor (N, k): for every row the indices of its k nearest other rows by
    Euclidean distance, nearest first, ties to the lowest index (the query itself excluded)."""
    embeddings = _check_embeddings(embeddings).float()
    n = embeddings.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in [1, N-1] = [1, {n - 1}], got {k!r}.")
    out = []
    for start in range(0, n, chunk_size):
        block = embeddings[start : start + chunk_size]
        dist = torch.cdist(block, embeddings)
        rows = torch.arange(block.shape[0])
        dist[rows, rows + start] = float("inf")
        # A stable sort keeps equal distances in index order.
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        out.append(order)
    return torch.cat(out)


def retrieval_hits(neighbors: Tensor, labels: Tensor) -> Tensor:
    """neighbors (N, K) indices, labels (N,) -> BoolTensor (N, K): neighbour j of query i
    shares its label."""
    labels = _check_labels("labels", labels, neighbors.shape[0])
    return labels[neighbors] == labels[:, None]


def per_coarse_metrics(
    embeddings: Tensor,
    fine: Tensor,
    coarse: Tensor,
    coarse_names: dict[int, str] | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics of the test split per coarse class, in percent, one row per coarse class:
    - `R@K`: Recall@K of the queries of that coarse class, retrieving among the whole test split
      (so the image-weighted mean over coarse classes is the overall Recall@K);
    - `coarse_R@1`: the nearest neighbour is in the same coarse class;
    - `NMI`: k-means NMI within the coarse class's images (k = its fine classes; NaN when it has
      a single fine class, where NMI says nothing);
    plus `n_images`, `n_fine`. `coarse_names` maps coarse ids to names."""
    from .metrics import nmi

    embeddings = _check_embeddings(embeddings)
    n = embeddings.shape[0]
    fine = _check_labels("fine", fine, n)
    coarse = _check_labels("coarse", coarse, n)
    k_max = min(max(ks), n - 1)
    neighbors = nearest_neighbors(embeddings, k_max)
    fine_hits = retrieval_hits(neighbors, fine)
    coarse_hit1 = retrieval_hits(neighbors[:, :1], coarse)[:, 0]
    rows = []
    for c in torch.unique(coarse).tolist():
        members = coarse == c
        n_fine = int(torch.unique(fine[members]).numel())
        row = {
            "coarse": c,
            "coarse_name": (coarse_names or {}).get(c, str(c)),
            "n_images": int(members.sum()),
            "n_fine": n_fine,
        }
        for k in ks:
            hits = fine_hits[members, : min(k, k_max)].any(dim=1)
            row[f"R@{k}"] = 100.0 * hits.float().mean().item()
        row["coarse_R@1"] = 100.0 * coarse_hit1[members].float().mean().item()
        if n_fine >= 2:
            row["NMI"] = 100.0 * float(nmi(embeddings[members], fine[members], seed=seed))
        else:
            row["NMI"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def selection_distances(
    bank: Tensor,
    fine: Tensor,
    coarse: Tensor,
    method: str,
    n_anchors: int,
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """The distances D(R,P+), D(R,P-), D(R,N) of `n_anchors` quadruplets selected by `method`
    (qlib.miners) on the bank (N, d) -> DataFrame (B, 3) with columns DISTANCE_COLUMNS."""
    from .miners import sample_anchors, select_quadruplets, valid_anchors

    bank = _check_embeddings(bank)
    fine = _check_labels("fine", fine, bank.shape[0])
    coarse = _check_labels("coarse", coarse, bank.shape[0])
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, int) or n_anchors < 1:
        raise ValueError(f"n_anchors must be a positive int, got {n_anchors!r}.")
    valid = valid_anchors(fine, coarse)
    if not valid.any():
        raise ValueError(
            "no valid anchor in the bank; expected a coarse class with two fine classes."
        )
    anchors = sample_anchors(valid, n_anchors, generator=generator)
    quads = select_quadruplets(bank, fine, coarse, anchors, method, generator=generator)
    anchor = bank[quads[:, 0]]
    distances = {
        name: torch.linalg.vector_norm(bank[quads[:, col]] - anchor, dim=1).numpy()
        for col, name in enumerate(DISTANCE_COLUMNS, start=1)
    }
    return pd.DataFrame(distances)


def distance_summary(distances: pd.DataFrame) -> dict:
    """Mean, std and the fraction of correctly ordered quadruplets (D(R,P+) < D(R,P-) < D(R,N))
    of a `selection_distances` table, for eval.json."""
    summary = {f"{col}_mean": float(distances[col].mean()) for col in DISTANCE_COLUMNS}
    summary |= {f"{col}_std": float(distances[col].std(ddof=1)) for col in DISTANCE_COLUMNS}
    ordered = (distances["d_rpp"] < distances["d_rpn"]) & (distances["d_rpn"] < distances["d_rn"])
    summary["ordered_fraction"] = float(ordered.mean())
    summary["n"] = len(distances)
    return summary


def umap_neighbors(n_points: int, requested: int) -> int:
    """UMAP's `n_neighbors` for `n_points` points: the requested value capped at N - 1 (UMAP
    needs fewer neighbours than points), at least 2."""
    if n_points < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {n_points}.")
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 2:
        raise ValueError(f"n_neighbors must be an int >= 2, got {requested!r}.")
    return min(requested, n_points - 1)


def umap_2d(embeddings: Tensor, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2) UMAP coordinates; `n_neighbors` is capped at N - 1 (UMAP needs fewer
    neighbours than points) and the layout is seeded."""
    import umap

    x = _check_embeddings(embeddings).detach().cpu().numpy()
    n_neighbors = umap_neighbors(x.shape[0], n_neighbors)
    reducer = umap.UMAP(n_neighbors=n_neighbors, n_components=2, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x)


def load_display_images(paths: Sequence[str], size: int = 96) -> np.ndarray:
    """Image files -> uint8 array (n, size, size, 3), resized (not normalised), for figures."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB").resize((size, size))))
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def histogram_method(method: str) -> str:
    """The selection whose distances notebook 04 shows for a run of `method`: the run's own
    quadruplet selection, or Method 2 for the baselines (which select no quadruplets)."""
    from .miners import METHODS

    return method if method in METHODS else "method2"


def pick_queries(n: int, n_queries: int, seed: int = 0) -> Tensor:
    """`n_queries` distinct indices out of `n`, drawn with a seeded generator (sorted)."""
    if isinstance(n_queries, bool) or not isinstance(n_queries, int) or not 1 <= n_queries <= n:
        raise ValueError(f"n_queries must be an int in [1, {n}], got {n_queries!r}.")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:n_queries].sort().values


def json_records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts, NaN as None (strict JSON has no NaN)."""
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
