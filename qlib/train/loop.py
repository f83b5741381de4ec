"""The training loop: Section 3.3's global mining and eq. 6, or a Table 1 baseline.

One iteration of a quadruplet method (`random`, `method1`, `method2`):

    bank = every training image embedded by the current network (eval mode, no gradient),
           refreshed at the start of every epoch (and every `bank_refresh_iterations`)
    anchors = B samples drawn uniformly among those that can anchor a quadruplet
    quadruplets = (R, P+, P-, N) per anchor, selected over the whole bank by the method
    train_step: the 4B images through the network (train mode) -> eq. 6 -> one optimizer step

A baseline (`semihard`, `lifted`, `npairs`, `clustering`, `triplet_global`) trains the same
network on class-balanced batches of 4B images (P classes x K images) with its own loss.

`train(config)` returns the run folder (see `qlib.train.runs`). `train_step` is the step that
notebook 03 shows; `fit` is the loop around it; everything else (setup, logging, checkpoints)
sits in the small functions below them. Launched by torchrun, one run trains on several
processes: the `run.world` calls are where they differ (`qlib.train.distributed`); in one
process they change nothing.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import losses as qlosses
from .. import metrics as qmetrics
from .. import miners as qminers
from .. import model as qmodel
from ..logs import LogWriter, truncate_log
from ..utils import resolve_device, seed_everything, write_json
from . import distributed, hardware, runs
from .batches import Plan, baseline_plan, quadruplet_plan
from .config import TrainConfig
from .data import PlannedBatches, RunData, build_datasets, make_loader


class NonFiniteLossError(FloatingPointError):
    """The loss (or the embeddings feeding it) became NaN or inf: the run stops."""


class TrainingInterrupted(RuntimeError):
    """Raised by the `stop_after_iterations` test hook, like a crash between two checkpoints."""


# ----------------------------------------------------------------------------------------------
# The step and the loop
# ----------------------------------------------------------------------------------------------


def train_step(
    model: qmodel.EmbeddingNet,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    batch: Tensor,
    fine: Tensor,
    coarse: Tensor,
    dtype: torch.dtype | None = None,
    world: distributed.World = distributed.SINGLE,
) -> tuple[qlosses.LossOutput, Tensor]:
    """One optimisation step on one batch -> (the loss and its parts, finite rows).

    images: (4B, 3, H, W) on the model's device. batch: (B, 4) bank indices (R, P+, P-, N), the
    images in that order row by row (quadruplet methods), or (n,) training indices (baselines).
    fine, coarse: (N,) labels of the training split, on the device. Returns the LossOutput and
    a (B,) bool tensor saying which quadruplets (images) had finite embeddings; nothing here
    waits for the GPU. Across processes (`world`), `images` are this rank's part of `batch`.
    """
    model.train()
    with hardware.autocast(images.device, dtype):
        out = model(images)
    out = world.gather_output(out, batch)  # the whole batch; this rank's rows carry gradient
    embeddings = out.embedding.float()
    if batch.dim() == 2:  # quadruplets: eq. 6 on (B, 4, d), eq. 4 on the anchors R
        n = batch.shape[0]
        embeddings = embeddings.view(n, 4, -1)
        anchors = batch[:, 0]
        head = slice(None, None, 4)  # the rows of R
        result = loss_fn(
            embeddings,
            out.coarse_logits[head].float(),
            out.fine_logits[head].float(),
            coarse[anchors],
            fine[anchors],
        )
    else:
        result = loss_fn(embeddings, fine[batch], coarse[batch])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(world.objective(result.total)).backward()
    scaler.step(optimizer)
    scaler.update()
    return result, torch.isfinite(embeddings.detach()).flatten(1).all(1)


def fit(run: Run) -> None:
    """The loop: per epoch, per segment between bank refreshes, plan the batches, then step."""
    config = run.config
    for epoch in range(run.epoch + 1, config.epochs + 1):
        run.epoch = epoch
        method = "random" if epoch <= config.warmup_epochs else config.method
        for n_iterations in segments(run.iterations_per_epoch, config.bank_refresh_iterations):
            plan = next_plan(run, method, n_iterations)
            images = iter(run.loader_for(plan))
            for i in range(n_iterations):
                tic = time.perf_counter()
                batch_images = next(images)[0].to(run.device, non_blocking=True)
                tac = time.perf_counter()
                result, finite = train_step(
                    run.step_model, run.loss_fn, run.optimizer, run.scaler, batch_images,
                    plan.batches[i].to(run.device), run.fine, run.coarse, run.dtype, run.world,
                )  # fmt: skip
                run.iteration += 1
                run.log_step(plan, i, result, finite, tac - tic, tic)
        run.end_epoch()


def segments(iterations_per_epoch: int, refresh_every: int | None) -> list[int]:
    """The epoch's iterations cut at the bank refreshes: [refresh_every, ..., remainder]."""
    step = refresh_every or iterations_per_epoch
    return [min(step, iterations_per_epoch - s) for s in range(0, iterations_per_epoch, step)]


def next_plan(run: Run, method: str, n_iterations: int) -> Plan:
    """Refresh the bank and select the segment's quadruplets, or sample baseline batches."""
    if method not in qminers.METHODS:
        return baseline_plan(
            run.members, n_iterations, 4 * run.batch_size, run.config.images_per_class, run.data_gen
        )
    tic = time.perf_counter()
    embeddings = run.world.embed(run.model, run.bank_loader, hardware.inference_dtype(run.dtype))
    bank = qminers.Bank(embeddings, run.fine, run.coarse)
    bank_seconds = time.perf_counter() - tic
    plan = quadruplet_plan(bank, method, n_iterations, run.batch_size, run.anchor_gen, run.data_gen)
    run.world.check_same(plan.batches)
    plan.bank_seconds = bank_seconds
    return plan


# ----------------------------------------------------------------------------------------------
# A run's state, its logging, evaluation and checkpoints
# ----------------------------------------------------------------------------------------------


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


def make_loss(config: TrainConfig) -> nn.Module:
    """eq. 6 for the quadruplet methods, the baseline's own loss otherwise (docs/spec.md)."""
    if config.is_quadruplet:
        return qlosses.QuadrupletLoss(
            m1=config.m1, m2=config.m2, t1=config.t1, t2=config.t2,
            lambda_c1=config.lambda_c1, lambda_c2=config.lambda_c2,
            lambda_g1=config.lambda_g1, lambda_g2=config.lambda_g2,
            eta=config.eta, reduction=config.reduction,
        )  # fmt: skip
    return qlosses.BaselineLoss(
        config.method,
        reduction=config.reduction,
        triplet_margin=config.triplet_margin,
        global_margin=config.global_margin,
        lambda_global=config.lambda_global,
        lifted_margin=config.lifted_margin,
        npairs_l2_reg=config.npairs_l2_reg,
        clustering_margin=config.clustering_margin,
        clustering_refine_steps=config.clustering_refine_steps,
    )


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

    kwargs = model_kwargs(config, data)
    pretrained = {"scratch": None, "classifier": None}.get(config.init, config.init)
    model = qmodel.EmbeddingNet(**kwargs, pretrained=pretrained)
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
    run = _build_run(config, device, run_dir, world)
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


def _build_run(
    config: TrainConfig, device: torch.device, run_dir: Path, world: distributed.World
) -> Run:
    """Data, initial network, loss, optimizer and the run's own generators."""
    seed_everything(config.seed)  # the initial weights: the only use of the global RNG
    data = build_datasets(config)
    model = build_model(config, data, device)
    dtype = hardware.train_dtype(device, config.amp)
    valid = int(qminers.valid_anchors(data.train_fine, data.train_coarse).sum())
    if config.is_quadruplet and valid == 0:
        raise ValueError(
            "no training image can anchor a quadruplet (each needs another image of its fine "
            "class and a sibling fine class in its coarse class); check the coarse labels."
        )
    # An epoch: about one pass over the valid anchors, N x B anchors per iteration (B each).
    per_iteration = config.batch_size * world.size
    iterations = max(1, math.ceil((valid or len(data.train_fine)) / per_iteration))
    optimizer = make_optimizer(model, config)  # before world.wrap, which may freeze the heads
    return Run(
        config=config,
        device=device,
        run_dir=run_dir,
        data=data,
        model=model,
        loss_fn=make_loss(config),
        optimizer=optimizer,
        scaler=hardware.make_scaler(device, dtype),
        dtype=dtype,
        anchor_gen=torch.Generator().manual_seed(config.seed),
        data_gen=torch.Generator().manual_seed(config.seed + 1),
        iterations_per_epoch=config.iterations_per_epoch or iterations,
        n_valid_anchors=valid,
        world=world,
        step_model=world.wrap(model, config),
    )


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


def train(config: TrainConfig) -> Path:
    """Train one run as `config` says; returns its folder `<run_root>/<run name>`."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}.")
    # Under torchrun: this rank's GPU (LOCAL_RANK), and the process group is created.
    device = distributed.world_for(resolve_device(config.device)).device
    try:
        with repeatable_cpu(device, config.threads):
            run = setup(config, device)
            if run is None:
                return runs.run_dir_of(config)
            _train(run)
            return run.run_dir
    except torch.cuda.OutOfMemoryError as exc:
        raise hardware.out_of_memory(config) from exc


def _train(run: Run) -> None:
    from tqdm.auto import tqdm

    config = run.config
    total = config.epochs * run.iterations_per_epoch
    run.progress = tqdm(
        total=total,
        initial=run.iteration,
        desc=config.name,
        unit="it",
        disable=not (config.progress and run.world.is_main),
    )
    run.log = LogWriter(run.run_dir / "log.csv") if run.world.is_main else distributed.NullLog()
    try:
        if run.epoch == 0 and config.eval_at_start:
            run.evaluate(final=config.epochs == 0)
        # The losses' own value checks off: the loop checks embeddings and loss itself when it
        # logs, naming the iteration and the bank indices, without waiting for a GPU per step.
        with qlosses.value_checks(False):
            fit(run)
        if config.epochs == 0:
            run.save_checkpoint()
    finally:
        run.pending.clear()
        run.log.close()
        run.progress.close()
