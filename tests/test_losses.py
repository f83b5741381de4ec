"""qlib.losses.paper (eq. 1-6, QuadrupletLoss) against hand-computed values, brute-force Python
loops and gradcheck (float64). The baselines are in test_losses_baselines.py."""

import math

import pytest
import torch

from qlib.losses import (
    LossOutput,
    QuadrupletLoss,
    classification_loss,
    combined_loss,
    contrastive_loss,
    global_loss,
    joint_loss,
    pairwise_distance,
    quadruplet_distances,
    triplet_global_loss,
    triplet_loss,
)

PART_KEYS = {"loss", "joint", "global", "classification", "d_rpp", "d_rpn", "d_rn"}


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# --- brute-force references: plain Python over lists ------------------------------------------


def brute_distance(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def brute_mean(xs):
    return sum(xs) / len(xs)


def brute_pvariance(xs):
    mu = brute_mean(xs)
    return sum((x - mu) ** 2 for x in xs) / len(xs)


def brute_global(dpp, dpn, dn, t1, t2, lg1, lg2):
    var = brute_pvariance(dpp) + brute_pvariance(dpn) + brute_pvariance(dn)
    mpp, mpn, mn = brute_mean(dpp), brute_mean(dpn), brute_mean(dn)
    return var + lg1 * max(mpp - mpn + t1 - t2, 0.0) + lg2 * max(mpn - mn + t2, 0.0)


def brute_joint(dpp, dpn, dn, m1, m2):
    return max(1 - dpn / (dpp + m1 - m2), 0.0) + max(1 - dn / (dpn + m2), 0.0)


def brute_cross_entropy(logits, label):
    log_z = math.log(sum(math.exp(v) for v in logits))
    return log_z - logits[label]


def brute_classification(cl, fl, c, f, lc1, lc2):
    return lc1 * brute_cross_entropy(cl, c) + lc2 * brute_cross_entropy(fl, f)


def random_batch(batch=6, dim=5, k1=3, k2=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, 4, dim, generator=g, dtype=dtype)
    cl = torch.randn(batch, k1, generator=g, dtype=dtype)
    fl = torch.randn(batch, k2, generator=g, dtype=dtype)
    c = torch.randint(0, k1, (batch,), generator=g)
    f = torch.randint(0, k2, (batch,), generator=g)
    return emb, cl, fl, c, f


# --- pairwise distance ------------------------------------------------------------------------


def test_pairwise_distance_hand_values():
    a = t([[0.0, 0.0], [1.0, 1.0]])
    b = t([[3.0, 4.0], [1.0, 2.0]])
    torch.testing.assert_close(pairwise_distance(a, b), t([5.0, 1.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_distance_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    expected = [brute_distance(a[i].tolist(), b[i].tolist()) for i in range(9)]
    torch.testing.assert_close(pairwise_distance(a, b), t(expected))


def test_pairwise_distance_zero_gives_finite_zero_gradient():
    a = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)
    d = pairwise_distance(a, a.detach().clone())
    assert torch.all(d <= 1e-6)
    d.sum().backward()
    assert torch.isfinite(a.grad).all()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_quadruplet_distances_columns():
    emb, *_ = random_batch(batch=4)
    d_rpp, d_rpn, d_rn = quadruplet_distances(emb)
    for col, d in zip((1, 2, 3), (d_rpp, d_rpn, d_rn), strict=True):
        expected = [brute_distance(emb[i, 0].tolist(), emb[i, col].tolist()) for i in range(4)]
        torch.testing.assert_close(d, t(expected))


# --- eq. 1 and eq. 2 --------------------------------------------------------------------------


def test_contrastive_hand_values():
    d = t([0.5, 0.5, 2.0, 0.0])
    same = torch.tensor([True, False, False, True])
    # y D² = 0.25; [1 - 0.5]² = 0.25; [1 - 2]_+² = 0; 0
    torch.testing.assert_close(contrastive_loss(d, same, alpha=1.0), t([0.25, 0.25, 0.0, 0.0]))


def test_contrastive_matches_loop_and_accepts_01_labels():
    g = torch.Generator().manual_seed(3)
    d = torch.rand(20, generator=g, dtype=torch.float64) * 2
    same = torch.randint(0, 2, (20,), generator=g)
    expected = [
        y * x**2 + (1 - y) * max(1.2 - x, 0.0) ** 2
        for x, y in zip(d.tolist(), same.tolist(), strict=True)
    ]
    torch.testing.assert_close(contrastive_loss(d, same, 1.2), t(expected))
    torch.testing.assert_close(contrastive_loss(d, same.bool(), 1.2), t(expected))


def test_triplet_hand_values():
    # [1 - 4 + 0.5]_+ = 0 ; [4 - 1 + 0.5]_+ = 3.5
    torch.testing.assert_close(triplet_loss(t([1.0, 2.0]), t([2.0, 1.0]), 0.5), t([0.0, 3.5]))


def test_triplet_matches_loop():
    g = torch.Generator().manual_seed(4)
    d_rp, d_rn = torch.rand(2, 30, generator=g, dtype=torch.float64) * 2
    expected = [
        max(p**2 - n**2 + 0.3, 0.0) for p, n in zip(d_rp.tolist(), d_rn.tolist(), strict=True)
    ]
    torch.testing.assert_close(triplet_loss(d_rp, d_rn, 0.3), t(expected))


# --- eq. 3 and its triplet form ---------------------------------------------------------------


def test_global_hand_values():
    # variances 0.01 + 0.01 + 0; means 0.2, 0.3, 0.5;
    # [0.2 - 0.3 + 0.7 - 0.3]_+ = 0.3; [0.3 - 0.5 + 0.3]_+ = 0.1 -> 0.42
    value = global_loss(t([0.1, 0.3]), t([0.2, 0.4]), t([0.5, 0.5]))
    assert value.shape == ()
    torch.testing.assert_close(value, t(0.42))
    weighted = global_loss(
        t([0.1, 0.3]), t([0.2, 0.4]), t([0.5, 0.5]), lambda_g1=2.0, lambda_g2=0.0
    )
    torch.testing.assert_close(weighted, t(0.02 + 0.6))


def test_global_uses_population_variance_and_single_quadruplet():
    torch.testing.assert_close(global_loss(t([0.2]), t([0.9]), t([1.5])), t(0.0))
    # one distance set varies: population variance of [0, 1] is 0.25 (sample would be 0.5)
    torch.testing.assert_close(global_loss(t([0.0, 1.0]), t([2.0, 2.0]), t([3.0, 3.0])), t(0.25))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_global_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    dpp, dpn, dn = torch.rand(3, 17, generator=g, dtype=torch.float64) * torch.tensor(
        [[0.8], [1.0], [1.2]], dtype=torch.float64
    )
    args = (0.6, 0.25, 0.7, 1.3)
    expected = brute_global(dpp.tolist(), dpn.tolist(), dn.tolist(), *args)
    torch.testing.assert_close(global_loss(dpp, dpn, dn, *args), t(expected))


def test_triplet_global_hand_values_and_loop():
    # variances 0.01 + 0; [0.3 - 0.3 + 0.4]_+ = 0.4 -> 0.41
    torch.testing.assert_close(triplet_global_loss(t([0.2, 0.4]), t([0.3, 0.3])), t(0.41))
    g = torch.Generator().manual_seed(5)
    d_rp, d_rn = torch.rand(2, 11, generator=g, dtype=torch.float64)
    expected = (
        brute_pvariance(d_rp.tolist())
        + brute_pvariance(d_rn.tolist())
        + 0.5 * max(brute_mean(d_rp.tolist()) - brute_mean(d_rn.tolist()) + 0.2, 0.0)
    )
    torch.testing.assert_close(triplet_global_loss(d_rp, d_rn, t=0.2, lambda_g=0.5), t(expected))


# --- eq. 4 ------------------------------------------------------------------------------------


def test_classification_hand_values():
    # uniform logits: cross-entropy log k; 0.08 log 2 + 0.25 log 4
    value = classification_loss(
        torch.zeros(2, 2, dtype=torch.float64),
        torch.zeros(2, 4, dtype=torch.float64),
        torch.tensor([0, 1]),
        torch.tensor([3, 0]),
    )
    expected = 0.08 * math.log(2) + 0.25 * math.log(4)
    torch.testing.assert_close(value, t([expected, expected]))


def test_classification_lambda_c1_weighs_coarse():
    coarse_logits = t([[2.0, 0.0, 0.0]])
    fine_logits = t([[0.0, 0.0]])
    coarse_only = classification_loss(
        coarse_logits, fine_logits, torch.tensor([0]), torch.tensor([1]), 1.0, 0.0
    )
    expected_coarse = math.log(math.exp(2) + 2) - 2
    torch.testing.assert_close(coarse_only, t([expected_coarse]))
    fine_only = classification_loss(
        coarse_logits, fine_logits, torch.tensor([0]), torch.tensor([1]), 0.0, 1.0
    )
    torch.testing.assert_close(fine_only, t([math.log(2)]))


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_matches_loop(seed):
    _, cl, fl, c, f = random_batch(batch=9, seed=seed)
    expected = [
        brute_classification(cl[i].tolist(), fl[i].tolist(), int(c[i]), int(f[i]), 0.08, 0.25)
        for i in range(9)
    ]
    torch.testing.assert_close(classification_loss(cl, fl, c, f), t(expected))


# --- eq. 5 ------------------------------------------------------------------------------------


def test_joint_hand_values():
    # [1 - 0.3 / (0.1 + 0.4)]_+ = 0.4 ; [1 - 0.5 / (0.3 + 0.3)]_+ = 1/6
    # satisfied quadruplet: [1 - 1.0/0.4]_+ = 0 ; [1 - 2.0/1.3]_+ = 0
    value = joint_loss(t([0.1, 0.0]), t([0.3, 1.0]), t([0.5, 2.0]))
    torch.testing.assert_close(value, t([0.4 + 1 / 6, 0.0]))


def test_joint_uses_printed_denominators():
    # with m1=0.9, m2=0.2: [1 - 0.5/(0.3 + 0.7)]_+ = 0.5 ; [1 - 0.4/(0.5 + 0.2)]_+ = 3/7
    torch.testing.assert_close(
        joint_loss(t([0.3]), t([0.5]), t([0.4]), m1=0.9, m2=0.2), t([0.5 + 3 / 7])
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    dpp, dpn, dn = torch.rand(3, 25, generator=g, dtype=torch.float64) * 1.5
    expected = [
        brute_joint(a, b, c, 0.8, 0.35)
        for a, b, c in zip(dpp.tolist(), dpn.tolist(), dn.tolist(), strict=True)
    ]
    torch.testing.assert_close(joint_loss(dpp, dpn, dn, 0.8, 0.35), t(expected))


# --- eq. 6 ------------------------------------------------------------------------------------


def brute_quadruplet(emb, cl, fl, c, f, reduction, eta=1.0):
    batch = emb.shape[0]
    dists = [
        [brute_distance(emb[i, 0].tolist(), emb[i, col].tolist()) for i in range(batch)]
        for col in (1, 2, 3)
    ]
    joint = [brute_joint(dists[0][i], dists[1][i], dists[2][i], 0.7, 0.3) for i in range(batch)]
    cls = [
        brute_classification(cl[i].tolist(), fl[i].tolist(), int(c[i]), int(f[i]), 0.08, 0.25)
        for i in range(batch)
    ]
    reduce = sum if reduction == "sum" else brute_mean
    glob = brute_global(*dists, 0.7, 0.3, 1.0, 1.0)
    total = sum(joint) + sum(cls) + eta * glob
    if reduction == "mean":  # the whole of eq. 6 over B, the global term included
        total /= batch
    return {
        "loss": total,
        "joint": reduce(joint),
        "global": glob,
        "classification": reduce(cls),
        "d_rpp": brute_mean(dists[0]),
        "d_rpn": brute_mean(dists[1]),
        "d_rn": brute_mean(dists[2]),
    }


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadruplet_loss_matches_loop(reduction, seed):
    emb, cl, fl, c, f = random_batch(batch=8, seed=seed)
    emb = emb * 0.3  # distances around the margins, so both hinges are active for some rows
    out = QuadrupletLoss(reduction=reduction, eta=0.5)(emb, cl, fl, c, f)
    assert isinstance(out, LossOutput)
    assert set(out.parts) == PART_KEYS
    expected = brute_quadruplet(emb, cl, fl, c, f, reduction, eta=0.5)
    assert expected["joint"] > 0  # the hinges are exercised, not all clamped to zero
    torch.testing.assert_close(out.total, t(expected["loss"]))
    for key, value in expected.items():
        assert float(out.parts[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_quadruplet_loss_parts_are_detached_scalar_tensors():
    emb, cl, fl, c, f = random_batch(batch=4, seed=5)
    out = QuadrupletLoss()(emb.requires_grad_(True), cl.requires_grad_(True), fl, c, f)
    assert out.total.requires_grad
    for key, value in out.parts.items():
        assert isinstance(value, torch.Tensor) and value.shape == (), key
        assert not value.requires_grad, key
    assert torch.equal(out.parts["loss"], out.total.detach())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadruplet_loss_mean_is_sum_over_b(seed):
    emb, cl, fl, c, f = random_batch(batch=7, seed=seed)
    total = QuadrupletLoss(reduction="sum", eta=2.0)(emb * 0.3, cl, fl, c, f)
    mean = QuadrupletLoss(reduction="mean", eta=2.0)(emb * 0.3, cl, fl, c, f)
    torch.testing.assert_close(mean.total, total.total / 7)
    for key in ("joint", "classification"):
        torch.testing.assert_close(mean.parts[key], total.parts[key] / 7)
    # the global term is the batch statistic either way (eq. 3, before eta and before / B)
    torch.testing.assert_close(mean.parts["global"], total.parts["global"])


def test_quadruplet_loss_hand_values():
    # R at the origin; P+, P-, N on the axes at 0.1, 0.3, 0.5 (as in test_joint_hand_values),
    # uniform logits: per quadruplet 0.4 + 1/6 + 0.08 log 2 + 0.25 log 4; global: zero
    # variance + [0.1 - 0.3 + 0.4]_+ + [0.3 - 0.5 + 0.3]_+ = 0.3
    emb = t([[[0, 0, 0], [0.1, 0, 0], [0, 0.3, 0], [0, 0, 0.5]]] * 2)
    out = QuadrupletLoss()(
        emb,
        torch.zeros(2, 2, dtype=torch.float64),
        torch.zeros(2, 4, dtype=torch.float64),
        torch.tensor([0, 1]),
        torch.tensor([2, 3]),
    )
    per_quad = 0.4 + 1 / 6 + 0.08 * math.log(2) + 0.25 * math.log(4)
    torch.testing.assert_close(out.total, t(2 * per_quad + 0.3))
    assert float(out.parts["global"]) == pytest.approx(0.3)
    assert float(out.parts["joint"]) == pytest.approx(2 * (0.4 + 1 / 6))
    assert float(out.parts["d_rpp"]) == pytest.approx(0.1)
    assert float(out.parts["d_rn"]) == pytest.approx(0.5)


def test_combined_loss_hand_values():
    # eq. 6: (0.5 + 0.25) + (0.1 + 0.15) + 2 x 0.3 = 1.6; mean: 1.6 / 2
    joint, cls, glob = t([0.5, 0.25]), t([0.1, 0.15]), t(0.3)
    torch.testing.assert_close(combined_loss(joint, cls, glob, eta=2.0), t(1.6))
    torch.testing.assert_close(combined_loss(joint, cls, glob, eta=2.0, reduction="mean"), t(0.8))


def test_gradients_reach_all_four_members():
    emb, cl, fl, c, f = random_batch(batch=5, seed=7)
    emb = (emb * 0.2).requires_grad_(True)
    cl.requires_grad_(True)
    fl.requires_grad_(True)
    out = QuadrupletLoss()(emb, cl, fl, c, f)
    out.total.backward()
    for col in range(4):
        assert emb.grad[:, col].abs().sum() > 0, f"no gradient for column {col}"
    assert cl.grad.abs().sum() > 0 and fl.grad.abs().sum() > 0


def test_zero_distances_give_finite_loss_and_gradients():
    emb = torch.ones(3, 4, 6, dtype=torch.float64, requires_grad=True)
    cl = torch.zeros(3, 2, dtype=torch.float64)
    fl = torch.zeros(3, 3, dtype=torch.float64)
    out = QuadrupletLoss()(emb, cl, fl, torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2]))
    out.total.backward()
    assert torch.isfinite(out.total)
    assert torch.isfinite(emb.grad).all()
    # all distances ~0: both eq. 5 hinges are ~1 per quadruplet
    assert float(out.parts["joint"]) == pytest.approx(3 * 2.0, abs=1e-4)


# --- gradcheck in float64 ---------------------------------------------------------------------


def test_gradcheck_pairwise_distance():
    a, b = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(
        pairwise_distance, (a.requires_grad_(), b.requires_grad_()), eps=1e-6, atol=1e-5
    )


def _distances_fn(loss_fn):
    def fn(emb):
        return loss_fn(*quadruplet_distances(emb))

    return fn


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_joint_and_global_through_distances(seed):
    emb, *_ = random_batch(batch=6, seed=seed)
    emb = (emb * 0.3).requires_grad_(True)
    assert torch.autograd.gradcheck(_distances_fn(joint_loss), (emb,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(_distances_fn(global_loss), (emb,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(
        lambda e: triplet_global_loss(*quadruplet_distances(e)[::2]), (emb,), eps=1e-6, atol=1e-5
    )


def test_gradcheck_classification():
    _, cl, fl, c, f = random_batch(batch=5, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, b: classification_loss(a, b, c, f),
        (cl.requires_grad_(), fl.requires_grad_()),
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcheck_quadruplet_loss(reduction):
    emb, cl, fl, c, f = random_batch(batch=5, seed=11)
    loss = QuadrupletLoss(reduction=reduction)
    assert torch.autograd.gradcheck(
        lambda e, a, b: loss(e, a, b, c, f).total,
        ((emb * 0.3).requires_grad_(), cl.requires_grad_(), fl.requires_grad_()),
        eps=1e-6,
        atol=1e-5,
    )


# --- bad input --------------------------------------------------------------------------------

GOOD = t([0.1, 0.2])


@pytest.mark.parametrize(
    "call",
    [
        lambda: pairwise_distance(torch.zeros(2, 3), torch.zeros(3, 3)),
        lambda: pairwise_distance(torch.zeros(2, 3), torch.zeros(2)),
        lambda: pairwise_distance(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)),
        lambda: pairwise_distance(torch.full((2, 3), float("nan")), torch.zeros(2, 3)),
        lambda: pairwise_distance(torch.full((2, 3), float("inf")), torch.zeros(2, 3)),
        lambda: pairwise_distance([[0.0]], [[1.0]]),
        lambda: quadruplet_distances(torch.zeros(2, 3, 5)),
        lambda: quadruplet_distances(torch.zeros(0, 4, 5)),
        lambda: contrastive_loss(GOOD, torch.tensor([0, 2]), 1.0),
        lambda: contrastive_loss(GOOD, torch.tensor([0]), 1.0),
        lambda: contrastive_loss(GOOD, torch.tensor([0, 1]), 0.0),
        lambda: triplet_loss(GOOD, t([0.1]), 0.2),
        lambda: triplet_loss(GOOD, GOOD, -0.1),
        lambda: triplet_loss(GOOD, t([-0.1, 0.2]), 0.2),
        lambda: global_loss(GOOD, GOOD, t([0.1, float("nan")])),
        lambda: global_loss(GOOD, GOOD, t([])),
        lambda: global_loss(GOOD, GOOD, torch.tensor([1, 2])),
        lambda: global_loss(GOOD, GOOD, GOOD.view(2, 1)),
        lambda: global_loss(GOOD, GOOD, GOOD, t1=float("nan")),
        lambda: global_loss(GOOD, GOOD, GOOD, lambda_g1=-1.0),
        lambda: triplet_global_loss(GOOD, t([0.1, 0.2, 0.3])),
        lambda: joint_loss(GOOD, GOOD, GOOD, m1=0.3, m2=0.3),
        lambda: joint_loss(GOOD, GOOD, GOOD, m1=0.7, m2=0.0),
        lambda: joint_loss(GOOD, GOOD, GOOD, m1="0.7", m2=0.3),
        lambda: joint_loss(GOOD, GOOD, t([0.1, float("inf")])),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 3]), torch.tensor([0, 1])
        ),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([-1, 1])
        ),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0.0, 1.0]), torch.tensor([0, 1])
        ),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(3, 4), torch.tensor([0, 1]), torch.tensor([0, 1])
        ),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1, 2]), torch.tensor([0, 1])
        ),
        lambda: classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]), -1.0
        ),
        lambda: combined_loss(GOOD, t([0.1]), t(0.2)),
        lambda: combined_loss(GOOD, GOOD, t(0.2), reduction="none"),
        lambda: combined_loss(GOOD, GOOD, t([0.2])),
        lambda: QuadrupletLoss(m1=0.2, m2=0.3),
        lambda: QuadrupletLoss(reduction="none"),
        lambda: QuadrupletLoss(eta=-1.0),
        lambda: QuadrupletLoss()(
            torch.zeros(2, 4, 3),
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            torch.tensor([0, 1, 0]),
            torch.tensor([0, 1, 0]),
        ),
        lambda: QuadrupletLoss()(
            torch.full((2, 4, 3), float("nan")),
            torch.zeros(2, 2),
            torch.zeros(2, 2),
            torch.tensor([0, 1]),
            torch.tensor([0, 1]),
        ),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_bad_input_messages_say_what_is_expected():
    with pytest.raises(ValueError, match="m1 > m2 > 0"):
        joint_loss(GOOD, GOOD, GOOD, m1=0.3, m2=0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        global_loss(GOOD, GOOD, t([float("nan"), 0.1]))
    with pytest.raises(ValueError, match=r"\(B, 4, d\)"):
        quadruplet_distances(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\]"):
        classification_loss(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 3]), torch.tensor([0, 1])
        )
