"""`init="classifier"`: a warm start without downloads, standing in for the paper's ImageNet one
(docs/spec.md, "Warm start"). Trained once per experiment, cached under `<run_root>/warmstart/`
keyed by every setting it depends on; a file lock makes parallel runs wait for one another
instead of training it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from typing import Any

import torch
import torch.nn.functional as F

from .. import model as qmodel
from ..utils import resolve_path
from . import hardware, runs
from .batches import augmentation_keys
from .config import TrainConfig
from .data import RunData, make_loader
from .setup import model_kwargs, repeatable_cpu

CLASSIFIER_SEED = 0  # one classifier per experiment, whatever the run's seed
CLASSIFIER_LR = 1e-3


# The TrainConfig fields a classifier warm start depends on (with the training images, their
# image size and coarse-class count): runs that agree on them share one cached classifier.
CLASSIFIER_FIELDS = (
    "backbone",
    "embedding_dim",
    "freeze_bn",
    "classifier_epochs",
    "batch_size",
    "amp",
    "threads",
)


def classifier_key(config: TrainConfig, data: RunData) -> str:
    """A short hash of everything the classifier's weights depend on."""
    images = data.train_manifest[["path", "fine"]].to_csv(index=False).encode()
    settings = {k: getattr(config, k) for k in CLASSIFIER_FIELDS}
    settings |= {
        "image_size": data.image_size,
        "n_coarse": data.n_coarse,
        "lr": CLASSIFIER_LR,
        "version": 2,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + images)
    return digest.hexdigest()[:16]


def classifier_state(config: TrainConfig, data: RunData, device: torch.device) -> dict[str, Any]:
    """The warm-start weights (an EmbeddingNet state dict): from the cache, or trained now."""
    path = (
        resolve_path(config.run_root)
        / "warmstart"
        / f"classifier_{classifier_key(config, data)}.pt"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not path.is_file():
            # The run's CPU settings (threads, deterministic kernels), whoever asks: the key
            # records `threads`, so a classifier trained on the launcher's count would lie.
            with repeatable_cpu(device, config.threads):
                state = train_classifier(config, data, device)
            runs.save_checkpoint(path, {"model": state})
    return runs.load_checkpoint(path)["model"]


def train_classifier(config: TrainConfig, data: RunData, device: torch.device) -> dict[str, Any]:
    """Softmax over the training fine classes, on shuffled batches of 4B augmented images."""
    with torch.random.fork_rng(devices=[]):  # the global stream stays the run's
        torch.manual_seed(CLASSIFIER_SEED)
        model = qmodel.EmbeddingNet(**model_kwargs(config, data))
    model = hardware.configure(device, model.to(device)).train()
    # Adam at a fixed rate: plain supervised pretraining, the same for every method and preset.
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=CLASSIFIER_LR)
    dtype = hardware.train_dtype(device, config.amp)
    scaler = hardware.make_scaler(device, dtype)
    generator = torch.Generator().manual_seed(CLASSIFIER_SEED)
    n, size = len(data.train_fine), 4 * config.batch_size
    batches = []
    for _ in range(config.classifier_epochs):
        order = torch.randperm(n, generator=generator)
        batches += [augmentation_keys(order[s : s + size], generator) for s in range(0, n, size)]
    loader = make_loader(data.train_aug_set, config, device, batch_sampler=batches)
    labels = data.train_fine.to(device)
    for (images, _, _), batch in zip(loader, batches, strict=True):
        index = torch.tensor([key[0] for key in batch], device=device)
        with hardware.autocast(device, dtype):
            logits = model(images.to(device, non_blocking=True)).fine_logits
        loss = F.cross_entropy(logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return {k: v.cpu() for k, v in model.state_dict().items()}
