"""A training run's state while it trains, and its bookkeeping: logging, evaluation,
checkpoints. The loop (`qlib.train.loop`) reads like the paper; this is what it calls to write
things down.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import losses as qlosses
from .. import metrics as qmetrics
from .. import model as qmodel
from ..logs import LogWriter, truncate_log
from ..utils import write_json
from . import distributed, hardware, runs
from .batches import Plan
from .config import TrainConfig
from .data import PlannedBatches, RunData, make_loader


class NonFiniteLossError(FloatingPointError):
    """The loss (or the embeddings feeding it) became NaN or inf: the run stops."""


class TrainingInterrupted(RuntimeError):
    """Raised by the `stop_after_iterations` test hook, like a crash between two checkpoints."""


@dataclass
class Run:
    """Everything one training run holds while it trains."""

    config: TrainConfig
    device: torch.device
    run_dir: Path
    data: RunData
    model: qmodel.EmbeddingNet
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    anchor_gen: torch.Generator  # anchors and Random's picks
    data_gen: torch.Generator  # baseline batches and each image's crop and flip
    iterations_per_epoch: int
    n_valid_anchors: int = 0
    epoch: int = 0
    iteration: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # rows not yet written
    log: LogWriter | distributed.NullLog | None = None
    progress: Any = None
    world: distributed.World = distributed.SINGLE  # the processes of the run
    step_model: nn.Module | None = None  # what train_step runs: DDP's wrapper, or the model

    def __post_init__(self) -> None:
        if self.step_model is None:
            self.step_model = self.model
        self.batch_size = self.config.batch_size * self.world.size  # the global batch, B each
        self.fine = self.data.train_fine.to(self.device)
        self.coarse = self.data.train_coarse.to(self.device)
        self.members = [
            (self.data.train_fine == c).nonzero().flatten() for c in range(self.data.n_fine)
        ]
        self.sampler = PlannedBatches()
        self.batch_loader = make_loader(
            self.data.train_aug_set,
            self.config,
            self.device,
            batch_sampler=self.sampler,
        )
        size = self.config.eval_batch_size
        # Across processes each rank embeds its shard of the images; world.embed gathers them.
        self.bank_loader = make_loader(
            self.world.shard(self.data.train_eval_set, size),
            self.config,
            self.device,
            batch_size=size,
        )
        self.eval_loader = make_loader(
            self.world.shard(self.data.eval_set, size), self.config, self.device, batch_size=size
        )
        # Log rows are converted to numbers in groups: on CUDA a float() per step would wait for
        # the GPU at every iteration.
        self.flush_every = 1 if self.device.type == "cpu" else 20

    def loader_for(self, plan: Plan) -> torch.utils.data.DataLoader:
        self.sampler.plan(self.world.local_items(plan.items, plan.batches))
        return self.batch_loader

    def log_step(
        self,
        plan: Plan,
        i: int,
        result: qlosses.LossOutput,
        finite: Tensor,
        wait: float,
        tic: float,
    ) -> None:
        if self.config.sync_timings and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        bank = plan.bank_seconds if i == 0 else 0.0
        row = {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "lr": self.optimizer.param_groups[0]["lr"],
            **result.parts,
            "time_bank": bank,
            "time_selection": plan.seconds[i],
            "time_data": wait,
            "time_step": now - tic - wait,
            "time_iteration": bank + plan.seconds[i] + (now - tic),
        }
        if plan.fallbacks[i] is not None:
            share = plan.fallbacks[i].float().mean(0)
            row["fallback_pos"], row["fallback_neg"] = share[0], share[1]
        self.pending.append({"row": row, "finite": finite, "batch": plan.batches[i]})
        if len(self.pending) >= self.flush_every:
            self.flush()
        if self.progress is not None:
            self.progress.update(1)
        stop = self.config.stop_after_iterations
        if stop is not None and self.iteration >= stop:
            self.flush()
            raise TrainingInterrupted(
                f"stopped after iteration {self.iteration} (stop_after_iterations)."
            )

    def flush(self) -> None:
        """Write the pending rows, stopping at the first non-finite embedding or loss."""
        for entry in self.pending:
            row = {k: float(v) if isinstance(v, Tensor) else v for k, v in entry["row"].items()}
            _check_finite(row, entry["finite"], entry["batch"])
            self.log.write(row)
            if self.progress is not None:
                self.progress.set_postfix(
                    epoch=row["epoch"], loss=f"{row['loss']:.3f}", refresh=False
                )
        self.pending.clear()

    def evaluate(self, final: bool) -> None:
        embeddings = self.world.embed(
            self.model, self.eval_loader, hardware.inference_dtype(self.dtype)
        )
        if not self.world.is_main:
            return  # rank 0 computes the metrics and writes them
        entry = {"epoch": self.epoch, "iteration": self.iteration}
        entry |= qmetrics.retrieval_metrics(embeddings.cpu(), self.data.eval_fine)
        if final:
            entry["final"] = True
        self.metrics.append(entry)
        write_json(self.run_dir / "metrics.json", self.metrics)

    def end_epoch(self) -> None:
        self.flush()
        last = self.epoch == self.config.epochs
        if self.epoch % self.config.eval_every == 0 or last:
            self.evaluate(final=last)
        self.save_checkpoint()
        self.world.barrier()  # no rank starts the next epoch before rank 0 has saved this one

    def save_checkpoint(self) -> None:
        if not self.world.is_main:
            return
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generators": {
                "anchors": self.anchor_gen.get_state(),
                "data": self.data_gen.get_state(),
            },
            "epoch": self.epoch,
            "iteration": self.iteration,
            "done": self.epoch >= self.config.epochs,
            "world_size": self.world.size,
        }
        folder = self.run_dir / runs.CHECKPOINT_DIR
        runs.save_checkpoint(folder / runs.LAST_CHECKPOINT, payload)
        if self.config.keep_epoch_checkpoints:
            runs.save_checkpoint(folder / f"epoch_{self.epoch:03d}.pt", payload)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.anchor_gen.set_state(checkpoint["generators"]["anchors"])
        self.data_gen.set_state(checkpoint["generators"]["data"])
        self.epoch, self.iteration = int(checkpoint["epoch"]), int(checkpoint["iteration"])
        kept = [m for m in runs.read_metrics(self.run_dir) if m["iteration"] <= self.iteration]
        self.metrics = [{k: v for k, v in m.items() if k != "final"} for m in kept]
        if self.world.is_main:
            truncate_log(self.run_dir / "log.csv", self.iteration)


def _check_finite(row: dict[str, Any], finite: Tensor, batch: Tensor) -> None:
    """Stop with the iteration and the offending rows' bank indices on NaN/inf."""
    if bool(finite.all()) and math.isfinite(row["loss"]):
        return
    bad = (~finite.cpu()).nonzero().flatten().tolist() or list(range(len(batch)))
    problem = (
        "non-finite embeddings" if not bool(finite.all()) else f"non-finite loss ({row['loss']})"
    )
    shown = [batch[i].tolist() for i in bad[:8]]
    more = f" (and {len(bad) - 8} more)" if len(bad) > 8 else ""
    what = "quadruplets (R, P+, P-, N)" if batch.dim() == 2 else "images"
    raise NonFiniteLossError(
        f"{problem} at iteration {row['iteration']}, {what} (bank indices) {shown}{more}; lower "
        "lr, turn amp off, or check the images of these indices."
    )


# ----------------------------------------------------------------------------------------------
# Setting a run up
# ----------------------------------------------------------------------------------------------
