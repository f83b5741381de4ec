"""The Table 1 baselines as their own papers define them (docs/spec.md "Baselines"), one pure
function per loss, and `BaselineLoss`, the module the trainer calls and that checks the inputs.

Shapes: a class-balanced batch of n images (P classes x K images), d dimensions, k medoids.

| method           | source              | embeddings         | function                       |
|------------------|---------------------|--------------------|--------------------------------|
| `semihard`       | Schroff et al. 2015 | L2-normalised      | `semihard_triplet_loss`        |
| `lifted`         | Song et al. 2016    | raw network output | `lifted_structure_loss`        |
| `npairs`         | Sohn 2016           | raw network output | `npairs_loss` + the L2 penalty |
| `clustering`     | Song et al. 2017    | L2-normalised      | `facility_location_loss`       |
| `triplet_global` | Kumar et al. 2016   | L2-normalised      | eq. 2 + `triplet_global_loss`  |

The normalised methods normalise the embeddings themselves; the raw ones need a model built
with `normalize=False`.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from .paper import (
    DISTANCE_EPS,
    LossOutput,
    check_distances,
    check_float,
    check_labels,
    check_reduction,
    inspect_values,
    triplet_loss,
)

# Whether a method works on L2-normalised embeddings (it normalises them itself) or on the raw
# network output (then the model must be built with normalize=False).
NORMALIZED = {
    "semihard": True,
    "lifted": False,
    "npairs": False,
    "clustering": True,
    "triplet_global": True,
}
BASELINES = tuple(NORMALIZED)


# --- Distances within a batch ---


def _eye(n: int, device: torch.device) -> Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


def distance_matrix(x: Tensor, squared: bool = False) -> Tensor:
    """Every Euclidean distance ‖x_i − x_j‖ of the rows of x (n, d) -> (n, n), or its square.

    Exactly symmetric with a zero squared diagonal; gradient-safe like `pairwise_distance`.
    """
    check_float("x", x, ndim=2)
    gram = x @ x.T
    gram = (gram + gram.T) / 2  # matmul is not bit-symmetric; the medoid search needs it to be
    norms = gram.diagonal()
    squares = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min(0)
    squares = squares.masked_fill(_eye(x.shape[0], x.device), 0.0)
    return squares if squared else squares.clamp_min(DISTANCE_EPS).sqrt()


def pair_distance_means(embeddings: Tensor, fine: Tensor, coarse: Tensor) -> dict[str, Tensor]:
    """Mean Euclidean distance of a batch's pairs, by kind -> detached 0-d tensors (NaN when a
    kind is absent): `d_rpp` same fine class, `d_rpn` same coarse class and another fine class,
    `d_rn` another coarse class (the log columns the quadruplet methods fill with D_RP+, D_RP-,
    D_RN). embeddings (n, d), fine (n,), coarse (n,)."""
    with torch.no_grad():
        dist = distance_matrix(embeddings.detach())
        same_fine = fine[:, None] == fine[None, :]
        same_coarse = coarse[:, None] == coarse[None, :]
        kinds = {
            "d_rpp": same_fine & ~_eye(len(fine), dist.device),
            "d_rpn": same_coarse & ~same_fine,
            "d_rn": ~same_coarse,
        }
        # sum / count, not dist[mask].mean(): no host synchronisation
        return {k: torch.where(m, dist, 0).sum() / m.sum() for k, m in kinds.items()}


# --- Semi-Hard: FaceNet, Schroff et al. 2015 ---


def semihard_negatives(squared_distances: Tensor, labels: Tensor) -> Tensor:
    """FaceNet's semi-hard negative of every anchor-positive pair -> LongTensor (n, n).

    squared_distances (n, n) D², labels (n,). Entry [a, p] of a positive pair: the negative x
    with the smallest D²_ax > D²_ap, else the farthest negative (TensorFlow's fallback); ties to
    the lowest index; -1 where (a, p) is no positive pair or a has no negative. Memory O(n³).
    """
    same = labels[:, None] == labels[None, :]
    negative = ~same
    d_ax = squared_distances[:, None, :]  # (a, 1, x)
    d_ap = squared_distances[:, :, None]  # (a, p, 1)
    beyond = negative[:, None, :] & (d_ax > d_ap)  # (a, p, x)
    inf = torch.inf
    semi_hard = torch.where(beyond, d_ax, inf).min(dim=2).indices  # first minimum
    farthest = torch.where(negative, squared_distances, -inf).max(dim=1).indices
    chosen = torch.where(beyond.any(dim=2), semi_hard, farthest[:, None])
    positive = same & ~_eye(len(labels), labels.device) & negative.any(dim=1, keepdim=True)
    return torch.where(positive, chosen, -1)


def semihard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.2) -> Tensor:
    """Semi-Hard (Schroff et al. 2015): mean over the anchor-positive pairs of
    [D²_ap − D²_an + α]₊ -> scalar (), n = `semihard_negatives`, D² between L2-normalised
    embeddings (n, d), α = `margin`; labels (n,). 0 when no pair exists.
    """
    check_float("embeddings", embeddings, ndim=2)
    labels = check_labels("labels", labels, embeddings.shape[0])
    margin = checks.number("margin", margin, 0.0)
    squares = distance_matrix(F.normalize(embeddings, dim=1), squared=True)
    negatives = semihard_negatives(squares.detach(), labels)
    valid = negatives >= 0
    d_an = squares.gather(1, negatives.clamp_min(0))  # [a, p] -> D²(a, n(a, p))
    hinge = (squares - d_an + margin).clamp_min(0)
    return torch.where(valid, hinge, 0).sum() / valid.sum().clamp_min(1)


# --- Lifted Structure: Song et al. 2016 (pytorch-metric-learning's LiftedStructureLoss) ---


@functools.lru_cache(maxsize=8)
def _pml_lifted(margin: float) -> nn.Module:
    from pytorch_metric_learning import distances, losses

    # Euclidean distance on the embeddings as given, no normalisation (Song et al. 2016)
    distance = distances.LpDistance(normalize_embeddings=False, p=2, power=1)
    return losses.LiftedStructureLoss(neg_margin=margin, pos_margin=0.0, distance=distance)


def lifted_structure_loss(embeddings: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Lifted Structure (Song et al. 2016, eq. 4) -> scalar ():

    J = 1 / (2|P|) Σ_{(i,j) ∈ P} [J_ij]₊²,  J_ij = log(Σ_{(i,k) ∈ N} e^{α − D_ik}
    + Σ_{(j,l) ∈ N} e^{α − D_jl}) + D_ij,

    P / N the batch's positive / negative pairs, D Euclidean on the raw embeddings (n, d),
    α = `margin`. pytorch-metric-learning's LiftedStructureLoss computes exactly this.
    """
    check_float("embeddings", embeddings, ndim=2)
    labels = check_labels("labels", labels, embeddings.shape[0])
    margin = checks.number("margin", margin, 0.0)
    return _pml_lifted(margin)(embeddings, labels)


# --- N-Pairs: Sohn 2016 ---


def class_slots(labels: Tensor) -> Tensor:
    """A class-balanced batch as P classes x K images -> LongTensor (P, K) of batch indices: row c
    holds the images of the c-th smallest label, in batch order."""
    _, counts = torch.unique(labels, return_counts=True)
    counts = counts.tolist()
    if len(counts) < 2 or min(counts) < 2 or len(set(counts)) != 1:
        raise ValueError(
            "npairs needs a class-balanced batch, P >= 2 classes with the same number K >= 2 of "
            f"images each; got {len(counts)} classes with {sorted(set(counts))} images."
        )
    return torch.argsort(labels, stable=True).view(len(counts), counts[0])


def npairs_loss(embeddings: Tensor, labels: Tensor) -> Tensor:
    """N-Pairs (Sohn 2016) over every positive pair of a class-balanced batch -> scalar ().

    Every ordered pair of slots (u, v), u ≠ v, of `class_slots` is one of Sohn's tuplets:
    class c's term is log(1 + Σ_{c' ≠ c} exp(f_{c,u}·f_{c',v} − f_{c,u}·f_{c,v})); the mean of
    the K(K−1)P terms. Dot products of the raw embeddings (n, d); add `npairs_l2_penalty`.
    """
    check_float("embeddings", embeddings, ndim=2)
    labels = check_labels("labels", labels, embeddings.shape[0])
    grid = embeddings[class_slots(labels)]  # (P, K, d)
    n_classes, per_class = grid.shape[:2]
    logits = torch.einsum("cud,evd->uvce", grid, grid)  # [u, v, c, c'] = f_{c,u}·f_{c',v}
    off_diagonal = ~_eye(per_class, grid.device)
    logits = logits[off_diagonal].reshape(-1, n_classes)  # (K(K−1)P, P), rows (u, v, c)
    target = torch.arange(n_classes, device=grid.device).repeat(per_class * (per_class - 1))
    return F.cross_entropy(logits, target)


def npairs_l2_penalty(embeddings: Tensor, l2_reg: float = 0.002) -> Tensor:
    """Sohn's regulariser of N-Pairs, (λ / 2) · mean_i ‖f_i‖² over the batch (n, d) -> scalar ().

    TensorFlow's reference `npairs_loss` scaling: λ/4 times the anchors' plus the positives' mean
    squared norm, which is this when every image is both."""
    check_float("embeddings", embeddings, ndim=2)
    l2_reg = checks.number("l2_reg", l2_reg, 0.0)
    return l2_reg / 2 * embeddings.pow(2).sum(dim=1).mean()


# --- Triplet + Global: Kumar et al. 2016 ---


def all_triplets(labels: Tensor) -> Tensor:
    """Every triplet of a batch -> LongTensor (T, 3) of (a, p, n): a ≠ p with the same label, n
    with another label, in lexicographic order. labels (n,). Memory O(n³) booleans."""
    same = labels[:, None] == labels[None, :]
    positive = same & ~_eye(len(labels), labels.device)
    return (positive[:, :, None] & ~same[:, None, :]).nonzero()


def triplet_global_loss(
    d_rp: Tensor, d_rn: Tensor, t: float = 0.4, lambda_g: float = 1.0
) -> Tensor:
    """The global loss of Kumar et al. 2016 in its triplet form -> scalar ():

    σ²_P + σ²_N + λg [μ_P − μ_N + t]₊ over the T triplets of a batch, with μ and σ² the mean and
    the population variance of D_RP and D_RN, each (T,), non-squared as in eq. 3.
    """
    check_distances(d_rp=d_rp, d_rn=d_rn)
    t = checks.number("t", t)
    lambda_g = checks.number("lambda_g", lambda_g, 0.0)
    variances = d_rp.var(correction=0) + d_rn.var(correction=0)
    return variances + lambda_g * (d_rp.mean() - d_rn.mean() + t).clamp_min(0)


# --- Clustering: facility location, Song et al. 2017 ---


def partition_nmi(
    clusterings: Tensor, labels: Tensor, n_clusters: int, n_labels: int | None = None
) -> Tensor:
    """NMI between each clustering and the labels -> float64 (...,), in [0, 1].

    clusterings (..., n) cluster ids in [0, n_clusters); labels (n,) any integer ids, or ids in
    [0, n_labels) when n_labels is given (then no host synchronisation). Arithmetic-mean
    normalisation, as scikit-learn and `qlib.metrics.nmi`; exactly 1 for partitions equal up to
    renaming (also two single clusters), 0 for a single cluster against several labels.
    """
    y = labels
    if n_labels is None:
        _, y = torch.unique(labels, return_inverse=True)
        n_labels = int(y.max()) + 1
    flat = clusterings.reshape(-1, clusterings.shape[-1])
    cells = flat * n_labels + y
    counts = torch.zeros(flat.shape[0], n_clusters * n_labels, dtype=torch.float64, device=y.device)
    counts.scatter_add_(1, cells, torch.ones_like(cells, dtype=torch.float64))
    joint = counts.view(-1, n_clusters, n_labels) / y.numel()
    p_cluster, p_label = joint.sum(2), joint.sum(1)

    def entropy(p: Tensor, dims: tuple[int, ...]) -> Tensor:
        return -torch.special.xlogy(p, p).sum(dims)

    h_cluster, h_label = entropy(p_cluster, (1,)), entropy(p_label, (1,))
    mutual = h_cluster + h_label - entropy(joint, (1, 2))
    nmi = 2 * mutual / (h_cluster + h_label).clamp_min(torch.finfo(torch.float64).tiny)
    # identical partitions (a bijection between clusters and labels): exactly 1, not 1 - 1e-16
    nonzero = (joint > 0).sum((1, 2))
    identical = (nonzero == (p_cluster > 0).sum(1)) & (nonzero == (p_label > 0).sum(1))
    nmi = torch.where(identical, 1.0, nmi.clamp(0.0, 1.0))
    return nmi.view(clusterings.shape[:-1])


def cluster_assignment(distances: Tensor, medoids: Tensor) -> Tensor:
    """g(S): every point to its nearest medoid -> LongTensor (..., n) of positions in `medoids`.

    distances (n, n); medoids (..., k) point indices. Ties go to the earlier medoid; each medoid
    is in its own cluster (a duplicated point cannot take it over).
    """
    assignment = distances[medoids].argmin(dim=-2)  # (..., n); argmin keeps the first minimum
    own = torch.arange(medoids.shape[-1], device=medoids.device).expand_as(medoids)
    return assignment.scatter(-1, medoids, own)


def facility_energy(distances: Tensor, medoids: Tensor) -> Tensor:
    """F(X, S) = −Σ_i min_{j ∈ S} d(x_i, x_j), the facility location score of Song et al. 2017
    -> (...). distances (n, n); medoids (..., k) a medoid set S, or a batch of them."""
    return -distances[medoids].min(dim=-2).values.sum(dim=-1)


def oracle_medoids(distances: Tensor, labels: Tensor) -> Tensor:
    """The oracle's medoids, one per class (classes in increasing label order) -> LongTensor (L,):
    the member j of the class that minimises Σ_{i in the class} d(x_i, x_j); ties go to the
    lowest index. F̃(X, y) = Σ_c F(X_c, {medoid_c}) is the oracle clustering score."""
    _, y = torch.unique(labels, return_inverse=True)
    same = y[:, None] == y[None, :]
    within = torch.where(same, distances, 0).sum(dim=0)  # [j] = Σ_{i in class(j)} d(x_i, x_j)
    classes = torch.arange(int(y.max()) + 1, device=y.device)
    score = torch.where(y[None, :] == classes[:, None], within[None, :], torch.inf)
    return score.argmin(dim=1)


def _candidate_sets(distances: Tensor, medoids: Tensor, position: int) -> tuple[Tensor, Tensor]:
    """Every point j in turn as the medoid at `position` of the list (in place of the medoid
    there, or appended when position == len(medoids)) -> (assignment (n, n), energy (n,)): row j
    is `cluster_assignment` of that set and entry j its `facility_energy`. O(n²), where calling
    those two on the n sets would cost O(n² k). Rows of j already in the set are meaningless."""
    n, k = distances.shape[0], medoids.shape[0]
    positions = torch.arange(k, device=medoids.device)
    others, other_positions = medoids[positions != position], positions[positions != position]
    if len(others):
        nearest, owner = distances[others].min(dim=0)  # first minimum: the earlier medoid
        owner = other_positions[owner]
    else:
        nearest = torch.full((n,), torch.inf, dtype=distances.dtype, device=distances.device)
        owner = torch.zeros(n, dtype=torch.long, device=distances.device)
    # j takes point i when strictly closer, or as close and earlier in the list
    takes = (distances < nearest) | ((distances == nearest) & (position < owner))
    assignment = torch.where(takes, position, owner)
    assignment[:, others] = other_positions  # each medoid stays in its own cluster ...
    assignment.diagonal().fill_(position)  # ... j included
    energy = -torch.minimum(distances, nearest).sum(dim=1)
    return assignment, energy


def greedy_medoids(distances: Tensor, labels: Tensor, margin_multiplier: float = 1.0) -> Tensor:
    """Loss-augmented inference by the greedy of Song et al. 2017 -> LongTensor (k,) medoids.

    k = number of classes in the batch. Starting from S = ∅, each step adds the point j that
    maximises F(X, S ∪ {j}) + γ (1 − NMI(g(S ∪ {j}), y)), γ = `margin_multiplier`; ties go to the
    lowest index. distances (n, n), treated as constants; labels (n,).
    """
    distances = distances.detach()
    _, y = torch.unique(labels, return_inverse=True)
    k = int(y.max()) + 1
    chosen = torch.arange(len(y), device=y.device)[:0]
    for step in range(k):
        assignment, energy = _candidate_sets(distances, chosen, step)
        nmi = partition_nmi(assignment, y, step + 1, k)
        score = energy.double() + margin_multiplier * (1 - nmi)
        score[chosen] = -torch.inf
        chosen = torch.cat([chosen, score.argmax().view(1)])  # argmax keeps the first maximum
    return chosen


def refine_medoids(
    distances: Tensor,
    labels: Tensor,
    medoids: Tensor,
    margin_multiplier: float = 1.0,
    steps: int = 5,
) -> Tensor:
    """The refinement of Song et al. 2017 (Section 3.4, PAM-like) -> LongTensor (k,).

    Each of `steps` rounds assigns the points to the medoids, then swaps each cluster's medoid for
    the member j that maximises −Σ_{i in the cluster} d(x_i, x_j) + γ (1 − NMI(g(S'), y)), S' = S
    with j in its place; memberships fixed within a round (TensorFlow's `cluster_loss`). Ties:
    lowest index.
    """
    distances = distances.detach()
    _, y = torch.unique(labels, return_inverse=True)
    k, n_labels = medoids.shape[0], int(y.max()) + 1
    for _ in range(steps):
        members_of = cluster_assignment(distances, medoids)
        for cluster in range(k):
            members = members_of == cluster
            within = torch.where(members[:, None], distances, 0).sum(dim=0)  # [j]
            assignment, _ = _candidate_sets(distances, medoids, cluster)
            nmi = partition_nmi(assignment, y, k, n_labels)
            score = -within.double() + margin_multiplier * (1 - nmi)
            medoids = medoids.clone()
            medoids[cluster] = torch.where(members, score, -torch.inf).argmax()
    return medoids


def facility_location_loss(
    embeddings: Tensor, labels: Tensor, margin_multiplier: float = 1.0, *, refine_steps: int = 5
) -> Tensor:
    """Clustering (Song et al. 2017, facility location) -> scalar ():

    ℓ = [F(X, S*) + γ (1 − NMI(g(S*), y)) − F̃(X, y)]₊,

    F = `facility_energy` on the Euclidean distances of the L2-normalised embeddings (n, d), F̃
    the oracle score (`oracle_medoids`), S* = `greedy_medoids` then `refine_steps` rounds of
    `refine_medoids`, γ = `margin_multiplier`. The medoids are held fixed (gradient through the
    distances only); the bracket is summed point by point, so it is exactly 0 when S* is the
    oracle's medoid set with a perfect clustering.
    """
    check_float("embeddings", embeddings, ndim=2)
    labels = check_labels("labels", labels, embeddings.shape[0])
    gamma = checks.number("margin_multiplier", margin_multiplier, 0.0)
    refine_steps = checks.integer("refine_steps", refine_steps, 0)
    if embeddings.shape[0] == 0:
        raise ValueError("embeddings is empty; expected a batch of at least one image.")
    distances = distance_matrix(F.normalize(embeddings, dim=1))
    _, y = torch.unique(labels, return_inverse=True)
    with torch.no_grad():
        medoids = greedy_medoids(distances, y, gamma)
        if refine_steps:
            medoids = refine_medoids(distances, y, medoids, gamma, refine_steps)
        oracle = oracle_medoids(distances, y)
        nmi = partition_nmi(cluster_assignment(distances, medoids), y, len(medoids))
    every_point = torch.arange(len(y), device=y.device)
    to_oracle = distances[oracle[y], every_point]  # d(x_i, medoid of its class)
    to_nearest = distances[medoids].min(dim=0).values  # d(x_i, nearest medoid of S*)
    margin = (gamma * (1 - nmi)).to(distances.dtype)
    return ((to_oracle - to_nearest).sum() + margin).clamp_min(0)


# --- The module the trainer calls ---


class BaselineLoss(nn.Module):
    """A Table 1 baseline on a class-balanced batch, under the project's reduction rule.

    `reduction="sum"` returns B = n / 4 times the method's per-unit loss, `"mean"` the per-unit
    loss (docs/spec.md "One reduction rule"; clustering's per-unit value is ℓ / B). The margins
    default to each source's values: `triplet_margin` (semihard, triplet_global's triplet term),
    `lifted_margin`, `npairs_l2_reg`, `clustering_margin`, `global_margin` and `lambda_global`.

    forward(embeddings (n, d), fine (n,), coarse (n,)) -> LossOutput. parts: `loss`; `triplet`
    and `regularizer` reduced like total; `global` before its weight; `d_rpp`, `d_rpn`, `d_rn`
    (`pair_distance_means` on the embeddings the method uses).
    """

    def __init__(
        self,
        method: str,
        *,
        reduction: str = "sum",
        triplet_margin: float = 0.2,
        lifted_margin: float = 1.0,
        npairs_l2_reg: float = 0.002,
        clustering_margin: float = 1.0,
        clustering_refine_steps: int = 5,
        global_margin: float = 0.4,
        lambda_global: float = 1.0,
    ) -> None:
        super().__init__()
        if method not in BASELINES:
            raise ValueError(f"method {method!r} is not a baseline; expected one of {BASELINES}.")
        self.method = method
        self.reduction = check_reduction(reduction)
        self.triplet_margin = checks.number("triplet_margin", triplet_margin, 0.0)
        self.lifted_margin = checks.number("lifted_margin", lifted_margin, 0.0)
        self.npairs_l2_reg = checks.number("npairs_l2_reg", npairs_l2_reg, 0.0)
        self.clustering_margin = checks.number("clustering_margin", clustering_margin, 0.0)
        self.clustering_refine_steps = checks.integer(
            "clustering_refine_steps", clustering_refine_steps, 0
        )
        self.global_margin = checks.number("global_margin", global_margin)
        self.lambda_global = checks.number("lambda_global", lambda_global, 0.0)
        self._norms_checked = False

    def extra_repr(self) -> str:
        return f"{self.method!r}, reduction={self.reduction!r}"

    def forward(self, embeddings: Tensor, fine: Tensor, coarse: Tensor) -> LossOutput:
        check_float("embeddings", embeddings, ndim=2)
        n = embeddings.shape[0]
        if n < 2:
            raise ValueError(f"a baseline batch needs at least 2 images, got {n}.")
        fine = check_labels("fine", fine, n)
        coarse = check_labels("coarse", coarse, n)
        if inspect_values(fine):
            checks.hierarchy(fine, coarse)
        if NORMALIZED[self.method]:
            embeddings = F.normalize(embeddings, dim=1)
        else:
            self._warn_if_normalized(embeddings)
        per_unit, parts = self._per_unit(embeddings, fine)
        scale = n / 4 if self.reduction == "sum" else 1.0
        total = per_unit * scale
        parts = {k: v * scale if k in ("triplet", "regularizer") else v for k, v in parts.items()}
        parts = {"loss": total, **parts, **pair_distance_means(embeddings, fine, coarse)}
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def _per_unit(self, x: Tensor, fine: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's own per-unit loss and its parts (before the reduction's scale)."""
        if self.method == "semihard":
            loss = semihard_triplet_loss(x, fine, self.triplet_margin)
            return loss, {"triplet": loss}
        if self.method == "lifted":
            return lifted_structure_loss(x, fine, self.lifted_margin), {}
        if self.method == "npairs":
            penalty = npairs_l2_penalty(x, self.npairs_l2_reg)
            return npairs_loss(x, fine) + penalty, {"regularizer": penalty}
        if self.method == "clustering":
            loss = facility_location_loss(
                x, fine, self.clustering_margin, refine_steps=self.clustering_refine_steps
            )
            return loss / (x.shape[0] / 4), {}
        triplets = all_triplets(fine)
        if len(triplets) == 0:  # one class only, or no class with two images
            zero = x.sum() * 0.0
            return zero, {"triplet": zero, "global": zero}
        distances = distance_matrix(x)
        d_rp = distances[triplets[:, 0], triplets[:, 1]]
        d_rn = distances[triplets[:, 0], triplets[:, 2]]
        triplet = triplet_loss(d_rp, d_rn, self.triplet_margin).mean()
        glob = triplet_global_loss(d_rp, d_rn, self.global_margin)
        return triplet + self.lambda_global * glob, {"triplet": triplet, "global": glob}

    def _warn_if_normalized(self, embeddings: Tensor) -> None:
        """Once: a raw-embedding method fed unit vectors trains a different loss (issue 9)."""
        if self._norms_checked:
            return
        self._norms_checked = True
        norms = embeddings.detach().norm(dim=1)
        if bool(((norms - 1).abs() < 1e-3).all()):
            warnings.warn(
                f"{self.method} expects the network's raw embeddings, but these all have norm 1; "
                "build the model with normalize=False for this method (docs/spec.md, Baselines).",
                stacklevel=3,
            )
