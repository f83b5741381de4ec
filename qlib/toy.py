"""A hierarchical toy that makes quadruplet selection visible (notebook 02), and a tiny trainer.

The toy has the shape of the paper's Fig. 2: coarse classes are regions of the plane (centres on
a circle), fine classes are overlapping Gaussian sub-clusters inside their coarse region. Fine
class `c * n_fine_per_coarse + f` belongs to coarse class `c`; the last `n_held_out_per_coarse`
fine classes of every coarse class are held out of training, so Recall@1 on them measures
zero-shot retrieval as in the paper's protocol (train and test share no fine class).

With `dim > 2` the same 2D structure (identical for a given seed, whatever `dim`) is hidden in a
higher-dimensional space: nuisance dimensions of noise are appended, the whole is rotated by a
random orthogonal matrix and bent by a random smooth non-linearity. A small MLP must learn to
undo this to recover a useful 2D embedding, so training has something to learn.

The trainer embeds into 2D and L2-normalises (`normalize=True`, the default): the margins
0.7 / 0.3 of eq. 5 and eq. 3 assume bounded distances, and on the unit circle a distance is a
chord in [0, 2]. The picture is also the clearest: every class becomes an arc of the circle, and
training is seen as arcs separating. Every pick comes from `qlib.miners` and every loss value
from `qlib.losses`; this module only wires them to the toy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
from .utils import seed_everything, write_json

__all__ = [
    "TRAIN_METHODS",
    "ToyData",
    "ToyEmbeddingNet",
    "ToyOutput",
    "ToyTrainingHistory",
    "anchor_quadruplets",
    "final_recall",
    "make_toy",
    "mining_statistics",
    "mining_summary",
    "pick_fig2_anchor",
    "random_triplets",
    "save_histories",
    "toy_step",
    "triplet_baseline",
    "train_toy_embedding",
]

# The quadruplet methods of qlib.miners plus the triplet baseline (eq. 2, random triplets).
TRAIN_METHODS = (*METHODS, "triplet")


# ----------------------------------------------------------------------------------------------
# The toy data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyData:
    """A hierarchical toy set. N points; fine class f lies in exactly one coarse class.

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
        if mask.dtype != torch.bool or mask.shape != (len(self),):
            raise ValueError(f"mask must be a bool tensor of shape ({len(self)},).")
        return ToyData(
            self.points[mask],
            self.fine[mask],
            self.coarse[mask],
            self.plane[mask],
            self.held_out[mask],
        )


def make_toy(
    n_coarse: int = 3,
    n_fine_per_coarse: int = 3,
    points_per_class: int = 20,
    dim: int = 2,
    seed: int = 0,
    *,
    n_held_out_per_coarse: int = 1,
    coarse_separation: float = 3.8,
    fine_radius: float = 1.0,
    fine_std: float = 0.55,
    nuisance_std: float = 1.0,
    bend: float = 0.5,
) -> ToyData:
    """A deterministic hierarchical toy of n_coarse * n_fine_per_coarse * points_per_class points.

    Coarse centres sit on a circle, neighbours `coarse_separation` apart; the fine centres of a
    coarse class on a circle of radius `fine_radius` around it (random phase); points are
    Gaussian with std `fine_std` around their fine centre, so neighbouring fine classes overlap.
    With dim > 2 the standardised plane is joined by dim - 2 nuisance dimensions of std
    `nuisance_std`, rotated by a random orthogonal matrix Q and bent: x -> x + bend * tanh(x W).
    The plane depends on the seed only, never on `dim`.
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
    coarse_separation = checks.number("coarse_separation", coarse_separation, 0, exclusive=True)
    fine_radius = checks.number("fine_radius", fine_radius, 0)
    fine_std = checks.number("fine_std", fine_std, 0, exclusive=True)
    nuisance_std = checks.number("nuisance_std", nuisance_std, 0)
    bend = checks.number("bend", bend, 0)

    generator = torch.Generator().manual_seed(seed)
    centres = _fine_centres(n_coarse, n_fine_per_coarse, coarse_separation, fine_radius, generator)
    fine = torch.arange(len(centres)).repeat_interleave(points_per_class)
    plane = centres[fine] + fine_std * torch.randn(len(fine), 2, generator=generator)
    points = plane.clone()
    if dim > 2:
        points = _hide_in_higher_dimensions(plane, dim, nuisance_std, bend, generator)
    held_out = (fine % n_fine_per_coarse) >= n_fine_per_coarse - n_held_out
    return ToyData(points.float(), fine, fine // n_fine_per_coarse, plane.float(), held_out)


def _fine_centres(
    n_coarse: int, n_fine_per_coarse: int, separation: float, radius: float, generator
) -> Tensor:
    """(n_coarse * n_fine_per_coarse, 2): coarse centres on a circle, neighbours `separation`
    apart (random rotation), each with its fine centres on a circle of `radius` around it."""
    coarse_radius = separation / (2 * math.sin(math.pi / n_coarse))
    coarse_angle = 2 * math.pi * torch.arange(n_coarse) / n_coarse
    coarse_angle = coarse_angle + 2 * math.pi * torch.rand((), generator=generator)
    coarse_centre = coarse_radius * torch.stack([coarse_angle.cos(), coarse_angle.sin()], 1)
    fine_phase = 2 * math.pi * torch.rand(n_coarse, 1, generator=generator)
    fine_angle = fine_phase + 2 * math.pi * torch.arange(n_fine_per_coarse) / n_fine_per_coarse
    fine_offset = radius * torch.stack([fine_angle.cos(), fine_angle.sin()], -1)
    return (coarse_centre[:, None, :] + fine_offset).reshape(-1, 2)


def _hide_in_higher_dimensions(
    plane: Tensor, dim: int, nuisance_std: float, bend: float, generator
) -> Tensor:
    """(N, 2) -> (N, dim): the standardised plane beside dim - 2 noise dimensions, rotated by a
    random orthogonal matrix and bent by x -> x + bend * tanh(x W)."""
    standard = (plane - plane.mean(0)) / plane.std()
    nuisance = nuisance_std * torch.randn(len(plane), dim - 2, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    points = torch.cat([standard, nuisance], 1) @ rotation
    bend_weights = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    return points + bend * torch.tanh(points @ bend_weights)


# ----------------------------------------------------------------------------------------------
# Mining on a fixed bank (Fig. 2 and its statistics)
# ----------------------------------------------------------------------------------------------


def _check_bank(bank: Tensor, fine: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    bank = checks.embeddings("bank", bank)
    n = bank.shape[0]
    return bank, checks.labels("fine", fine, n), checks.labels("coarse", coarse, n)


def anchor_quadruplets(
    bank: Tensor,
    fine: Tensor,
    coarse: Tensor,
    anchor: int,
    methods: Sequence[str] = ("method1", "method2", "random"),
    seed: int = 0,
) -> tuple[dict[str, list[int]], dict[str, list[bool]]]:
    """The quadruplet (R, P+, P-, N) that each method picks for one anchor of a (N, d) bank,
    and its fallbacks (P+, P-), both keyed by method; picks come from select_quadruplets."""
    bank, fine, coarse = _check_bank(bank, fine, coarse)
    anchor = checks.integer("anchor", anchor)
    if not 0 <= anchor < len(bank):
        raise ValueError(f"anchor must be a bank index in [0, {len(bank)}), got {anchor}.")
    if not bool(valid_anchors(fine, coarse)[int(anchor)]):
        raise ValueError(f"anchor {anchor} cannot anchor a quadruplet (no P+, P- or N for it).")
    anchors = torch.tensor([int(anchor)])
    quads, fallbacks = {}, {}
    for method in methods:
        generator = torch.Generator().manual_seed(seed)
        quad, fallback = select_quadruplets(
            bank, fine, coarse, anchors, method, generator, return_fallbacks=True
        )
        quads[method] = [int(i) for i in quad[0]]
        fallbacks[method] = [bool(f) for f in fallback[0]]
    return quads, fallbacks


def pick_fig2_anchor(bank: Tensor, fine: Tensor, coarse: Tensor, seed: int = 0) -> int:
    """An anchor that shows what Fig. 2 is about, chosen at random (seeded) among the best.

    Best = neither Method 1 nor Method 2 falls back, the two methods pick different P+ and P-,
    and some same-coarse points lie inside the circle of radius D(R, N) (so the circle matters).
    Falls back on weaker anchors when no anchor meets every condition.
    """
    bank, fine, coarse = _check_bank(bank, fine, coarse)
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
    methods: Iterable[str] = METHODS,
    seed: int = 0,
) -> pd.DataFrame:
    """Distances and fallbacks of each method's picks for the same `n_anchors` anchors.

    bank (N, d), fine (N,), coarse (N,). Returns one row per (method, anchor) with columns
    method, anchor, d_rpp, d_rpn, d_rn (Euclidean, from qlib.losses.pairwise_distance) and
    fallback_pos, fallback_neg (no P+ / P- candidate outside the circle of radius D(R, N)).
    """
    bank, fine, coarse = _check_bank(bank, fine, coarse)
    n_anchors = checks.integer("n_anchors", n_anchors, 1)
    anchors = sample_anchors(
        valid_anchors(fine, coarse), n_anchors, torch.Generator().manual_seed(seed)
    )
    frames = []
    for method in methods:
        generator = torch.Generator().manual_seed(seed + 1)
        quads, fallbacks = select_quadruplets(
            bank, fine, coarse, anchors, method, generator, return_fallbacks=True
        )
        ref = bank[quads[:, 0]]
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "anchor": quads[:, 0].numpy(),
                    "d_rpp": pairwise_distance(ref, bank[quads[:, 1]]).numpy(),
                    "d_rpn": pairwise_distance(ref, bank[quads[:, 2]]).numpy(),
                    "d_rn": pairwise_distance(ref, bank[quads[:, 3]]).numpy(),
                    "fallback_pos": fallbacks[:, 0].numpy(),
                    "fallback_neg": fallbacks[:, 1].numpy(),
                }
            )
        )
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


# ----------------------------------------------------------------------------------------------
# A tiny embedding trained with each method
# ----------------------------------------------------------------------------------------------


class ToyOutput(NamedTuple):
    embedding: Tensor  # (N, 2), L2-normalised when the net normalises
    coarse_logits: Tensor  # (N, k1)
    fine_logits: Tensor  # (N, k2)


class ToyEmbeddingNet(nn.Module):
    """MLP (in_dim -> hidden -> hidden -> 2) with coarse and fine linear heads.

    As in qlib.model.EmbeddingNet, the heads read the embedding before normalisation.
    """

    def __init__(
        self, in_dim: int, n_coarse: int, n_fine: int, hidden: int = 64, normalize: bool = True
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2),
        )
        self.coarse_head = nn.Linear(2, n_coarse)
        self.fine_head = nn.Linear(2, n_fine)
        self.normalize = normalize

    def forward(self, x: Tensor) -> ToyOutput:
        raw = self.body(x)
        embedding = nn.functional.normalize(raw, dim=1) if self.normalize else raw
        return ToyOutput(embedding, self.coarse_head(raw), self.fine_head(raw))


@dataclass
class ToyTrainingHistory:
    """What `train_toy_embedding` records for one method, in a training run's shapes.

    log: one row per iteration in `qlib.logs`' schema (iteration, lr, loss parts, d_rpp / d_rpn /
    d_rn, fallback_pos / fallback_neg); metrics: one entry {"iteration", "R@1"} per snapshot,
    Recall@1 of the held-out fine classes in percent, as in a run's metrics.json (iteration 0 =
    before training, the last = the final iteration); snapshots (S, N, 2): the embedding of every
    toy point (training and held out) at those iterations.
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
    embedding (N, d), fine (N,), anchors (B,) -> LossOutput(total, parts)."""
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
    anchors' quadruplets -> eq. 6 (`loss_fn`, a QuadrupletLoss) -> optimizer step. Returns the
    log row's loss parts, mean distances and fallback shares, as floats.

    The toy is tiny, so the bank is refreshed every iteration: the embedding of every training
    point under the current weights, from the forward pass the loss uses. `train`'s fine labels
    are the fine head's class ids. selection "triplet": `loss_fn` is a `triplet_baseline`.
    """
    out = model(train.points)
    bank = out.embedding.detach()
    fallbacks = None
    if selection == "triplet":
        total, parts = loss_fn(out.embedding, train.fine, anchors, generator)
    else:
        quads, fallbacks = select_quadruplets(
            bank, train.fine, train.coarse, anchors, selection, generator, return_fallbacks=True
        )  # (B, 4) indices R, P+, P-, N; (B, 2) bools
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
        share = fallbacks.float().mean(0)
        row["fallback_pos"], row["fallback_neg"] = float(share[0]), float(share[1])
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
    hidden: int = 64,
    normalize: bool = True,
    triplet_margin: float = 0.2,
    warmup_steps: int = 0,
    loss_kwargs: Mapping[str, float] | None = None,
) -> ToyTrainingHistory:
    """Train a ToyEmbeddingNet on the toy's training classes with one method of TRAIN_METHODS.

    Every iteration is `toy_step`: `sample_anchors` draws `batch_size` anchors, the method
    selects their quadruplets on the current bank, `QuadrupletLoss` (eq. 6, sum over the batch,
    `loss_kwargs` passed on) is minimised. "triplet": the same anchors with `random_triplets`
    and the mean of eq. 2 (margin `triplet_margin`), no heads. Every method starts from the same
    weights and sees the same anchors (seeded by `seed`); Adam with `lr`, not the paper's SGD,
    so the toy converges in a few hundred steps. With `warmup_steps` > 0 the quadruplet methods
    select "random" quadruplets for those first steps (a stand-in for the paper's pretrained
    start). Every `snapshot_every` steps: a snapshot and held-out Recall@1. One CPU thread.
    """
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
    train, model = _toy_model(toy, hidden, normalize)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if method == "triplet":
        loss_fn = partial(triplet_baseline, margin=triplet_margin)
    else:
        loss_fn = QuadrupletLoss(**(loss_kwargs or {}))
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


def _toy_model(toy: ToyData, hidden: int, normalize: bool) -> tuple[ToyData, ToyEmbeddingNet]:
    """The toy's training classes, with fine ids 0..k2-1 for the fine head (an order-preserving
    relabelling changes no pick), and a fresh ToyEmbeddingNet (weights from torch's global RNG)."""
    train = toy.subset(~toy.held_out)
    fine_classes, fine_ids = torch.unique(train.fine, return_inverse=True)
    n_coarse = int(toy.coarse.max()) + 1
    model = ToyEmbeddingNet(toy.points.shape[1], n_coarse, len(fine_classes), hidden, normalize)
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
    iterations = {method: h.metrics[-1]["iteration"] for method, h in histories.items()}
    summary = {
        "metric": "held-out Recall@1 (%)",
        "iterations": iterations,
        "recall_at_1": final_recall(histories),
    }
    write_json(folder / "final_recall.json", summary)
    return folder
