"""Quadruplet selection (Section 3.3 of the paper; docs/spec.md "Quadruplet selection").

A quadruplet is four bank indices (R, P+, P-, N): an anchor R, a sample P+ of the same fine
class, a sample P- of the same coarse class but another fine class, and a sample N of another
coarse class. With D(j) = ||e_j - e_R|| over the bank:

- N is the globally hardest negative, argmin D(j) over coarse(j) != coarse(R);
- "method1": among the P+ (resp. P-) candidates with D(j) > D(N), the one closest to N;
- "method2": among the same candidates, the one closest to R;
- either method, when no candidate lies outside the hypersphere of radius D(N): the candidate
  farthest from R (a "fallback", reported per pick);
- "random": P+, P-, N each uniform over its candidate set.

Ties go to the lowest bank index everywhere (torch.argmin/argmax return the first occurrence).

Everything is vectorised over the anchors and the bank: there is no Python loop over either.
Anchors are processed in chunks so that only (chunk, N) matrices are ever held (default about
8M elements per matrix). On CPU, for chunks of 64+ anchors, P+ and P- are picked per group of
anchors sharing a coarse class (a loop over at most k1 groups), on that class's columns only,
since both candidate sets lie inside it; method 1's distances from N are then class-sized
products, not bank-sized. On CUDA and for small chunks the same picks come from whole-bank masks
(few large kernels). Both paths give identical results (tested against each other and a loop).
Distances are compared squared (sqrt is monotone), from ||a||^2 + ||b||^2 - 2 a.b with the bank
norms computed once per call as plain sums of squares (exact on integer-valued banks, so exact
ties stay ties): one matrix product per chunk, the cost of torch.cdist without its square root.
"""

from __future__ import annotations

import torch

METHODS = ("random", "method1", "method2")

# Elements of one (chunk, N) matrix: about 32 MiB in float32, and a handful of such temporaries
# per chunk keeps the peak well under the 2 GiB budget even for a 100,000-sample bank.
_CHUNK_ELEMENTS = 2**23

# Devices on which P+/P- are picked per coarse-class group (fewer flops, more small operations),
# for chunks of at least _GROUPED_MIN_ROWS anchors; otherwise (CUDA, small chunks) on whole-bank
# masks (for method 1 a second bank-sized product, in few large kernels). Both give the same
# answer (tested); the split only trades flops against per-operation overhead.
_GROUPED_DEVICES = ("cpu",)
_GROUPED_MIN_ROWS = 64

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _as_labels(labels, name: str, device: torch.device | None = None) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(
            f"{name} has dtype {labels.dtype}; expected an integer tensor of class ids."
        )
    if labels.ndim != 1:
        raise ValueError(f"{name} has shape {tuple(labels.shape)}; expected a 1-D tensor (N,).")
    if device is not None:
        labels = labels.to(device)
    return labels.long()


def _check_labels(fine, coarse) -> tuple[torch.Tensor, torch.Tensor]:
    fine = _as_labels(fine, "fine")
    coarse = _as_labels(coarse, "coarse", fine.device)
    if fine.shape != coarse.shape:
        raise ValueError(
            f"fine has {fine.numel()} labels but coarse has {coarse.numel()}; "
            "expected one fine and one coarse label per sample."
        )
    if fine.numel() > 0:
        # Every fine class must sit in exactly one coarse class (docs/spec.md, data protocol).
        fine_values, fine_inverse = torch.unique(fine, return_inverse=True)
        lowest = coarse.new_full(fine_values.shape, torch.iinfo(torch.long).max)
        highest = coarse.new_full(fine_values.shape, torch.iinfo(torch.long).min)
        lowest = lowest.scatter_reduce(0, fine_inverse, coarse, "amin")
        highest = highest.scatter_reduce(0, fine_inverse, coarse, "amax")
        if (lowest != highest).any():
            bad = fine_values[lowest != highest][:5].tolist()
            raise ValueError(
                f"fine classes {bad} appear under more than one coarse class; expected every fine "
                "class to belong to exactly one coarse class."
            )
    return fine, coarse


def _check_bank(bank) -> torch.Tensor:
    bank = torch.as_tensor(bank).detach()
    if not bank.is_floating_point():
        raise ValueError(f"bank has dtype {bank.dtype}; expected a floating-point tensor (N, d).")
    if bank.ndim != 2:
        raise ValueError(f"bank has shape {tuple(bank.shape)}; expected a 2-D tensor (N, d).")
    if bank.dtype not in (torch.float32, torch.float64):
        bank = bank.float()  # half precision is too coarse for exact comparisons
    return bank


def _squared_norms(bank: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (N,) squared norms; also the finiteness check (NaN/inf propagate into them).

    A plain sum of squares (exact for integer-valued banks, so exact ties stay ties), in row
    blocks to bound the temporary; torch.einsum's batched products were slower here.
    """
    norms = torch.cat([block.square().sum(1) for block in bank.split(4096)])
    if not torch.isfinite(norms).all() or not torch.isfinite(4 * norms.max()):
        _raise_not_finite(bank)
    return norms


def _check_finite(bank: torch.Tensor) -> None:
    """NaN/inf check for "random", which never squares: a fused norm, no temporary."""
    if not torch.isfinite(torch.linalg.vector_norm(bank, dim=1)).all():
        _raise_not_finite(bank)


def _raise_not_finite(bank: torch.Tensor) -> None:
    bad = (~torch.isfinite(bank)).any(1).nonzero().flatten()[:5].tolist()
    detail = f"rows {bad} hold NaN or inf" if bad else "values are too large to square"
    raise ValueError(f"bank {detail}; expected finite embeddings.")


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator is a {type(generator).__name__}; expected a torch.Generator or None."
        )


# --------------------------------------------------------------------------------------------
# anchors
# --------------------------------------------------------------------------------------------
def _candidate_counts(fine: torch.Tensor, coarse: torch.Tensor):
    """Per sample: #P+ candidates, #P- candidates, #N candidates, each (N,)."""
    _, fine_inverse, fine_counts = torch.unique(fine, return_inverse=True, return_counts=True)
    _, coarse_inverse, coarse_counts = torch.unique(coarse, return_inverse=True, return_counts=True)
    same_fine = fine_counts[fine_inverse]
    same_coarse = coarse_counts[coarse_inverse]
    # The hierarchy (checked) makes "same coarse, other fine" a difference of counts.
    return same_fine - 1, same_coarse - same_fine, fine.numel() - same_coarse


def valid_anchors(fine, coarse) -> torch.Tensor:
    """Samples that can anchor a quadruplet: fine (N,), coarse (N,) integer -> BoolTensor (N,).

    A valid anchor has a P+ (another sample of its fine class), a P- (a sample of its coarse
    class with another fine class) and an N (a sample of another coarse class).
    """
    fine, coarse = _check_labels(fine, coarse)
    n_pos, n_posneg, n_neg = _candidate_counts(fine, coarse)
    return (n_pos > 0) & (n_posneg > 0) & (n_neg > 0)


def sample_anchors(valid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n anchors uniformly among the valid ones: valid (N,) bool -> LongTensor (n,).

    Without replacement when n <= #valid, else with replacement.
    """
    valid = torch.as_tensor(valid)
    if valid.dtype != torch.bool or valid.ndim != 1:
        raise ValueError(
            f"valid has dtype {valid.dtype} and shape {tuple(valid.shape)}; expected a 1-D "
            "bool mask such as valid_anchors(fine, coarse)."
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n is {n!r}; expected a non-negative int.")
    _check_generator(generator)
    candidates = valid.nonzero().flatten()
    if candidates.numel() == 0:
        raise ValueError("no sample can anchor a quadruplet; expected at least one valid anchor.")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    if n <= candidates.numel():
        pick = torch.randperm(candidates.numel(), generator=generator, device=draw_device)[:n]
    else:
        pick = torch.randint(candidates.numel(), (n,), generator=generator, device=draw_device)
    return candidates[pick.to(candidates.device)]


def _check_anchors(anchors, fine, coarse) -> torch.Tensor:
    anchors = torch.as_tensor(anchors)
    if anchors.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"anchors has dtype {anchors.dtype}; expected integer bank indices.")
    if anchors.ndim != 1:
        raise ValueError(f"anchors has shape {tuple(anchors.shape)}; expected a 1-D tensor (B,).")
    anchors = anchors.to(fine.device).long()
    n = fine.numel()
    out_of_range = (anchors < 0) | (anchors >= n)
    if out_of_range.any():
        where = out_of_range.nonzero().flatten()[:5].tolist()
        values = anchors[out_of_range][:5].tolist()
        raise ValueError(
            f"anchors at positions {where} are {values}, outside the bank; expected indices "
            f"in [0, {n})."
        )
    n_pos, n_posneg, n_neg = _candidate_counts(fine, coarse)
    if not ((n_pos > 0) & (n_posneg > 0) & (n_neg > 0)).any():
        raise ValueError(
            "no sample can anchor a quadruplet (each needs another sample of its fine class, a "
            "sample of another fine class in its coarse class and one of another coarse class); "
            "expected labels with at least one valid anchor."
        )
    for count, why in (
        (n_pos, "its fine class has no other sample (no P+)"),
        (n_posneg, "its coarse class has no other fine class (no P-)"),
        (n_neg, "every sample shares its coarse class (no N)"),
    ):
        bad = count[anchors] == 0
        if bad.any():
            position = int(bad.nonzero()[0])
            index = int(anchors[position])
            raise ValueError(
                f"anchor at position {position} (bank index {index}, fine {int(fine[index])}, "
                f"coarse {int(coarse[index])}) cannot anchor a quadruplet: {why}; expected anchors "
                "from valid_anchors(fine, coarse)."
            )
    return anchors


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------
def _squared_distances(
    queries: torch.Tensor, query_norms: torch.Tensor, bank: torch.Tensor, bank_norms: torch.Tensor
) -> torch.Tensor:
    """||q_i - b_j||^2 for queries (C, d), bank (N, d) -> (C, N), clamped at 0."""
    sq = torch.addmm(query_norms[:, None], queries, bank.T, alpha=-2.0)
    return sq.add_(bank_norms).clamp_min_(0.0)


def _uniform_pick(mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The k-th True column of each row, k = floor(u * count): uniform, independent of chunking.

    mask (C, N) bool with at least one True per row, u (C,) in [0, 1) -> (C,) column indices.
    """
    running = mask.cumsum(1)
    count = running[:, -1]
    k = torch.minimum((u * count).long(), count - 1)
    # First column whose running count reaches k + 1: that column is the (k+1)-th True.
    return torch.searchsorted(running, (k + 1)[:, None]).squeeze(1)


def _hypersphere_pick(
    candidates: torch.Tensor, outside: torch.Tensor, key: torch.Tensor, sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate with the smallest key among those outside the sphere, else the farthest from R.

    candidates, outside (G, M) bool, key and sq (G, M) -> picks (G,) columns, fallback (G,) bool.
    """
    eligible = candidates & outside
    fallback = ~eligible.any(1)
    inside_pick = torch.where(eligible, key, float("inf")).argmin(1)
    farthest = torch.where(candidates, sq, -1.0).argmax(1)
    return torch.where(fallback, farthest, inside_pick), fallback


def _coarse_members(coarse: torch.Tensor) -> dict[int, torch.Tensor]:
    """{coarse class: its bank indices in ascending order}, from one stable sort."""
    order = torch.argsort(coarse, stable=True)
    values, counts = torch.unique_consecutive(coarse[order], return_counts=True)
    ends = counts.cumsum(0).tolist()
    starts = [0, *ends[:-1]]
    return {c: order[a:b] for c, a, b in zip(values.tolist(), starts, ends, strict=True)}


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Select one quadruplet per anchor (Section 3.3; docs/spec.md "Quadruplet selection").

    bank (N, d) float embeddings, fine (N,) and coarse (N,) integer labels, anchors (B,) bank
    indices of valid anchors, method in METHODS. Returns a LongTensor (B, 4) of bank indices,
    columns (R, P+, P-, N), on the bank's device; with return_fallbacks=True also a BoolTensor
    (B, 2): whether the P+ / P- pick fell back to the farthest candidate because none lay outside
    the hypersphere of radius D(R, N) (always False for "random").

    generator drives "random" only (3 uniform draws per anchor, taken up front, so that results
    do not depend on chunk_size). chunk_size = anchors per chunk (default: about 8M matrix
    elements per chunk).
    """
    if method not in METHODS:
        raise ValueError(f"method is {method!r}; expected one of {METHODS}.")
    _check_generator(generator)
    bank = _check_bank(bank)
    fine, coarse = _check_labels(fine, coarse)
    if bank.shape[0] != fine.numel():
        raise ValueError(
            f"bank has {bank.shape[0]} rows but there are {fine.numel()} labels; expected one "
            "embedding per labelled sample."
        )
    device = bank.device
    fine, coarse = fine.to(device), coarse.to(device)
    anchors = _check_anchors(anchors, fine, coarse)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size is {chunk_size!r}; expected a positive int or None.")

    n_bank, n_anchors = bank.shape[0], anchors.numel()
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_bank, 1))
    quadruplets = torch.empty((n_anchors, 4), dtype=torch.long, device=device)
    fallbacks = torch.zeros((n_anchors, 2), dtype=torch.bool, device=device)
    quadruplets[:, 0] = anchors

    with torch.no_grad():
        if method == "random":
            _check_finite(bank)
            draw_device = generator.device if generator is not None else torch.device("cpu")
            uniforms = torch.rand(
                (n_anchors, 3), generator=generator, device=draw_device, dtype=torch.float64
            ).to(device)
            columns = torch.arange(n_bank, device=device)
        else:
            bank_norms = _squared_norms(bank)
            members = _coarse_members(coarse) if device.type in _GROUPED_DEVICES else None
        for start in range(0, n_anchors, chunk_size):
            rows = anchors[start : start + chunk_size]
            chunk = slice(start, start + rows.numel())
            same_coarse = coarse[None, :] == coarse[rows][:, None]

            if method == "random":
                same_fine = fine[None, :] == fine[rows][:, None]
                positives = same_fine & (columns[None, :] != rows[:, None])
                u = uniforms[chunk]
                quadruplets[chunk, 1] = _uniform_pick(positives, u[:, 0])
                quadruplets[chunk, 2] = _uniform_pick(same_coarse & ~same_fine, u[:, 1])
                quadruplets[chunk, 3] = _uniform_pick(~same_coarse, u[:, 2])
                continue

            sq = _squared_distances(bank.index_select(0, rows), bank_norms[rows], bank, bank_norms)
            negative = sq.masked_fill(same_coarse, float("inf")).argmin(1)
            quadruplets[chunk, 3] = negative
            radius = sq.gather(1, negative[:, None])  # D(R, N)^2, (C, 1)
            args = (sq, rows, negative, radius, fine, bank, bank_norms, method)
            if members is not None and rows.numel() >= _GROUPED_MIN_ROWS:
                _pick_positives_grouped(
                    *args, coarse, members, quadruplets[chunk], fallbacks[chunk]
                )
            else:
                _pick_positives_dense(*args, same_coarse, quadruplets[chunk], fallbacks[chunk])

    if return_fallbacks:
        return quadruplets, fallbacks
    return quadruplets


def _pick_positives_dense(
    sq, rows, negative, radius, fine, bank, bank_norms, method, same_coarse, quads, fallbacks
) -> None:
    """Fill columns P+ and P- of quads (C, 4) and fallbacks (C, 2) for one chunk of anchors.

    Whole-bank (C, N) masks and, for method 1, a second (C, N) product from the negatives: a
    handful of large kernels, the better shape on a GPU.
    """
    same_fine = fine[None, :] == fine[rows][:, None]
    columns = torch.arange(fine.numel(), device=fine.device)
    positives = same_fine & (columns[None, :] != rows[:, None])
    posnegs = same_coarse & ~same_fine
    outside = sq > radius
    if method == "method1":
        key = _squared_distances(
            bank.index_select(0, negative), bank_norms[negative], bank, bank_norms
        )
    else:
        key = sq
    quads[:, 1], fallbacks[:, 0] = _hypersphere_pick(positives, outside, key, sq)
    quads[:, 2], fallbacks[:, 1] = _hypersphere_pick(posnegs, outside, key, sq)


def _pick_positives_grouped(
    sq, rows, negative, radius, fine, bank, bank_norms, method, coarse, members, quads, fallbacks
) -> None:
    """Same as _pick_positives_dense, per group of anchors sharing a coarse class.

    Both candidate sets lie inside the anchor's coarse class, so each group works on that class's
    columns only: (rows in group, class size) blocks cut from the chunk's distances sq (C, N).
    Method 1 needs ||e_j - e_N|| for those columns only: class-sized products instead of a
    second bank-sized one. Many small operations: the better shape on a CPU.
    """
    row_coarse = coarse[rows]
    for c in torch.unique(row_coarse).tolist():
        local = (row_coarse == c).nonzero().flatten()
        cols = members[c]
        anchors = rows[local]
        block = sq[local[:, None], cols[None, :]]  # D(R, j)^2 for j in the class, (G, M)
        same_fine = fine[cols][None, :] == fine[anchors][:, None]
        positives = same_fine & (cols[None, :] != anchors[:, None])
        outside = block > radius[local]
        if method == "method1":
            neg = negative[local]
            key = _squared_distances(
                bank.index_select(0, neg),
                bank_norms[neg],
                bank.index_select(0, cols),
                bank_norms[cols],
            )
        else:
            key = block
        pick, fell = _hypersphere_pick(positives, outside, key, block)
        quads[local, 1], fallbacks[local, 0] = cols[pick], fell
        pick, fell = _hypersphere_pick(~same_fine, outside, key, block)
        quads[local, 2], fallbacks[local, 1] = cols[pick], fell


def count_fallbacks(fallbacks: torch.Tensor) -> dict[str, int]:
    """Totals of a fallbacks mask (B, 2) -> {"P+": n, "P-": n}, for logging and plots."""
    fallbacks = torch.as_tensor(fallbacks)
    return {"P+": int(fallbacks[:, 0].sum()), "P-": int(fallbacks[:, 1].sum())}


__all__ = ["METHODS", "valid_anchors", "sample_anchors", "select_quadruplets", "count_fallbacks"]


class Bank:
    """TEMPORARY shim (replaced by the miners branch): a bank with the Bank API of PLAN.md."""

    def __init__(self, embeddings, fine, coarse) -> None:
        self.embeddings, self.fine, self.coarse = embeddings, fine, coarse
        self.valid = valid_anchors(fine.cpu(), coarse.cpu())

    def sample_anchors(self, n, generator=None):
        return sample_anchors(self.valid, n, generator).to(self.embeddings.device)

    def select(self, anchors, method, generator=None):
        return select_quadruplets(
            self.embeddings,
            self.fine,
            self.coarse,
            anchors,
            method,
            generator,
            return_fallbacks=True,
        )
