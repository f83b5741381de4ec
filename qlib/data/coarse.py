"""Coarse vocabularies (data/coarse/<name>.csv, documented in data/README.md) of datasets whose
classes have names but no published coarse labels (Stanford Cars 196, CUB-200-2011), a user's
own mapping, and the manifest of such a class-numbered dataset.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import repo_root

DATA_DIR = repo_root() / "data"
# vocabulary -> the dataset whose classes it labels
COARSE_VOCABULARIES = {
    "suffix22": "stanford_cars",
    "body9": "stanford_cars",
    "make49": "stanford_cars",
    "lastword58": "cub200",
}
CoarseSpec = str | Path | pd.DataFrame | Mapping


def normalize_name(name: object) -> str:
    """Case, spaces and punctuation do not count: "Ram C/V" == "ram c-v", "Black_footed" ==
    "black footed"."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def read_class_names(path: Path, n_classes: int) -> list[str]:
    """A class-names file, line i = class id i -> list of n_classes names."""
    names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
    if len(names) != n_classes:
        raise ValueError(f"{path} should hold {n_classes} class names, found {len(names)}.")
    return names


def check_class_names(found: list[str], ours: list[str], source: Path) -> None:
    """Warn when a dataset's own class list differs from ours (the class ids are used)."""
    pairs = enumerate(zip(found, ours, strict=False))
    differ = [(i + 1, a) for i, (a, b) in pairs if normalize_name(a) != normalize_name(b)]
    if len(found) != len(ours) or differ:
        warnings.warn(
            f"class names in {source} differ from the project's list ({len(found)} names, "
            f"first differences {differ[:3]}); the class ids are used.",
            stacklevel=3,
        )


def coarse_table(name: str) -> pd.DataFrame:
    """A vocabulary (a key of COARSE_VOCABULARIES) -> DataFrame(class_id 1..n, class_name,
    coarse_name, rule), read from data/coarse/<name>.csv."""
    if name not in COARSE_VOCABULARIES:
        raise ValueError(
            f"unknown coarse vocabulary {name!r}; expected one of {tuple(COARSE_VOCABULARIES)} "
            "or a CSV path."
        )
    return pd.read_csv(DATA_DIR / "coarse" / f"{name}.csv")


def _as_table(coarse: CoarseSpec, own: tuple[str, ...]) -> pd.DataFrame:
    if isinstance(coarse, str) and coarse in own:
        return coarse_table(coarse)
    if isinstance(coarse, pd.DataFrame):
        return coarse
    if isinstance(coarse, Mapping):
        return pd.DataFrame({"class": list(coarse), "coarse_name": list(coarse.values())})
    if isinstance(coarse, (str, Path)) and Path(coarse).expanduser().is_file():
        return pd.read_csv(Path(coarse).expanduser(), dtype=str, keep_default_na=False)
    raise ValueError(
        f"coarse={coarse!r} is neither a vocabulary {own} nor an existing CSV file with columns "
        "class_id or class_name, and coarse_name."
    )


def coarse_mapping(coarse: CoarseSpec, class_names: list[str], dataset: str) -> pd.Series:
    """`coarse` (a vocabulary of `dataset`, a CSV path, a DataFrame or a dict) -> Series class
    id (1..n) -> coarse name for the n `class_names`. A table needs a class_id or class_name
    column (names match by `normalize_name`) and a coarse_name column, one name per class."""
    table = _as_table(coarse, tuple(v for v, d in COARSE_VOCABULARIES.items() if d == dataset))
    coarse_col = next((c for c in ("coarse_name", "coarse") if c in table.columns), None)
    class_col = next((c for c in ("class_id", "class_name", "class") if c in table.columns), None)
    if coarse_col is None or class_col is None:
        raise ValueError(
            "a coarse table needs a class_id or class_name column and a coarse_name column; "
            f"found {list(table.columns)}."
        )
    n, id_of_name = len(class_names), {normalize_name(c): i + 1 for i, c in enumerate(class_names)}
    keys = [str(key).strip() for key in table[class_col]]
    ids = [int(k) if k.isdigit() else id_of_name.get(normalize_name(k)) for k in keys]
    if None in ids:
        raise ValueError(
            f"coarse table class {keys[ids.index(None)]!r} is not a class name or id 1-{n}."
        )
    mapping = pd.DataFrame({"class_id": ids, "coarse_name": table[coarse_col].astype(str)})
    mapping = mapping.drop_duplicates()
    doubled = sorted(mapping["class_id"][mapping["class_id"].duplicated()].unique())
    absent = sorted(set(range(1, n + 1)) - set(mapping["class_id"]))
    if doubled:
        raise ValueError(
            f"classes {doubled[:5]} are mapped to two coarse classes in the coarse table; "
            "expected one coarse name per class."
        )
    if absent:
        raise ValueError(
            f"the coarse table has no coarse name for classes {absent[:10]} ({len(absent)} in "
            f"all); expected all {n}."
        )
    return mapping.set_index("class_id")["coarse_name"].sort_index()


def class_manifest(
    records: pd.DataFrame, class_names: list[str], mapping: pd.Series, n_train_classes: int
) -> pd.DataFrame:
    """records (path, class_id 1..n) -> manifest: fine = class_id - 1, classes 1..n_train_classes
    train and the others test (so training classes come first); coarse = the index of
    mapping[class_id] in the sorted vocabulary, all of it (ids do not depend on which classes
    are present)."""
    ids = records["class_id"].to_numpy(np.int64)
    bad = sorted(set(ids.tolist()) - set(range(1, len(class_names) + 1)))
    if bad:
        raise ValueError(f"class ids {bad[:5]} are outside 1-{len(class_names)}.")
    code = {name: i for i, name in enumerate(sorted(mapping.unique()))}
    df = pd.DataFrame({"path": records["path"].astype(str).to_numpy(), "fine": ids - 1})
    df["coarse_name"] = mapping[ids].to_numpy()
    df["coarse"] = df["coarse_name"].map(code).astype(np.int64)
    df["fine_name"] = [class_names[i - 1] for i in ids]
    df["split"] = np.where(ids <= n_train_classes, "train", "test")
    return df.sort_values(["fine", "path"], kind="stable").reset_index(drop=True)
