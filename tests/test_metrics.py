"""qlib.metrics against brute-force loops and scikit-learn (docs/spec.md "Evaluation")."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from qlib.metrics import first_positive_rank, nmi, recall_at_k, retrieval_metrics


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


def test_query_without_positive_never_scores():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1], [9.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # sample 4 is alone in its class
    ranks = first_positive_rank(x, labels)
    assert ranks.tolist() == [1, 1, 1, 1, 5]
    assert recall_at_k(x, labels, ks=(1, 4)) == {1: 0.8, 4: 0.8}


def test_nmi_matches_scikit_learn_and_is_one_on_separated_clusters():
    x, labels = clustered(5, n=240, n_classes=6)
    clusters = KMeans(n_clusters=6, n_init=1, random_state=3).fit_predict(x.numpy())
    expected = normalized_mutual_info_score(labels.numpy(), clusters, average_method="arithmetic")
    value = nmi(x, labels, seed=3)
    assert value == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= value <= 1.0
    assert nmi(x, labels, seed=3) == value  # deterministic given the seed

    separated = 100.0 * torch.eye(4).repeat_interleave(10, 0)
    separated_labels = torch.arange(4).repeat_interleave(10)
    assert nmi(separated, separated_labels) == pytest.approx(1.0)
    # label names do not matter
    assert nmi(separated, 7 * (3 - separated_labels)) == pytest.approx(1.0)


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
        (torch.randn(5), torch.zeros(5, dtype=torch.long), {}, r"expected a 2-D tensor \(N, d\)"),
        (torch.ones(5, 2, dtype=torch.long), torch.zeros(5, dtype=torch.long), {}, "floating"),
        (torch.randn(5, 2), torch.zeros(5), {}, "labels have dtype torch.float32"),
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
            "chunk_size is 0",
        ),
    ],
)
def test_recall_bad_input(embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(embeddings, labels, **kwargs)


def test_nmi_bad_input():
    x = torch.randn(6, 2)
    with pytest.raises(ValueError, match="single class"):
        nmi(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="seed is -1"):
        nmi(x, torch.tensor([0, 0, 0, 1, 1, 1]), seed=-1)
    with pytest.raises(ValueError, match="6 embeddings but 5 labels"):
        nmi(x, torch.tensor([0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="NaN or inf"):
        nmi(torch.full((6, 2), float("nan")), torch.tensor([0, 0, 0, 1, 1, 1]))
