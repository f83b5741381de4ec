"""Every figure of the project in one fixed style, one module per notebook topic (`scheme`:
the shared encodings). Plots draw from arrays and DataFrames; they never train or load
checkpoints. Every figure is saved from code with `save_figure` (animations too, as GIFs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.animation import Animation, PillowWriter

from ..utils import repo_root, resolve_path
from .data import (
    plot_class_counts,
    plot_coarse_fine_tree,
    plot_examples_per_coarse,
    plot_fine_examples,
)
from .dissection import plot_iteration_dissection
from .evaluation import plot_distance_histograms, plot_per_coarse, plot_retrieval_grid, plot_umap
from .mining import (
    animate_toy_training,
    plot_mining_panels,
    plot_mining_statistics,
    plot_toy_training_snapshots,
)
from .table import plot_paired_differences, plot_table1_bars
from .training import plot_training_curves

__all__ = [
    "FIGURES_DIR",
    "animate_toy_training",
    "figure_slider",
    "figures_folder",
    "plot_class_counts",
    "plot_coarse_fine_tree",
    "plot_distance_histograms",
    "plot_examples_per_coarse",
    "plot_fine_examples",
    "plot_iteration_dissection",
    "plot_mining_panels",
    "plot_mining_statistics",
    "plot_paired_differences",
    "plot_per_coarse",
    "plot_retrieval_grid",
    "plot_table1_bars",
    "plot_toy_training_snapshots",
    "plot_training_curves",
    "plot_umap",
    "save_figure",
    "set_style",
]

FIGURES_DIR = repo_root() / "figures"


def set_style() -> None:
    """The project's one plotting style (applied on import)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="tab10")
    plt.rcParams.update({"figure.dpi": 120, "savefig.dpi": 120, "savefig.bbox": "tight"})


def save_figure(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save a figure as `<folder>/<name>` (PNG unless `name` has a suffix), or a matplotlib
    animation as a GIF (4 frames/s, by Pillow: no external program) and close its figure;
    folder defaults to `figures/`. Returns the path."""
    folder = Path(folder) if folder is not None else FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    animation = isinstance(fig, Animation)
    path = folder / (name if Path(name).suffix else f"{name}.{'gif' if animation else 'png'}")
    if animation:
        fig.save(path, writer=PillowWriter(fps=4), dpi=80)
        plt.close(fig._fig)
    else:
        fig.savefig(path)
    return path


def figures_folder(run_root: str | Path, smoke: bool, figures_dir: str | Path = "") -> Path:
    """Where a notebook saves its figures: `figures_dir` when given, else `<run_root>/figures`
    at smoke size (tests never overwrite the committed figures), else the repository's figures/."""
    if str(figures_dir):
        return resolve_path(figures_dir)
    return resolve_path(run_root) / "figures" if smoke else FIGURES_DIR


def figure_slider(draw, slider) -> None:
    """Show the figure `draw(slider.value)` above the ipywidgets `slider`, redrawn in place when
    the slider moves.

    Not `ipywidgets.interact`: its Output widget intermittently hangs papermill (nbclient#312).
    A plain display updated through its display id never waits on the slider in a headless run.
    """
    from IPython.display import display

    def render(value):
        fig = draw(value)
        plt.close(fig)  # shown through the display handle only, not again at the cell's end
        return fig

    handle = display(render(slider.value), display_id=True)
    if handle is not None:  # None outside IPython: nothing to update
        slider.observe(lambda change: handle.update(render(change["new"])), names="value")
    display(slider)


set_style()
