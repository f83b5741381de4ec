"""The embedded dataset: a fine-grained hierarchical image set rendered in seconds, no download
(what each level of the hierarchy draws: data/README.md). Images are written once as PNG files
so that the manifest has real paths.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from .. import checks
from ..utils import read_json, write_json
from .coarse import DATA_DIR, coarse_table
from .manifest import SPLITS, check_manifest

SYNTHETIC_DIR = DATA_DIR / "synthetic"
# Bump whenever the pictures change: the cache under data/synthetic/ is keyed by it.
GENERATOR_VERSION = 2
SYNTHETIC_SIZES = {
    # n_coarse x fine_per_coarse fine classes (half of each coarse class trains), images per
    # fine class, stored image side in pixels. "cars196" copies the suffix22 hierarchy.
    "smoke": {"n_coarse": 3, "fine_per_coarse": 4, "images_per_class": 8, "image_size": 32},
    "demo": {"n_coarse": 6, "fine_per_coarse": 8, "images_per_class": 32, "image_size": 64},
    "cars196": {"n_coarse": 22, "fine_per_coarse": None, "images_per_class": 40, "image_size": 64},
}


def _synthetic_hierarchy(size: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coarse id of each fine class, split of each fine class, coarse names), training fine
    classes first. "cars196" copies Stanford Cars' suffix22 hierarchy and 1-98 / 99-196 split
    (coarse classes with a single training fine class included), names shapeNN."""
    spec = SYNTHETIC_SIZES[size]
    if spec["fine_per_coarse"] is None:
        labels = coarse_table("suffix22")["coarse_name"].tolist()
        vocabulary = sorted(set(labels))
        coarse = np.array([vocabulary.index(label) for label in labels])
        split = np.where(np.arange(len(labels)) < len(labels) // 2, "train", "test")  # 1-98
    else:
        block = np.repeat(np.arange(spec["n_coarse"]), spec["fine_per_coarse"] // 2)
        coarse = np.concatenate([block, block])
        split = np.repeat(np.array(SPLITS), len(block))
    return coarse, split, [f"shape{c:02d}" for c in range(int(coarse.max()) + 1)]


def _silhouette_params(rng: np.random.Generator) -> dict:
    """A coarse class's outline: a star-shaped curve r(theta) of harmonics 2-5, elongated."""
    return {
        "harmonics": np.arange(2, 6),
        "amplitudes": rng.uniform(0.05, 0.24, 4) * rng.permutation([1.0, 1.0, 0.5, 0.25]),
        "phases": rng.uniform(0, 2 * np.pi, 4),
        "elongation": rng.uniform(0.5, 1.0),
    }


def _fine_params(rng: np.random.Generator) -> dict:
    """A fine class's attributes, drawn from one shared distribution so that unseen classes
    are new points of the same attribute space: 1-3 parallel stripes (angle, offset, width),
    a mark (disc, square or ring; position, size) and a small outline tweak."""
    return {
        "stripe_count": int(rng.integers(1, 4)),
        "stripe_angle": rng.uniform(0, np.pi),
        "stripe_offset": rng.uniform(-0.25, 0.25),
        "stripe_width": rng.uniform(0.07, 0.13),
        "mark_kind": int(rng.integers(0, 3)),
        "mark_angle": rng.uniform(0, 2 * np.pi),
        "mark_radius": rng.uniform(0.2, 0.55),  # fraction of the outline's radius at that angle
        "mark_size": rng.uniform(0.12, 0.19),
        "tweak_harmonic": int(rng.integers(6, 9)),
        "tweak_amplitude": rng.uniform(0.0, 0.06),
        "tweak_phase": rng.uniform(0, 2 * np.pi),
    }


def _radius(theta: np.ndarray, shape: dict, fine: dict) -> np.ndarray:
    r = np.ones_like(theta)
    for k, a, p in zip(shape["harmonics"], shape["amplitudes"], shape["phases"], strict=True):
        r += a * np.cos(k * theta + p)
    r += fine["tweak_amplitude"] * np.cos(fine["tweak_harmonic"] * theta + fine["tweak_phase"])
    return np.maximum(r, 0.35)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    """A colour gradient and low-contrast clutter (discs, lines) in the background's own hue."""
    bg_hue, bg_value = rng.uniform(0, 1), rng.uniform(0.35, 0.85)
    base = np.asarray(_hsv(bg_hue, rng.uniform(0.05, 0.4), bg_value), dtype=np.float32)
    ramp_dir = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ramp_dir) * np.arange(side)[None, :] + np.sin(ramp_dir) * np.arange(side)[:, None]
    ramp = (ramp / side)[..., None] * rng.uniform(-40, 40, 3)
    image = Image.fromarray(np.clip(base + ramp, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        color = _hsv(
            bg_hue + rng.uniform(-0.1, 0.1),
            rng.uniform(0.05, 0.5),
            np.clip(bg_value + rng.uniform(-0.25, 0.25), 0, 1),
        )
        x, y = rng.uniform(0, side, 2)
        if rng.uniform() < 0.5:
            rx, ry = rng.uniform(0.03, 0.12, 2) * side
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=color)
        else:
            x2, y2 = rng.uniform(0, side, 2)
            draw.line([x, y, x2, y2], fill=color, width=int(rng.integers(2, 6)))
    return image


def _masks(shape: dict, fine: dict, place, scale: float, angle: float, side: int) -> tuple:
    """(body, stripes, mark) masks "L" (side, side), in the object's frame mapped by `place`."""
    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    radius = _radius(theta, shape, fine)
    unit = 1.0 / radius.max()
    outline = unit * np.stack(
        [radius * np.cos(theta), shape["elongation"] * radius * np.sin(theta)], 1
    )
    body, stripes, mark = (Image.new("L", (side, side), 0) for _ in range(3))
    ImageDraw.Draw(body).polygon(place(outline), fill=255)

    direction = np.array([math.cos(fine["stripe_angle"]), math.sin(fine["stripe_angle"])])
    normal = np.array([-direction[1], direction[0]])
    half_width = fine["stripe_width"] / 2
    for j in range(fine["stripe_count"]):
        offset = fine["stripe_offset"] + (j - (fine["stripe_count"] - 1) / 2) * 0.28
        corners = [
            offset * normal + s * half_width * normal + t * 2 * direction
            for s, t in ((-1, -1), (-1, 1), (1, 1), (1, -1))
        ]
        ImageDraw.Draw(stripes).polygon(place(np.array(corners)), fill=255)

    a = fine["mark_angle"]
    r_mark = fine["mark_radius"] * _radius(np.array([a]), shape, fine)[0] * unit
    cx, cy = place(np.array([r_mark * math.cos(a), shape["elongation"] * r_mark * math.sin(a)]))[0]
    size = fine["mark_size"] * scale
    box = [cx - size, cy - size, cx + size, cy + size]
    draw = ImageDraw.Draw(mark)
    if fine["mark_kind"] == 0:
        draw.ellipse(box, fill=255)
    elif fine["mark_kind"] == 1:
        draw.regular_polygon((cx, cy, size), 4, rotation=math.degrees(angle), fill=255)
    else:
        draw.ellipse(box, outline=255, width=max(2, int(size / 2.5)))
    return body, stripes, mark


def render_synthetic_image(
    shape: dict, fine: dict, rng: np.random.Generator, image_size: int
) -> np.ndarray:
    """One instance of the coarse class `shape` and fine class `fine` -> uint8 (image_size,
    image_size, 3); `rng` draws the pose, scale, position, every colour, clutter and noise."""
    side = 2 * image_size  # draw at twice the size, then downsample: anti-aliasing
    mirror = rng.choice([-1.0, 1.0])
    angle = rng.uniform(-np.pi / 9, np.pi / 9)
    scale = rng.uniform(0.34, 0.44) * side
    center = side / 2 + rng.uniform(-0.08, 0.08, 2) * side
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    to_image = scale * rotation @ np.diag([mirror, 1.0])

    def place(points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in np.atleast_2d(points) @ to_image.T + center]

    image = _background(rng, side)
    body_value = rng.uniform(0.45, 0.95)
    body_color = _hsv(rng.uniform(0, 1), rng.uniform(0.35, 0.9), body_value)
    dark = body_value > 0.7  # details contrast with the body
    if dark:
        stripe_color = tuple(int(c * 0.35) for c in body_color)
    else:
        stripe_color = tuple(int(c + (255 - c) * 0.7) for c in body_color)
    body, stripes, mark = _masks(shape, fine, place, scale, angle, side)
    image.paste(body_color, mask=body)
    image.paste(stripe_color, mask=ImageChops.multiply(body, stripes))
    image.paste((20, 20, 20) if dark else (240, 240, 240), mask=ImageChops.multiply(body, mark))

    small = image.resize((image_size, image_size), Image.Resampling.BOX)
    small = np.asarray(small, dtype=np.float32) + rng.normal(0, 4.0, (image_size, image_size, 3))
    return np.clip(small, 0, 255).astype(np.uint8)


def _image_name(fine: int, index: int) -> str:
    """The file of image `index` of fine class `fine`: the manifest and the renderer agree."""
    return f"{fine:03d}_{index:03d}.png"


def _synthetic_rows(size: str, folder: Path) -> pd.DataFrame:
    """The manifest of the set in `folder`: image i of fine class f is <folder>/fff_iii.png."""
    coarse, split, names = _synthetic_hierarchy(size)
    n = SYNTHETIC_SIZES[size]["images_per_class"]
    fine, index = np.repeat(np.arange(len(coarse)), n), np.tile(np.arange(n), len(coarse))
    rows = {
        "path": [str(folder / _image_name(f, i)) for f, i in zip(fine, index, strict=True)],
        "fine": fine,
        "coarse": coarse[fine],
        "fine_name": [f"{names[coarse[f]]}-f{f:03d}" for f in fine],
        "coarse_name": [names[c] for c in coarse[fine]],
        "split": split[fine],
    }
    return pd.DataFrame(rows)


def _render_into(folder: Path, size: str, seed: int, stamp: dict) -> None:
    """Render every image into a private folder, then swap it in as `folder`: parallel test
    workers or notebooks never read a half-written set. Each image has its own random stream
    seeded by (seed, 3, fine id, index); class attributes by (seed, 1 or 2, class id)."""
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    coarse, _, _ = _synthetic_hierarchy(size)
    shapes = [
        _silhouette_params(np.random.default_rng([seed, 1, c])) for c in range(max(coarse) + 1)
    ]
    fines = [_fine_params(np.random.default_rng([seed, 2, f])) for f in range(len(coarse))]
    spec = SYNTHETIC_SIZES[size]
    for f in range(len(coarse)):
        for i in range(spec["images_per_class"]):
            rng = np.random.default_rng([seed, 3, f, i])
            pixels = render_synthetic_image(shapes[coarse[f]], fines[f], rng, spec["image_size"])
            Image.fromarray(pixels).save(staging / _image_name(f, i), compress_level=1)
    write_json(staging / "complete.json", stamp)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process swapped in the same (deterministic) images first
        shutil.rmtree(staging, ignore_errors=True)


def load_synthetic(
    size: str = "demo", seed: int = 0, cache_dir: str | Path | None = None
) -> pd.DataFrame:
    """The embedded hierarchical image dataset -> manifest of PNG files (sizes: SYNTHETIC_SIZES,
    described in data/README.md), rendered once into <cache_dir>/<size>-seed<seed>/ (default
    data/synthetic/) and reused while its stamp (generator version, size, seed, image count)
    matches."""
    if size not in SYNTHETIC_SIZES:
        raise ValueError(
            f"unknown synthetic size {size!r}; expected one of {tuple(SYNTHETIC_SIZES)}."
        )
    seed = checks.integer("seed", seed, minimum=0)
    folder = Path(SYNTHETIC_DIR if cache_dir is None else cache_dir).expanduser()
    folder = folder / f"{size}-seed{seed}"
    manifest = _synthetic_rows(size, folder)
    stamp = dict(generator_version=GENERATOR_VERSION, size=size, seed=seed, n_images=len(manifest))
    stamp_file = folder / "complete.json"
    if not (
        stamp_file.is_file()
        and read_json(stamp_file) == stamp
        and all(os.path.isfile(p) for p in manifest["path"])
    ):
        _render_into(folder, size, seed, stamp)
    return check_manifest(manifest)
