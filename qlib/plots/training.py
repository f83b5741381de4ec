"""Training curves (notebooks 02 and 03): one plotter for every log in `qlib.logs`' schema,
the image trainer's `log.csv` and the toy trainer's DataFrame alike."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..logs import DISTANCES, LOSS_PARTS
from .scheme import DISTANCE_COLOURS
from .scheme import DISTANCES as DISTANCE_LABELS

LINE_STYLES = ("-", "--", ":", "-.")
FALLBACKS = {"fallback_pos": "P+", "fallback_neg": "P-"}
EVALUATIONS = {"R@1": "Recall@1", "NMI": "NMI"}
# Distances and fallbacks take the colour of their quadruplet member, as in every figure.
SERIES_COLOURS = dict(zip([*DISTANCES, *FALLBACKS], DISTANCE_COLOURS * 2, strict=False))


def _as_runs(value) -> dict:
    """One run's value -> {"": value}; a {label: value} mapping of several runs unchanged."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else {"": value}


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].notna().any()


def _panels(logs: dict, evaluations: dict) -> list[tuple[str, dict[str, str]]]:
    """(title, {column: label}) per panel: the loss parts present (one panel per part when
    several runs overlay), the distances, the fallbacks, the evaluations."""
    parts = [p for p in LOSS_PARTS if any(_has(log, p) for log in logs.values())]
    if len(logs) == 1:
        panels = [("loss parts", {p: p for p in parts})]
    else:
        panels = [(f"loss part: {p}", {p: p}) for p in parts]
    panels.append(("mean distances in the batch", {d: DISTANCE_LABELS[d] for d in DISTANCES}))
    panels.append(("picks with no candidate outside D(R, N) (%)", FALLBACKS))
    present = {k for entries in evaluations.values() for e in entries for k in e}
    shown = {k: v for k, v in EVALUATIONS.items() if k in present}
    panels.append((f"{', '.join(shown.values()) or 'evaluations'} (%)", shown))
    return panels


def _draw(ax, frame: pd.DataFrame, column: str, window: int, **style) -> bool:
    """A running mean of `column` over `window` iterations; False when the column is empty."""
    if not _has(frame, column):
        return False
    values = frame[["iteration", column]].dropna()
    scale = 100.0 if column in FALLBACKS else 1.0
    y = values[column].astype(float).rolling(window, min_periods=1).mean() * scale
    ax.plot(values["iteration"], y, **style)
    return True


def plot_training_curves(log, metrics=None, title: str = "", smooth: int | None = None):
    """Loss parts, mean distances D(R,P+), D(R,P-), D(R,N), the share of fallback picks and the
    evaluations (Recall@1, NMI) over the iterations.

    log: a DataFrame in `qlib.logs`' schema, or {label: log} to overlay runs; metrics: that
    run's metrics.json entries, or {label: entries}. Per-iteration values are running means
    over `smooth` iterations (default: about 1/20 of the run).
    """
    logs, evaluations = _as_runs(log), _as_runs(metrics)
    if not logs or any(len(frame) == 0 for frame in logs.values()):
        raise ValueError("a training log is empty; expected at least one iteration.")
    if any("iteration" not in frame for frame in logs.values()):
        raise ValueError("a log has no 'iteration' column; expected qlib.logs.LOG_COLUMNS.")
    if set(evaluations) - set(logs):
        raise ValueError("metrics must be keyed like the logs: one run, or the same {label: ...}.")
    panels = _panels(logs, evaluations)
    n_columns = 2 if len(panels) <= 4 else 4
    n_rows = -(-len(panels) // n_columns)
    fig, axes = plt.subplots(
        n_rows, n_columns, figsize=(4.5 * n_columns, 3.6 * n_rows), squeeze=False
    )
    run_colours = dict(zip(logs, sns.color_palette("tab10", len(logs)), strict=True))
    for ax, (panel_title, series) in zip(axes.flat, panels, strict=False):
        drawn = {}
        for run, frame in logs.items():
            window = smooth or max(1, len(frame) // 20)
            entries = pd.DataFrame(evaluations.get(run, []))
            for k, column in enumerate(series):
                style = _style(column, k, run_colours[run] if len(logs) > 1 else None)
                if column in EVALUATIONS:
                    ok = _draw(ax, entries, column, 1, marker="o", ms=3, **style)
                else:
                    ok = _draw(ax, frame, column, window, **style)
                if ok:
                    drawn[column] = plt.Line2D([], [], label=series[column], **style)
        _finish(ax, panel_title, drawn, several=len(logs) > 1)
        if series is FALLBACKS:  # a share: from 0, and flat zeros stay at the bottom
            ax.set_ylim(-1, max(5.0, ax.get_ylim()[1]))
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    if len(logs) > 1:
        handles = [plt.Line2D([], [], color=c, label=run) for run, c in run_colours.items()]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if len(logs) > 1 else 0, 1, 1))
    return fig


def _style(column: str, k: int, run_colour) -> dict:
    """One run (`run_colour` None): colour = series; several: colour = run, line style = series."""
    if run_colour is None:
        colour = SERIES_COLOURS.get(column, f"C{k}")
        return {"color": colour, "lw": 2 if column == "loss" else 1.2}
    return {"color": run_colour, "ls": LINE_STYLES[k % len(LINE_STYLES)], "lw": 1.3}


def _finish(ax, title: str, drawn: dict, several: bool) -> None:
    """Title, and a legend of the series (in grey line styles when several runs overlay)."""
    ax.set(title=title, xlabel="iteration")
    if not drawn:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    elif len(drawn) > 1:
        if several:
            for handle in drawn.values():
                handle.set_color("0.4")
        ax.legend(handles=list(drawn.values()), fontsize="small")
