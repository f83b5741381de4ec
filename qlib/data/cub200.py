"""CUB-200-2011 (Wah et al. 2011) in its official layout, zero-shot: species 1-100 train, 101-200
test (train_test_split.txt, a classification split, is not read); details in data/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import coarse as vocab
from .manifest import find_layout, finish, warn_counts

CLASS_NAMES_FILE = vocab.DATA_DIR / "cub200_class_names.txt"  # classes.txt's names, line i = id i
CUB_COUNTS = {"total": 11788, "train": 5864, "test": 5924}
CUB_FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
CUB_HELP = (
    "CUB-200-2011 cannot be downloaded by this project: get CUB_200_2011.tgz from its authors "
    "(Caltech Vision Lab) or a mirror you trust, unpack it and pass the folder."
)
CUB_LAYOUTS = {
    "official": (
        "images/, images.txt, image_class_labels.txt and classes.txt (CUB_200_2011/)",
        lambda b: (b / "images").is_dir() and all((b / f).is_file() for f in CUB_FILES),
    )
}


def cub200_class_names() -> list[str]:
    """The 200 species in official order, readable ("Black footed Albatross"; index = id - 1)."""
    official = vocab.read_class_names(CLASS_NAMES_FILE, 200)
    return [re.sub(r"^\d+\.", "", name).replace("_", " ") for name in official]


def _read_pairs(path: Path) -> dict[int, str]:
    """A CUB list of `<id> <value>` lines -> {id: value}."""
    pairs = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        key, _, value = line.strip().partition(" ")
        if line.strip() and (not key.isdigit() or not value.strip()):
            raise ValueError(f"{path} line {number} reads {line!r}; expected '<id> <value>'.")
        if line.strip():
            pairs[int(key)] = value.strip()
    return pairs


def load_cub200(
    root: str | Path,
    coarse: vocab.CoarseSpec = "lastword58",
    check_images: bool = False,
    skip_broken: bool = False,
) -> pd.DataFrame:
    """CUB-200-2011 in its official layout -> manifest. `coarse`: "lastword58" or a CSV path /
    DataFrame / dict mapping species name or id -> coarse name. Other counts warn;
    `check_images` decodes every file (`skip_broken` drops unreadable ones with a warning)."""
    _, base = find_layout(root, CUB_LAYOUTS, "CUB-200-2011", CUB_HELP)
    images, labels, classes = (_read_pairs(base / name) for name in CUB_FILES)
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise ValueError(
            f"image ids {unpaired[:5]} are in only one of images.txt and image_class_labels.txt "
            f"of {base}; expected the same image ids in both."
        )
    if not all(label.isdigit() for label in labels.values()):
        raise ValueError(f"{base / 'image_class_labels.txt'} must hold integer class ids.")
    official = vocab.read_class_names(CLASS_NAMES_FILE, 200)
    vocab.check_class_names([classes[k] for k in sorted(classes)], official, base / "classes.txt")
    paths = [str(base / "images" / images[i]) for i in sorted(images)]
    records = pd.DataFrame({"path": paths, "class_id": [int(labels[i]) for i in sorted(images)]})
    names = cub200_class_names()
    mapping = vocab.coarse_mapping(coarse, names, "cub200")
    df = vocab.class_manifest(records, names, mapping, n_train_classes=100)
    warn_counts(df, CUB_COUNTS, f"CUB-200-2011 in {base}")
    return finish(df, check_images, skip_broken)
