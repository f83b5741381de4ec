"""qlib.metrics against brute-force loops and scikit-learn (docs/spec.md "Evaluation")."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from qlib.metrics import (
    _kmeans_plus_plus,
    _lloyd,
    first_positive_rank,
    kmeans,
    nmi,
    recall_at_k,
    retrieval_metrics,
)


def brute_recall(x, labels, ks, squared_distance):
    """Sort the other samples by (distance, index); a hit when a top-K label matches."""
    n = len(labels)
    hits = {k: 0 for k in ks}
    for q in range(n):
        order = sorted((squared_distance(q, j), j) for j in range(n) if j != q)
        for k in ks:
            hits[k] += any(labels[j] == labels[q] for _, j in order[:k])
    return {k: hits[k] / n for k in ks}


def clustered(seed, n=300, dim=8, n_classes=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    centres = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
    x = centres[labels] + 0.9 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x.to(dtype), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed):
    x, labels = clustered(seed)
    xs = x.numpy()

    def squared(i, j):
        return float(((xs[i] - xs[j]) ** 2).sum())

    ks = (1, 2, 4, 8, 16)
    expected = brute_recall(xs, labels.tolist(), ks, squared)
    assert recall_at_k(x, labels, ks) == pytest.approx(expected, abs=0)
    assert 0.1 < expected[1] < 0.95  # not a trivial case


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recall_matches_scikit_learn_nearest_neighbors(dtype):
    x, labels = clustered(3, n=400, dtype=dtype)
    neighbours = NearestNeighbors(n_neighbors=9).fit(x.double().numpy())
    _, index = neighbours.kneighbors(x.double().numpy())
    assert (index[:, 0] == np.arange(400)).all()  # no duplicates: the query comes first
    y = labels.numpy()
    matches = y[index[:, 1:]] == y[:, None]
    expected = {k: float(matches[:, :k].any(1).mean()) for k in (1, 2, 4, 8)}
    assert recall_at_k(x, labels) == pytest.approx(expected, abs=0)


def test_chunk_size_does_not_change_recall():
    x, labels = clustered(4, dtype=torch.float32)
    reference = first_positive_rank(x, labels)
    for chunk in (1, 7, 64, 10_000):
        assert torch.equal(first_positive_rank(x, labels, chunk_size=chunk), reference)
        assert recall_at_k(x, labels, chunk_size=chunk) == recall_at_k(x, labels)


def test_duplicates_count_as_neighbours_and_ties_go_to_lowest_index():
    # Four identical points: the query is excluded by index, the others tie at distance 0.
    x = torch.zeros(4, 3)
    labels = torch.tensor([0, 0, 1, 1])
    # query 0 -> (1, 2, 3): 1 matches. query 2 -> (0, 1, 3): first match at rank 3.
    assert first_positive_rank(x, labels).tolist() == [1, 1, 3, 3]
    assert recall_at_k(x, labels, ks=(1, 2, 3)) == {1: 0.5, 2: 0.5, 3: 1.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_integer_grid_ties_match_brute_force(dtype):
    g = torch.Generator().manual_seed(7)
    grid = torch.randint(0, 3, (120, 2), generator=g)  # 9 distinct points: ties everywhere
    labels = torch.randint(0, 5, (120,), generator=g)
    points = grid.tolist()

    def squared(i, j):
        return sum((a - b) ** 2 for a, b in zip(points[i], points[j], strict=True))

    ks = (1, 2, 4, 8, 30)
    expected = brute_recall(points, labels.tolist(), ks, squared)
    assert recall_at_k(grid.to(dtype), labels, ks, chunk_size=17) == pytest.approx(expected, abs=0)


def test_any_label_values_and_class_sizes():
    # labels neither contiguous nor sorted, negative ids, one class far larger than the others
    x, labels = clustered(10, n=200, dim=4, n_classes=8)
    labels = torch.tensor([-3, 50, 7, 1000, 2, -40, 9, 11])[labels]
    labels[:80] = 7
    xs = x.numpy()

    def squared(i, j):
        return float(((xs[i] - xs[j]) ** 2).sum())

    ks = (1, 2, 4, 8)
    expected = brute_recall(xs, labels.tolist(), ks, squared)
    assert recall_at_k(x, labels, ks, chunk_size=13) == pytest.approx(expected, abs=0)


def test_query_without_positive_never_scores():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1], [9.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # sample 4 is alone in its class
    ranks = first_positive_rank(x, labels)
    assert ranks.tolist() == [1, 1, 1, 1, 5]
    assert recall_at_k(x, labels, ks=(1, 4)) == {1: 0.8, 4: 0.8}


def brute_lloyd(x, centres):
    """Lloyd's algorithm one point and one cluster at a time, until no assignment changes."""
    x, centres = x.tolist(), centres.tolist()
    assignment = None
    while True:
        new = [
            min(
                (sum((a - b) ** 2 for a, b in zip(p, c, strict=True)), i)
                for i, c in enumerate(centres)
            )[1]
            for p in x
        ]
        if new == assignment:
            return assignment
        assignment = new
        for i in range(len(centres)):
            members = [p for p, a in zip(x, assignment, strict=True) if a == i]
            if members:  # an empty cluster keeps its centre
                centres[i] = [sum(v) / len(members) for v in zip(*members, strict=True)]


def test_lloyd_matches_a_loop():
    x, _ = clustered(8, n=120, dim=3, n_classes=5)
    start = x[[0, 1, 2, 3, 4, 5]].clone()  # 6 clusters for 5 classes
    assignment, inertia = _lloyd(x, x.square().sum(1), start, max_iter=300)
    assert assignment.tolist() == brute_lloyd(x, start)
    assert inertia == pytest.approx(
        sum(
            float((x[assignment == c] - x[assignment == c].mean(0)).square().sum())
            for c in range(6)
        )
    )


def test_kmeans_plus_plus_spreads_its_centres():
    # four tight, far apart blobs: D^2 sampling puts one centre in each
    blobs = 100.0 * torch.eye(4, 3, dtype=torch.float64)
    x = blobs.repeat_interleave(25, 0) + 0.01 * torch.randn(100, 3, dtype=torch.float64)
    for seed in range(5):
        centres = _kmeans_plus_plus(x, x.square().sum(1), 4, torch.Generator().manual_seed(seed))
        nearest_blob = torch.cdist(centres, blobs).argmin(1)
        assert sorted(nearest_blob.tolist()) == [0, 1, 2, 3]
        assert (centres[:, None] == x[None]).all(2).any(1).all()  # centres are samples


def test_nmi_is_scikit_learn_score_of_the_kmeans_clusters():
    x, labels = clustered(5, n=240, n_classes=6)
    clusters = kmeans(x, 6, seed=3)
    expected = normalized_mutual_info_score(labels.numpy(), clusters.numpy())
    assert nmi(x, labels, seed=3) == pytest.approx(expected, abs=1e-12)
    assert nmi(x, labels, seed=3) == nmi(x, labels, seed=3)  # deterministic given the seed
    assert torch.equal(kmeans(x, 6, seed=3), clusters)

    separated = 100.0 * torch.eye(4).repeat_interleave(10, 0)
    separated_labels = torch.arange(4).repeat_interleave(10)
    assert nmi(separated, separated_labels) == pytest.approx(1.0)
    # label names do not matter
    assert nmi(separated, 7 * (3 - separated_labels)) == pytest.approx(1.0)


@pytest.mark.parametrize("n_init", [1, 3])
def test_kmeans_is_as_good_as_scikit_learn(n_init):
    x, _ = clustered(9, n=600, dim=16, n_classes=20, dtype=torch.float32)

    def inertia(clusters):
        return sum(
            float((x[clusters == c] - x[clusters == c].mean(0)).square().sum())
            for c in clusters.unique()
        )

    ours = [inertia(kmeans(x, 20, seed, n_init=n_init)) for seed in range(3)]
    theirs = [
        KMeans(n_clusters=20, n_init=n_init, random_state=seed).fit(x.double().numpy()).inertia_
        for seed in range(3)
    ]
    assert np.median(ours) <= 1.03 * np.median(theirs), (ours, theirs)


def test_retrieval_metrics_in_percent():
    x, labels = clustered(6, dtype=torch.float32)
    out = retrieval_metrics(x, labels)
    assert list(out) == ["R@1", "R@2", "R@4", "R@8", "NMI"]
    recalls = recall_at_k(x, labels)
    for k in (1, 2, 4, 8):
        assert out[f"R@{k}"] == pytest.approx(100 * recalls[k])
    assert out["NMI"] == pytest.approx(100 * nmi(x, labels))


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (torch.randn(5, 2), torch.tensor([0, 0, 1, 1]), {}, "5 embeddings but 4 labels"),
        (
            torch.randn(5),
            torch.zeros(5, dtype=torch.long),
            {},
            r"embeddings must have 2 dimension\(s\)",
        ),
        (
            torch.ones(5, 2, dtype=torch.long),
            torch.zeros(5, dtype=torch.long),
            {},
            "floating-point",
        ),
        (torch.randn(5, 2), torch.zeros(5), {}, "labels has dtype torch.float32"),
        (torch.randn(5, 2), torch.zeros(5, 1, dtype=torch.long), {}, "expected a 1-D tensor"),
        (torch.tensor([[0.0], [float("nan")], [1.0]]), torch.tensor([0, 0, 1]), {}, r"rows \[1\]"),
        (torch.tensor([[0.0], [1.0], [float("inf")]]), torch.tensor([0, 0, 1]), {}, r"rows \[2\]"),
        (torch.randn(1, 2), torch.zeros(1, dtype=torch.long), {}, "expected at least 2"),
        (torch.randn(5, 2), torch.tensor([0, 0, 1, 1, 2]), {"ks": (1, 5)}, "K = 5 needs more"),
        (torch.randn(5, 2), torch.tensor([0, 0, 1, 1, 2]), {"ks": (0,)}, "expected positive ints"),
        (torch.randn(5, 2), torch.tensor([0, 0, 1, 1, 2]), {"ks": ()}, "ks is empty"),
        (
            torch.randn(5, 2),
            torch.tensor([0, 0, 1, 1, 2]),
            {"ks": (1,), "chunk_size": 0},
            "chunk_size must be an int >= 1",
        ),
    ],
)
def test_recall_bad_input(embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(embeddings, labels, **kwargs)


def test_recall_checks_ks_before_the_distance_pass(monkeypatch):
    monkeypatch.setattr("qlib.metrics._first_positive_rank", lambda *args: pytest.fail("ranked"))
    with pytest.raises(ValueError, match="ks is empty"):
        recall_at_k(torch.randn(5, 2), torch.tensor([0, 0, 1, 1, 2]), ks=())


def test_nmi_bad_input():
    x = torch.randn(6, 2)
    with pytest.raises(ValueError, match="single class"):
        nmi(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        nmi(x, torch.tensor([0, 0, 0, 1, 1, 1]), seed=-1)
    with pytest.raises(ValueError, match="6 embeddings but 5 labels"):
        nmi(x, torch.tensor([0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="NaN or inf"):
        nmi(torch.full((6, 2), float("nan")), torch.tensor([0, 0, 0, 1, 1, 1]))
