"""qlib.train: smoke runs of every method, resume equality, the NaN stop, the config round trip,
the run folder's contents, and notebook 03 at smoke size."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re

import pytest
import torch

from qlib import losses as qlosses
from qlib import model as qmodel
from qlib import train as qtrain
from qlib.logs import TIME_COLUMNS
from qlib.metrics import retrieval_metrics
from qlib.train import loop as qloop
from qlib.train import setup as qsetup

TIME_COLUMNS = set(TIME_COLUMNS)


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
    assert (c.backbone, c.init, c.image_size) == ("resnet101", "imagenet", 224)
    assert c.bank_refresh_iterations is None  # refresh every epoch


def test_preset_overrides_and_empty_string_keeps_the_preset():
    demo = qtrain.config_from_preset("demo")
    same = qtrain.config_from_preset("demo", backbone="", epochs="", init="")
    assert same == demo
    assert qtrain.config_from_preset("demo", epochs=1).epochs == 1
    assert qtrain.config_from_preset("paper", init="none").init == "scratch"


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "facility"},
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


def test_every_table1_method_is_trainable():
    assert set(qtrain.METHODS) == {
        "random",
        "method1",
        "method2",
        "semihard",
        "lifted",
        "npairs",
        "clustering",
        "triplet_global",
    }


# ----------------------------------------------------------------------------------------------
# Small pure pieces against loops
# ----------------------------------------------------------------------------------------------


def test_class_balanced_batch_is_p_classes_times_k_images():
    g = torch.Generator().manual_seed(0)
    fine = torch.tensor([c for c in range(6) for _ in range(5)] + [6, 6])  # class 6: 2 images
    members = [(fine == c).nonzero().flatten() for c in range(7)]
    for _ in range(20):
        batch = qtrain.class_balanced_batch(members, n_images=12, per_class=3, generator=g)
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
    for key in ("device", "precision", "torch", "torchvision", "python", "git_commit"):
        assert key in env
    assert env["device"] == "cpu"

    rows = read_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert all(float(r["time_step"]) > 0 for r in rows)
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


def test_load_run_reproduces_the_final_metrics(tmp_path):
    run_dir = qtrain.train(tiny_config(tmp_path, "method1"))
    config, model = qtrain.load_run(run_dir)
    assert config.method == "method1" and not model.training
    assert isinstance(model, qmodel.EmbeddingNet)
    final = qtrain.read_metrics(run_dir)[-1]
    data = qtrain.build_datasets(config)
    embeddings = qmodel.embed_images(model, data.eval_set, config.eval_batch_size)
    again = retrieval_metrics(embeddings, data.eval_fine)
    for key in ("R@1", "R@2", "R@4", "R@8", "NMI"):
        assert again[key] == pytest.approx(final[key], abs=1e-9)
    with pytest.raises(FileNotFoundError):
        qtrain.load_run(run_dir, checkpoint="epoch_999")


EVERY_EPOCH = {"eval_every": 1, "eval_at_start": True}
# No evaluation before the crash: the run resumes without a metrics.json.
LAST_EPOCH_ONLY = {"eval_every": 2, "eval_at_start": False}


@pytest.mark.parametrize(
    "method, evaluations",
    [("random", EVERY_EPOCH), ("npairs", EVERY_EPOCH), ("method2", LAST_EPOCH_ONLY)],
)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, method, evaluations):
    common = {"epochs": 2, "iterations_per_epoch": 3, **evaluations}
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
    expected = [0, 1, 2] if evaluations["eval_at_start"] else [2]
    assert [m["epoch"] for m in qtrain.read_metrics(resumed)] == expected
    assert without_times(read_rows(straight)) == without_times(read_rows(resumed))


def test_finished_as_configured_only_with_the_same_settings(tmp_path):
    config = tiny_config(tmp_path, "random")
    qtrain.train(config)
    assert not qtrain.finished_as_configured(config)  # resume off: train() retrains
    again = dataclasses.replace(config, resume=True)
    assert qtrain.finished_as_configured(again)
    assert qtrain.finished_as_configured(dataclasses.replace(again, progress=True))
    assert not qtrain.finished_as_configured(dataclasses.replace(again, lr=0.5))
    assert not qtrain.finished_as_configured(dataclasses.replace(again, epochs=2))
    assert not qtrain.finished_as_configured(dataclasses.replace(again, run_name="other"))


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


def test_finished_run_is_not_retrained_and_changed_settings_do_not_resume(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, "method2", resume=True)
    run_dir = qtrain.train(config)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    before = (checkpoint.stat().st_mtime_ns, (run_dir / "log.csv").read_text())
    assert qtrain.train(config) == run_dir
    assert (checkpoint.stat().st_mtime_ns, (run_dir / "log.csv").read_text()) == before
    # The same folder spelled relative to the repository root (as the pipeline records it).
    monkeypatch.setattr("qlib.utils.repo_root", lambda: tmp_path)
    relative = tiny_config(tmp_path, "method2", resume=True, run_root="runs")
    assert qtrain.train(relative).resolve() == run_dir.resolve()
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

    monkeypatch.setattr(qloop, "setup", out_of_memory)
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
    run_root = tmp_path / "smoke"  # at smoke=True, a folder not named *smoke* gets a smoke/ below
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


# ----------------------------------------------------------------------------------------------
# Reproducibility, safety, warm starts, mixed precision, learning
# ----------------------------------------------------------------------------------------------


def final_state(run_dir):
    return qtrain.load_run(run_dir)[1].state_dict()


def assert_same_weights(run_a, run_b):
    state_a, state_b = final_state(run_a), final_state(run_b)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_progress_bars_and_global_rng_draws_do_not_change_the_result(tmp_path, monkeypatch):
    common = {"epochs": 2, "iterations_per_epoch": 3}
    quiet = qtrain.train(tiny_config(tmp_path, "random", run_name="quiet", **common))
    shown = qtrain.train(tiny_config(tmp_path, "random", run_name="bars", progress=True, **common))
    assert_same_weights(quiet, shown)

    # Display code (a progress bar, a widget) may draw from torch's global RNG at any time.
    log_step = qloop.Run.log_step

    def noisy(self, *args, **kwargs):
        torch.rand(7)
        return log_step(self, *args, **kwargs)

    monkeypatch.setattr(qloop.Run, "log_step", noisy)
    disturbed = qtrain.train(tiny_config(tmp_path, "random", run_name="disturbed", **common))
    assert_same_weights(quiet, disturbed)
    assert without_times(read_rows(quiet)) == without_times(read_rows(disturbed))


def test_worker_processes_do_not_change_the_result(tmp_path):
    alone = qtrain.train(tiny_config(tmp_path, "method1", run_name="w0"))
    workers = qtrain.train(tiny_config(tmp_path, "method1", run_name="w2", num_workers=2))
    assert_same_weights(alone, workers)


class _Boom:
    """Unpickling this runs code: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    run_dir = qtrain.train(tiny_config(tmp_path, "random", resume=True))
    marker = tmp_path / "pwned"
    torch.save({"model": _Boom(marker)}, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(qtrain.UnsafeCheckpointError, match="refusing to load"):
        qtrain.load_run(run_dir)
    with pytest.raises(qtrain.UnsafeCheckpointError):
        qtrain.train(tiny_config(tmp_path, "random", resume=True))
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_data(tmp_path):
    run_dir = qtrain.train(tiny_config(tmp_path, "method2", optimizer="adam"))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "generators", "epoch", "iteration"} <= set(state)


def test_warmup_epochs_train_on_random_quadruplets_first(tmp_path):
    common = {"epochs": 1, "iterations_per_epoch": 3}
    random_run = qtrain.train(tiny_config(tmp_path, "random", **common))
    warm = qtrain.train(tiny_config(tmp_path, "method2", warmup_epochs=1, **common))
    assert without_times(read_rows(random_run)) == without_times(read_rows(warm))
    assert_same_weights(random_run, warm)
    later = qtrain.train(tiny_config(tmp_path, "method2", run_name="later", epochs=2,
                                     iterations_per_epoch=3, warmup_epochs=1))  # fmt: skip
    assert without_times(read_rows(later))[:3] == without_times(read_rows(random_run))


def test_classifier_warm_start_starts_higher_than_scratch_and_is_cached(tmp_path):
    common = {"epochs": 0, "eval_at_start": True, "classifier_epochs": 20}
    scratch = qtrain.train(tiny_config(tmp_path, "method2", run_name="scratch", **common))
    warm = qtrain.train(tiny_config(tmp_path, "method2", init="classifier", **common))
    r1_scratch = qtrain.read_metrics(scratch)[0]["R@1"]
    r1_warm = qtrain.read_metrics(warm)[0]["R@1"]
    assert r1_warm > r1_scratch, (r1_warm, r1_scratch)
    cached = list((tmp_path / "runs" / "warmstart").glob("classifier_*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    # Another method and seed of the same experiment reuse the cached classifier.
    other = qtrain.train(tiny_config(tmp_path, "semihard", seed=3, init="classifier", **common))
    assert cached[0].stat().st_mtime_ns == stamp
    assert_same_weights(warm, other)


def test_a_manifest_built_for_another_dataset_is_refused(tmp_path):
    from qlib import data as qdata

    demo = qtrain.config_from_preset("demo", run_root=str(tmp_path))
    path = tmp_path / "data" / "manifest.csv"
    source = qdata.dataset_source("synthetic", size="smoke")
    qdata.save_manifest(qdata.load_synthetic("smoke"), path, source=source)
    cars = tmp_path / "cars"
    cars.mkdir()
    wrong = qtrain.config_from_preset(
        "paper", root=str(cars), manifest_path=qtrain.experiment_manifest(tmp_path)
    )
    with pytest.raises(ValueError, match="stanford_cars.*run_root of its own"):
        qtrain.build_datasets(wrong)
    missing = qtrain.config_from_preset(
        "paper", root=str(tmp_path / "nowhere"), manifest_path=str(path)
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qtrain.build_datasets(missing)
    as_is = qtrain.config_from_preset("smoke", dataset="manifest", manifest_path=str(path))
    assert len(qtrain.build_datasets(as_is).train_manifest) > 0
    assert demo.run_root == str(tmp_path)


def test_float16_overflows_on_an_untrained_resnet101_and_inference_avoids_it():
    from qlib.train import hardware

    torch.manual_seed(0)
    net = qmodel.EmbeddingNet("resnet101", 32, n_coarse=2, n_fine=2).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cpu = torch.device("cpu")
    with torch.no_grad():
        with hardware.autocast(cpu, torch.float16):  # what amp=True did on a GPU
            broken = net.backbone(net.prepare_input(images))
        assert not torch.isfinite(broken).all()
        for train_dtype in (torch.float16, torch.bfloat16):
            with hardware.autocast(cpu, hardware.inference_dtype(train_dtype)):
                assert torch.isfinite(net.embed(images)).all()
    assert hardware.inference_dtype(torch.float16) is None
    assert hardware.train_dtype(cpu, amp=True) is None  # CPU runs stay in float32


@pytest.mark.parametrize("method", ["method2", "semihard"])
def test_training_learns(tmp_path, method):
    """80 steps on the smoke data raise training-class Recall@1 and lower the method's loss on
    fixed batches (random quadruplets / a class-balanced batch), compared with the start."""
    from qlib import metrics as qmetrics
    from qlib import miners as qminers

    common = {"iterations_per_epoch": 10, "eval_at_start": False, "optimizer": "adam", "lr": 3e-3}
    common |= {"batch_size": 8}
    before = qtrain.train(tiny_config(tmp_path, method, run_name="before", epochs=0, **common))
    after = qtrain.train(tiny_config(tmp_path, method, run_name="after", epochs=8, **common))
    config, _ = qtrain.load_run(after)
    data = qtrain.build_datasets(config)
    loss_fn = qsetup.make_loss(config)
    g = torch.Generator().manual_seed(0)
    if method == "method2":
        bank = qminers.Bank(
            torch.zeros(len(data.train_fine), 1), data.train_fine, data.train_coarse
        )
        fixed = [bank.select(bank.sample_anchors(8, g), "random", g)[0] for _ in range(5)]
    else:
        members = [(data.train_fine == c).nonzero().flatten() for c in range(data.n_fine)]
        fixed = [qtrain.class_balanced_batch(members, 32, 4, g) for _ in range(5)]

    def measure(run_dir):
        model = qtrain.load_run(run_dir)[1]
        embeddings = qmodel.embed_images(model, data.train_eval_set)
        recall = qmetrics.recall_at_k(embeddings, data.train_fine, ks=(1,))[1]
        total = 0.0
        with torch.no_grad():
            for batch in fixed:
                out = model(torch.stack([data.train_eval_set[i][0] for i in batch.flatten()]))
                if batch.dim() == 2:
                    rows = batch[:, 0]
                    emb = out.embedding.view(len(batch), 4, -1)
                    args = (out.coarse_logits[::4], out.fine_logits[::4])
                    result = loss_fn(emb, *args, data.train_coarse[rows], data.train_fine[rows])
                else:
                    result = loss_fn(
                        out.embedding, data.train_fine[batch], data.train_coarse[batch]
                    )
                total += float(result.total)
        return recall, total

    (recall_0, loss_0), (recall_1, loss_1) = measure(before), measure(after)
    assert recall_1 > recall_0 + 0.1, (recall_0, recall_1)
    assert loss_1 < 0.8 * loss_0, (loss_0, loss_1)
