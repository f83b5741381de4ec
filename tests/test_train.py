"""qlib.train: smoke runs of every method, resume equality, the NaN stop, the config round trip,
the run folder's contents, and notebook 03 at smoke size."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re

import pytest
import torch

from qlib import losses as qlosses
from qlib import model as qmodel
from qlib import train as qtrain

TIME_COLUMNS = {c for c in qtrain.LOG_COLUMNS if c.startswith("time_")}


def tiny_config(tmp_path, method="method2", **overrides):
    """Smoke preset, cut down to seconds: 2 iterations of 4 quadruplets, one epoch."""
    values = {
        "method": method,
        "epochs": 1,
        "iterations_per_epoch": 2,
        "batch_size": 4,
        "image_size": 32,
        "embedding_dim": 16,
        "eval_at_start": False,
        "progress": False,
        "run_root": str(tmp_path / "runs"),
    }
    values.update(overrides)
    return qtrain.config_from_preset("smoke", **values)


def read_rows(run_dir):
    with open(run_dir / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def without_times(rows):
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(qtrain.PRESETS))
def test_config_json_round_trip(preset):
    config = qtrain.config_from_preset(preset, method="lifted", seed=3)
    again = qtrain.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.name == "lifted_seed3"


def test_defaults_are_the_papers():
    c = qtrain.TrainConfig()
    assert (c.lr, c.momentum, c.optimizer) == (3e-4, 0.9, "sgd")
    assert (c.m1, c.t1, c.m2, c.t2) == (0.7, 0.7, 0.3, 0.3)
    assert (c.lambda_c1, c.lambda_c2, c.lambda_g1, c.lambda_g2, c.eta) == (0.08, 0.25, 1, 1, 1)
    assert (c.reduction, c.normalize, c.embedding_dim) == ("sum", True, 1024)
    assert (c.backbone, c.pretrained, c.image_size) == ("resnet101", "imagenet", 224)
    assert c.bank_refresh_iterations is None  # refresh every epoch


def test_preset_overrides_and_empty_string_keeps_the_preset():
    demo = qtrain.config_from_preset("demo")
    same = qtrain.config_from_preset("demo", backbone="", epochs="", pretrained="")
    assert same == demo
    assert qtrain.config_from_preset("demo", epochs=1).epochs == 1
    assert qtrain.config_from_preset("paper", pretrained="none").pretrained is None


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "clustering"},
        {"batch_size": 0},
        {"epochs": -1},
        {"reduction": "max"},
        {"images_per_class": 1},
        {"lr": 0},
    ],
)
def test_bad_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        qtrain.TrainConfig(**bad)


def test_unknown_preset_or_field_is_a_value_error():
    with pytest.raises(ValueError, match="unknown preset"):
        qtrain.config_from_preset("huge")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        qtrain.config_from_preset("demo", learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        qtrain.TrainConfig.from_dict({"batchsize": 3})


def test_clustering_is_declared_not_built():
    assert "clustering" in qtrain.BASELINES_NOT_BUILT
    assert "clustering" not in qtrain.METHODS
    assert set(qtrain.METHODS) == {
        "random",
        "method1",
        "method2",
        "semihard",
        "lifted",
        "npairs",
        "triplet_global",
    }


# ----------------------------------------------------------------------------------------------
# Small pure pieces against loops
# ----------------------------------------------------------------------------------------------


def test_pair_distance_means_match_a_loop():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 3, generator=g)
    fine = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 4])
    coarse = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    got = qtrain._pair_distance_means(emb, fine, coarse)
    groups = {"d_rpp": [], "d_rpn": [], "d_rn": []}
    for i, j in itertools.permutations(range(10), 2):
        d = float((emb[i] - emb[j]).norm())
        if fine[i] == fine[j]:
            groups["d_rpp"].append(d)
        elif coarse[i] == coarse[j]:
            groups["d_rpn"].append(d)
        else:
            groups["d_rn"].append(d)
    for key, values in groups.items():
        assert got[key] == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_class_balanced_batch_is_p_classes_times_k_images():
    g = torch.Generator().manual_seed(0)
    fine = torch.tensor([c for c in range(6) for _ in range(5)] + [6, 6])  # class 6: 2 images
    members = [(fine == c).nonzero().flatten() for c in range(7)]
    for _ in range(20):
        batch = qtrain._class_balanced_batch(members, n_images=12, per_class=3, generator=g)
        assert batch.shape == (12,)
        labels = fine[batch].tolist()
        classes = sorted(set(labels))
        assert len(classes) == 4 and all(labels.count(c) == 3 for c in classes)
        for c in classes:
            picked = batch[fine[batch] == c].tolist()
            if len(members[c]) >= 3:  # enough images: no repeats
                assert len(set(picked)) == 3


# ----------------------------------------------------------------------------------------------
# Training runs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", qtrain.METHODS)
def test_smoke_run_of_every_method(tmp_path, method):
    run_dir = qtrain.train(tiny_config(tmp_path, method))
    assert run_dir == tmp_path / "runs" / f"{method}_seed0"

    saved = json.loads((run_dir / "config.json").read_text())
    assert qtrain.TrainConfig.from_dict(saved["config"]).method == method
    env = saved["environment"]
    for key in ("device", "torch", "torchvision", "python", "seed", "git_commit"):
        assert key in env
    assert env["device"] == "cpu"

    rows = read_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert all(float(r["time_forward_backward"]) > 0 for r in rows)
    if method in qtrain.QUADRUPLET_METHODS:
        for r in rows:
            for key in ("joint", "global", "classification", "d_rpp", "d_rpn", "d_rn"):
                assert math.isfinite(float(r[key]))
            assert 0.0 <= float(r["fallback_pos"]) <= 1.0
            assert 0.0 <= float(r["fallback_neg"]) <= 1.0
        assert float(rows[0]["time_bank"]) > 0 and float(rows[1]["time_bank"]) == 0
        if method == "random":
            assert float(rows[0]["fallback_pos"]) == 0.0
    else:
        assert rows[0]["fallback_pos"] == "" and rows[0]["joint"] == ""
        assert math.isfinite(float(rows[0]["d_rpp"])) and math.isfinite(float(rows[0]["d_rn"]))

    metrics = qtrain.read_metrics(run_dir)
    assert len(metrics) == 1 and metrics[-1]["final"] is True
    assert {"epoch", "iteration", "R@1", "R@2", "R@4", "R@8", "NMI"} <= set(metrics[-1])
    assert metrics[-1]["iteration"] == 2
    assert all(0.0 <= metrics[-1][k] <= 100.0 for k in ("R@1", "R@8", "NMI"))
    assert metrics[-1]["R@1"] <= metrics[-1]["R@8"]
    assert qtrain.run_is_finished(run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_bank_refresh_every_n_iterations(tmp_path):
    config = tiny_config(tmp_path, "method1", iterations_per_epoch=3, bank_refresh_iterations=2)
    rows = read_rows(qtrain.train(config))
    assert [float(r["time_bank"]) > 0 for r in rows] == [True, False, True]


def test_load_run_and_evaluate_run_reproduce_the_final_metrics(tmp_path):
    run_dir = qtrain.train(tiny_config(tmp_path, "method1"))
    config, model = qtrain.load_run(run_dir)
    assert config.method == "method1" and not model.training
    assert isinstance(model, qmodel.EmbeddingNet)
    final = qtrain.read_metrics(run_dir)[-1]
    again = qtrain.evaluate_run(run_dir, device="cpu")
    for key in ("R@1", "R@2", "R@4", "R@8", "NMI"):
        assert again[key] == pytest.approx(final[key], abs=1e-9)
    with pytest.raises(FileNotFoundError):
        qtrain.load_run(run_dir, checkpoint="epoch_999")


@pytest.mark.parametrize("method", ["random", "npairs"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, method):
    common = {"epochs": 2, "iterations_per_epoch": 3, "eval_every": 1, "eval_at_start": True}
    straight = qtrain.train(tiny_config(tmp_path, method, run_name="straight", **common))

    # Crash in the middle of epoch 2: iteration 5 is logged but never checkpointed.
    broken = tiny_config(tmp_path, method, run_name="broken", stop_after_iterations=5, **common)
    with pytest.raises(qtrain.TrainingInterrupted):
        qtrain.train(broken)
    broken_dir = qtrain.run_dir_of(broken)
    assert [int(r["iteration"]) for r in read_rows(broken_dir)] == [1, 2, 3, 4, 5]
    assert not qtrain.run_is_finished(broken_dir)
    resumed = qtrain.train(tiny_config(tmp_path, method, run_name="broken", resume=True, **common))

    _, model_a = qtrain.load_run(straight)
    _, model_b = qtrain.load_run(resumed)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert qtrain.read_metrics(straight) == qtrain.read_metrics(resumed)
    assert [m["epoch"] for m in qtrain.read_metrics(resumed)] == [0, 1, 2]
    assert without_times(read_rows(straight)) == without_times(read_rows(resumed))


def test_cpu_runs_repeat_exactly_with_two_threads(tmp_path):
    # The triplet baseline's gathers with repeated indices once summed their gradients in a
    # thread-dependent order; two identical runs must end with identical weights.
    settings = {"method": "triplet_global", "epochs": 1, "iterations_per_epoch": 8}
    settings |= {"eval_at_start": False, "progress": False, "run_root": str(tmp_path)}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [
            qtrain.train(qtrain.config_from_preset("demo", run_name=f"r{k}", **settings))
            for k in range(2)
        ]
    finally:
        torch.set_num_threads(threads)
    state_a, state_b = (qtrain.load_run(r)[1].state_dict() for r in runs)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert not torch.are_deterministic_algorithms_enabled()  # train() restores the flag


def test_finished_run_is_not_retrained_and_changed_settings_do_not_resume(tmp_path):
    config = tiny_config(tmp_path, "method2", resume=True)
    run_dir = qtrain.train(config)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    before = (checkpoint.stat().st_mtime_ns, (run_dir / "log.csv").read_text())
    assert qtrain.train(config) == run_dir
    assert (checkpoint.stat().st_mtime_ns, (run_dir / "log.csv").read_text()) == before
    with pytest.raises(ValueError, match="lr"):
        qtrain.train(tiny_config(tmp_path, "method2", resume=True, lr=0.5))
    # resume=False starts over in the same folder.
    qtrain.train(tiny_config(tmp_path, "method2", resume=False, iterations_per_epoch=1))
    assert len(read_rows(run_dir)) == 1


def test_nan_embeddings_stop_the_run_naming_iteration_and_quadruplet(tmp_path, monkeypatch):
    forward = qmodel.EmbeddingNet.forward
    calls = {"n": 0}

    def poisoned(self, x):
        out = forward(self, x)
        calls["n"] += 1
        if self.training and calls["n"] >= 2:  # the second training forward: iteration 2
            embedding = out.embedding.clone()
            embedding[5] = float("nan")  # row 5 = quadruplet 1, column P+
            out = out._replace(embedding=embedding)
        return out

    monkeypatch.setattr(qmodel.EmbeddingNet, "forward", poisoned)
    with pytest.raises(qtrain.NonFiniteLossError) as info:
        qtrain.train(tiny_config(tmp_path, "method2"))
    assert isinstance(info.value, FloatingPointError)
    message = str(info.value)
    assert "iteration 2" in message
    assert re.search(r"\[\[\d+, \d+, \d+, \d+\]\]", message), message


def test_nan_loss_stops_the_run(tmp_path, monkeypatch):
    def nan_loss(self, embeddings, *args):
        total = embeddings.sum() * float("nan")
        return qlosses.LossOutput(total, {"loss": float("nan")})

    monkeypatch.setattr(qlosses.QuadrupletLoss, "forward", nan_loss)
    with pytest.raises(qtrain.NonFiniteLossError, match="iteration 1"):
        qtrain.train(tiny_config(tmp_path, "random"))


def test_cuda_out_of_memory_names_the_settings_to_lower(tmp_path, monkeypatch):
    def out_of_memory(config, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(qtrain, "_train", out_of_memory)
    with pytest.raises(qtrain.CudaOutOfMemoryError) as info:
        qtrain.train(tiny_config(tmp_path, batch_size=7))
    for setting in ("batch_size=7", "image_size=32", "amp="):
        assert setting in str(info.value)


def test_manifest_of_notebook_01_takes_precedence(tmp_path):
    from qlib import data as qdata

    assert qtrain.experiment_manifest(tmp_path) == ""
    manifest = qdata.load_synthetic("smoke")
    train_only_first_coarse = manifest[(manifest["split"] == "test") | (manifest["coarse"] < 2)]
    qdata.save_manifest(train_only_first_coarse, tmp_path / "data" / "manifest.csv")
    path = qtrain.experiment_manifest(tmp_path)
    assert path == str(tmp_path / "data" / "manifest.csv")
    run_dir = qtrain.train(tiny_config(tmp_path, "random", manifest_path=path))
    saved = json.loads((run_dir / "config.json").read_text())
    n_train = int((train_only_first_coarse["split"] == "train").sum())
    assert saved["data"]["n_train"] == n_train < int((manifest["split"] == "train").sum())


def test_missing_manifest_is_a_file_not_found_error(tmp_path):
    config = tiny_config(tmp_path, manifest_path=str(tmp_path / "nowhere.csv"))
    with pytest.raises(FileNotFoundError):
        qtrain.train(config)


# ----------------------------------------------------------------------------------------------
# Notebook 03
# ----------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_notebook_03_at_smoke_size(tmp_path):
    import os

    import papermill as pm

    from qlib.utils import repo_root

    root = repo_root()
    venv_bin = str(root / ".venv" / "bin")
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    run_root = tmp_path / "runs"
    pm.execute_notebook(
        str(root / "notebooks" / "03_train.ipynb"),
        str(tmp_path / "03_train.ipynb"),
        parameters={"smoke": True, "run_root": str(run_root), "method": "method1"},
        kernel_name="python3",
        cwd=str(root / "notebooks"),
        progress_bar=False,
    )
    run_dir = run_root / "method1_seed0"
    for name in ("config.json", "log.csv", "metrics.json", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    assert qtrain.run_is_finished(run_dir)
    assert (run_root / "figures" / "train_method1_seed0.png").is_file()
