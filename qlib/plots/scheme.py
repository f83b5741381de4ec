"""The encodings every figure shares: coarse class = colour, fine class = marker (its rank
among the fine classes of its coarse class, as in the paper's Fig. 2), the colours of the
quadruplet roles R, P+, P-, N, and the colours of the splits."""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
SPLIT_COLOURS = {"train": "tab:blue", "test": "tab:orange"}
# Role of a quadruplet member -> (label, colour); the distances D(R, .) take the member's colour.
ROLES = {
    "R": ("$X^R$", "black"),
    "P+": ("$X^{P+}$", "tab:green"),
    "P-": ("$X^{P-}$", "tab:orange"),
    "N": ("$X^N$", "tab:red"),
}
DISTANCES = {"d_rpp": "D(R, P+)", "d_rpn": "D(R, P-)", "d_rn": "D(R, N)"}
DISTANCE_COLOURS = [ROLES[role][1] for role in ("P+", "P-", "N")]
METHOD_NAMES = {"method1": "Method 1", "method2": "Method 2"}  # others: capitalised


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method.capitalize())


def as_numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like -> numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def fine_rank(fine, coarse) -> np.ndarray:
    """(N,) rank 0, 1, ... of each point's fine class among the fine classes of its coarse
    class: the index of its marker."""
    fine, coarse = as_numpy(fine), as_numpy(coarse)
    rank = np.zeros(len(fine), dtype=int)
    for c in np.unique(coarse):
        in_coarse = coarse == c
        rank[in_coarse] = np.unique(fine[in_coarse], return_inverse=True)[1]
    return rank


def coarse_colours(coarse) -> dict[int, tuple]:
    """{coarse id: colour}, in the order of the sorted ids."""
    classes = np.unique(as_numpy(coarse))
    n = len(classes)
    palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
    return {int(c): palette[i] for i, c in enumerate(classes)}


def scatter_classes(
    ax, points, fine, coarse, *, size=28, alpha=0.8, hollow=None, outline=None, only=None
) -> None:
    """Scatter (N, 2) points, colour = coarse class, marker = fine class inside its coarse.

    `hollow` (N,) bool draws those points unfilled; `outline` (colour, width) edges the filled
    ones; `only` (indices) draws just those points, with the markers and colours of the whole set.
    """
    points, fine, coarse = as_numpy(points), as_numpy(fine), as_numpy(coarse)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}.")
    rank, palette = fine_rank(fine, coarse), coarse_colours(coarse)
    colours = np.array([palette[int(c)] for c in coarse]).reshape(len(coarse), -1)
    hollow = np.zeros(len(points), bool) if hollow is None else as_numpy(hollow).astype(bool)
    shown = np.ones(len(points), bool) if only is None else np.isin(np.arange(len(points)), only)
    edge, width = outline or ("face", 0.3)
    for r in np.unique(rank[shown]):  # one call per marker and fill keeps animations fast
        for is_hollow in (False, True):
            sel = shown & (rank == r) & (hollow == is_hollow)
            if sel.any():
                ax.scatter(
                    *points[sel].T,
                    s=size,
                    marker=MARKERS[r % len(MARKERS)],
                    alpha=alpha,
                    facecolors="none" if is_hollow else colours[sel],
                    edgecolors=colours[sel] if is_hollow else edge,
                    linewidths=0.9 if is_hollow else width,
                )


def dot(marker: str, colour, label: str, **style) -> Line2D:
    return Line2D([], [], ls="", marker=marker, color=colour, label=label, **style)


def class_legend(coarse, fine=None, names: dict | None = None, hollow_label: str = "") -> list:
    """Legend handles: one per coarse colour (named by `names` {id: name} when given), one per
    fine-class marker when `fine` is given, one for hollow markers when `hollow_label` is."""
    names = names or {}
    handles = [
        dot("o", colour, names.get(c, f"coarse class {c}"))
        for c, colour in coarse_colours(coarse).items()
    ]
    if fine is not None:
        for r in range(int(fine_rank(fine, coarse).max()) + 1):
            handles.append(
                dot(MARKERS[r % len(MARKERS)], "grey", f"fine class {r + 1} of its coarse")
            )
    if hollow_label:
        handles.append(dot("o", "grey", hollow_label, mfc="none"))
    return handles
