"""One training run on N processes (one per GPU) with PyTorch's DistributedDataParallel.

    torchrun --nproc_per_node N -m qlib.train --preset paper --method method2 --seed 0 ...

`batch_size` is B per process; the run equals one process with batch_size N x B: a global bank,
a global plan and the global batch's loss (docs/spec.md, "Multi-GPU", says how). In one process
(no torchrun) every method here is the identity and the loop is unchanged.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..model import embed_images
from .config import TrainConfig

# Seconds a rank waits at a collective before it fails (rank 0's evaluation can take minutes on
# large test splits while the others wait at the barrier). Tests set it low.
TIMEOUT_ENV = "QLIB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class World:
    """The processes one run trains on: this process alone (the default), or a torchrun launch
    (`distributed=True`, even with one process)."""

    size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sync_batchnorm(self) -> bool:
        return self.distributed and self.device.type == "cuda"

    def describe(self) -> dict[str, Any]:
        """For config.json."""
        return {
            "world_size": self.size,
            "backend": self.backend,
            "sync_batchnorm": self.sync_batchnorm,
        }

    def split(self, n: int) -> list[int]:
        """Rows of each rank when n rows are cut into `size` contiguous parts (tensor_split)."""
        return [n // self.size + (r < n % self.size) for r in range(self.size)]

    def image_sizes(self, batch: Tensor) -> list[int]:
        """Images of each rank for a global batch: (B, 4) quadruplets or (n,) images."""
        per_row = 4 if batch.dim() == 2 else 1
        return [per_row * n for n in self.split(batch.shape[0])]

    def local_items(self, items: list[list[Any]], batches: list[Tensor]) -> list[list[Any]]:
        """Each iteration's loader keys (global batch, image order) -> this rank's part."""
        if not self.distributed:
            return items
        local = []
        for keys, batch in zip(items, batches, strict=True):
            sizes = self.image_sizes(batch)
            start = sum(sizes[: self.rank])
            if sizes[self.rank] == 0:
                raise ValueError(
                    f"a batch of {len(keys)} images leaves rank {self.rank} of {self.size} without "
                    "images; raise batch_size or images_per_class, or launch fewer processes."
                )
            local.append(keys[start : start + sizes[self.rank]])
        return local

    def gather(self, tensor: Tensor, sizes: list[int]) -> Tensor:
        """Every rank's rows in rank order -> (sum(sizes), ...), rank r holding sizes[r] rows.

        The other ranks' rows are constants; this rank's rows are `tensor` itself, so a loss on
        the result sends gradient into this rank's rows only.
        """
        if not self.distributed:
            return tensor
        # Equal sizes for the collective: pad to the largest part, then cut the padding off.
        largest = max(sizes)
        padded = tensor.detach().new_zeros((largest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor.detach()
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        parts = [part[:n] for part, n in zip(parts, sizes, strict=True)]
        parts[self.rank] = tensor
        return torch.cat(parts)

    def gather_output(self, out: Any, batch: Tensor) -> Any:
        """The model's output (a tuple of (images, ...) tensors) for this rank's images -> the
        same for the images of the whole global batch `batch`, in the batch's order."""
        if not self.distributed:
            return out
        sizes = self.image_sizes(batch)
        return type(out)(*(self.gather(t, sizes) for t in out))

    def objective(self, total: Tensor) -> Tensor:
        """What this rank backpropagates: N x the global batch's loss, since DDP averages the N
        gradients (the one-process gradient of the global batch; docs/spec.md)."""
        return total * self.size if self.distributed else total

    def embed(
        self,
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Embed a sharded dataset (`shard`) on every rank and gather it: (N, d) on every rank,
        rows in dataset order, computed with rank 0's BatchNorm statistics."""
        if not self.distributed:
            return embed_images(model, loader, dtype=dtype, on_device=True)
        for buffer in model.buffers():  # BatchNorm's running statistics: rank 0's, as saved
            dist.broadcast(buffer, 0)
        shard = loader.dataset
        if len(shard) > 0:
            local = embed_images(model, loader, dtype=dtype, on_device=True)
        else:
            local = torch.empty(0, model.embedding_dim, device=self.device)
        return self.gather(local, shard.sizes)

    def shard(self, dataset: Any, batch_size: int) -> Any:
        """This rank's part of `dataset` for `embed`: whole batches of `batch_size`, contiguous;
        its `sizes` are the parts of every rank, in rank order."""
        if not self.distributed:
            return dataset
        n = len(dataset)
        bounds = [0]
        for n_batches in self.split(math.ceil(n / batch_size)):
            bounds.append(min(n, bounds[-1] + n_batches * batch_size))
        shard = torch.utils.data.Subset(dataset, range(bounds[self.rank], bounds[self.rank + 1]))
        shard.sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]  # every rank's
        return shard

    def barrier(self) -> None:
        if self.distributed:
            cuda = self.device.type == "cuda"
            dist.barrier(device_ids=[self.device.index] if cuda else None)

    def check_same(self, batches: list[Tensor]) -> None:
        """Every rank must have selected the same global batches (the same bank and generators
        make them equal; a non-deterministic kernel would mix up the ranks' labels silently)."""
        if not self.distributed or self.size == 1:
            return
        digest = hashlib.sha256()
        for batch in batches:
            digest.update(batch.cpu().numpy().tobytes())
        digests: list[Any] = [None] * self.size
        dist.all_gather_object(digests, digest.hexdigest())
        if len(set(digests)) > 1:
            raise RuntimeError(
                "the ranks selected different quadruplets from the same bank and generators; "
                "selection ran non-deterministically on this device: train on one process."
            )

    def wrap(self, model: nn.Module, config: TrainConfig) -> nn.Module:
        """The module the training step runs: DistributedDataParallel over `model` (SyncBatchNorm
        on CUDA), or `model` itself in one process. Call it after the optimizer is built."""
        if not self.distributed:
            return model
        if self.sync_batchnorm:
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: same parameters, buffers
        if not config.is_quadruplet:
            # A baseline's loss never reads the heads; DDP would wait for their gradients
            # forever. Frozen, they stay as in one process, where they get no gradient either.
            for head in (model.coarse_head, model.fine_head):
                head.requires_grad_(False)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def check_resume(self, checkpoint: dict[str, Any]) -> None:
        """A run resumes with the number of processes it was trained with (its global batch)."""
        saved = int(checkpoint.get("world_size", 1))
        if saved != self.size:
            raise ValueError(
                f"cannot resume: the run was trained on {saved} process(es) and this launch has "
                f"{self.size}; the number of processes is part of its batch ({saved} x "
                f"batch_size quadruplets per iteration). Resume with torchrun --nproc_per_node "
                f"{saved} (or without torchrun for 1), or pass resume=False to start over."
            )


SINGLE = World()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_for(device: torch.device) -> World:
    """The run's processes: the torchrun launch (its process group is created on first use:
    nccl on CUDA, one GPU per process by LOCAL_RANK; gloo on the CPU), or this process alone."""
    initialized = dist.is_available() and dist.is_initialized()
    if not initialized and not launched_by_torchrun():
        return World(device=device)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not initialized:
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=seconds)
        )
    return World(
        size=dist.get_world_size(),
        rank=dist.get_rank(),
        device=device,
        distributed=True,
        backend=str(dist.get_backend()),
    )


def shutdown() -> None:
    """End the process group (the command line's last step)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current_rank() -> int:
    """This process's rank (0 without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))
