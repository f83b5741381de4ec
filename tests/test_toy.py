"""qlib.toy: the hierarchical toy of notebook 02, its mining helpers held against brute-force
loops over the SPEC's rules, the tiny trainer, and the notebook at smoke size."""

import json
import os
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from qlib import toy
from qlib.logs import LOG_COLUMNS
from qlib.losses import QuadrupletLoss
from qlib.miners import valid_anchors


def small_toy(**kwargs):
    params = {"n_coarse": 3, "n_fine_per_coarse": 3, "points_per_class": 6, "seed": 0}
    return toy.make_toy(**{**params, **kwargs})


# ----------------------------------------------------------------------------------------------
# The toy generator
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_coarse, n_fine, n_points, held", [(3, 3, 20, 1), (4, 4, 5, 2)])
def test_make_toy_hierarchy_and_counts(n_coarse, n_fine, n_points, held):
    data = toy.make_toy(n_coarse, n_fine, n_points, n_held_out_per_coarse=held)
    n = n_coarse * n_fine * n_points
    assert data.points.shape == (n, 2) and data.points.dtype == torch.float32
    assert data.fine.dtype == torch.long and data.coarse.dtype == torch.long
    assert data.held_out.dtype == torch.bool
    assert len(data) == n
    fine_classes = data.fine.unique().tolist()
    assert fine_classes == list(range(n_coarse * n_fine))
    for f in fine_classes:
        in_class = data.fine == f
        assert int(in_class.sum()) == n_points
        assert data.coarse[in_class].unique().numel() == 1  # exactly one coarse class
        assert data.held_out[in_class].unique().numel() == 1  # a whole class is held out or not
    for c in range(n_coarse):
        in_coarse = data.coarse == c
        assert data.fine[in_coarse].unique().numel() == n_fine
        assert data.fine[in_coarse & data.held_out].unique().numel() == held
    # The training part can anchor quadruplets in every coarse class.
    train = data.subset(~data.held_out)
    anchors = valid_anchors(train.fine, train.coarse)
    assert bool(anchors.all())


def test_make_toy_is_deterministic_and_the_plane_ignores_dim():
    a = toy.make_toy(seed=3, dim=2)
    b = toy.make_toy(seed=3, dim=2)
    c = toy.make_toy(seed=4, dim=2)
    lifted = toy.make_toy(seed=3, dim=9)
    for field in ("points", "fine", "coarse", "plane", "held_out"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.points, c.points)
    assert torch.equal(a.points, a.plane)
    assert torch.equal(lifted.plane, a.plane)
    assert lifted.points.shape == (len(a), 9) and lifted.points.dtype == torch.float32
    assert bool(torch.isfinite(lifted.points).all())
    assert torch.equal(toy.make_toy(seed=3, dim=9).points, lifted.points)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_coarse": 1},
        {"n_fine_per_coarse": 1},
        {"points_per_class": 1},
        {"dim": 1},
        {"seed": -1},
        {"n_fine_per_coarse": 3, "n_held_out_per_coarse": 2},
    ],
)
def test_make_toy_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        toy.make_toy(**kwargs)


# ----------------------------------------------------------------------------------------------
# Mining on a fixed bank, against the SPEC's rules written as loops
# ----------------------------------------------------------------------------------------------


def brute_force_pick(bank, fine, coarse, r, method):
    """docs/spec.md "Quadruplet selection" for one anchor, one loop per rule."""
    dist = [float(torch.linalg.norm(bank[j] - bank[r])) for j in range(len(bank))]
    negatives = [j for j in range(len(bank)) if coarse[j] != coarse[r]]
    n = min(negatives, key=lambda j: (dist[j], j))
    picks, fallbacks = [], []
    for same_fine in (True, False):
        candidates = [
            j
            for j in range(len(bank))
            if j != r
            and coarse[j] == coarse[r]
            and ((fine[j] == fine[r]) if same_fine else (fine[j] != fine[r]))
        ]
        outside = [j for j in candidates if dist[j] > dist[n]]
        if outside:
            if method == "method1":
                key = [float(torch.linalg.norm(bank[j] - bank[n])) for j in outside]
            else:
                key = [dist[j] for j in outside]
            picks.append(outside[int(np.argmin(key))])
            fallbacks.append(False)
        else:
            picks.append(max(candidates, key=lambda j: (dist[j], -j)))
            fallbacks.append(True)
    return [r, *picks, n], fallbacks, dist


def test_mining_statistics_matches_brute_force():
    data = small_toy()
    stats = toy.mining_statistics(data.plane, data.fine, data.coarse, n_anchors=25, seed=1)
    assert list(stats.columns) == [
        "method", "anchor", "d_rpp", "d_rpn", "d_rn", "fallback_pos", "fallback_neg",
    ]  # fmt: skip
    assert stats.groupby("method").size().to_dict() == {"method1": 25, "method2": 25, "random": 25}
    # Every method sees the same anchors.
    anchors = {m: tuple(f["anchor"]) for m, f in stats.groupby("method")}
    assert anchors["method1"] == anchors["method2"] == anchors["random"]
    fine, coarse = data.fine.tolist(), data.coarse.tolist()
    for row in stats[stats["method"] != "random"].itertuples():
        quad, fallbacks, dist = brute_force_pick(data.plane, fine, coarse, row.anchor, row.method)
        assert [row.fallback_pos, row.fallback_neg] == fallbacks
        for column, index in zip(("d_rpp", "d_rpn", "d_rn"), quad[1:], strict=True):
            assert getattr(row, column) == pytest.approx(dist[index], abs=1e-5)
    # Random: members from the right candidate sets, never a fallback.
    random_rows = stats[stats["method"] == "random"]
    assert not random_rows[["fallback_pos", "fallback_neg"]].to_numpy().any()


def test_mining_summary_counts_ordered_quadruplets():
    data = small_toy()
    stats = toy.mining_statistics(data.plane, data.fine, data.coarse, n_anchors=20)
    summary = toy.mining_summary(stats)
    assert summary["anchors"].tolist() == [20, 20, 20]
    for method, frame in stats.groupby("method"):
        ordered = sum(
            r.d_rpp < r.d_rpn < r.d_rn for r in frame.itertuples()
        )  # a loop, against the vectorised mean
        assert summary.loc[method, "already ordered (%)"] == pytest.approx(100 * ordered / 20)
        assert summary.loc[method, "fallback P+ (%)"] == pytest.approx(
            100 * frame["fallback_pos"].mean()
        )
    with pytest.raises(ValueError):
        toy.mining_summary(stats.drop(columns="d_rn"))


def test_anchor_quadruplets_and_fig2_anchor_follow_the_rules():
    data = toy.make_toy(seed=0)
    anchor = toy.pick_fig2_anchor(data.plane, data.fine, data.coarse, seed=0)
    assert bool(valid_anchors(data.fine, data.coarse)[anchor])
    quads, fallbacks = toy.anchor_quadruplets(data.plane, data.fine, data.coarse, anchor)
    assert set(quads) == {"method1", "method2", "random"}
    fine, coarse = data.fine.tolist(), data.coarse.tolist()
    for method in ("method1", "method2"):
        expected, expected_fallbacks, _ = brute_force_pick(data.plane, fine, coarse, anchor, method)
        assert quads[method] == expected
        assert fallbacks[method] == expected_fallbacks == [False, False]
    # The default toy has anchors where the two methods disagree: the picked one is among them.
    assert quads["method1"][1:3] != quads["method2"][1:3]
    r, pp, pn, n = quads["random"]
    assert r == anchor and fine[pp] == fine[r] and pp != r
    assert coarse[pn] == coarse[r] and fine[pn] != fine[r] and coarse[n] != coarse[r]
    assert toy.pick_fig2_anchor(data.plane, data.fine, data.coarse, seed=0) == anchor
    with pytest.raises(ValueError):
        toy.anchor_quadruplets(data.plane, data.fine, data.coarse, -len(data) - 1)


def test_random_triplets_draw_from_the_right_sets(gen):
    data = small_toy()
    anchors = torch.arange(0, len(data), 3)
    triplets = toy.random_triplets(data.fine, anchors, gen)
    assert triplets.shape == (len(anchors), 3)
    for r, p, n in triplets.tolist():
        assert p != r and data.fine[p] == data.fine[r] and data.fine[n] != data.fine[r]


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", toy.TRAIN_METHODS)
def test_train_toy_embedding_logs_in_the_one_schema(method):
    data = small_toy(dim=6, points_per_class=5)
    history = toy.train_toy_embedding(data, method, steps=5, batch_size=8, snapshot_every=2)
    assert history.method == method
    log = history.log
    assert set(log.columns) <= set(LOG_COLUMNS)  # the image trainer's names: one plotter
    assert list(log.columns) == [c for c in LOG_COLUMNS if c in log.columns]  # schema order
    assert log["iteration"].tolist() == [1, 2, 3, 4, 5]
    assert np.isfinite(log.to_numpy(dtype=float)).all()
    assert all(isinstance(v, float) for v in log.drop(columns="iteration").iloc[0])
    assert {"lr", "loss", "d_rpp", "d_rn"} <= set(log.columns)
    if method == "triplet":  # no hypersphere, no heads: no fallbacks, no eq. 3-5 parts
        assert "triplet" in log and not {"fallback_pos", "joint", "d_rpn"} & set(log.columns)
    else:
        parts = {"joint", "global", "classification", "d_rpn", "fallback_pos", "fallback_neg"}
        assert parts <= set(log.columns)
    assert [m["iteration"] for m in history.metrics] == [0, 2, 4, 5]
    assert all(set(m) == {"iteration", "R@1"} and 0 <= m["R@1"] <= 100 for m in history.metrics)
    assert history.snapshots.shape == (4, len(data), 2)
    norms = np.linalg.norm(history.snapshots, axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-5)  # L2-normalised: on the unit circle
    assert toy.final_recall({method: history}) == {method: history.metrics[-1]["R@1"]}


def test_held_out_recall_is_recall_at_1_of_the_snapshot_in_percent():
    data = small_toy(dim=6, points_per_class=5)
    history = toy.train_toy_embedding(data, "method1", steps=4, batch_size=8, snapshot_every=2)
    for snapshot, entry in zip(history.snapshots, history.metrics, strict=True):
        held = data.held_out.numpy()
        emb, fine = snapshot[held], data.fine.numpy()[held]
        hits = 0
        for i in range(len(emb)):  # a loop: the nearest other held-out point shares the class
            d = np.linalg.norm(emb - emb[i], axis=1)
            d[i] = np.inf
            hits += fine[int(np.argmin(d))] == fine[i]
        assert entry["R@1"] == pytest.approx(100 * hits / len(emb))


def test_training_starts_from_the_same_weights_and_is_deterministic():
    data = small_toy(dim=6, points_per_class=5)
    threads = torch.get_num_threads()
    kwargs = {"steps": 4, "batch_size": 8, "snapshot_every": 2, "seed": 5}
    histories = {m: toy.train_toy_embedding(data, m, **kwargs) for m in ("random", "method2")}
    assert np.array_equal(histories["random"].snapshots[0], histories["method2"].snapshots[0])
    again = toy.train_toy_embedding(data, "method2", **kwargs)
    assert np.array_equal(again.snapshots, histories["method2"].snapshots)
    assert (
        again.log.equals(histories["method2"].log) and again.metrics == histories["method2"].metrics
    )
    # warmup: the first steps of a quadruplet method are random quadruplets.
    warm = toy.train_toy_embedding(data, "method2", warmup_steps=4, **kwargs)
    assert np.array_equal(warm.snapshots, histories["random"].snapshots)
    assert torch.get_num_threads() == threads  # the trainer's one-thread mode is undone


def test_save_histories_writes_run_shaped_files(tmp_path):
    data = small_toy(dim=6, points_per_class=5)
    kwargs = {"steps": 3, "batch_size": 8, "snapshot_every": 2}
    histories = {m: toy.train_toy_embedding(data, m, **kwargs) for m in ("random", "triplet")}
    assert toy.save_histories(histories, tmp_path) == tmp_path
    for method, history in histories.items():
        log = pd.read_csv(tmp_path / method / "log.csv")
        pd.testing.assert_frame_equal(log, history.log, check_dtype=False)
        metrics = json.loads((tmp_path / method / "metrics.json").read_text())
        assert metrics == history.metrics
    final = json.loads((tmp_path / "final_recall.json").read_text())
    assert final["recall_at_1"] == toy.final_recall(histories)
    assert final["iterations"] == {"random": 3, "triplet": 3}


@pytest.mark.parametrize("method", ["random", "method2", "triplet"])
def test_toy_training_learns(method):
    data = toy.make_toy(3, 3, 10, dim=6, seed=0)
    history = toy.train_toy_embedding(data, method, steps=60, batch_size=16, snapshot_every=60)
    loss = history.log["loss"]
    assert loss.iloc[-10:].mean() < 0.85 * loss.iloc[:10].mean()
    first, last = history.metrics[0]["R@1"], history.metrics[-1]["R@1"]
    assert last > first + 20  # held-out Recall@1 (%): zero-shot retrieval improves


def test_toy_step_is_one_iteration_of_the_loop(gen):
    data = small_toy(dim=6, points_per_class=5)
    train, model = toy._toy_model(data)  # the training classes, as train_toy_embedding has them
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    anchors = torch.arange(0, len(train), 4)
    row = toy.toy_step(model, optimizer, QuadrupletLoss(), train, anchors, "method1", gen)
    assert set(row) == {"loss", "joint", "global", "classification", "d_rpp", "d_rpn", "d_rn",
                        "fallback_pos", "fallback_neg"}  # fmt: skip
    assert all(type(v) is float for v in row.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    triplet = partial(toy.triplet_baseline, margin=0.2)
    row = toy.toy_step(model, optimizer, triplet, train, anchors, "triplet", gen)
    assert set(row) == {"loss", "triplet", "d_rpp", "d_rn"}


def test_train_toy_embedding_rejects_bad_input():
    data = small_toy(points_per_class=4)
    with pytest.raises(ValueError):
        toy.train_toy_embedding(data, "semihard", steps=2)
    with pytest.raises(ValueError):
        toy.train_toy_embedding(data, "random", steps=0)
    with pytest.raises(ValueError):
        toy.train_toy_embedding(small_toy(n_held_out_per_coarse=0), "random", steps=2)


# ----------------------------------------------------------------------------------------------
# Notebook 02 at smoke size
# ----------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_notebook_02_at_smoke_size(tmp_path, monkeypatch):
    import papermill as pm

    from qlib.utils import repo_root

    root = repo_root()
    # papermill's kernel resolves `python` through PATH: the venv first.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_root = tmp_path / "smoke"  # a smoke run_root (others get a smoke/ subfolder)
    pm.execute_notebook(
        str(root / "notebooks" / "02_mining_toy.ipynb"),
        str(tmp_path / "02_mining_toy.ipynb"),
        parameters={"smoke": True, "run_root": str(run_root), "seed": 1},
        kernel_name="python3",
        cwd=str(root / "notebooks"),
        progress_bar=False,
    )
    for name in (
        "fig2_mining.png",
        "toy_mining_stats.png",
        "toy_training_snapshots.png",
        "toy_training_curves.png",
        "toy_training.gif",
    ):
        path = run_root / "figures" / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in ("mining_stats.csv", "random/log.csv", "method1/metrics.json", "final_recall.json"):
        assert (run_root / "toy" / name).is_file(), name
    final = json.loads((run_root / "toy" / "final_recall.json").read_text())
    assert set(final["recall_at_1"]) == {"method1", "method2", "random", "triplet"}
