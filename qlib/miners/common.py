"""What the reference and Bank share besides Section 3.3: input checks, the draws on the CPU,
chunking, and the precision in which distances are compared."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .. import checks

METHODS = ("random", "method1", "method2")


def draw_anchors(candidates: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n of the CPU indices candidates (M,), uniform: without replacement when n <= M."""
    if candidates.numel() == 0:
        raise ValueError("no sample can anchor a quadruplet; expected at least one valid anchor.")
    if n <= candidates.numel():
        return candidates[torch.randperm(candidates.numel(), generator=generator)[:n]]
    return candidates[torch.randint(candidates.numel(), (n,), generator=generator)]


def draw_uniforms(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The Random baseline's draws (n, 3), on the CPU, then moved without waiting for the device."""
    uniforms = torch.rand((n, 3), generator=generator, dtype=torch.float64)
    return uniforms.to(device, non_blocking=True)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method is {method!r}; expected one of {METHODS}.")
    return method


def check_generator(generator) -> torch.Generator | None:
    """None (torch's global CPU stream) or a CPU torch.Generator: draws happen on the CPU."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator is a {type(generator).__name__}; expected a torch.Generator or None."
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"generator is on {generator.device}; expected a CPU torch.Generator (draws happen "
            "on the CPU so that CPU and GPU picks are identical)."
        )
    return generator


def check_labels(fine, coarse) -> tuple[Tensor, Tensor]:
    fine = checks.labels("fine", fine)
    coarse = checks.labels("coarse", coarse, device=fine.device)
    checks.hierarchy(fine, coarse)
    return fine, coarse


def check_bank(bank, fine, coarse) -> tuple[Tensor, Tensor, Tensor]:
    """Embeddings (N, d) float32/64 and their labels (N,) on the embeddings' device (finiteness
    is checked by squared_norms, without an (N, d) mask)."""
    bank = checks.embeddings("bank", bank, finite=False)
    fine, coarse = check_labels(fine, coarse)
    if bank.shape[0] != fine.numel():
        raise ValueError(
            f"bank has {bank.shape[0]} rows but there are {fine.numel()} labels; expected one "
            "embedding per labelled sample."
        )
    return bank, fine.to(bank.device), coarse.to(bank.device)


def check_anchors(anchors, n_pos, n_posneg, n_neg, fine, coarse) -> Tensor:
    """Anchors (B,) as a CPU LongTensor, each a bank index that can anchor a quadruplet."""
    anchors = torch.as_tensor(anchors)
    if anchors.dtype not in checks.INTEGER_DTYPES:
        raise ValueError(f"anchors has dtype {anchors.dtype}; expected integer bank indices.")
    if anchors.ndim != 1:
        raise ValueError(f"anchors has shape {tuple(anchors.shape)}; expected a 1-D tensor (B,).")
    anchors = anchors.cpu().long()
    n = n_pos.numel()
    outside = (anchors < 0) | (anchors >= n)
    if outside.any():
        raise ValueError(
            f"anchors at positions {outside.nonzero().flatten()[:5].tolist()} are "
            f"{anchors[outside][:5].tolist()}, outside the bank; expected indices in [0, {n})."
        )
    n_pos, n_posneg, n_neg = n_pos.cpu(), n_posneg.cpu(), n_neg.cpu()
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
        bad = (count[anchors] == 0).nonzero().flatten()
        if bad.numel():
            position, index = int(bad[0]), int(anchors[bad[0]])
            raise ValueError(
                f"anchor at position {position} (bank index {index}, fine {int(fine[index])}, "
                f"coarse {int(coarse[index])}) cannot anchor a quadruplet: {why}; expected anchors "
                "from valid_anchors(fine, coarse)."
            )
    return anchors


def join(parts: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Concatenate per-chunk (quadruplets, fallbacks); empty tensors for no anchors."""
    if not parts:
        return (
            torch.empty((0, 4), dtype=torch.long, device=device),
            torch.empty((0, 2), dtype=torch.bool, device=device),
        )
    return torch.cat([q for q, _ in parts]), torch.cat([f for _, f in parts])


@contextlib.contextmanager
def exact_distances(device: torch.device):
    """Distances in the embeddings' own precision: autocast off, and on CUDA no TF32.

    A trainer may run under autocast or allow TF32 matrix products; either would round the
    distances that selection compares (and make GPU picks differ from the CPU's).
    """
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: the new API, read and restored
            name, precise = "fp32_precision", "ieee"
        else:
            name, precise = "allow_tf32", False
        previous = getattr(matmul, name)
        setattr(matmul, name, precise)
        try:
            yield
        finally:
            setattr(matmul, name, previous)
