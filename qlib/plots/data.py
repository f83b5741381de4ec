"""The dataset (notebook 01): class counts, the coarse -> fine hierarchy, example images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .scheme import SPLIT_COLOURS


def _thumbnail(path: str, side: int = 96) -> np.ndarray:
    """An image file -> RGB array, shrunk so that its long side is at most `side` pixels."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)


def _stacked_by_split(counts, ax, title: str, xlabel: str) -> None:
    """Horizontal bars of a (rows x split) count table, stacked by split."""
    counts = counts.reindex(columns=[s for s in SPLIT_COLOURS if s in counts.columns])
    counts.plot.barh(stacked=True, ax=ax, color=[SPLIT_COLOURS[s] for s in counts.columns])
    ax.invert_yaxis()
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set(xlabel=xlabel, ylabel="", title=title)
    ax.tick_params(axis="y", labelsize=8 if len(counts) > 12 else 10)


def plot_class_counts(manifest) -> plt.Figure:
    """Images per fine class (bars coloured by split) and per coarse class (stacked by split)."""
    fig, (ax_fine, ax_coarse) = plt.subplots(1, 2, figsize=(13, 3.8), width_ratios=(2, 1))
    per_fine = manifest.groupby(["fine", "split"]).size().reset_index(name="images")
    for split, colour in SPLIT_COLOURS.items():
        part = per_fine[per_fine["split"] == split]
        ax_fine.bar(part["fine"], part["images"], width=1.0, color=colour, label=split)
    ax_fine.set(xlabel="fine class id", ylabel="images", title="Images per fine class")
    ax_fine.legend(title="split", loc="lower right", framealpha=0.9)
    per_coarse = manifest.groupby(["coarse_name", "split"]).size().unstack(fill_value=0)
    _stacked_by_split(per_coarse, ax_coarse, "Images per coarse class", "images")
    fig.tight_layout()
    return fig


def _tree(ax, pairs, lonely: set) -> None:
    """Coarse names on the left joined to their fine classes on the right (colour = split)."""
    y = 0
    for coarse_name, leaves in pairs.groupby("coarse_name", sort=True):
        leaf_ys = np.arange(y, y + len(leaves))
        colour = "red" if coarse_name in lonely else "black"
        ax.text(
            -0.05, leaf_ys.mean(), coarse_name, ha="right", va="center", color=colour, fontsize=9
        )
        for leaf_y, leaf in zip(leaf_ys, leaves.itertuples(), strict=True):
            ax.plot([0, 1], [leaf_ys.mean(), leaf_y], color="0.6", lw=0.8)
            colour = SPLIT_COLOURS[leaf.split]
            ax.text(1.05, leaf_y, leaf.fine_name, va="center", fontsize=7, color=colour)
        y += len(leaves) + 1
    ax.set(xlim=(-0.8, 2.2), ylim=(y, -1))
    ax.axis("off")


def plot_coarse_fine_tree(manifest, max_leaves: int = 64) -> plt.Figure:
    """The coarse -> fine hierarchy. Up to `max_leaves` fine classes: a tree, leaves coloured by
    split; more: fine classes per coarse class, stacked by split (a 196-leaf tree is
    unreadable). Coarse classes with a single training fine class (they cannot anchor) in red."""
    pairs = manifest[["coarse_name", "fine", "fine_name", "split"]].drop_duplicates("fine")
    pairs = pairs.assign(_test=pairs["split"] == "test").sort_values(["_test", "fine"])
    n_train_fine = pairs[pairs["split"] == "train"].groupby("coarse_name")["fine"].nunique()
    lonely = set(n_train_fine.index[n_train_fine == 1])
    if len(pairs) <= max_leaves:
        fig, ax = plt.subplots(figsize=(7, 0.22 * len(pairs) + 1.0))
        _tree(ax, pairs, lonely)
        ax.set_title("Coarse -> fine classes (blue: train, orange: test; red: cannot anchor)")
        return fig
    counts = pairs.groupby(["coarse_name", "split"]).size().unstack(fill_value=0).sort_index()
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(counts) + 1.2))
    title = "Fine classes per coarse class (red: a single training fine class)"
    _stacked_by_split(counts, ax, title, "fine classes")
    for label in ax.get_yticklabels():
        if label.get_text() in lonely:
            label.set_color("red")
    fig.tight_layout()
    return fig


def _image_grid(n_rows: int, n_columns: int, cell: tuple[float, float]):
    fig, axes = plt.subplots(
        n_rows, n_columns, squeeze=False, figsize=(cell[0] * n_columns, cell[1] * n_rows)
    )
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def plot_examples_per_coarse(manifest, n_columns: int = 8, seed: int = 0) -> plt.Figure:
    """One row per coarse class, one image from each of up to `n_columns` of its fine classes
    (training classes first): what separates coarse classes, and how close fine ones are."""
    rng = np.random.default_rng(seed)
    coarse_names = sorted(manifest["coarse_name"].unique())
    fig, axes = _image_grid(len(coarse_names), n_columns, (1.3, 1.4))
    for row, coarse_name in zip(axes, coarse_names, strict=True):
        part = manifest[manifest["coarse_name"] == coarse_name]
        part = part.assign(_test=part["split"] == "test").sort_values(["_test", "fine"])
        for ax, fine in zip(row, part["fine"].unique(), strict=False):
            rows = part[part["fine"] == fine]
            pick = rows.iloc[int(rng.integers(len(rows)))]
            ax.imshow(_thumbnail(pick["path"]), interpolation="nearest")
            ax.set_title(
                str(pick["fine_name"])[:18], fontsize=6, color=SPLIT_COLOURS[pick["split"]]
            )
        row[0].text(
            -0.1, 0.5, coarse_name, transform=row[0].transAxes, ha="right", va="center", fontsize=8
        )
    fig.suptitle(
        "One example per fine class, one row per coarse class (title colour = split)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_fine_examples(
    manifest, coarse_name: str, n_fine: int = 6, n_per_fine: int = 6, seed: int = 0
) -> plt.Figure:
    """Inside one coarse class: one row per fine class, `n_per_fine` instances each. The
    fine-grained problem: rows differ subtly, instances of one row vary a lot."""
    rng = np.random.default_rng(seed)
    part = manifest[manifest["coarse_name"] == coarse_name]
    if part.empty:
        raise ValueError(f"coarse class {coarse_name!r} is not in the manifest.")
    fines = sorted(part["fine"].unique())[:n_fine]
    fig, axes = _image_grid(len(fines), n_per_fine, (1.3, 1.35))
    for row, fine in zip(axes, fines, strict=True):
        rows = part[part["fine"] == fine]
        picks = rows.iloc[rng.permutation(len(rows))[:n_per_fine]]
        for ax, pick in zip(row, picks.itertuples(), strict=False):
            ax.imshow(_thumbnail(pick.path), interpolation="nearest")
        row[0].set_title(str(rows["fine_name"].iloc[0])[:30], fontsize=7, loc="left")
    fig.suptitle(f"Fine classes of the coarse class {coarse_name!r}", fontsize=10)
    fig.tight_layout()
    return fig
