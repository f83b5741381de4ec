"""qlib.data loaders: Stanford Cars (three layouts), Stanford Online Products and CUB-200-2011 on
fake trees in their official layouts, the coarse tables and their generating script."""

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_images import write_images
from scipy.io import savemat

from qlib import data
from qlib.utils import repo_root

REPO = repo_root()
NAMES = data.stanford_class_names()
CUB_NAMES = data.cub200_class_names()


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_coarse_tables", REPO / "scripts" / "make_coarse_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_coarse_tables"] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# Fake Stanford Cars trees: class id c (1..196) has 1 image, class 1 and class 150 have 2.
# ----------------------------------------------------------------------------------------------

FAKE_IDS = [c for c in range(1, 197) for _ in range(2 if c in (1, 150) else 1)]


def _struct(**fields):
    """A 1 x n MATLAB struct array like the Stanford Cars annotation files."""
    n = len(next(iter(fields.values())))
    arr = np.zeros((1, n), dtype=[(k, "O") for k in fields])
    for key, values in fields.items():
        for i, value in enumerate(values):
            arr[key][0, i] = value if isinstance(value, str) else np.array([[value]], np.uint16)
    return arr


def _cells(strings):
    return np.array(strings, dtype=object).reshape(1, -1)


def make_combined(root: Path) -> Path:
    files = [f"car_ims/{i + 1:06d}.jpg" for i in range(len(FAKE_IDS))]
    write_images(root / f for f in files)
    n = len(files)
    ann = _struct(
        relative_im_path=files,
        bbox_x1=[1] * n,
        bbox_y1=[1] * n,
        bbox_x2=[9] * n,
        bbox_y2=[7] * n,
        **{"class": FAKE_IDS},
        test=[i % 2 for i in range(n)],
    )
    savemat(root / "cars_annos.mat", {"annotations": ann, "class_names": _cells(NAMES)})
    return root


def make_devkit(root: Path) -> Path:
    base = root / "stanford_cars"  # torchvision's folder
    (base / "devkit").mkdir(parents=True)
    halves = {"train": FAKE_IDS[::2], "test": FAKE_IDS[1::2]}
    for split, ids in halves.items():
        files = [f"{i + 1:05d}.jpg" for i in range(len(ids))]
        write_images(base / f"cars_{split}" / f for f in files)
        n = len(ids)
        ann = _struct(
            bbox_x1=[1] * n,
            bbox_y1=[1] * n,
            bbox_x2=[9] * n,
            bbox_y2=[7] * n,
            **{"class": ids},
            fname=files,
        )
        target = (
            "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
        )
        savemat(base / target, {"annotations": ann})
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": _cells(NAMES)})
    return root


def make_folders(root: Path, with_splits: bool = True) -> Path:
    base = root / "car_data" / "car_data"  # the Kaggle mirror nests twice
    paths = []
    for i, class_id in enumerate(FAKE_IDS):
        folder = NAMES[class_id - 1].replace("/", "-")  # "Ram C/V ..." -> "Ram C-V ..."
        split = ("train", "test")[i % 2] if with_splits else ""
        paths.append(base / split / folder / f"{i:05d}.jpg")
    write_images(paths)
    return root


LAYOUTS = {"combined": make_combined, "devkit": make_devkit, "folders": make_folders}


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data.load_stanford_cars(*args, **kwargs)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_stanford_layouts_give_the_protocol(tmp_path, layout):
    root = LAYOUTS[layout](tmp_path)
    assert data.detect_stanford_layout(root)[0] == layout
    with pytest.warns(UserWarning, match="16185"):
        manifest = data.load_stanford_cars(root)
    assert len(manifest) == len(FAKE_IDS)
    assert sorted(manifest["fine"] + 1) == sorted(FAKE_IDS)
    for row in manifest.itertuples():
        assert row.fine_name == NAMES[row.fine]
        assert row.split == ("train" if row.fine < 98 else "test")
        assert Path(row.path).is_file()
    suffix = data.coarse_table("suffix22").set_index("class_id")["coarse_name"]
    vocabulary = sorted(suffix.unique())
    assert (manifest["coarse_name"] == suffix[manifest["fine"] + 1].to_numpy()).all()
    assert (manifest["coarse"] == [vocabulary.index(n) for n in manifest["coarse_name"]]).all()


def test_stanford_layouts_agree(tmp_path):
    keys = []
    for layout, make in LAYOUTS.items():
        manifest = _load_quietly(make(tmp_path / layout))
        keys.append(manifest[["fine", "coarse", "split"]].sort_values(["fine"]).to_numpy().tolist())
    assert keys[0] == keys[1] == keys[2]


def test_stanford_folders_without_split_and_prefixed_names(tmp_path):
    make_folders(tmp_path, with_splits=False)
    root = tmp_path / "car_data" / "car_data"
    # "001.Name" folders as some mirrors write them
    first = root / NAMES[0]
    first.rename(root / f"001.{NAMES[0]}")
    manifest = _load_quietly(tmp_path)
    assert (manifest["fine"] == 0).sum() == 2


def test_stanford_unknown_class_folder(tmp_path):
    make_folders(tmp_path)
    (tmp_path / "car_data" / "car_data" / "train" / "Flying Car 2050").mkdir()
    with pytest.raises(ValueError, match="Flying Car 2050"):
        _load_quietly(tmp_path)


def test_stanford_coarse_vocabularies_and_user_csv(tmp_path):
    root = make_combined(tmp_path / "cars")
    for name, n_labels in (("suffix22", 22), ("body9", 9), ("make49", 49)):
        manifest = _load_quietly(root, coarse=name)
        assert manifest["coarse_name"].nunique() == n_labels
        assert manifest["coarse"].max() == n_labels - 1
    by_name = tmp_path / "by_name.csv"
    pd.DataFrame({"class_name": NAMES, "coarse_name": ["even", "odd"] * 98}).to_csv(
        by_name, index=False
    )
    by_id = tmp_path / "by_id.csv"
    pd.DataFrame({"class_id": range(1, 197), "coarse_name": ["even", "odd"] * 98}).to_csv(
        by_id, index=False
    )
    a, b = _load_quietly(root, coarse=by_name), _load_quietly(root, coarse=str(by_id))
    assert (a["coarse_name"] == b["coarse_name"]).all()
    assert set(a.loc[a["fine"] % 2 == 0, "coarse_name"]) == {"even"}


def test_stanford_bad_coarse_tables(tmp_path):
    root = make_combined(tmp_path / "cars")
    partial = tmp_path / "partial.csv"
    pd.DataFrame({"class_id": range(1, 100), "coarse_name": "x"}).to_csv(partial, index=False)
    with pytest.raises(ValueError, match="no coarse name for classes"):
        _load_quietly(root, coarse=partial)
    doubled = tmp_path / "doubled.csv"
    rows = pd.DataFrame({"class_id": list(range(1, 197)) + [5], "coarse_name": ["a"] * 196 + ["b"]})
    rows.to_csv(doubled, index=False)
    with pytest.raises(ValueError, match="two coarse classes"):
        _load_quietly(root, coarse=doubled)
    with pytest.raises(ValueError, match="neither a vocabulary"):
        _load_quietly(root, coarse="suffix23")


def test_stanford_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_stanford_cars(tmp_path / "nowhere")
    (tmp_path / "something_else").mkdir()
    (tmp_path / "README.txt").write_text("hi")
    with pytest.raises(ValueError, match="no Stanford Cars layout") as err:
        data.load_stanford_cars(tmp_path)
    message = str(err.value)
    for expected in (
        "car_ims/",
        "cars_annos.mat",
        "devkit/cars_meta.mat",
        "one folder per class",
        "README.txt",
        "cannot be downloaded",
    ):
        assert expected in message


def test_stanford_missing_and_corrupt_images(tmp_path):
    root = make_combined(tmp_path)
    broken = root / "car_ims" / "000003.jpg"
    broken.write_bytes(b"not a jpeg")
    manifest = _load_quietly(root)  # default: no decoding, the broken file is still listed
    assert len(manifest) == len(FAKE_IDS)
    with pytest.raises(ValueError, match="000003.jpg"):
        _load_quietly(root, check_images=True)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        skipped = data.load_stanford_cars(root, check_images=True, skip_broken=True)
    assert len(skipped) == len(FAKE_IDS) - 1 and str(broken) not in set(skipped["path"])
    (root / "car_ims" / "000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000004.jpg"):
        _load_quietly(root)


# ----------------------------------------------------------------------------------------------
# Coarse tables
# ----------------------------------------------------------------------------------------------


def test_coarse_tables_counts():
    assert len(NAMES) == 196 and NAMES[0] == "AM General Hummer SUV 2000"
    assert NAMES[-1] == "smart fortwo Convertible 2012"
    for name, n_labels in (("suffix22", 22), ("body9", 9), ("make49", 49)):
        table = data.coarse_table(name)
        assert len(table) == 196
        assert list(table["class_id"]) == list(range(1, 197))
        assert list(table["class_name"]) == NAMES
        assert table["coarse_name"].nunique() == n_labels
    suffix = data.coarse_table("suffix22")
    assert suffix[suffix["class_id"] <= 98]["coarse_name"].nunique() == 17
    assert set(data.coarse_table("body9")["coarse_name"]) == set(_load_script().BODY9)


def test_coarse_tables_match_their_rules():
    script = _load_script()
    tables = script.build_tables(NAMES)
    tables.update(script.build_cub_tables(CUB_NAMES))
    for name, table in tables.items():
        committed = data.coarse_table(name)
        pd.testing.assert_frame_equal(committed, table, check_dtype=False)
    # the rules, one class at a time (a brute-force restatement)
    for name, row in zip(NAMES, tables["suffix22"].itertuples(), strict=True):
        assert row.coarse_name == name.split(" ")[-2]
    manual = tables["body9"]["rule"].str.startswith("manual")
    assert manual.sum() == len(script.BODY9_MANUAL) <= 20
    assert tables["make49"].set_index("class_id")["coarse_name"][1] == "AM General"
    assert tables["make49"].set_index("class_id")["coarse_name"][8] == "Aston Martin"
    cub = tables["lastword58"]
    for name, row in zip(CUB_NAMES, cub.itertuples(), strict=True):
        manual = script.CUB_MANUAL.get(name)
        assert row.coarse_name == (manual[0] if manual else name.split(" ")[-1])
    assert cub["rule"].str.startswith("manual").sum() == len(script.CUB_MANUAL) <= 20
    assert script.main(["--check"]) == 0


def test_cub_class_names_and_table():
    assert len(CUB_NAMES) == 200 and CUB_NAMES[0] == "Black footed Albatross"
    assert CUB_NAMES[-1] == "Common Yellowthroat"
    table = data.coarse_table("lastword58")
    assert list(table["class_id"]) == list(range(1, 201)) and list(table["class_name"]) == CUB_NAMES
    assert table["coarse_name"].nunique() == 58
    assert table[table["class_id"] <= 100]["coarse_name"].nunique() == 44


def test_unknown_coarse_vocabulary():
    with pytest.raises(ValueError, match="unknown coarse vocabulary"):
        data.coarse_table("types")


# ----------------------------------------------------------------------------------------------
# Stanford Online Products: a fake tree in the official layout
# ----------------------------------------------------------------------------------------------

# (class_id, super_class_id, folder, images): products 1-3 train, 4-6 test; "coffee maker" and
# "bicycle" in both splits, "chair" in the test split only.
SOP_CLASSES = {
    "train": [
        (1, 1, "bicycle_final", 2),
        (2, 1, "bicycle_final", 3),
        (3, 4, "coffee_maker_final", 2),
    ],
    "test": [(4, 1, "bicycle_final", 2), (5, 3, "chair_final", 2), (6, 4, "coffee_maker_final", 4)],
}


def make_sop(
    root: Path, classes=SOP_CLASSES, header="image_id class_id super_class_id path"
) -> Path:
    base = root / "Stanford_Online_Products"
    image_id = 0
    for split, rows in classes.items():
        lines = [header]
        for class_id, super_id, folder, n in rows:
            for i in range(n):
                image_id += 1
                relative = f"{folder}/{100000 + class_id}_{i}.JPG"
                write_images([base / relative])
                lines.append(f"{image_id} {class_id} {super_id} {relative}")
        (base / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return base


def _quietly(load, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(*args, **kwargs)


def _sop_quietly(root):
    return _quietly(data.load_stanford_online_products, root)


def test_sop_official_layout(tmp_path):
    base = make_sop(tmp_path)
    with pytest.warns(UserWarning, match="120053"):
        manifest = data.load_stanford_online_products(tmp_path)  # found one level down
    assert len(manifest) == 15 and list(manifest.columns) == list(data.MANIFEST_COLUMNS)
    assert manifest["path"].map(lambda p: Path(p).is_file()).all()
    for split, rows in SOP_CLASSES.items():
        for class_id, _, folder, n in rows:
            part = manifest[manifest["fine_name"].str.endswith(f" {class_id}")]
            assert len(part) == n and set(part["split"]) == {split}
            assert set(part["coarse_name"]) == {folder.removesuffix("_final").replace("_", " ")}
            assert all(p.startswith(str(base / folder)) for p in part["path"])
    # fine ids: training products first, in class_id order; coarse ids: sorted names
    fine_of = manifest.groupby("fine_name")["fine"].first()
    assert [
        fine_of[f"{n} {c}"] for c, n in ((1, "bicycle"), (2, "bicycle"), (3, "coffee maker"))
    ] == [0, 1, 2]
    vocabulary = ["bicycle", "chair", "coffee maker"]
    assert (manifest["coarse"] == manifest["coarse_name"].map(vocabulary.index)).all()
    assert _quietly(data.load_dataset, "sop", root=tmp_path).equals(manifest)


def test_sop_test_ids_below_train_ids_still_train_first(tmp_path):
    classes = {
        "train": [(7, 1, "fan_final", 2), (9, 1, "fan_final", 2)],
        "test": [(2, 2, "mug_final", 2), (3, 2, "mug_final", 2)],
    }
    manifest = _sop_quietly(make_sop(tmp_path, classes))
    fine_of = manifest.groupby("fine_name")["fine"].first()
    assert [fine_of[n] for n in ("fan 7", "fan 9", "mug 2", "mug 3")] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: {**c, "test": c["test"] + [(2, 1, "bicycle_final", 2)]}, "both splits"),
        (lambda c: {**c, "test": [(4, 2, "bicycle_final", 2)]}, "disagree"),
        (
            lambda c: {
                **c,
                "test": [
                    (4, 1, "bicycle_final", 2),
                    (5, 5, "chair_final", 1),
                    (8, 5, "mug_final", 2),
                ],
            },
            "disagree",
        ),
    ],
)
def test_sop_inconsistent_lists(tmp_path, change, match):
    make_sop(tmp_path, change(SOP_CLASSES))
    with pytest.raises(ValueError, match=match):
        _sop_quietly(tmp_path)


def test_sop_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_stanford_online_products(tmp_path / "nowhere")
    (tmp_path / "empty" / "bicycle_final").mkdir(parents=True)
    (tmp_path / "empty" / "Ebay_info.txt").write_text("x")
    with pytest.raises(ValueError, match="no Stanford Online Products layout") as err:
        data.load_stanford_online_products(tmp_path / "empty")
    for expected in (
        "Ebay_info.txt",
        "bicycle_final/",
        "Ebay_train.txt and Ebay_test.txt",
        "cannot be downloaded",
    ):
        assert expected in str(err.value)
    make_sop(tmp_path / "header", header="id class super path")
    with pytest.raises(ValueError, match="image_id class_id super_class_id path"):
        data.load_stanford_online_products(tmp_path / "header")
    base = make_sop(tmp_path / "missing")
    (base / "chair_final" / "100005_1.JPG").unlink()
    with pytest.raises(FileNotFoundError, match="100005_1.JPG"):
        _sop_quietly(base)


# ----------------------------------------------------------------------------------------------
# CUB-200-2011: a fake tree in the official layout (one image per species, two for 1 and 150)
# ----------------------------------------------------------------------------------------------

CUB_IDS = [c for c in range(1, 201) for _ in range(2 if c in (1, 150) else 1)]
CUB_FOLDERS = (REPO / "data" / "cub200_class_names.txt").read_text().split()


def make_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    files = [
        f"{CUB_FOLDERS[c - 1]}/{CUB_FOLDERS[c - 1][4:]}_{i:04d}_1.jpg"
        for i, c in enumerate(CUB_IDS)
    ]
    write_images(base / "images" / f for f in files)
    (base / "images.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(files)))
    (base / "image_class_labels.txt").write_text(
        "".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_IDS))
    )
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CUB_FOLDERS)))
    # the classification split (every species in both): the zero-shot protocol ignores it
    (base / "train_test_split.txt").write_text(
        "".join(f"{i + 1} {i % 2}\n" for i in range(len(files)))
    )
    return base


def _cub_quietly(*args, **kwargs):
    return _quietly(data.load_cub200, *args, **kwargs)


def test_cub_official_layout(tmp_path):
    make_cub(tmp_path)
    with pytest.warns(UserWarning, match="11788"):
        manifest = data.load_cub200(tmp_path)
    assert len(manifest) == len(CUB_IDS) and sorted(manifest["fine"] + 1) == CUB_IDS
    table = data.coarse_table("lastword58").set_index("class_id")["coarse_name"]
    vocabulary = sorted(table.unique())
    for row in manifest.itertuples():
        assert row.split == ("train" if row.fine < 100 else "test")
        assert row.fine_name == CUB_NAMES[row.fine]
        assert row.coarse_name == table[row.fine + 1]
        assert row.coarse == vocabulary.index(row.coarse_name)
        assert Path(row.path).is_file() and Path(row.path).parent.name == CUB_FOLDERS[row.fine]
    assert manifest.loc[manifest["fine"] == 0, "coarse_name"].tolist() == ["Albatross"] * 2
    assert _quietly(data.load_dataset, "cub200", root=tmp_path, coarse="").equals(manifest)


def test_cub_own_coarse_mapping(tmp_path):
    make_cub(tmp_path)
    by_name = {
        name.replace(" ", "_"): "even" if i % 2 else "odd" for i, name in enumerate(CUB_NAMES)
    }
    manifest = _cub_quietly(tmp_path, coarse=by_name)
    assert set(manifest.loc[manifest["fine"] % 2 == 0, "coarse_name"]) == {"odd"}
    with pytest.raises(ValueError, match="neither a vocabulary"):
        _cub_quietly(tmp_path, coarse="suffix22")  # a Stanford Cars vocabulary


def test_cub_bad_inputs(tmp_path):
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    (tmp_path / "CUB_200_2011" / "images.txt").write_text("1 a/b.jpg\n")
    with pytest.raises(ValueError, match="no CUB-200-2011 layout") as err:
        data.load_cub200(tmp_path)
    for expected in (
        "CUB_200_2011/",
        "image_class_labels.txt",
        "classes.txt",
        "cannot be downloaded",
    ):
        assert expected in str(err.value)
    base = make_cub(tmp_path / "unpaired")
    labels = base / "image_class_labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="image ids \\[202\\]"):
        _cub_quietly(base)
    labels.write_text(labels.read_text() + "202\n")
    with pytest.raises(ValueError, match="line 202"):
        _cub_quietly(base)
    base = make_cub(tmp_path / "missing")
    first = base / "images" / f"{CUB_FOLDERS[0]}/{CUB_FOLDERS[0][4:]}_0000_1.jpg"
    first.unlink()
    with pytest.raises(FileNotFoundError, match=first.name):
        _cub_quietly(base)
