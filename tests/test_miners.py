"""qlib.miners against brute-force Python loops (docs/spec.md "Quadruplet selection"), and the
fast Bank against the reference select_quadruplets."""

import numpy as np
import pytest
import torch

from qlib.miners import (
    METHODS,
    Bank,
    hardest_negative,
    method1_key,
    method2_key,
    pick_outside_sphere,
    sample_anchors,
    select_quadruplets,
    valid_anchors,
)


def cuda(test):
    return pytest.mark.cuda(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test)
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


def brute_select(fine, coarse, anchors, method, distance):
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


def select_every_way(bank, fine, coarse, anchors, method, seed=0, chunk_size=None):
    """(quadruplets, fallbacks) from the reference and from Bank, whose Method 1 key is computed
    per coarse class (the CPU's way) and from the whole bank (the GPU's way): all must agree."""
    reference = select_quadruplets(
        bank,
        fine,
        coarse,
        anchors,
        method,
        torch.Generator().manual_seed(seed),
        return_fallbacks=True,
        chunk_size=chunk_size,
    )
    fast = Bank(bank, fine, coarse, chunk_size=chunk_size)
    for by_class in (True, False):
        fast.method1_by_class = by_class
        got = fast.select(anchors, method, torch.Generator().manual_seed(seed))
        assert torch.equal(got[0], reference[0]), (method, by_class)
        assert torch.equal(got[1], reference[1]), (method, by_class)
    return reference


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
    assert Bank(torch.randn(60, 2), fine, coarse).valid.tolist() == expected
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


@pytest.mark.parametrize("n", [5, 10_000])
def test_bank_sample_anchors_draws_as_sample_anchors(n):
    bank, fine, coarse, _ = hierarchical_bank(1)
    fast = Bank(bank, fine, coarse)
    expected = sample_anchors(valid_anchors(fine, coarse), n, torch.Generator().manual_seed(4))
    assert torch.equal(fast.sample_anchors(n, torch.Generator().manual_seed(4)), expected)


def test_sample_anchors_bad_input():
    with pytest.raises(ValueError, match="no sample can anchor"):
        sample_anchors(torch.zeros(5, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="bool mask"):
        sample_anchors(torch.ones(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        sample_anchors(torch.ones(5, dtype=torch.bool), -1)


# --------------------------------------------------------------------------------------------
# Section 3.3's functions, on hand-made rows
# --------------------------------------------------------------------------------------------
def test_named_functions_on_one_row():
    # D(R, j) for 6 samples; samples 0-3 share R's coarse class; 4 and 5 do not.
    d = torch.tensor([[0.0, 2.0, 5.0, 3.0, 4.0, 4.0]])
    same_coarse = torch.tensor([[True, True, True, True, False, False]])
    negative = hardest_negative(d, same_coarse)
    assert negative.tolist() == [4]  # 4 and 5 tie: the lowest index
    radius = d.gather(1, negative[:, None])
    key = torch.tensor([[9.0, 1.0, 7.0, 7.0, 0.0, 0.0]])  # e.g. the distance to N
    candidates = torch.tensor([[False, True, True, True, False, False]])
    pick, fell = pick_outside_sphere(candidates, d, radius, key)
    assert pick.tolist() == [2] and fell.tolist() == [False]  # only 2 lies outside (5 > 4)
    inside = torch.tensor([[False, True, False, True, False, False]])  # all within radius 4
    pick, fell = pick_outside_sphere(inside, d, radius, key)
    assert pick.tolist() == [3] and fell.tolist() == [True]  # the farthest from R
    assert method2_key(d) is d


def test_method1_key_is_the_distance_to_the_negative():
    bank, *_ = hierarchical_bank(2, n=30)
    norms = bank.square().sum(1)
    negatives = torch.tensor([4, 17])
    key = method1_key(bank, norms, negatives)
    exact = torch.cdist(bank[negatives], bank).square() - norms[negatives, None]
    assert torch.allclose(key, exact, atol=1e-9)


# --------------------------------------------------------------------------------------------
# method1 / method2 against brute force, every code path
# --------------------------------------------------------------------------------------------
def test_hand_computed_one_dimensional_example():
    # R at 0; N at 2 (D = 2). P+ candidates at 3 (D 3), -2.5 (D 2.5), 0.5 (inside).
    # P- candidates at 1 and -1.5: all inside the sphere, so the farthest, -1.5, is the fallback.
    points = [0.0, 3.0, -2.5, 0.5, 1.0, -1.5, 2.0, 5.0]
    fine = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    coarse = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    bank = torch.tensor(points)[:, None]
    q1, fb1 = select_every_way(bank, fine, coarse, torch.tensor([0]), "method1")
    q2, fb2 = select_every_way(bank, fine, coarse, torch.tensor([0]), "method2")
    assert q1.tolist() == [[0, 1, 5, 6]]  # 3.0 is closest to N
    assert q2.tolist() == [[0, 2, 5, 6]]  # -2.5 is closest to R
    assert fb1.tolist() == fb2.tolist() == [[False, True]]


@pytest.mark.parametrize("method", ["method1", "method2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_methods_match_brute_force(method, seed, dtype):
    bank, fine, coarse, g = hierarchical_bank(seed, dtype=dtype)
    anchors = sample_anchors(valid_anchors(fine, coarse), 300, g)  # with replacement
    quads, fallbacks = select_every_way(bank, fine, coarse, anchors, method)
    expected, expected_fallbacks = brute_select(
        fine.tolist(), coarse.tolist(), anchors.tolist(), method, exact_float_distance(bank)
    )
    assert quads.dtype == torch.long and quads.shape == (300, 4)
    assert quads.tolist() == expected
    assert fallbacks.tolist() == expected_fallbacks
    # The data exercise both branches for both columns.
    counts = fallbacks.sum(0).tolist()
    assert all(0 < c < 300 for c in counts), counts


@pytest.mark.parametrize("method", ["method1", "method2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_on_integer_grid_go_to_lowest_index(method, dtype):
    g = torch.Generator().manual_seed(5)
    n = 150
    grid = torch.randint(0, 3, (n, 3), generator=g)  # few distinct points: many exact ties
    fine = torch.randint(0, 12, (n,), generator=g)
    coarse = fine % 4
    anchors = valid_anchors(fine, coarse).nonzero().flatten()
    x = grid.tolist()

    def squared(i, j):  # exact integer arithmetic; ordering equals that of the distance
        return sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True))

    quads, fallbacks = select_every_way(grid.to(dtype), fine, coarse, anchors, method)
    expected, expected_fallbacks = brute_select(
        fine.tolist(), coarse.tolist(), anchors.tolist(), method, squared
    )
    assert quads.tolist() == expected
    assert fallbacks.tolist() == expected_fallbacks
    # Ties did happen: several negatives share the minimum distance for most anchors.
    tied = 0
    for r, *_, neg in expected:
        d_neg = squared(r, neg)
        tied += sum(1 for j in range(n) if coarse[j] != coarse[r] and squared(r, j) == d_neg) > 1
    assert tied > len(expected) // 2


@pytest.mark.parametrize("method", METHODS)
def test_any_label_values_and_order(method):
    # Labels that are neither contiguous nor sorted, negative ids, classes of very unequal size
    # (so that windows are moved left at the end of the bank), in float32.
    bank, fine, coarse, g = hierarchical_bank(6, n=200, dtype=torch.float32)
    coarse = torch.tensor([-7, 40, 3, 1000, 12, 5])[coarse]
    coarse[fine < 8] = 12  # one large class, not the last: later windows start before their class
    fine = 13 * fine - 50
    permutation = torch.randperm(200, generator=g)
    bank, fine, coarse = bank[permutation], fine[permutation], coarse[permutation]
    anchors = sample_anchors(valid_anchors(fine, coarse), 150, g)
    quads, _ = select_every_way(bank, fine, coarse, anchors, method, seed=3)
    if method != "random":
        expected, _ = brute_select(
            fine.tolist(), coarse.tolist(), anchors.tolist(), method, exact_float_distance(bank)
        )
        assert quads.tolist() == expected


# --------------------------------------------------------------------------------------------
# random
# --------------------------------------------------------------------------------------------
def test_random_respects_every_constraint():
    bank, fine, coarse, g = hierarchical_bank(3)
    anchors = sample_anchors(valid_anchors(fine, coarse), 500, g)
    quads, fallbacks = select_every_way(bank, fine, coarse, anchors, "random", seed=1)
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
    quads, _ = select_every_way(bank, fine, coarse, anchors, "random", seed=1, chunk_size=1000)
    for column, candidates in ((1, [1, 2, 3]), (2, [4, 5, 6]), (3, [7, 8, 9, 10])):
        picked, counts = torch.unique(quads[:, column], return_counts=True)
        assert picked.tolist() == candidates
        expected = draws / len(candidates)
        assert (counts.double() - expected).abs().max() < 0.1 * expected


def test_random_is_deterministic_given_the_generator():
    bank, fine, coarse, g = hierarchical_bank(6)
    anchors = sample_anchors(valid_anchors(fine, coarse), 100, g)
    fast = Bank(bank, fine, coarse)

    def run(seed):
        return fast.select(anchors, "random", torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


# --------------------------------------------------------------------------------------------
# chunking, precision, inputs, devices
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_chunk_size_does_not_change_results(method):
    bank, fine, coarse, g = hierarchical_bank(4, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 200, g)
    reference = select_every_way(bank, fine, coarse, anchors, method, seed=9)
    for chunk in (1, 7, 64, 1000):
        result = select_every_way(bank, fine, coarse, anchors, method, seed=9, chunk_size=chunk)
        assert torch.equal(result[0], reference[0]) and torch.equal(result[1], reference[1])


@pytest.mark.parametrize("method", METHODS)
def test_autocast_does_not_round_the_distances(method):
    # A trainer may call selection under autocast: bfloat16 distances would change the picks.
    bank, fine, coarse, g = hierarchical_bank(10, n=400, dim=32, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 100, g)
    expected = select_every_way(bank, fine, coarse, anchors, method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = select_every_way(bank, fine, coarse, anchors, method)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_inputs_as_lists_and_numpy_and_half_precision():
    bank, fine, coarse, g = hierarchical_bank(7, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 20, g)
    reference = select_quadruplets(bank, fine, coarse, anchors, "method2")
    from_numpy = select_quadruplets(
        bank.numpy(), fine.numpy(), coarse.tolist(), anchors.tolist(), "method2"
    )
    assert torch.equal(reference, from_numpy)
    fast = Bank(bank.numpy(), fine.numpy(), coarse.tolist())
    assert torch.equal(fast.select(anchors.tolist(), "method2")[0], reference)
    # half precision is upcast to float32 (same rounded values -> the float32 answer)
    half = bank.half()
    assert torch.equal(
        select_quadruplets(half, fine, coarse, anchors, "method2"),
        select_quadruplets(half.float(), fine, coarse, anchors, "method2"),
    )
    assert select_quadruplets(bank, fine, coarse, anchors[:0], "method1").shape == (0, 4)
    quads, fallbacks = Bank(bank, fine, coarse).select(anchors[:0], "method1")
    assert quads.shape == (0, 4) and fallbacks.shape == (0, 2)


def test_bank_that_requires_grad_is_read_without_building_a_graph():
    bank, fine, coarse, g = hierarchical_bank(9, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 10, g)
    leaf = bank.clone().requires_grad_(True)
    quads = select_quadruplets(leaf, fine, coarse, anchors, "method1")
    assert not quads.requires_grad
    assert torch.equal(quads, select_quadruplets(bank, fine, coarse, anchors, "method1"))
    assert torch.equal(Bank(leaf, fine, coarse).select(anchors, "method1")[0], quads)


@cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    bank, fine, coarse, g = hierarchical_bank(8, dtype=torch.float32)
    anchors = sample_anchors(valid_anchors(fine, coarse), 100, g)
    cpu = select_every_way(bank, fine, coarse, anchors, method)
    cuda_args = (bank.cuda(), fine.cuda(), coarse.cuda(), anchors.cuda(), method)
    reference = select_quadruplets(
        *cuda_args, torch.Generator().manual_seed(0), return_fallbacks=True
    )
    fast = Bank(*cuda_args[:3]).select(anchors.cuda(), method, torch.Generator().manual_seed(0))
    for got in (reference, fast):
        assert got[0].is_cuda and torch.equal(got[0].cpu(), cpu[0])
        assert torch.equal(got[1].cpu(), cpu[1])


@cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_select_never_waits_for_the_device_and_ignores_tf32(method):
    bank, fine, coarse, g = hierarchical_bank(11, n=2000, dim=64, dtype=torch.float32)
    expected_anchors = sample_anchors(valid_anchors(fine, coarse), 64, torch.Generator())
    expected = select_every_way(bank, fine, coarse, expected_anchors, method)
    fast = Bank(bank.cuda(), fine.cuda(), coarse.cuda())  # building may synchronise
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.cuda.set_sync_debug_mode("error")
    try:
        anchors = fast.sample_anchors(64, torch.Generator())
        quads, fallbacks = fast.select(anchors, method, torch.Generator().manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.backends.cuda.matmul.fp32_precision = previous
    assert torch.equal(anchors.cpu(), expected_anchors)
    assert torch.equal(quads.cpu(), expected[0]) and torch.equal(fallbacks.cpu(), expected[1])


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


BANK_ERRORS = [
    ({"bank": torch.randn(6, 3)}, "bank has 6 rows but there are 7 labels"),
    ({"coarse": torch.tensor([0, 0, 0, 0, 1, 1])}, "fine has 7 labels but coarse has 6"),
    ({"bank": _nan_bank()}, r"bank rows \[3\] hold NaN or inf"),
    ({"bank": _inf_bank()}, r"rows \[5\] hold NaN or inf"),
    ({"bank": torch.full((7, 3), 1e30)}, "too large to square"),
    ({"bank": torch.ones(7, 3, dtype=torch.long)}, "bank must be a floating-point tensor"),
    ({"bank": torch.randn(7)}, r"bank must have 2 dimension\(s\), got shape \(7,\)"),
    ({"fine": torch.tensor([0.0, 0, 1, 1, 2, 2, 3])}, "fine has dtype torch.float32"),
    ({"coarse": torch.zeros(7, dtype=torch.bool)}, "coarse has dtype torch.bool"),
    ({"fine": torch.zeros(7, 1, dtype=torch.long)}, "expected a 1-D tensor"),
    (
        {"fine": torch.tensor([0, 0, 1, 1, 2, 2, 0])},
        r"fine classes \[0\] appear under more than one coarse class",
    ),
    ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
]
SELECT_ERRORS = [
    ({"method": "hardest"}, "method is 'hardest'; expected one of"),
    ({"anchors": torch.tensor([0.0])}, "anchors has dtype"),
    ({"anchors": torch.tensor([[0]])}, "anchors has shape"),
    ({"anchors": torch.tensor([0, 7])}, r"anchors at positions \[1\] are \[7\], outside"),
    ({"anchors": torch.tensor([-1])}, "outside the bank"),
    ({"anchors": torch.tensor([0, 6])}, r"bank index 6.*no other sample \(no P\+\)"),
    ({"anchors": torch.tensor([4])}, r"bank index 4.*no other fine class \(no P-\)"),
    ({"coarse": torch.zeros(7, dtype=torch.long)}, "no sample can anchor"),
    ({"method": "random", "generator": 3}, "expected a torch.Generator"),
]


@pytest.mark.parametrize(("changes", "message"), BANK_ERRORS + SELECT_ERRORS)
def test_bad_input_raises_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        select_quadruplets(**_with(**changes))


@pytest.mark.parametrize(("changes", "message"), BANK_ERRORS + SELECT_ERRORS)
def test_bank_bad_input_raises_value_error(changes, message):
    args = _with(**changes)
    with pytest.raises(ValueError, match=message):
        fast = Bank(args["bank"], args["fine"], args["coarse"], chunk_size=args.get("chunk_size"))
        fast.select(args["anchors"], args["method"], args.get("generator"))


def test_valid_anchors_bad_input():
    with pytest.raises(ValueError, match="fine has 3 labels but coarse has 2"):
        valid_anchors(torch.tensor([0, 0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="expected an integer tensor"):
        valid_anchors(torch.tensor([0.5, 1.0]), torch.tensor([0, 0]))
