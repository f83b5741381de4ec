"""qlib.losses.baselines (Semi-Hard, Lifted Structure, N-Pairs, Triplet + Global, BaselineLoss)
against hand-computed values, brute-force Python loops over each paper's formula, the library
where one implements the same formula, and gradcheck (float64). Clustering (facility location)
is in test_losses_clustering.py."""

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from qlib.logs import DISTANCES, LOSS_PARTS
from qlib.losses.baselines import (
    BASELINES,
    NORMALIZED,
    BaselineLoss,
    all_triplets,
    class_slots,
    distance_matrix,
    lifted_structure_loss,
    npairs_l2_penalty,
    npairs_loss,
    pair_distance_means,
    semihard_negatives,
    semihard_triplet_loss,
    triplet_global_loss,
)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def balanced_batch(n_classes=3, per_class=4, dim=5, seed=0, shuffle=True):
    """A class-balanced batch (P x K images), fine labels, and coarse = fine // 2."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.arange(n_classes).repeat_interleave(per_class)
    if shuffle:
        fine = fine[torch.randperm(len(fine), generator=g)]
    emb = torch.randn(len(fine), dim, generator=g, dtype=torch.float64)
    return emb, fine, fine // 2


# the 3-D axes: squared distances 2 (orthogonal) or 4 (opposite), exact in floating point
AXES = t([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]])
AXES_LABELS = torch.tensor([0, 0, 1, 1])


# --- brute-force references: plain Python over lists ------------------------------------------


def rows(x):
    return [list(map(float, r)) for r in x]


def sq_dist(a, b):
    return sum((u - v) ** 2 for u, v in zip(a, b, strict=True))


def dist(a, b):
    return math.sqrt(sq_dist(a, b))


def normalised(x):
    return rows(F.normalize(x, dim=1))


def brute_semihard(x, labels, margin):
    """FaceNet over every anchor-positive pair; per pair the closest negative beyond the
    positive, else the farthest negative; ties to the lowest index."""
    y = labels.tolist()
    losses, chosen = [], {}
    for a, p in itertools.permutations(range(len(y)), 2):
        negatives = [j for j in range(len(y)) if y[j] != y[a]]
        if y[p] != y[a] or not negatives:
            continue
        d_ap = sq_dist(x[a], x[p])
        beyond = [j for j in negatives if sq_dist(x[a], x[j]) > d_ap]
        if beyond:
            neg = min(beyond, key=lambda j: (sq_dist(x[a], x[j]), j))
        else:
            neg = max(negatives, key=lambda j: (sq_dist(x[a], x[j]), -j))
        chosen[a, p] = neg
        losses.append(max(d_ap - sq_dist(x[a], x[neg]) + margin, 0.0))
    return (sum(losses) / len(losses) if losses else 0.0), chosen


def brute_lifted(x, labels, alpha):
    """Song et al. 2016, eq. 4: 1/(2|P|) sum over the (unordered) positive pairs of [J_ij]_+^2."""
    y = labels.tolist()
    total, pairs = 0.0, 0
    for i, j in itertools.combinations(range(len(y)), 2):
        if y[i] != y[j]:
            continue
        s = sum(math.exp(alpha - dist(x[i], x[k])) for k in range(len(y)) if y[k] != y[i])
        s += sum(math.exp(alpha - dist(x[j], x[k])) for k in range(len(y)) if y[k] != y[j])
        total += max(math.log(s) + dist(x[i], x[j]), 0.0) ** 2
        pairs += 1
    return total / (2 * pairs)


def brute_npairs(x, labels):
    """Sohn 2016 on every pair of slots (u, v), u != v: slots are the batch order in a class."""
    y = labels.tolist()
    classes = sorted(set(y))
    members = {c: [i for i in range(len(y)) if y[i] == c] for c in classes}
    per_class = len(members[classes[0]])
    terms = []
    for u, v in itertools.permutations(range(per_class), 2):
        for c in classes:
            anchor = x[members[c][u]]

            def dot(j, anchor=anchor, v=v):
                return sum(a * b for a, b in zip(anchor, x[members[j][v]], strict=True))

            others = sum(math.exp(dot(j) - dot(c)) for j in classes if j != c)
            terms.append(math.log(1 + others))
    return sum(terms) / len(terms)


def brute_triplet_global(x, labels, margin, t_global, lambda_g, lambda_global):
    y = labels.tolist()
    d_rp, d_rn = [], []
    for a, p, n in itertools.product(range(len(y)), repeat=3):
        if a != p and y[a] == y[p] and y[n] != y[a]:
            d_rp.append(dist(x[a], x[p]))
            d_rn.append(dist(x[a], x[n]))
    triplet = sum(max(p**2 - n**2 + margin, 0.0) for p, n in zip(d_rp, d_rn, strict=True))
    triplet /= len(d_rp)

    def mean(v):
        return sum(v) / len(v)

    def pvar(v):
        return sum((e - mean(v)) ** 2 for e in v) / len(v)

    glob = pvar(d_rp) + pvar(d_rn) + lambda_g * max(mean(d_rp) - mean(d_rn) + t_global, 0.0)
    return triplet + lambda_global * glob, triplet, glob


# --- distances --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_distance_matrix_matches_loop(seed):
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xs = rows(x)
    squared = distance_matrix(x, squared=True)
    euclid = distance_matrix(x)
    for i, j in itertools.product(range(7), repeat=2):
        expected = sq_dist(xs[i], xs[j])
        assert float(squared[i, j]) == pytest.approx(expected, abs=1e-12)
        if i != j:
            assert float(euclid[i, j]) == pytest.approx(math.sqrt(expected), rel=1e-12)
    assert torch.equal(squared, squared.T) and torch.equal(euclid, euclid.T)
    assert torch.all(squared.diagonal() == 0)


def test_distance_matrix_gradient_safe_at_duplicates():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    x.requires_grad_(True)
    distance_matrix(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_pair_distance_means_matches_loop():
    emb, fine, coarse = balanced_batch(n_classes=4, per_class=3, seed=2)
    xs, f, c = rows(emb), fine.tolist(), coarse.tolist()
    kinds = {"d_rpp": [], "d_rpn": [], "d_rn": []}
    for i, j in itertools.permutations(range(len(f)), 2):
        if f[i] == f[j]:
            kinds["d_rpp"].append(dist(xs[i], xs[j]))
        elif c[i] == c[j]:
            kinds["d_rpn"].append(dist(xs[i], xs[j]))
        else:
            kinds["d_rn"].append(dist(xs[i], xs[j]))
    means = pair_distance_means(emb, fine, coarse)
    assert set(means) == set(DISTANCES)
    for key, values in kinds.items():
        assert float(means[key]) == pytest.approx(sum(values) / len(values), rel=1e-12)


def test_pair_distance_means_nan_when_a_kind_is_absent():
    emb, fine, _ = balanced_batch(n_classes=2, per_class=2)
    means = pair_distance_means(emb, fine, torch.zeros_like(fine))  # one coarse class
    assert math.isnan(float(means["d_rn"])) and not math.isnan(float(means["d_rpn"]))


# --- Semi-Hard --------------------------------------------------------------------------------


def test_semihard_hand_values():
    # A, B in class 0, C, D in class 1; squared distances 2 except A-D = 4.
    # (A,B): D is beyond 2 -> [2 - 4 + 0.2]_+ = 0; (B,A): nothing beyond, farthest C/D tie -> C,
    # 0.2; (C,D): nothing beyond, farthest A/B tie -> A, 0.2; (D,C): A beyond -> 0. Mean 0.1.
    negatives = semihard_negatives(distance_matrix(AXES, squared=True), AXES_LABELS)
    expected = torch.full((4, 4), -1)
    expected[0, 1], expected[1, 0], expected[2, 3], expected[3, 2] = 3, 2, 0, 0
    assert torch.equal(negatives, expected)
    torch.testing.assert_close(semihard_triplet_loss(AXES, AXES_LABELS, 0.2), t(0.1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_semihard_matches_loop(seed):
    emb, fine, _ = balanced_batch(n_classes=3, per_class=4, seed=seed)
    expected, chosen = brute_semihard(normalised(emb), fine, 0.5)
    torch.testing.assert_close(semihard_triplet_loss(emb, fine, 0.5), t(expected))
    negatives = semihard_negatives(distance_matrix(F.normalize(emb, dim=1), True), fine)
    for (a, p), n in chosen.items():
        assert int(negatives[a, p]) == n
    assert int((negatives >= 0).sum()) == len(chosen)


def test_semihard_without_negatives_is_zero():
    emb = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    value = semihard_triplet_loss(emb, torch.zeros(4, dtype=torch.long))
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(emb.grad).all()


# --- Lifted Structure -------------------------------------------------------------------------


def test_lifted_hand_values():
    # 1-D: A=0, B=1 (class 0), C=3, D=4 (class 1). J_AB = log(e^-2 + e^-3 + e^-1 + e^-2) + 1,
    # and J_CD the same by symmetry: 1/(2*2) * 2 J^2 = J^2 / 2.
    x = t([[0.0], [1.0], [3.0], [4.0]])
    j = math.log(math.exp(-1) + 2 * math.exp(-2) + math.exp(-3)) + 1
    torch.testing.assert_close(lifted_structure_loss(x, AXES_LABELS, 1.0), t(j * j / 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_lifted_matches_loop(seed, margin):
    emb, fine, _ = balanced_batch(n_classes=3, per_class=3, seed=seed)
    emb = emb * 0.4  # distances around the margin, so the hinge is active for some pairs
    expected = brute_lifted(rows(emb), fine, margin)
    assert expected > 0
    torch.testing.assert_close(lifted_structure_loss(emb, fine, margin), t(expected))


# --- N-Pairs ----------------------------------------------------------------------------------


def test_class_slots_layout_and_errors():
    fine = torch.tensor([2, 0, 2, 0, 1, 1])
    assert class_slots(fine).tolist() == [[1, 3], [4, 5], [0, 2]]
    for bad in ([0, 0, 1], [0, 1, 2], [0, 0, 0, 0]):
        with pytest.raises(ValueError, match="class-balanced"):
            class_slots(torch.tensor(bad))


def test_npairs_hand_values():
    # class 0 at (1, 0) twice, class 1 at (0, 1) twice: every term is log(1 + e^(0 - 1))
    x = t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(npairs_loss(x, AXES_LABELS), t(math.log(1 + math.exp(-1))))
    torch.testing.assert_close(npairs_l2_penalty(x, 0.002), t(0.001))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_class", [2, 4])
def test_npairs_matches_loop(seed, per_class):
    emb, fine, _ = balanced_batch(n_classes=4, per_class=per_class, seed=seed)
    torch.testing.assert_close(npairs_loss(emb, fine), t(brute_npairs(rows(emb), fine)))
    norms = sum(sum(v * v for v in r) for r in rows(emb)) / len(fine)
    torch.testing.assert_close(npairs_l2_penalty(emb, 0.01), t(0.005 * norms))


def test_npairs_each_slot_pair_is_sohns_loss_as_the_library_computes_it():
    """Every (u, v) tuplet is pytorch-metric-learning's NPairsLoss (Sohn's eq., dot products)."""
    from pytorch_metric_learning import distances, losses

    emb, fine, _ = balanced_batch(n_classes=5, per_class=3, seed=4)
    slots = class_slots(fine)
    library = losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False))
    labels = torch.arange(5)
    per_tuplet = [
        library(torch.cat([emb[slots[:, u]], emb[slots[:, v]]]), torch.cat([labels, labels]))
        for u, v in itertools.permutations(range(3), 2)
    ]
    torch.testing.assert_close(npairs_loss(emb, fine), torch.stack(per_tuplet).mean())


# --- Triplet + Global -------------------------------------------------------------------------


def test_all_triplets_matches_loop():
    fine = torch.tensor([0, 1, 0, 2, 1, 0])
    y = fine.tolist()
    expected = [
        [a, p, n]
        for a, p, n in itertools.product(range(6), repeat=3)
        if a != p and y[a] == y[p] and y[n] != y[a]
    ]
    assert all_triplets(fine).tolist() == expected


def test_triplet_global_hand_values():
    # every D_RP = sqrt 2; D_RN: six sqrt 2 and two 2 (A-D, D-A). Triplet term: [2 - 2 + 0.2]_+
    # six times, 0 twice -> 0.15. Global: var_P = 0, var_N and [mu_P - mu_N + 0.4]_+ by hand.
    out = BaselineLoss("triplet_global", reduction="mean")(AXES, AXES_LABELS, AXES_LABELS)
    r2 = math.sqrt(2)
    mu_n = (6 * r2 + 2 * 2) / 8
    var_n = (6 * (r2 - mu_n) ** 2 + 2 * (2 - mu_n) ** 2) / 8
    glob = var_n + max(r2 - mu_n + 0.4, 0.0)
    assert float(out.parts["triplet"]) == pytest.approx(0.15)
    assert float(out.parts["global"]) == pytest.approx(glob)
    torch.testing.assert_close(out.total, t(0.15 + glob))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_global_matches_loop_over_every_triplet(seed):
    emb, fine, coarse = balanced_batch(n_classes=3, per_class=3, seed=seed)
    loss = BaselineLoss(
        "triplet_global", reduction="mean", triplet_margin=0.3, global_margin=0.5, lambda_global=2.0
    )
    out = loss(emb, fine, coarse)
    total, triplet, glob = brute_triplet_global(normalised(emb), fine, 0.3, 0.5, 1.0, 2.0)
    torch.testing.assert_close(out.total, t(total))
    assert float(out.parts["triplet"]) == pytest.approx(triplet, rel=1e-10)
    assert float(out.parts["global"]) == pytest.approx(glob, rel=1e-10)


def test_triplet_global_uses_satisfied_triplets_too():
    """Kumar et al.'s statistics run over every triplet, not only the margin violators: moving a
    far negative farther changes the global term although its triplet term stays 0."""
    x = t([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = BaselineLoss("triplet_global", reduction="mean")
    before = loss(x, labels, labels)
    assert float(before.parts["triplet"]) == 0.0
    x2 = x.clone()
    x2[3] = t([1.0, -0.3])
    after = loss(x2, labels, labels)
    assert float(after.parts["triplet"]) == 0.0
    assert float(after.parts["global"]) != pytest.approx(float(before.parts["global"]))


def test_triplet_global_loss_function_hand_values():
    # variances 0.01 + 0; [0.3 - 0.3 + 0.4]_+ = 0.4 -> 0.41
    torch.testing.assert_close(triplet_global_loss(t([0.2, 0.4]), t([0.3, 0.3])), t(0.41))


# --- BaselineLoss: the module, the reduction rule, the parts ----------------------------------

EXPECTED_PARTS = {
    "semihard": {"loss", "triplet"},
    "lifted": {"loss"},
    "npairs": {"loss", "regularizer"},
    "clustering": {"loss"},
    "triplet_global": {"loss", "triplet", "global"},
}


def test_baselines_tuple_and_normalisation_table():
    assert BASELINES == ("semihard", "lifted", "npairs", "clustering", "triplet_global")
    assert set(NORMALIZED) == set(BASELINES)
    assert [m for m in BASELINES if not NORMALIZED[m]] == ["lifted", "npairs"]


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_parts_are_detached_scalar_log_columns(method):
    emb, fine, coarse = balanced_batch(n_classes=4, per_class=4, seed=1)
    emb.requires_grad_(True)
    out = BaselineLoss(method)(emb, fine, coarse)
    assert set(out.parts) == EXPECTED_PARTS[method] | set(DISTANCES)
    assert set(out.parts) <= set(LOSS_PARTS) | set(DISTANCES)
    for key, value in out.parts.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and not value.requires_grad
        assert torch.isfinite(value), key
    assert out.total.shape == () and out.total.requires_grad
    assert torch.equal(out.parts["loss"], out.total.detach())
    out.total.backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("n_classes, per_class", [(4, 4), (3, 4), (6, 2)])
def test_baseline_sum_is_b_times_mean(method, n_classes, per_class):
    emb, fine, coarse = balanced_batch(n_classes=n_classes, per_class=per_class, seed=3)
    emb = emb * 0.5
    total = BaselineLoss(method, reduction="sum")(emb, fine, coarse)
    mean = BaselineLoss(method, reduction="mean")(emb, fine, coarse)
    b = len(fine) / 4  # a batch of 4B images counts as B units
    torch.testing.assert_close(total.total, b * mean.total)
    for key in ("triplet", "regularizer"):
        if key in total.parts:
            torch.testing.assert_close(total.parts[key], b * mean.parts[key])
    for key in ("global", *DISTANCES):
        if key in total.parts:
            torch.testing.assert_close(total.parts[key], mean.parts[key], equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_baseline_loss_calls_each_papers_function(seed):
    emb, fine, coarse = balanced_batch(n_classes=4, per_class=4, seed=seed)
    unit = F.normalize(emb, dim=1)

    def mean_total(method, **kwargs):
        return BaselineLoss(method, reduction="mean", **kwargs)(emb, fine, coarse).total

    torch.testing.assert_close(mean_total("semihard"), semihard_triplet_loss(emb, fine, 0.2))
    torch.testing.assert_close(mean_total("lifted"), lifted_structure_loss(emb, fine, 1.0))
    torch.testing.assert_close(
        mean_total("npairs", npairs_l2_reg=0.01),
        npairs_loss(emb, fine) + npairs_l2_penalty(emb, 0.01),
    )
    expected, _ = brute_semihard(rows(unit), fine, 0.2)
    torch.testing.assert_close(mean_total("semihard"), t(expected))


def test_baseline_distances_use_the_methods_embeddings():
    emb, fine, coarse = balanced_batch(n_classes=4, per_class=2, seed=6)
    raw = pair_distance_means(emb, fine, coarse)
    unit = pair_distance_means(F.normalize(emb, dim=1), fine, coarse)
    lifted = BaselineLoss("lifted")(emb, fine, coarse).parts
    semihard = BaselineLoss("semihard")(emb, fine, coarse).parts
    for key in DISTANCES:
        torch.testing.assert_close(lifted[key], raw[key])
        torch.testing.assert_close(semihard[key], unit[key])


@pytest.mark.parametrize("method", ["lifted", "npairs"])
def test_raw_embedding_methods_warn_once_on_unit_vectors(method):
    emb, fine, coarse = balanced_batch(n_classes=2, per_class=2)
    loss = BaselineLoss(method)
    with pytest.warns(UserWarning, match="normalize=False"):
        loss(F.normalize(emb, dim=1), fine, coarse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(F.normalize(emb, dim=1), fine, coarse)  # once only


# --- gradcheck in float64 ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["semihard", "lifted", "npairs", "triplet_global"])
def test_gradcheck_baselines(method):
    emb, fine, coarse = balanced_batch(n_classes=3, per_class=2, dim=4, seed=8)
    loss = BaselineLoss(method, reduction="mean", triplet_margin=1.0)
    assert torch.autograd.gradcheck(
        lambda e: loss(e, fine, coarse).total, (emb.requires_grad_(),), eps=1e-6, atol=1e-5
    )


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: BaselineLoss("contrastive"),
        lambda: BaselineLoss("semihard", reduction="none"),
        lambda: BaselineLoss("semihard", triplet_margin=-0.1),
        lambda: BaselineLoss("clustering", clustering_refine_steps=-1),
        lambda: BaselineLoss("semihard")(
            torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        ),
        lambda: BaselineLoss("semihard")(
            torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, dtype=torch.long)
        ),
        lambda: BaselineLoss("semihard")(
            torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
        ),
        lambda: BaselineLoss("semihard")(
            torch.full((4, 3), float("nan")), AXES_LABELS, AXES_LABELS
        ),
        # fine class 0 under two coarse classes
        lambda: BaselineLoss("lifted")(AXES, AXES_LABELS, torch.tensor([0, 1, 1, 1])),
        lambda: BaselineLoss("npairs")(
            torch.zeros(3, 2), torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1])
        ),
        lambda: npairs_l2_penalty(AXES, -1.0),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
