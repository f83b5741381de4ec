"""Euclidean distances as the miners and the metrics compute them: one way, in one place.

Both only compare distances within one row (from one anchor or query to the bank), so they use
||x_i - y_j||^2 - ||x_i||^2: dropping the per-row constant changes no comparison, leaves one
matrix product and loses no precision to it. On integer-valued embeddings the sums of squares and
products are exact, so exact ties stay ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import checks

# Elements of one (rows, N) distance matrix processed at a time: 32 MiB in float32, so that a
# handful of such temporaries stays far below a GiB whatever the size of the bank.
CHUNK_ELEMENTS = 2**23


def chunk_rows(n_columns: int, chunk_size: int | None) -> int:
    """chunk_size, or as many rows as keep a (rows, n_columns) matrix near CHUNK_ELEMENTS."""
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // max(n_columns, 1))
    return checks.integer("chunk_size", chunk_size, 1)


def squared_norms(x: Tensor, name: str = "embeddings") -> Tensor:
    """||x_j||^2 of x (N, d) -> (N,), and the check that x is finite and every distance will be.

    A plain sum of squares (exact on integer data), in blocks of rows to bound the temporary. A
    NaN or inf in a row makes its norm non-finite: checking the N norms costs no (N, d) mask.
    """
    norms = torch.cat([block.square().sum(1) for block in x.split(4096)])
    if norms.numel() and not bool(torch.isfinite(4 * norms.max())):
        suspects = (~torch.isfinite(norms)).nonzero().flatten()
        bad = suspects[~torch.isfinite(x[suspects]).all(1)][:5].tolist()
        if bad:
            raise ValueError(f"{name} rows {bad} hold NaN or inf; expected finite values.")
        raise ValueError(
            f"{name} values are too large to square in {x.dtype}; expected embeddings of "
            "moderate size (for example L2-normalised)."
        )
    return norms


def shifted_squared_distances(x: Tensor, y: Tensor, y_norms: Tensor) -> Tensor:
    """||x_i - y_j||^2 - ||x_i||^2 = ||y_j||^2 - 2 x_i.y_j for x (B, d), y (N, d) -> (B, N).

    Row i orders y exactly as the distance from x_i does; y_norms = squared_norms(y).
    """
    return torch.addmm(y_norms[None, :], x, y.T, alpha=-2.0)
