"""A run's loss, optimizer and initial network, fresh or resumed, the CPU settings that make it
repeat bit for bit, and `Run`: its state while it trains and its bookkeeping (logging,
evaluation, checkpoints), what the loop (`qlib.train.loop`) calls to write things down.
"""

from __future__ import annotations

import inspect
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import losses as qlosses
from .. import metrics as qmetrics
from .. import miners as qminers
from .. import model as qmodel
from ..logs import truncate_log
from ..utils import seed_everything, write_json
from . import distributed, hardware, runs
from .batches import Plan
from .config import TrainConfig
from .data import RunData, build_datasets, make_loader


class NonFiniteLossError(FloatingPointError):
    """The loss (or the embeddings feeding it) became NaN or inf: the run stops."""


class TrainingInterrupted(RuntimeError):
    """Raised by the `stop_after_iterations` test hook, like a crash between two checkpoints."""


def make_loss(config: TrainConfig) -> nn.Module:
    """eq. 6 for the quadruplet methods, the baseline's own loss otherwise (docs/spec.md); each
    hyperparameter is the TrainConfig field of the same name."""
    if config.is_quadruplet:
        loss, args = qlosses.QuadrupletLoss, ()
    else:
        loss, args = qlosses.BaselineLoss, (config.method,)
    names = [name for name in inspect.signature(loss).parameters if name != "method"]
    return loss(*args, **{name: getattr(config, name) for name in names})


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def model_kwargs(config: TrainConfig, data: RunData) -> dict[str, Any]:
    return {
        "backbone": config.backbone,
        "embedding_dim": config.embedding_dim,
        "n_coarse": data.n_coarse,
        "n_fine": data.n_fine,
        "normalize": config.normalize,
        "freeze_bn": config.freeze_bn,
    }


def build_model(config: TrainConfig, data: RunData, device: torch.device) -> qmodel.EmbeddingNet:
    """The network of Fig. 1, initialised as `config.init` says (from the run's seed)."""
    from .warmstart import classifier_state

    pretrained = {"scratch": None, "classifier": None}.get(config.init, config.init)
    model = qmodel.EmbeddingNet(**model_kwargs(config, data), pretrained=pretrained)
    if config.init == "classifier":
        model.load_state_dict(classifier_state(config, data, device))
    return hardware.configure(device, model.to(device))


def initial_model(
    config: TrainConfig, data: RunData, device: str | torch.device = "cpu"
) -> qmodel.EmbeddingNet:
    """The network exactly as `train(config)` initialises it (same seed, same init), in eval
    mode: the "before training" of notebook 04."""
    seed_everything(config.seed)
    return build_model(config, data, torch.device(device)).eval()


def setup(config: TrainConfig, device: torch.device) -> Run | None:
    """Build the run (fresh or resumed); None when `resume` finds it finished."""
    world = distributed.world_for(device)  # this process alone, or torchrun's N
    run_dir = runs.run_dir_of(config)
    checkpoint = _resume_point(config, run_dir, world)
    if checkpoint is not None and checkpoint["done"] and checkpoint["epoch"] >= config.epochs:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, device, run_dir, world)
    if checkpoint is not None:
        run.restore(checkpoint)
    elif world.is_main:
        (run_dir / "log.csv").unlink(missing_ok=True)
    if world.is_main:  # rank 0 alone writes the run folder
        _write_run_config(run, resumed=checkpoint is not None)
    return run


def _resume_point(config: TrainConfig, run_dir: Path, world: distributed.World) -> dict | None:
    """The checkpoint to continue from (resume=True and one exists), else None after clearing
    what an earlier run of the same name wrote."""
    last = run_dir / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT
    if config.resume and last.is_file():
        checkpoint = runs.load_checkpoint(last)
        runs.check_resumable(runs.read_config(run_dir)["config"], config)
        world.check_resume(checkpoint)
        return checkpoint
    if world.is_main:
        runs.fresh_start(run_dir)
    return None


def _write_run_config(run: Run, resumed: bool) -> None:
    """config.json: the settings, the environment, the data's sizes and the model's arguments."""
    data, config = run.data, run.config
    sizes = {
        "n_train": len(data.train_fine),
        "n_eval": len(data.eval_fine),
        "eval_split": config.eval_split,
        "n_valid_anchors": run.n_valid_anchors,
        "n_coarse": data.n_coarse,
        "n_fine": data.n_fine,
        "image_size": data.image_size,
        "iterations_per_epoch": run.iterations_per_epoch,
        "images_per_iteration": 4 * run.batch_size,
    }
    content = {
        "config": config.to_dict(),
        "environment": runs.environment(run.device, run.dtype),
        "data": sizes,
        "model": model_kwargs(config, data),
        "distributed": run.world.describe(),
        "resumed_from_epoch": run.epoch if resumed else None,
    }
    write_json(run.run_dir / "config.json", content)


@contextmanager
def repeatable_cpu(device: torch.device, threads: int | None):
    """CPU runs that repeat bit for bit, whoever launches them. Multi-threaded scatter-adds (the
    backward of indexing with repeated indices) sum in a varying order: torch's deterministic
    kernels fix that at the same speed. The number of intra-op threads changes how sums are split,
    so `threads` (when set) is the run's own, not the launcher's. CUDA keeps its fast kernels;
    the previous settings are restored."""
    was, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        if threads:
            torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.set_num_threads(previous_threads)


class Run:
    """Everything one training run holds while it trains."""

    def __init__(
        self, config: TrainConfig, device: torch.device, run_dir: Path, world: distributed.World
    ) -> None:
        """Data, initial network, loss, optimizer, the run's own generators and its loaders."""
        self.config, self.device, self.run_dir, self.world = config, device, run_dir, world
        seed_everything(config.seed)  # the initial weights: the only use of the global RNG
        self.data = data = build_datasets(config)
        self.model = build_model(config, data, device)
        self.dtype = hardware.train_dtype(device, config.amp)
        valid = int(qminers.valid_anchors(data.train_fine, data.train_coarse).sum())
        if config.is_quadruplet and valid == 0:
            raise ValueError(
                "no training image can anchor a quadruplet (each needs another image of its fine "
                "class and a sibling fine class in its coarse class); check the coarse labels."
            )
        self.n_valid_anchors = valid
        # An epoch: about one pass over the valid anchors, N x B anchors per iteration (B each).
        self.batch_size = config.batch_size * world.size  # the global batch
        self.iterations_per_epoch = config.iterations_per_epoch or max(
            1, math.ceil((valid or len(data.train_fine)) / self.batch_size)
        )
        self.optimizer = make_optimizer(self.model, config)  # before world.wrap (may freeze heads)
        self.loss_fn = make_loss(config)
        self.scaler = hardware.make_scaler(device, self.dtype)
        self.anchor_gen = torch.Generator().manual_seed(config.seed)  # anchors, Random's picks
        self.data_gen = torch.Generator().manual_seed(config.seed + 1)  # batches, crops, flips
        self.step_model = world.wrap(self.model, config)  # what train_step runs: DDP or model
        self.epoch = self.iteration = 0
        self.metrics: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # log rows not yet written
        self.log = self.progress = None  # set by the loop: rank 0's LogWriter, tqdm
        self.fine = data.train_fine.to(device)
        self.coarse = data.train_coarse.to(device)
        self.members = [(data.train_fine == c).nonzero().flatten() for c in range(data.n_fine)]
        self._make_loaders()

    def _make_loaders(self) -> None:
        data, config, device = self.data, self.config, self.device
        size = config.eval_batch_size
        self.sampler: list[list[Any]] = []  # the batches of the next pass (`loader_for`)
        self.batch_loader = make_loader(
            data.train_aug_set, config, device, batch_sampler=self.sampler
        )
        # Across processes each rank embeds its shard of the images; world.embed gathers them.
        self.bank_loader = make_loader(
            self.world.shard(data.train_eval_set, size), config, device, batch_size=size
        )
        self.eval_loader = make_loader(
            self.world.shard(data.eval_set, size), config, device, batch_size=size
        )
        # Log rows are converted to numbers in groups: on CUDA a float() per step would wait for
        # the GPU at every iteration.
        self.flush_every = 1 if device.type == "cpu" else 20

    def loader_for(self, plan: Plan) -> torch.utils.data.DataLoader:
        """The batch loader, set to this rank's part of the plan's batches (one DataLoader and
        its workers serve every segment: they are not restarted at each bank refresh)."""
        self.sampler[:] = self.world.local_items(plan.items, plan.batches)
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
        self.progress.update(1)
        stop = self.config.stop_after_iterations
        if stop is not None and self.iteration >= stop:
            self.flush()
            raise TrainingInterrupted(
                f"stopped after iteration {self.iteration} (stop_after_iterations)."
            )

    def flush(self) -> None:
        """Write the pending rows (rank 0), stopping every rank at the first non-finite
        embedding or loss."""
        for entry in self.pending:
            row = {k: float(v) if isinstance(v, Tensor) else v for k, v in entry["row"].items()}
            _check_finite(row, entry["finite"], entry["batch"])
            if self.log is not None:
                self.log.write(row)
            self.progress.set_postfix(epoch=row["epoch"], loss=f"{row['loss']:.3f}", refresh=False)
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
        # No metrics.json yet when no evaluation ran before the checkpoint (eval_at_start off).
        evaluations = runs.read_metrics(self.run_dir, missing_ok=True)
        kept = [m for m in evaluations if m["iteration"] <= self.iteration]
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
