"""What each iteration trains on: quadruplets mined over the bank (Section 3.3), or the
class-balanced batches of the baselines, every draw from the run's own CPU generators (`anchors`
for anchors and Random's picks, `data` for batch composition and each image's crop and flip).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import miners as qminers


@dataclass
class Plan:
    """The batches of one segment (the iterations between two bank refreshes).

    batches: per iteration, (B, 4) bank indices (R, P+, P-, N) or (n,) image indices;
    fallbacks: per iteration, (B, 2) bool (quadruplets) or None; items: per iteration, the
    loader's keys (index, crop top, crop left, flip) in image order; seconds: per-iteration
    selection time; bank_seconds: the refresh's time (0 for the baselines)."""

    batches: list[Tensor]
    fallbacks: list[Tensor | None]
    items: list[list[tuple[int, int]]]
    seconds: list[float]
    bank_seconds: float = 0.0


def quadruplet_plan(
    bank: qminers.Bank,
    method: str,
    n_iterations: int,
    batch_size: int,
    anchors: torch.Generator,
    data: torch.Generator,
) -> Plan:
    """Per iteration: B anchors drawn uniformly among the valid ones, then one quadruplet each
    by `method` over the whole bank. The bank does not change within a segment, so selecting
    the segment up front equals selecting per iteration, and lets the loader prefetch."""
    plan = Plan([], [], [], [])
    for _ in range(n_iterations):
        tic = time.perf_counter()
        quadruplets, fallbacks = bank.select(
            bank.sample_anchors(batch_size, anchors), method, anchors
        )
        plan.batches.append(quadruplets.cpu())
        plan.fallbacks.append(fallbacks)
        plan.seconds.append(time.perf_counter() - tic)
        plan.items.append(augmentation_keys(quadruplets.flatten(), data))
    return plan


def class_balanced_batch(
    members: list[Tensor], n_images: int, per_class: int, generator: torch.Generator
) -> Tensor:
    """P classes x K images (P*K <= n_images, P >= 2): classes without replacement, images
    without replacement when the class has enough of them -> LongTensor (P*K,)."""
    n_classes = len(members)
    n_picked = max(2, min(n_classes, n_images // per_class))
    picked = []
    for c in torch.randperm(n_classes, generator=generator)[:n_picked].tolist():
        pool = members[c]
        if len(pool) >= per_class:
            choice = torch.randperm(len(pool), generator=generator)[:per_class]
        else:
            choice = torch.randint(len(pool), (per_class,), generator=generator)
        picked.append(pool[choice])
    return torch.cat(picked)


def baseline_plan(
    members: list[Tensor], n_iterations: int, n_images: int, per_class: int, data: torch.Generator
) -> Plan:
    """Per iteration one class-balanced batch of `n_images` training images (the baselines)."""
    plan = Plan([], [], [], [])
    for _ in range(n_iterations):
        tic = time.perf_counter()
        batch = class_balanced_batch(members, n_images, per_class, data)
        plan.batches.append(batch)
        plan.fallbacks.append(None)
        plan.seconds.append(time.perf_counter() - tic)
        plan.items.append(augmentation_keys(batch, data))
    return plan


def augmentation_keys(indices: Tensor, data: torch.Generator) -> list[tuple[int, ...]]:
    """(image index, crop top, crop left, flip) per image, drawn by the run's data generator,
    for `qlib.train.data.AugmentedItems`."""
    draws = torch.rand(indices.numel(), 3, generator=data, dtype=torch.float64)
    return [(i, *d) for i, d in zip(indices.cpu().tolist(), draws.tolist(), strict=True)]
