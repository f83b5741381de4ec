"""A hierarchical toy that makes quadruplet selection visible (notebook 02), and a tiny trainer.

The toy has the shape of the paper's Fig. 2: coarse classes are regions of the plane, fine
classes overlapping Gaussian sub-clusters inside them. Fine class `c * n_fine_per_coarse + f`
belongs to coarse class `c`; the last `n_held_out_per_coarse` fine classes of every coarse class
are held out of training, so Recall@1 on them measures zero-shot retrieval as in the paper.

The trainer embeds into 2D and L2-normalises: the margins 0.7 / 0.3 of eq. 5 and eq. 3 assume
bounded distances (a chord of the unit circle is in [0, 2]), and every class becomes an arc.
Every pick comes from `qlib.miners`, every loss value from `qlib.losses`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import checks
from .logs import as_frame
from .losses import LossOutput, QuadrupletLoss, pairwise_distance, triplet_loss
from .metrics import recall_at_k
from .miners import METHODS, sample_anchors, select_quadruplets, valid_anchors
from .miners.common import check_bank
from .utils import seed_everything, write_json

# The quadruplet methods of qlib.miners plus the triplet baseline (eq. 2, random triplets).
TRAIN_METHODS = (*METHODS, "triplet")
# The toy's geometry: neighbouring coarse centres 3.8 apart, fine centres on a circle of radius
# 1 around them, points with std 0.55 (neighbouring fine classes overlap); with dim > 2,
# nuisance dimensions of std 1 and a bend of 0.5.
COARSE_SEPARATION, FINE_RADIUS, FINE_STD, NUISANCE_STD, BEND = 3.8, 1.0, 0.55, 1.0, 0.5
TRIPLET_MARGIN = 0.2  # the triplet baseline's margin in eq. 2
HIDDEN = 64  # width of the toy MLP's hidden layers


@dataclass(frozen=True)
class ToyData:
    """A hierarchical toy set of N points; fine class f lies in exactly one coarse class.

    points (N, dim) float32: what a model sees (equal to `plane` when dim == 2);
    fine (N,) long, coarse (N,) long: labels; plane (N, 2) float32: the 2D structure;
    held_out (N,) bool: points of the fine classes kept out of training.
    """

    points: Tensor
    fine: Tensor
    coarse: Tensor
    plane: Tensor
    held_out: Tensor

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, mask: Tensor) -> ToyData:
        """The points where `mask` (N,) bool is True, labels unchanged."""
        return ToyData(*(getattr(self, field.name)[mask] for field in fields(self)))


def make_toy(
    n_coarse: int = 3,
    n_fine_per_coarse: int = 3,
    points_per_class: int = 20,
    dim: int = 2,
    seed: int = 0,
    *,
    n_held_out_per_coarse: int = 1,
) -> ToyData:
    """A deterministic toy of n_coarse * n_fine_per_coarse * points_per_class points.

    Points are Gaussian around their fine centre (`_fine_centres`). With dim > 2 the plane is
    hidden in dim dimensions (`_hide_in_higher_dimensions`); the plane depends on the seed only.
    """
    n_coarse = checks.integer("n_coarse", n_coarse, 2)  # a negative needs another coarse class
    n_fine_per_coarse = checks.integer("n_fine_per_coarse", n_fine_per_coarse, 2)
    points_per_class = checks.integer("points_per_class", points_per_class, 2)
    dim = checks.integer("dim", dim, 2)
    seed = checks.integer("seed", seed, 0)
    n_held_out = checks.integer("n_held_out_per_coarse", n_held_out_per_coarse, 0)
    if n_fine_per_coarse - n_held_out < 2:
        raise ValueError(
            "every coarse class needs at least 2 training fine classes (an anchor needs a P-), "
            f"got n_fine_per_coarse={n_fine_per_coarse} and n_held_out_per_coarse={n_held_out}."
        )

    generator = torch.Generator().manual_seed(seed)
    centres = _fine_centres(n_coarse, n_fine_per_coarse, generator)
    fine = torch.arange(len(centres)).repeat_interleave(points_per_class)
    plane = centres[fine] + FINE_STD * torch.randn(len(fine), 2, generator=generator)
    points = plane.clone()
    if dim > 2:
        points = _hide_in_higher_dimensions(plane, dim, generator)
    held_out = (fine % n_fine_per_coarse) >= n_fine_per_coarse - n_held_out
    return ToyData(points.float(), fine, fine // n_fine_per_coarse, plane.float(), held_out)


def _fine_centres(n_coarse: int, n_fine_per_coarse: int, generator) -> Tensor:
    """(n_coarse * n_fine_per_coarse, 2): coarse centres on a circle, neighbours
    COARSE_SEPARATION apart (random rotation), each with its fine centres on a circle of
    radius FINE_RADIUS around it (random phase)."""
    coarse_radius = COARSE_SEPARATION / (2 * math.sin(math.pi / n_coarse))
    coarse_angle = 2 * math.pi * torch.arange(n_coarse) / n_coarse
    coarse_angle = coarse_angle + 2 * math.pi * torch.rand((), generator=generator)
    coarse_centre = coarse_radius * torch.stack([coarse_angle.cos(), coarse_angle.sin()], 1)
    fine_phase = 2 * math.pi * torch.rand(n_coarse, 1, generator=generator)
    fine_angle = fine_phase + 2 * math.pi * torch.arange(n_fine_per_coarse) / n_fine_per_coarse
    fine_offset = FINE_RADIUS * torch.stack([fine_angle.cos(), fine_angle.sin()], -1)
    return (coarse_centre[:, None, :] + fine_offset).reshape(-1, 2)


def _hide_in_higher_dimensions(plane: Tensor, dim: int, generator) -> Tensor:
    """(N, 2) -> (N, dim): the standardised plane beside dim - 2 noise dimensions, rotated by a
    random orthogonal matrix and bent by x -> x + BEND * tanh(x W). A small MLP must undo this
    to recover a useful 2D embedding, so training has something to learn."""
    standard = (plane - plane.mean(0)) / plane.std()
    nuisance = NUISANCE_STD * torch.randn(len(plane), dim - 2, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    points = torch.cat([standard, nuisance], 1) @ rotation
    bend_weights = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    return points + BEND * torch.tanh(points @ bend_weights)


def anchor_quadruplets(
    bank: Tensor,
    fine: Tensor,
    coarse: Tensor,
    anchor: int,
    methods: Sequence[str] = ("method1", "method2", "random"),
    seed: int = 0,
) -> tuple[dict[str, list[int]], dict[str, list[bool]]]:
    """The quadruplet (R, P+, P-, N) that each method picks for one anchor of a (N, d) bank,
    and its fallbacks (P+, P-), both keyed by method. select_quadruplets checks the anchor."""
    quads, fallbacks = {}, {}
    for method in methods:
        generator = torch.Generator().manual_seed(seed)
        quad, fallback = select_quadruplets(
            bank, fine, coarse, torch.tensor([anchor]), method, generator, return_fallbacks=True
        )
        quads[method], fallbacks[method] = quad[0].tolist(), fallback[0].tolist()
    return quads, fallbacks


def pick_fig2_anchor(bank: Tensor, fine: Tensor, coarse: Tensor, seed: int = 0) -> int:
    """An anchor that shows what Fig. 2 is about, chosen at random (seeded) among the best.

    Best = neither Method 1 nor Method 2 falls back, the two methods pick different P+ and P-,
    and some same-coarse points lie inside the circle of radius D(R, N) (so the circle matters).
    Falls back on weaker anchors when no anchor meets every condition.
    """
    bank, fine, coarse = check_bank(bank, fine, coarse)
    anchors = torch.nonzero(valid_anchors(fine, coarse)).flatten()
    if len(anchors) == 0:
        raise ValueError("no valid anchor in the bank: no coarse class has two fine classes.")
    q1, f1 = select_quadruplets(bank, fine, coarse, anchors, "method1", return_fallbacks=True)
    q2, f2 = select_quadruplets(bank, fine, coarse, anchors, "method2", return_fallbacks=True)
    no_fallback = ~(f1.any(1) | f2.any(1))
    n_different = (q1[:, 1] != q2[:, 1]).long() + (q1[:, 2] != q2[:, 2]).long()
    distance = torch.cdist(bank[anchors], bank)
    radius = distance.gather(1, q1[:, 3:4])
    same_coarse = coarse[None, :] == coarse[anchors, None]
    same_coarse[torch.arange(len(anchors)), anchors] = False
    inside = ((distance < radius) & same_coarse).any(1)
    # Lexicographic: no fallback first, then how many members differ, then the circle.
    score = 8 * no_fallback.long() + 2 * n_different + inside.long()
    best = torch.nonzero(score == score.max()).flatten()
    generator = torch.Generator().manual_seed(seed)
    return int(anchors[best[torch.randint(len(best), (), generator=generator)]])


def mining_statistics(
    bank: Tensor,
    fine: Tensor,
    coarse: Tensor,
    n_anchors: int = 200,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
) -> pd.DataFrame:
    """Distances and fallbacks of each method's picks for the same `n_anchors` anchors.

    bank (N, d), fine (N,), coarse (N,). One row per (method, anchor): method, anchor, d_rpp,
    d_rpn, d_rn (Euclidean) and fallback_pos, fallback_neg (no P+ / P- candidate outside the
    circle of radius D(R, N)).
    """
    bank, fine, coarse = check_bank(bank, fine, coarse)
    n_anchors = checks.integer("n_anchors", n_anchors, 1)
    generator = torch.Generator().manual_seed(seed)
    anchors = sample_anchors(valid_anchors(fine, coarse), n_anchors, generator)
    frames = []
    for method in methods:
        generator = torch.Generator().manual_seed(seed + 1)
        quads, fallbacks = select_quadruplets(
            bank, fine, coarse, anchors, method, generator, return_fallbacks=True
        )
        columns = {"method": method, "anchor": quads[:, 0].numpy()}
        for k, name in enumerate(("d_rpp", "d_rpn", "d_rn"), start=1):
            columns[name] = pairwise_distance(bank[quads[:, 0]], bank[quads[:, k]]).numpy()
        columns["fallback_pos"], columns["fallback_neg"] = fallbacks.numpy().T
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


def mining_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per method, from `mining_statistics`: mean distances, fallback rates (%), and the share
    (%) of quadruplets that already satisfy the goal D(R,P+) < D(R,P-) < D(R,N) of eq. 5
    (without margins): those teach the least."""
    needed = ["method", "d_rpp", "d_rpn", "d_rn", "fallback_pos", "fallback_neg"]
    missing = [c for c in needed if c not in stats.columns]
    if missing:
        raise ValueError(f"stats lacks the columns {missing}; expected mining_statistics output.")
    ordered = (stats["d_rpp"] < stats["d_rpn"]) & (stats["d_rpn"] < stats["d_rn"])
    table = stats.assign(
        fallback_pos=100 * stats["fallback_pos"].astype(float),
        fallback_neg=100 * stats["fallback_neg"].astype(float),
        ordered=100 * ordered.astype(float),
    )
    summary = table.groupby("method", sort=False)[needed[1:] + ["ordered"]].mean()
    summary.insert(0, "anchors", stats.groupby("method", sort=False).size())
    return summary.rename(
        columns={
            "fallback_pos": "fallback P+ (%)",
            "fallback_neg": "fallback P- (%)",
            "ordered": "already ordered (%)",
        }
    )


class ToyOutput(NamedTuple):
    embedding: Tensor  # (N, 2), L2-normalised
    coarse_logits: Tensor  # (N, k1)
    fine_logits: Tensor  # (N, k2)


class ToyEmbeddingNet(nn.Module):
    """MLP (in_dim -> HIDDEN -> HIDDEN -> 2) with coarse and fine linear heads that read the
    embedding before normalisation, as in qlib.model.EmbeddingNet."""

    def __init__(self, in_dim: int, n_coarse: int, n_fine: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 2),
        )
        self.coarse_head = nn.Linear(2, n_coarse)
        self.fine_head = nn.Linear(2, n_fine)

    def forward(self, x: Tensor) -> ToyOutput:
        raw = self.body(x)
        embedding = nn.functional.normalize(raw, dim=1)
        return ToyOutput(embedding, self.coarse_head(raw), self.fine_head(raw))


@dataclass
class ToyTrainingHistory:
    """What `train_toy_embedding` records for one method, in a training run's shapes.

    log: one row per iteration in `qlib.logs`' schema; metrics: one entry {"iteration", "R@1"}
    per snapshot (held-out Recall@1 in percent, iteration 0 = before training), as in a run's
    metrics.json; snapshots (S, N, 2): the embedding of every toy point at those iterations.
    """

    method: str
    log: pd.DataFrame
    metrics: list[dict]
    snapshots: np.ndarray


def random_triplets(fine: Tensor, anchors: Tensor, generator: torch.Generator | None = None):
    """Random triplets for the triplet baseline -> (B, 3) indices (R, P, N): P uniform among
    the other points of R's fine class, N uniform among the points of the other fine classes."""
    same = fine[None, :] == fine[anchors, None]
    same[torch.arange(len(anchors)), anchors] = False
    if not bool(same.any(1).all()):
        raise ValueError("every anchor needs another point of its fine class for a positive.")
    different = fine[None, :] != fine[anchors, None]
    positive = torch.multinomial(same.float(), 1, generator=generator)[:, 0]
    negative = torch.multinomial(different.float(), 1, generator=generator)[:, 0]
    return torch.stack([anchors, positive, negative], 1)


def triplet_baseline(
    embedding: Tensor, fine: Tensor, anchors: Tensor, generator: torch.Generator, margin: float
) -> LossOutput:
    """The triplet baseline: eq. 2 on `random_triplets` of the anchors, averaged over the batch.
    embedding (N, d), fine (N,), anchors (B,)."""
    triplets = embedding[random_triplets(fine, anchors, generator)]
    d_rp = pairwise_distance(triplets[:, 0], triplets[:, 1])
    d_rn = pairwise_distance(triplets[:, 0], triplets[:, 2])
    total = triplet_loss(d_rp, d_rn, margin).mean()
    parts = {"loss": total, "triplet": total, "d_rpp": d_rp.mean(), "d_rn": d_rn.mean()}
    return LossOutput(total, {name: value.detach() for name, value in parts.items()})


def toy_step(
    model: ToyEmbeddingNet,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., LossOutput],
    train: ToyData,
    anchors: Tensor,
    selection: str,
    generator: torch.Generator,
) -> dict[str, float]:
    """One iteration of the paper's loop on the toy: bank -> selection (Section 3.3) of the
    anchors' quadruplets -> eq. 6 (`loss_fn`, a QuadrupletLoss; for selection "triplet" a
    `triplet_baseline`) -> optimizer step. Returns the log row's values as floats.

    The toy is tiny, so the bank (every training point under the current weights) is refreshed
    every iteration. `train`'s fine labels are the fine head's class ids.
    """
    out = model(train.points)
    bank = out.embedding.detach()
    fallbacks = None
    if selection == "triplet":
        total, parts = loss_fn(out.embedding, train.fine, anchors, generator)
    else:
        quads, fallbacks = select_quadruplets(
            bank, train.fine, train.coarse, anchors, selection, generator, return_fallbacks=True
        )
        r = quads[:, 0]
        total, parts = loss_fn(  # eq. 6: logits and labels of the anchors R
            out.embedding[quads],
            out.coarse_logits[r],
            out.fine_logits[r],
            train.coarse[r],
            train.fine[r],
        )
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    row = {name: float(value) for name, value in parts.items()}
    if fallbacks is not None:
        row["fallback_pos"], row["fallback_neg"] = fallbacks.float().mean(0).tolist()
    return row


@contextmanager
def _single_thread() -> Iterator[None]:
    # The toy's tensors are tiny: on a busy machine, extra intra-op threads cost far more time
    # (spinning, waiting for cores) than they save.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _snapshot(model: ToyEmbeddingNet, toy: ToyData, iteration: int) -> tuple[np.ndarray, dict]:
    """The embedding of every toy point (N, 2) and the metrics entry of the held-out classes."""
    with torch.no_grad():
        embedding = model(toy.points).embedding
    recall = recall_at_k(embedding[toy.held_out], toy.fine[toy.held_out], ks=(1,))[1]
    return embedding.numpy().copy(), {"iteration": iteration, "R@1": 100.0 * recall}


@_single_thread()  # a contextmanager is also a decorator
def train_toy_embedding(
    toy: ToyData,
    method: str,
    steps: int = 600,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 1e-2,
    snapshot_every: int = 20,
    *,
    warmup_steps: int = 0,
) -> ToyTrainingHistory:
    """Train a ToyEmbeddingNet on the toy's training classes with one method of TRAIN_METHODS:
    `toy_step` on `batch_size` anchors, Adam (converges in a few hundred steps, unlike the
    paper's SGD), the same initial weights and anchors for every method (seeded by `seed`). The
    first `warmup_steps` select "random" quadruplets (a stand-in for the pretrained start); a
    snapshot and held-out Recall@1 every `snapshot_every` steps. One CPU thread."""
    if method not in TRAIN_METHODS:
        raise ValueError(f"method must be one of {TRAIN_METHODS}, got {method!r}.")
    steps = checks.integer("steps", steps, 1)
    batch_size = checks.integer("batch_size", batch_size, 1)
    snapshot_every = checks.integer("snapshot_every", snapshot_every, 1)
    warmup_steps = checks.integer("warmup_steps", warmup_steps, 0)
    lr = checks.number("lr", lr, 0, exclusive=True)
    if not bool(toy.held_out.any()):
        raise ValueError(
            "the toy has no held-out classes for Recall@1; make it with n_held_out_per_coarse >= 1."
        )

    anchor_generator = seed_everything(seed)  # also seeds the weights: the same for every method
    pick_generator = torch.Generator().manual_seed(seed + 1)
    train, model = _toy_model(toy)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    triplet = partial(triplet_baseline, margin=TRIPLET_MARGIN)
    loss_fn = triplet if method == "triplet" else QuadrupletLoss()
    valid = valid_anchors(train.fine, train.coarse)

    snapshot, entry = _snapshot(model, toy, 0)
    snapshots, metrics, rows = [snapshot], [entry], []
    for iteration in range(1, steps + 1):
        selection = "random" if method != "triplet" and iteration <= warmup_steps else method
        anchors = sample_anchors(valid, batch_size, anchor_generator)
        parts = toy_step(model, optimizer, loss_fn, train, anchors, selection, pick_generator)
        rows.append({"iteration": iteration, "lr": lr, **parts})
        if iteration % snapshot_every == 0 or iteration == steps:
            snapshot, entry = _snapshot(model, toy, iteration)
            snapshots.append(snapshot)
            metrics.append(entry)
    return ToyTrainingHistory(method, as_frame(rows), metrics, np.stack(snapshots))


def _toy_model(toy: ToyData) -> tuple[ToyData, ToyEmbeddingNet]:
    """The toy's training classes, with fine ids 0..k2-1 for the fine head (an order-preserving
    relabelling changes no pick), and a fresh ToyEmbeddingNet (weights from torch's global RNG)."""
    train = toy.subset(~toy.held_out)
    fine_classes, fine_ids = torch.unique(train.fine, return_inverse=True)
    n_coarse = int(toy.coarse.max()) + 1
    model = ToyEmbeddingNet(toy.points.shape[1], n_coarse, len(fine_classes))
    return replace(train, fine=fine_ids), model


def final_recall(histories: Mapping[str, ToyTrainingHistory]) -> dict[str, float]:
    """{method: held-out Recall@1 in percent after the last iteration}."""
    return {method: history.metrics[-1]["R@1"] for method, history in histories.items()}


def save_histories(histories: Mapping[str, ToyTrainingHistory], folder: str | Path) -> Path:
    """Write each method's history as a run folder does: `<folder>/<method>/log.csv` and
    `<folder>/<method>/metrics.json`, plus `<folder>/final_recall.json`. Returns `folder`."""
    folder = Path(folder)
    for method, history in histories.items():
        (folder / method).mkdir(parents=True, exist_ok=True)
        history.log.to_csv(folder / method / "log.csv", index=False)
        write_json(folder / method / "metrics.json", history.metrics)
    summary = {
        "metric": "held-out Recall@1 (%)",
        "iterations": {method: h.metrics[-1]["iteration"] for method, h in histories.items()},
        "recall_at_1": final_recall(histories),
    }
    write_json(folder / "final_recall.json", summary)
    return folder
