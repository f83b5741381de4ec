"""qlib.data: Stanford Cars layouts, coarse tables, manifests, folder trees, the synthetic set,
the Dataset and transforms, every bad input, and notebook 01 at smoke size."""

import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from qlib import data
from qlib.utils import read_json, repo_root

REPO = repo_root()
NAMES = data.stanford_class_names()


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
JPEG = io.BytesIO()
Image.new("RGB", (12, 8), (200, 30, 30)).save(JPEG, format="JPEG")
JPEG = JPEG.getvalue()


def _write_images(paths):
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)


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
    _write_images(root / f for f in files)
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
        _write_images(base / f"cars_{split}" / f for f in files)
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
    _write_images(paths)
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
    tables = script.build_tables(script.read_class_names())
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
    assert script.main(["--check"]) == 0


def test_unknown_coarse_vocabulary():
    with pytest.raises(ValueError, match="unknown coarse vocabulary"):
        data.coarse_table("types")


# ----------------------------------------------------------------------------------------------
# Manifests, folder trees, splits
# ----------------------------------------------------------------------------------------------


def _tiny_tree(root: Path, tree: dict[str, dict[str, int]]) -> Path:
    for coarse, fines in tree.items():
        for fine, n in fines.items():
            _write_images(root / coarse / fine / f"{i}.jpg" for i in range(n))
    return root


TREE = {"bird": {"crow": 2, "owl": 3, "wren": 2}, "cat": {"lion": 2, "lynx": 2}, "dog": {"pug": 3}}


def test_folder_tree(tmp_path):
    root = _tiny_tree(tmp_path / "tree", TREE)
    (root / "bird" / "owl" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="1 entries"):
        manifest = data.load_folder_tree(root)
    assert len(manifest) == 14
    fine_names = sorted(f for fines in TREE.values() for f in fines)
    train_names = set(fine_names[:3])  # first half (rounded up) of the sorted fine classes
    assert set(manifest.loc[manifest["split"] == "train", "fine_name"]) == train_names
    # training fine classes first, coarse ids = sorted coarse names
    assert set(manifest.loc[manifest["split"] == "train", "fine"]) == {0, 1, 2}
    for row in manifest.itertuples():
        assert row.coarse == sorted(TREE).index(row.coarse_name)
        assert row.fine_name in TREE[row.coarse_name]


def test_folder_tree_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_folder_tree(tmp_path / "missing")
    (tmp_path / "empty" / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        data.load_folder_tree(tmp_path / "empty")
    root = _tiny_tree(tmp_path / "doubled", {"a": {"x": 2, "y": 2}, "b": {"x": 2, "z": 2}})
    with pytest.raises(ValueError, match="two coarse classes"):
        data.load_folder_tree(root)


@pytest.mark.parametrize("strategy", ["half", "random", "per_coarse"])
def test_split_by_fine_class(strategy):
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 11, 60)
    df = pd.DataFrame({"fine": fine, "coarse": fine % 3})
    out = data.split_by_fine_class(df, strategy, seed=1)
    assert (out.groupby("fine")["split"].nunique() == 1).all()
    train = sorted(out.loc[out["split"] == "train", "fine"].unique())
    classes = sorted(df["fine"].unique())
    if strategy == "half":
        assert train == classes[: (len(classes) + 1) // 2]
    elif strategy == "random":
        again = data.split_by_fine_class(df, strategy, seed=1)
        assert (again["split"] == out["split"]).all() and len(train) == (len(classes) + 1) // 2
    else:
        for c in range(3):
            members = sorted(set(fine[fine % 3 == c]))
            assert [f for f in train if f % 3 == c] == members[: (len(members) + 1) // 2]
    with pytest.raises(ValueError, match="unknown split strategy"):
        data.split_by_fine_class(df, "thirds")


def test_manifest_round_trip(tmp_path):
    root = _tiny_tree(tmp_path / "tree", TREE)
    manifest = data.load_folder_tree(root, split_strategy="per_coarse")
    csv = data.save_manifest(manifest, tmp_path / "run" / "data" / "manifest.csv")
    written = pd.read_csv(csv)
    assert not any(os.path.isabs(p) for p in written["path"])
    again = data.load_manifest(csv)
    pd.testing.assert_frame_equal(again, manifest)


def test_manifest_with_names_and_no_split(tmp_path):
    _tiny_tree(tmp_path / "imgs", TREE)
    rows = [
        (f"imgs/{c}/{f}/{i}.jpg", f, c)
        for c, fines in TREE.items()
        for f, n in fines.items()
        for i in range(n)
    ]
    csv = tmp_path / "mine.csv"
    pd.DataFrame(rows, columns=["path", "fine", "coarse"]).to_csv(csv, index=False)
    manifest = data.load_manifest(csv)
    assert manifest["path"].map(os.path.isfile).all()
    assert set(manifest["coarse_name"]) == set(TREE)
    assert (manifest.groupby("fine")["split"].nunique() == 1).all()


def test_manifest_keeps_integer_ids(tmp_path):
    _tiny_tree(tmp_path, {"c": {"f": 1}})
    rows = pd.DataFrame(
        {
            "path": ["c/f/0.jpg"] * 6,
            "fine": [7, 7, 3, 3, 5, 1],
            "coarse": [4, 4, 4, 4, 2, 2],
            "split": ["test", "test", "train", "train", "train", "train"],
        }
    )
    rows.to_csv(tmp_path / "ids.csv", index=False)
    with pytest.warns(UserWarning, match="single training fine class"):
        manifest = data.load_manifest(tmp_path / "ids.csv")
    assert list(manifest["fine"]) == [7, 7, 3, 3, 5, 1]
    assert list(manifest["coarse"]) == [4, 4, 4, 4, 2, 2]
    assert list(manifest["fine_name"]) == ["7", "7", "3", "3", "5", "1"]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda d: d.drop(columns=["coarse"]), ValueError, "lacks columns"),
        (lambda d: d.assign(coarse=["a", "b", "b", "b"]), ValueError, "two coarse classes"),
        (lambda d: d.assign(split=["train", "val", "test", "test"]), ValueError, "'val'"),
        (lambda d: d.assign(split=["train", "test", "test", "test"]), ValueError, "both splits"),
        (lambda d: d.assign(split="train"), ValueError, "'test' split is empty"),
        (lambda d: d.assign(path="nope.jpg"), FileNotFoundError, "nope.jpg"),
        (lambda d: d.iloc[:0], ValueError, "no rows"),
    ],
)
def test_manifest_bad_inputs(tmp_path, change, error, match):
    _tiny_tree(tmp_path, {"c": {"f": 1}})
    good = pd.DataFrame(
        {
            "path": ["c/f/0.jpg"] * 4,
            "fine": ["x", "x", "y", "y"],
            "coarse": ["a"] * 4,
            "split": ["train", "train", "test", "test"],
        }
    )
    data.load_manifest(_write_csv(good, tmp_path / "good.csv"))
    with pytest.raises(error, match=match):
        data.load_manifest(_write_csv(change(good), tmp_path / "bad.csv"))


def _write_csv(df, path):
    df.to_csv(path, index=False)
    return path


def test_load_manifest_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_manifest(tmp_path / "none.csv")


def test_check_manifest_rejects_float_labels():
    df = pd.DataFrame(
        {
            "path": ["a"],
            "fine": [0.5],
            "coarse": [0],
            "fine_name": ["a"],
            "coarse_name": ["b"],
            "split": ["train"],
        }
    )
    with pytest.raises(ValueError, match="integers"):
        data.check_manifest(df)


def test_summarize_matches_brute_force(tmp_path):
    tree = {"a": {"a1": 2, "a2": 1, "a3": 2, "a4": 2}, "b": {"b1": 3, "b2": 2}, "c": {"c1": 2}}
    root = _tiny_tree(tmp_path, tree)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = data.load_folder_tree(root, split_strategy="per_coarse")
    summary = data.summarize(manifest)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    valid = 0
    for r in train.itertuples():  # the SPEC's anchor rule, one sample at a time
        has_pos = any(o.fine == r.fine and o.Index != r.Index for o in train.itertuples())
        has_posneg = any(o.coarse == r.coarse and o.fine != r.fine for o in train.itertuples())
        has_neg = any(o.coarse != r.coarse for o in train.itertuples())
        valid += has_pos and has_posneg and has_neg
    assert summary["n_valid_anchors"] == valid
    assert summary["cannot_anchor"] == ["b", "c"]  # per_coarse: b -> b1 only, c -> c1 only
    assert summary["single_image_fine"] == ["a2"]  # one image: no P+
    assert summary["splits"]["train"]["images"] + summary["splits"]["test"]["images"] == 14
    assert summary["coarse_to_fine"]["a"] == {"train": ["a1", "a2"], "test": ["a3", "a4"]}


def test_load_dataset_dispatch(tmp_path):
    root = _tiny_tree(tmp_path / "tree", TREE)
    assert len(data.load_dataset("folder", root=root)) == 14
    csv = data.save_manifest(data.load_folder_tree(root), tmp_path / "m.csv")
    assert len(data.load_dataset("manifest", root=csv)) == 14
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="needs a root"):
        data.load_dataset("stanford_cars")


# ----------------------------------------------------------------------------------------------
# The synthetic set
# ----------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic(tmp_path):
    a = data.load_synthetic("smoke", seed=0, cache_dir=tmp_path / "a")
    b = data.load_synthetic("smoke", seed=0, cache_dir=tmp_path / "b")
    c = data.load_synthetic("smoke", seed=1, cache_dir=tmp_path / "c")
    assert len(a) == 3 * 4 * 8
    for pa, pb in zip(a["path"], b["path"], strict=True):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    assert not np.array_equal(
        np.asarray(Image.open(a["path"][0])), np.asarray(Image.open(c["path"][0]))
    )
    assert np.asarray(Image.open(a["path"][0])).shape == (32, 32, 3)


def test_synthetic_cache_regenerates_when_incomplete(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    first = Path(manifest["path"][5])
    pixels = np.asarray(Image.open(first))
    first.unlink()
    data.load_synthetic("smoke", cache_dir=tmp_path)
    assert np.array_equal(np.asarray(Image.open(first)), pixels)
    stamp = tmp_path / "smoke-seed0" / "complete.json"
    assert read_json(stamp)["generator_version"] == data.GENERATOR_VERSION


@pytest.mark.parametrize("size", sorted(data.SYNTHETIC_SIZES))
def test_synthetic_hierarchy(size):
    coarse, split, names = data._synthetic_hierarchy(size)
    assert len(names) == coarse.max() + 1 and names == sorted(names)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    assert train.max() < test.min()  # training fine classes first
    if size == "cars196":
        suffix = data.coarse_table("suffix22")["coarse_name"]
        vocab = sorted(set(suffix))
        assert list(coarse) == [vocab.index(s) for s in suffix]
        assert len(train) == len(test) == 98
    else:
        spec = data.SYNTHETIC_SIZES[size]
        assert len(coarse) == spec["n_coarse"] * spec["fine_per_coarse"]
        for c in range(spec["n_coarse"]):  # every coarse class can anchor
            assert (coarse[train] == c).sum() >= 2 and (coarse[test] == c).sum() >= 2


def test_synthetic_bad_inputs():
    with pytest.raises(ValueError, match="unknown synthetic size"):
        data.load_synthetic("huge")
    with pytest.raises(ValueError, match="seed"):
        data.load_synthetic("smoke", seed=-1)


# ----------------------------------------------------------------------------------------------
# Dataset and transforms
# ----------------------------------------------------------------------------------------------


def test_dataset_items_and_cache(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    plain = data.HierarchicalImageDataset(manifest)
    cached = data.HierarchicalImageDataset(manifest, cache_in_memory=True)
    assert len(plain) == len(manifest)
    for i in (0, 17, len(manifest) - 1):
        x, fine, coarse = plain[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
        assert (fine, coarse) == (manifest["fine"][i], manifest["coarse"][i])
        assert torch.equal(cached[i][0], x)
    flipped = cached.with_transform(lambda image: image.flip(-1).float() / 255.0)
    assert flipped._images is cached._images  # the decoded cache is shared, not re-read
    assert torch.equal(flipped[0][0], cached[0][0].flip(-1)) and cached.transform is None


def test_transforms(tmp_path):
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    train, evaluate = data.make_transforms(24, train=True), data.make_transforms(24, train=False)
    assert train(image).shape == evaluate(image).shape == (3, 24, 24)
    assert torch.equal(evaluate(image), evaluate(image))
    raw = data.make_transforms(24, train=False, normalize=False)(image)
    assert raw.dtype == torch.float32 and 0 <= raw.min() and raw.max() <= 1
    mean = torch.tensor(data.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(data.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(evaluate(image), (raw - mean) / std)
    with pytest.raises(ValueError, match="image_size"):
        data.make_transforms(0, train=True)


def test_dataset_names_unreadable_image(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"garbage")
    df = pd.DataFrame({"path": [str(path)], "fine": [0], "coarse": [0]})
    with pytest.raises(ValueError, match="bad.png"):
        data.HierarchicalImageDataset(df)[0]


def test_pixel_embeddings(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    emb = data.pixel_embeddings(manifest.iloc[:5], image_size=16)
    assert emb.shape == (5, 3 * 16 * 16)
    first = data.make_transforms(16, False, False)(data.read_image(manifest["path"][0]))
    assert torch.equal(emb[0], first.flatten())


# ----------------------------------------------------------------------------------------------
# Notebook 01
# ----------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_notebook_01_smoke(tmp_path):
    papermill = pytest.importorskip("papermill")
    env_path = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_path + os.pathsep + os.environ.get("PATH", "")
    run_root = tmp_path / "run"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "01_data_prep.ipynb"),
        str(tmp_path / "01_executed.ipynb"),
        parameters={"smoke": True, "run_root": str(run_root)},
        kernel_name="python3",
        cwd=str(REPO),
        progress_bar=False,
    )
    manifest = data.load_manifest(run_root / "data" / "manifest.csv")
    summary = read_json(run_root / "data" / "summary.json")
    assert summary["n_images"] == len(manifest) == 96
    assert 0 <= summary["baselines"]["untrained_smallcnn"]["R@1"] <= 100
    assert (run_root / "figures" / "data_examples.png").is_file()
