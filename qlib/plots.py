"""Every figure of the project: one style, one save helper. Plots draw from arrays and
DataFrames; they never train or load checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .utils import repo_root

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


set_style()

# --- data (notebook 01) ---

# --- toy (notebook 02) ---

# --- training (notebook 03) ---

# --- evaluation (notebooks 04, 05) ---
