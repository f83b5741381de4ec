"""Section 3.3 of the paper, one function per idea; `select_quadruplets` is the reference.

Read it beside the paper (docs/spec.md "Quadruplet selection"). For an anchor R and
D(j) = ||e_j - e_R|| over the bank:

- `hardest_negative`: N = argmin D(j) over the samples of another coarse class;
- D(R, N) is the radius of a hypersphere around R; `pick_outside_sphere` takes, among the
  P+ (or P-) candidates with D(j) > D(N), the one with the smallest key, and when none lies
  outside, the candidate farthest from R (a "fallback", reported);
- the key is `method1_key` (the distance to N) or `method2_key` (the distance to R);
- `random_quadruplets`: the baseline, P+, P-, N uniform over their candidate sets.

Ties go to the lowest bank index (torch's argmin/argmax return the first occurrence). Distances
are compared squared and shifted by a constant per row (qlib.distances), which orders each row
as D does; anchors are taken in chunks so that only (chunk, N) matrices are held.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import checks
from ..distances import chunk_rows, shifted_squared_distances, squared_norms
from .common import (
    check_anchors,
    check_bank,
    check_generator,
    check_labels,
    check_method,
    draw_anchors,
    draw_uniforms,
    exact_distances,
    join,
)


# --- Section 3.3, one idea per function ---
# Shapes: B anchors, N bank samples (or M window columns).
def hardest_negative(d: Tensor, same_coarse: Tensor) -> Tensor:
    """N = argmin D(R, j) over coarse(j) != coarse(R): d (B, N), same_coarse (B, N) -> (B,)."""
    return d.masked_fill(same_coarse, float("inf")).argmin(1)


def method1_key(bank: Tensor, bank_norms: Tensor, negative: Tensor) -> Tensor:
    """Method 1 ranks candidates by their distance to N: (B, N), shifted per row like d."""
    return shifted_squared_distances(bank[negative], bank, bank_norms)


def method2_key(d: Tensor) -> Tensor:
    """Method 2 ranks candidates by their distance to R: d itself."""
    return d


def pick_outside_sphere(
    candidates: Tensor, d: Tensor, radius: Tensor, key: Tensor
) -> tuple[Tensor, Tensor]:
    """The candidate with the smallest key among those with D(j) > D(N), else the farthest one.

    candidates (..., B, M) bool (every row holds one), d and key (B, M) distances from R and
    keys, radius (B, 1) = D(R, N) -> (pick (..., B) column, fallback (..., B) bool: no candidate
    lay outside the sphere).
    """
    outside = candidates & (d > radius)
    fallback = ~outside.any(-1)
    closest = torch.where(outside, key, float("inf")).argmin(-1)
    farthest = torch.where(candidates, d, float("-inf")).argmax(-1)
    return torch.where(fallback, farthest, closest), fallback


def random_quadruplets(fine: Tensor, coarse: Tensor, anchors: Tensor, uniforms: Tensor) -> Tensor:
    """The Random baseline: P+, P-, N uniform over their candidate sets -> (B, 4) (R, P+, P-, N).

    uniforms (B, 3) in [0, 1), drawn up front for all anchors, so that chunking changes nothing:
    the pick is the k-th candidate in bank order with k = floor(u * number of candidates).
    """
    same_fine, same_coarse, itself = _relations(fine, coarse, anchors)
    positive = kth_candidate(same_fine & ~itself, uniforms[:, 0])
    posneg = kth_candidate(same_coarse & ~same_fine, uniforms[:, 1])
    negative = kth_candidate(~same_coarse, uniforms[:, 2])
    return torch.stack([anchors, positive, posneg, negative], 1)


def _methods_quadruplets(
    bank: Tensor, bank_norms: Tensor, fine: Tensor, coarse: Tensor, anchors: Tensor, method: str
) -> tuple[Tensor, Tensor]:
    """Method 1 or Method 2 for anchors (B,) -> quadruplets (B, 4), fallbacks (B, 2)."""
    d = shifted_squared_distances(bank[anchors], bank, bank_norms)  # D(R, j), (B, N)
    same_fine, same_coarse, itself = _relations(fine, coarse, anchors)
    negative = hardest_negative(d, same_coarse)
    radius = d.gather(1, negative[:, None])  # D(R, N): the hypersphere around R
    key = method1_key(bank, bank_norms, negative) if method == "method1" else method2_key(d)
    positive, fell_pos = pick_outside_sphere(same_fine & ~itself, d, radius, key)
    posneg, fell_neg = pick_outside_sphere(same_coarse & ~same_fine, d, radius, key)
    quadruplets = torch.stack([anchors, positive, posneg, negative], 1)
    return quadruplets, torch.stack([fell_pos, fell_neg], 1)


def _relations(fine: Tensor, coarse: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, N) masks: same fine class as R, same coarse class as R, R itself."""
    columns = torch.arange(fine.numel(), device=fine.device)
    same_fine = fine[None, :] == fine[anchors, None]
    same_coarse = coarse[None, :] == coarse[anchors, None]
    return same_fine, same_coarse, columns[None, :] == anchors[:, None]


def kth_candidate(mask: Tensor, u: Tensor) -> Tensor:
    """Column of the k-th True in each row of mask (B, N), k = floor(u * count) for u (B,)."""
    running = mask.cumsum(1)
    count = running[:, -1]
    k = torch.minimum((u * count).long(), count - 1)
    return torch.searchsorted(running, (k + 1)[:, None]).squeeze(1)  # first column reaching k+1


# --- the reference ---
def select_quadruplets(
    bank,
    fine,
    coarse,
    anchors,
    method: str,
    generator: torch.Generator | None = None,
    *,
    return_fallbacks: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """One quadruplet per anchor (Section 3.3; docs/spec.md "Quadruplet selection").

    bank (N, d) float embeddings, fine and coarse (N,) integer labels, anchors (B,) bank indices
    of valid anchors, method in METHODS. Returns a LongTensor (B, 4) of bank indices, columns
    (R, P+, P-, N), on the bank's device; with return_fallbacks=True also a BoolTensor (B, 2):
    whether P+ / P- fell back to the farthest candidate (always False for "random").

    generator: a CPU torch.Generator for "random" (3 uniform draws per anchor, taken up front on
    the CPU: the picks do not depend on chunk_size or device). chunk_size: anchors per chunk
    (default: about 8M distance-matrix elements).
    """
    method = check_method(method)
    generator = check_generator(generator)
    bank, fine, coarse = check_bank(bank, fine, coarse)
    anchors = check_anchors(anchors, *candidate_counts(fine, coarse), fine, coarse)
    anchors = anchors.to(bank.device)
    chunk = chunk_rows(bank.shape[0], chunk_size)
    norms = squared_norms(bank, "bank")
    with torch.no_grad(), exact_distances(bank.device):
        if method == "random":
            uniforms = draw_uniforms(anchors.numel(), generator, bank.device)
            chunks = zip(anchors.split(chunk), uniforms.split(chunk), strict=True)
            quads = [random_quadruplets(fine, coarse, rows, u) for rows, u in chunks]
            parts = [(q, torch.zeros_like(q[:, :2], dtype=torch.bool)) for q in quads]
        else:
            parts = [
                _methods_quadruplets(bank, norms, fine, coarse, rows, method)
                for rows in anchors.split(chunk)
            ]
        quadruplets, fallbacks = join(parts, bank.device)
    return (quadruplets, fallbacks) if return_fallbacks else quadruplets


# --- anchors ---
def candidate_counts(fine: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample (N,) each: number of P+ candidates, of P- candidates, of N candidates."""
    _, fine_index, fine_counts = torch.unique(fine, return_inverse=True, return_counts=True)
    _, coarse_index, coarse_counts = torch.unique(coarse, return_inverse=True, return_counts=True)
    same_fine, same_coarse = fine_counts[fine_index], coarse_counts[coarse_index]
    # The hierarchy (checked) makes "same coarse, other fine" a difference of counts.
    return same_fine - 1, same_coarse - same_fine, fine.numel() - same_coarse


def valid_anchors(fine, coarse) -> Tensor:
    """Samples that can anchor a quadruplet: fine (N,), coarse (N,) -> BoolTensor (N,).

    A valid anchor has a P+ (another sample of its fine class), a P- (a sample of its coarse
    class with another fine class) and an N (a sample of another coarse class).
    """
    fine, coarse = check_labels(fine, coarse)
    n_pos, n_posneg, n_neg = candidate_counts(fine, coarse)
    return (n_pos > 0) & (n_posneg > 0) & (n_neg > 0)


def sample_anchors(valid, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n anchors uniform among the valid ones: valid (N,) bool -> LongTensor (n,).

    Without replacement when n <= #valid, else with replacement; drawn on the CPU, returned on
    valid's device.
    """
    valid = torch.as_tensor(valid)
    if valid.dtype != torch.bool or valid.ndim != 1:
        raise ValueError(
            f"valid has dtype {valid.dtype} and shape {tuple(valid.shape)}; expected a 1-D "
            "bool mask such as valid_anchors(fine, coarse)."
        )
    n = checks.integer("n", n, 0)
    candidates = valid.cpu().nonzero().flatten()
    return draw_anchors(candidates, n, check_generator(generator)).to(valid.device)
