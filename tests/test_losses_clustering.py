"""Clustering (facility location, Song et al. 2017): the NMI, the assignment, the oracle, the
greedy and the refinement against brute-force loops; the greedy against an exhaustive search over
medoid sets; the loss exactly 0 on well-separated clusters and positive on mixed ones; gradcheck."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score

from qlib.losses.baselines import (
    cluster_assignment,
    distance_matrix,
    facility_energy,
    facility_location_loss,
    greedy_medoids,
    oracle_medoids,
    partition_nmi,
    refine_medoids,
)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def random_case(n=9, n_classes=3, dim=3, seed=0):
    """Normalised random points, labels with every class present, and their distance matrix."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        [torch.arange(n_classes), torch.randint(n_classes, (n - n_classes,), generator=g)]
    )
    labels = labels[torch.randperm(n, generator=g)]
    x = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    return x, labels, distance_matrix(x)


def separated_case(n_classes=3, per_class=3, dim=4, seed=0, spread=0.01):
    """Tight clusters around orthogonal directions: the classes are far apart."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(dim, dtype=torch.float64)[:n_classes]
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = spread * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return centers[labels] + noise, labels


# --- brute-force references: plain Python over lists ------------------------------------------


def brute_assign(d, medoids):
    """Nearest medoid (position in the list); ties to the earlier one; a medoid is its own."""
    out = []
    for i in range(len(d)):
        if i in medoids:
            out.append(medoids.index(i))
            continue
        best = 0
        for q in range(1, len(medoids)):
            if d[medoids[q]][i] < d[medoids[best]][i]:
                best = q
        out.append(best)
    return out


def brute_objective(d, medoids, y, gamma):
    """F(X, S) + gamma (1 - NMI(g(S), y))."""
    energy = -sum(min(d[m][i] for m in medoids) for i in range(len(d)))
    nmi = normalized_mutual_info_score(y, brute_assign(d, medoids))
    return energy + gamma * (1 - nmi)


def brute_greedy(d, y, gamma):
    chosen = []
    for _ in range(len(set(y))):
        best, best_value = None, None
        for j in range(len(d)):
            if j in chosen:
                continue
            value = brute_objective(d, chosen + [j], y, gamma)
            if best is None or value > best_value:
                best, best_value = j, value
        chosen.append(best)
    return chosen


def brute_refine(d, y, medoids, gamma, steps):
    medoids = list(medoids)
    for _ in range(steps):
        members_of = brute_assign(d, medoids)
        for cluster in range(len(medoids)):
            members = [i for i in range(len(d)) if members_of[i] == cluster]
            best, best_value = None, None
            for j in members:
                swapped = medoids.copy()
                swapped[cluster] = j
                nmi = normalized_mutual_info_score(y, brute_assign(d, swapped))
                value = -sum(d[i][j] for i in members) + gamma * (1 - nmi)
                if best is None or value > best_value:
                    best, best_value = j, value
            medoids[cluster] = best
    return medoids


def brute_oracle_score(d, y):
    """F~(X, y) = sum over classes of max_j -sum_{i in class} d(i, j)."""
    score = 0.0
    for c in sorted(set(y)):
        members = [i for i in range(len(y)) if y[i] == c]
        score += max(-sum(d[i][j] for i in members) for j in members)
    return score


def exhaustive_best(d, y, k, gamma):
    return max(
        brute_objective(d, list(s), y, gamma) for s in itertools.combinations(range(len(d)), k)
    )


def lists(d):
    return [list(map(float, r)) for r in d]


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_partition_nmi_matches_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (12,), generator=g) * 3 + 1  # ids need not be contiguous
    clusterings = torch.randint(0, 3, (6, 12), generator=g)
    nmi = partition_nmi(clusterings, labels, 3)
    for row, value in zip(clusterings, nmi, strict=True):
        expected = normalized_mutual_info_score(labels.tolist(), row.tolist())
        assert float(value) == pytest.approx(expected, abs=1e-12)


def test_partition_nmi_limit_cases_are_exact():
    labels = torch.tensor([5, 5, 2, 2, 9])
    assert float(partition_nmi(torch.tensor([1, 1, 0, 0, 2]), labels, 3)) == 1.0  # renamed
    assert float(partition_nmi(torch.zeros(5, dtype=torch.long), labels, 1)) == 0.0
    assert float(partition_nmi(torch.zeros(3, dtype=torch.long), torch.ones(3), 1)) == 1.0


def test_cluster_assignment_ties_and_own_medoids():
    # points 0 and 1 coincide; 2 is equidistant from the medoids 0 and 3
    x = t([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    d = distance_matrix(x)
    assert cluster_assignment(d, torch.tensor([3, 0])).tolist() == [1, 1, 0, 0]
    assert cluster_assignment(d, torch.tensor([0, 1])).tolist() == [0, 1, 0, 0]  # 1 keeps itself
    batch = torch.tensor([[3, 0], [0, 1]])
    assert cluster_assignment(d, batch).tolist() == [[1, 1, 0, 0], [0, 1, 0, 0]]


@pytest.mark.parametrize("seed", range(3))
def test_assignment_energy_and_oracle_match_loops(seed):
    _, labels, d = random_case(n=10, n_classes=3, seed=seed)
    dl, y = lists(d), labels.tolist()
    for medoids in ([0, 4, 7], [9, 2], [5]):
        m = torch.tensor(medoids)
        assert cluster_assignment(d, m).tolist() == brute_assign(dl, medoids)
        expected = -sum(min(dl[j][i] for j in medoids) for i in range(10))
        assert float(facility_energy(d, m)) == pytest.approx(expected, rel=1e-12)
    oracle = oracle_medoids(d, labels).tolist()
    for c, medoid in zip(sorted(set(y)), oracle, strict=True):
        members = [i for i in range(10) if y[i] == c]
        within = [sum(dl[i][j] for i in members) for j in members]
        assert medoid == members[within.index(min(within))]


# --- the greedy and the refinement against loops and against the exhaustive search -------------


@pytest.mark.parametrize("gamma", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_matches_loop(seed, gamma):
    _, labels, d = random_case(n=9, n_classes=3, seed=seed)
    expected = brute_greedy(lists(d), labels.tolist(), gamma)
    assert greedy_medoids(d, labels, gamma).tolist() == expected


@pytest.mark.parametrize("gamma", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_refinement_matches_loop(seed, gamma):
    _, labels, d = random_case(n=9, n_classes=3, seed=seed)
    start = greedy_medoids(d, labels, gamma)
    expected = brute_refine(lists(d), labels.tolist(), start.tolist(), gamma, steps=3)
    assert refine_medoids(d, labels, start, gamma, steps=3).tolist() == expected


@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(6))
def test_exhaustive_search_bounds_the_greedy(seed, gamma):
    _, labels, d = random_case(n=8, n_classes=3, seed=seed)
    dl, y = lists(d), labels.tolist()
    best = exhaustive_best(dl, y, 3, gamma)
    greedy = greedy_medoids(d, labels, gamma)
    refined = refine_medoids(d, labels, greedy, gamma)
    for medoids in (greedy, refined):
        assert brute_objective(dl, medoids.tolist(), y, gamma) <= best + 1e-12


@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_greedy_is_exact_for_one_class(seed, gamma):
    _, _, d = random_case(n=7, n_classes=1, seed=seed)
    labels = torch.zeros(7, dtype=torch.long)
    medoids = greedy_medoids(d, labels, gamma).tolist()
    assert brute_objective(lists(d), medoids, [0] * 7, gamma) == pytest.approx(
        exhaustive_best(lists(d), [0] * 7, 1, gamma), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_greedy_and_refinement_are_exact_on_separated_clusters(seed):
    x, labels = separated_case(n_classes=3, per_class=3, seed=seed)
    d = distance_matrix(F.normalize(x, dim=1))
    dl, y = lists(d), labels.tolist()
    best = exhaustive_best(dl, y, 3, 1.0)
    refined = refine_medoids(d, labels, greedy_medoids(d, labels, 1.0), 1.0)
    assert brute_objective(dl, refined.tolist(), y, 1.0) == pytest.approx(best, abs=1e-12)
    # ... and the maximum is the oracle's medoid set, with a perfect clustering
    assert sorted(refined.tolist()) == sorted(oracle_medoids(d, labels).tolist())
    assert best == pytest.approx(brute_oracle_score(dl, y), abs=1e-12)


# --- the loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("refine_steps", [0, 5])
@pytest.mark.parametrize("seed", range(4))
def test_loss_matches_loop(seed, refine_steps):
    x, labels, d = random_case(n=9, n_classes=3, seed=seed)
    dl, y = lists(d), labels.tolist()
    medoids = brute_greedy(dl, y, 1.0)
    medoids = brute_refine(dl, y, medoids, 1.0, refine_steps)
    expected = max(brute_objective(dl, medoids, y, 1.0) - brute_oracle_score(dl, y), 0.0)
    value = facility_location_loss(x, labels, 1.0, refine_steps=refine_steps)
    assert float(value) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("refine_steps", [0, 5])
@pytest.mark.parametrize("seed", range(4))
def test_loss_is_exactly_zero_on_separated_clusters(seed, refine_steps):
    x, labels = separated_case(n_classes=4, per_class=3, dim=6, seed=seed)
    x = x[torch.randperm(12, generator=torch.Generator().manual_seed(seed))]
    labels = labels[torch.randperm(12, generator=torch.Generator().manual_seed(seed))]
    value = facility_location_loss(x.float(), labels, 1.0, refine_steps=refine_steps)
    assert value.item() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_loss_is_positive_on_mixed_clusters(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)  # one blob, labels at random
    labels = torch.arange(3).repeat(4)[torch.randperm(12, generator=g)]
    assert float(facility_location_loss(x, labels)) > 0


def test_loss_margin_multiplier_zero_is_the_facility_gap():
    x, labels, d = random_case(n=9, n_classes=3, seed=1)
    dl, y = lists(d), labels.tolist()
    medoids = brute_refine(dl, y, brute_greedy(dl, y, 0.0), 0.0, 5)
    energy = brute_objective(dl, medoids, y, 0.0)
    expected = max(energy - brute_oracle_score(dl, y), 0.0)
    assert float(facility_location_loss(x, labels, 0.0)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_loss_gradients_are_finite_and_flow_through_distances(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(3).repeat(4)
    value = facility_location_loss(x, labels)
    value.backward()
    assert float(value.detach()) > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", range(2))
def test_gradcheck_loss_with_fixed_medoids(seed):
    """At a generic point the medoid sets do not change under a small step, so the gradient is
    that of the two facility scores with the medoids fixed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(2).repeat(4)
    assert float(facility_location_loss(x, labels)) > 0
    assert torch.autograd.gradcheck(
        lambda e: facility_location_loss(e, labels), (x.requires_grad_(),), eps=1e-6, atol=1e-5
    )


def test_duplicated_points_give_finite_values_and_gradients():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    value = facility_location_loss(x, torch.tensor([0, 1, 0, 1]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: facility_location_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
        lambda: facility_location_loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long)),
        lambda: facility_location_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), -1.0),
        lambda: facility_location_loss(
            torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), refine_steps=1.5
        ),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("seed", range(3))
def test_candidate_sets_match_assignment_and_energy_of_each_set(seed):
    from qlib.losses.baselines import _candidate_sets

    _, _, d = random_case(n=10, n_classes=3, seed=seed)
    d = d.clone()
    d[2, 7] = d[7, 2] = d[4, 7]  # a tie between two medoids for point 7
    medoids = torch.tensor([4, 2, 9])
    for position in range(4):  # replace each medoid, or append (position 3)
        assignment, energy = _candidate_sets(d, medoids, position)
        for j in range(10):
            if j in medoids.tolist():
                continue
            swapped = torch.cat([medoids[:position], torch.tensor([j]), medoids[position + 1 :]])
            assert assignment[j].tolist() == cluster_assignment(d, swapped).tolist()
            torch.testing.assert_close(energy[j], facility_energy(d, swapped))
