"""Every figure of the project: one style, one save helper. Plots draw from arrays and
DataFrames; they never train or load checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .utils import repo_root, resolve_path

FIGURES_DIR = repo_root() / "figures"
STYLE = {"context": "notebook", "style": "whitegrid", "palette": "tab10"}
DPI = 120


def set_style() -> None:
    """The project's one plotting style."""
    sns.set_theme(**STYLE)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, name: str, folder: str | Path | None = None) -> Path:
    """Save `fig` as `<folder>/<name>` (PNG unless `name` has a suffix); folder defaults to
    `figures/`. Returns the path."""
    folder = Path(folder) if folder is not None else FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if Path(name).suffix else f"{name}.png")
    fig.savefig(path)
    return path


def figures_folder(run_root: str | Path, smoke: bool, figures_dir: str | Path = "") -> Path:
    """Where a notebook saves its figures: `figures_dir` when given, else `<run_root>/figures`
    at smoke size (tests never overwrite the committed figures), else the repository's figures/."""
    if str(figures_dir):
        return resolve_path(figures_dir)
    return resolve_path(run_root) / "figures" if smoke else FIGURES_DIR


set_style()

# --- data (notebook 01) ---

SPLIT_COLORS = {"train": "tab:blue", "test": "tab:orange"}


def _load_thumbnail(path: str, side: int = 96):
    """An image file -> RGB array, shrunk so that its long side is at most `side` pixels."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)


def plot_class_counts(manifest) -> plt.Figure:
    """Images per fine class (bars coloured by split) and per coarse class (stacked by split)."""
    fig, (ax_fine, ax_coarse) = plt.subplots(
        1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2, 1]}
    )
    per_fine = manifest.groupby(["fine", "split"]).size().reset_index(name="images")
    for split, color in SPLIT_COLORS.items():
        part = per_fine[per_fine["split"] == split]
        ax_fine.bar(part["fine"], part["images"], width=1.0, color=color, label=split)
    ax_fine.set(xlabel="fine class id", ylabel="images", title="Images per fine class")
    ax_fine.legend(title="split", loc="lower right", framealpha=0.9)
    per_coarse = manifest.groupby(["coarse_name", "split"]).size().unstack(fill_value=0)
    per_coarse = per_coarse.reindex(columns=[s for s in SPLIT_COLORS if s in per_coarse.columns])
    per_coarse.plot.barh(
        stacked=True, ax=ax_coarse, color=[SPLIT_COLORS[s] for s in per_coarse.columns]
    )
    ax_coarse.invert_yaxis()
    ax_coarse.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_coarse.set(xlabel="images", ylabel="", title="Images per coarse class")
    ax_coarse.tick_params(axis="y", labelsize=8 if len(per_coarse) > 12 else 10)
    fig.tight_layout()
    return fig


def plot_coarse_fine_tree(manifest, max_leaves: int = 64) -> plt.Figure:
    """The coarse -> fine hierarchy. Up to `max_leaves` fine classes: a tree, leaves coloured by
    split; more: fine classes per coarse class, stacked by split (a 196-leaf tree is
    unreadable). Coarse classes with a single training fine class (they cannot anchor) in red."""
    pairs = manifest[["coarse_name", "fine", "fine_name", "split"]].drop_duplicates("fine")
    pairs = pairs.assign(_test=pairs["split"] == "test").sort_values(
        ["coarse_name", "_test", "fine"]
    )
    n_train_fine = pairs[pairs["split"] == "train"].groupby("coarse_name")["fine"].nunique()
    lonely = set(n_train_fine.index[n_train_fine == 1])
    coarse_names = sorted(pairs["coarse_name"].unique())
    if len(pairs) > max_leaves:
        counts = pairs.groupby(["coarse_name", "split"]).size().unstack(fill_value=0)
        counts = counts.reindex(
            index=coarse_names, columns=[s for s in SPLIT_COLORS if s in counts.columns]
        )
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(counts) + 1.2))
        counts.plot.barh(stacked=True, ax=ax, color=[SPLIT_COLORS[s] for s in counts.columns])
        ax.invert_yaxis()
        for label in ax.get_yticklabels():
            if label.get_text() in lonely:
                label.set_color("red")
        ax.set(
            xlabel="fine classes",
            ylabel="coarse class",
            title="Fine classes per coarse class (red: a single training fine class)",
        )
        fig.tight_layout()
        return fig
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(pairs) + 1.0))
    y = 0
    for coarse_name in coarse_names:
        leaves = pairs[pairs["coarse_name"] == coarse_name]
        leaf_ys = list(range(y, y + len(leaves)))
        node_y = sum(leaf_ys) / len(leaf_ys)
        color = "red" if coarse_name in lonely else "black"
        ax.text(-0.05, node_y, coarse_name, ha="right", va="center", color=color, fontsize=9)
        for leaf_y, leaf in zip(leaf_ys, leaves.itertuples(), strict=True):
            ax.plot([0, 1], [node_y, leaf_y], color="0.6", lw=0.8)
            ax.text(
                1.05,
                leaf_y,
                leaf.fine_name,
                va="center",
                fontsize=7,
                color=SPLIT_COLORS[leaf.split],
            )
        y += len(leaves) + 1
    ax.set_xlim(-0.8, 2.2)
    ax.set_ylim(y, -1)
    ax.axis("off")
    ax.set_title("Coarse -> fine classes (blue: train, orange: test; red: cannot anchor)")
    return fig


def plot_examples_per_coarse(manifest, n_columns: int = 8, seed: int = 0) -> plt.Figure:
    """One row per coarse class, one image from each of up to `n_columns` of its fine classes
    (training classes first): what separates coarse classes, and how close fine ones are."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse_names = sorted(manifest["coarse_name"].unique())
    fig, axes = plt.subplots(
        len(coarse_names),
        n_columns,
        squeeze=False,
        figsize=(1.3 * n_columns, 1.4 * len(coarse_names)),
    )
    for row, coarse_name in zip(axes, coarse_names, strict=True):
        part = manifest[manifest["coarse_name"] == coarse_name]
        part = part.assign(_test=part["split"] == "test").sort_values(["_test", "fine"])
        fines = part["fine"].unique()[:n_columns]
        for ax, fine in zip(row, list(fines) + [None] * n_columns, strict=False):
            ax.axis("off")
            if fine is None:
                continue
            rows = part[part["fine"] == fine]
            pick = rows.iloc[int(rng.integers(len(rows)))]
            ax.imshow(_load_thumbnail(pick["path"]), interpolation="nearest")
            ax.set_title(str(pick["fine_name"])[:18], fontsize=6, color=SPLIT_COLORS[pick["split"]])
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
    import numpy as np

    rng = np.random.default_rng(seed)
    part = manifest[manifest["coarse_name"] == coarse_name]
    if part.empty:
        raise ValueError(f"coarse class {coarse_name!r} is not in the manifest.")
    fines = sorted(part["fine"].unique())[:n_fine]
    fig, axes = plt.subplots(
        len(fines), n_per_fine, squeeze=False, figsize=(1.3 * n_per_fine, 1.35 * len(fines))
    )
    for row, fine in zip(axes, fines, strict=True):
        rows = part[part["fine"] == fine]
        picks = rows.iloc[rng.permutation(len(rows))[:n_per_fine]]
        for ax in row:
            ax.axis("off")
        for ax, pick in zip(row, picks.itertuples(), strict=False):
            ax.imshow(_load_thumbnail(pick.path), interpolation="nearest")
        row[0].set_title(str(rows["fine_name"].iloc[0])[:30], fontsize=7, loc="left")
    fig.suptitle(f"Fine classes of the coarse class {coarse_name!r}", fontsize=10)
    fig.tight_layout()
    return fig


# --- toy (notebook 02) ---

# Fine classes are told apart by marker shape (their rank inside their coarse class), coarse
# classes by colour, as in the paper's Fig. 2.
TOY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
# Roles of a quadruplet's members: label, colour of its line from X^R.
TOY_ROLES = {
    "R": ("$X^R$", "black"),
    "P+": ("$X^{P+}$", "tab:green"),
    "P-": ("$X^{P-}$", "tab:orange"),
    "N": ("$X^N$", "tab:red"),
}
TOY_METHOD_TITLES = {
    "method1": "Method 1 (closest to $X^N$)",
    "method2": "Method 2 (closest to $X^R$)",
    "random": "Random",
    "triplet": "Triplet (random)",
}


def _toy_numpy(x):
    import numpy as np

    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _toy_fine_rank(fine, coarse):
    """Rank (0, 1, ...) of each point's fine class among the fine classes of its coarse class."""
    import numpy as np

    rank = np.zeros(len(fine), dtype=int)
    for c in np.unique(coarse):
        in_coarse = coarse == c
        _, rank[in_coarse] = np.unique(fine[in_coarse], return_inverse=True)
    return rank


def _toy_coarse_colours(coarse) -> dict[int, tuple]:
    import numpy as np

    classes = np.unique(coarse)
    palette = sns.color_palette("tab10" if len(classes) <= 10 else "husl", len(classes))
    return {int(c): palette[i] for i, c in enumerate(classes)}


def _toy_scatter(
    ax,
    points,
    fine,
    coarse,
    *,
    size=28,
    alpha=0.8,
    hollow=None,
    scale=None,
    edgecolor="face",
    edgewidth=0.3,
    rank=None,
    colours=None,
):
    """Scatter (N, 2) points: colour = coarse class, marker = fine class inside its coarse.
    `hollow` (N,) bool draws those points unfilled; `scale` (N,) multiplies their coordinates;
    `edgecolor`/`edgewidth` outline the filled ones; `rank` (N,) and `colours` {coarse: colour}
    come from the whole set when `points` is a subset of it."""
    import numpy as np

    points, fine, coarse = _toy_numpy(points), _toy_numpy(fine), _toy_numpy(coarse)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}.")
    if scale is not None:
        points = points * np.asarray(scale, dtype=float)[:, None]
    hollow = np.zeros(len(points), bool) if hollow is None else _toy_numpy(hollow).astype(bool)
    rank = _toy_fine_rank(fine, coarse) if rank is None else _toy_numpy(rank)
    colours = _toy_coarse_colours(coarse) if colours is None else colours
    point_colours = np.array([colours[int(c)] for c in coarse]).reshape(len(coarse), -1)
    # One scatter call per marker (and fill) keeps animations fast.
    for r in np.unique(rank):
        for is_hollow in (False, True):
            sel = (rank == r) & (hollow == is_hollow)
            if sel.any():
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=size,
                    marker=TOY_MARKERS[r % len(TOY_MARKERS)],
                    alpha=alpha,
                    facecolors="none" if is_hollow else point_colours[sel],
                    edgecolors=point_colours[sel] if is_hollow else edgecolor,
                    linewidths=0.9 if is_hollow else edgewidth,
                )


def _toy_legend_handles(fine, coarse, hollow_label: str | None = None) -> list:
    from matplotlib.lines import Line2D

    fine, coarse = _toy_numpy(fine), _toy_numpy(coarse)
    rank = _toy_fine_rank(fine, coarse)
    handles = [
        Line2D([], [], ls="", marker="o", color=colour, label=f"coarse class {c}")
        for c, colour in _toy_coarse_colours(coarse).items()
    ]
    handles += [
        Line2D(
            [],
            [],
            ls="",
            marker=TOY_MARKERS[r % len(TOY_MARKERS)],
            color="grey",
            label=f"fine class {r + 1} of its coarse",
        )
        for r in range(int(rank.max()) + 1)
    ]
    if hollow_label:
        handles.append(
            Line2D([], [], ls="", marker="o", mfc="none", color="grey", label=hollow_label)
        )
    return handles


def plot_mining_panels(
    points,
    fine,
    coarse,
    quad_per_method: dict,
    fallbacks_per_method: dict | None = None,
    panel_size: float = 4.6,
    zoom: bool = True,
) -> plt.Figure:
    """Fig. 2 reproduced: one panel per method (e.g. Method 1, Method 2, Random) on (N, 2) points.

    quad_per_method: {method: (R, P+, P-, N) indices into points}. Each panel shows every point
    (colour = coarse, shape = fine), X^R, X^N, the circle of radius D(R, N) around X^R, and the
    X^{P+}, X^{P-} the method picked, joined to X^R by arrows; Method 1 panels also join P+ and
    P- to X^N (it picks the candidates closest to X^N). fallbacks_per_method marks a fallback.
    `zoom`: show the region around the quadruplets (same limits in every panel), not all points.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    points, fine, coarse = _toy_numpy(points), _toy_numpy(fine), _toy_numpy(coarse)
    if not quad_per_method:
        raise ValueError("quad_per_method is empty; give at least one {method: (R, P+, P-, N)}.")
    methods = list(quad_per_method)
    if zoom:  # the members of every quadruplet and the circles, with room around them
        corners = []
        for method, quad in quad_per_method.items():
            members = points[[int(i) for i in quad]]
            radius = 0.0 if method == "random" else np.linalg.norm(members[3] - members[0])
            corners += [members, members[:1] - radius, members[:1] + radius]
        corners = np.concatenate(corners)
    else:
        corners = points
    margin = (0.25 if zoom else 0.05) * (corners.max(0) - corners.min(0)).max()
    lower, upper = corners.min(0) - margin, corners.max(0) + margin
    fig, axes = plt.subplots(
        1, len(methods), figsize=(panel_size * len(methods), panel_size + 0.9), squeeze=False
    )
    for ax, method in zip(axes[0], methods, strict=True):
        quad = [int(i) for i in quad_per_method[method]]
        if len(quad) != 4:
            raise ValueError(f"quadruplet of {method!r} must be (R, P+, P-, N), got {quad}.")
        _toy_scatter(ax, points, fine, coarse, size=26, alpha=0.35)
        ref = points[quad[0]]
        if method != "random":  # Random draws N uniformly: no hardest negative, no circle
            radius = float(np.linalg.norm(points[quad[3]] - ref))
            ax.add_patch(
                plt.Circle(ref, radius, fill=False, ls="--", lw=1.2, color="tab:red", alpha=0.8)
            )
        for role, index in zip(("P+", "P-", "N"), quad[1:], strict=True):
            colour = TOY_ROLES[role][1]
            ax.annotate(
                "",
                xy=points[index],
                xytext=ref,
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": colour,
                    "lw": 1.8,
                    "shrinkA": 4,
                    "shrinkB": 5,
                },
            )
            if method == "method1" and role != "N":
                ax.plot(
                    *zip(points[quad[3]], points[index], strict=True), ls=":", lw=1.4, color=colour
                )
        chosen = np.asarray(quad)
        _toy_scatter(
            ax,
            points[chosen],
            fine[chosen],
            coarse[chosen],
            size=170,
            alpha=1.0,
            edgecolor="black",
            edgewidth=1.6,
            rank=_toy_fine_rank(fine, coarse)[chosen],
            colours=_toy_coarse_colours(coarse),
        )
        for role, index in zip(TOY_ROLES, quad, strict=True):
            ax.annotate(
                TOY_ROLES[role][0],
                points[index],
                xytext=(8, 8),
                textcoords="offset points",
                fontsize=13,
                weight="bold",
                color=TOY_ROLES[role][1],
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
            )
        title = TOY_METHOD_TITLES.get(method, method)
        if fallbacks_per_method is not None:
            fell = [
                name
                for name, f in zip(("P+", "P-"), fallbacks_per_method[method], strict=True)
                if f
            ]
            if fell:
                title += "\nfallback: " + ", ".join(fell) + " (farthest inside the circle)"
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlim(lower[0], upper[0])
        ax.set_ylim(lower[1], upper[1])
        ax.set_xticks([])
        ax.set_yticks([])
    handles = _toy_legend_handles(fine, coarse)
    handles += [
        Line2D([], [], color="tab:red", ls="--", label="circle of radius D(R, N) (Methods 1, 2)"),
        Line2D([], [], color="tab:green", marker=">", label="R → P+ (same fine class)"),
        Line2D(
            [],
            [],
            color="tab:orange",
            marker=">",
            label="R → P- (same coarse class, other fine class)",
        ),
        Line2D(
            [],
            [],
            color="tab:red",
            marker=">",
            label="R → N (other coarse; hardest in Methods 1, 2)",
        ),
    ]
    if "method1" in methods:
        handles.append(Line2D([], [], color="grey", ls=":", label="Method 1: distance to N"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=4,
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_mining_statistics(stats) -> plt.Figure:
    """Left: how often each method falls back for P+ and P- (no candidate outside the circle).
    Right: the distributions of D(R,P+), D(R,P-), D(R,N) each method's picks produce.
    stats: the DataFrame of qlib.toy.mining_statistics (one row per method and anchor)."""
    needed = {"method", "d_rpp", "d_rpn", "d_rn", "fallback_pp", "fallback_pn"}
    if not needed <= set(stats.columns):
        raise ValueError(
            f"stats must have the columns {sorted(needed)}, got {list(stats.columns)}."
        )
    fig, (ax_fb, ax_d) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 2))
    rates = (
        stats.groupby("method", sort=False)[["fallback_pp", "fallback_pn"]]
        .mean()
        .rename(columns={"fallback_pp": "P+", "fallback_pn": "P-"})
        .mul(100)
        .reset_index()
        .melt(id_vars="method", var_name="member", value_name="fallback rate (%)")
    )
    sns.barplot(
        rates,
        x="method",
        y="fallback rate (%)",
        hue="member",
        ax=ax_fb,
        palette=[TOY_ROLES["P+"][1], TOY_ROLES["P-"][1]],
    )
    ax_fb.set_ylim(0, 100)
    ax_fb.set_title("fallbacks: no candidate outside the circle")
    distances = stats.melt(
        id_vars="method",
        value_vars=["d_rpp", "d_rpn", "d_rn"],
        var_name="pair",
        value_name="distance",
    ).replace({"pair": {"d_rpp": "D(R, P+)", "d_rpn": "D(R, P-)", "d_rn": "D(R, N)"}})
    sns.boxplot(
        distances,
        x="method",
        y="distance",
        hue="pair",
        ax=ax_d,
        fliersize=2,
        palette=[TOY_ROLES[r][1] for r in ("P+", "P-", "N")],
    )
    ax_d.set_title("distances from $X^R$ of the picked members")
    fig.tight_layout()
    return fig


def _toy_snapshot_frame(ax, snapshot, fine, coarse, held_out, title, held_out_radius=1.15):
    import numpy as np

    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.8", lw=1))
    scale = np.where(_toy_numpy(held_out), held_out_radius, 1.0)
    _toy_scatter(ax, snapshot, fine, coarse, size=14, alpha=0.75, hollow=held_out, scale=scale)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    lim = 1.1 * max(held_out_radius, float(np.abs(snapshot).max()) * held_out_radius)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xticks([])
    ax.set_yticks([])


def _toy_snapshot_rows(n_snapshots: int, n_rows: int):
    import numpy as np

    return np.unique(np.linspace(0, n_snapshots - 1, min(n_rows, n_snapshots)).round().astype(int))


def plot_toy_training_snapshots(
    histories: dict,
    fine,
    coarse,
    held_out,
    n_rows: int = 4,
    held_out_radius: float = 1.15,
    indices=None,
) -> plt.Figure:
    """Embeddings over training: one column per method, one row per time (first to last).

    histories: {method: ToyTrainingHistory} (snapshot_steps (S,), snapshots (S, N, 2),
    recall_at_1 (S,)); fine, coarse, held_out (N,) of the toy. Training points lie on the unit
    circle; held-out points are drawn hollow on a ring of radius `held_out_radius` so that
    both stay visible (their embedding is on the unit circle too). `indices`: the snapshot
    indices to show as rows (default: `n_rows` evenly spaced from the first to the last).
    """
    if not histories:
        raise ValueError("histories is empty; give at least one {method: ToyTrainingHistory}.")
    methods = list(histories)
    n_snapshots = min(len(h.snapshot_steps) for h in histories.values())
    rows = list(_toy_snapshot_rows(n_snapshots, n_rows) if indices is None else indices)
    if not rows or not all(-n_snapshots <= s < n_snapshots for s in rows):
        raise ValueError(f"indices must be snapshot indices in [0, {n_snapshots}), got {indices}.")
    legend_height = 0.8  # inches below the panels
    height = 3 * len(rows) + legend_height
    fig, axes = plt.subplots(
        len(rows), len(methods), figsize=(3 * len(methods), height), squeeze=False
    )
    for j, method in enumerate(methods):
        h = histories[method]
        for i, s in enumerate(rows):
            title = (
                f"{TOY_METHOD_TITLES.get(method, method)}\nstep {int(h.snapshot_steps[s])}, "
                f"held-out R@1 {100 * h.recall_at_1[s]:.0f}%"
            )
            _toy_snapshot_frame(
                axes[i, j], h.snapshots[s], fine, coarse, held_out, title, held_out_radius
            )
    fig.legend(
        handles=_toy_legend_handles(fine, coarse, "held-out fine class (outer ring)"),
        loc="lower center",
        ncol=4,
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    return fig


def plot_toy_training_curves(curves, smooth: int = 10) -> plt.Figure:
    """Loss parts, mean distances, fallback rates and held-out Recall@1 over training.

    curves: the long DataFrame of qlib.toy.training_curves (method, step, loss parts, fallback
    rates, recall_at_1). Per-step values are smoothed by a rolling mean of `smooth` steps.
    """
    if "method" not in curves or "step" not in curves:
        raise ValueError(
            "curves must have the columns 'method' and 'step' (qlib.toy.training_curves)."
        )
    panels = [
        ("loss", "total loss (eq. 6; triplet: eq. 2)"),
        ("joint", "joint: distance terms of eq. 5"),
        ("global", "global: eq. 3"),
        ("classification", "classification: eq. 4"),
        ("distances", "mean D(R,P+) —, D(R,P-) - -, D(R,N) ···"),
        ("fallback", "fallback rate (%) P+ —, P- - -"),
        ("recall_at_1", "held-out Recall@1 (%)"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    colours = dict(zip(curves["method"].unique(), sns.color_palette("tab10"), strict=False))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for method, frame in curves.groupby("method", sort=False):
            frame = frame.sort_values("step")
            colour = colours[method]
            label = TOY_METHOD_TITLES.get(method, method).split(" (")[0]

            def line(col, ls="-", label=label, frame=frame, colour=colour, ax=ax, scale=1.0):
                if col in frame and frame[col].notna().any():
                    values = frame[["step", col]].dropna()
                    y = values[col].rolling(smooth, min_periods=1).mean() * scale
                    ax.plot(values["step"], y, ls=ls, color=colour, label=label, lw=1.5)

            if key == "distances":
                line("d_rpp")
                line("d_rpn", "--", None)
                line("d_rn", ":", None)
            elif key == "fallback":
                line("fallback_pp", scale=100)
                line("fallback_pn", "--", None, scale=100)
            elif key == "recall_at_1":
                values = frame[["step", "recall_at_1"]].dropna()
                ax.plot(
                    values["step"],
                    100 * values["recall_at_1"],
                    marker="o",
                    ms=3,
                    color=colour,
                    label=label,
                )
            else:
                line(key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    axes[0, 0].set_yscale("log")
    axes.flat[-1].axis("off")
    handles, labels = axes.flat[-2].get_legend_handles_labels()
    axes.flat[-1].legend(handles, labels, loc="center", frameon=False, title="method")
    fig.tight_layout()
    return fig


def animate_toy_training(
    histories: dict,
    fine,
    coarse,
    held_out,
    max_frames: int = 30,
    panel_size: float = 2.6,
    held_out_radius: float = 1.15,
):
    """A matplotlib FuncAnimation of the embeddings over training, methods side by side
    (at most `max_frames` frames, evenly spaced snapshots). Save it with `save_animation`."""
    from matplotlib.animation import FuncAnimation

    if not histories:
        raise ValueError("histories is empty; give at least one {method: ToyTrainingHistory}.")
    methods = list(histories)
    n_snapshots = min(len(h.snapshot_steps) for h in histories.values())
    frames = _toy_snapshot_rows(n_snapshots, max_frames)
    fig, axes = plt.subplots(
        1, len(methods), figsize=(panel_size * len(methods), panel_size + 0.5), squeeze=False
    )

    def draw(s):
        for ax, method in zip(axes[0], methods, strict=True):
            h = histories[method]
            ax.clear()
            title = (
                f"{TOY_METHOD_TITLES.get(method, method).split(' (')[0]}\n"
                f"step {int(h.snapshot_steps[s])}, R@1 {100 * h.recall_at_1[s]:.0f}%"
            )
            _toy_snapshot_frame(ax, h.snapshots[s], fine, coarse, held_out, title, held_out_radius)
        return []

    # Fixed margins: tight_layout would run before the first frame has titles.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.84, wspace=0.04)
    animation = FuncAnimation(fig, draw, frames=frames, blit=False)
    return animation


def save_animation(
    animation, name: str, folder: str | Path | None = None, fps: int = 4, dpi: int = 80
) -> Path:
    """Save a matplotlib animation as `<folder>/<name>` (GIF unless `name` has a suffix), with
    Pillow (no external binary); folder defaults to figures/. Returns the path."""
    from matplotlib.animation import PillowWriter

    folder = Path(folder) if folder is not None else FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if Path(name).suffix else f"{name}.gif")
    animation.save(path, writer=PillowWriter(fps=fps), dpi=dpi)
    figure = getattr(animation, "_fig", None)  # FuncAnimation keeps its figure there
    if figure is not None:
        plt.close(figure)
    return path


# --- training (notebook 03) ---

TRAINING_LOSS_PARTS = ("loss", "joint", "global", "classification", "triplet")
TRAINING_DISTANCES = {"d_rpp": "D(R, P+)", "d_rpn": "D(R, P-)", "d_rn": "D(R, N)"}


def _smoothed(series, window: int):
    return series.rolling(window, min_periods=1).mean()


def plot_training_curves(log, metrics=None, title: str = "", smooth: int | None = None):
    """Four panels over the iterations of one run, from its log.csv (DataFrame) and metrics.json
    (list of dicts): the loss parts, the mean distances D(R,P+), D(R,P-), D(R,N), the share of
    fallback picks (quadruplet methods), and test Recall@1 / NMI at each evaluation. Curves are
    running means over `smooth` iterations (default: about 1/20 of the run)."""
    import numpy as np

    if len(log) == 0:
        raise ValueError("the training log is empty; expected at least one iteration.")
    window = smooth or max(1, len(log) // 20)
    x = log["iteration"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    ax_loss, ax_dist, ax_fallback, ax_metrics = axes.ravel()

    for part in TRAINING_LOSS_PARTS:
        if part in log and log[part].notna().any():
            ax_loss.plot(x, _smoothed(log[part], window), label=part, lw=2 if part == "loss" else 1)
    ax_loss.set(title="loss parts", xlabel="iteration", ylabel="value")
    ax_loss.legend(fontsize="small")

    for column, label in TRAINING_DISTANCES.items():
        if column in log and log[column].notna().any():
            ax_dist.plot(x, _smoothed(log[column], window), label=label)
    ax_dist.set(title="mean distances in the batch", xlabel="iteration", ylabel="distance")
    ax_dist.legend(fontsize="small")

    has_fallbacks = "fallback_pos" in log and log["fallback_pos"].notna().any()
    if has_fallbacks:
        ax_fallback.plot(x, _smoothed(log["fallback_pos"], window), label="P+ fallback")
        ax_fallback.plot(x, _smoothed(log["fallback_neg"], window), label="P- fallback")
        ax_fallback.set_ylim(-0.02, 1.02)
        ax_fallback.legend(fontsize="small")
    else:
        ax_fallback.text(
            0.5,
            0.5,
            "no fallbacks\n(not a hypersphere method)",
            ha="center",
            va="center",
            transform=ax_fallback.transAxes,
        )
    ax_fallback.set(title="share of picks with no candidate outside D(R, N)", xlabel="iteration")

    if metrics:
        its = np.array([m["iteration"] for m in metrics])
        for key in ("R@1", "NMI"):
            ax_metrics.plot(its, [m[key] for m in metrics], marker="o", label=key)
        ax_metrics.legend(fontsize="small")
    ax_metrics.set(title="test split", xlabel="iteration", ylabel="percent")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- evaluation (notebooks 04, 05) ---


def plot_umap(xy, coarse, fine, coarse_names: dict | None = None, title: str = "") -> plt.Figure:
    """Scatter of 2-D coordinates (N, 2): colour = coarse class, marker = fine class within its
    coarse class, each fine class's id written at its centroid."""
    import numpy as np

    xy, coarse, fine = np.asarray(xy), np.asarray(coarse), np.asarray(fine)
    markers = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
    coarse_ids = np.unique(coarse)
    colours = sns.color_palette("tab10" if len(coarse_ids) <= 10 else "tab20", len(coarse_ids))
    fig, ax = plt.subplots(figsize=(8, 7))
    for colour, c in zip(colours, coarse_ids, strict=True):
        for j, f in enumerate(np.unique(fine[coarse == c])):
            points = xy[(coarse == c) & (fine == f)]
            label = (coarse_names or {}).get(int(c), f"coarse {c}") if j == 0 else None
            ax.scatter(
                *points.T,
                s=12,
                color=colour,
                marker=markers[j % len(markers)],
                alpha=0.7,
                label=label,
            )
            if len(np.unique(fine)) <= 100:
                ax.annotate(
                    str(f), points.mean(axis=0), fontsize=7, ha="center", va="center", alpha=0.9
                )
    ax.set(xticks=[], yticks=[], title=title or "UMAP of the test embeddings")
    ax.legend(
        title="coarse class (colour); marker and number: fine class",
        fontsize=8,
        title_fontsize=8,
        markerscale=1.5,
        loc="best",
    )
    return fig


def plot_retrieval_grid(query_images, neighbor_images, correct, titles=None) -> plt.Figure:
    """Queries (n, H, W, 3) in the first column, their K nearest neighbours (n, K, H, W, 3) beside
    them; a neighbour's border is green when it shares the query's fine class (`correct` (n, K)),
    red when not."""
    import numpy as np

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
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    fig.tight_layout()
    fig.suptitle(
        "Retrieval: query, then nearest neighbours (green = same fine class, red = not)", y=1.01
    )
    return fig


def plot_distance_histograms(stages: dict) -> plt.Figure:
    """One panel per stage (e.g. {"before training": df, "after training": df}), each with the
    histograms of D(R,P+), D(R,P-), D(R,N) of a selection (`qlib.evaluate.selection_distances`)."""
    import numpy as np

    labels = {"d_rpp": "D(R,P+)", "d_rpn": "D(R,P-)", "d_rn": "D(R,N)"}
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for ax, (stage, distances) in zip(axes[0], stages.items(), strict=True):
        # Each panel its own range (an untrained network's distances are far smaller), the
        # same bins for its three histograms.
        top = float(distances[list(labels)].to_numpy().max())
        bins = np.linspace(0.0, top * 1.02 + 1e-9, 31)
        for column, label in labels.items():
            sns.histplot(
                distances[column],
                ax=ax,
                label=label,
                stat="density",
                bins=bins,
                element="step",
                alpha=0.3,
            )
        ax.set(title=stage, xlabel="Euclidean distance to the anchor R")
        ax.legend()
    return fig


def plot_per_coarse(per_coarse, metrics=("R@1", "coarse_R@1")) -> plt.Figure:
    """Grouped bars of some metrics per coarse class (`qlib.evaluate.per_coarse_metrics`):
    by default Recall@1 (same fine class) beside coarse Recall@1 (same coarse class)."""
    import numpy as np

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


def plot_table1_bars(table1, metrics=("R@1", "R@2", "R@4", "R@8", "NMI")) -> plt.Figure:
    """Measured (mean ± sample std over seeds) beside the paper's numbers, one panel per metric,
    from `qlib.table.build_table1`; a method with no run has no measured bar."""
    import numpy as np

    names = list(table1["name"])
    y = np.arange(len(names))
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(3.2 * len(metrics), 0.45 * len(names) + 1.8),
        sharey=True,
        squeeze=False,
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        ax.barh(y - 0.2, table1[f"{metric}_paper"], height=0.4, color="0.7", label="paper")
        std = table1[f"{metric}_std"].fillna(0.0)
        ax.barh(y + 0.2, table1[metric], height=0.4, xerr=std, color="tab:blue", label="measured")
        for yi, value in zip(y, table1[metric], strict=True):
            if not np.isfinite(value):
                ax.text(1, yi + 0.2, "no run", va="center", fontsize=7, color="tab:red")
        ax.set(title=metric, xlabel="%")
    axes[0, 0].set_yticks(y, names)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(loc="lower right", fontsize=8)
    return fig
