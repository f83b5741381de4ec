"""One training iteration taken apart (notebook 03): the bank, the anchors, what Random, Method 1
and Method 2 pick for the same anchors, and eq. 6's parts for the batch
(`qlib.evaluate.dissect_iteration`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .scheme import ROLES, as_numpy, class_legend, dot, method_name, scatter_classes

METHOD_STYLE = {  # the method's marker in the distance strips, and its colour
    "random": ("o", "0.35"),
    "method1": ("s", "tab:purple"),
    "method2": ("D", "tab:blue"),
}
# The candidate sets of an anchor R, bottom to top in the strips.
BANDS = (
    ("N", "N candidates\n(other coarse)"),
    ("P-", "P- candidates\n(same coarse,\nother fine)"),
    ("P+", "P+ candidates\n(same fine)"),
)
LOSS_PARTS = (  # column of IterationDissection.losses -> label; stacked, they sum to eq. 6
    ("joint", "eq. 5 distance terms (joint)"),
    ("classification", "eq. 4 classification"),
    ("global_term", "η · eq. 3 global"),
)


def plot_iteration_dissection(dissection, images: dict, n_rows: int = 3, title: str = ""):
    """The picture of one iteration (`qlib.evaluate.IterationDissection`): the bank (first two
    principal components) with the first `n_rows` anchors numbered, eq. 6 per selection as the
    stack of its parts, then per anchor the distances D(R, j) to every bank sample by candidate
    set with each selection's picks, and the images R, P+, P-, N of each selection (* =
    fallback). `images`: {bank index: (H, W, 3) uint8} (`qlib.evaluate.dissection_images`).
    """
    quads = dissection.quadruplets
    methods = list(dict.fromkeys(quads["method"]))
    n_rows = min(n_rows, int(quads["row"].max()) + 1)
    image_columns = 1 + 3 * len(methods)
    fig = plt.figure(figsize=(4.6 + 1.05 * image_columns + 0.3 * len(methods), 3.6 + 1.75 * n_rows))
    grid = fig.add_gridspec(
        1 + n_rows, 2, width_ratios=(4.6, 1.05 * image_columns + 0.3 * len(methods)),
        height_ratios=(3.0, *[1.75] * n_rows), hspace=0.55, wspace=0.12,
    )  # fmt: skip
    _draw_bank(fig.add_subplot(grid[0, 0]), dissection, n_rows)
    _draw_losses(fig.add_subplot(grid[0, 1]), dissection.losses.loc[methods], dissection)
    for row in range(n_rows):
        strip = fig.add_subplot(grid[1 + row, 0])
        _draw_strip(strip, dissection, row, methods, legend=row == 0)
        _draw_images(fig, grid[1 + row, 1], quads[quads["row"] == row], images, methods, row)
    fig.suptitle(title or "One training iteration, before any training", fontsize=13, y=0.995)
    return fig


def _draw_bank(ax, dissection, n_rows: int) -> None:
    xy = as_numpy(dissection.bank_2d)
    scatter_classes(ax, xy, dissection.fine, dissection.coarse, size=9, alpha=0.55)
    anchors = as_numpy(dissection.anchors)
    ax.scatter(*xy[anchors].T, s=26, facecolors="none", edgecolors="black", lw=0.8)
    for row, index in enumerate(anchors[:n_rows]):
        ax.annotate(
            f"R{row + 1}", xy[index], xytext=(5, 5), textcoords="offset points", fontsize=9,
            weight="bold", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.8},
        )  # fmt: skip
    n, d = dissection.bank.shape
    ax.set(xticks=[], yticks=[], xlabel="principal component 1", ylabel="component 2")
    ax.set_title(
        f"The bank: {n} training images embedded by the initial network ({d}-d),\n"
        f"{len(anchors)} anchors drawn among the valid ones (circled)",
        fontsize=9,
    )
    if len(np.unique(as_numpy(dissection.coarse))) <= 12:
        ax.legend(handles=class_legend(dissection.coarse), fontsize=6, loc="best", ncol=2)


def _draw_losses(ax, losses, dissection) -> None:
    names = [method_name(m) for m in losses.index]
    bottom = np.zeros(len(losses))
    colours = ("tab:cyan", "tab:olive", "tab:pink")
    for (column, label), colour in zip(LOSS_PARTS, colours, strict=True):
        values = losses[column].to_numpy(float)
        ax.barh(names, values, left=bottom, color=colour, label=label, height=0.55)
        bottom += values
    for y, total in enumerate(losses["loss"]):
        ax.text(total, y, f" {total:.3f}", va="center", fontsize=9)
    ax.set_xlim(0, bottom.max() * 1.5)
    ax.invert_yaxis()
    ax.set_xlabel("loss on this batch (stacked parts = eq. 6)")
    ax.set_title(
        f"Eq. 6 on the batch of the same {len(dissection.anchors)} anchors, as the training "
        "step computes it (train mode, augmented images)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="center right")


def _draw_strip(ax, dissection, row: int, methods: list[str], legend: bool) -> None:
    """D(R, j) for every bank sample j, one band per candidate set, the radius and the picks."""
    anchor = int(dissection.anchors[row])
    distance = as_numpy(dissection.anchor_distances[row])
    fine, coarse = as_numpy(dissection.fine), as_numpy(dissection.coarse)
    same_fine, same_coarse = fine == fine[anchor], coarse == coarse[anchor]
    sets = {
        "P+": same_fine & (np.arange(len(fine)) != anchor),
        "P-": same_coarse & ~same_fine,
        "N": ~same_coarse,
    }
    jitter = np.random.default_rng(row).uniform(-0.22, 0.22, len(fine))  # layout only
    for y, (role, _) in enumerate(BANDS):
        members = sets[role]
        ax.scatter(distance[members], y + jitter[members], s=5, color=ROLES[role][1], alpha=0.35)
    radius = float(distance[sets["N"]].min())  # the hardest negative's distance
    ax.axvline(radius, color=ROLES["N"][1], ls="--", lw=1.2)
    ax.text(radius, 2.45, " D(R, N) hardest", color=ROLES["N"][1], fontsize=7, va="bottom")
    quads = dissection.quadruplets
    offsets = np.linspace(-0.3, 0.3, len(methods))
    for method, offset in zip(methods, offsets, strict=True):
        pick = quads[(quads["row"] == row) & (quads["method"] == method)].iloc[0]
        marker, colour = _method_style(method)
        for y, (role, _) in enumerate(BANDS):
            ax.scatter(
                distance[int(pick[role])], y + offset, s=46, marker=marker, facecolors="none",
                edgecolors=colour, lw=1.6, zorder=3,
            )  # fmt: skip
    ax.set_yticks(range(len(BANDS)), [label for _, label in BANDS], fontsize=6.5)
    ax.set_ylim(-0.5, 2.75)
    ax.set_xlim(left=0)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"R{row + 1} (bank index {anchor}): distance D(R, j) to every bank sample j",
                  fontsize=7.5)  # fmt: skip
    if legend:
        handles = [dot(*_method_style(m), method_name(m), mfc="none", mew=1.5) for m in methods]
        ax.legend(
            handles=handles, fontsize=6.5, loc="upper right", title="picks", title_fontsize=6.5
        )


def _method_style(method: str) -> tuple[str, str]:
    return METHOD_STYLE.get(method, ("o", "black"))


def _draw_images(fig, cell, picks, images: dict, methods: list[str], row: int) -> None:
    """R, then P+, P-, N of each method, a narrow gap between the methods."""
    ratios = [1.0] + [r for _ in methods for r in (0.18, 1.0, 1.0, 1.0)]
    sub = cell.subgridspec(1, len(ratios), width_ratios=ratios, wspace=0.06)
    first = picks.iloc[0]
    cells = [(0, int(first["R"]), "R", f"R{row + 1}", None)]
    for m, method in enumerate(methods):
        pick = picks[picks["method"] == method].iloc[0]
        for k, (role, column, fallback) in enumerate(
            (("P+", "d_rpp", "fallback_pos"), ("P-", "d_rpn", "fallback_neg"), ("N", "d_rn", None))
        ):
            star = "*" if fallback and bool(pick[fallback]) else ""
            label = f"{role} {pick[column]:.2f}{star}"
            header = method_name(method) if k == 1 and row == 0 else None
            cells.append((2 + 4 * m + k, int(pick[role]), role, label, header))
    for position, index, role, label, header in cells:
        ax = fig.add_subplot(sub[0, position])
        ax.imshow(images[index], interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_xlabel(label, fontsize=7.5, labelpad=2)
        for spine in ax.spines.values():
            spine.set(edgecolor=ROLES[role][1], linewidth=2.5)
        if header:
            ax.set_title(header, fontsize=10, weight="bold", pad=4)
