"""Images: decoding, the paper's augmentation on uint8 tensors, the Dataset that serves every
manifest, and a cache of pre-resized copies that makes decoding cheap (data/README.md).

An item is a uint8 tensor (3, s, s), not normalised: `qlib.model.EmbeddingNet` does that on its
own device, so data-loader workers do less work and pass 4x fewer bytes.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from .. import checks
from ..utils import atomic_write_bytes

CACHE_QUALITY = 95  # JPEG quality of the copies: a mean error of 1-2 grey levels (of 255)
CACHE_VERSION = 1  # part of every cache key: bump it when the cached pixels change


def read_image(path: str | Path) -> Tensor:
    """Decode an image file -> uint8 (3, H, W), RGB whatever the file's mode."""
    try:
        with Image.open(path) as img:
            array = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as err:  # PIL raises many types for missing and broken files
        raise ValueError(
            f"cannot read image {str(path)!r} ({err}); expected an image file (JPEG, PNG, ...)."
        ) from err
    return torch.from_numpy(array).permute(2, 0, 1)


def image_is_readable(path: str | Path) -> bool:
    try:
        read_image(path)
        return True
    except ValueError:
        return False


def resize_side(image_size: int) -> int:
    """The short side images are resized to before the crop: image_size * 256 / 224 (the
    usual ImageNet ratio; 256 for the paper's 224 px)."""
    return int(checks.integer("image_size", image_size, minimum=8) * 256 / 224)


def resize_transform(image_size: int) -> Callable[[Tensor], Tensor]:
    """uint8 (3, H, W) -> its short side resized to `resize_side(image_size)` (antialiased)."""
    from torchvision.transforms import v2

    return v2.Resize(resize_side(image_size), antialias=True)


def crop_and_flip(image: Tensor, size: int, top: float, left: float, flip: float) -> Tensor:
    """The random part of the augmentation, from explicit draws in [0, 1): a `size` x `size`
    crop at fractions `top`, `left` of the free range, mirrored when `flip` >= 0.5.
    (3, H, W) -> (3, size, size). The trainer draws them with its own generator."""
    height, width = image.shape[-2:]
    y, x = int(top * (height - size + 1)), int(left * (width - size + 1))
    image = image[:, y : y + size, x : x + size]
    return (image.flip(-1) if flip >= 0.5 else image).contiguous()


def make_transforms(image_size: int, train: bool) -> Callable[[Tensor], Tensor]:
    """uint8 (3, H, W) -> uint8 (3, image_size, image_size): the short side resized to
    `resize_side(image_size)`, then the center crop (eval) or `crop_and_flip` with draws from
    torch's global RNG (train; `qlib.train` draws them from the run's own generator)."""
    from torchvision.transforms import v2

    resize = resize_transform(image_size)
    if not train:
        return v2.Compose([resize, v2.CenterCrop(image_size)])

    def augment(image: Tensor) -> Tensor:
        return crop_and_flip(resize(image), image_size, *torch.rand(3).tolist())

    return augment


def shrink(image: Tensor, short_side: int) -> Tensor:
    """uint8 (3, H, W) -> its short side resized to `short_side` exactly as `make_transforms`
    does, or the image itself when it is that small already (never enlarged)."""
    from torchvision.transforms.v2 import functional as F

    if min(image.shape[-2:]) <= short_side:
        return image
    return F.resize(image, short_side, antialias=True)


def resized_cache_file(path: str | Path, folder: str | Path, short_side: int) -> Path:
    """Where the resized copy of `path` lives: <folder>/s<side>/<2 hex>/<key>.jpg, the key a
    hash of the source's absolute path, size and mtime (a changed source gets a new file)."""
    try:
        stat = os.stat(path)
    except OSError as err:
        raise FileNotFoundError(f"cannot read image {path}: {err.strerror}.") from err
    key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{short_side}|{CACHE_VERSION}"
    digest = hashlib.sha1(key.encode()).hexdigest()
    return Path(folder) / f"s{short_side}" / digest[:2] / f"{digest}.jpg"


def read_resized(path: str | Path, folder: str | Path, short_side: int = 256) -> Tensor:
    """`shrink(read_image(path), short_side)` through the cache in `folder` -> uint8 (3, h, w).
    The copy is written atomically: concurrent writers of one entry write the same bytes, and a
    reader sees either no file or a whole one."""
    target = resized_cache_file(path, folder, short_side)
    if not target.is_file():
        pixels = shrink(read_image(path), short_side).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=CACHE_QUALITY)
        atomic_write_bytes(target, buffer.getvalue())
    return read_image(target)


class HierarchicalImageDataset(torch.utils.data.Dataset):
    """Row i of the manifest -> (image uint8 (3, H, W), fine int, coarse int).

    transform: applied to the decoded image (None: as is); cache_in_memory: decode every image
    once up front (small sets); resize_cache: a folder for `read_resized` copies with short
    side `cache_side` (use `resize_side(image_size)`: the transform's resize is then a no-op).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        transform: Callable[[Tensor], Tensor] | None = None,
        cache_in_memory: bool = False,
        resize_cache: str | Path | None = None,
        cache_side: int = 256,
    ) -> None:
        missing = [c for c in ("path", "fine", "coarse") if c not in manifest.columns]
        if missing:
            raise ValueError(f"manifest lacks columns {missing}; expected path, fine, coarse.")
        self.paths = manifest["path"].astype(str).tolist()
        self.fine = torch.tensor(manifest["fine"].to_numpy(np.int64))
        self.coarse = torch.tensor(manifest["coarse"].to_numpy(np.int64))
        self.transform = transform
        self.resize_cache = None if resize_cache is None else Path(resize_cache).expanduser()
        self.cache_side = checks.integer("cache_side", cache_side, minimum=8)
        self._images = [self._read(i) for i in range(len(self))] if cache_in_memory else None

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> Tensor:
        if self.resize_cache is None:
            return read_image(self.paths[index])
        return read_resized(self.paths[index], self.resize_cache, self.cache_side)

    def with_transform(
        self, transform: Callable[[Tensor], Tensor] | None
    ) -> HierarchicalImageDataset:
        """The same images under another transform, sharing the decoded cache (no re-reading)."""
        twin = copy.copy(self)
        twin.transform = transform
        return twin

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image = self._images[index] if self._images is not None else self._read(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.fine[index]), int(self.coarse[index])


def pixel_embeddings(manifest: pd.DataFrame, image_size: int = 32) -> Tensor:
    """Raw pixels as an embedding, the "no learning at all" baseline: each image resized and
    center-cropped to image_size, scaled to [0, 1], flattened -> float (N, 3 * image_size**2)."""
    dataset = HierarchicalImageDataset(manifest, make_transforms(image_size, train=False))
    return torch.stack([dataset[i][0].flatten() for i in range(len(dataset))]).float() / 255.0
