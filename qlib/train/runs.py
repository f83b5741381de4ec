"""The run folder: what a training run writes, and how it is read back safely.

`<run_root>/<run name>/`: config.json (the TrainConfig, the environment, data sizes, the
model's arguments), log.csv (one row per iteration, qlib.logs.LOG_COLUMNS), metrics.json (the
evaluations, from the untrained network at epoch 0 to the last, "final": true) and
checkpoints/last.pt (written atomically after every epoch). Checkpoints are read with
`torch.load(weights_only=True)`: run folders are meant to be shared, and a crafted pickle must
not run code when a run is opened.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import model as qmodel
from ..utils import atomic_write_bytes, read_json, repo_root, resolve_device, resolve_path
from .config import RESUME_FREE_FIELDS, TrainConfig

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds more than tensors and plain data: it is refused, never executed."""


def run_dir_of(config: TrainConfig) -> Path:
    """`<run_root>/<run name>`; a relative run_root is taken from the repository root."""
    return resolve_path(config.run_root) / config.name


def fresh_start(run_dir: Path) -> None:
    """Remove what an earlier run of the same name wrote (only the files train owns)."""
    for name in ("config.json", "log.csv", "metrics.json"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)


def check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.to_dict()
    differ = sorted(
        k
        for k in set(saved) | set(current)
        if k not in RESUME_FREE_FIELDS and saved.get(k) != current.get(k)
    )
    if differ:
        raise ValueError(
            f"cannot resume: the run's saved config differs in {differ}; resume with the same "
            "settings, choose another run_name, or pass resume=False to start over."
        )


def environment(device: torch.device, precision: torch.dtype | None) -> dict[str, Any]:
    """What the run ran on: device, precision, versions, git commit."""
    import torchvision

    try:
        import pytorch_metric_learning

        pml = pytorch_metric_learning.__version__
    except ImportError:  # only the baselines need it
        pml = None
    on_cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else platform.machine(),
        "precision": str(precision or torch.float32).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pytorch_metric_learning": pml,
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write a checkpoint of tensors and plain data (dicts, lists, numbers, str)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; anything else is refused, not executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusal, a truncated file, ...
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is not a checkpoint of tensors and plain data "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Only open run folders "
            "you trust; this project's checkpoints never need more."
        ) from err


def checkpoint_path(run_dir: Path, checkpoint: str | Path = "last") -> Path:
    """ "last", "epoch_XXX" or a path to a .pt file -> an existing checkpoint file."""
    candidate = Path(checkpoint)
    if candidate.suffix == ".pt" and candidate.is_file():
        return candidate
    name = str(checkpoint)
    path = run_dir / CHECKPOINT_DIR / (name if name.endswith(".pt") else f"{name}.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; expected a finished or interrupted run "
            f"folder with {CHECKPOINT_DIR}/{LAST_CHECKPOINT} (train a run first)."
        )
    return path


def _run_file(run_dir: str | Path, name: str) -> Path:
    """`run_dir`/`name` (a relative run_dir is relative to the repository root), or one
    sentence saying what is missing."""
    run_dir = resolve_path(run_dir)
    path = run_dir / name
    if not path.is_file():
        problem = f"has no {name}" if run_dir.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"run folder {str(run_dir)!r} {problem}; pass a folder written by training, such as "
            "runs/demo/method2_seed0."
        )
    return path


def _read_run_json(run_dir: str | Path, name: str) -> Any:
    """The one reader of a run folder's JSON files; a missing or malformed file is named."""
    path = _run_file(run_dir, name)
    try:
        return read_json(path)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); expected the file qlib.train writes."
        ) from err


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run folder (config, environment, data, model)."""
    return _read_run_json(run_dir, "config.json")


def load_run(
    run_dir: str | Path, checkpoint: str | Path = "last", device: str | torch.device = "cpu"
) -> tuple[TrainConfig, qmodel.EmbeddingNet]:
    """(config, model in eval mode on `device`) of a run folder; `checkpoint` is "last", an
    "epoch_XXX" name or a path to a .pt file. Reads only JSON and weights_only checkpoints."""
    run_dir = resolve_path(run_dir)
    saved = read_config(run_dir)
    config = TrainConfig.from_dict(saved["config"])
    state = load_checkpoint(checkpoint_path(run_dir, checkpoint))
    model = qmodel.EmbeddingNet(**saved["model"], pretrained=None)
    model.load_state_dict(state["model"])
    return config, model.to(resolve_device(device)).eval()


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """log.csv of a run as a DataFrame (empty cells are NaN)."""
    return pd.read_csv(_run_file(run_dir, "log.csv"))


def read_metrics(run_dir: str | Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    """metrics.json of a run: a list of evaluations; the last one is final when "final" is true.
    `missing_ok`: [] when no evaluation was written yet."""
    if missing_ok and not (resolve_path(run_dir) / "metrics.json").is_file():
        return []
    return _read_run_json(run_dir, "metrics.json")


def run_is_finished(run_dir: str | Path) -> bool:
    """Whether a run folder holds a final evaluation (the last metrics.json entry is final)."""
    entries = read_metrics(run_dir, missing_ok=True)
    return bool(entries) and bool(entries[-1].get("final"))


def finished_as_configured(config: TrainConfig) -> bool:
    """Whether `train(config)` has nothing left to do: `resume` is on and its run folder holds a
    final evaluation after at least `config.epochs` epochs, trained with the same settings
    (RESUME_FREE_FIELDS aside). A run with other settings is not: training it says why."""
    run_dir = run_dir_of(config)
    if not (config.resume and run_is_finished(run_dir)):
        return False
    try:
        check_resumable(read_config(run_dir)["config"], config)
    except ValueError:
        return False
    return read_metrics(run_dir)[-1].get("epoch", -1) >= config.epochs


def time_shares(log: pd.DataFrame) -> dict[str, float]:
    """Share of the logged wall time (sum of time_iteration) per part of an iteration."""
    total = float(log["time_iteration"].sum())
    if total <= 0:
        raise ValueError("the log holds no time; expected at least one timed iteration.")
    parts = {
        "bank refresh": "time_bank",
        "selection": "time_selection",
        "data loading": "time_data",
        "forward/backward": "time_step",
    }
    return {name: float(log[column].sum()) / total for name, column in parts.items()}
