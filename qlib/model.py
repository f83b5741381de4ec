"""The embedding network of Fig. 1: backbone -> global average pool -> FC embedding -> two heads.

All four images of a quadruplet go through the same `EmbeddingNet`. The coarse and fine heads
read the embedding before L2 normalisation; `embedding` (what distances are computed on) is
normalised when `normalize=True` (the SPEC's default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import checks

BACKBONES = ("smallcnn", "resnet18", "resnet34", "resnet50", "resnet101")
# The input convention of torchvision's ImageNet weights; the model applies it to uint8 images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


class EmbeddingOutput(NamedTuple):
    embedding: Tensor  # (B, d), L2-normalised when the model's `normalize` is True
    coarse_logits: Tensor  # (B, k1)
    fine_logits: Tensor  # (B, k2)


def default_image_size(backbone: str) -> int:
    """Input side in pixels: 64 for smallcnn, 224 for the ResNets."""
    _check_backbone(backbone)
    return 64 if backbone == "smallcnn" else 224


def _check_backbone(backbone: object) -> str:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}.")
    return backbone


class SmallCNN(nn.Module):
    """Four conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool) + global average pool.

    About 240k parameters, for 32-64 px images on a CPU. Output (B, 128).
    """

    out_features = 128

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for c_in, c_out in ((3, 32), (32, 64), (64, 128), (128, 128)):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


def _extract_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """A state dict, a checkpoint holding one under 'state_dict' or 'model', or either saved
    from nn.DataParallel ('module.') or an EmbeddingNet's backbone ('backbone.') -> state dict."""
    if isinstance(obj, Mapping):
        obj = next(
            (obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), obj
        )
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"{source} does not hold a state dict; expected a mapping of parameter names to "
            "tensors, or a checkpoint dict with a 'state_dict' or 'model' entry."
        )
    state = dict(obj)
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _imagenet_state_dict(backbone: str) -> dict[str, Tensor]:
    """ImageNet (IMAGENET1K_V1, the paper-era) weights: hub cache first, then torchvision."""
    if backbone == "smallcnn":
        raise ValueError(
            "pretrained='imagenet' is not available for backbone 'smallcnn'; use a ResNet "
            "backbone, pretrained=None, or a path to a local weights file."
        )
    weights = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1
    filename = os.path.basename(weights.url)
    checkpoint_dir = Path(torch.hub.get_dir()) / "checkpoints"
    if (checkpoint_dir / filename).is_file():
        return torch.load(checkpoint_dir / filename, map_location="cpu", weights_only=True)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # no network, proxy, SSL, disk: all mean the same to the user
        raise WeightsUnavailableError(
            f"ImageNet weights for {backbone} ({filename}, torchvision's {weights}) are not "
            f"available offline: put {filename} into {checkpoint_dir}/ or pass "
            "pretrained=<path to a local weights file>."
        ) from exc


def _load_pretrained(backbone_name: str, backbone: nn.Module, pretrained: Any) -> None:
    """Load `pretrained` (see EmbeddingNet) into `backbone`, strictly except for the 'fc.*'
    keys (the ResNet classifier, replaced by our embedding layer)."""
    if pretrained is None or (isinstance(pretrained, str) and pretrained.lower() == "none"):
        return
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        state = _imagenet_state_dict(backbone_name)
        source = f"torchvision's ImageNet weights for {backbone_name}"
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file {str(path)!r} does not exist.")
        state, source = torch.load(path, map_location="cpu", weights_only=True), str(path)
    else:
        raise ValueError(
            f"pretrained must be None, 'none', 'imagenet' or a path to a weights file, "
            f"got {pretrained!r}."
        )
    state = {k: v for k, v in _extract_state_dict(state, source).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mis_shaped:
        raise ValueError(
            f"weights in {source} do not match the backbone: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, mis-shaped keys {mis_shaped[:5]} "
            f"({len(missing)}, {len(unexpected)}, {len(mis_shaped)} in all); expected a state "
            "dict of the same torchvision architecture (only 'fc.*' keys are ignored)."
        )
    backbone.load_state_dict(state, strict=True)


class EmbeddingNet(nn.Module):
    """Fig. 1: backbone -> global average pool -> Linear(F, d) -> coarse (k1) and fine (k2) heads.

    backbone: one of BACKBONES; embedding_dim: d (paper: 1024); n_coarse: k1; n_fine: k2;
    pretrained: None/"none", "imagenet" (torchvision's IMAGENET1K_V1 weights, read from the hub
    cache) or a path to a torchvision state dict of the backbone; normalize: L2-normalise the
    returned embedding; freeze_bn: keep the backbone's BatchNorm running statistics fixed in
    train mode and its affine parameters untrained.
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        embedding_dim: int = 1024,
        n_coarse: int | None = None,
        n_fine: int | None = None,
        pretrained: str | os.PathLike | None = None,
        normalize: bool = True,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        _check_backbone(backbone)
        self.backbone_name = backbone
        self.embedding_dim = checks.integer("embedding_dim", embedding_dim, minimum=1)
        self.n_coarse = checks.integer("n_coarse", n_coarse, minimum=1)
        self.n_fine = checks.integer("n_fine", n_fine, minimum=1)
        self.normalize = bool(normalize)
        self.freeze_bn = bool(freeze_bn)

        if backbone == "smallcnn":
            self.backbone, n_features = SmallCNN(), SmallCNN.out_features
        else:
            self.backbone = getattr(torchvision.models, backbone)(weights=None)
            n_features = self.backbone.fc.in_features
            self.backbone.fc = nn.Identity()  # torchvision's ResNet already pools and flattens
        _load_pretrained(backbone, self.backbone, pretrained)
        self.embedding = nn.Linear(n_features, embedding_dim)
        # Constant buffers: they follow .to(device) but are neither trained nor saved.
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("pixel_mean", 255 * mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", 255 * std.view(1, 3, 1, 1), persistent=False)
        self.coarse_head = nn.Linear(embedding_dim, self.n_coarse)
        self.fine_head = nn.Linear(embedding_dim, self.n_fine)

        if self.freeze_bn:
            for module in self._batch_norms():
                for param in module.parameters():
                    param.requires_grad_(False)
            self.train(self.training)

    def _batch_norms(self) -> list[_BatchNorm]:
        return [m for m in self.modules() if isinstance(m, _BatchNorm)]

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if self.freeze_bn:
            # eval mode: BatchNorm normalises with, and never updates, its running statistics.
            for module in self._batch_norms():
                module.eval()
        return self

    def prepare_input(self, x: object) -> Tensor:
        """Images -> the backbone's input. uint8 (B, 3, H, W) (what the datasets yield, so
        workers pass 4x fewer bytes and the conversion runs on the model's device) are scaled
        and normalised with the ImageNet statistics; float input is taken as already normalised.
        """
        batch = isinstance(x, Tensor) and x.dim() == 4 and x.shape[1] == 3
        if not batch or not (x.dtype == torch.uint8 or x.is_floating_point()):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected uint8 or float images of shape (B, 3, H, W), got {got}.")
        if x.dtype == torch.uint8:
            x = x.to(self.pixel_mean.device, non_blocking=True).float()
            x = (x - self.pixel_mean) / self.pixel_std
        # On a GPU the network runs in channels_last layout (faster convolutions).
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def forward(self, x: Tensor) -> EmbeddingOutput:
        """x (B, 3, H, W) -> EmbeddingOutput(embedding (B, d), coarse (B, k1), fine (B, k2))."""
        raw = self._raw_embedding(x)
        return EmbeddingOutput(self._finish(raw), self.coarse_head(raw), self.fine_head(raw))

    def embed(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) -> (B, d): the same embedding as forward, without the heads."""
        return self._finish(self._raw_embedding(x))

    def _raw_embedding(self, x: Tensor) -> Tensor:
        return self.embedding(self.backbone(self.prepare_input(x)))

    def _finish(self, raw: Tensor) -> Tensor:
        """The embedding the heads do not see: L2-normalised unless `normalize` is off."""
        return F.normalize(raw, dim=1) if self.normalize else raw

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, embedding_dim={self.embedding_dim}, "
            f"n_coarse={self.n_coarse}, n_fine={self.n_fine}, normalize={self.normalize}, "
            f"freeze_bn={self.freeze_bn}"
        )


@torch.no_grad()
def embed_images(
    model: EmbeddingNet,
    images: torch.utils.data.Dataset | Iterable,
    batch_size: int = 256,
    *,
    dtype: torch.dtype | None = None,
    on_device: bool = False,
) -> Tensor:
    """Embed every image, in order -> float32 (N, d) on the CPU (on the model's device with
    `on_device`): the one embedding routine of notebooks, evaluation, inference and the bank.

    images: a Dataset of tuples starting with an image (3, H, W), batched by `batch_size`, or
    any iterable of such batches. Eval mode (restored after), autocast when `dtype` is given.
    """
    if isinstance(images, torch.utils.data.Dataset):
        if len(images) == 0:
            raise ValueError("the dataset is empty; expected at least one image to embed.")
        generator = torch.Generator().manual_seed(0)  # never a draw from the global RNG
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, generator=generator)
    else:
        loader = images
    device = next(model.parameters()).device
    autocast = nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with autocast:
            parts = [
                model.embed(
                    (x[0] if isinstance(x, (list, tuple)) else x).to(device, non_blocking=True)
                )
                for x in loader
            ]
    finally:
        model.train(was_training)
    embeddings = torch.cat(parts).float()
    return embeddings if on_device else embeddings.cpu()
