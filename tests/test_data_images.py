"""qlib.data images: the synthetic set, uint8 transforms (against a brute-force search over
crops), the Dataset, the resized cache (pixels, invalidation, concurrent writers) and the
raw-pixel baseline."""

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from qlib import data
from qlib.data import images, synthetic
from qlib.utils import read_json

# ----------------------------------------------------------------------------------------------
# The synthetic set
# ----------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic(tmp_path):
    a = data.load_synthetic("smoke", seed=0, cache_dir=tmp_path / "a")
    b = data.load_synthetic("smoke", seed=0, cache_dir=tmp_path / "b")
    c = data.load_synthetic("smoke", seed=1, cache_dir=tmp_path / "c")
    assert len(a) == 3 * 4 * 8
    for pa, pb in zip(a["path"], b["path"], strict=True):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    assert not np.array_equal(
        np.asarray(Image.open(a["path"][0])), np.asarray(Image.open(c["path"][0]))
    )
    assert np.asarray(Image.open(a["path"][0])).shape == (32, 32, 3)


def test_synthetic_cache_regenerates_when_incomplete(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    first = Path(manifest["path"][5])
    pixels = np.asarray(Image.open(first))
    first.unlink()
    data.load_synthetic("smoke", cache_dir=tmp_path)
    assert np.array_equal(np.asarray(Image.open(first)), pixels)
    stamp = tmp_path / "smoke-seed0" / "complete.json"
    assert read_json(stamp)["generator_version"] == data.GENERATOR_VERSION


@pytest.mark.parametrize("size", sorted(data.SYNTHETIC_SIZES))
def test_synthetic_hierarchy(size):
    coarse, split, names = synthetic._synthetic_hierarchy(size)
    assert len(names) == coarse.max() + 1 and names == sorted(names)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    assert train.max() < test.min()  # training fine classes first
    if size == "cars196":
        suffix = data.coarse_table("suffix22")["coarse_name"]
        vocab = sorted(set(suffix))
        assert list(coarse) == [vocab.index(s) for s in suffix]
        assert len(train) == len(test) == 98
    else:
        spec = data.SYNTHETIC_SIZES[size]
        assert len(coarse) == spec["n_coarse"] * spec["fine_per_coarse"]
        for c in range(spec["n_coarse"]):  # every coarse class can anchor
            assert (coarse[train] == c).sum() >= 2 and (coarse[test] == c).sum() >= 2


def test_synthetic_bad_inputs():
    with pytest.raises(ValueError, match="unknown synthetic size"):
        data.load_synthetic("huge")
    with pytest.raises(ValueError, match="seed"):
        data.load_synthetic("smoke", seed=-1)


# ----------------------------------------------------------------------------------------------
# Transforms: uint8 in, uint8 out
# ----------------------------------------------------------------------------------------------


def _windows(image: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Every size x size crop of image and of its mirror image (brute force)."""
    _, h, w = image.shape
    return [
        source[:, top : top + size, left : left + size]
        for source in (image, image.flip(-1))
        for top in range(h - size + 1)
        for left in range(w - size + 1)
    ]


def test_transforms_are_uint8_crops_of_the_resized_image():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    size = 14
    side = data.resize_side(size)
    assert side == 16 and data.resize_side(224) == 256
    resized = images.shrink(image, side)
    assert resized.shape == (3, 16, 24)
    train, evaluate = data.make_transforms(size, train=True), data.make_transforms(size, False)
    out = evaluate(image)
    assert out.dtype == torch.uint8 and out.shape == (3, size, size)
    assert torch.equal(out, resized[:, 1:15, 5:19])  # the center crop
    windows = _windows(resized, size)
    for seed in range(5):
        torch.manual_seed(seed)
        crop = train(image)
        assert crop.dtype == torch.uint8 and crop.shape == (3, size, size)
        assert any(torch.equal(crop, w) for w in windows)
        torch.manual_seed(seed)
        assert torch.equal(train(image), crop)  # deterministic under a seed
    torch.manual_seed(0)
    crops = {tuple(train(image).flatten().tolist()) for _ in range(8)}
    assert len(crops) > 1  # and random without one
    with pytest.raises(ValueError, match="image_size"):
        data.make_transforms(0, train=True)


def test_shrink_never_enlarges():
    small = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    assert images.shrink(small, 20) is small and images.shrink(small, 64) is small
    assert images.shrink(small, 10).shape == (3, 10, 15)


# ----------------------------------------------------------------------------------------------
# The Dataset
# ----------------------------------------------------------------------------------------------


def test_dataset_items_and_cache(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    plain = data.HierarchicalImageDataset(manifest)
    cached = data.HierarchicalImageDataset(manifest, cache_in_memory=True)
    assert len(plain) == len(manifest)
    for i in (0, 17, len(manifest) - 1):
        x, fine, coarse = plain[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
        assert torch.equal(x, data.read_image(manifest["path"][i]))
        assert (fine, coarse) == (manifest["fine"][i], manifest["coarse"][i])
        assert torch.equal(cached[i][0], x)
    flipped = cached.with_transform(lambda image: image.flip(-1))
    assert flipped._images is cached._images  # the decoded images are shared, not re-read
    assert torch.equal(flipped[0][0], cached[0][0].flip(-1)) and cached.transform is None


def test_dataset_names_unreadable_image(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"garbage")
    df = pd.DataFrame({"path": [str(path)], "fine": [0], "coarse": [0]})
    with pytest.raises(ValueError, match="bad.png"):
        data.HierarchicalImageDataset(df)[0]
    with pytest.raises(ValueError, match="bad.png"):
        data.HierarchicalImageDataset(df, resize_cache=tmp_path / "cache")[0]
    df["path"] = str(tmp_path / "gone.jpg")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        data.HierarchicalImageDataset(df, resize_cache=tmp_path / "cache")[0]


def test_pixel_embeddings(tmp_path):
    manifest = data.load_synthetic("smoke", cache_dir=tmp_path)
    emb = data.pixel_embeddings(manifest.iloc[:5], image_size=16)
    assert emb.shape == (5, 3 * 16 * 16) and emb.dtype == torch.float32
    first = data.make_transforms(16, train=False)(data.read_image(manifest["path"][0]))
    assert torch.equal(emb[0], first.flatten().float() / 255)


# ----------------------------------------------------------------------------------------------
# The resized cache
# ----------------------------------------------------------------------------------------------


def _photo(seed: int, width: int = 150, height: int = 100) -> np.ndarray:
    """A smooth picture with some texture, like a photograph as far as JPEG is concerned."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 20.0
    channels = [
        np.sin(x * rng.uniform(0.5, 2) + c) + np.cos(y * rng.uniform(0.5, 2)) for c in range(3)
    ]
    pixels = 127 + 60 * np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _jpeg_manifest(folder: Path, n: int = 4) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(_photo(i)).save(paths[-1], quality=90)
    return pd.DataFrame({"path": paths, "fine": range(n), "coarse": [0] * n})


def test_resized_cache_matches_the_slow_path(tmp_path):
    manifest = _jpeg_manifest(tmp_path / "src")
    size = 56  # resize side 64: the cache keeps a short side of 64
    transform = data.make_transforms(size, train=False)
    slow = data.HierarchicalImageDataset(manifest, transform)
    fast = data.HierarchicalImageDataset(
        manifest, transform, resize_cache=tmp_path / "cache", cache_side=data.resize_side(size)
    )
    for i in range(len(manifest)):
        a, b = slow[i][0].float(), fast[i][0].float()
        assert fast[i][0].dtype == torch.uint8 and a.shape == b.shape == (3, size, size)
        assert (a - b).abs().mean() < 2.5 and (a - b).abs().max() < 40  # JPEG q95 re-encoding
        cached = images.resized_cache_file(manifest["path"][i], tmp_path / "cache", 64)
        assert cached.is_file() and Image.open(cached).size == (96, 64)
    again = data.HierarchicalImageDataset(manifest, resize_cache=tmp_path / "cache", cache_side=64)
    assert torch.equal(again[0][0], fast.with_transform(None)[0][0])  # first read == later reads
    in_memory = data.HierarchicalImageDataset(
        manifest, resize_cache=tmp_path / "cache", cache_side=64, cache_in_memory=True
    )
    assert torch.equal(in_memory[1][0], again[1][0])


def test_resized_cache_reads_the_copy_not_the_source(tmp_path, monkeypatch):
    manifest = _jpeg_manifest(tmp_path / "src", n=1)
    dataset = data.HierarchicalImageDataset(
        manifest, resize_cache=tmp_path / "cache", cache_side=32
    )
    first = dataset[0][0]

    read_image = images.read_image

    def copies_only(path):
        assert str(path) != manifest["path"][0], "decoded the source again"
        return read_image(path)

    monkeypatch.setattr(images, "read_image", copies_only)
    assert torch.equal(dataset[0][0], first)


def test_resized_cache_follows_a_changed_source(tmp_path):
    manifest = _jpeg_manifest(tmp_path / "src", n=1)
    path = manifest["path"][0]
    dataset = data.HierarchicalImageDataset(
        manifest, resize_cache=tmp_path / "cache", cache_side=32
    )
    before, old_file = dataset[0][0], images.resized_cache_file(path, tmp_path / "cache", 32)
    Image.fromarray(_photo(99)).save(path, quality=90)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse clock ticks too
    new_file = images.resized_cache_file(path, tmp_path / "cache", 32)
    assert new_file != old_file
    after = dataset[0][0]
    assert new_file.is_file() and (after.float() - before.float()).abs().mean() > 10
    expected = images.shrink(data.read_image(path), 32).float()
    assert (after.float() - expected).abs().mean() < 2.5


def _read_all(args):
    paths, folder = args
    return [images.read_resized(p, folder, 32).numpy() for p in paths]


def test_resized_cache_is_safe_for_concurrent_writers(tmp_path):
    manifest = _jpeg_manifest(tmp_path / "src", n=6)
    paths = manifest["path"].tolist()
    folder = tmp_path / "cache"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_read_all, [(paths, folder)] * 6)
    reference = _read_all((paths, folder))  # from the finished cache
    for result in results:
        assert all(np.array_equal(a, b) for a, b in zip(result, reference, strict=True))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 6 and all(p.suffix == ".jpg" and not p.name.startswith(".") for p in files)
