"""Where and in which precision a run computes: device, mixed precision, GPU speed settings.

Mixed precision (CUDA only): bfloat16 autocast where the GPU supports it (Ampere and later),
which has float32's range and needs no loss scaling; float16 + GradScaler elsewhere. The bank
refresh and the evaluation never run in float16: an untrained ResNet-101 in eval mode (its
BatchNorm running statistics still at their initial values) produces activations above
float16's maximum (65,504), so its embeddings become inf/NaN (tests/test_train.py reproduces it).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from .config import TrainConfig


class CudaOutOfMemoryError(RuntimeError):
    """CUDA ran out of memory; the message says which settings to lower."""


def train_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of the training step: None (float32) unless CUDA with `amp`."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    """The precision of the bank refresh and evaluation: bfloat16 stays, float16 becomes float32
    (it overflows on untrained networks)."""
    return dtype if dtype == torch.bfloat16 else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast for `dtype`, or nothing for float32."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling only for float16 (bfloat16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def configure(device: torch.device, model: torch.nn.Module) -> torch.nn.Module:
    """GPU speed settings: cuDNN autotuning, TF32 matrix products and channels_last memory
    layout (faster convolutions on tensor cores). CPU runs are left exactly as they are."""
    if device.type != "cuda":
        return model
    torch.backends.cudnn.benchmark = True
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; mixing with the old flags raises
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return model.to(memory_format=torch.channels_last)


def out_of_memory(config: TrainConfig) -> CudaOutOfMemoryError:
    return CudaOutOfMemoryError(
        f"CUDA ran out of memory with batch_size={config.batch_size} quadruplets "
        f"({4 * config.batch_size} images per step), image_size={config.image_size}, "
        f"amp={config.amp}, eval_batch_size={config.eval_batch_size}; lower batch_size or "
        "image_size (or eval_batch_size if it failed while embedding), or turn amp on."
    )
