"""Quadruplet selection (Section 3.3 of the paper; docs/spec.md "Quadruplet selection").

- `reference`: the paper's ideas as named functions (`hardest_negative`, `method1_key`,
  `method2_key`, `pick_outside_sphere`, `random_quadruplets`) and `select_quadruplets`, the
  reference, to read beside the paper.
- `bank`: `Bank`, the same picks with the per-bank work done once and no host synchronisation
  per selection on CUDA: what the trainer calls every iteration.
- `common`: what both share: input checks, draws on the CPU, chunks, exact float distances.

A quadruplet is four bank indices (R, P+, P-, N); miners return indices, never embeddings.
"""

from .bank import Bank
from .common import METHODS
from .reference import (
    hardest_negative,
    method1_key,
    method2_key,
    pick_outside_sphere,
    random_quadruplets,
    sample_anchors,
    select_quadruplets,
    valid_anchors,
)

__all__ = [
    "METHODS",
    "Bank",
    "hardest_negative",
    "method1_key",
    "method2_key",
    "pick_outside_sphere",
    "random_quadruplets",
    "sample_anchors",
    "select_quadruplets",
    "valid_anchors",
]
