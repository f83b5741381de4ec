"""Training: the paper's global quadruplet mining (Section 3.3, eq. 6) and the Table 1 baselines.

The one package that wires data, model, miners and losses together (map: docs/design.md).
"""

from .batches import class_balanced_batch
from .config import (
    METHODS,
    PRESETS,
    QUADRUPLET_METHODS,
    TrainConfig,
    config_from_preset,
)
from .data import build_datasets, experiment_manifest
from .hardware import CudaOutOfMemoryError
from .loop import train, train_step
from .runs import (
    UnsafeCheckpointError,
    finished_as_configured,
    load_run,
    read_log,
    read_metrics,
    run_dir_of,
    run_is_finished,
    time_shares,
)
from .setup import NonFiniteLossError, TrainingInterrupted, initial_model

__all__ = [
    "METHODS",
    "PRESETS",
    "QUADRUPLET_METHODS",
    "CudaOutOfMemoryError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingInterrupted",
    "UnsafeCheckpointError",
    "build_datasets",
    "class_balanced_batch",
    "config_from_preset",
    "experiment_manifest",
    "finished_as_configured",
    "initial_model",
    "load_run",
    "read_log",
    "read_metrics",
    "run_dir_of",
    "run_is_finished",
    "time_shares",
    "train",
    "train_step",
]
