"""Input checks shared by every module: one place that says what a label tensor, an embedding
matrix or a numeric setting must look like. Each check returns the value in canonical form
(python int / float, long labels, float32/64 embeddings) or raises a ValueError whose message
names the argument, says what was expected and what was given.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def integer(name: str, value: object, minimum: int | None = None) -> int:
    """A python/numpy int (never a bool), at least `minimum` when given."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def number(
    name: str, value: object, minimum: float | None = None, *, exclusive: bool = False
) -> float:
    """A finite real number (never a bool), >= `minimum` (> with `exclusive`) when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive else '>='} {minimum}, got {value!r}.")
    return value


def labels(
    name: str,
    x: object,
    n: int | None = None,
    n_classes: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Class ids: an integer tensor (or array/list) of shape (N,) -> LongTensor (N,).

    `n`: the required length; `n_classes`: ids must lie in [0, n_classes); `device`: moved there.
    """
    x = torch.as_tensor(x)
    if x.dtype not in INTEGER_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}; expected an integer tensor of class ids.")
    if x.ndim != 1:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected a 1-D tensor (N,).")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} labels; expected {n} (shape ({n},)).")
    out_of_range = n_classes is not None and x.numel() and bool(((x < 0) | (x >= n_classes)).any())
    if out_of_range:
        raise ValueError(
            f"{name} must hold class ids in [0, {n_classes - 1}], got values in "
            f"[{int(x.min())}, {int(x.max())}]."
        )
    if device is not None:
        x = x.to(device)
    return x.long()


def hierarchy(fine: Tensor, coarse: Tensor) -> None:
    """Every fine class belongs to exactly one coarse class (docs/spec.md, data protocol)."""
    if fine.shape != coarse.shape:
        raise ValueError(
            f"fine has {fine.numel()} labels but coarse has {coarse.numel()}; expected one fine "
            "and one coarse label per sample."
        )
    if fine.numel() == 0:
        return
    values, inverse = torch.unique(fine, return_inverse=True)
    lowest = coarse.new_full(values.shape, torch.iinfo(torch.long).max)
    highest = coarse.new_full(values.shape, torch.iinfo(torch.long).min)
    lowest = lowest.scatter_reduce(0, inverse, coarse, "amin")
    highest = highest.scatter_reduce(0, inverse, coarse, "amax")
    if bool((lowest != highest).any()):
        bad = values[lowest != highest][:5].tolist()
        raise ValueError(
            f"fine classes {bad} appear under more than one coarse class; expected every fine "
            "class to belong to exactly one coarse class."
        )


def float_tensor(name: str, x: object, ndim: int, *, finite: bool = True) -> Tensor:
    """A floating-point tensor with `ndim` dimensions, finite unless `finite=False`."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}.")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}.")
    if finite and x.numel() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} rows {bad} hold NaN or inf; expected finite values.")
    return x


def embeddings(name: str, x: object, *, finite: bool = True) -> Tensor:
    """An embedding matrix (N, d): a float tensor, detached, in float32 or float64 (half
    precision is too coarse for exact distance comparisons and is upcast)."""
    x = float_tensor(name, torch.as_tensor(x), 2, finite=finite).detach()
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
