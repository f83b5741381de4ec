"""Training: the paper's global quadruplet mining (Section 3.3, eq. 6) and the Table 1 baselines.

This is the one module that wires data, model, miners and losses together.

One iteration of a quadruplet method (`random`, `method1`, `method2`):
  bank of training embeddings (eval mode, no gradient; refreshed at the start of every epoch,
  optionally also every `bank_refresh_iterations`) -> B anchors drawn uniformly among the valid
  ones -> quadruplets (R, P+, P-, N) selected over the whole bank -> the 4B images (train
  transform) through the model in train mode -> eq. 6 -> one SGD step.

The baselines (`semihard`, `lifted`, `npairs`, `triplet_global`) train the same backbone on the
same data and schedule with class-balanced batches (P classes x K images, 4B images per
iteration as far as the classes allow) and a batch-wise loss; they need no bank.

A run writes only under `<run_root>/<run_name>/`:
  config.json   the TrainConfig + environment (device, versions, seed, git commit) + data sizes
  log.csv       one row per iteration (LOG_COLUMNS)
  metrics.json  a list of evaluations on the test split, the last one final ("final": true)
  checkpoints/last.pt  written atomically after every epoch; `resume=True` continues from it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import data as qdata
from . import losses as qlosses
from . import metrics as qmetrics
from . import miners as qminers
from . import model as qmodel
from .utils import (
    atomic_write_bytes,
    read_json,
    repo_root,
    resolve_device,
    resolve_path,
    seed_everything,
    write_json,
)

__all__ = [
    "BASELINE_METHODS",
    "BASELINES_NOT_BUILT",
    "LOG_COLUMNS",
    "METHODS",
    "PRESETS",
    "QUADRUPLET_METHODS",
    "CudaOutOfMemoryError",
    "NonFiniteLossError",
    "RunData",
    "TrainConfig",
    "TrainingInterrupted",
    "build_datasets",
    "config_from_preset",
    "embed_dataset",
    "evaluate_run",
    "experiment_manifest",
    "load_run",
    "read_log",
    "read_metrics",
    "run_dir_of",
    "run_is_finished",
    "time_shares",
    "train",
]

QUADRUPLET_METHODS = tuple(qminers.METHODS)  # ("random", "method1", "method2")
BASELINE_METHODS = ("semihard", "lifted", "npairs", "triplet_global")
METHODS = QUADRUPLET_METHODS + BASELINE_METHODS

# Table 1 rows we do not train; notebook 05 reads this to say so in the table.
BASELINES_NOT_BUILT = {
    "clustering": (
        "Clustering (facility location, Song et al. 2017) is not implemented here: its "
        "structured loss needs a greedy facility-location solver per batch; the Table 1 row is "
        "quoted from the paper only."
    )
}

LOG_COLUMNS = (
    "epoch",
    "iteration",
    "lr",
    "loss",
    "joint",  # eq. 5 distance terms (quadruplet methods)
    "global",  # eq. 3 before eta (quadruplets) / triplet global loss (triplet_global)
    "classification",  # eq. 4 (quadruplet methods)
    "triplet",  # eq. 2 term of triplet_global
    "d_rpp",  # mean D(R,P+): quadruplets; mean same-fine pair distance in the batch: baselines
    "d_rpn",  # mean D(R,P-): quadruplets; same-coarse, other-fine pairs: baselines
    "d_rn",  # mean D(R,N): quadruplets; other-coarse pairs: baselines
    "fallback_pos",  # share of quadruplets whose P+ had no candidate outside the hypersphere
    "fallback_neg",  # the same for P-
    "time_bank",  # seconds refreshing the bank (on the iteration that refreshed it)
    "time_selection",  # seconds sampling anchors + selecting quadruplets / class-balanced batch
    "time_data",  # seconds waiting for the images
    "time_forward_backward",  # forward, loss, backward, optimizer step
    "time_iteration",  # wall time of the whole iteration, bank refresh included
)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
# Fields that may change between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = frozenset(
    {
        "resume",
        "progress",
        "device",
        "num_workers",
        "stop_after_iterations",
        "epochs",
        "eval_batch_size",
        "keep_epoch_checkpoints",
        "root",
        "manifest_path",
    }
)


class NonFiniteLossError(FloatingPointError):
    """The loss (or the embeddings feeding it) became NaN or inf: the run stops."""


class TrainingInterrupted(RuntimeError):
    """Raised by the `stop_after_iterations` test hook, like a crash between two checkpoints."""


class CudaOutOfMemoryError(RuntimeError):
    """CUDA ran out of memory; the message says which settings to lower."""


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are the paper's (Section 4, SPEC)."""

    # Data. A manifest CSV (written by notebook 01) takes precedence over dataset/root.
    dataset: str = "stanford_cars"  # "synthetic" | "stanford_cars" | "manifest" | "folder"
    root: str | None = None  # dataset folder (stanford_cars / folder)
    coarse: str = "suffix22"  # Stanford Cars coarse vocabulary: suffix22 | body9 | make49
    synthetic_size: str = "demo"  # synthetic set size: smoke | demo | cars196
    data_seed: int = 0  # seed of the synthetic generator
    manifest_path: str | None = None  # a manifest CSV; overrides dataset/root when set
    cache_images: bool = False  # keep decoded images in memory (small sets)
    # Model (Fig. 1).
    backbone: str = "resnet101"
    pretrained: str | None = "imagenet"  # None | "imagenet" | path to a weights file
    embedding_dim: int = 1024
    normalize: bool = True  # L2-normalise the embedding (SPEC default)
    freeze_bn: bool = False
    image_size: int | None = 224  # None: the backbone's default
    # Method and loss (eq. 3-6); baselines' settings below.
    method: str = "method2"  # one of METHODS
    m1: float = 0.7
    m2: float = 0.3
    t1: float = 0.7
    t2: float = 0.3
    lambda_c1: float = 0.08
    lambda_c2: float = 0.25
    lambda_g1: float = 1.0
    lambda_g2: float = 1.0
    eta: float = 1.0
    reduction: str = "sum"  # eq. 6 sums over the batch as printed; "mean" is the option
    triplet_margin: float = 0.2  # semihard and triplet_global (FaceNet's margin)
    global_margin: float = 0.4  # t of the triplet global loss (Kumar et al. 2016)
    lambda_global: float = 1.0  # weight of the triplet global loss
    lifted_neg_margin: float = 1.0  # Song et al. 2016
    images_per_class: int = 4  # K of the class-balanced baseline batches
    # Optimisation.
    optimizer: str = "sgd"  # "sgd" (paper) | "adam"
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Schedule. An epoch is a fixed number of iterations.
    epochs: int = 40
    iterations_per_epoch: int | None = None  # None: ceil(valid anchors / batch_size)
    batch_size: int = 32  # quadruplets per iteration (4 * batch_size images)
    bank_refresh_iterations: int | None = None  # also refresh every N iterations in an epoch
    eval_every: int = 5  # epochs between evaluations (and always at the end)
    eval_at_start: bool = True  # evaluate the untrained network first (epoch 0)
    eval_batch_size: int = 256
    # Hardware.
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_workers: int = 0  # data-loader worker processes
    amp: bool = True  # mixed precision; CUDA only (ignored on CPU)
    # Run bookkeeping.
    seed: int = 0
    run_root: str = "runs/paper"  # relative paths are relative to the repository root
    run_name: str | None = None  # None: f"{method}_seed{seed}"
    resume: bool = False  # continue from checkpoints/last.pt; a finished run is not retrained
    keep_epoch_checkpoints: bool = False  # also keep checkpoints/epoch_XXX.pt
    progress: bool = True  # tqdm bars
    stop_after_iterations: int | None = None  # test hook: raise TrainingInterrupted there

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}.")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {self.reduction!r}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        positive = ("embedding_dim", "batch_size", "eval_every", "eval_batch_size")
        optional_positive = (
            "iterations_per_epoch",
            "bank_refresh_iterations",
            "image_size",
            "stop_after_iterations",
        )
        for name in positive + optional_positive:
            value = getattr(self, name)
            if value is None and name in optional_positive:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        for name in ("epochs", "num_workers", "seed", "data_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
        if isinstance(self.images_per_class, bool) or self.images_per_class < 2:
            raise ValueError(
                f"images_per_class must be an int >= 2 (a class needs a positive pair), "
                f"got {self.images_per_class!r}."
            )
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")

    @property
    def name(self) -> str:
        """The run folder's name: run_name, or f"{method}_seed{seed}"."""
        return self.run_name or f"{self.method}_seed{self.seed}"

    @property
    def is_quadruplet(self) -> bool:
        return self.method in QUADRUPLET_METHODS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig fields {unknown}; expected some of {sorted(known)}."
            )
        return cls(**values)


# Batch size / epochs are not in the paper. "paper": 32 quadruplets (128 images of 224 px, fits a
# 24 GB GPU with AMP) and 40 epochs of ceil(8054/32) = 252 iterations (~10k SGD steps at the
# paper's lr 3e-4), evaluated every 5 epochs.
# "demo": a small CNN from scratch on the synthetic set at 32 px, about a minute per method on a
# 2-core CPU. It uses Adam (lr 1e-3), not the paper's SGD: from scratch, SGD at lr 3e-4 barely
# moves the network in a minute, and the seven losses differ in scale (eq. 6 sums over the
# batch, the pytorch-metric-learning losses average), so one SGD lr is too large for some and
# too small for others; Adam's steps do not depend on the loss scale. In our tuning runs SGD at
# lr 0.03 diverged (test R@1 fell below the untrained network's), SGD at lr 0.001-0.003 learned
# the quadruplet methods only, Adam at lr 1e-3 learned all seven (R@1 about 45-80% from 9%).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "dataset": "stanford_cars",
        "coarse": "suffix22",
        "backbone": "resnet101",
        "pretrained": "imagenet",
        "image_size": 224,
        "embedding_dim": 1024,
        "batch_size": 32,
        "epochs": 40,
        "eval_every": 5,
        "num_workers": 8,
        "run_root": "runs/paper",
    },
    "demo": {
        "dataset": "synthetic",
        "synthetic_size": "demo",
        "cache_images": True,
        "backbone": "smallcnn",
        "pretrained": None,
        "image_size": 32,
        "embedding_dim": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 16,
        "epochs": 6,
        "eval_every": 3,
        "eval_batch_size": 256,
        "num_workers": 0,
        "run_root": "runs/demo",
    },
    "smoke": {
        "dataset": "synthetic",
        "synthetic_size": "smoke",
        "cache_images": True,
        "backbone": "smallcnn",
        "pretrained": None,
        "image_size": 32,
        "embedding_dim": 16,
        "lr": 0.01,
        "batch_size": 4,
        "epochs": 2,
        "iterations_per_epoch": 3,
        "eval_every": 1,
        "eval_batch_size": 64,
        "num_workers": 0,
        "run_root": "runs/smoke",
    },
}


def config_from_preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset's TrainConfig with `overrides` applied. An override equal to "" keeps the
    preset's value, so notebook parameters can stay flat literals ("" = preset default)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}; expected some of {sorted(known)}.")
    values = dict(PRESETS[name])
    values.update({k: v for k, v in overrides.items() if not (isinstance(v, str) and v == "")})
    if isinstance(values.get("pretrained"), str) and values["pretrained"].lower() == "none":
        values["pretrained"] = None
    return TrainConfig(**values)


def run_dir_of(config: TrainConfig) -> Path:
    """`<run_root>/<run name>`; a relative run_root is taken from the repository root."""
    return resolve_path(config.run_root) / config.name


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The manifest of a run split into train/test, with datasets and remapped labels.

    Bank index i = row i of the training split. `fine` is remapped to 0..k2-1 over the training
    fine classes (the fine head), `coarse` to 0..k1-1 over every coarse id of the manifest.
    """

    manifest: pd.DataFrame
    train_manifest: pd.DataFrame
    test_manifest: pd.DataFrame
    train_fine: Tensor  # (N_train,) in 0..k2-1
    train_coarse: Tensor  # (N_train,) in 0..k1-1
    test_fine: Tensor  # (N_test,) original fine ids (only equality matters)
    n_coarse: int
    n_fine: int
    image_size: int
    train_eval_set: Any = field(repr=False)  # eval transform: the bank
    train_aug_set: Any = field(repr=False)  # train transform: the batches
    test_set: Any = field(repr=False)  # eval transform: evaluation


def _load_manifest(config: TrainConfig) -> pd.DataFrame:
    if config.manifest_path:
        return qdata.load_manifest(resolve_path(config.manifest_path))
    if config.dataset == "synthetic":
        return qdata.load_synthetic(size=config.synthetic_size, seed=config.data_seed)
    if config.dataset == "stanford_cars":
        return qdata.load_dataset(config.dataset, root=config.root, coarse=config.coarse)
    return qdata.load_dataset(config.dataset, root=config.root)


def build_datasets(config: TrainConfig) -> RunData:
    """Load the run's manifest and build its three datasets (bank, batches, test)."""
    manifest = _load_manifest(config)
    train_manifest = manifest[manifest["split"] == "train"].reset_index(drop=True)
    test_manifest = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if len(train_manifest) == 0 or len(test_manifest) == 0:
        raise ValueError(
            f"the manifest needs both a 'train' and a 'test' split, got {len(train_manifest)} "
            f"training and {len(test_manifest)} test rows."
        )
    fine_ids = sorted(train_manifest["fine"].unique())
    coarse_ids = sorted(manifest["coarse"].unique())
    fine_map = {int(f): i for i, f in enumerate(fine_ids)}
    coarse_map = {int(c): i for i, c in enumerate(coarse_ids)}
    image_size = config.image_size or qmodel.default_image_size(config.backbone)
    train_tf = qdata.make_transforms(image_size, train=True)
    eval_tf = qdata.make_transforms(image_size, train=False)
    cache = config.cache_images
    train_eval_set = qdata.HierarchicalImageDataset(train_manifest, eval_tf, cache_in_memory=cache)
    train_aug_set = train_eval_set.with_transform(train_tf)  # one decoded cache for both
    test_set = qdata.HierarchicalImageDataset(test_manifest, eval_tf, cache_in_memory=cache)
    return RunData(
        manifest=manifest,
        train_manifest=train_manifest,
        test_manifest=test_manifest,
        train_fine=torch.tensor([fine_map[int(f)] for f in train_manifest["fine"]]),
        train_coarse=torch.tensor([coarse_map[int(c)] for c in train_manifest["coarse"]]),
        test_fine=torch.tensor(test_manifest["fine"].to_numpy(dtype=np.int64)),
        n_coarse=len(coarse_ids),
        n_fine=len(fine_ids),
        image_size=image_size,
        train_eval_set=train_eval_set,
        train_aug_set=train_aug_set,
        test_set=test_set,
    )


def _model_kwargs(config: TrainConfig, run_data: RunData) -> dict[str, Any]:
    return {
        "backbone": config.backbone,
        "embedding_dim": config.embedding_dim,
        "n_coarse": run_data.n_coarse,
        "n_fine": run_data.n_fine,
        "normalize": config.normalize,
        "freeze_bn": config.freeze_bn,
    }


# ----------------------------------------------------------------------------------------------
# Embedding and evaluation
# ----------------------------------------------------------------------------------------------


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


def embed_dataset(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    *,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = False,
) -> Tensor:
    """Embeddings (N, d) float32 on the CPU of every item of `dataset`, in order (eval mode, no
    gradient); `qlib.model.embed_images` with optional CUDA mixed precision."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    with _autocast(device, amp):
        return qmodel.embed_images(
            model, dataset, batch_size, device, num_workers=num_workers, progress=progress
        )


def _evaluate(
    model: nn.Module,
    run_data: RunData,
    config: TrainConfig,
    device: torch.device,
    batch_size: int | None = None,
) -> dict[str, float]:
    embeddings = embed_dataset(
        model,
        run_data.test_set,
        batch_size or config.eval_batch_size,
        device,
        num_workers=config.num_workers,
        amp=config.amp,
        progress=config.progress,
    )
    return {
        k: float(v) for k, v in qmetrics.retrieval_metrics(embeddings, run_data.test_fine).items()
    }


# ----------------------------------------------------------------------------------------------
# Batches: quadruplets (global mining over the bank) and class-balanced baseline batches
# ----------------------------------------------------------------------------------------------


def _class_balanced_batch(
    members: list[Tensor], n_images: int, per_class: int, generator: torch.Generator
) -> Tensor:
    """P classes x K images (P*K <= n_images), classes without replacement, images without
    replacement when the class has enough of them -> LongTensor (P*K,) of training indices."""
    n_classes = len(members)
    n_picked = max(2, min(n_classes, n_images // per_class))
    classes = torch.randperm(n_classes, generator=generator)[:n_picked]
    picked = []
    for c in classes.tolist():
        pool = members[c]
        if len(pool) >= per_class:
            choice = torch.randperm(len(pool), generator=generator)[:per_class]
        else:
            choice = torch.randint(len(pool), (per_class,), generator=generator)
        picked.append(pool[choice])
    return torch.cat(picked)


def _images_loader(
    dataset: Any,
    batches: list[list[int]],
    config: TrainConfig,
    device: torch.device,
    seed: int,
) -> torch.utils.data.DataLoader:
    """A loader yielding the given index lists in order; workers are seeded from `seed`."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


# ----------------------------------------------------------------------------------------------
# Losses of one batch
# ----------------------------------------------------------------------------------------------


def _pair_distance_means(embeddings: Tensor, fine: Tensor, coarse: Tensor) -> dict[str, float]:
    """Mean distance over the batch's same-fine, same-coarse-other-fine and other-coarse pairs."""
    with torch.no_grad():
        emb = embeddings.detach().float()
        dist = torch.cdist(emb, emb)
        off_diag = ~torch.eye(len(fine), dtype=torch.bool, device=emb.device)
        same_fine = (fine[:, None] == fine[None, :]) & off_diag
        same_coarse = coarse[:, None] == coarse[None, :]
        groups = {
            "d_rpp": same_fine,
            "d_rpn": same_coarse & ~same_fine & off_diag,
            "d_rn": ~same_coarse,
        }
        return {k: float(dist[m].mean()) if bool(m.any()) else math.nan for k, m in groups.items()}


class _BaselineLoss:
    """The Table 1 baselines' batch losses on (n, d) embeddings and (n,) fine labels.

    - semihard: pytorch-metric-learning TripletMarginLoss on the batch's semi-hard triplets
      (TripletMarginMiner, type_of_triplets="semihard"), margin `triplet_margin`, Euclidean.
    - lifted: LiftedStructureLoss (Song et al. 2016), negative margin `lifted_neg_margin`.
    - npairs: NPairsLoss (Sohn 2016), library defaults (dot-product similarity).
    - triplet_global: ours, Kumar et al. 2016: over every triplet of the batch, the mean of
      eq. 2 (margin `triplet_margin`) + `lambda_global` x the triplet global loss (margin
      `global_margin`), one global term per batch.
    """

    def __init__(self, config: TrainConfig) -> None:
        from pytorch_metric_learning import distances, losses, miners

        self.method = config.method
        self.config = config
        distance = distances.LpDistance(normalize_embeddings=config.normalize, p=2, power=1)
        if config.method == "semihard":
            self.miner = miners.TripletMarginMiner(
                margin=config.triplet_margin, type_of_triplets="semihard", distance=distance
            )
            self.loss = losses.TripletMarginLoss(margin=config.triplet_margin, distance=distance)
        elif config.method == "lifted":
            self.miner = None
            self.loss = losses.LiftedStructureLoss(
                neg_margin=config.lifted_neg_margin, pos_margin=0.0, distance=distance
            )
        elif config.method == "npairs":
            self.miner = None
            self.loss = losses.NPairsLoss()
        elif config.method == "triplet_global":
            self.miner = miners.TripletMarginMiner(type_of_triplets="all", distance=distance)
            self.loss = None
        else:
            raise ValueError(
                f"{config.method!r} is not a baseline; expected one of {BASELINE_METHODS}."
            )

    def __call__(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        if self.method == "triplet_global":
            anchor, positive, negative = self.miner(embeddings, labels)
            if len(anchor) == 0:
                zero = embeddings.sum() * 0.0
                return zero, {"loss": 0.0, "triplet": 0.0, "global": 0.0}
            d_rp = qlosses.pairwise_distance(embeddings[anchor], embeddings[positive])
            d_rn = qlosses.pairwise_distance(embeddings[anchor], embeddings[negative])
            triplet = qlosses.triplet_loss(d_rp, d_rn, self.config.triplet_margin).mean()
            glob = qlosses.triplet_global_loss(
                d_rp, d_rn, t=self.config.global_margin, lambda_g=1.0
            )
            total = triplet + self.config.lambda_global * glob
            return total, {
                "loss": float(total.detach()),
                "triplet": float(triplet.detach()),
                "global": float(glob.detach()),
            }
        if self.miner is not None:
            total = self.loss(embeddings, labels, self.miner(embeddings, labels))
        else:
            total = self.loss(embeddings, labels)
        return total, {"loss": float(total.detach())}


# ----------------------------------------------------------------------------------------------
# Run folder: environment, checkpoints, logs
# ----------------------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment(device: torch.device, config: TrainConfig) -> dict[str, Any]:
    import torchvision

    try:
        import pytorch_metric_learning

        pml_version = pytorch_metric_learning.__version__
    except ImportError:  # only the baselines need it
        pml_version = None
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "amp": bool(config.amp and device.type == "cuda"),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pytorch_metric_learning": pml_version,
        "platform": platform.platform(),
        "seed": config.seed,
        "git_commit": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the state seed_everything seeds)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # Our own files: they hold Python/NumPy RNG states, which weights_only cannot read.
    return torch.load(path, map_location="cpu", weights_only=False)


def _checkpoint_path(run_dir: Path, checkpoint: str | Path = "last") -> Path:
    candidate = Path(checkpoint)
    if candidate.suffix == ".pt" and candidate.is_file():
        return candidate
    name = str(checkpoint)
    path = run_dir / CHECKPOINT_DIR / (name if name.endswith(".pt") else f"{name}.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; expected a finished or interrupted run "
            f"folder with {CHECKPOINT_DIR}/{LAST_CHECKPOINT} (train a run first)."
        )
    return path


class _Log:
    """log.csv, one row per iteration, appended and flushed as training goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_COLUMNS, restval="")
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: _csv_value(v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def _truncate_log(path: Path, last_iteration: int) -> None:
    """Drop the rows logged after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(r["iteration"]) <= last_iteration]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """log.csv of a run as a DataFrame (empty cells are NaN)."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; expected a training run folder.")
    return pd.read_csv(path)


def experiment_manifest(run_root: str | Path) -> str:
    """`<run_root>/data/manifest.csv` (written by notebook 01) if it exists, else ""."""
    path = resolve_path(run_root) / "data" / "manifest.csv"
    return str(path) if path.is_file() else ""


def time_shares(log: pd.DataFrame) -> dict[str, float]:
    """Share of the logged wall time (sum of time_iteration) per part of an iteration."""
    total = float(log["time_iteration"].sum())
    if total <= 0:
        raise ValueError("the log holds no time; expected at least one timed iteration.")
    parts = {
        "bank refresh": "time_bank",
        "selection": "time_selection",
        "data loading": "time_data",
        "forward/backward": "time_forward_backward",
    }
    return {name: float(log[column].sum()) / total for name, column in parts.items()}


def run_is_finished(run_dir: str | Path) -> bool:
    """Whether a run folder holds a final evaluation (the last metrics.json entry is final)."""
    path = resolve_path(run_dir) / "metrics.json"
    if not path.is_file():
        return False
    entries = read_json(path)
    return bool(entries) and bool(entries[-1].get("final"))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.json of a run: a list of evaluations; the last one is final when "final" is true."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; expected a training run folder.")
    return read_json(path)


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _oom_error(config: TrainConfig, exc: BaseException) -> CudaOutOfMemoryError:
    return CudaOutOfMemoryError(
        f"CUDA ran out of memory with batch_size={config.batch_size} quadruplets "
        f"({4 * config.batch_size} images per step), image_size={config.image_size}, "
        f"amp={config.amp}, eval_batch_size={config.eval_batch_size}; lower batch_size or "
        "image_size (or eval_batch_size if it failed while embedding), or turn amp on."
    )


def _check_finite(
    iteration: int,
    embeddings: Tensor,
    batch_indices: Tensor,
    what: str,
    total: Tensor | None = None,
) -> None:
    """Stop with the iteration and the offending rows' bank indices when the embeddings (rows of
    `embeddings`, one per row of `batch_indices`) or the loss `total` are NaN/inf."""
    rows_ok = torch.isfinite(embeddings.detach()).flatten(1).all(dim=1)
    if not bool(rows_ok.all()):
        bad = (~rows_ok).nonzero().flatten().tolist()
        problem = "non-finite embeddings"
    elif total is not None and not bool(torch.isfinite(total.detach()).all()):
        bad = list(range(len(batch_indices)))
        problem = f"non-finite loss ({float(total.detach())})"
    else:
        return
    shown = [batch_indices[i].tolist() for i in bad[:8]]
    more = f" (and {len(bad) - 8} more)" if len(bad) > 8 else ""
    raise NonFiniteLossError(
        f"{problem} at iteration {iteration}, {what} (bank indices) {shown}{more}; lower lr, "
        "turn amp off, or check the images of these indices."
    )


def train(config: TrainConfig) -> Path:
    """Train one run as `config` says; returns its folder `<run_root>/<run name>`."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}.")
    device = resolve_device(config.device)
    # Multi-threaded CPU scatter-adds (the backward of indexing with repeated indices, as in the
    # triplet baselines) sum in a varying order; the deterministic kernels make a CPU run
    # repeatable at the same speed. CUDA keeps its fast kernels.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(config, device)
    except torch.cuda.OutOfMemoryError as exc:
        raise _oom_error(config, exc) from exc
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _fresh_start(run_dir: Path) -> None:
    """Remove what an earlier run of the same name wrote (only the files train owns)."""
    for name in ("config.json", "log.csv", "metrics.json"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)


def _check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.to_dict()
    differ = sorted(
        k
        for k in set(saved) | set(current)
        if k not in _RESUME_FREE_FIELDS and saved.get(k) != current.get(k)
    )
    if differ:
        raise ValueError(
            f"cannot resume: the run's saved config differs in {differ}; resume with the same "
            "settings, choose another run_name, or pass resume=False to start over."
        )


def _train(config: TrainConfig, device: torch.device) -> Path:
    run_dir = run_dir_of(config)
    last_path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    checkpoint = None
    if config.resume and last_path.is_file():
        checkpoint = _load_checkpoint(last_path)
        _check_resumable(checkpoint["config"], config)
        if checkpoint["epoch"] >= config.epochs and checkpoint.get("done"):
            if config.progress:
                tqdm.write(f"{run_dir} is finished; not retraining (resume=True).")
            return run_dir
    else:
        _fresh_start(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    selection_gen = seed_everything(config.seed)
    run_data = build_datasets(config)
    model_kwargs = _model_kwargs(config, run_data)
    model = qmodel.EmbeddingNet(**model_kwargs, pretrained=config.pretrained).to(device)
    optimizer = _make_optimizer(model, config)
    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    valid = qminers.valid_anchors(run_data.train_fine, run_data.train_coarse)
    n_valid = int(valid.sum())
    if config.is_quadruplet and n_valid == 0:
        raise ValueError(
            "no training image can anchor a quadruplet (each needs another image of its fine "
            "class and a sibling fine class in its coarse class); check the coarse labels."
        )
    # An epoch: about one pass over the valid anchors (B anchors per iteration).
    iterations_per_epoch = config.iterations_per_epoch or max(
        1, math.ceil((n_valid or len(run_data.train_fine)) / config.batch_size)
    )
    metrics: list[dict[str, Any]] = []
    epoch = iteration = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        selection_gen.set_state(checkpoint["selection_generator"])
        _set_rng_state(checkpoint["rng"])
        epoch, iteration = int(checkpoint["epoch"]), int(checkpoint["iteration"])
        metrics = [m for m in read_metrics(run_dir) if m["iteration"] <= iteration]
        for m in metrics:
            m.pop("final", None)
        _truncate_log(run_dir / "log.csv", iteration)
        if config.progress:
            tqdm.write(f"resuming {run_dir.name} after epoch {epoch} (iteration {iteration})")
    else:
        (run_dir / "log.csv").unlink(missing_ok=True)

    write_json(
        run_dir / "config.json",
        {
            "config": config.to_dict(),
            "environment": _environment(device, config),
            "data": {
                "n_train": len(run_data.train_fine),
                "n_test": len(run_data.test_fine),
                "n_valid_anchors": n_valid,
                "n_coarse": run_data.n_coarse,
                "n_fine": run_data.n_fine,
                "image_size": run_data.image_size,
                "iterations_per_epoch": iterations_per_epoch,
                "images_per_iteration": 4 * config.batch_size,
            },
            "model": model_kwargs,
            "resumed_from_epoch": epoch if checkpoint is not None else None,
        },
    )

    def evaluate_now(final: bool) -> None:
        entry = {
            "epoch": epoch,
            "iteration": iteration,
            **_evaluate(model, run_data, config, device),
        }
        if final:
            entry["final"] = True
        metrics.append(entry)
        write_json(run_dir / "metrics.json", metrics)

    if checkpoint is None and config.eval_at_start:
        evaluate_now(final=config.epochs == 0)

    step = _make_step(config, model, optimizer, scaler, run_data, device, use_amp)
    members = [(run_data.train_fine == c).nonzero().flatten() for c in range(run_data.n_fine)]
    refresh_every = config.bank_refresh_iterations or iterations_per_epoch
    log = _Log(run_dir / "log.csv")
    epoch_bar = tqdm(
        range(epoch + 1, config.epochs + 1),
        desc=f"{config.name} epochs",
        disable=not config.progress,
        initial=epoch,
        total=config.epochs,
    )
    try:
        for epoch in epoch_bar:
            iter_bar = tqdm(
                total=iterations_per_epoch,
                desc=f"epoch {epoch}",
                leave=False,
                disable=not config.progress,
            )
            for segment_start in range(0, iterations_per_epoch, refresh_every):
                n_iters = min(refresh_every, iterations_per_epoch - segment_start)
                batches, fallbacks, selection_times, time_bank = _segment_batches(
                    config, model, run_data, valid, members, n_iters, selection_gen, device
                )
                loader_seed = int(torch.randint(2**62, (1,), generator=selection_gen).item())
                loader = _images_loader(
                    run_data.train_aug_set,
                    [b.flatten().tolist() for b in batches],
                    config,
                    device,
                    loader_seed,
                )
                t_wait = time.perf_counter()
                for i, (images, _, _) in enumerate(loader):
                    time_data = time.perf_counter() - t_wait
                    iteration += 1
                    t0 = time.perf_counter()
                    parts = step(images, batches[i], iteration)
                    time_fb = time.perf_counter() - t0
                    bank_part = time_bank if i == 0 else 0.0
                    row = {
                        "epoch": epoch,
                        "iteration": iteration,
                        "lr": optimizer.param_groups[0]["lr"],
                        **parts,
                        "time_bank": bank_part,
                        "time_selection": selection_times[i],
                        "time_data": time_data,
                        "time_forward_backward": time_fb,
                        "time_iteration": bank_part + selection_times[i] + time_data + time_fb,
                    }
                    if fallbacks[i] is not None:
                        share = fallbacks[i].float().mean(dim=0)
                        row["fallback_pos"], row["fallback_neg"] = float(share[0]), float(share[1])
                    log.write(row)
                    iter_bar.update(1)
                    iter_bar.set_postfix(loss=f"{parts['loss']:.3f}")
                    if (
                        config.stop_after_iterations is not None
                        and iteration >= config.stop_after_iterations
                    ):
                        raise TrainingInterrupted(
                            f"stopped after iteration {iteration} (stop_after_iterations)."
                        )
                    t_wait = time.perf_counter()
            iter_bar.close()
            last = epoch == config.epochs
            if epoch % config.eval_every == 0 or last:
                evaluate_now(final=last)
            payload = _checkpoint_payload(
                config, model, optimizer, scaler, selection_gen, model_kwargs, epoch, iteration
            )
            _save_checkpoint(last_path, payload)
            if config.keep_epoch_checkpoints:
                _save_checkpoint(run_dir / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt", payload)
    finally:
        log.close()
        epoch_bar.close()
    if config.epochs == 0:
        payload = _checkpoint_payload(
            config, model, optimizer, scaler, selection_gen, model_kwargs, 0, 0
        )
        _save_checkpoint(last_path, payload)
    return run_dir


def _segment_batches(
    config: TrainConfig,
    model: nn.Module,
    run_data: RunData,
    valid: Tensor,
    members: list[Tensor],
    n_iters: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[list[Tensor], list[Tensor | None], list[float], float]:
    """The batches of `n_iters` iterations between two bank refreshes -> (batches, fallbacks,
    selection seconds per iteration, bank refresh seconds).

    Quadruplet methods: refresh the bank, then per iteration B anchors and their quadruplets,
    (B, 4) bank indices. Baselines: one class-balanced batch of training indices per iteration.
    Selecting the whole segment up front is the same as selecting per iteration (the bank does
    not change within a segment) and lets a multi-worker loader prefetch the images.
    """
    batches: list[Tensor] = []
    fallbacks: list[Tensor | None] = [None] * n_iters
    seconds: list[float] = []
    time_bank = 0.0
    if config.is_quadruplet:
        tic = time.perf_counter()
        bank = embed_dataset(
            model,
            run_data.train_eval_set,
            config.eval_batch_size,
            device,
            num_workers=config.num_workers,
            amp=config.amp,
            progress=config.progress,
        )
        time_bank = time.perf_counter() - tic
    for i in range(n_iters):
        tic = time.perf_counter()
        if config.is_quadruplet:
            anchors = qminers.sample_anchors(valid, config.batch_size, generator)
            quadruplets, fallbacks[i] = qminers.select_quadruplets(
                bank,
                run_data.train_fine,
                run_data.train_coarse,
                anchors,
                config.method,
                generator=generator,
                return_fallbacks=True,
            )
            batches.append(quadruplets)
        else:
            batches.append(
                _class_balanced_batch(
                    members, 4 * config.batch_size, config.images_per_class, generator
                )
            )
        seconds.append(time.perf_counter() - tic)
    return batches, fallbacks, seconds, time_bank


def _checkpoint_payload(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    model_kwargs: dict[str, Any],
    epoch: int,
    iteration: int,
) -> dict[str, Any]:
    """Everything a resumed run needs to continue bit for bit (the bank is recomputed: it is
    refreshed at the start of every epoch)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "selection_generator": generator.get_state(),
        "rng": _rng_state(),
        "epoch": epoch,
        "iteration": iteration,
        "done": epoch >= config.epochs,
        "config": config.to_dict(),
        "model_kwargs": model_kwargs,
    }


def _make_step(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    run_data: RunData,
    device: torch.device,
    use_amp: bool,
) -> Callable[[Tensor, Tensor, int], dict[str, float]]:
    """One optimisation step on a batch of images -> the logged loss parts."""
    fine_all, coarse_all = run_data.train_fine.to(device), run_data.train_coarse.to(device)
    quadruplet_loss = qlosses.QuadrupletLoss(
        m1=config.m1,
        m2=config.m2,
        t1=config.t1,
        t2=config.t2,
        lambda_c1=config.lambda_c1,
        lambda_c2=config.lambda_c2,
        lambda_g1=config.lambda_g1,
        lambda_g2=config.lambda_g2,
        eta=config.eta,
        reduction=config.reduction,
    )
    baseline_loss = None if config.is_quadruplet else _BaselineLoss(config)

    def step(images: Tensor, batch_indices: Tensor, iteration: int) -> dict[str, float]:
        model.train()
        images = images.to(device, non_blocking=True)
        indices = batch_indices.to(device)
        with _autocast(device, use_amp):
            out = model(images)
        embeddings = out.embedding.float()
        if config.is_quadruplet:
            n = indices.shape[0]
            embeddings = embeddings.view(n, 4, -1)
            anchors = indices[:, 0]
            what = "quadruplets (R, P+, P-, N)"
            _check_finite(iteration, embeddings, batch_indices, what)
            loss_out = quadruplet_loss(
                embeddings,
                out.coarse_logits.float().view(n, 4, -1)[:, 0],
                out.fine_logits.float().view(n, 4, -1)[:, 0],
                coarse_all[anchors],
                fine_all[anchors],
            )
            total, parts = loss_out.total, dict(loss_out.parts)
            _check_finite(iteration, embeddings, batch_indices, what, total)
        else:
            _check_finite(iteration, embeddings, batch_indices[:, None], "images")
            total, parts = baseline_loss(embeddings, fine_all[indices])
            _check_finite(iteration, embeddings, batch_indices[:, None], "images", total)
            parts.update(_pair_distance_means(embeddings, fine_all[indices], coarse_all[indices]))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so that the logged times are the step's own
        return parts

    return step


# ----------------------------------------------------------------------------------------------
# Reading runs back (notebook 04)
# ----------------------------------------------------------------------------------------------


def load_run(
    run_dir: str | Path, checkpoint: str | Path = "last", device: str | torch.device = "cpu"
) -> tuple[TrainConfig, qmodel.EmbeddingNet]:
    """(config, model in eval mode on `device`) of a run folder; `checkpoint` is "last", an
    "epoch_XXX" name or a path to a .pt file."""
    run_dir = resolve_path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{str(config_path)!r} does not exist; expected a run folder written by qlib.train."
        )
    config = TrainConfig.from_dict(read_json(config_path)["config"])
    state = _load_checkpoint(_checkpoint_path(run_dir, checkpoint))
    model = qmodel.EmbeddingNet(**state["model_kwargs"], pretrained=None)
    model.load_state_dict(state["model"])
    return config, model.to(resolve_device(device)).eval()


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str | Path = "last",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
) -> dict[str, float]:
    """Recall@K and NMI (percent) of a run's checkpoint on its test split."""
    config, model = load_run(run_dir, checkpoint, device=device)
    return _evaluate(
        model, build_datasets(config), config, next(model.parameters()).device, batch_size
    )
