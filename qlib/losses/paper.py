"""The paper's losses: one pure function per equation (eq. 1-6) and the eq. 6 module.

Shapes: B = number of pairs/triplets/quadruplets, d = embedding dimension, k1/k2 = coarse/fine
classes. Distances are Euclidean, not squared (the paper's footnote 4).

No NaN by construction: `pairwise_distance` clamps the squared distance at DISTANCE_EPS before
the square root (a zero, not 0/0, gradient at zero distance), and eq. 5's denominators are
bounded below by m1 - m2 and m2, hence the paper's condition m1 > m2 > 0.

Shapes, dtypes and settings are always checked; tensor values (finite, non-negative, label
range) only on the CPU, since reading a GPU tensor forces a host synchronisation every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks

# Clamp of the squared distance: sqrt stays differentiable (gradient 0 below it).
DISTANCE_EPS = 1e-12


_VALUE_CHECKS: ContextVar[bool] = ContextVar("qlib_loss_value_checks", default=True)


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the checks of tensor values on or off within the block. The trainer turns them off:
    it checks the embeddings and the loss itself, naming the iteration and the bank indices."""
    token = _VALUE_CHECKS.set(enabled)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def inspect_values(x: Tensor) -> bool:
    """Whether to check a tensor's values: on the CPU only (on a GPU it costs a host sync)."""
    return x.device.type == "cpu" and _VALUE_CHECKS.get()


def check_float(name: str, x: object, ndim: int) -> Tensor:
    """A float tensor with `ndim` dimensions; finite when it lives on the CPU."""
    finite = isinstance(x, Tensor) and inspect_values(x)
    return checks.float_tensor(name, x, ndim, finite=finite)


def check_labels(name: str, x: object, n: int, n_classes: int | None = None) -> Tensor:
    """Integer class ids (n,) -> LongTensor on the same device; range checked on the CPU only."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class ids, got {type(x).__name__}.")
    in_range = n_classes if inspect_values(x) else None
    return checks.labels(name, x, n=n, n_classes=in_range)


def check_reduction(reduction: object) -> str:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    return reduction


def check_distances(**named: Tensor) -> int:
    """Each argument a float tensor (B,) with the same B >= 1, non-negative; returns B."""
    length = None
    for name, d in named.items():
        check_float(name, d, ndim=1)
        if d.numel() == 0:
            raise ValueError(f"{name} is empty; expected at least one distance.")
        if inspect_values(d) and bool((d < 0).any()):
            raise ValueError(f"{name} contains negative values; distances must be >= 0.")
        if length is None:
            length = d.shape[0]
        elif d.shape[0] != length:
            sizes = {n: tuple(v.shape) for n, v in named.items()}
            raise ValueError(f"distance tensors must have the same length (B,), got {sizes}.")
    return int(length)


def _check_margins(m1: object, m2: object) -> tuple[float, float]:
    m1 = checks.number("m1", m1)
    m2 = checks.number("m2", m2)
    if not m1 > m2 > 0:
        raise ValueError(
            f"the margins must satisfy m1 > m2 > 0 (eq. 5's denominators stay positive), "
            f"got m1={m1}, m2={m2}."
        )
    return m1, m2


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Euclidean distance ‖a_i − b_i‖ of (B, d) inputs -> (B,) (footnote 4).

    sqrt(max(‖a_i − b_i‖², DISTANCE_EPS)): identical rows give 1e-6 and a zero gradient.
    """
    check_float("a", a, ndim=2)
    check_float("b", b, ndim=2)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape (B, d), got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    squared = (a - b).pow(2).sum(dim=1)
    return squared.clamp_min(DISTANCE_EPS).sqrt()


def quadruplet_distances(embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 4, d) embeddings in column order R, P+, P-, N -> (D_RP+, D_RP-, D_RN), each (B,)."""
    check_float("embeddings", embeddings, ndim=3)
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


def contrastive_loss(d: Tensor, same: Tensor, alpha: float) -> Tensor:
    """Eq. 1, the Siamese/contrastive loss per pair: y D² + (1 − y) [α − D]₊².

    d: (B,) distances; same: (B,) bool or 0/1 tensor (y = 1 for a same-class pair); alpha > 0.
    Returns (B,).
    """
    length = check_distances(d=d)
    alpha = checks.number("alpha", alpha, 0.0, exclusive=True)
    if not isinstance(same, Tensor) or same.dim() != 1 or same.shape[0] != length:
        shape = tuple(same.shape) if isinstance(same, Tensor) else type(same).__name__
        raise ValueError(f"same must be a tensor of shape ({length},), got {shape}.")
    if same.dtype != torch.bool and (
        same.is_complex() or (inspect_values(same) and not bool(((same == 0) | (same == 1)).all()))
    ):
        raise ValueError("same must be a bool tensor or hold only 0 and 1.")
    y = same.to(d.dtype)
    return y * d.pow(2) + (1 - y) * (alpha - d).clamp_min(0).pow(2)


def triplet_loss(d_rp: Tensor, d_rn: Tensor, margin: float) -> Tensor:
    """Eq. 2, the triplet loss per triplet: [D_RP² − D_RN² + m]₊.

    d_rp, d_rn: (B,) anchor-positive and anchor-negative distances; margin >= 0. Returns (B,).
    """
    check_distances(d_rp=d_rp, d_rn=d_rn)
    margin = checks.number("margin", margin, 0.0)
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
    check_distances(d_rpp=d_rpp, d_rpn=d_rpn, d_rn=d_rn)
    t1 = checks.number("t1", t1)
    t2 = checks.number("t2", t2)
    lambda_g1 = checks.number("lambda_g1", lambda_g1, 0.0)
    lambda_g2 = checks.number("lambda_g2", lambda_g2, 0.0)
    variances = d_rpp.var(correction=0) + d_rpn.var(correction=0) + d_rn.var(correction=0)
    mu_pp, mu_pn, mu_n = d_rpp.mean(), d_rpn.mean(), d_rn.mean()
    return (
        variances
        + lambda_g1 * (mu_pp - mu_pn + t1 - t2).clamp_min(0)
        + lambda_g2 * (mu_pn - mu_n + t2).clamp_min(0)
    )


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
    check_float("coarse_logits", coarse_logits, ndim=2)
    check_float("fine_logits", fine_logits, ndim=2)
    batch = coarse_logits.shape[0]
    if fine_logits.shape[0] != batch or batch == 0:
        raise ValueError(
            "coarse_logits (B, k1) and fine_logits (B, k2) must share the same B >= 1, got "
            f"{tuple(coarse_logits.shape)} and {tuple(fine_logits.shape)}."
        )
    coarse = check_labels("coarse", coarse, batch, coarse_logits.shape[1])
    fine = check_labels("fine", fine, batch, fine_logits.shape[1])
    lambda_c1 = checks.number("lambda_c1", lambda_c1, 0.0)
    lambda_c2 = checks.number("lambda_c2", lambda_c2, 0.0)
    coarse_term = F.cross_entropy(coarse_logits, coarse, reduction="none")
    fine_term = F.cross_entropy(fine_logits, fine, reduction="none")
    return lambda_c1 * coarse_term + lambda_c2 * fine_term


def joint_loss(
    d_rpp: Tensor, d_rpn: Tensor, d_rn: Tensor, m1: float = 0.7, m2: float = 0.3
) -> Tensor:
    """The two distance terms of eq. 5, per quadruplet -> (B,).

    [1 − D_RP- / (D_RP+ + m1 − m2)]₊ + [1 − D_RN / (D_RP- + m2)]₊, denominators exactly as
    printed (the text derives m1 in the first one; the SPEC keeps the printed m1 − m2). The
    classification term L_C(x^R) of eq. 5 is `classification_loss`; `combined_loss` adds it.
    """
    check_distances(d_rpp=d_rpp, d_rpn=d_rpn, d_rn=d_rn)
    m1, m2 = _check_margins(m1, m2)
    # P+ closer than P- (fine classes apart), then P- closer than N (coarse classes apart).
    fine_term = (1 - d_rpn / (d_rpp + (m1 - m2))).clamp_min(0)
    coarse_term = (1 - d_rn / (d_rpn + m2)).clamp_min(0)
    return fine_term + coarse_term


def combined_loss(
    joint: Tensor,
    classification: Tensor,
    glob: Tensor,
    eta: float = 1.0,
    reduction: str = "sum",
) -> Tensor:
    """Eq. 6: L_comb = Σ_i L_joint(Q_i) + η L_global(Q) -> scalar ().

    joint (B,): eq. 5's distance terms (`joint_loss`); classification (B,): eq. 4 on the anchors
    (`classification_loss`), so L_joint(Q_i) = joint_i + classification_i; glob (): eq. 3.
    `reduction="sum"` is eq. 6 as printed; `"mean"` is L_comb / B, the global term divided too,
    so the paper's relative weights stay (the project's one reduction rule, docs/spec.md).
    """
    length = check_distances(joint=joint)
    check_float("classification", classification, ndim=1)
    if classification.shape[0] != length:
        raise ValueError(
            f"classification must have shape ({length},) like joint, "
            f"got {tuple(classification.shape)}."
        )
    checks.float_tensor("glob", glob, 0, finite=False)
    eta = checks.number("eta", eta, 0.0)
    total = joint.sum() + classification.sum() + eta * glob
    return total if check_reduction(reduction) == "sum" else total / length


class LossOutput(NamedTuple):
    """`total`: the scalar loss to backpropagate; `parts`: log-column name (`qlib.logs`) ->
    detached 0-d tensor (not a python float: reading one forces a GPU sync; the trainer converts
    them when it logs)."""

    total: Tensor
    parts: dict[str, Tensor]


class QuadrupletLoss(nn.Module):
    """Eq. 6: Σ_i L_joint(Q_i) + η L_global(Q), with L_joint = eq. 5 (distance terms + eq. 4 on R).

    forward(embeddings (B, 4, d) in column order R, P+, P-, N, then the anchors' coarse_logits
    (B, k1), fine_logits (B, k2), coarse (B,), fine (B,)) -> LossOutput. parts: `loss` (= total),
    `joint` and `classification` (reduced like total), `global` (eq. 3, before η and any division
    by B), `d_rpp`, `d_rpn`, `d_rn` (batch means). `reduction` as in `combined_loss`.
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
        self.t1 = checks.number("t1", t1)
        self.t2 = checks.number("t2", t2)
        self.lambda_c1 = checks.number("lambda_c1", lambda_c1, 0.0)
        self.lambda_c2 = checks.number("lambda_c2", lambda_c2, 0.0)
        self.lambda_g1 = checks.number("lambda_g1", lambda_g1, 0.0)
        self.lambda_g2 = checks.number("lambda_g2", lambda_g2, 0.0)
        self.eta = checks.number("eta", eta, 0.0)
        self.reduction = check_reduction(reduction)

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
        total = combined_loss(joint, classification, glob, self.eta, self.reduction)
        per = 1.0 if self.reduction == "sum" else 1.0 / joint.shape[0]
        parts = {
            "loss": total,
            "joint": joint.sum() * per,
            "global": glob,
            "classification": classification.sum() * per,
            "d_rpp": d_rpp.mean(),
            "d_rpn": d_rpn.mean(),
            "d_rn": d_rn.mean(),
        }
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})
