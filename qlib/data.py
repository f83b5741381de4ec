"""Datasets as manifests: one DataFrame shape for every source, one Dataset for every manifest.

A manifest is a `pandas.DataFrame`, one row per image, with the columns
`path` (str, an image file), `fine` (int), `coarse` (int), `fine_name`, `coarse_name` and
`split` ("train" / "test"). Conventions every loader keeps (docs/spec.md, "Data protocol"):

- every fine class belongs to exactly one coarse class and to exactly one split (zero-shot);
- coarse ids are 0..k1-1, the index of the coarse name in the sorted list of the vocabulary's
  names (for Stanford Cars the whole vocabulary, so ids do not depend on which classes are
  present);
- fine ids are 0..n_fine-1 with the training fine classes first (0..k2-1), so the fine head of
  the model has k2 outputs. Stanford Cars: fine = official class id - 1, train = ids 1-98.

Sources: `load_stanford_cars` (three on-disk layouts), `load_manifest` (a CSV), `load_folder_tree`
(root/<coarse>/<fine>/<image>) and `load_synthetic` (the embedded default, rendered to PNG files
under data/synthetic/ once). `load_dataset` dispatches on a name. `HierarchicalImageDataset`
serves any manifest; `make_transforms` gives the paper-style augmentation.
"""

from __future__ import annotations

import colorsys
import copy
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageChops, ImageDraw

from .utils import repo_root, write_json

MANIFEST_COLUMNS = ("path", "fine", "coarse", "fine_name", "coarse_name", "split")
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATA_DIR = repo_root() / "data"
COARSE_DIR = DATA_DIR / "coarse"
SYNTHETIC_DIR = DATA_DIR / "synthetic"
CLASS_NAMES_FILE = DATA_DIR / "stanford_cars_class_names.txt"
COARSE_VOCABULARIES = ("suffix22", "body9", "make49")
DATASETS = ("synthetic", "stanford_cars", "manifest", "folder")

STANFORD_N_CLASSES = 196
STANFORD_TRAIN_CLASSES = 98  # classes 1-98 train, 99-196 test
STANFORD_COUNTS = {"total": 16185, "train": 8054, "test": 8131}
STANFORD_HELP = (
    "Stanford Cars cannot be downloaded by this project: get it yourself (e.g. the "
    "'stanford_cars' mirrors on Kaggle or Hugging Face, or the devkit + images once published "
    "at ai.stanford.edu/~jkrause/cars/car_dataset.html) and pass the folder that holds it."
)

# The embedded synthetic dataset. Bump GENERATOR_VERSION whenever the pictures change: the
# cache under data/synthetic/ is keyed by it and regenerated.
GENERATOR_VERSION = 2
SYNTHETIC_SIZES = {
    # n_coarse x fine_per_coarse fine classes (half of each coarse class trains), images per
    # fine class, stored image side in pixels. "cars196" copies the suffix22 hierarchy.
    "smoke": {"n_coarse": 3, "fine_per_coarse": 4, "images_per_class": 8, "image_size": 32},
    "demo": {"n_coarse": 6, "fine_per_coarse": 8, "images_per_class": 32, "image_size": 64},
    "cars196": {"n_coarse": 22, "fine_per_coarse": None, "images_per_class": 40, "image_size": 64},
}


# ----------------------------------------------------------------------------------------------
# Manifest checks shared by every loader
# ----------------------------------------------------------------------------------------------


def _coarse_of_fine(manifest: pd.DataFrame) -> pd.Series:
    """fine -> coarse; raises when a fine class has two coarse classes."""
    pairs = manifest[["fine", "coarse"]].drop_duplicates()
    doubled = pairs["fine"][pairs["fine"].duplicated()].unique()
    if len(doubled):
        names = manifest.loc[manifest["fine"].isin(doubled), "fine_name"].unique()[:5]
        raise ValueError(
            f"fine classes {list(names)} are mapped to two coarse classes; expected every fine "
            "class to belong to exactly one coarse class."
        )
    return pairs.set_index("fine")["coarse"].sort_index()


def check_manifest(manifest: pd.DataFrame, warn_anchors: bool = True) -> pd.DataFrame:
    """Validate a manifest (columns, labels, splits) and return it with canonical dtypes.

    Raises ValueError for: missing columns, a fine class in two coarse classes, a split value
    other than train/test, an empty split, a fine class in both splits. Warns (without
    dropping anything) about coarse classes with a single training fine class: their samples
    never anchor a quadruplet (docs/spec.md).
    """
    if not isinstance(manifest, pd.DataFrame):
        raise ValueError(f"a manifest must be a pandas DataFrame, got {type(manifest).__name__}.")
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}; expected {list(MANIFEST_COLUMNS)}.")
    if len(manifest) == 0:
        raise ValueError("the manifest has no rows; expected at least one image per split.")
    df = manifest.copy()
    for col in ("fine", "coarse"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise ValueError(f"manifest column {col!r} must hold integers, got {df[col].dtype}.")
        df[col] = df[col].astype(np.int64)
    for col in ("path", "fine_name", "coarse_name", "split"):
        df[col] = df[col].astype(str)
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"split values {bad_split} are not allowed; expected 'train' or 'test'.")
    for split in SPLITS:
        if not (df["split"] == split).any():
            raise ValueError(f"the {split!r} split is empty; expected images in both splits.")
    _coarse_of_fine(df)
    splits_per_fine = df.groupby("fine")["split"].nunique()
    shared = splits_per_fine.index[splits_per_fine > 1]
    if len(shared):
        names = df.loc[df["fine"].isin(shared), "fine_name"].unique()[:5]
        raise ValueError(
            f"fine classes {list(names)} are in both splits; expected a zero-shot split where "
            "no fine class is in train and test."
        )
    if warn_anchors:
        lonely = _single_train_fine_coarse(df)
        if lonely:
            warnings.warn(
                f"coarse classes {lonely} have a single training fine class: their samples have "
                "no P- and never anchor a quadruplet (they still serve as negatives).",
                stacklevel=2,
            )
    return df.loc[:, list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]]


def _single_train_fine_coarse(manifest: pd.DataFrame) -> list[str]:
    train = manifest[manifest["split"] == "train"]
    n_fine = train.groupby("coarse_name")["fine"].nunique()
    return sorted(n_fine.index[n_fine == 1].tolist())


def _number_classes(df: pd.DataFrame, fine_key: str, coarse_key: str) -> pd.DataFrame:
    """Assign `fine` (training classes first, each split in ascending key order) and `coarse`
    (ascending key order) ids from sortable key columns."""
    fine_keys = df[[fine_key, "split"]].drop_duplicates()
    fine_keys = fine_keys.assign(_rank=fine_keys["split"].map({"train": 0, "test": 1}))
    fine_keys = fine_keys.sort_values(["_rank", fine_key])
    fine_id = {key: i for i, key in enumerate(fine_keys[fine_key])}
    coarse_id = {key: i for i, key in enumerate(sorted(df[coarse_key].unique()))}
    out = df.copy()
    out["fine"] = out[fine_key].map(fine_id).astype(np.int64)
    out["coarse"] = out[coarse_key].map(coarse_id).astype(np.int64)
    return out


def split_by_fine_class(
    manifest: pd.DataFrame, strategy: str = "half", seed: int = 0
) -> pd.DataFrame:
    """Zero-shot split: every fine class goes whole to train or to test. Returns a copy with a
    `split` column.

    strategy "half": the first half (rounded up) of the sorted fine classes trains, as Stanford
    Cars 1-98 / 99-196. "random": a seeded random half. "per_coarse": the first half of each
    coarse class's sorted fine classes, so that every coarse class with two or more fine
    classes can anchor. Classes sort by `fine` when it is present, else by `fine_name`.
    """
    key = "fine" if "fine" in manifest.columns else "fine_name"
    if key not in manifest.columns:
        raise ValueError("split_by_fine_class needs a 'fine' or 'fine_name' column.")
    classes = sorted(manifest[key].unique())
    if len(classes) < 2:
        raise ValueError(f"a zero-shot split needs at least 2 fine classes, found {len(classes)}.")
    if strategy == "half":
        train = set(classes[: (len(classes) + 1) // 2])
    elif strategy == "random":
        order = np.random.default_rng(seed).permutation(len(classes))
        train = {classes[i] for i in order[: (len(classes) + 1) // 2]}
    elif strategy == "per_coarse":
        coarse_key = "coarse" if "coarse" in manifest.columns else "coarse_name"
        groups = manifest[[key, coarse_key]].drop_duplicates().groupby(coarse_key)[key]
        train = set()
        for _, members in groups:
            members = sorted(members)
            train.update(members[: (len(members) + 1) // 2])
    else:
        raise ValueError(
            f"unknown split strategy {strategy!r}; expected 'half', 'random' or 'per_coarse'."
        )
    out = manifest.copy()
    out["split"] = np.where(out[key].isin(train), "train", "test")
    return out


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file -> uint8 tensor (3, H, W), RGB whatever the file's mode."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises many types for broken files
        raise ValueError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _image_is_readable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.convert("RGB").load()
        return True
    except Exception:
        return False


def _check_images(manifest: pd.DataFrame, check_images: bool, skip_broken: bool) -> pd.DataFrame:
    """Missing files always raise; with check_images every file is decoded and an unreadable
    one raises, or with skip_broken is dropped and counted in a warning."""
    exists = [os.path.isfile(p) for p in manifest["path"]]
    missing = manifest["path"][~np.asarray(exists, dtype=bool)].tolist()
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image files do not exist, e.g. {missing[:3]}; expected every "
            "listed image on disk."
        )
    if not check_images:
        return manifest
    readable = np.array([_image_is_readable(p) for p in manifest["path"]], dtype=bool)
    broken = manifest["path"][~readable].tolist()
    if broken and not skip_broken:
        raise ValueError(
            f"{len(broken)} images are unreadable or corrupt, e.g. {broken[:3]}; fix or remove "
            "them, or pass skip_broken=True to leave them out."
        )
    if broken:
        warnings.warn(
            f"skipped {len(broken)} unreadable images (skip_broken=True), e.g. {broken[:3]}.",
            stacklevel=3,
        )
    return manifest[readable].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Dataset and transforms
# ----------------------------------------------------------------------------------------------


def make_transforms(image_size: int, train: bool, normalize: bool = True) -> Callable:
    """uint8 (3, H, W) -> float (3, image_size, image_size).

    train: resize the short side to image_size*256/224, random crop, horizontal flip (the
    paper's augmentation); eval: the same resize and a center crop. `normalize` applies the
    ImageNet mean/std (what the pretrained backbones expect).
    """
    from torchvision.transforms import v2

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}.")
    steps = [v2.Resize(int(image_size * 256 / 224), antialias=True)]
    if train:
        steps += [v2.RandomCrop(image_size), v2.RandomHorizontalFlip()]
    else:
        steps += [v2.CenterCrop(image_size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if normalize:
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(steps)


class HierarchicalImageDataset(torch.utils.data.Dataset):
    """Item i of the manifest (rows in order) -> (image float (3, H, W), fine int, coarse int).

    Without a transform the image is scaled to [0, 1]. `cache_in_memory` decodes every image
    once up front (uint8), which makes small datasets such as the synthetic one fast on a CPU.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        transform: Callable | None = None,
        cache_in_memory: bool = False,
    ) -> None:
        missing = [c for c in ("path", "fine", "coarse") if c not in manifest.columns]
        if missing:
            raise ValueError(f"manifest lacks columns {missing}; expected path, fine, coarse.")
        self.paths = manifest["path"].astype(str).tolist()
        self.fine = torch.tensor(manifest["fine"].to_numpy(np.int64, copy=True))
        self.coarse = torch.tensor(manifest["coarse"].to_numpy(np.int64, copy=True))
        self.transform = transform
        self._images = [read_image(p) for p in self.paths] if cache_in_memory else None

    def __len__(self) -> int:
        return len(self.paths)

    def with_transform(self, transform: Callable | None) -> HierarchicalImageDataset:
        """The same images under another transform, sharing the decoded cache (no re-reading)."""
        twin = copy.copy(self)
        twin.transform = transform
        return twin

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self._images[index] if self._images is not None else read_image(self.paths[index])
        image = self.transform(image) if self.transform is not None else image.float() / 255.0
        return image, int(self.fine[index]), int(self.coarse[index])


def pixel_embeddings(manifest: pd.DataFrame, image_size: int = 32) -> torch.Tensor:
    """Raw pixels as an embedding: every image resized and center-cropped to image_size,
    scaled to [0, 1], flattened -> (N, 3 * image_size**2). The "no learning at all" baseline."""
    dataset = HierarchicalImageDataset(manifest, make_transforms(image_size, False, False))
    return torch.stack([dataset[i][0].flatten() for i in range(len(dataset))])


# ----------------------------------------------------------------------------------------------
# Manifests on disk
# ----------------------------------------------------------------------------------------------


def save_manifest(manifest: pd.DataFrame, csv_path: str | Path) -> Path:
    """Write a manifest as CSV, paths relative to the CSV's folder where possible."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    base = csv_path.parent.resolve()
    out = manifest.copy()

    def relative(path: str) -> str:
        try:
            return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
        except ValueError:  # another drive on Windows
            return str(path)

    out["path"] = [relative(p) for p in out["path"]]
    out.to_csv(csv_path, index=False)
    return csv_path


def _labels_are_ids(column: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(column):
        return True
    return bool(column.astype(str).str.fullmatch(r"\d+").all())


def load_manifest(
    csv_path: str | Path,
    split_strategy: str = "half",
    seed: int = 0,
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """Read a CSV with `path`, `fine`, `coarse` (names or integer ids) and optionally `split`,
    `fine_name`, `coarse_name`. Relative paths resolve against the CSV's folder. Without a
    split, a zero-shot split by fine class (`split_by_fine_class`). Integer ids are kept as
    given (a manifest written by `save_manifest` reads back unchanged); names get ids by the
    manifest conventions (fine: training classes first; coarse: sorted names) and are kept in
    fine_name / coarse_name.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest CSV {csv_path} does not exist; expected a CSV file.")
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "fine", "coarse") if c not in raw.columns]
    if missing:
        raise ValueError(
            f"{csv_path} lacks columns {missing}; expected at least path, fine, coarse "
            "(+ optional split, fine_name, coarse_name)."
        )
    if len(raw) == 0:
        raise ValueError(f"{csv_path} has no rows; expected one row per image.")
    df = raw.copy()
    base = csv_path.parent.resolve()
    df["path"] = [os.path.normpath(p if Path(p).is_absolute() else base / p) for p in df["path"]]
    for level in ("fine", "coarse"):
        name_col = f"{level}_name"
        if _labels_are_ids(df[level]):
            df[f"_{level}_key"] = df[level].astype(np.int64)
            if name_col not in raw.columns:
                df[name_col] = df[level].astype(str)
        else:
            df[f"_{level}_key"] = df[level]
            df[name_col] = df[level]
    if "split" not in raw.columns or (df["split"] == "").all():
        df = split_by_fine_class(df.assign(fine=df["_fine_key"]), split_strategy, seed)
    df = _validate_label_pairs(df, "_fine_key", "_coarse_key")
    numbered = _number_classes(df, "_fine_key", "_coarse_key")
    for level in ("fine", "coarse"):
        given = df[f"_{level}_key"]
        df[level] = given if pd.api.types.is_integer_dtype(given) else numbered[level]
    df = df.drop(columns=["_fine_key", "_coarse_key"])
    df = _check_images(df, check_images, skip_broken)
    return check_manifest(df.reset_index(drop=True))


def _validate_label_pairs(df: pd.DataFrame, fine_key: str, coarse_key: str) -> pd.DataFrame:
    """Raise before renumbering, with the user's labels in the message."""
    pairs = df[[fine_key, coarse_key]].drop_duplicates()
    doubled = pairs[fine_key][pairs[fine_key].duplicated()].unique()
    if len(doubled):
        raise ValueError(
            f"fine classes {list(doubled[:5])} are mapped to two coarse classes; expected every "
            "fine class to belong to exactly one coarse class."
        )
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"split values {bad_split} are not allowed; expected 'train' or 'test'.")
    per_fine = df.groupby(fine_key)["split"].nunique()
    shared = per_fine.index[per_fine > 1].tolist()
    if shared:
        raise ValueError(
            f"fine classes {shared[:5]} are in both splits; expected a zero-shot split where no "
            "fine class is in train and test."
        )
    return df


def _is_image_file(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    )


def load_folder_tree(
    root: str | Path,
    split_strategy: str = "half",
    seed: int = 0,
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """root/<coarse>/<fine>/<image> -> manifest, with a zero-shot split by fine class.

    A fine folder name that appears under two coarse folders is one fine class with two coarse
    classes, an error. Files that are not images are reported in a warning, not read.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"folder tree root {root} does not exist; expected root/<coarse>/<fine>/<image>."
        )
    rows, ignored = [], []
    for coarse_dir in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not coarse_dir.is_dir():
            ignored.append(coarse_dir)
            continue
        for fine_dir in sorted(p for p in coarse_dir.iterdir() if not p.name.startswith(".")):
            if not fine_dir.is_dir():
                ignored.append(fine_dir)
                continue
            for file in sorted(fine_dir.iterdir()):
                if _is_image_file(file):
                    rows.append((str(file), fine_dir.name, coarse_dir.name))
                elif not file.name.startswith("."):
                    ignored.append(file)
    if not rows:
        raise ValueError(f"no images found under {root}; expected root/<coarse>/<fine>/<image>.")
    if ignored:
        warnings.warn(
            f"{len(ignored)} entries under {root} are not images at root/<coarse>/<fine>/<image> "
            f"and were not read, e.g. {[str(p) for p in ignored[:3]]}.",
            stacklevel=2,
        )
    df = pd.DataFrame(rows, columns=["path", "fine_name", "coarse_name"])
    df = split_by_fine_class(df, split_strategy, seed)
    df = _validate_label_pairs(df, "fine_name", "coarse_name")
    df = _number_classes(df, "fine_name", "coarse_name")
    df = _check_images(df, check_images, skip_broken)
    return check_manifest(df.reset_index(drop=True))


# ----------------------------------------------------------------------------------------------
# Stanford Cars 196
# ----------------------------------------------------------------------------------------------


def stanford_class_names() -> list[str]:
    """The 196 class names in official order (index = class id - 1)."""
    names = [n.strip() for n in CLASS_NAMES_FILE.read_text().splitlines() if n.strip()]
    if len(names) != STANFORD_N_CLASSES:
        raise ValueError(f"{CLASS_NAMES_FILE} should hold 196 names, found {len(names)}.")
    return names


def _normalize_name(name: str) -> str:
    """Case, spaces and punctuation do not count ("Ram C/V" == "ram c-v")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _class_id_of_name() -> dict[str, int]:
    return {_normalize_name(n): i + 1 for i, n in enumerate(stanford_class_names())}


def coarse_table(name: str) -> pd.DataFrame:
    """A coarse vocabulary of Stanford Cars by name ("suffix22", "body9", "make49") ->
    DataFrame(class_id 1..196, class_name, coarse_name, rule), from data/coarse/<name>.csv."""
    if name not in COARSE_VOCABULARIES:
        raise ValueError(
            f"unknown coarse vocabulary {name!r}; expected one of {COARSE_VOCABULARIES} "
            "or a CSV path."
        )
    return pd.read_csv(COARSE_DIR / f"{name}.csv")


def _coarse_mapping(coarse: str | Path | pd.DataFrame | Mapping) -> pd.Series:
    """Any accepted `coarse` argument -> Series class_id (1..196) -> coarse name."""
    if isinstance(coarse, str) and coarse in COARSE_VOCABULARIES:
        table = coarse_table(coarse)
    elif isinstance(coarse, pd.DataFrame):
        table = coarse
    elif isinstance(coarse, Mapping):
        table = pd.DataFrame({"class": list(coarse.keys()), "coarse_name": list(coarse.values())})
    elif isinstance(coarse, (str, Path)) and Path(coarse).expanduser().is_file():
        table = pd.read_csv(Path(coarse).expanduser(), dtype=str, keep_default_na=False)
    else:
        raise ValueError(
            f"coarse={coarse!r} is neither a vocabulary {COARSE_VOCABULARIES} nor an existing CSV "
            "file with columns class_id or class_name, and coarse_name."
        )
    coarse_col = next((c for c in ("coarse_name", "coarse") if c in table.columns), None)
    class_col = next((c for c in ("class_id", "class_name", "class") if c in table.columns), None)
    if coarse_col is None or class_col is None:
        raise ValueError(
            f"a coarse table needs a class_id or class_name column and a coarse_name column; "
            f"found {list(table.columns)}."
        )
    name_to_id = _class_id_of_name()
    ids = []
    for key in table[class_col]:
        if str(key).strip().isdigit():
            ids.append(int(str(key).strip()))
        elif _normalize_name(key) in name_to_id:
            ids.append(name_to_id[_normalize_name(key)])
        else:
            raise ValueError(
                f"coarse table class {key!r} is not a Stanford Cars class name or id 1-196."
            )
    mapping = pd.DataFrame({"class_id": ids, "coarse_name": table[coarse_col].astype(str).tolist()})
    mapping = mapping.drop_duplicates()
    doubled = mapping["class_id"][mapping["class_id"].duplicated()].unique()
    if len(doubled):
        raise ValueError(
            f"classes {sorted(doubled)[:5]} are mapped to two coarse classes in the coarse table; "
            "expected one coarse name per class."
        )
    absent = sorted(set(range(1, STANFORD_N_CLASSES + 1)) - set(mapping["class_id"]))
    if absent:
        raise ValueError(
            f"the coarse table has no coarse name for classes {absent[:10]} ({len(absent)} in "
            "all); expected all 196."
        )
    return mapping.set_index("class_id")["coarse_name"].sort_index()


def _mat_annotations(path: Path) -> dict[str, list]:
    """A Stanford Cars annotations .mat -> {field: list of python values}."""
    from scipy.io import loadmat

    try:
        ann = np.atleast_1d(loadmat(path, squeeze_me=True)["annotations"])
    except Exception as err:
        raise ValueError(f"cannot read annotations from {path}: {err}") from err
    return {field: [np.asarray(v).item() for v in ann[field]] for field in ann.dtype.names}


def _mat_class_names(path: Path) -> list[str]:
    from scipy.io import loadmat

    names = np.atleast_1d(loadmat(path, squeeze_me=True)["class_names"])
    return [str(n) for n in names]


def _check_mat_class_names(names: list[str], source: Path) -> None:
    ours = stanford_class_names()
    differ = [
        (i + 1, a)
        for i, (a, b) in enumerate(zip(names, ours, strict=False))
        if _normalize_name(a) != _normalize_name(b)
    ]
    if len(names) != len(ours) or differ:
        warnings.warn(
            f"class names in {source} differ from data/stanford_cars_class_names.txt "
            f"({len(names)} names, first differences {differ[:3]}); the class ids are used.",
            stacklevel=3,
        )


def _read_combined(base: Path) -> pd.DataFrame:
    ann = _mat_annotations(base / "cars_annos.mat")
    if "relative_im_path" not in ann or "class" not in ann:
        raise ValueError(f"{base / 'cars_annos.mat'} lacks relative_im_path/class annotations.")
    try:
        _check_mat_class_names(_mat_class_names(base / "cars_annos.mat"), base / "cars_annos.mat")
    except KeyError:
        pass  # class_names is optional in this file
    paths = [str(base / p) for p in ann["relative_im_path"]]
    return pd.DataFrame({"path": paths, "class_id": [int(c) for c in ann["class"]]})


def _devkit_test_annos(base: Path) -> Path | None:
    for candidate in (
        base / "cars_test_annos_withlabels.mat",
        base / "devkit" / "cars_test_annos_withlabels.mat",
    ):
        if candidate.is_file():
            return candidate
    return None


def _image_folder(folder: Path, first_name: str) -> Path:
    """Some mirrors nest cars_train/cars_train/."""
    nested = folder / folder.name
    if not (folder / first_name).exists() and (nested / first_name).exists():
        return nested
    return folder


def _read_devkit(base: Path) -> pd.DataFrame:
    meta = base / "devkit" / "cars_meta.mat"
    if meta.is_file():
        _check_mat_class_names(_mat_class_names(meta), meta)
    frames = []
    for folder, annos in (
        (base / "cars_train", base / "devkit" / "cars_train_annos.mat"),
        (base / "cars_test", _devkit_test_annos(base)),
    ):
        ann = _mat_annotations(annos)
        if "class" not in ann or "fname" not in ann:
            raise ValueError(
                f"{annos} lacks class/fname annotations; the test file must be the one with "
                "labels (cars_test_annos_withlabels.mat)."
            )
        images = _image_folder(folder, ann["fname"][0])
        frames.append(
            pd.DataFrame(
                {
                    "path": [str(images / f) for f in ann["fname"]],
                    "class_id": [int(c) for c in ann["class"]],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _class_folders(base: Path) -> list[Path]:
    """Class folders at base/<class>/ or base/<train|test>/<class>/."""
    folders = []
    for child in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name.lower() in SPLITS:
            folders += sorted(
                p for p in child.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        else:
            folders.append(child)
    return folders


def _class_id_of_folder(name: str, name_to_id: dict[str, int]) -> int | None:
    key = _normalize_name(name)
    if key in name_to_id:
        return name_to_id[key]
    stripped = re.sub(r"^\d+[\s._-]+", "", name)  # "001.AM General Hummer SUV 2000"
    if _normalize_name(stripped) in name_to_id:
        return name_to_id[_normalize_name(stripped)]
    if name.strip().isdigit() and 1 <= int(name) <= STANFORD_N_CLASSES:
        return int(name)
    return None


def _count_class_folders(base: Path) -> int:
    name_to_id = _class_id_of_name()
    try:
        return sum(
            _class_id_of_folder(p.name, name_to_id) is not None
            for p in _class_folders(base)
            if not p.name.isdigit()
        )
    except OSError:
        return 0


def _read_class_folders(base: Path) -> pd.DataFrame:
    name_to_id = _class_id_of_name()
    rows, unknown, ignored = [], [], []
    for folder in _class_folders(base):
        class_id = _class_id_of_folder(folder.name, name_to_id)
        if class_id is None:
            unknown.append(folder.name)
            continue
        for file in sorted(folder.iterdir()):
            if _is_image_file(file):
                rows.append((str(file), class_id))
            elif not file.name.startswith("."):
                ignored.append(str(file))
    if unknown:
        raise ValueError(
            f"folders {unknown[:5]} under {base} are not Stanford Cars class names; expected one "
            "folder per class named as in data/stanford_cars_class_names.txt."
        )
    if ignored:
        warnings.warn(
            f"{len(ignored)} non-image files in class folders were not read, e.g. {ignored[:3]}.",
            stacklevel=3,
        )
    return pd.DataFrame(rows, columns=["path", "class_id"])


STANFORD_LAYOUTS = {
    "combined": (
        "car_ims/ + cars_annos.mat (the layout most metric-learning code uses)",
        lambda b: (b / "car_ims").is_dir() and (b / "cars_annos.mat").is_file(),
        _read_combined,
    ),
    "devkit": (
        "cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat and "
        "cars_test_annos_withlabels.mat (torchvision's layout)",
        lambda b: (
            (b / "cars_train").is_dir()
            and (b / "cars_test").is_dir()
            and (b / "devkit" / "cars_train_annos.mat").is_file()
            and _devkit_test_annos(b) is not None
        ),
        _read_devkit,
    ),
    "folders": (
        "one folder per class named after the class, optionally under train/ and test/",
        lambda b: _count_class_folders(b) > 0,
        _read_class_folders,
    ),
}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _candidate_folders(root: Path, max_per_level: int = 50):
    """root, then its sub-folders, then theirs: lazily, so a match at the top lists no more."""
    yield root
    level1 = _subfolders(root)[:max_per_level]
    yield from level1
    for folder in level1:
        yield from _subfolders(folder)[:max_per_level]


def detect_stanford_layout(root: str | Path) -> tuple[str, Path]:
    """(layout name, folder that holds it): root itself, or a sub-folder up to two levels down
    (mirrors nest, e.g. stanford_cars/ or car_data/car_data/)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Stanford Cars root {root} does not exist or is not a folder. {STANFORD_HELP}"
        )
    for base in _candidate_folders(root):
        for name, (_, present, _) in STANFORD_LAYOUTS.items():
            if present(base):
                return name, base
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    expected = "; ".join(f"{name}: {desc}" for name, (desc, _, _) in STANFORD_LAYOUTS.items())
    raise ValueError(
        f"no Stanford Cars layout found in {root} (found: {found[:15]}). Expected one of: "
        f"{expected}. {STANFORD_HELP}"
    )


def load_stanford_cars(
    root: str | Path,
    coarse: str | Path | pd.DataFrame | Mapping = "suffix22",
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """Stanford Cars 196 in any of the three layouts -> manifest (docs/spec.md protocol).

    All 16,185 images; fine = official class id - 1; classes 1-98 train (8,054 images), 99-196
    test (8,131). `coarse`: "suffix22" (default), "body9", "make49", a CSV path / DataFrame /
    dict mapping class name or id -> coarse name. Other counts than the official ones warn.
    """
    layout, base = detect_stanford_layout(root)
    records = STANFORD_LAYOUTS[layout][2](base)
    bad_ids = sorted(set(records["class_id"]) - set(range(1, STANFORD_N_CLASSES + 1)))
    if bad_ids:
        raise ValueError(f"class ids {bad_ids[:5]} in {base} are outside 1-196.")
    mapping = _coarse_mapping(coarse)
    vocabulary = sorted(mapping.unique())
    names = stanford_class_names()
    ids = records["class_id"].to_numpy()
    df = pd.DataFrame(
        {
            "path": records["path"],
            "fine": ids - 1,
            "coarse": [vocabulary.index(mapping[i]) for i in ids],
            "fine_name": [names[i - 1] for i in ids],
            "coarse_name": [mapping[i] for i in ids],
            "split": np.where(ids <= STANFORD_TRAIN_CLASSES, "train", "test"),
        }
    )
    df = df.sort_values(["fine", "path"], kind="stable").reset_index(drop=True)
    counts = {
        "total": len(df),
        "train": int((df["split"] == "train").sum()),
        "test": int((df["split"] == "test").sum()),
    }
    if counts != STANFORD_COUNTS:
        warnings.warn(
            f"Stanford Cars in {base} ({layout} layout) has {counts['total']} images "
            f"({counts['train']} train / {counts['test']} test, {df['fine'].nunique()} classes); "
            f"the full dataset has {STANFORD_COUNTS['total']} ({STANFORD_COUNTS['train']} / "
            f"{STANFORD_COUNTS['test']}, 196 classes).",
            stacklevel=2,
        )
    df = _check_images(df, check_images, skip_broken)
    return check_manifest(df)


# ----------------------------------------------------------------------------------------------
# The embedded synthetic dataset
# ----------------------------------------------------------------------------------------------


def _synthetic_hierarchy(size: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coarse id of each fine class, split of each fine class, coarse names).

    Fine ids put the training classes first and each coarse class keeps half of its fine
    classes in training. "cars196" copies the suffix22 hierarchy of Stanford Cars: the same
    coarse class per fine id (coarse names are shapeNN, not car types) and the 1-98 / 99-196
    split, including its coarse classes with a single training fine class.
    """
    spec = SYNTHETIC_SIZES[size]
    if spec["fine_per_coarse"] is None:
        labels = coarse_table("suffix22")["coarse_name"].tolist()
        vocabulary = sorted(set(labels))
        coarse = np.array([vocabulary.index(label) for label in labels])
        split = np.where(np.arange(len(labels)) < STANFORD_TRAIN_CLASSES, "train", "test")
    else:
        half = spec["fine_per_coarse"] // 2
        block = np.repeat(np.arange(spec["n_coarse"]), half)
        coarse = np.concatenate([block, block])
        split = np.repeat(np.array(SPLITS), len(block))
    names = [f"shape{c:02d}" for c in range(int(coarse.max()) + 1)]
    return coarse, split, names


def _silhouette_params(rng: np.random.Generator) -> dict:
    """A coarse class's outline: a star-shaped curve r(theta) of harmonics 2-5, elongated."""
    return {
        "harmonics": np.arange(2, 6),
        "amplitudes": rng.uniform(0.05, 0.24, 4) * rng.permutation([1.0, 1.0, 0.5, 0.25]),
        "phases": rng.uniform(0, 2 * np.pi, 4),
        "elongation": rng.uniform(0.5, 1.0),
    }


def _fine_params(rng: np.random.Generator) -> dict:
    """A fine class's attributes, drawn from one shared distribution so that unseen classes
    are new points of the same attribute space: 1-3 parallel stripes (angle, offset, width),
    a mark (disc, square or ring; position, size) and a small outline tweak."""
    return {
        "stripe_count": int(rng.integers(1, 4)),
        "stripe_angle": rng.uniform(0, np.pi),
        "stripe_offset": rng.uniform(-0.25, 0.25),
        "stripe_width": rng.uniform(0.07, 0.13),
        "mark_kind": int(rng.integers(0, 3)),
        "mark_angle": rng.uniform(0, 2 * np.pi),
        "mark_radius": rng.uniform(0.2, 0.55),  # fraction of the outline's radius at that angle
        "mark_size": rng.uniform(0.12, 0.19),
        "tweak_harmonic": int(rng.integers(6, 9)),
        "tweak_amplitude": rng.uniform(0.0, 0.06),
        "tweak_phase": rng.uniform(0, 2 * np.pi),
    }


def _radius(theta: np.ndarray, shape: dict, fine: dict) -> np.ndarray:
    r = np.ones_like(theta)
    for k, a, p in zip(shape["harmonics"], shape["amplitudes"], shape["phases"], strict=True):
        r += a * np.cos(k * theta + p)
    r += fine["tweak_amplitude"] * np.cos(fine["tweak_harmonic"] * theta + fine["tweak_phase"])
    return np.maximum(r, 0.35)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def render_synthetic_image(
    shape: dict, fine: dict, rng: np.random.Generator, image_size: int
) -> np.ndarray:
    """One instance -> uint8 (image_size, image_size, 3).

    The coarse class fixes the outline; the fine class the stripes, the mark and a small
    outline tweak, all in the object's own frame; the instance draws the pose (mirror,
    rotation +-20 degrees), scale, position, every colour, background clutter and pixel noise.
    Colour carries no class information, which is what keeps untrained networks near chance.
    """
    side = 2 * image_size  # draw at twice the size, then downsample: anti-aliasing
    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    radius = _radius(theta, shape, fine)
    scale_to_unit = 1.0 / radius.max()
    outline = np.stack([radius * np.cos(theta), shape["elongation"] * radius * np.sin(theta)], 1)
    outline *= scale_to_unit

    mirror = rng.choice([-1.0, 1.0])
    angle = rng.uniform(-np.pi / 9, np.pi / 9)
    scale = rng.uniform(0.34, 0.44) * side
    center = side / 2 + rng.uniform(-0.08, 0.08, 2) * side
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    to_image = scale * rotation @ np.diag([mirror, 1.0])

    def place(points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in np.atleast_2d(points) @ to_image.T + center]

    # Background: a gradient and low-contrast clutter in the background's own hue.
    bg_hue, bg_value = rng.uniform(0, 1), rng.uniform(0.35, 0.85)
    base = np.asarray(_hsv(bg_hue, rng.uniform(0.05, 0.4), bg_value), dtype=np.float32)
    ramp_dir = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ramp_dir) * np.arange(side)[None, :] + np.sin(ramp_dir) * np.arange(side)[:, None]
    ramp = (ramp / side)[..., None] * rng.uniform(-40, 40, 3)
    image = Image.fromarray(np.clip(base + ramp, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        color = _hsv(
            bg_hue + rng.uniform(-0.1, 0.1),
            rng.uniform(0.05, 0.5),
            np.clip(bg_value + rng.uniform(-0.25, 0.25), 0, 1),
        )
        x, y = rng.uniform(0, side, 2)
        if rng.uniform() < 0.5:
            rx, ry = rng.uniform(0.03, 0.12, 2) * side
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=color)
        else:
            x2, y2 = rng.uniform(0, side, 2)
            draw.line([x, y, x2, y2], fill=color, width=int(rng.integers(2, 6)))

    # Object: body, then stripes and mark clipped to the body.
    body_value = rng.uniform(0.45, 0.95)
    body_color = _hsv(rng.uniform(0, 1), rng.uniform(0.35, 0.9), body_value)
    dark = body_value > 0.7  # details contrast with the body
    stripe_color = (
        tuple(int(c * 0.35) for c in body_color)
        if dark
        else tuple(int(c + (255 - c) * 0.7) for c in body_color)
    )
    mark_color = (20, 20, 20) if dark else (240, 240, 240)
    body = Image.new("L", (side, side), 0)
    ImageDraw.Draw(body).polygon(place(outline), fill=255)

    direction = np.array([math.cos(fine["stripe_angle"]), math.sin(fine["stripe_angle"])])
    normal = np.array([-direction[1], direction[0]])
    half_width = fine["stripe_width"] / 2
    stripes = Image.new("L", (side, side), 0)
    for j in range(fine["stripe_count"]):
        offset = fine["stripe_offset"] + (j - (fine["stripe_count"] - 1) / 2) * 0.28
        corners = [
            offset * normal + s * half_width * normal + t * 2 * direction
            for s, t in ((-1, -1), (-1, 1), (1, 1), (1, -1))
        ]
        ImageDraw.Draw(stripes).polygon(place(np.array(corners)), fill=255)

    a = fine["mark_angle"]
    r_mark = fine["mark_radius"] * _radius(np.array([a]), shape, fine)[0] * scale_to_unit
    cx, cy = place(np.array([r_mark * math.cos(a), shape["elongation"] * r_mark * math.sin(a)]))[0]
    size = fine["mark_size"] * scale
    box = [cx - size, cy - size, cx + size, cy + size]
    mark = Image.new("L", (side, side), 0)
    mark_draw = ImageDraw.Draw(mark)
    if fine["mark_kind"] == 0:
        mark_draw.ellipse(box, fill=255)
    elif fine["mark_kind"] == 1:
        mark_draw.regular_polygon((cx, cy, size), 4, rotation=math.degrees(angle), fill=255)
    else:
        mark_draw.ellipse(box, outline=255, width=max(2, int(size / 2.5)))

    image.paste(body_color, mask=body)
    image.paste(stripe_color, mask=ImageChops.multiply(body, stripes))
    image.paste(mark_color, mask=ImageChops.multiply(body, mark))

    small = image.resize((image_size, image_size), Image.Resampling.BOX)
    small = np.asarray(small, dtype=np.float32) + rng.normal(0, 4.0, (image_size, image_size, 3))
    return np.clip(small, 0, 255).astype(np.uint8)


def _synthetic_rows(size: str, seed: int, folder: Path) -> pd.DataFrame:
    coarse, split, coarse_names = _synthetic_hierarchy(size)
    n_images = SYNTHETIC_SIZES[size]["images_per_class"]
    rows = []
    for fine_id, (c, s) in enumerate(zip(coarse, split, strict=True)):
        fine_name = f"{coarse_names[c]}-f{fine_id:03d}"
        for i in range(n_images):
            rows.append(
                (
                    str(folder / f"{fine_id:03d}_{i:03d}.png"),
                    fine_id,
                    int(c),
                    fine_name,
                    coarse_names[c],
                    s,
                )
            )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def _write_png(array: np.ndarray, path: Path) -> None:
    """Temp file + rename: a concurrent reader or writer never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(array).save(fh, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_synthetic(size: str, seed: int, folder: Path) -> None:
    """Render every image of the synthetic set into `folder` (deterministic given seed).

    Each image has its own random stream seeded by (seed, fine id, index), so an image does
    not depend on the others; class attributes are seeded by (seed, level, class id).
    """
    coarse, _, _ = _synthetic_hierarchy(size)
    image_size = SYNTHETIC_SIZES[size]["image_size"]
    shapes = [
        _silhouette_params(np.random.default_rng([seed, 1, c])) for c in range(coarse.max() + 1)
    ]
    fines = [_fine_params(np.random.default_rng([seed, 2, f])) for f in range(len(coarse))]
    folder.mkdir(parents=True, exist_ok=True)
    for row in _synthetic_rows(size, seed, folder).itertuples():
        index = int(Path(row.path).stem.split("_")[1])
        rng = np.random.default_rng([seed, 3, row.fine, index])
        _write_png(
            render_synthetic_image(shapes[row.coarse], fines[row.fine], rng, image_size),
            Path(row.path),
        )


def load_synthetic(
    size: str = "demo", seed: int = 0, cache_dir: str | Path | None = None
) -> pd.DataFrame:
    """The embedded hierarchical image dataset -> manifest of PNG files.

    Rendered once into <cache_dir>/<size>-seed<seed>/ (default data/synthetic/, ignored by git)
    and reused while the generator version and the file count match; regenerated otherwise.
    Sizes: "smoke" (3 coarse x 4 fine, 8 images each, 32 px), "demo" (6 x 8, 32 images, 64 px),
    "cars196" (22 coarse, 196 fine with Stanford Cars' suffix22 hierarchy and split, 40 images,
    64 px). Coarse classes differ in outline, fine classes by a mark, a stripe and a small
    outline tweak; test fine classes are unseen in training.
    """
    if size not in SYNTHETIC_SIZES:
        raise ValueError(
            f"unknown synthetic size {size!r}; expected one of {tuple(SYNTHETIC_SIZES)}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else SYNTHETIC_DIR
    folder = folder / f"{size}-seed{seed}"
    manifest = _synthetic_rows(size, seed, folder)
    stamp = folder / "complete.json"
    expected = {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "n_images": len(manifest),
    }
    complete = (
        stamp.is_file()
        and json.loads(stamp.read_text()) == expected
        and all(os.path.isfile(p) for p in manifest["path"])
    )
    if not complete:
        # Render into a private folder, then swap it in: parallel test workers or notebooks
        # never read a half-written cache.
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        generate_synthetic(size, seed, staging)
        write_json(staging / "complete.json", expected)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:  # another process swapped in the same (deterministic) images first
            shutil.rmtree(staging, ignore_errors=True)
    return check_manifest(manifest)


# ----------------------------------------------------------------------------------------------
# One entry point and a summary
# ----------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    root: str | Path | None = None,
    coarse: str | Path = "suffix22",
    size: str = "demo",
    seed: int = 0,
    split_strategy: str = "half",
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """Dispatch on `name`: "synthetic" (size, seed), "stanford_cars" (root, coarse),
    "manifest" (root = the CSV path) or "folder" (root = root/<coarse>/<fine>/<image>)."""
    if name == "synthetic":
        return load_synthetic(size=size, seed=seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")
    if root is None or str(root) == "":
        raise ValueError(f"dataset {name!r} needs a root (folder or CSV path); got none.")
    if name == "stanford_cars":
        return load_stanford_cars(root, coarse, check_images=check_images, skip_broken=skip_broken)
    loader = load_manifest if name == "manifest" else load_folder_tree
    return loader(root, split_strategy, seed, check_images=check_images, skip_broken=skip_broken)


def anchor_mask(manifest: pd.DataFrame) -> np.ndarray:
    """Training rows that can anchor a quadruplet (qlib.miners.valid_anchors on the training
    split) -> bool (N,) over the whole manifest (False for test rows)."""
    from .miners import valid_anchors

    train = (manifest["split"] == "train").to_numpy()
    mask = np.zeros(len(manifest), dtype=bool)
    if train.any():
        fine = torch.as_tensor(manifest["fine"].to_numpy(np.int64)[train])
        coarse = torch.as_tensor(manifest["coarse"].to_numpy(np.int64)[train])
        mask[train] = valid_anchors(fine, coarse).numpy()
    return mask


def summarize(manifest: pd.DataFrame) -> dict:
    """Counts per split, the coarse -> fine tree, and the classes that cannot anchor.

    `cannot_anchor`: coarse classes with a single training fine class (no P-, docs/spec.md);
    `test_only_coarse`: coarse classes with no training fine class; `single_image_fine`:
    training fine classes with one image (no P+); `n_valid_anchors`: training images that can
    anchor a quadruplet.
    """
    df = check_manifest(manifest, warn_anchors=False)
    splits = {}
    for split in SPLITS:
        part = df[df["split"] == split]
        per_fine = part.groupby("fine").size()
        # Recall@1 of a random ranking: the chance that a random other image shares the class.
        chance = float(((per_fine - 1) * per_fine).sum() / max(len(part) * (len(part) - 1), 1))
        splits[split] = {
            "images": len(part),
            "fine_classes": int(part["fine"].nunique()),
            "coarse_classes": int(part["coarse"].nunique()),
            "images_per_fine_class": {
                "min": int(per_fine.min()),
                "median": float(per_fine.median()),
                "max": int(per_fine.max()),
            },
            "chance_R@1": 100.0 * chance,
        }
    tree = {}
    for coarse_name, group in df.groupby("coarse_name", sort=True):
        tree[coarse_name] = {
            split: sorted(group.loc[group["split"] == split, "fine_name"].unique().tolist())
            for split in SPLITS
        }
    train = df[df["split"] == "train"]
    per_fine = train.groupby("fine_name").size()
    return {
        "n_images": len(df),
        "n_fine": int(df["fine"].nunique()),
        "n_coarse": int(df["coarse"].nunique()),
        "splits": splits,
        "coarse_to_fine": tree,
        "cannot_anchor": _single_train_fine_coarse(df),
        "test_only_coarse": sorted(n for n, t in tree.items() if not t["train"]),
        "single_image_fine": sorted(per_fine.index[per_fine == 1].tolist()),
        "n_valid_anchors": int(anchor_mask(df).sum()),
    }
