"""A run's data: its manifest (never silently another experiment's), its three datasets (the bank,
the augmented batches, the evaluation split), and loaders whose randomness is the run's own
(every crop and flip drawn by the trainer's data generator, see `AugmentedItems`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import data as qdata
from .. import model as qmodel
from ..utils import resolve_path
from .config import TrainConfig

ROOTED_DATASETS = ("stanford_cars", "sop", "cub200", "folder")


@dataclass
class RunData:
    """The manifest of a run split into train and evaluation parts, with datasets and labels.

    Bank index i = row i of the training split. `train_fine` is remapped to 0..k2-1 over the
    training fine classes (the fine head), `train_coarse` to 0..k1-1 over every coarse id of the
    manifest. `eval_fine` keeps the manifest's ids (only equality matters for Recall@K / NMI).
    """

    manifest: pd.DataFrame
    train_manifest: pd.DataFrame
    eval_manifest: pd.DataFrame
    train_fine: Tensor  # (N_train,) in 0..k2-1
    train_coarse: Tensor  # (N_train,) in 0..k1-1
    eval_fine: Tensor  # (N_eval,)
    n_coarse: int
    n_fine: int
    image_size: int
    train_eval_set: Any = field(repr=False)  # eval transform: the bank
    train_aug_set: Any = field(repr=False)  # AugmentedItems: the batches
    eval_set: Any = field(repr=False)  # eval transform: evaluation


def experiment_manifest(run_root: str | Path) -> str:
    """`<run_root>/data/manifest.csv` (written by notebook 01) if it exists, else ""."""
    path = resolve_path(run_root) / "data" / "manifest.csv"
    return str(path) if path.is_file() else ""


def _check_manifest_matches(config: TrainConfig, path: Path) -> None:
    """A manifest written for one dataset must not silently stand in for another."""
    recorded = qdata.manifest_source(path)
    if recorded is None or config.dataset == "manifest":
        return  # the user's own CSV, or "train on this manifest as it is"
    wanted = qdata.dataset_source(
        config.dataset, config.root, config.coarse, config.synthetic_size, config.data_seed
    )
    differ = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if differ:
        raise ValueError(
            f"the manifest {path} was built from {recorded} but this run asks for {wanted} "
            f"(they differ in {differ}); give this dataset a run_root of its own (e.g. "
            "runs/paper) and build its manifest there with notebook 01, or set "
            "dataset='manifest' to train on that manifest as it is."
        )


def load_run_manifest(config: TrainConfig) -> pd.DataFrame:
    """The run's manifest: `manifest_path` if set (checked against dataset/root), else loaded
    from `dataset`/`root`."""
    if config.dataset in ROOTED_DATASETS and config.root:
        root = resolve_path(config.root)
        if not root.exists():
            raise FileNotFoundError(
                f"root {str(root)!r} for dataset {config.dataset!r} does not exist; pass the "
                "folder that holds the dataset."
            )
    if config.manifest_path:
        path = resolve_path(config.manifest_path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest {str(path)!r} does not exist; expected a CSV file.")
        _check_manifest_matches(config, path)
        return qdata.load_manifest(path)
    if config.dataset == "manifest":
        raise ValueError("dataset='manifest' needs manifest_path, the CSV to train on.")
    return qdata.load_dataset(
        config.dataset,
        root=config.root,
        coarse=config.coarse,
        size=config.synthetic_size,
        seed=config.data_seed,
    )


def validation_split(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve validation classes out of the training classes (for tuning, never the test ones):
    the second half of each coarse class's sorted training fine classes, so that the classes
    left to train on keep their P- wherever the coarse class has 4 or more."""
    val_fine = set()
    for _, fines in train.groupby("coarse")["fine"]:
        classes = sorted(fines.unique())
        val_fine.update(classes[(len(classes) + 1) // 2 :])
    is_val = train["fine"].isin(val_fine)
    if not is_val.any() or is_val.all():
        raise ValueError("too few training fine classes to carve out validation classes.")
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)


def build_datasets(config: TrainConfig) -> RunData:
    """Load the run's manifest and build its three datasets (bank, batches, evaluation)."""
    manifest = load_run_manifest(config)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    evaluation = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(
            f"the manifest needs both a 'train' and a 'test' split, got {len(train)} training "
            f"and {len(evaluation)} test rows."
        )
    if config.eval_split == "val":
        train, evaluation = validation_split(train)
    fine_ids = {int(f): i for i, f in enumerate(sorted(train["fine"].unique()))}
    coarse_ids = {int(c): i for i, c in enumerate(sorted(manifest["coarse"].unique()))}
    image_size = config.image_size or qmodel.default_image_size(config.backbone)
    eval_tf = qdata.make_transforms(image_size, train=False)
    cache = config.cache_images
    files = {
        "resize_cache": config.resize_cache or None,
        "cache_side": qdata.resize_side(image_size),
    }
    train_eval_set = qdata.HierarchicalImageDataset(train, eval_tf, cache, **files)
    # One decoded cache for both views of the training images.
    train_resized = train_eval_set.with_transform(qdata.resize_transform(image_size))
    return RunData(
        manifest=manifest,
        train_manifest=train,
        eval_manifest=evaluation,
        train_fine=torch.tensor([fine_ids[int(f)] for f in train["fine"]]),
        train_coarse=torch.tensor([coarse_ids[int(c)] for c in train["coarse"]]),
        eval_fine=torch.tensor(evaluation["fine"].to_numpy(np.int64, copy=True)),
        n_coarse=len(coarse_ids),
        n_fine=len(fine_ids),
        image_size=image_size,
        train_eval_set=train_eval_set,
        train_aug_set=AugmentedItems(
            # Small sets resized once up front: the resize then costs nothing per iteration.
            [train_resized[i] for i in range(len(train_resized))] if cache else train_resized,
            image_size,
        ),
        eval_set=qdata.HierarchicalImageDataset(evaluation, eval_tf, cache, **files),
    )


class AugmentedItems(torch.utils.data.Dataset):
    """The training view of an image from draws made by the trainer's own generator: item
    `(index, top, left, flip)` is `qlib.data.crop_and_flip` of the resized image `index`.
    The same key gives the same image in any process, with any number of workers, and nothing
    reads torch's global RNG."""

    def __init__(self, dataset: torch.utils.data.Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, float, float, float]) -> Any:
        index, *draws = key
        image, *labels = self.dataset[index]
        return qdata.crop_and_flip(image, self.size, *draws), *labels


def make_loader(
    dataset: torch.utils.data.Dataset,
    config: TrainConfig,
    device: torch.device,
    *,
    batch_sampler: Any = None,
    batch_size: int | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader with the run's workers (kept alive across passes), pinned memory on CUDA and
    its own generator (its worker seeds never come from the global RNG)."""
    workers = config.num_workers
    batching = (
        {"batch_sampler": batch_sampler}
        if batch_sampler is not None
        else {"batch_size": batch_size}
    )
    return torch.utils.data.DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )
