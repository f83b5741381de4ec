"""Datasets as manifests: one DataFrame shape for every source (manifest.py), one Dataset for
every manifest (images.py), one loader per source; `load_dataset` dispatches on a name.
"""
# The imports below are the package's API, re-exported for `from qlib import data`.
# ruff: noqa: F401

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..utils import resolve_path
from .coarse import coarse_table
from .cub200 import cub200_class_names, load_cub200
from .images import (
    HierarchicalImageDataset,
    crop_and_flip,
    make_transforms,
    pixel_embeddings,
    read_image,
    read_resized,
    resize_side,
    resize_transform,
)
from .manifest import (
    MANIFEST_COLUMNS,
    check_manifest,
    load_folder_tree,
    load_manifest,
    manifest_source,
    save_manifest,
    split_by_fine_class,
    summarize,
)
from .sop import load_stanford_online_products
from .stanford_cars import detect_stanford_layout, load_stanford_cars, stanford_class_names
from .synthetic import GENERATOR_VERSION, SYNTHETIC_SIZES, load_synthetic

DATASETS = ("synthetic", "stanford_cars", "sop", "cub200", "manifest", "folder")
DEFAULT_COARSE = {"stanford_cars": "suffix22", "cub200": "lastword58"}  # when coarse is ""


def load_dataset(
    name: str,
    root: str | Path | None = None,
    coarse: str | Path | pd.DataFrame | dict | None = None,
    size: str = "demo",
    seed: int = 0,
    split_strategy: str = "half",
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """A manifest by dataset name (one of DATASETS):

    - "synthetic": `load_synthetic(size, seed)`, no root;
    - "stanford_cars" / "cub200": root = the dataset's folder; `coarse` a vocabulary or a
      mapping (None or "": "suffix22" / "lastword58");
    - "sop": root = the Stanford_Online_Products folder (coarse: the 12 super-categories);
    - "manifest": root = a CSV; "folder": root = root/<coarse>/<fine>/<image>; both split by
      `split_strategy` and `seed` when the data has no split.

    `check_images` / `skip_broken`: decode every file / drop unreadable ones (not "synthetic").
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")
    if name == "synthetic":
        return load_synthetic(size=size, seed=seed)
    if root is None or str(root) == "":
        raise ValueError(f"dataset {name!r} needs a root (folder or CSV path); got none.")
    files = {"check_images": check_images, "skip_broken": skip_broken}
    if name in DEFAULT_COARSE:
        loader = load_stanford_cars if name == "stanford_cars" else load_cub200
        unset = coarse is None or (isinstance(coarse, str) and coarse == "")
        return loader(root, DEFAULT_COARSE[name] if unset else coarse, **files)
    if name == "sop":
        return load_stanford_online_products(root, **files)
    loader = load_manifest if name == "manifest" else load_folder_tree
    return loader(root, split_strategy, seed, **files)


def dataset_source(
    name: str,
    root: str | Path | None = None,
    coarse: str | Path | None = None,
    size: str = "demo",
    seed: int = 0,
) -> dict:
    """What a manifest is built from, as recorded beside it (`save_manifest(..., source=)`) and
    compared by `qlib.train` before a run trains on it: the dataset, its resolved root (or CSV),
    the coarse vocabulary in effect, the synthetic size and seed."""
    if name == "synthetic":
        return {"dataset": name, "size": size, "seed": seed}
    source = {"dataset": name, "root": str(resolve_path(root)) if root else None}
    if name in DEFAULT_COARSE:
        source["coarse"] = str(coarse) if coarse else DEFAULT_COARSE[name]
    return source
