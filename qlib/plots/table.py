"""Table 1 (notebook 05): measured against the paper, one panel per metric."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .scheme import method_name


def plot_table1_bars(table1, metrics=("R@1", "R@2", "R@4", "R@8", "NMI")) -> plt.Figure:
    """Measured (mean ± sample std over seeds) beside the paper's numbers, one panel per metric,
    from `qlib.table.build_table1`; a method with no run has no measured bar."""
    names = list(table1["name"])
    y = np.arange(len(names))
    size = (3.2 * len(metrics), 0.45 * len(names) + 1.8)
    fig, axes = plt.subplots(1, len(metrics), figsize=size, sharey=True, squeeze=False)
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


def plot_paired_differences(comparisons, metrics=None) -> plt.Figure:
    """Paired differences a − b with their confidence intervals, one panel per metric, from
    `qlib.stats.paired_table`: a dot per seed, the mean as a tick, the t interval as a line;
    the zero line is "no difference"."""
    available = list(dict.fromkeys(comparisons["metric"]))
    metrics = available if metrics is None else list(metrics)
    if not set(metrics) <= set(available):
        missing = sorted(set(metrics) - set(available))
        raise ValueError(f"no comparisons for metrics {missing}; the comparisons hold {available}.")
    pairs = list(dict.fromkeys(zip(comparisons["a"], comparisons["b"], strict=True)))
    labels = [f"{method_name(a)} − {method_name(b)}" for a, b in pairs]
    y = np.arange(len(pairs))
    size = (3.6 * len(metrics), 0.6 * len(pairs) + 1.8)
    fig, axes = plt.subplots(1, len(metrics), figsize=size, sharey=True, squeeze=False)
    confidence = comparisons["confidence"].iloc[0] if len(comparisons) else 0.95
    for ax, metric in zip(axes[0], metrics, strict=True):
        rows = comparisons[comparisons["metric"] == metric].set_index(["a", "b"])
        ax.axvline(0.0, color="0.3", lw=1)
        for yi, pair in zip(y, pairs, strict=True):
            row = rows.loc[pair]
            seeds = list(row["differences"])
            ax.plot(seeds, [yi + 0.2] * len(seeds), "o", color="0.45", ms=4, zorder=5)
            if np.isfinite(row["low"]):
                ax.plot([row["low"], row["high"]], [yi, yi], color="tab:blue", lw=2.5, zorder=3)
            ax.plot([row["mean"]], [yi], "|", color="tab:blue", ms=14, mew=2.5, zorder=4)
            ax.text(1.01, yi, f"n={row['n']}", transform=ax.get_yaxis_transform(),
                    va="center", fontsize=7, color="0.3")  # fmt: skip
        ax.set(title=f"Δ {metric}", xlabel="points")
    axes[0, 0].set_yticks(y, labels)
    axes[0, 0].invert_yaxis()
    fig.suptitle(
        f"a − b per seed (dots), mean (tick) and {confidence:.0%} t interval (line)", fontsize=10
    )
    fig.tight_layout()
    return fig
