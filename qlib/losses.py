"""The paper's loss functions, one pure function per equation, and the eq. 6 module.

Shapes: B = number of pairs/triplets/quadruplets, d = embedding dimension, k1/k2 = coarse/fine
classes. Distances are Euclidean, not squared (the paper's footnote 4).

No NaN anywhere, by construction:
- `pairwise_distance` takes the square root of the squared distance clamped below at a tiny eps,
  so at zero distance the value is sqrt(eps) (1e-6) and the gradient is exactly zero instead of
  the 0/0 that `torch.norm` backpropagates.
- The two denominators of eq. 5 are `D_RP+ + m1 - m2` and `D_RP- + m2`. Distances are >= 0, so
  they are bounded below by `m1 - m2` and `m2`; `joint_loss` (and `QuadrupletLoss`) therefore
  require `m1 > m2 > 0` (the paper's own condition) and reject negative distances.
- Every input is checked for shape, dtype and finite values; bad input raises a ValueError that
  says what was expected.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DISTANCE_EPS",
    "LossOutput",
    "QuadrupletLoss",
    "classification_loss",
    "contrastive_loss",
    "global_loss",
    "joint_loss",
    "pairwise_distance",
    "quadruplet_distances",
    "triplet_global_loss",
    "triplet_loss",
]

# Clamp of the squared distance: sqrt stays differentiable (gradient 0 below it).
DISTANCE_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _check_float_tensor(name: str, x: object, ndim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}.")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}.")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; expected finite values only.")
    return x


def _check_distances(**named: Tensor) -> int:
    """Each argument a finite, non-negative float tensor (B,) with the same B >= 1; returns B."""
    length = None
    for name, d in named.items():
        _check_float_tensor(name, d, ndim=1)
        if d.numel() == 0:
            raise ValueError(f"{name} is empty; expected at least one distance.")
        if bool((d < 0).any()):
            raise ValueError(f"{name} contains negative values; distances must be >= 0.")
        if length is None:
            length = d.shape[0]
        elif d.shape[0] != length:
            sizes = {n: tuple(v.shape) for n, v in named.items()}
            raise ValueError(f"distance tensors must have the same length (B,), got {sizes}.")
    return int(length)


def _check_number(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
    return value


def _check_margins(m1: object, m2: object) -> tuple[float, float]:
    m1 = _check_number("m1", m1)
    m2 = _check_number("m2", m2)
    if not m1 > m2 > 0:
        raise ValueError(
            f"the margins must satisfy m1 > m2 > 0 (eq. 5's denominators stay positive), "
            f"got m1={m1}, m2={m2}."
        )
    return m1, m2


def _check_labels(name: str, labels: object, length: int, n_classes: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name} must be an integer tensor of class indices, got {labels.dtype}.")
    if labels.dim() != 1 or labels.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(labels.shape)}.")
    if length and (bool((labels < 0).any()) or bool((labels >= n_classes).any())):
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes - 1}], "
            f"got values in [{int(labels.min())}, {int(labels.max())}]."
        )
    return labels.long()


# ----------------------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------------------


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Euclidean distance ‖a_i − b_i‖ of (B, d) inputs -> (B,) (footnote 4).

    Gradient-safe at zero distance: sqrt(max(‖a_i − b_i‖², eps)) with eps = DISTANCE_EPS, so two
    identical rows give 1e-6 and a zero (not NaN) gradient.
    """
    _check_float_tensor("a", a, ndim=2)
    _check_float_tensor("b", b, ndim=2)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape (B, d), got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    squared = (a - b).pow(2).sum(dim=1)
    return squared.clamp_min(DISTANCE_EPS).sqrt()


def quadruplet_distances(embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 4, d) embeddings in column order R, P+, P-, N -> (D_RP+, D_RP-, D_RN), each (B,)."""
    _check_float_tensor("embeddings", embeddings, ndim=3)
    if embeddings.shape[1] != 4 or embeddings.shape[0] == 0:
        raise ValueError(
            "embeddings must have shape (B, 4, d) with B >= 1 and columns (R, P+, P-, N), "
            f"got {tuple(embeddings.shape)}."
        )
    ref = embeddings[:, 0]
    return (
        pairwise_distance(ref, embeddings[:, 1]),
        pairwise_distance(ref, embeddings[:, 2]),
        pairwise_distance(ref, embeddings[:, 3]),
    )


# ----------------------------------------------------------------------------------------------
# Equations 1-5
# ----------------------------------------------------------------------------------------------


def contrastive_loss(d: Tensor, same: Tensor, alpha: float) -> Tensor:
    """Eq. 1, the Siamese/contrastive loss per pair: y D² + (1 − y) [α − D]₊².

    d: (B,) distances; same: (B,) bool or 0/1 tensor (y = 1 for a same-class pair); alpha > 0.
    Returns (B,).
    """
    length = _check_distances(d=d)
    alpha = _check_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}.")
    if not isinstance(same, Tensor) or same.dim() != 1 or same.shape[0] != length:
        shape = tuple(same.shape) if isinstance(same, Tensor) else type(same).__name__
        raise ValueError(f"same must be a tensor of shape ({length},), got {shape}.")
    if same.dtype != torch.bool:
        if same.is_complex() or not bool(((same == 0) | (same == 1)).all()):
            raise ValueError("same must be a bool tensor or hold only 0 and 1.")
    y = same.to(d.dtype)
    return y * d.pow(2) + (1 - y) * (alpha - d).clamp_min(0).pow(2)


def triplet_loss(d_rp: Tensor, d_rn: Tensor, margin: float) -> Tensor:
    """Eq. 2, the triplet loss per triplet: [D_RP² − D_RN² + m]₊.

    d_rp, d_rn: (B,) anchor-positive and anchor-negative distances; margin >= 0. Returns (B,).
    """
    _check_distances(d_rp=d_rp, d_rn=d_rn)
    margin = _check_number("margin", margin, minimum=0.0)
    return (d_rp.pow(2) - d_rn.pow(2) + margin).clamp_min(0)


def global_loss(
    d_rpp: Tensor,
    d_rpn: Tensor,
    d_rn: Tensor,
    t1: float = 0.7,
    t2: float = 0.3,
    lambda_g1: float = 1.0,
    lambda_g2: float = 1.0,
) -> Tensor:
    """Eq. 3, the global loss of a batch of B quadruplets -> scalar ().

    σ²_P+ + σ²_P- + σ²_N + λg1 [μ_P+ − μ_P- + t1 − t2]₊ + λg2 [μ_P- − μ_N + t2]₊, with μ and σ²
    the mean and the population variance (divide by B) of D_RP+, D_RP-, D_RN, each (B,).
    A batch of one quadruplet has zero variance.
    """
    _check_distances(d_rpp=d_rpp, d_rpn=d_rpn, d_rn=d_rn)
    t1 = _check_number("t1", t1)
    t2 = _check_number("t2", t2)
    lambda_g1 = _check_number("lambda_g1", lambda_g1, minimum=0.0)
    lambda_g2 = _check_number("lambda_g2", lambda_g2, minimum=0.0)
    variances = d_rpp.var(correction=0) + d_rpn.var(correction=0) + d_rn.var(correction=0)
    mu_pp, mu_pn, mu_n = d_rpp.mean(), d_rpn.mean(), d_rn.mean()
    return (
        variances
        + lambda_g1 * (mu_pp - mu_pn + t1 - t2).clamp_min(0)
        + lambda_g2 * (mu_pn - mu_n + t2).clamp_min(0)
    )


def triplet_global_loss(
    d_rp: Tensor, d_rn: Tensor, t: float = 0.4, lambda_g: float = 1.0
) -> Tensor:
    """Triplet form of the global loss (Kumar et al. 2016, ref. [20]) -> scalar ().

    σ²_P + σ²_N + λg [μ_P − μ_N + t]₊ over the B triplets of a batch, with μ and σ² the mean and
    population variance of D_RP and D_RN, each (B,). This is the loss of the Triplet + Global
    baseline row of Table 1; it uses the same (non-squared) distances as eq. 3. The default
    margin t = 0.4 is our choice for L2-normalised embeddings (the paper gives none).
    """
    _check_distances(d_rp=d_rp, d_rn=d_rn)
    t = _check_number("t", t)
    lambda_g = _check_number("lambda_g", lambda_g, minimum=0.0)
    variances = d_rp.var(correction=0) + d_rn.var(correction=0)
    return variances + lambda_g * (d_rp.mean() - d_rn.mean() + t).clamp_min(0)


def classification_loss(
    coarse_logits: Tensor,
    fine_logits: Tensor,
    coarse: Tensor,
    fine: Tensor,
    lambda_c1: float = 0.08,
    lambda_c2: float = 0.25,
) -> Tensor:
    """Eq. 4, the classification loss per sample (hard labels, so p(c) is a Kronecker delta):

    −λc1 log softmax(coarse_logits)[coarse] − λc2 log softmax(fine_logits)[fine].

    coarse_logits (B, k1), fine_logits (B, k2), coarse (B,) and fine (B,) integer labels.
    Returns (B,). The paper's text names the weights the other way round; the equation wins
    (SPEC): λc1 weighs the coarse term, λc2 the fine term.
    """
    _check_float_tensor("coarse_logits", coarse_logits, ndim=2)
    _check_float_tensor("fine_logits", fine_logits, ndim=2)
    batch = coarse_logits.shape[0]
    if fine_logits.shape[0] != batch or batch == 0:
        raise ValueError(
            "coarse_logits (B, k1) and fine_logits (B, k2) must share the same B >= 1, got "
            f"{tuple(coarse_logits.shape)} and {tuple(fine_logits.shape)}."
        )
    coarse = _check_labels("coarse", coarse, batch, coarse_logits.shape[1])
    fine = _check_labels("fine", fine, batch, fine_logits.shape[1])
    lambda_c1 = _check_number("lambda_c1", lambda_c1, minimum=0.0)
    lambda_c2 = _check_number("lambda_c2", lambda_c2, minimum=0.0)
    coarse_term = F.cross_entropy(coarse_logits, coarse, reduction="none")
    fine_term = F.cross_entropy(fine_logits, fine, reduction="none")
    return lambda_c1 * coarse_term + lambda_c2 * fine_term


def joint_loss(
    d_rpp: Tensor, d_rpn: Tensor, d_rn: Tensor, m1: float = 0.7, m2: float = 0.3
) -> Tensor:
    """The two distance terms of eq. 5, per quadruplet -> (B,).

    [1 − D_RP- / (D_RP+ + m1 − m2)]₊ + [1 − D_RN / (D_RP- + m2)]₊, denominators exactly as
    printed (the text derives m1 in the first one; the SPEC keeps the printed m1 − m2). The
    classification term L_C(x^R) of eq. 5 is `classification_loss`; `QuadrupletLoss` adds it.
    Requires m1 > m2 > 0 so both denominators are >= a positive margin.
    """
    _check_distances(d_rpp=d_rpp, d_rpn=d_rpn, d_rn=d_rn)
    m1, m2 = _check_margins(m1, m2)
    # P+ closer than P- (fine classes apart), then P- closer than N (coarse classes apart).
    fine_term = (1 - d_rpn / (d_rpp + (m1 - m2))).clamp_min(0)
    coarse_term = (1 - d_rn / (d_rpn + m2)).clamp_min(0)
    return fine_term + coarse_term


# ----------------------------------------------------------------------------------------------
# Equation 6
# ----------------------------------------------------------------------------------------------


class LossOutput(NamedTuple):
    """`total`: the scalar loss to backpropagate; `parts`: python floats for logging."""

    total: Tensor
    parts: dict[str, float]


class QuadrupletLoss(nn.Module):
    """Eq. 6: Σ_i L_joint(Q_i) + η L_global(Q), with L_joint = eq. 5 (distance terms + eq. 4 on R).

    `reduction="sum"` (as printed) or `"mean"` (the per-quadruplet terms averaged instead of
    summed; the global term is a batch statistic either way).

    forward(embeddings (B, 4, d) in column order R, P+, P-, N, coarse_logits (B, k1),
    fine_logits (B, k2), coarse (B,), fine (B,)) — logits and labels of the anchors R — returns
    LossOutput(total, parts) with parts keys `loss` (= total), `joint` (eq. 5 distance terms,
    reduced), `global` (eq. 3, before η), `classification` (eq. 4, reduced), and `d_rpp`,
    `d_rpn`, `d_rn` (batch means of the distances).
    """

    def __init__(
        self,
        m1: float = 0.7,
        m2: float = 0.3,
        t1: float = 0.7,
        t2: float = 0.3,
        lambda_c1: float = 0.08,
        lambda_c2: float = 0.25,
        lambda_g1: float = 1.0,
        lambda_g2: float = 1.0,
        eta: float = 1.0,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.m1, self.m2 = _check_margins(m1, m2)
        self.t1 = _check_number("t1", t1)
        self.t2 = _check_number("t2", t2)
        self.lambda_c1 = _check_number("lambda_c1", lambda_c1, minimum=0.0)
        self.lambda_c2 = _check_number("lambda_c2", lambda_c2, minimum=0.0)
        self.lambda_g1 = _check_number("lambda_g1", lambda_g1, minimum=0.0)
        self.lambda_g2 = _check_number("lambda_g2", lambda_g2, minimum=0.0)
        self.eta = _check_number("eta", eta, minimum=0.0)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return (
            f"m1={self.m1}, m2={self.m2}, t1={self.t1}, t2={self.t2}, "
            f"lambda_c1={self.lambda_c1}, lambda_c2={self.lambda_c2}, "
            f"lambda_g1={self.lambda_g1}, lambda_g2={self.lambda_g2}, eta={self.eta}, "
            f"reduction={self.reduction!r}"
        )

    def forward(
        self,
        embeddings: Tensor,
        coarse_logits: Tensor,
        fine_logits: Tensor,
        coarse: Tensor,
        fine: Tensor,
    ) -> LossOutput:
        d_rpp, d_rpn, d_rn = quadruplet_distances(embeddings)
        if coarse_logits.dim() >= 1 and coarse_logits.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"coarse_logits must have one row per quadruplet ({embeddings.shape[0]}), "
                f"got shape {tuple(coarse_logits.shape)}."
            )
        joint = joint_loss(d_rpp, d_rpn, d_rn, self.m1, self.m2)
        classification = classification_loss(
            coarse_logits, fine_logits, coarse, fine, self.lambda_c1, self.lambda_c2
        )
        glob = global_loss(d_rpp, d_rpn, d_rn, self.t1, self.t2, self.lambda_g1, self.lambda_g2)
        reduce = torch.sum if self.reduction == "sum" else torch.mean
        joint_reduced = reduce(joint)
        classification_reduced = reduce(classification)
        total = joint_reduced + classification_reduced + self.eta * glob
        parts = {
            "loss": float(total.detach()),
            "joint": float(joint_reduced.detach()),
            "global": float(glob.detach()),
            "classification": float(classification_reduced.detach()),
            "d_rpp": float(d_rpp.detach().mean()),
            "d_rpn": float(d_rpn.detach().mean()),
            "d_rn": float(d_rn.detach().mean()),
        }
        return LossOutput(total, parts)


class BaselineLoss(nn.Module):
    """TEMPORARY shim (replaced by the losses branch): the old baselines behind the new API."""

    def __init__(
        self,
        method,
        *,
        reduction="sum",
        triplet_margin=0.2,
        global_margin=0.4,
        lambda_global=1.0,
        lifted_neg_margin=1.0,
        **_ignored,
    ) -> None:
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        self.method, self.reduction = method, reduction
        self.triplet_margin, self.global_margin = triplet_margin, global_margin
        self.lambda_global = lambda_global
        distance = distances.LpDistance(normalize_embeddings=True, p=2, power=1)
        self.miner = None
        if method == "semihard":
            self.miner = miners.TripletMarginMiner(
                margin=triplet_margin, type_of_triplets="semihard", distance=distance
            )
            self.loss = losses.TripletMarginLoss(margin=triplet_margin, distance=distance)
        elif method == "lifted":
            self.loss = losses.LiftedStructureLoss(
                neg_margin=lifted_neg_margin, pos_margin=0.0, distance=distance
            )
        elif method == "npairs":
            self.loss = losses.NPairsLoss()
        elif method == "triplet_global":
            self.miner = miners.TripletMarginMiner(type_of_triplets="all", distance=distance)
        else:
            raise ValueError(f"baseline {method!r} is not available in this shim.")

    def forward(self, embeddings, fine, coarse):
        if self.method == "triplet_global":
            a, p, n = self.miner(embeddings, fine)
            d_rp = pairwise_distance(embeddings[a], embeddings[p])
            d_rn = pairwise_distance(embeddings[a], embeddings[n])
            mean = triplet_loss(d_rp, d_rn, self.triplet_margin).mean() + self.lambda_global * (
                triplet_global_loss(d_rp, d_rn, t=self.global_margin)
            )
        elif self.miner is not None:
            mean = self.loss(embeddings, fine, self.miner(embeddings, fine))
        else:
            mean = self.loss(embeddings, fine)
        total = mean * (embeddings.shape[0] / 4) if self.reduction == "sum" else mean
        return LossOutput(total, {"loss": total.detach()})
