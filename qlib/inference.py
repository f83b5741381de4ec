"""Use a trained run: embed images with it, save the embeddings, retrieve nearest neighbours.

    run = load("runs/demo/method2_seed0")                # the run's last checkpoint
    gallery = embed(run, "runs/demo/data/manifest.csv")  # a folder, a manifest, paths, a DataFrame
    gallery.save("gallery.npz")
    retrieve(run, "gallery.npz", "query.png", k=5)       # DataFrame: rank, path, distance, labels

Images get the run's own evaluation preprocessing (as for the test split during training);
distances are Euclidean between the run's embeddings, as in Recall@K. The checkpoint is the
run's last one: the trainer keeps no "best" checkpoint, since picking one by its test score
would select on the test split.

An embedding file (`.npz`, read by `numpy.load` without pickles) holds:
    embeddings   float32 (N, d)
    path         str (N,)  absolute image paths
    fine, coarse int64 (N,)  class ids, -1 where unknown
    fine_name, coarse_name, split   str (N,), "" where unknown
    run          str ()  JSON: which model embedded them (run folder, checkpoint, a SHA-256 of
                 the weights, backbone, embedding size, image size, ...)
`retrieve` refuses a gallery embedded by other weights than the run's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import data as qdata
from . import model as qmodel
from .data.manifest import IMAGE_EXTENSIONS, is_image_file
from .utils import atomic_write_bytes, resolve_device, resolve_path

FORMAT = "qlib-embeddings/1"
# Per image: the file and, where known, its labels (-1 / "" when not).
LABEL_COLUMNS = ("fine", "coarse", "fine_name", "coarse_name", "split")
_UNKNOWN = {"fine": -1, "coarse": -1, "fine_name": "", "coarse_name": "", "split": ""}


class ModelMismatchError(ValueError):
    """An embedding file was written by another model than the one asked to use it."""


@dataclass
class LoadedRun:
    """A trained run ready to embed: its folder, config, model (eval mode, on `device`) and
    `identity`, what an embedding file records about the model."""

    run_dir: Path
    config: Any  # qlib.train.TrainConfig
    model: qmodel.EmbeddingNet
    device: torch.device
    image_size: int
    identity: dict[str, Any] = field(repr=False)


@dataclass
class Embeddings:
    """N embedded images: `vectors` float32 (N, d), `items` one row per image (`path` and
    LABEL_COLUMNS, -1 / "" where unknown), `run` the identity of the model that embedded them."""

    vectors: np.ndarray
    items: pd.DataFrame
    run: dict[str, Any]

    def __len__(self) -> int:
        return len(self.items)

    def save(self, path: str | Path) -> Path:
        """Write the `.npz` file described in the module docstring (atomically); returns it."""
        path = Path(path).expanduser()
        arrays = {
            "embeddings": np.ascontiguousarray(self.vectors, dtype=np.float32),
            **{
                c: self.items[c].to_numpy(np.int64 if c in ("fine", "coarse") else str)
                for c in ("path", *LABEL_COLUMNS)
            },
            "run": np.array(json.dumps(self.run, sort_keys=True)),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        return path


def load(
    run_dir: str | Path, checkpoint: str | Path = "last", device: str | torch.device = "auto"
) -> LoadedRun:
    """A run folder of `qlib.train` -> LoadedRun (model in eval mode; device "auto" = CUDA when
    present). `checkpoint`: "last", "epoch_XXX" or a path to a .pt file. A relative `run_dir`
    starts at the repository root, like every qlib path."""
    from . import train as qtrain

    run_dir = resolve_path(run_dir)
    device = resolve_device(device)
    config, model = qtrain.load_run(run_dir, checkpoint, device=device)
    image_size = config.image_size or qmodel.default_image_size(config.backbone)
    identity = {
        "format": FORMAT,
        "run_dir": str(run_dir),
        "run_name": run_dir.name,
        "checkpoint": str(checkpoint),
        "finished": bool(qtrain.run_is_finished(run_dir)),
        "weights_sha256": weights_fingerprint(model),
        "method": config.method,
        "seed": config.seed,
        "backbone": config.backbone,
        "embedding_dim": model.embedding_dim,
        "normalize": model.normalize,
        "image_size": image_size,
    }
    return LoadedRun(run_dir, config, model, device, image_size, identity)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, values): the same weights give
    the same hash on any device, any other weights another one."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def image_table(images: str | Path | Sequence[str | Path] | pd.DataFrame) -> pd.DataFrame:
    """The images to embed -> DataFrame with `path` (absolute) and LABEL_COLUMNS.

    images: a folder (every image file below it, sorted, hidden folders left out; no labels),
    a CSV (`path` and, when present, `fine`, `coarse` as integer ids or names, `fine_name`,
    `coarse_name`, `split`; relative paths start at the CSV's folder; no split is invented and
    any set of classes is accepted: a gallery need not be a training manifest), a single
    image file, a list of image paths, or a DataFrame with a `path` column (and labels, e.g.
    a run's manifest). Missing files are reported all at once.
    """
    frame = images
    if isinstance(images, (str, os.PathLike)):
        source = Path(images).expanduser()
        if source.is_dir():
            frame = _folder_images(source)
        elif source.suffix.lower() == ".csv" and source.is_file():
            frame = _read_image_csv(source)
        elif source.suffix.lower() in IMAGE_EXTENSIONS or source.is_file():
            frame = [str(source)]
        else:
            raise FileNotFoundError(
                f"{str(source)!r} does not exist; pass a folder of images, a manifest CSV or "
                "image files."
            )
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame({"path": [str(p) for p in frame]})
    if "path" not in frame.columns:
        raise ValueError("the image table has no 'path' column; expected one path per row.")
    if len(frame) == 0:
        raise ValueError("no images to embed; pass at least one image.")
    paths = [os.path.abspath(os.path.expanduser(p)) for p in frame["path"].astype(str)]
    table = pd.DataFrame({"path": paths})
    for column, unknown in _UNKNOWN.items():
        values = (
            frame[column].fillna(unknown) if column in frame.columns else [unknown] * len(frame)
        )
        table[column] = np.asarray(values).astype(np.int64 if unknown == -1 else str)
    missing = [p for p in table["path"] if not os.path.isfile(p)]
    if missing:
        more = f" ({len(missing) - 1} more images are missing too)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"image {missing[0]!r} does not exist{more}; check the paths (a manifest's relative "
            "paths start at the CSV's folder)."
        )
    return table


def _read_image_csv(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "path" not in raw.columns:
        raise ValueError(
            f"{str(path)!r} has no 'path' column; expected a CSV with one image path per row "
            "(and optionally fine, coarse, fine_name, coarse_name, split)."
        )
    raw["path"] = [p if os.path.isabs(p) else str(path.parent / p) for p in raw["path"]]
    for level in ("fine", "coarse"):
        labels = raw.get(level)
        if labels is not None and not labels.str.fullmatch(r"\d+").all():  # names -> ids
            raw[f"{level}_name"] = labels
            raw[level] = labels.map({name: i for i, name in enumerate(sorted(set(labels)))})
    return raw


def _folder_images(folder: Path) -> list[str]:
    """Every image file below `folder`, sorted, outside hidden folders (.ipynb_checkpoints, a
    render's staging folder)."""
    images = [
        str(p)
        for p in sorted(folder.rglob("*"))
        if is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    if not images:
        raise FileNotFoundError(
            f"folder {str(folder)!r} holds no image file ({', '.join(IMAGE_EXTENSIONS)}); "
            "pass a folder of images, a manifest CSV or image paths."
        )
    return images


@torch.no_grad()
def embed(
    run: LoadedRun | str | Path,
    images: str | Path | Sequence[str | Path] | pd.DataFrame,
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> Embeddings:
    """Embed images with a run (a LoadedRun or a run folder) -> Embeddings, in the order of
    `image_table(images)`. batch_size: images per forward pass (default the run's
    eval_batch_size); progress: a tqdm bar. Always float32: on a GPU with `amp` the trainer's
    own evaluation embedded in bfloat16, so its vectors differ from these at that precision."""
    run = run if isinstance(run, LoadedRun) else load(run)
    table = image_table(images)
    loader = torch.utils.data.DataLoader(
        qdata.HierarchicalImageDataset(table, qdata.make_transforms(run.image_size, train=False)),
        batch_size=run.config.eval_batch_size if batch_size is None else batch_size,
        num_workers=num_workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="embedding", unit="batch")
    vectors = qmodel.embed_images(run.model, loader)
    return Embeddings(vectors.numpy(), table, dict(run.identity))


def read_embeddings(path: str | Path) -> Embeddings:
    """An embedding file written by `Embeddings.save` (or `qlib embed`) -> Embeddings."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding file {str(path)!r} does not exist; write one with qlib embed."
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{str(path)!r} is not an embedding file written by qlib embed ({err})."
        ) from err
    expected = {"embeddings", "path", "run", *LABEL_COLUMNS}
    if expected - set(arrays):
        raise ValueError(
            f"{str(path)!r} is not an embedding file written by qlib embed (it lacks "
            f"{sorted(expected - set(arrays))})."
        )
    run = json.loads(str(arrays["run"]))
    if run.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} has format {run.get('format')!r}, expected {FORMAT!r}; embed again."
        )
    items = pd.DataFrame({c: arrays[c] for c in ("path", *LABEL_COLUMNS)})
    return Embeddings(arrays["embeddings"].astype(np.float32), items, run)


def retrieve(
    run: LoadedRun | str | Path,
    gallery: Embeddings | str | Path,
    query: str | Path,
    k: int = 5,
) -> pd.DataFrame:
    """The k gallery images nearest to the query image -> DataFrame with `rank` (1 = nearest),
    `path`, `distance` (Euclidean, between embeddings) and the labels the gallery knows.

    gallery: Embeddings or an embedding file, embedded by this very run (checked). The query
    file itself is left out when it is in the gallery (as in Recall@K); ties go to the lower
    gallery index."""
    run = run if isinstance(run, LoadedRun) else load(run)
    source = "the gallery"
    if not isinstance(gallery, Embeddings):
        source = f"gallery {str(gallery)!r}"
        gallery = read_embeddings(gallery)
    theirs, ours = gallery.run, run.identity
    if theirs.get("weights_sha256") != ours["weights_sha256"]:
        raise ModelMismatchError(
            f"{source} was embedded by another model (run {theirs.get('run_dir')!r}, checkpoint "
            f"{theirs.get('checkpoint')!r}, weights {str(theirs.get('weights_sha256'))[:12]}) "
            f"than {str(run.run_dir)!r} (checkpoint {ours['checkpoint']!r}, weights "
            f"{ours['weights_sha256'][:12]}); embed the gallery again with this run (qlib embed)."
        )
    query_path = os.path.abspath(os.path.expanduser(str(query)))
    if not os.path.isfile(query_path):
        raise FileNotFoundError(f"query image {query_path!r} does not exist.")
    keep = np.flatnonzero(gallery.items["path"].to_numpy(str) != query_path)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(keep):
        raise ValueError(
            f"k must be an int between 1 and {len(keep)} (the gallery's images other than the "
            f"query), got {k!r}."
        )
    vector = embed(run, [query_path]).vectors[0]
    distances = np.linalg.norm(gallery.vectors[keep] - vector, axis=1)
    order = np.argsort(distances, kind="stable")[:k]
    rows = gallery.items.iloc[keep[order]].reset_index(drop=True)
    result = pd.DataFrame(
        {"rank": np.arange(1, k + 1), "path": rows["path"], "distance": distances[order]}
    )
    for column in LABEL_COLUMNS:
        if (rows[column] != _UNKNOWN[column]).any():
            result[column] = rows[column]
    return result
