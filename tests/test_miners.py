"""qlib.miners against brute-force Python loops (docs/spec.md "Quadruplet selection")."""

import numpy as np
import pytest
import torch

from qlib import miners
from qlib.miners import (
    METHODS,
    count_fallbacks,
    sample_anchors,
    select_quadruplets,
    valid_anchors,
)


# --------------------------------------------------------------------------------------------
# brute force: one anchor at a time, lists and min/max over (key, index) tuples
# --------------------------------------------------------------------------------------------
def brute_valid(fine, coarse):
    n = len(fine)
    out = []
    for r in range(n):
        has_pos = any(fine[j] == fine[r] and j != r for j in range(n))
        has_posneg = any(coarse[j] == coarse[r] and fine[j] != fine[r] for j in range(n))
        has_neg = any(coarse[j] != coarse[r] for j in range(n))
        out.append(has_pos and has_posneg and has_neg)
    return out


def brute_select(bank, fine, coarse, anchors, method, distance):
    """Quadruplets and fallbacks, one anchor at a time; distance(i, j) is exact for the bank."""
    n = len(fine)
    quads, fallbacks = [], []
    for r in anchors:
        d = [distance(r, j) for j in range(n)]
        negative = min((d[j], j) for j in range(n) if coarse[j] != coarse[r])[1]
        row, fell = [r], []
        positives = [j for j in range(n) if fine[j] == fine[r] and j != r]
        posnegs = [j for j in range(n) if coarse[j] == coarse[r] and fine[j] != fine[r]]
        for candidates in (positives, posnegs):
            outside = [j for j in candidates if d[j] > d[negative]]
            if not outside:
                row.append(min((-d[j], j) for j in candidates)[1])  # farthest from R
                fell.append(True)
            elif method == "method1":
                row.append(min((distance(negative, j), j) for j in outside)[1])
                fell.append(False)
            else:
                row.append(min((d[j], j) for j in outside)[1])
                fell.append(False)
        row.append(negative)
        quads.append(row)
        fallbacks.append(fell)
    return quads, fallbacks


def hierarchical_bank(seed, n=240, dim=6, n_fine=24, n_coarse=6, dtype=torch.float64):
    """Clustered bank whose tightness varies per fine class, so some picks fall back."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, n_fine, (n,), generator=g)
    coarse = fine % n_coarse
    coarse_centres = 3.0 * torch.randn(n_coarse, dim, generator=g, dtype=torch.float64)
    fine_centres = 1.5 * torch.randn(n_fine, dim, generator=g, dtype=torch.float64)
    spread = torch.rand(n_fine, generator=g, dtype=torch.float64) * 2.0 + 0.05
    noise = torch.randn(n, dim, generator=g, dtype=torch.float64) * spread[fine, None]
    bank = coarse_centres[coarse] + fine_centres[fine] + noise
    return bank.to(dtype), fine, coarse, g


def exact_float_distance(bank):
    x = bank.double().numpy()
    return lambda i, j: float(np.sqrt(((x[i] - x[j]) ** 2).sum()))


LAYOUTS = {"grouped": ("cpu",), "dense": ()}  # values for miners._GROUPED_DEVICES


def select_both_layouts(monkeypatch, *args, **kwargs):
    """select_quadruplets on CPU through both code paths (per coarse group, whole bank); the two
    must agree, and the grouped result is returned."""
    generator = kwargs.get("generator", args[5] if len(args) > 5 else None)
    state = generator.get_state() if generator is not None else None
    results = {}
    for name, devices in LAYOUTS.items():
        monkeypatch.setattr(miners, "_GROUPED_DEVICES", devices)
        monkeypatch.setattr(miners, "_GROUPED_MIN_ROWS", 1)  # even one-anchor chunks
        if generator is not None:
            generator.set_state(state)  # the same draws for both paths
        results[name] = select_quadruplets(*args, **kwargs)
    grouped, dense = results["grouped"], results["dense"]
    if isinstance(grouped, tuple):
        assert all(torch.equal(a, b) for a, b in zip(grouped, dense, strict=True))
    else:
        assert torch.equal(grouped, dense)
    return grouped


# --------------------------------------------------------------------------------------------
# valid_anchors / sample_anchors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_valid_anchors_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, 30, (60,), generator=g)  # many singletons
    coarse = fine % 7
    coarse[fine == 3] = 100  # a coarse class with one fine class: no P-
    expected = brute_valid(fine.tolist(), coarse.tolist())
    assert valid_anchors(fine, coarse).tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_valid_anchors_single_coarse_class_has_no_negative():
    fine = torch.tensor([0, 0, 1, 1])
    assert not valid_anchors(fine, torch.zeros(4, dtype=torch.long)).any()


def test_sample_anchors_without_and_with_replacement():
    valid = torch.tensor([True, False, True, True, False, True])
    g = torch.Generator().manual_seed(0)
    few = sample_anchors(valid, 4, g)
    assert sorted(few.tolist()) == [0, 2, 3, 5]  # without replacement: each once
    many = sample_anchors(valid, 400, g)
    assert many.dtype == torch.long and many.shape == (400,)
    assert set(many.tolist()) == {0, 2, 3, 5}
    first = sample_anchors(valid, 400, torch.Generator().manual_seed(3))
    assert torch.equal(sample_anchors(valid, 400, torch.Generator().manual_seed(3)), first)


def test_sample_anchors_bad_input():
    with pytest.raises(ValueError, match="no sample can anchor"):
        sample_anchors(torch.zeros(5, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="bool mask"):
        sample_anchors(torch.ones(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="non-negative int"):
        sample_anchors(torch.ones(5, dtype=torch.bool), -1)


# --------------------------------------------------------------------------------------------
# method1 / method2 against brute force
# --------------------------------------------------------------------------------------------
def test_hand_computed_one_dimensional_example(monkeypatch):
    # R at 0; N at 2 (D = 2). P+ candidates at 3 (D 3), -2.5 (D 2.5), 0.5 (inside).
    # P- candidates at 1 and -1.5: all inside the sphere, so the farthest, -1.5, is the fallback.
    points = [0.0, 3.0, -2.5, 0.5, 1.0, -1.5, 2.0, 5.0]
    fine = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    coarse = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    bank = torch.tensor(points)[:, None]
    q1, fb1 = select_both_layouts(
        monkeypatch, bank, fine, coarse, [0], "method1", return_fallbacks=True
    )
    q2, fb2 = select_both_layouts(
        monkeypatch, bank, fine, coarse, [0], "method2", return_fallbacks=True
    )
    assert q1.tolist() == [[0, 1, 5, 6]]  # 3.0 is closest to N
    assert q2.tolist() == [[0, 2, 5, 6]]  # -2.5 is closest to R
    assert fb1.tolist() == fb2.tolist() == [[False, True]]
    assert count_fallbacks(fb1) == {"P+": 0, "P-": 1}


@pytest.mark.parametrize("method", ["method1", "method2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_methods_match_brute_force(method, seed, dtype, monkeypatch):
    bank, fine, coarse, g = hierarchical_bank(seed, dtype=dtype)
    anchors = sample_anchors(valid_anchors(fine, coarse), 300, g)  # with replacement
    quads, fallbacks = select_both_layouts(
        monkeypatch, bank, fine, coarse, anchors, method, return_fallbacks=True
    )
    expected, expected_fallbacks = brute_select(
        bank, fine.tolist(), coarse.tolist(), anchors.tolist(), method, exact_float_distance(bank)
    )
    assert quads.dtype == torch.long and quads.shape == (300, 4)
    assert quads.tolist() == expected
    assert fallbacks.tolist() == expected_fallbacks
    # The data exercise both branches for both columns.
    counts = fallbacks.sum(0).tolist()
    assert all(0 < c < 300 for c in counts), counts


@pytest.mark.parametrize("method", ["method1", "method2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_on_integer_grid_go_to_lowest_index(method, dtype, monkeypatch):
    g = torch.Generator().manual_seed(5)
    n = 150
    grid = torch.randint(0, 3, (n, 3), generator=g)  # few distinct points: many exact ties
    fine = torch.randint(0, 12, (n,), generator=g)
    coarse = fine % 4
    anchors = valid_anchors(fine, coarse).nonzero().flatten()
    x = grid.tolist()

    def squared(i, j):  # exact integer arithmetic; ordering equals that of the distance
        return sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True))

    quads, fallbacks = select_both_layouts(
        monkeypatch, grid.to(dtype), fine, coarse, anchors, method, return_fallbacks=True
    )
    expected, expected_fallbacks = brute_select(
        None, fine.tolist(), coarse.tolist(), anchors.tolist(), method, squared
    )
    assert quads.tolist() == expected
    assert fallbacks.tolist() == expected_fallbacks
    # Ties did happen: several negatives share the minimum distance for most anchors.
    tied = 0
    for r, *_, neg in expected:
        d_neg = squared(r, neg)
        tied += sum(1 for j in range(n) if coarse[j] != coarse[r] and squared(r, j) == d_neg) > 1
    assert tied > len(expected) // 2


# --------------------------------------------------------------------------------------------
# random
# --------------------------------------------------------------------------------------------
def test_random_respects_every_constraint():
    bank, fine, coarse, g = hierarchical_bank(3)
    anchors = sample_anchors(valid_anchors(fine, coarse), 500, g)
    quads, fallbacks = select_quadruplets(
        bank, fine, coarse, anchors, "random", g, return_fallbacks=True
    )
    r, pos, posneg, neg = quads.T
    assert torch.equal(r, anchors)
    assert (fine[pos] == fine[r]).all() and (pos != r).all()
    assert (coarse[posneg] == coarse[r]).all() and (fine[posneg] != fine[r]).all()
    assert (coarse[neg] != coarse[r]).all()
    assert not fallbacks.any()


def test_random_covers_each_candidate_set_uniformly():
    fine = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 4])
    coarse = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    bank = torch.randn(11, 2, generator=torch.Generator().manual_seed(0))
    draws = 6000
    anchors = torch.zeros(draws, dtype=torch.long)  # anchor 0, fine 0, coarse 0
    quads = select_quadruplets(
        bank, fine, coarse, anchors, "random", torch.Generator().manual_seed(1), chunk_size=1000
    )
    for column, candidates in ((1, [1, 2, 3]), (2, [4, 5, 6]), (3, [7, 8, 9, 10])):
        picked, counts = torch.unique(quads[:, column], return_counts=True)
        assert picked.tolist() == candidates
        expected = draws / len(candidates)
        assert (counts.double() - expected).abs().max() < 0.1 * expected


# --------------------------------------------------------------------------------------------
# chunking, determinism, devices
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_chunk_size_does_not_change_results(method, monkeypatch):
    bank, fine, coarse, g = hierarchical_bank(4, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 200, g)
    results = [
        select_both_layouts(
            monkeypatch,
            bank,
            fine,
            coarse,
            anchors,
            method,
            torch.Generator().manual_seed(9),
            return_fallbacks=True,
            chunk_size=chunk,
        )
        for chunk in (None, 1, 7, 64, 1000)
    ]
    for quads, fallbacks in results[1:]:
        assert torch.equal(quads, results[0][0])
        assert torch.equal(fallbacks, results[0][1])


def test_random_is_deterministic_given_the_generator():
    bank, fine, coarse, g = hierarchical_bank(6)
    anchors = sample_anchors(valid_anchors(fine, coarse), 100, g)

    def run(seed):
        return select_quadruplets(
            bank, fine, coarse, anchors, "random", torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_inputs_as_lists_and_numpy_and_half_precision():
    bank, fine, coarse, g = hierarchical_bank(7, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 20, g)
    reference = select_quadruplets(bank, fine, coarse, anchors, "method2")
    from_numpy = select_quadruplets(
        bank.numpy(), fine.numpy(), coarse.tolist(), anchors.tolist(), "method2"
    )
    assert torch.equal(reference, from_numpy)
    # half precision is upcast to float32 (same rounded values -> the float32 answer)
    half = bank.half()
    assert torch.equal(
        select_quadruplets(half, fine, coarse, anchors, "method2"),
        select_quadruplets(half.float(), fine, coarse, anchors, "method2"),
    )
    assert select_quadruplets(bank, fine, coarse, anchors[:0], "method1").shape == (0, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    bank, fine, coarse, g = hierarchical_bank(8, dtype=torch.float64)
    anchors = sample_anchors(valid_anchors(fine, coarse), 100, g)
    cpu = select_quadruplets(bank, fine, coarse, anchors, method, torch.Generator().manual_seed(0))
    cuda = select_quadruplets(
        bank.cuda(),
        fine.cuda(),
        coarse.cuda(),
        anchors.cuda(),
        method,
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(cpu, cuda.cpu())


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def _good():
    fine = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    coarse = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    bank = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    return bank, fine, coarse, torch.tensor([0, 2])


def _with(**changes):
    bank, fine, coarse, anchors = _good()
    args = {"bank": bank, "fine": fine, "coarse": coarse, "anchors": anchors, "method": "method1"}
    args.update(changes)
    return args


def _nan_bank():
    bank = _good()[0].clone()
    bank[3, 1] = float("nan")
    return bank


def _inf_bank():
    bank = _good()[0].clone()
    bank[5, 0] = float("inf")
    return bank


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "hardest"}, "method is 'hardest'; expected one of"),
        ({"bank": torch.randn(6, 3)}, "bank has 6 rows but there are 7 labels"),
        ({"coarse": torch.tensor([0, 0, 0, 0, 1, 1])}, "fine has 7 labels but coarse has 6"),
        ({"bank": _nan_bank()}, r"rows \[3\] hold NaN or inf"),
        ({"bank": _inf_bank()}, r"rows \[5\] hold NaN or inf"),
        ({"bank": torch.full((7, 3), 1e30)}, "too large"),
        ({"bank": torch.ones(7, 3, dtype=torch.long)}, "expected a floating-point tensor"),
        ({"bank": torch.randn(7)}, r"expected a 2-D tensor \(N, d\)"),
        ({"fine": torch.tensor([0.0, 0, 1, 1, 2, 2, 3])}, "fine has dtype torch.float32"),
        ({"coarse": torch.zeros(7, dtype=torch.bool)}, "coarse has dtype torch.bool"),
        ({"fine": torch.zeros(7, 1, dtype=torch.long)}, "expected a 1-D tensor"),
        ({"anchors": torch.tensor([0.0])}, "anchors has dtype"),
        ({"anchors": torch.tensor([[0]])}, "anchors has shape"),
        ({"anchors": torch.tensor([0, 7])}, r"anchors at positions \[1\] are \[7\], outside"),
        ({"anchors": torch.tensor([-1])}, "outside the bank"),
        ({"anchors": torch.tensor([0, 6])}, r"bank index 6.*no other sample \(no P\+\)"),
        ({"anchors": torch.tensor([4])}, r"bank index 4.*no other fine class \(no P-\)"),
        (
            {"fine": torch.tensor([0, 0, 1, 1, 2, 2, 0])},
            r"fine classes \[0\] appear under more than one coarse class",
        ),
        ({"coarse": torch.zeros(7, dtype=torch.long)}, "no sample can anchor"),
        ({"chunk_size": 0}, "chunk_size is 0"),
        ({"method": "random", "generator": 3}, "expected a torch.Generator"),
    ],
)
def test_bad_input_raises_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        select_quadruplets(**_with(**changes))


def test_valid_anchors_bad_input():
    with pytest.raises(ValueError, match="fine has 3 labels but coarse has 2"):
        valid_anchors(torch.tensor([0, 0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="expected an integer tensor"):
        valid_anchors(torch.tensor([0.5, 1.0]), torch.tensor([0, 0]))


def test_bank_that_requires_grad_is_read_without_building_a_graph():
    bank, fine, coarse, g = hierarchical_bank(9, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 10, g)
    leaf = bank.clone().requires_grad_(True)
    quads = select_quadruplets(leaf, fine, coarse, anchors, "method1")
    assert not quads.requires_grad
    assert torch.equal(quads, select_quadruplets(bank, fine, coarse, anchors, "method1"))
