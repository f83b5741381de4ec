"""The manifest, a DataFrame with one row per image and the columns MANIFEST_COLUMNS (its
conventions: docs/spec.md, "Data protocol"): its checks, the zero-shot split, CSV manifests,
folder trees, the helpers every loader shares, and the summary notebook 01 reports.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..utils import read_json, write_json
from .images import image_is_readable

MANIFEST_COLUMNS = ("path", "fine", "coarse", "fine_name", "coarse_name", "split")
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def check_labels(df: pd.DataFrame, fine: str, coarse: str, shown: str | None = None) -> None:
    """Raise unless every `fine` class has one `coarse` class and one split, train or test.
    `shown`: the column that names offending classes in the message (default: `fine`)."""
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"split values {bad_split} are not allowed; expected 'train' or 'test'.")
    for column, problem, expected in (
        (coarse, "are mapped to two coarse classes", "each fine class in one coarse class"),
        ("split", "are in both splits", "a zero-shot split: no fine class in train and test"),
    ):
        counts = df.groupby(fine)[column].nunique()
        names = df.loc[df[fine].isin(counts.index[counts > 1]), shown or fine].unique()
        if len(names):
            raise ValueError(f"fine classes {list(names[:5])} {problem}; expected {expected}.")


def check_manifest(manifest: pd.DataFrame, warn_anchors: bool = True) -> pd.DataFrame:
    """Validate a manifest -> a copy with canonical dtypes and MANIFEST_COLUMNS first; warns
    (dropping nothing) about coarse classes with a single training fine class (no P-)."""
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
    df = df.astype({c: str for c in ("path", "fine_name", "coarse_name", "split")})
    check_labels(df, "fine", "coarse", shown="fine_name")
    for split in SPLITS:
        if not (df["split"] == split).any():
            raise ValueError(f"the {split!r} split is empty; expected images in both splits.")
    lonely = _single_train_fine_coarse(df)
    if warn_anchors and lonely:
        warnings.warn(
            f"coarse classes {lonely} have a single training fine class: their samples have "
            "no P- and never anchor a quadruplet (they still serve as negatives).",
            stacklevel=2,
        )
    return df[list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]]


def _single_train_fine_coarse(manifest: pd.DataFrame) -> list[str]:
    n_fine = manifest[manifest["split"] == "train"].groupby("coarse_name")["fine"].nunique()
    return sorted(n_fine.index[n_fine == 1].tolist())


def number_classes(df: pd.DataFrame, fine_key: str, coarse_key: str) -> pd.DataFrame:
    """Add `fine` ids (training classes first, each split in ascending `fine_key` order) and
    `coarse` ids (ascending `coarse_key` order) to a frame with a `split` column."""
    keys = df[[fine_key, "split"]].drop_duplicates()
    keys = keys.assign(_test=keys["split"] == "test").sort_values(["_test", fine_key])
    fine_id = {key: i for i, key in enumerate(keys[fine_key])}
    coarse_id = {key: i for i, key in enumerate(sorted(df[coarse_key].unique()))}
    return df.assign(fine=df[fine_key].map(fine_id), coarse=df[coarse_key].map(coarse_id))


def split_by_fine_class(
    manifest: pd.DataFrame, strategy: str = "half", seed: int = 0
) -> pd.DataFrame:
    """Zero-shot split: each fine class goes whole to train or to test -> copy with `split`.

    "half": the first half (rounded up) of the sorted fine classes trains (as Stanford Cars
    1-98 / 99-196); "random": a seeded random half; "per_coarse": the first half of each coarse
    class's sorted fine classes, so every coarse class with 2+ fine classes can anchor.
    Classes sort by `fine` when present, else by `fine_name`.
    """
    key = "fine" if "fine" in manifest.columns else "fine_name"
    classes = sorted(manifest[key].unique())
    if len(classes) < 2:
        raise ValueError(f"a zero-shot split needs at least 2 fine classes, found {len(classes)}.")
    if strategy == "half":
        train = classes[: (len(classes) + 1) // 2]
    elif strategy == "random":
        order = np.random.default_rng(seed).permutation(len(classes))
        train = [classes[i] for i in order[: (len(classes) + 1) // 2]]
    elif strategy == "per_coarse":
        coarse_key = "coarse" if "coarse" in manifest.columns else "coarse_name"
        groups = manifest[[key, coarse_key]].drop_duplicates().groupby(coarse_key)[key]
        train = [f for _, members in groups for f in sorted(members)[: (len(members) + 1) // 2]]
    else:
        raise ValueError(
            f"unknown split strategy {strategy!r}; expected 'half', 'random' or 'per_coarse'."
        )
    return manifest.assign(split=np.where(manifest[key].isin(train), "train", "test"))


def check_files(manifest: pd.DataFrame, check_images: bool, skip_broken: bool) -> pd.DataFrame:
    """Missing files always raise. With `check_images` every file is decoded: an unreadable
    one raises, or with `skip_broken` is dropped and counted in a warning."""
    missing = [p for p in manifest["path"] if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image files do not exist, e.g. {missing[:3]}; expected every "
            "listed image on disk."
        )
    readable = np.array([not check_images or image_is_readable(p) for p in manifest["path"]])
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


def finish(df: pd.DataFrame, check_images: bool, skip_broken: bool) -> pd.DataFrame:
    """The last step of every loader: `check_files`, then `check_manifest`."""
    return check_manifest(check_files(df.reset_index(drop=True), check_images, skip_broken))


def warn_counts(df: pd.DataFrame, expected: Mapping[str, int], what: str) -> None:
    """Warn when the image counts differ from the official ones {"total", "train", "test"}."""
    counts = {"total": len(df), **{s: int((df["split"] == s).sum()) for s in SPLITS}}
    if counts != dict(expected):
        warnings.warn(
            f"{what} has {counts['total']} images ({counts['train']} train / {counts['test']} "
            f"test, {df['fine'].nunique()} classes); the full dataset has {expected['total']} "
            f"({expected['train']} / {expected['test']}).",
            stacklevel=3,
        )


def list_folder(folder: Path) -> list[Path]:
    """The folder's entries in name order, hidden ones (".name") left out."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _candidate_folders(root: Path) -> Iterator[Path]:
    """root, its sub-folders, then theirs (50 per level): lazily, so a match at the top lists
    no more."""
    yield root
    level1 = [p for p in list_folder(root) if p.is_dir()][:50]
    yield from level1
    for folder in level1:
        yield from [p for p in list_folder(folder) if p.is_dir()][:50]


def find_layout(
    root: str | Path, layouts: Mapping[str, tuple], dataset: str, help_text: str
) -> tuple[str, Path]:
    """(layout name, the folder that holds it) for `layouts` = {name: (description,
    present(folder) -> bool, ...)}, searched in root and up to two folders below it (mirrors
    nest). The error lists what root holds and what each layout expects."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{dataset} root {root} does not exist or is not a folder. {help_text}"
        )
    for base in _candidate_folders(root):
        for name, (_, present, *_) in layouts.items():
            if present(base):
                return name, base
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    expected = "; ".join(f"{name}: {layout[0]}" for name, layout in layouts.items())
    raise ValueError(
        f"no {dataset} layout found in {root} (found: {found[:15]}). Expected one of: "
        f"{expected}. {help_text}"
    )


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and path.name[0] != "."


def save_manifest(manifest: pd.DataFrame, csv_path: str | Path, source: dict | None = None) -> Path:
    """Write a manifest as CSV, paths relative to the CSV's folder where possible. `source`
    (what the manifest was built from, `qlib.data.dataset_source`) goes beside it as
    source.json, so that a run never trains on another dataset's manifest by mistake."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    base = csv_path.parent.resolve()

    def relative(path: str) -> str:
        try:
            return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
        except ValueError:  # another drive on Windows
            return str(path)

    manifest.assign(path=[relative(p) for p in manifest["path"]]).to_csv(csv_path, index=False)
    sidecar = csv_path.with_name("source.json")
    if source is not None:
        write_json(sidecar, source)
    else:
        sidecar.unlink(missing_ok=True)  # a stale record would describe another manifest
    return csv_path


def manifest_source(csv_path: str | Path) -> dict | None:
    """What a manifest was built from (source.json beside it), or None for a user's own CSV."""
    sidecar = Path(csv_path).with_name("source.json")
    return read_json(sidecar) if sidecar.is_file() else None


def load_manifest(
    csv_path: str | Path,
    split_strategy: str = "half",
    seed: int = 0,
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """A CSV with `path`, `fine`, `coarse` (names or integer ids), optional `split`,
    `fine_name`, `coarse_name` -> manifest; relative paths start at the CSV's folder. Integer
    ids are kept (what `save_manifest` wrote reads back unchanged), names get ids by the
    manifest conventions; without a split, `split_by_fine_class(split_strategy, seed)`."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest CSV {csv_path} does not exist; expected a CSV file.")
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "fine", "coarse") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{csv_path} lacks columns {missing}; expected at least path, fine, coarse "
            "(+ optional split, fine_name, coarse_name)."
        )
    if len(df) == 0:
        raise ValueError(f"{csv_path} has no rows; expected one row per image.")
    df["path"] = [os.path.normpath(csv_path.parent.resolve() / p) for p in df["path"]]
    is_id = {level: bool(df[level].str.fullmatch(r"\d+").all()) for level in ("fine", "coarse")}
    for level in ("fine", "coarse"):
        if f"{level}_name" not in df.columns or not is_id[level]:
            df[f"{level}_name"] = df[level]
        df[f"_{level}"] = df[level].astype(np.int64) if is_id[level] else df[level]
    if "split" not in df.columns or (df["split"] == "").all():
        df = split_by_fine_class(df.assign(fine=df["_fine"]), split_strategy, seed)
    check_labels(df, "_fine", "_coarse")
    numbered = number_classes(df, "_fine", "_coarse")
    for level in ("fine", "coarse"):
        df[level] = df[f"_{level}"] if is_id[level] else numbered[level]
    return finish(df.drop(columns=["_fine", "_coarse"]), check_images, skip_broken)


def load_folder_tree(
    root: str | Path,
    split_strategy: str = "half",
    seed: int = 0,
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """root/<coarse>/<fine>/<image> -> manifest, split by `split_by_fine_class`. A fine folder
    name under two coarse folders is an error; entries that are not images at that depth are
    named in a warning, not read."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"folder tree root {root} does not exist; expected root/<coarse>/<fine>/<image>."
        )
    rows, ignored = [], []
    # A file above the fine level stands for its own folder, so it lands in `ignored`.
    for coarse_dir in list_folder(root):
        for fine_dir in list_folder(coarse_dir) if coarse_dir.is_dir() else [coarse_dir]:
            for file in list_folder(fine_dir) if fine_dir.is_dir() else [fine_dir]:
                if file.parent == fine_dir and is_image_file(file):
                    rows.append((str(file), fine_dir.name, coarse_dir.name))
                else:
                    ignored.append(str(file))
    if not rows:
        raise ValueError(f"no images found under {root}; expected root/<coarse>/<fine>/<image>.")
    if ignored:
        warnings.warn(
            f"{len(ignored)} entries under {root} are not images at root/<coarse>/<fine>/<image> "
            f"and were not read, e.g. {ignored[:3]}.",
            stacklevel=2,
        )
    df = pd.DataFrame(rows, columns=["path", "fine_name", "coarse_name"])
    df = split_by_fine_class(df, split_strategy, seed)
    check_labels(df, "fine_name", "coarse_name")
    return finish(number_classes(df, "fine_name", "coarse_name"), check_images, skip_broken)


def summarize(manifest: pd.DataFrame) -> dict:
    """Counts per split (`splits[s]`: images, fine / coarse classes, images per fine class,
    `chance_R@1`: the percent chance that a random other image shares the query's class), the
    coarse -> fine tree, and what cannot anchor: `cannot_anchor` (coarse classes with a single
    training fine class: no P-), `test_only_coarse`, `single_image_fine` (no P+)."""
    from ..miners import valid_anchors

    df = check_manifest(manifest, warn_anchors=False)
    train = df[df["split"] == "train"]
    labels = (torch.tensor(train[c].to_numpy(np.int64)) for c in ("fine", "coarse"))
    splits = {}
    for split in SPLITS:
        part = df[df["split"] == split]
        n = part.groupby("fine").size()  # images per fine class
        spread = {"min": int(n.min()), "median": float(n.median()), "max": int(n.max())}
        chance = float(((n - 1) * n).sum() / max(len(part) * (len(part) - 1), 1))
        splits[split] = {
            "images": len(part),
            "fine_classes": len(n),
            "coarse_classes": int(part["coarse"].nunique()),
            "images_per_fine_class": spread,
            "chance_R@1": 100.0 * chance,
        }
    tree = {
        name: {s: sorted(g.loc[g["split"] == s, "fine_name"].unique().tolist()) for s in SPLITS}
        for name, g in df.groupby("coarse_name", sort=True)
    }
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
        "n_valid_anchors": int(valid_anchors(*labels).sum()),
    }
