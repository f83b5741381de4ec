"""qlib.inference and the `qlib` command on a tiny trained smoke run: embeddings equal the
trainer's, the file round-trips through numpy and pandas, retrieval equals a brute-force sort,
and every error is one clear sentence."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from qlib import cli, inference
from qlib import data as qdata
from qlib import train as qtrain
from qlib.model import embed_images


def _train(root, seed):
    config = qtrain.config_from_preset("smoke", run_root=str(root), seed=seed, progress=False)
    return qtrain.train(config), config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_dir, config = _train(root, seed=0)
    return run_dir, config, qtrain.build_datasets(config)


@pytest.fixture(scope="module")
def run(trained):
    return inference.load(trained[0], device="cpu")


@pytest.fixture(scope="module")
def gallery(run, trained):
    return inference.embed(run, trained[2].eval_manifest)


def test_load_records_the_run_and_its_preprocessing(run, trained):
    run_dir, config, _ = trained
    assert run.run_dir == run_dir and run.image_size == config.image_size == 32
    assert not run.model.training
    identity = run.identity
    assert identity["format"] == inference.FORMAT and identity["finished"] is True
    assert identity["checkpoint"] == "last" and identity["embedding_dim"] == 16
    assert len(identity["weights_sha256"]) == 64
    # The fingerprint is of the weights: another load of the same run gives the same one.
    assert (
        inference.load(run_dir, device="cpu").identity["weights_sha256"]
        == (identity["weights_sha256"])
    )


def test_embeddings_equal_the_trainers_evaluation_embeddings(run, gallery, trained):
    _, _, data = trained
    expected = embed_images(run.model, data.eval_set)
    assert gallery.vectors.dtype == np.float32 and gallery.vectors.shape == tuple(expected.shape)
    np.testing.assert_allclose(gallery.vectors, expected.numpy(), rtol=0, atol=1e-6)
    # Labels come from the manifest, in its order.
    assert gallery.items["path"].tolist() == data.eval_manifest["path"].tolist()
    assert gallery.items["fine"].tolist() == data.eval_manifest["fine"].tolist()
    assert set(gallery.items["split"]) == {"test"}


def test_file_round_trip_numpy_and_pandas(gallery, tmp_path):
    path = gallery.save(tmp_path / "gallery.npz")
    back = inference.read_embeddings(path)
    np.testing.assert_array_equal(back.vectors, gallery.vectors)
    pd.testing.assert_frame_equal(back.items, gallery.items)
    assert back.run == gallery.run
    # Plain numpy, no pickles: what another tool would do.
    with np.load(path, allow_pickle=False) as f:
        assert f["embeddings"].shape == gallery.vectors.shape
        frame = pd.DataFrame({k: f[k] for k in ("path", "fine", "coarse", "fine_name", "split")})
        assert json.loads(str(f["run"]))["weights_sha256"] == gallery.run["weights_sha256"]
    assert frame["path"].tolist() == gallery.items["path"].tolist()


def test_folder_list_and_csv_inputs(run, gallery, trained, tmp_path):
    paths = gallery.items["path"].tolist()[:5]
    folder = tmp_path / "images" / "sub"
    folder.mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copy(p, folder / f"{i:02d}{os.path.splitext(p)[1]}")
    (folder / "notes.txt").write_text("not an image")
    from_folder = inference.embed(run, tmp_path / "images")
    assert [os.path.basename(p) for p in from_folder.items["path"]] == [
        f"{i:02d}.png" for i in range(5)
    ]
    assert (from_folder.items["fine"] == -1).all() and (from_folder.items["fine_name"] == "").all()
    np.testing.assert_allclose(from_folder.vectors, gallery.vectors[:5], atol=1e-6)
    from_list = inference.embed(run, paths)
    np.testing.assert_allclose(from_list.vectors, gallery.vectors[:5], atol=1e-6)
    # A CSV of paths only (relative to the CSV), and a full manifest CSV with labels.
    pd.DataFrame({"path": [f"sub/{i:02d}.png" for i in range(5)]}).to_csv(
        tmp_path / "images" / "list.csv", index=False
    )
    from_csv = inference.embed(run, tmp_path / "images" / "list.csv")
    np.testing.assert_allclose(from_csv.vectors, gallery.vectors[:5], atol=1e-6)
    manifest_csv = qdata.save_manifest(trained[2].manifest, tmp_path / "manifest.csv")
    table = inference.image_table(manifest_csv)
    assert (table["fine"] >= 0).all() and set(table["split"]) == {"train", "test"}
    # A gallery CSV with class names, one class, no split: embedded as given, nothing invented.
    pd.DataFrame({"path": [f"sub/{i:02d}.png" for i in range(3)], "fine": "tabby"}).assign(
        coarse=["cat", "cat", "big cat"]
    ).to_csv(tmp_path / "images" / "gallery.csv", index=False)
    labelled = inference.image_table(tmp_path / "images" / "gallery.csv")
    assert labelled["fine_name"].tolist() == ["tabby"] * 3 and (labelled["fine"] == 0).all()
    assert labelled["coarse"].tolist() == [1, 1, 0] and (labelled["split"] == "").all()
    # Hidden folders (.ipynb_checkpoints, staging folders) are not part of a folder's images.
    hidden = tmp_path / "images" / ".ipynb_checkpoints"
    hidden.mkdir()
    shutil.copy(paths[0], hidden / "00.png")
    assert len(inference.image_table(tmp_path / "images")) == 5


def brute_force_neighbours(gallery, vector, k, skip):
    distances = [
        (float(np.sqrt(((row.astype(np.float64) - vector) ** 2).sum())), i)
        for i, row in enumerate(gallery.vectors)
        if i != skip
    ]
    return sorted(distances)[:k]


def test_retrieve_equals_a_brute_force_sort_and_skips_the_query(run, gallery, tmp_path):
    path = gallery.save(tmp_path / "gallery.npz")
    query_index = 7
    query = gallery.items["path"][query_index]
    result = inference.retrieve(run, path, query, k=4)
    assert list(result.columns) == [
        "rank", "path", "distance", "fine", "coarse", "fine_name", "coarse_name", "split"
    ]  # fmt: skip
    expected = brute_force_neighbours(gallery, gallery.vectors[query_index], 4, query_index)
    assert result["rank"].tolist() == [1, 2, 3, 4]
    assert result["path"].tolist() == [gallery.items["path"][i] for _, i in expected]
    np.testing.assert_allclose(result["distance"], [d for d, _ in expected], atol=1e-5)
    assert result["fine"].tolist() == [int(gallery.items["fine"][i]) for _, i in expected]
    # The same from Embeddings in memory; a gallery without labels gives no label columns.
    same = inference.retrieve(run, gallery, query, k=4)
    pd.testing.assert_frame_equal(same, result)
    unlabelled = inference.embed(run, gallery.items["path"].tolist())
    assert list(inference.retrieve(run, unlabelled, query, k=2).columns) == [
        "rank", "path", "distance"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="k must be an int between 1 and 47"):
        inference.retrieve(run, gallery, query, k=48)


def test_errors_are_one_clear_sentence(run, gallery, trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder .* does not exist"):
        inference.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        inference.load(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"image '.*missing\.png' does not exist \(1 more images"
    ):
        inference.embed(run, [gallery.items["path"][0], tmp_path / "missing.png", "gone.jpg"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"cannot read image '.*broken\.png'"):
        inference.embed(run, [broken])
    with pytest.raises(FileNotFoundError, match="holds no image file"):
        inference.embed(run, _empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="query image .* does not exist"):
        inference.retrieve(run, gallery, tmp_path / "missing.png")
    not_npz = tmp_path / "not.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match="not an embedding file written by qlib embed"):
        inference.read_embeddings(not_npz)
    np.savez(tmp_path / "other.npz", embeddings=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="lacks"):
        inference.read_embeddings(tmp_path / "other.npz")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    return folder


def test_a_gallery_of_another_run_is_refused(run, gallery, trained, tmp_path):
    other_dir, _ = _train(trained[0].parent, seed=1)
    other = inference.load(other_dir, device="cpu")
    path = gallery.save(tmp_path / "gallery.npz")
    query = gallery.items["path"][0]
    with pytest.raises(inference.ModelMismatchError, match="embedded by another model"):
        inference.retrieve(other, path, query)
    # A copied run folder is the same model: accepted.
    copy = tmp_path / "copied_run"
    shutil.copytree(trained[0], copy)
    assert len(inference.retrieve(inference.load(copy, device="cpu"), path, query, k=2)) == 2


def test_cli_embed_then_retrieve(trained, gallery, tmp_path, capsys, monkeypatch):
    run_dir, _, data = trained
    qdata.save_manifest(data.manifest, tmp_path / "data" / "manifest.csv")
    monkeypatch.chdir(tmp_path)  # relative paths start at the current folder
    code = cli.main(
        ["embed", "--run", str(run_dir), "--images", "data/manifest.csv", "--split", "test",
         "--out", "test.npz", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert f"wrote {len(data.eval_manifest)} embeddings (16-d" in out and "test.npz" in out
    written = inference.read_embeddings(tmp_path / "test.npz")
    np.testing.assert_allclose(written.vectors, gallery.vectors, atol=1e-6)
    query = gallery.items["path"][3]
    code = cli.main(
        ["retrieve", "--run", str(run_dir), "--gallery", "test.npz", "--query", query, "-k", "3",
         "--csv", "hits.csv"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    hits = pd.read_csv(tmp_path / "hits.csv")
    assert hits["rank"].tolist() == [1, 2, 3]
    for path, distance in zip(hits["path"], hits["distance"], strict=True):
        assert path in printed and f"{distance:.4f}" in printed
    assert query not in hits["path"].tolist()  # the query itself is left out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["embed", "--run", "no_such_run", "--images", ".", "--out", "x.npz"], "does not exist"),
        (["retrieve", "--run", "RUN", "--gallery", "nope.npz", "--query", "q.png"], "nope.npz"),
        (["embed", "--run", "RUN", "--images", "QUERY", "--out", "x.npz", "--split", "val"],
         "--split 'val' selects no image"),
    ],
)  # fmt: skip
def test_cli_errors_print_one_line(argv, message, trained, gallery, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        {"RUN": str(trained[0]), "QUERY": gallery.items["path"][0]}.get(a, a) for a in argv
    ]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qlib {argv[0]}: error:") and message in err
    assert len(err.splitlines()) == 1


def test_module_entry_point_runs(tmp_path, trained):
    """`python -m qlib.cli` (what the `qlib` console script calls) in a fresh process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, "-m", "qlib.cli", "retrieve", "--run", str(tmp_path / "nothing"),
         "--gallery", "g.npz", "--query", "q.png"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "run folder" in result.stderr and "does not exist" in result.stderr


@pytest.mark.cuda
def test_gpu_when_present(trained):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = inference.load(trained[0])  # "auto"
    assert loaded.device.type == device
    assert next(loaded.model.parameters()).device.type == device
