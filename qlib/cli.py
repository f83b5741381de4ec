"""The `qlib` command: use a trained run from a shell (`qlib.inference` does the work).

    qlib embed --run RUN_DIR --images FOLDER_OR_MANIFEST --out FILE.npz [--split test]
    qlib retrieve --run RUN_DIR --gallery FILE.npz --query IMAGE [-k 5]

Relative paths start at the current folder. Errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlib",
        description="Embed images with a trained run and retrieve their nearest neighbours.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", required=True, help="a training run folder (runs/<...>/<run>)")
    common.add_argument(
        "--checkpoint", default="last", help="last (default), epoch_XXX or a .pt file"
    )
    common.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    embed = commands.add_parser(
        "embed",
        parents=[common],
        help="embed images and write them to an .npz file",
        description="Embed images with a run's model and write embeddings, paths and labels "
        "(where known) to an .npz file that numpy and pandas read.",
    )
    embed.add_argument(
        "--images",
        required=True,
        help="a folder of images, a manifest CSV (path[, fine, coarse, split, ...]) or an image",
    )
    embed.add_argument("--out", required=True, help="the .npz file to write")
    embed.add_argument("--split", help="only the manifest rows of this split (train or test)")
    embed.add_argument("--batch-size", type=int, help="images per batch (default: the run's)")
    embed.add_argument("--workers", type=int, default=0, help="data-loading processes")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")

    retrieve = commands.add_parser(
        "retrieve",
        parents=[common],
        help="print the k gallery images nearest to a query image",
        description="Embed a query image with the run and print its k nearest gallery images "
        "(a file written by `qlib embed` with the same run), nearest first, with distances.",
    )
    retrieve.add_argument("--gallery", required=True, help="an .npz file from `qlib embed`")
    retrieve.add_argument("--query", required=True, help="the query image")
    retrieve.add_argument("-k", type=int, default=5, help="neighbours to print (default 5)")
    retrieve.add_argument("--csv", help="also write the neighbours to this CSV file")
    return parser


def _absolute(path: str) -> Path:
    """Shell paths start at the current folder (qlib's Python API starts at the repository)."""
    return Path(path).expanduser().absolute()


def _embed(args: argparse.Namespace) -> None:
    from . import inference

    run = inference.load(_absolute(args.run), args.checkpoint, args.device)
    images = inference.image_table(_absolute(args.images))
    if args.split:
        known = sorted(set(images["split"]) - {""})
        if args.split not in known:
            raise ValueError(
                f"--split {args.split!r} selects no image; the images' splits are "
                f"{known or 'unknown'}."
            )
        images = images[images["split"] == args.split].reset_index(drop=True)
    result = inference.embed(
        run, images, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet
    )
    out = result.save(_absolute(args.out))
    labelled = int((result.items["fine"] >= 0).sum())
    print(
        f"wrote {len(result)} embeddings ({result.vectors.shape[1]}-d, {labelled} with labels) "
        f"of {run.run_dir} ({run.device}) to {out}"
    )


def _retrieve(args: argparse.Namespace) -> None:
    import pandas as pd

    from . import inference

    run = inference.load(_absolute(args.run), args.checkpoint, args.device)
    neighbours = inference.retrieve(run, _absolute(args.gallery), _absolute(args.query), args.k)
    print(f"{args.k} nearest gallery images to {_absolute(args.query)}:")
    with pd.option_context("display.max_colwidth", None, "display.width", 200):
        print(neighbours.to_string(index=False, float_format=lambda d: f"{d:.4f}"))
    if args.csv:
        neighbours.to_csv(_absolute(args.csv), index=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `qlib` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        {"embed": _embed, "retrieve": _retrieve}[args.command](args)
    except (FileNotFoundError, ValueError) as err:  # the library's one-sentence errors
        print(f"qlib {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
