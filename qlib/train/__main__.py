"""Train one run from the command line, in one process or, under torchrun, on several GPUs.

    python -m qlib.train --preset paper --method method2 --seed 0 --root /data/stanford_cars
    torchrun --nproc_per_node 4 -m qlib.train --preset paper --method method2 --seed 0 \\
        --root /data/stanford_cars --set batch_size=8

`--set KEY=VALUE` sets any TrainConfig field (repeatable); values are read as JSON (8, 3e-4,
true, null) except for text fields, which take the text as it is. Prints the run folder (rank 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..model import WeightsUnavailableError
from . import distributed
from .config import DATASETS, METHODS, PRESETS, TrainConfig, config_from_preset
from .hardware import CudaOutOfMemoryError
from .loop import train

# Errors that are the user's to fix: one line, no traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FloatingPointError,
    WeightsUnavailableError,
    CudaOutOfMemoryError,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qlib.train",
        description="Train one run of the quadruplet methods or a Table 1 baseline; prints the "
        "run folder. Launch with torchrun --nproc_per_node N for N GPUs (batch_size per process).",
    )
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    p.add_argument("--method", choices=METHODS, help="default: the preset's (method2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--root", help="the dataset's folder (stanford_cars, sop, cub200, folder)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig field, e.g. --set epochs=10 --set run_root=runs/mine",
    )
    return p


def parse_setting(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value): JSON for numbers, booleans and null; text fields keep text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    if not sep or key not in types:
        raise ValueError(
            f"--set {text!r}: expected KEY=VALUE with KEY a TrainConfig field, one of "
            f"{sorted(types)}."
        )
    if raw in ("null", "None") and "None" in types[key]:
        return key, None
    if types[key].startswith("str"):
        return key, raw
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, {"True": True, "False": False}.get(raw, raw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = dict(parse_setting(s) for s in args.settings)
    for name in ("method", "seed", "dataset", "root"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.resume:
        overrides["resume"] = True
    return config_from_preset(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run_dir = train(config_from_args(args))
        if distributed.current_rank() == 0:
            print(run_dir)
        return 0
    except USER_ERRORS as err:
        rank = distributed.current_rank()
        where = f" (rank {rank})" if distributed.launched_by_torchrun() else ""
        print(f"qlib.train{where}: error: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
