"""Table 1 (notebook 05): measured against the paper, one panel per metric."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


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
