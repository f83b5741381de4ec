"""Setting a run up: its loss, optimizer and initial network, fresh or resumed, and the
CPU settings that make it repeat bit for bit.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import losses as qlosses
from .. import miners as qminers
from .. import model as qmodel
from ..utils import seed_everything, write_json
from . import distributed, hardware, runs
from .config import TrainConfig
from .data import RunData, build_datasets
from .state import Run


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
