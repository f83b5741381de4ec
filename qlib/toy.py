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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .losses import QuadrupletLoss, pairwise_distance, triplet_loss
from .metrics import recall_at_k
from .miners import METHODS, sample_anchors, select_quadruplets, valid_anchors
from .utils import seed_everything

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
    "train_toy_embedding",
    "training_curves",
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


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive(name: str, value: object, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}.")
    return float(value)


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
    n_coarse = _check_int("n_coarse", n_coarse, 2)  # a negative needs another coarse class
    n_fine_per_coarse = _check_int("n_fine_per_coarse", n_fine_per_coarse, 2)
    points_per_class = _check_int("points_per_class", points_per_class, 2)
    dim = _check_int("dim", dim, 2)
    seed = _check_int("seed", seed, 0)
    n_held_out = _check_int("n_held_out_per_coarse", n_held_out_per_coarse, 0)
    if n_fine_per_coarse - n_held_out < 2:
        raise ValueError(
            "every coarse class needs at least 2 training fine classes (an anchor needs a P-), "
            f"got n_fine_per_coarse={n_fine_per_coarse} and n_held_out_per_coarse={n_held_out}."
        )
    coarse_separation = _check_positive("coarse_separation", coarse_separation)
    fine_radius = _check_positive("fine_radius", fine_radius, allow_zero=True)
    fine_std = _check_positive("fine_std", fine_std)
    nuisance_std = _check_positive("nuisance_std", nuisance_std, allow_zero=True)
    bend = _check_positive("bend", bend, allow_zero=True)

    generator = torch.Generator().manual_seed(seed)
    n_fine = n_coarse * n_fine_per_coarse
    coarse_radius = coarse_separation / (2 * math.sin(math.pi / n_coarse))
    coarse_angle = 2 * math.pi * torch.arange(n_coarse) / n_coarse
    coarse_angle = coarse_angle + 2 * math.pi * torch.rand((), generator=generator)
    coarse_centre = coarse_radius * torch.stack([coarse_angle.cos(), coarse_angle.sin()], 1)
    fine_phase = 2 * math.pi * torch.rand(n_coarse, 1, generator=generator)
    fine_angle = fine_phase + 2 * math.pi * torch.arange(n_fine_per_coarse) / n_fine_per_coarse
    fine_offset = fine_radius * torch.stack([fine_angle.cos(), fine_angle.sin()], -1)
    fine_centre = (coarse_centre[:, None, :] + fine_offset).reshape(n_fine, 2)

    fine = torch.arange(n_fine).repeat_interleave(points_per_class)
    coarse = fine // n_fine_per_coarse
    noise = fine_std * torch.randn(len(fine), 2, generator=generator)
    plane = fine_centre[fine] + noise
    held_out = (fine % n_fine_per_coarse) >= n_fine_per_coarse - n_held_out

    points = plane.clone()
    if dim > 2:
        standard = (plane - plane.mean(0)) / plane.std()
        nuisance = nuisance_std * torch.randn(len(fine), dim - 2, generator=generator)
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        points = torch.cat([standard, nuisance], 1) @ rotation
        bend_weights = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
        points = points + bend * torch.tanh(points @ bend_weights)
    return ToyData(points.float(), fine, coarse, plane.float(), held_out)


# ----------------------------------------------------------------------------------------------
# Mining on a fixed bank (Fig. 2 and its statistics)
# ----------------------------------------------------------------------------------------------


def _check_bank(bank: Tensor, fine: Tensor, coarse: Tensor) -> None:
    if not isinstance(bank, Tensor) or bank.dim() != 2 or not bank.is_floating_point():
        raise ValueError("bank must be a float tensor of shape (N, d).")
    n = bank.shape[0]
    for name, labels in (("fine", fine), ("coarse", coarse)):
        if not isinstance(labels, Tensor) or labels.shape != (n,):
            raise ValueError(f"{name} must be a tensor of shape ({n},), one label per bank row.")


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
    _check_bank(bank, fine, coarse)
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)):
        raise ValueError(f"anchor must be an int bank index, got {anchor!r}.")
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
    _check_bank(bank, fine, coarse)
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
    fallback_pp, fallback_pn (no P+ / P- candidate outside the circle of radius D(R, N)).
    """
    _check_bank(bank, fine, coarse)
    n_anchors = _check_int("n_anchors", n_anchors, 1)
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
                    "fallback_pp": fallbacks[:, 0].numpy(),
                    "fallback_pn": fallbacks[:, 1].numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def mining_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per method, from `mining_statistics`: mean distances, fallback rates (%), and the share
    (%) of quadruplets that already satisfy the goal D(R,P+) < D(R,P-) < D(R,N) of eq. 5
    (without margins): those teach the least."""
    needed = ["method", "d_rpp", "d_rpn", "d_rn", "fallback_pp", "fallback_pn"]
    missing = [c for c in needed if c not in stats.columns]
    if missing:
        raise ValueError(f"stats lacks the columns {missing}; expected mining_statistics output.")
    ordered = (stats["d_rpp"] < stats["d_rpn"]) & (stats["d_rpn"] < stats["d_rn"])
    table = stats.assign(
        fallback_pp=100 * stats["fallback_pp"].astype(float),
        fallback_pn=100 * stats["fallback_pn"].astype(float),
        ordered=100 * ordered.astype(float),
    )
    summary = table.groupby("method", sort=False)[needed[1:] + ["ordered"]].mean()
    summary.insert(0, "anchors", stats.groupby("method", sort=False).size())
    return summary.rename(
        columns={
            "fallback_pp": "fallback P+ (%)",
            "fallback_pn": "fallback P- (%)",
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
    """What `train_toy_embedding` records for one method.

    log: one row per step (step, loss parts, fallback rates of the batch);
    snapshot_steps (S,): steps of the snapshots (0 = before training, the last = `steps`);
    snapshots (S, N, 2): the embedding of every toy point (training and held out) at each;
    recall_at_1 (S,): Recall@1 (fraction) of the held-out fine classes at each snapshot.
    """

    method: str
    log: pd.DataFrame
    snapshot_steps: np.ndarray
    snapshots: np.ndarray
    recall_at_1: np.ndarray

    @property
    def final_recall_at_1(self) -> float:
        return float(self.recall_at_1[-1])


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

    Quadruplet methods: every step, the bank is the current embedding of every training point
    (one forward pass, detached for mining; the toy is tiny), `sample_anchors` draws the
    anchors and `select_quadruplets` the quadruplets, and `QuadrupletLoss` (eq. 6, sum over the
    batch, `loss_kwargs` passed on) is minimised. "triplet": the same anchors with
    `random_triplets` and the mean of `triplet_loss` (eq. 2, margin `triplet_margin`), no heads.
    Every method starts from the same weights and sees the same anchors (seeded by `seed`);
    Adam with `lr`, not the paper's SGD, so the toy converges in a few hundred steps. With
    `warmup_steps` > 0 the quadruplet methods select "random" quadruplets for those first steps
    (a stand-in for the paper's pretrained start). Runs on one CPU thread (tiny tensors).
    """
    if method not in TRAIN_METHODS:
        raise ValueError(f"method must be one of {TRAIN_METHODS}, got {method!r}.")
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    snapshot_every = _check_int("snapshot_every", snapshot_every, 1)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
    _check_positive("lr", lr)
    if not bool(toy.held_out.any()):
        raise ValueError(
            "the toy has no held-out classes for Recall@1; make it with n_held_out_per_coarse >= 1."
        )

    anchor_generator = seed_everything(seed)  # also seeds the weights: the same for every method
    pick_generator = torch.Generator().manual_seed(seed + 1)
    train = toy.subset(~toy.held_out)
    test = toy.subset(toy.held_out)
    train_fine_classes, train_fine_index = torch.unique(train.fine, return_inverse=True)
    n_coarse = int(toy.coarse.max()) + 1
    model = ToyEmbeddingNet(
        toy.points.shape[1], n_coarse, len(train_fine_classes), hidden, normalize
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = QuadrupletLoss(**(loss_kwargs or {}))
    valid = valid_anchors(train.fine, train.coarse)

    snapshot_steps, snapshots, recalls, rows = [], [], [], []

    def take_snapshot(step: int) -> None:
        with torch.no_grad():
            embedding = model(toy.points).embedding
        snapshot_steps.append(step)
        snapshots.append(embedding.numpy().copy())
        recalls.append(recall_at_k(embedding[toy.held_out], test.fine, ks=(1,))[1])

    take_snapshot(0)
    for step in range(1, steps + 1):
        out = model(train.points)
        bank = out.embedding.detach()
        anchors = sample_anchors(valid, batch_size, anchor_generator)
        if method == "triplet":
            triplets = random_triplets(train.fine, anchors, pick_generator)
            emb = out.embedding[triplets]
            d_rp = pairwise_distance(emb[:, 0], emb[:, 1])
            d_rn = pairwise_distance(emb[:, 0], emb[:, 2])
            total = triplet_loss(d_rp, d_rn, triplet_margin).mean()
            parts = {
                "loss": float(total.detach()),
                "d_rpp": float(d_rp.detach().mean()),
                "d_rn": float(d_rn.detach().mean()),
            }
            fallbacks = torch.zeros(len(anchors), 2, dtype=torch.bool)
        else:
            pick = "random" if step <= warmup_steps else method
            quads, fallbacks = select_quadruplets(
                bank,
                train.fine,
                train.coarse,
                anchors,
                pick,
                pick_generator,
                return_fallbacks=True,
            )
            ref = quads[:, 0]
            total, parts = loss_fn(
                out.embedding[quads],
                out.coarse_logits[ref],
                out.fine_logits[ref],
                train.coarse[ref],
                train_fine_index[ref],
            )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        rows.append(
            {
                "step": step,
                **parts,
                "fallback_pp": float(fallbacks[:, 0].float().mean()),
                "fallback_pn": float(fallbacks[:, 1].float().mean()),
            }
        )
        if step % snapshot_every == 0 or step == steps:
            take_snapshot(step)

    return ToyTrainingHistory(
        method=method,
        log=pd.DataFrame(rows),
        snapshot_steps=np.asarray(snapshot_steps),
        snapshots=np.stack(snapshots),
        recall_at_1=np.asarray(recalls, dtype=float),
    )


def training_curves(histories: Mapping[str, ToyTrainingHistory]) -> pd.DataFrame:
    """One long table of every method's log: method, step, loss parts, fallback rates and
    held-out recall_at_1 (filled at snapshot steps only, NaN elsewhere; step 0 has no loss)."""
    frames = []
    for method, history in histories.items():
        recall = pd.DataFrame({"step": history.snapshot_steps, "recall_at_1": history.recall_at_1})
        frame = history.log.merge(recall, on="step", how="outer").sort_values("step")
        frame.insert(0, "method", method)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def final_recall(histories: Mapping[str, ToyTrainingHistory]) -> dict[str, float]:
    """{method: held-out Recall@1 in percent after the last step}."""
    return {method: 100 * h.final_recall_at_1 for method, h in histories.items()}
