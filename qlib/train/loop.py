"""The training loop: Section 3.3's global mining and eq. 6, or a Table 1 baseline.

A quadruplet method's iteration: the bank (every training image embedded by the current
network, refreshed every epoch and every `bank_refresh_iterations`), B anchors drawn among
those that can anchor a quadruplet, one quadruplet (R, P+, P-, N) each selected over the whole
bank, then `train_step`: the 4B images through the network -> eq. 6 -> one optimizer step.
A baseline trains on class-balanced batches of 4B images (P classes x K) with its own loss.
Under torchrun the `run.world` calls are where the processes differ; in one process they
change nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import losses as qlosses
from .. import miners as qminers
from .. import model as qmodel
from ..logs import LogWriter
from ..utils import resolve_device
from . import distributed, hardware, runs
from .batches import Plan, baseline_plan, quadruplet_plan
from .config import TrainConfig
from .setup import Run, repeatable_cpu, setup


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
        method = epoch_method(config, epoch)
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


def epoch_method(config: TrainConfig, epoch: int) -> str:
    """The selection of epoch `epoch` (from 1): Random quadruplets during the warm-up."""
    return "random" if epoch <= config.warmup_epochs else config.method


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
    bank = embed_bank(run)
    bank_seconds = time.perf_counter() - tic
    plan = quadruplet_plan(bank, method, n_iterations, run.batch_size, run.anchor_gen, run.data_gen)
    run.world.check_same(plan.batches)
    plan.bank_seconds = bank_seconds
    return plan


def embed_bank(run: Run) -> qminers.Bank:
    """The bank: every training image embedded by the current network."""
    embeddings = run.world.embed(run.model, run.bank_loader, hardware.inference_dtype(run.dtype))
    return qminers.Bank(embeddings, run.fine, run.coarse)


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
    run.log = LogWriter(run.run_dir / "log.csv") if run.world.is_main else None
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
        if run.log is not None:
            run.log.close()
        run.progress.close()
