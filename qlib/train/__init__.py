"""Training: the paper's global quadruplet mining (Section 3.3, eq. 6) and the Table 1 baselines.

    config.py     TrainConfig, PRESETS, config_from_preset
    data.py       the run's manifest and datasets, seeded loaders
    batches.py    quadruplets over the bank, class-balanced baseline batches
    loop.py       train_step, the loop (fit) and train(config) -> run folder: the paper's loop
    setup.py      a run's loss, optimizer and initial network, fresh or resumed
    state.py      a run's state and bookkeeping: logging, evaluation, checkpoints
    runs.py       the run folder: config.json, log.csv, metrics.json, safe checkpoints
    warmstart.py  init="classifier": the offline warm start
    hardware.py   device, mixed precision, GPU settings
    distributed.py  torchrun: one run on N processes (DistributedDataParallel)
    __main__.py   python -m qlib.train (one run from the command line, under torchrun too)

This is the one package that wires data, model, miners and losses together.
"""

from ..logs import LOG_COLUMNS
from .batches import class_balanced_batch
from .config import (
    BASELINE_METHODS,
    INITS,
    METHOD_SETTINGS,
    METHODS,
    PRESETS,
    QUADRUPLET_METHODS,
    TrainConfig,
    config_from_preset,
)
from .data import RunData, build_datasets, experiment_manifest
from .hardware import CudaOutOfMemoryError
from .loop import NonFiniteLossError, TrainingInterrupted, train, train_step
from .runs import (
    UnsafeCheckpointError,
    load_run,
    read_config,
    read_log,
    read_metrics,
    run_dir_of,
    run_is_finished,
    time_shares,
)
from .setup import initial_model

__all__ = [
    "BASELINE_METHODS",
    "INITS",
    "LOG_COLUMNS",
    "METHODS",
    "METHOD_SETTINGS",
    "PRESETS",
    "QUADRUPLET_METHODS",
    "CudaOutOfMemoryError",
    "NonFiniteLossError",
    "RunData",
    "TrainConfig",
    "TrainingInterrupted",
    "UnsafeCheckpointError",
    "build_datasets",
    "class_balanced_batch",
    "config_from_preset",
    "evaluate_run",
    "experiment_manifest",
    "initial_model",
    "load_run",
    "read_config",
    "read_log",
    "read_metrics",
    "run_dir_of",
    "run_is_finished",
    "time_shares",
    "train",
    "train_step",
]


def evaluate_run(run_dir, checkpoint="last", device="auto", batch_size=None) -> dict[str, float]:
    """Recall@K and NMI (percent) of a run's checkpoint on its evaluation split."""
    from .. import metrics as qmetrics
    from ..model import embed_images

    config, model = load_run(run_dir, checkpoint, device=device)
    data = build_datasets(config)
    embeddings = embed_images(model, data.eval_set, batch_size or config.eval_batch_size)
    return qmetrics.retrieval_metrics(embeddings, data.eval_fine)
