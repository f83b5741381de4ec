"""qlib.data.manifest: CSV manifests, folder trees, the zero-shot split, the checks, the summary
(against a brute-force restatement of the anchor rule) and the dispatch of load_dataset."""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_images import write_images

from qlib import data

# ----------------------------------------------------------------------------------------------
# Manifests, folder trees, splits
# ----------------------------------------------------------------------------------------------


def _tiny_tree(root: Path, tree: dict[str, dict[str, int]]) -> Path:
    for coarse, fines in tree.items():
        for fine, n in fines.items():
            write_images(root / coarse / fine / f"{i}.jpg" for i in range(n))
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
    for name in ("stanford_cars", "sop", "cub200", "folder"):
        with pytest.raises(ValueError, match="needs a root"):
            data.load_dataset(name, root="")
    assert set(data.DATASETS) == {
        "synthetic",
        "stanford_cars",
        "sop",
        "cub200",
        "manifest",
        "folder",
    }
