"""Stanford Cars 196 (Krause et al. 2013) in the three layouts it circulates in (data/README.md);
the protocol (all 16,185 images, classes 1-98 train, 99-196 test): docs/spec.md.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import coarse as vocab
from .manifest import SPLITS, find_layout, finish, is_image_file, list_folder, warn_counts

CLASS_NAMES_FILE = vocab.DATA_DIR / "stanford_cars_class_names.txt"  # line i = class id i
STANFORD_TRAIN_CLASSES = 98  # classes 1-98 train, 99-196 test
STANFORD_COUNTS = {"total": 16185, "train": 8054, "test": 8131}
STANFORD_HELP = (
    "Stanford Cars cannot be downloaded by this project: get it yourself (e.g. the "
    "'stanford_cars' mirrors on Kaggle or Hugging Face, or the devkit + images once published "
    "at ai.stanford.edu/~jkrause/cars/car_dataset.html) and pass the folder that holds it."
)


def stanford_class_names() -> list[str]:
    """The 196 class names in official order (index = class id - 1)."""
    return vocab.read_class_names(CLASS_NAMES_FILE, 196)


def _mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        return np.atleast_1d(loadmat(path, squeeze_me=True)[key])
    except Exception as err:
        raise ValueError(f"cannot read {key} from {path}: {err}") from err


def _annotations(path: Path, fields: tuple[str, ...]) -> list[list]:
    """A Stanford Cars annotations .mat -> one list of python values per field."""
    ann = _mat(path, "annotations")
    if any(f not in ann.dtype.names for f in fields):
        raise ValueError(
            f"{path} lacks the annotation fields {list(fields)} (found {list(ann.dtype.names)}); "
            "for the test split use cars_test_annos_withlabels.mat, the file with labels."
        )
    return [[np.asarray(v).item() for v in ann[f]] for f in fields]


def _check_names(path: Path) -> None:
    names = [str(n) for n in _mat(path, "class_names")]
    vocab.check_class_names(names, stanford_class_names(), path)


def _read_combined(base: Path) -> pd.DataFrame:
    files, ids = _annotations(base / "cars_annos.mat", ("relative_im_path", "class"))
    with contextlib.suppress(ValueError):  # class_names is optional in this file
        _check_names(base / "cars_annos.mat")
    return pd.DataFrame({"path": [str(base / f) for f in files], "class_id": ids})


def _devkit_test_annos(base: Path) -> Path | None:
    name = "cars_test_annos_withlabels.mat"
    return next((p for p in (base / name, base / "devkit" / name) if p.is_file()), None)


def _read_devkit(base: Path) -> pd.DataFrame:
    if (base / "devkit" / "cars_meta.mat").is_file():
        _check_names(base / "devkit" / "cars_meta.mat")
    frames = []
    for split, annos in (("train", base / "devkit" / "cars_train_annos.mat"), ("test", None)):
        files, ids = _annotations(annos or _devkit_test_annos(base), ("fname", "class"))
        folder = base / f"cars_{split}"
        nested = folder / folder.name  # some mirrors nest cars_train/cars_train/
        if not (folder / files[0]).exists() and (nested / files[0]).exists():
            folder = nested
        frames.append(pd.DataFrame({"path": [str(folder / f) for f in files], "class_id": ids}))
    return pd.concat(frames, ignore_index=True)


def _class_folders(base: Path) -> list[Path]:
    """Class folders at base/<class>/ or base/<train|test>/<class>/."""
    children = [p for p in list_folder(base) if p.is_dir()]
    return [
        folder
        for child in children
        for folder in (list_folder(child) if child.name.lower() in SPLITS else [child])
        if folder.is_dir()
    ]


@lru_cache(maxsize=1)
def _id_of_name() -> dict[str, int]:
    return {vocab.normalize_name(n): i + 1 for i, n in enumerate(stanford_class_names())}


def _class_id_of_folder(name: str) -> int | None:
    """A folder named after a class ("Ram C-V Cargo Van Minivan 2012" matches "Ram C/V ...",
    a numeric prefix such as "001." is allowed) or its id ("17") -> class id, else None."""
    if name.strip().isdigit() and 1 <= int(name) <= 196:
        return int(name)
    stripped = re.sub(r"^\d+[\s._-]+", "", name)
    ids = _id_of_name()
    return ids.get(vocab.normalize_name(name)) or ids.get(vocab.normalize_name(stripped))


def _has_class_folders(base: Path) -> bool:
    """Detection needs a folder named after a class (bare numbers are too common)."""
    with contextlib.suppress(OSError):
        folders = _class_folders(base)
        return any(_class_id_of_folder(p.name) for p in folders if not p.name.isdigit())
    return False


def _read_class_folders(base: Path) -> pd.DataFrame:
    rows, unknown, ignored = [], [], []
    for folder in _class_folders(base):
        class_id = _class_id_of_folder(folder.name)
        files = list_folder(folder)
        unknown += [folder.name] if class_id is None else []
        rows += [(str(f), class_id) for f in files if class_id and is_image_file(f)]
        ignored += [str(f) for f in files if class_id and not is_image_file(f)]
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


# layout -> (what it holds, present(folder) -> bool, read(folder) -> DataFrame(path, class_id))
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
        _has_class_folders,
        _read_class_folders,
    ),
}


def detect_stanford_layout(root: str | Path) -> tuple[str, Path]:
    """(layout name, the folder that holds it): root or a folder up to two levels below it
    (mirrors nest, e.g. stanford_cars/ or car_data/car_data/)."""
    return find_layout(root, STANFORD_LAYOUTS, "Stanford Cars", STANFORD_HELP)


def load_stanford_cars(
    root: str | Path,
    coarse: vocab.CoarseSpec = "suffix22",
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """Stanford Cars 196 in any of the three layouts -> manifest. `coarse`: "suffix22", "body9",
    "make49", or a CSV path / DataFrame / dict mapping class name or id -> coarse name. Other
    counts warn; `check_images` decodes every file (`skip_broken` drops unreadable ones with a
    warning)."""
    layout, base = detect_stanford_layout(root)
    names = stanford_class_names()
    mapping = vocab.coarse_mapping(coarse, names, "stanford_cars")
    df = vocab.class_manifest(
        STANFORD_LAYOUTS[layout][2](base), names, mapping, STANFORD_TRAIN_CLASSES
    )
    warn_counts(df, STANFORD_COUNTS, f"Stanford Cars in {base} ({layout} layout)")
    return finish(df, check_images, skip_broken)
