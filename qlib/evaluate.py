"""What notebooks 03 (one training iteration taken apart) and 04 (neighbours, metrics per
coarse class, selection distances, UMAP, display images) compute beyond training.

Shapes: N = test (or bank) size, d = embedding dimension, K = neighbours, B = anchors.
Distances are Euclidean (the SPEC).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import checks
from .logs import DISTANCES as DISTANCE_COLUMNS  # D(R,P+), D(R,P-), D(R,N)


def nearest_neighbors(embeddings: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """(N, d) -> LongTensor (N, k): for every row the indices of its k nearest other rows by
    Euclidean distance, nearest first, ties to the lowest index (the query itself excluded)."""
    embeddings = checks.embeddings("embeddings", embeddings).float()
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
        out.append(torch.sort(dist, dim=1, stable=True).indices[:, :k])
    return torch.cat(out)


def retrieval_hits(neighbors: Tensor, labels: Tensor) -> Tensor:
    """neighbors (N, K) indices, labels (N,) -> BoolTensor (N, K): neighbour j of query i
    shares its label."""
    labels = checks.labels("labels", labels, neighbors.shape[0])
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

    embeddings = checks.embeddings("embeddings", embeddings)
    n = embeddings.shape[0]
    fine = checks.labels("fine", fine, n)
    coarse = checks.labels("coarse", coarse, n)
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
        within = nmi(embeddings[members], fine[members], seed=seed) if n_fine >= 2 else math.nan
        row["NMI"] = 100.0 * float(within)
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

    bank = checks.embeddings("bank", bank)
    fine = checks.labels("fine", fine, bank.shape[0])
    coarse = checks.labels("coarse", coarse, bank.shape[0])
    n_anchors = checks.integer("n_anchors", n_anchors, 1)
    valid = valid_anchors(fine, coarse)
    if not valid.any():
        raise ValueError(
            "no valid anchor in the bank; expected a coarse class with two fine classes."
        )
    anchors = sample_anchors(valid, n_anchors, generator=generator)
    quads, fallbacks = select_quadruplets(
        bank, fine, coarse, anchors, method, generator=generator, return_fallbacks=True
    )
    return _quadruplet_rows(method, quads, fallbacks, bank)[list(DISTANCE_COLUMNS)]


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
    """UMAP's `n_neighbors`: `requested` (at least 2) capped at N - 1, as UMAP needs fewer
    neighbours than points."""
    if n_points < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {n_points}.")
    return min(checks.integer("n_neighbors", requested, 2), n_points - 1)


def umap_2d(embeddings: Tensor, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2) seeded UMAP coordinates (`n_neighbors` capped by `umap_neighbors`)."""
    import umap

    x = checks.embeddings("embeddings", embeddings).cpu().numpy()
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


# ----------------------------------------------------------------------------------------------
# One training iteration taken apart (notebook 03)
# ----------------------------------------------------------------------------------------------

QUADRUPLET_COLUMNS = ("R", "P+", "P-", "N")
# Each distance of _quadruplet_rows: between the members of columns i and j.
_MEMBER_DISTANCES = {
    "d_rpp": (1, 0),
    "d_rpn": (2, 0),
    "d_rn": (3, 0),
    "d_npp": (1, 3),
    "d_npn": (2, 3),
}


@dataclass
class IterationDissection:
    """The first iteration of a run, before any training, for each quadruplet selection.

    bank (N, d): every training image embedded by the initial network (eval mode), what the
    selection searches; fine, coarse (N,): the bank's labels (the trainer's ids); paths (N,):
    its image files; anchors (B,): the iteration's anchors, drawn exactly as the trainer draws
    them; anchor_distances (B, N): D(R, j) from each anchor to every bank sample.
    quadruplets: one row per (method, anchor position `row`) with the bank indices R, P+, P-, N,
    the bank distances d_rpp, d_rpn, d_rn (= the radius D(R, N)), d_npp, d_npn (D(N, P+),
    D(N, P-): Method 1's key) and fallback_pos / fallback_neg (no candidate outside the sphere).
    losses: one row per method, eq. 6 and its parts for that batch as `train_step` computes
    them (train mode, the trainer's augmented crops), `global_term` = η·eq. 3 as it enters eq.
    6. trainer_method: the selection of the run's first iteration (whose log.csv row 1 holds
    that method's losses), None for a baseline run.
    """

    bank: Tensor
    fine: Tensor
    coarse: Tensor
    paths: list[str]
    anchors: Tensor
    anchor_distances: Tensor
    bank_2d: np.ndarray
    quadruplets: pd.DataFrame
    losses: pd.DataFrame
    trainer_method: str | None


def dissect_iteration(
    config, methods: Sequence[str] = ("random", "method1", "method2")
) -> IterationDissection:
    """Take the first training iteration of `config` (a qlib.train.TrainConfig) apart, for
    each quadruplet selection in `methods` on the same anchors (Section 3.3, eq. 6).

    The trainer's own `Run` (its data, initial network, generators) gives the bank and each
    method's plan of iteration 1, so the run's own method picks exactly what it picks.
    No run folder is written; init="classifier" may fill the warm-start cache, as training
    would.
    """
    from . import miners
    from .train import distributed, runs
    from .train.batches import quadruplet_plan
    from .train.loop import embed_bank, epoch_method
    from .train.setup import Run
    from .utils import resolve_device

    unknown = [m for m in methods if m not in miners.METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be some of {miners.METHODS}, got {list(methods)}.")
    device = resolve_device(config.device)
    run = Run(config, device, runs.run_dir_of(config), distributed.SINGLE)  # no run folder
    data, bank = run.data, embed_bank(run)
    embeddings = bank.embeddings.float().cpu()
    run_generators = (run.anchor_gen, run.data_gen)
    rows, losses = [], {}
    for method in methods:  # each from the generators' initial states (copies)
        generators = [torch.Generator().set_state(g.get_state()) for g in run_generators]
        plan = quadruplet_plan(bank, method, 1, run.batch_size, *generators)
        quadruplets = plan.batches[0]
        rows.append(_quadruplet_rows(method, quadruplets, plan.fallbacks[0].cpu(), embeddings))
        losses[method] = _step_losses(run, method, plan)
    anchors = quadruplets[:, 0]  # R: the same anchors for every method
    # A baseline run has no quadruplet iteration to compare with.
    trainer_method = epoch_method(config, 1) if config.is_quadruplet else None
    return IterationDissection(
        bank=embeddings,
        fine=data.train_fine.clone(),
        coarse=data.train_coarse.clone(),
        paths=data.train_manifest["path"].astype(str).tolist(),
        anchors=anchors,
        anchor_distances=torch.cdist(embeddings[anchors], embeddings),
        bank_2d=principal_components(embeddings),
        quadruplets=pd.concat(rows, ignore_index=True),
        losses=pd.DataFrame(losses).T.rename_axis("method"),
        trainer_method=trainer_method,
    )


def _step_losses(run, method: str, plan) -> dict:
    """Eq. 6 and its parts on the plan's first batch, as `train_step` computes them (train
    mode, the trainer's crops and flips), on a copy of the network; `global_term` = η·eq. 3 as
    it enters eq. 6."""
    from .train import hardware
    from .train.loop import train_step
    from .train.setup import make_loss, make_optimizer

    images = torch.stack([run.data.train_aug_set[key][0] for key in plan.items[0]])
    model = copy.deepcopy(run.model)
    result, _ = train_step(
        model,
        make_loss(dataclasses.replace(run.config, method=method)).to(run.device),
        make_optimizer(model, run.config),
        hardware.make_scaler(run.device, run.dtype),
        images.to(run.device),
        plan.batches[0].to(run.device),
        run.fine,
        run.coarse,
        run.dtype,
    )
    parts = {name: float(value) for name, value in result.parts.items()}
    parts["global_term"] = parts["loss"] - parts["joint"] - parts["classification"]
    return parts


def principal_components(embeddings: Tensor, n: int = 2) -> np.ndarray:
    """(N, d) -> (N, n): the coordinates along the first n principal axes (exact SVD)."""
    x = checks.embeddings("embeddings", embeddings).double()
    centred = x - x.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:n].T).float().numpy()


def _quadruplet_rows(
    method: str, quadruplets: Tensor, fallbacks: Tensor, bank: Tensor
) -> pd.DataFrame:
    """One row per anchor: the picks, their bank distances and the fallbacks."""
    frame = pd.DataFrame(quadruplets.numpy(), columns=list(QUADRUPLET_COLUMNS))
    frame.insert(0, "row", np.arange(len(frame)))
    frame.insert(0, "method", method)
    for name, (i, j) in _MEMBER_DISTANCES.items():
        members = bank[quadruplets[:, i]] - bank[quadruplets[:, j]]
        frame[name] = torch.linalg.vector_norm(members, dim=1).numpy()
    frame["fallback_pos"], frame["fallback_neg"] = fallbacks[:, 0].numpy(), fallbacks[:, 1].numpy()
    return frame


def dissection_images(
    dissection: IterationDissection, n_rows: int = 3, size: int = 64
) -> dict[int, np.ndarray]:
    """{bank index: uint8 (size, size, 3)} for every image of the first `n_rows` anchors'
    quadruplets (all methods), for `qlib.plots.plot_iteration_dissection`."""
    shown = dissection.quadruplets[dissection.quadruplets["row"] < n_rows]
    indices = sorted({int(i) for c in QUADRUPLET_COLUMNS for i in shown[c]})
    images = load_display_images([dissection.paths[i] for i in indices], size)
    return dict(zip(indices, images, strict=True))


def first_iteration_check(dissection: IterationDissection, log: pd.DataFrame) -> pd.DataFrame:
    """The dissected iteration of the run's own method beside the first row of its log.csv
    (`qlib.train.read_log`): rows "dissect_iteration" and "log.csv, iteration 1", one column
    per loss part and distance both have. They agree when the log is the run of that config."""
    if dissection.trainer_method is None:
        raise ValueError("the run trains a baseline: no quadruplet iteration to compare with.")
    first = log[log["iteration"] == 1]
    if first.empty:
        raise ValueError("the log has no iteration 1; expected the log of a started run.")
    ours = dissection.losses.loc[dissection.trainer_method]
    columns = [c for c in ours.index if c in log.columns]
    return pd.DataFrame(
        [ours[columns].astype(float), first.iloc[0][columns].astype(float)],
        index=["dissect_iteration", "log.csv, iteration 1"],
    )
