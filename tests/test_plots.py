"""qlib.plots: every figure draws from small synthetic inputs, the one curve plotter reads both
trainers' logs, and every `plots.<name>` a notebook calls exists."""

import json
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from qlib import plots, toy
from qlib.logs import LOG_COLUMNS, LogWriter
from qlib.plots import scheme
from qlib.utils import repo_root

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def lines(fig) -> int:
    return sum(len(ax.get_lines()) for ax in fig.axes)


def legend(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


# ----------------------------------------------------------------------------------------------
# The shared scheme and saving
# ----------------------------------------------------------------------------------------------


def test_fine_rank_matches_a_loop():
    coarse = np.array([0, 0, 1, 1, 1, 0, 2, 1])
    fine = np.array([5, 3, 9, 7, 9, 5, 4, 8])
    expected = [sorted(set(fine[coarse == c])).index(f) for f, c in zip(fine, coarse, strict=True)]
    assert scheme.fine_rank(fine, coarse).tolist() == expected


def test_scatter_of_a_subset_keeps_the_whole_sets_markers_and_colours():
    coarse, fine = np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3])
    points = np.arange(8, dtype=float).reshape(4, 2)
    fig, ax = plt.subplots()
    scheme.scatter_classes(ax, points, fine, coarse, only=[1, 3])  # both rank 1 of their coarse
    (collection,) = ax.collections
    assert collection.get_offsets().tolist() == points[[1, 3]].tolist()
    colours = scheme.coarse_colours(coarse)
    assert np.allclose(collection.get_facecolors()[:, :3], [colours[0], colours[1]])
    with pytest.raises(ValueError, match="shape"):
        scheme.scatter_classes(ax, np.zeros((3, 3)), fine[:3], coarse[:3])


def test_save_figure_writes_png_and_gif(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert plots.save_figure(fig, "a", tmp_path) == tmp_path / "a.png"
    assert (tmp_path / "a.png").stat().st_size > 0
    assert plots.save_figure(fig, "b.svg", tmp_path / "sub").suffix == ".svg"
    assert plots.figures_folder("runs/x", smoke=True).parts[-2:] == ("x", "figures")
    assert plots.figures_folder("runs/x", smoke=False) == plots.FIGURES_DIR


def test_every_plots_name_a_notebook_calls_exists():
    names = set()
    for path in (repo_root() / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            names |= set(re.findall(r"\bplots\.(\w+)", "".join(cell["source"])))
    assert names and not [n for n in names if not hasattr(plots, n)]
    assert set(plots.__all__) <= set(dir(plots))


# ----------------------------------------------------------------------------------------------
# Notebook 01: the dataset
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for fine in range(6):
        coarse = fine // 3  # two coarse classes of three fine classes
        for i in range(3):
            path = tmp_path / f"{fine}_{i}.png"
            Image.fromarray(np.full((12, 16, 3), 40 * fine, np.uint8)).save(path)
            split = "train" if fine % 3 < 2 else "test"
            rows.append((str(path), fine, coarse, f"fine {fine}", f"coarse {coarse}", split))
    return pd.DataFrame(
        rows, columns=["path", "fine", "coarse", "fine_name", "coarse_name", "split"]
    )


def test_data_figures_draw(manifest):
    assert len(plots.plot_class_counts(manifest).axes) == 2
    tree = plots.plot_coarse_fine_tree(manifest)
    assert len(tree.axes[0].texts) == 2 + 6  # coarse names + fine leaves
    bars = plots.plot_coarse_fine_tree(manifest, max_leaves=3)  # too many leaves: bars
    assert len(bars.axes[0].patches) > 0
    examples = plots.plot_examples_per_coarse(manifest, n_columns=4)
    assert sum(len(ax.images) for ax in examples.axes) == 6  # one image per fine class
    fine_examples = plots.plot_fine_examples(manifest, "coarse 1", n_fine=2, n_per_fine=2)
    assert sum(len(ax.images) for ax in fine_examples.axes) == 4
    with pytest.raises(ValueError, match="not in the manifest"):
        plots.plot_fine_examples(manifest, "no such class")


# ----------------------------------------------------------------------------------------------
# Notebook 02: mining on the toy
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_runs():
    data = toy.make_toy(3, 3, 5, dim=4, seed=0)
    kwargs = {"steps": 6, "batch_size": 6, "snapshot_every": 3}
    histories = {m: toy.train_toy_embedding(data, m, **kwargs) for m in ("method1", "triplet")}
    return data, histories


def test_mining_figures_draw(toy_runs, tmp_path):
    data, histories = toy_runs
    anchor = toy.pick_fig2_anchor(data.plane, data.fine, data.coarse)
    quads, falls = toy.anchor_quadruplets(data.plane, data.fine, data.coarse, anchor)
    fig = plots.plot_mining_panels(data.plane, data.fine, data.coarse, quads, falls)
    assert [len(ax.patches) for ax in fig.axes] == [1, 1, 0]  # the circle: not for Random
    assert all(len(ax.texts) == 3 + 4 for ax in fig.axes)  # arrows R -> P+, P-, N; role labels
    falls["method2"] = [True, False]
    fig = plots.plot_mining_panels(data.plane, data.fine, data.coarse, quads, falls)
    assert "fallback: P+" in fig.axes[1].get_title()
    with pytest.raises(ValueError):
        plots.plot_mining_panels(data.plane, data.fine, data.coarse, {"random": [0, 1, 2]})
    stats = toy.mining_statistics(data.plane, data.fine, data.coarse, n_anchors=10)
    assert len(plots.plot_mining_statistics(stats).axes) == 2
    with pytest.raises(ValueError, match="columns"):
        plots.plot_mining_statistics(stats.drop(columns="fallback_pos"))
    args = (histories, data.fine, data.coarse, data.held_out)
    snapshots = plots.plot_toy_training_snapshots(*args, n_rows=2)
    assert len(snapshots.axes) == 2 * 2
    assert "iteration 6" in snapshots.axes[-1].get_title()
    assert len(plots.plot_toy_training_snapshots(*args, indices=[1]).axes) == 2
    with pytest.raises(ValueError, match="indices"):
        plots.plot_toy_training_snapshots(*args, indices=[9])
    gif = plots.save_figure(plots.animate_toy_training(*args, max_frames=2), "toy", tmp_path)
    assert gif.suffix == ".gif" and gif.stat().st_size > 0


# ----------------------------------------------------------------------------------------------
# Notebooks 02 and 03: one curve plotter for both trainers
# ----------------------------------------------------------------------------------------------


def real_run_log(tmp_path, method="method2", n=30) -> pd.DataFrame:
    """A log.csv written by qlib.logs.LogWriter, as the image trainer writes it."""
    rng = np.random.default_rng(0)
    path = tmp_path / f"{method}_log.csv"
    with LogWriter(path) as writer:
        for i in range(1, n + 1):
            row = {"epoch": 1 + i // 10, "iteration": i, "lr": 1e-3, "loss": float(rng.random())}
            row.update({c: float(rng.random()) for c in ("d_rpp", "d_rpn", "d_rn", "time_data")})
            if method != "semihard":
                row.update(joint=0.5, classification=0.1, fallback_pos=0.2, fallback_neg=0.0)
                row["global"] = 0.3
            else:
                row["triplet"] = 0.4
            writer.write(row)
    log = pd.read_csv(path)
    assert list(log.columns) == list(LOG_COLUMNS)
    return log


METRICS = [
    {"epoch": 0, "iteration": 0, "R@1": 5.0, "NMI": 10.0},
    {"epoch": 3, "iteration": 30, "R@1": 40.0, "NMI": 30.0, "final": True},
]


def test_training_curves_of_one_real_run(tmp_path):
    log = real_run_log(tmp_path)
    fig = plots.plot_training_curves(log, METRICS, title="method2")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "loss parts" and len(fig.axes) == 4
    assert legend(fig.axes[0]) == ["loss", "joint", "global", "classification"]
    assert len(fig.axes[2].get_lines()) == 2  # fallbacks P+ and P-
    assert legend(fig.axes[3]) == ["Recall@1", "NMI"]
    baseline = plots.plot_training_curves(real_run_log(tmp_path, "semihard"), METRICS)
    assert legend(baseline.axes[0]) == ["loss", "triplet"]
    assert not baseline.axes[2].get_lines() and baseline.axes[2].texts  # "nothing logged"
    assert lines(plots.plot_training_curves(log)) > 0  # metrics are optional


def test_training_curves_of_a_toy_history_and_of_several_runs(toy_runs, tmp_path):
    _, histories = toy_runs
    one = histories["method1"]
    fig = plots.plot_training_curves(one.log, one.metrics)
    assert len(fig.axes) == 4 and len(fig.axes[3].get_lines()) == 1  # held-out R@1 only
    logs = {m: h.log for m, h in histories.items()}
    metrics = {m: h.metrics for m, h in histories.items()}
    overlay = plots.plot_training_curves(logs, metrics, smooth=2)
    titles = [ax.get_title() for ax in overlay.axes]
    for part in ("loss", "joint", "global", "classification", "triplet"):
        assert f"loss part: {part}" in titles
    assert len(overlay.legends) == 1  # the runs, by colour
    mixed = {"toy": one.log, "real": real_run_log(tmp_path)}
    assert lines(plots.plot_training_curves(mixed, {"real": METRICS})) > 0
    with pytest.raises(ValueError, match="keyed"):
        plots.plot_training_curves(logs, one.metrics)
    with pytest.raises(ValueError, match="iteration"):
        plots.plot_training_curves(one.log.rename(columns={"iteration": "step"}))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_training_curves(one.log.iloc[:0])


# ----------------------------------------------------------------------------------------------
# Notebooks 04 and 05: evaluation and Table 1
# ----------------------------------------------------------------------------------------------


def test_evaluation_and_table_figures_draw():
    rng = np.random.default_rng(0)
    coarse = np.repeat([0, 1, 2], 8)
    fine = np.repeat(np.arange(6), 4)
    names = {0: "sedan", 1: "suv", 2: "cab"}
    umap = plots.plot_umap(rng.normal(size=(24, 2)), coarse, fine, names, title="t")
    assert legend(umap.axes[0]) == list(names.values())
    images = rng.integers(0, 255, size=(2, 3, 8, 8, 3), dtype=np.uint8)
    correct = [[True, False, True], [False, False, True]]
    grid = plots.plot_retrieval_grid(images[:, 0], images, correct, titles=["a", "b"])
    assert len(grid.axes) == 2 * 4
    distances = pd.DataFrame(rng.random((20, 3)), columns=["d_rpp", "d_rpn", "d_rn"])
    stages = {"before": distances, "after": 2 * distances}
    assert len(plots.plot_distance_histograms(stages).axes) == 2
    per_coarse = pd.DataFrame(
        {"coarse_name": ["a", "b"], "R@1": [40.0, 60.0], "coarse_R@1": [70.0, 80.0]}
    )
    assert len(plots.plot_per_coarse(per_coarse).axes[0].patches) == 4
    table = pd.DataFrame({"name": ["Random", "Method 2"]})
    for metric in ("R@1", "NMI"):
        table[metric] = [50.0, np.nan]  # Method 2 has no run
        table[f"{metric}_std"] = [1.0, np.nan]
        table[f"{metric}_paper"] = [60.0, 70.0]
    bars = plots.plot_table1_bars(table, metrics=("R@1", "NMI"))
    assert len(bars.axes) == 2 and "no run" in [t.get_text() for t in bars.axes[0].texts]
    comparisons = pd.DataFrame(
        {"a": "method2", "b": "random", "metric": ["R@1", "NMI"], "n": 3, "mean": [1.0, 2.0],
         "low": [-1.0, 0.5], "high": [3.0, 3.5], "confidence": 0.95,
         "differences": [(0.0, 1.0, 2.0), (1.0, 2.0, 3.0)]}
    )  # fmt: skip
    assert len(plots.plot_paired_differences(comparisons).axes) == 2
    with pytest.raises(ValueError, match=r"no comparisons for metrics \['R@16'\]"):
        plots.plot_paired_differences(comparisons, metrics=("R@1", "R@16"))


def test_plots_take_tensors():
    points = torch.randn(12, 2)
    fine, coarse = torch.arange(12) // 2, torch.arange(12) // 6
    quads = {"method2": torch.tensor([0, 1, 2, 6])}
    assert len(plots.plot_mining_panels(points, fine, coarse, quads).axes) == 1
