"""Euclidean distances as the miners and the metrics compute them: one way, in one place.

Both only ever compare distances within one row (the distances from one anchor, or from one
query, to the bank), so they use `shifted_squared_distances`: ||x_i - y_j||^2 - ||x_i||^2. Dropping
the per-row constant ||x_i||^2 changes no comparison within a row, leaves one matrix product and
no extra pass, and loses no precision to that constant. Sums of squares and products of small
integers are exact in floating point, so on integer-valued embeddings exact ties stay ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of one (rows, N) distance matrix processed at a time: 32 MiB in float32, so that a
# handful of such temporaries stays far below a GiB whatever the size of the bank.
CHUNK_ELEMENTS = 2**23


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
