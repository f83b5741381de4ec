"""Datasets as manifests: one DataFrame shape for every source, one Dataset for every manifest.

    manifest.py       the manifest's columns and conventions, checks, zero-shot split, CSV
                      manifests, folder trees root/<coarse>/<fine>/<image>, the summary
    images.py         decoding, uint8 transforms, HierarchicalImageDataset, the resized cache
    coarse.py         coarse vocabularies of named classes (data/coarse/*.csv)
    stanford_cars.py  Stanford Cars 196 (three layouts)    sop.py        Stanford Online Products
    cub200.py         CUB-200-2011                         synthetic.py  the embedded default

`load_dataset(name, root, ...)` dispatches on a name of DATASETS.
"""
# The imports below are the package's API, re-exported for `from qlib import data`.
# ruff: noqa: F401

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..utils import resolve_path
from .coarse import COARSE_VOCABULARIES, coarse_table
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
    SPLITS,
    anchor_mask,
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
) -> pd.DataFrame:
    """A manifest by dataset name (one of DATASETS):

    - "synthetic": `load_synthetic(size, seed)`, no root;
    - "stanford_cars" / "cub200": root = the dataset's folder; `coarse` a vocabulary or a
      mapping (None or "": "suffix22" / "lastword58");
    - "sop": root = the Stanford_Online_Products folder (coarse: the 12 super-categories);
    - "manifest": root = a CSV; "folder": root = root/<coarse>/<fine>/<image>; both split by
      `split_strategy` and `seed` when the data has no split.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")
    if name == "synthetic":
        return load_synthetic(size=size, seed=seed)
    if root is None or str(root) == "":
        raise ValueError(f"dataset {name!r} needs a root (folder or CSV path); got none.")
    given = coarse is not None and not (isinstance(coarse, str) and coarse == "")
    if name == "stanford_cars":
        return load_stanford_cars(root, coarse if given else DEFAULT_COARSE[name])
    if name == "cub200":
        return load_cub200(root, coarse if given else DEFAULT_COARSE[name])
    if name == "sop":
        return load_stanford_online_products(root)
    loader = load_manifest if name == "manifest" else load_folder_tree
    return loader(root, split_strategy, seed)


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
