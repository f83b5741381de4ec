"""Stanford Online Products (Song et al. 2016): products (fine) in 12 super-categories (coarse),
the official zero-shot split, in the official layout (data/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .manifest import check_labels, find_layout, finish, number_classes, warn_counts

SOP_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]
SOP_COUNTS = {"total": 120053, "train": 59551, "test": 60502}
SOP_HELP = (
    "Stanford Online Products cannot be downloaded by this project: get "
    "Stanford_Online_Products.zip from its authors (cvgl.stanford.edu/projects/lifted_struct) "
    "or a mirror you trust, unpack it and pass the folder."
)
SOP_LAYOUTS = {
    "official": (
        "Ebay_train.txt and Ebay_test.txt (header 'image_id class_id super_class_id path') "
        "beside one image folder per super-category (bicycle_final/, ...)",
        lambda b: all((b / f).is_file() for f in SOP_FILES.values()),
    )
}


def _read_list(path: Path) -> pd.DataFrame:
    """One of the Ebay_*.txt lists -> DataFrame(image_id, class_id, super_class_id, path)."""
    table = pd.read_csv(path, sep=r"\s+", dtype=str, keep_default_na=False)
    if list(table.columns) != SOP_HEADER:
        raise ValueError(
            f"{path} starts with the columns {list(table.columns)}; expected the header line "
            f"'{' '.join(SOP_HEADER)}'."
        )
    ids = table[SOP_HEADER[:3]]
    if len(table) == 0 or not ids.apply(lambda column: column.str.isdigit().all()).all():
        raise ValueError(f"{path} needs one row per image with integer ids; found none or others.")
    return table.astype({c: "int64" for c in SOP_HEADER[:3]})


def load_stanford_online_products(
    root: str | Path, check_images: bool = False, skip_broken: bool = False
) -> pd.DataFrame:
    """Stanford Online Products in its official layout -> manifest: fine = the product
    ("<super-category> <class_id>"), coarse = the super-category named after its folder
    (coffee_maker_final -> "coffee maker"), the official split. Other counts warn;
    `check_images` decodes every file (`skip_broken` drops unreadable ones with a warning)."""
    _, base = find_layout(root, SOP_LAYOUTS, "Stanford Online Products", SOP_HELP)
    lists = [_read_list(base / name).assign(split=split) for split, name in SOP_FILES.items()]
    df = pd.concat(lists, ignore_index=True)
    folders = df["path"].str.split("/").str[0]
    df["coarse_name"] = folders.str.removesuffix("_final").str.replace("_", " ")
    pairs = df[["super_class_id", "coarse_name"]].drop_duplicates()
    if pairs["super_class_id"].duplicated().any() or pairs["coarse_name"].duplicated().any():
        raise ValueError(
            f"super_class_id and the image folders of {base} disagree: "
            f"{sorted(map(tuple, pairs.to_numpy().tolist()))[:15]}; expected one folder per "
            "super-category."
        )
    check_labels(df, "class_id", "super_class_id")
    df["fine_name"] = df["coarse_name"] + " " + df["class_id"].astype(str)
    df["path"] = [str(base / p) for p in df["path"]]
    df = number_classes(df, "class_id", "coarse_name").sort_values(["fine", "path"], kind="stable")
    warn_counts(df, SOP_COUNTS, f"Stanford Online Products in {base}")
    return finish(
        df.drop(columns=["image_id", "class_id", "super_class_id"]), check_images, skip_broken
    )
