"""Evaluation of a trained run (notebook 04): UMAP of the test embeddings, retrieval grid,
distances of the selected quadruplets, retrieval per coarse class."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .scheme import DISTANCE_COLOURS, DISTANCES, class_legend, scatter_classes


def plot_umap(xy, coarse, fine, coarse_names: dict | None = None, title: str = "") -> plt.Figure:
    """Scatter of 2-D coordinates (N, 2): colour = coarse class, marker = fine class within its
    coarse class, each fine class's id written at its centroid (up to 100 fine classes)."""
    xy, coarse, fine = np.asarray(xy), np.asarray(coarse), np.asarray(fine)
    fig, ax = plt.subplots(figsize=(8, 7))
    scatter_classes(ax, xy, fine, coarse, size=12, alpha=0.7)
    classes = np.unique(fine)
    if len(classes) <= 100:
        for f in classes:
            centroid = xy[fine == f].mean(axis=0)
            ax.annotate(str(f), centroid, fontsize=7, ha="center", va="center", alpha=0.9)
    ax.set(xticks=[], yticks=[], title=title or "UMAP of the test embeddings")
    ax.legend(
        handles=class_legend(coarse, names=coarse_names),
        title="coarse class (colour); marker and number: fine class",
        fontsize=8,
        title_fontsize=8,
        loc="best",
    )
    return fig


def plot_retrieval_grid(query_images, neighbor_images, correct, titles=None) -> plt.Figure:
    """Queries (n, H, W, 3) in the first column, their K nearest neighbours (n, K, H, W, 3) beside
    them; a neighbour's border is green when it shares the query's fine class (`correct` (n, K)),
    red when not."""
    correct = np.asarray(correct, dtype=bool)
    n, k = correct.shape
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.5 * n), squeeze=False)
    for i in range(n):
        cells = [(query_images[i], "black", titles[i] if titles is not None else "query")]
        cells += [
            (neighbor_images[i][j], "tab:green" if correct[i, j] else "tab:red", f"{j + 1}")
            for j in range(k)
        ]
        for ax, (image, colour, label) in zip(axes[i], cells, strict=True):
            ax.imshow(image)
            ax.set(xticks=[], yticks=[])
            ax.set_title(label, fontsize=7)
            for spine in ax.spines.values():
                spine.set(edgecolor=colour, linewidth=3)
    fig.tight_layout()
    fig.suptitle(
        "Retrieval: query, then nearest neighbours (green = same fine class, red = not)", y=1.01
    )
    return fig


def plot_distance_histograms(stages: dict) -> plt.Figure:
    """One panel per stage (e.g. {"before training": df, "after training": df}), each with the
    histograms of D(R,P+), D(R,P-), D(R,N) of a selection (`qlib.evaluate.selection_distances`)."""
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for ax, (stage, distances) in zip(axes[0], stages.items(), strict=True):
        # Each panel its own range (an untrained network's distances are far smaller), the
        # same bins for its three histograms.
        top = float(distances[list(DISTANCES)].to_numpy().max())
        bins = np.linspace(0.0, top * 1.02 + 1e-9, 31)
        for (column, label), colour in zip(DISTANCES.items(), DISTANCE_COLOURS, strict=True):
            style = {"stat": "density", "bins": bins, "element": "step", "alpha": 0.3}
            sns.histplot(distances[column], ax=ax, label=label, color=colour, **style)
        ax.set(title=stage, xlabel="Euclidean distance to the anchor R")
        ax.legend()
    return fig


def plot_per_coarse(per_coarse, metrics=("R@1", "coarse_R@1")) -> plt.Figure:
    """Grouped bars of some metrics per coarse class (`qlib.evaluate.per_coarse_metrics`):
    by default Recall@1 (same fine class) beside coarse Recall@1 (same coarse class)."""
    data = per_coarse.sort_values(metrics[0])
    y = np.arange(len(data))
    height = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(data) * len(metrics) + 1.5))
    for i, metric in enumerate(metrics):
        offset = (i - (len(metrics) - 1) / 2) * height
        ax.barh(y + offset, data[metric], height=height, label=metric)
    ax.set_yticks(y, data["coarse_name"].astype(str))
    ax.set(xlabel="% of the queries of the coarse class", title="Retrieval per coarse class")
    ax.legend(loc="lower right", fontsize=8)
    return fig
