"""Losses: the paper's (`paper`: eq. 1-6, `QuadrupletLoss`) and the Table 1 baselines'
(`baselines`, `BaselineLoss`): pure functions, one per equation, under two thin modules that
return `LossOutput(total, parts)` with one reduction rule (docs/spec.md). The baselines' pieces
(medoid search, negatives, distance matrices) are in `qlib.losses.baselines`."""

from .baselines import (
    BASELINES,
    NORMALIZED,
    BaselineLoss,
    facility_location_loss,
    lifted_structure_loss,
    npairs_l2_penalty,
    npairs_loss,
    semihard_triplet_loss,
    triplet_global_loss,
)
from .paper import (
    LossOutput,
    QuadrupletLoss,
    classification_loss,
    combined_loss,
    contrastive_loss,
    global_loss,
    joint_loss,
    pairwise_distance,
    quadruplet_distances,
    triplet_loss,
    value_checks,
)

__all__ = [
    "BASELINES",
    "NORMALIZED",
    "BaselineLoss",
    "LossOutput",
    "QuadrupletLoss",
    "classification_loss",
    "combined_loss",
    "contrastive_loss",
    "facility_location_loss",
    "global_loss",
    "joint_loss",
    "lifted_structure_loss",
    "npairs_l2_penalty",
    "npairs_loss",
    "pairwise_distance",
    "quadruplet_distances",
    "semihard_triplet_loss",
    "triplet_global_loss",
    "triplet_loss",
    "value_checks",
]
