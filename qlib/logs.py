"""The one training-log schema of the image trainer (`log.csv`) and the toy (a DataFrame), so
that one curve plotter draws both: one row per iteration, NaN where a trainer fills nothing."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .utils import atomic_write_bytes

# name -> meaning. Loss parts are those of the method's loss (eq. 3-6 for the quadruplet
# methods, the baseline's own terms otherwise); distances are batch means.
LOG_SCHEMA: dict[str, str] = {
    "epoch": "epoch of the iteration (1-based; the toy has none)",
    "iteration": "optimisation step, 1-based",
    "lr": "learning rate of the step",
    "loss": "the batch loss that was backpropagated",
    "joint": "eq. 5's two distance terms, reduced over the batch (quadruplet methods)",
    "global": "eq. 3 before eta (quadruplets) / the triplet global loss (triplet_global)",
    "classification": "eq. 4 on the anchors, reduced over the batch (quadruplet methods)",
    "triplet": "the triplet term (eq. 2 / FaceNet) of a triplet baseline",
    "regularizer": "a baseline's regulariser (N-pairs' L2 penalty on the embeddings)",
    "d_rpp": "mean D(R,P+); baselines: mean distance of the batch's same-fine pairs",
    "d_rpn": "mean D(R,P-); baselines: same coarse class, other fine class",
    "d_rn": "mean D(R,N); baselines: other coarse class",
    "fallback_pos": "share of the batch's P+ picks with no candidate outside the sphere D(R,N)",
    "fallback_neg": "the same for P-",
    "time_bank": "seconds refreshing the bank (on the iteration that refreshed it)",
    "time_selection": "seconds drawing anchors and selecting quadruplets / sampling the batch",
    "time_data": "seconds waiting for the images",
    "time_step": "seconds of forward, loss, backward and optimizer step",
    "time_iteration": "wall time of the whole iteration, bank refresh included",
}
LOG_COLUMNS = tuple(LOG_SCHEMA)
LOSS_PARTS = ("loss", "joint", "global", "classification", "triplet", "regularizer")
DISTANCES = ("d_rpp", "d_rpn", "d_rn")
TIME_COLUMNS = tuple(c for c in LOG_COLUMNS if c.startswith("time_"))


class LogWriter:
    """`log.csv`, one row per iteration, appended and flushed as training goes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_COLUMNS, restval="")
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: dict[str, Any]) -> None:
        # DictWriter refuses a column that is not in LOG_COLUMNS.
        self.writer.writerow({k: _csv_value(v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def truncate_log(path: str | Path, last_iteration: int) -> None:
    """Drop the rows logged after `last_iteration` (a resumed run redoes them)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= last_iteration]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def as_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """In-memory rows (the toy's) -> a DataFrame with the schema's columns, in schema order."""
    unknown = sorted({key for row in rows for key in row} - set(LOG_COLUMNS))
    if unknown:
        raise ValueError(f"log columns {unknown} are not in qlib.logs.LOG_COLUMNS.")
    return pd.DataFrame(rows, columns=list(LOG_COLUMNS)).dropna(axis=1, how="all")
