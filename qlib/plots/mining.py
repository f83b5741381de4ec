"""Quadruplet selection made visible (notebook 02): the Fig. 2 panels, mining statistics over
many anchors, and the toy embedding over training (snapshots, animation)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

from .scheme import (
    DISTANCE_COLOURS,
    DISTANCES,
    ROLES,
    as_numpy,
    class_legend,
    method_name,
    scatter_classes,
)

PANEL_TITLES = {
    "method1": "Method 1 (closest to $X^N$)",
    "method2": "Method 2 (closest to $X^R$)",
    "random": "Random",
}
FIG2_LEGEND = {  # label -> line style
    "circle of radius D(R, N) (Methods 1, 2)": {"color": "tab:red", "ls": "--"},
    "R → P+ (same fine class)": {"color": "tab:green", "marker": ">"},
    "R → P- (same coarse class, other fine class)": {"color": "tab:orange", "marker": ">"},
    "R → N (other coarse; hardest in Methods 1, 2)": {"color": "tab:red", "marker": ">"},
    "Method 1: distance to N": {"color": "grey", "ls": ":"},
}
ROLE_LABEL = {"fontsize": 13, "weight": "bold", "textcoords": "offset points", "xytext": (8, 8)}


def _radius(points, quad: list[int], method: str) -> float:
    """D(R, N), the radius of the method's circle; 0 for Random, which draws N uniformly (no
    hardest negative, no circle)."""
    return 0.0 if method == "random" else float(np.linalg.norm(points[quad[3]] - points[quad[0]]))


def _view(points, quads: dict) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) corners shared by every panel: around the quadruplets and their circles."""
    corners = []
    for method, quad in quads.items():
        members = points[quad]
        radius = _radius(points, quad, method)
        corners += [members, members[:1] - radius, members[:1] + radius]
    corners = np.concatenate(corners)
    margin = 0.25 * (corners.max(0) - corners.min(0)).max()
    return corners.min(0) - margin, corners.max(0) + margin


def _draw_quadruplet(ax, points, fine, coarse, quad: list[int], method: str) -> None:
    """The circle of radius D(R, N), arrows from X^R to its members (Method 1: also dotted lines
    from X^N to P+ and P-, the distance it minimises), and the members drawn large."""
    ref = points[quad[0]]
    radius = _radius(points, quad, method)
    if radius > 0:
        ax.add_patch(
            plt.Circle(ref, radius, fill=False, ls="--", lw=1.2, color="tab:red", alpha=0.8)
        )
    for role, index in zip(("P+", "P-", "N"), quad[1:], strict=True):
        colour = ROLES[role][1]
        arrow = {"arrowstyle": "-|>", "color": colour, "lw": 1.8, "shrinkA": 4, "shrinkB": 5}
        ax.annotate("", xy=points[index], xytext=ref, arrowprops=arrow)
        if method == "method1" and role != "N":
            ax.plot(*zip(points[quad[3]], points[index], strict=True), ls=":", lw=1.4, color=colour)
    scatter_classes(ax, points, fine, coarse, size=170, alpha=1, outline=("black", 1.6), only=quad)
    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7}
    for (label, colour), index in zip(ROLES.values(), quad, strict=True):
        ax.annotate(label, points[index], color=colour, bbox=box, **ROLE_LABEL)


def plot_mining_panels(
    points, fine, coarse, quad_per_method: dict, fallbacks_per_method: dict | None = None
) -> plt.Figure:
    """Fig. 2 reproduced: one panel per method on (N, 2) points, zoomed on the quadruplets.

    quad_per_method: {method: (R, P+, P-, N) indices into points}; fallbacks_per_method
    {method: (P+, P-) bools} marks a fallback.
    """
    points, fine, coarse = as_numpy(points), as_numpy(fine), as_numpy(coarse)
    if not quad_per_method:
        raise ValueError("quad_per_method is empty; give at least one {method: (R, P+, P-, N)}.")
    quads = {method: [int(i) for i in quad] for method, quad in quad_per_method.items()}
    if any(len(quad) != 4 for quad in quads.values()):
        raise ValueError(f"each quadruplet must be 4 indices (R, P+, P-, N), got {quads}.")
    lower, upper = _view(points, quads)
    fig, axes = plt.subplots(1, len(quads), figsize=(4.6 * len(quads), 5.5), squeeze=False)
    for ax, (method, quad) in zip(axes[0], quads.items(), strict=True):
        scatter_classes(ax, points, fine, coarse, size=26, alpha=0.35)
        _draw_quadruplet(ax, points, fine, coarse, quad, method)
        fell = (fallbacks_per_method or {}).get(method, (False, False))
        fell = [role for role, f in zip(("P+", "P-"), fell, strict=True) if f]
        note = f"\nfallback: {', '.join(fell)} (farthest inside the circle)" if fell else ""
        ax.set_title(PANEL_TITLES.get(method, method) + note)
        limits = {"xlim": (lower[0], upper[0]), "ylim": (lower[1], upper[1])}
        ax.set(aspect="equal", xticks=[], yticks=[], **limits)
    lines = [Line2D([], [], label=label, **style) for label, style in FIG2_LEGEND.items()]
    handles = class_legend(coarse, fine) + lines[: None if "method1" in quads else -1]
    legend = {"loc": "lower center", "ncol": 4, "fontsize": 9, "frameon": False}
    fig.legend(handles=handles, bbox_to_anchor=(0.5, -0.02), **legend)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_mining_statistics(stats) -> plt.Figure:
    """From qlib.toy.mining_statistics: how often each method falls back for P+ and P- (left),
    and the distributions of D(R,P+), D(R,P-), D(R,N) of its picks (right)."""
    from ..toy import mining_summary  # checks the columns

    rates = mining_summary(stats)[["fallback P+ (%)", "fallback P- (%)"]]
    rates = rates.rename(columns={"fallback P+ (%)": "P+", "fallback P- (%)": "P-"}).reset_index()
    fig, (ax_fb, ax_d) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 2))
    colours, y = DISTANCE_COLOURS, "fallback rate (%)"
    rates = rates.melt(id_vars="method", var_name="member", value_name=y)
    sns.barplot(rates, x="method", y=y, hue="member", ax=ax_fb, palette=colours[:2])
    ax_fb.set(ylim=(0, 100), title="fallbacks: no candidate outside the circle")
    methods, width, handles = list(stats["method"].unique()), 0.8 / len(DISTANCES), []
    for k, ((column, label), colour) in enumerate(zip(DISTANCES.items(), colours, strict=True)):
        groups = [stats.loc[stats["method"] == m, column] for m in methods]
        at = np.arange(len(methods)) + (k - 1) * width  # side by side, like seaborn's hue
        style = {"patch_artist": True, "flierprops": {"ms": 2}, "medianprops": {"color": "0.2"}}
        boxes = ax_d.boxplot(groups, positions=at, widths=0.9 * width, **style)["boxes"]
        plt.setp(boxes, facecolor=colour)
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=colour, label=label))
    ax_d.set_xticks(range(len(methods)), methods)
    ax_d.set(xlabel="method", ylabel="distance")
    ax_d.legend(handles=handles, title="pair")
    ax_d.set_title("distances from $X^R$ of the picked members")
    fig.tight_layout()
    return fig


def _snapshot_panel(ax, history, s: int, fine, coarse, held_out, radius=1.15) -> None:
    """Snapshot `s` of a history on the unit circle; held-out points hollow, on a ring of `radius`
    (they lie on the circle too)."""
    held_out = as_numpy(held_out).astype(bool)
    snapshot = as_numpy(history.snapshots[s])
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.8", lw=1))
    points = snapshot * np.where(held_out, radius, 1.0)[:, None]
    scatter_classes(ax, points, fine, coarse, size=14, alpha=0.75, hollow=held_out)
    lim = 1.1 * radius * max(1.0, float(np.abs(snapshot).max()))
    ax.set(aspect="equal", xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[])
    entry = history.metrics[s]
    title = f"iteration {entry['iteration']}, held-out R@1 {entry['R@1']:.0f}%"
    ax.set_title(f"{method_name(history.method)}\n{title}", fontsize=10)


def _evenly_spaced(n_snapshots: int, n: int) -> list[int]:
    return np.unique(np.linspace(0, n_snapshots - 1, min(n, n_snapshots)).round()).astype(int)


def _n_snapshots(histories: dict) -> int:
    if not histories:
        raise ValueError("histories is empty; give at least one {method: ToyTrainingHistory}.")
    return min(len(h.snapshots) for h in histories.values())


def plot_toy_training_snapshots(
    histories: dict, fine, coarse, held_out, n_rows: int = 4, indices=None
) -> plt.Figure:
    """The toy embedding over training: one column per method, one row per snapshot.

    histories: {method: qlib.toy.ToyTrainingHistory}; fine, coarse, held_out (N,) of the toy.
    `indices`: the snapshots to show (default: `n_rows` evenly spaced, first to last).
    """
    n_snapshots = _n_snapshots(histories)
    rows = list(_evenly_spaced(n_snapshots, n_rows) if indices is None else indices)
    if not rows or not all(-n_snapshots <= s < n_snapshots for s in rows):
        raise ValueError(f"indices must be snapshot indices in [0, {n_snapshots}), got {indices}.")
    height = 3 * len(rows) + 0.8  # 0.8 inches for the legend below the panels
    size = (3 * len(histories), height)
    fig, axes = plt.subplots(len(rows), len(histories), figsize=size, squeeze=False)
    for j, history in enumerate(histories.values()):
        for i, s in enumerate(rows):
            _snapshot_panel(axes[i, j], history, s, fine, coarse, held_out)
    handles = class_legend(coarse, fine, hollow_label="held-out fine class (outer ring)")
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / height, 1, 1))
    return fig


def animate_toy_training(histories: dict, fine, coarse, held_out, max_frames: int = 30):
    """A FuncAnimation of the toy embeddings over training, methods side by side (at most
    `max_frames` evenly spaced snapshots); `save_figure` writes it as a GIF."""
    from matplotlib.animation import FuncAnimation

    n_snapshots = _n_snapshots(histories)
    fig, axes = plt.subplots(1, len(histories), figsize=(2.6 * len(histories), 3.1), squeeze=False)

    def draw(s):
        for ax, history in zip(axes[0], histories.values(), strict=True):
            ax.clear()
            _snapshot_panel(ax, history, s, fine, coarse, held_out)
        return []

    # Fixed margins: tight_layout would run before the first frame has titles.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.84, wspace=0.04)
    return FuncAnimation(fig, draw, frames=_evenly_spaced(n_snapshots, max_frames), blit=False)
