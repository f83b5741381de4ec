"""Bank: the picks of select_quadruplets, with the work per bank done once (checks, norms, valid
anchors, layout: at each refresh) and, on CUDA, nothing in `select` that waits for the device.

- Window: P+ and P- lie inside the anchor's coarse class. A stable sort by coarse class makes each
  class a contiguous run in bank order, and each anchor gets a window of W columns (W = the
  largest class) covering its class: P+ and P- are picked on (B, W) matrices instead of (B, N),
  with ties still to the lowest bank index. N needs the whole row (its class masked through the
  window).
- Method 1's key is needed on the window only: on the CPU, one product per coarse class present,
  from a copy of the bank sorted by class; on CUDA, one bank-sized product and a gather (no
  anchor count read back by the host).
- No .item(), .tolist(), bool(tensor) or data-dependent shape on CUDA; draws are made on the CPU
  and copied without blocking; anchors already on the device are trusted (`sample_anchors`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import checks
from ..distances import chunk_rows, shifted_squared_distances, squared_norms
from .common import (
    check_anchors,
    check_bank,
    check_generator,
    check_method,
    draw_anchors,
    draw_uniforms,
    exact_distances,
    join,
)
from .reference import candidate_counts, kth_candidate, pick_outside_sphere


class Bank:
    """Training embeddings (N, d) with fine and coarse labels (N,), ready for fast selection.

    Build one per bank refresh. `valid`: BoolTensor (N,), the samples that can anchor a quadruplet.
    """

    def __init__(self, embeddings, fine, coarse, *, chunk_size: int | None = None):
        self.embeddings, self.fine, self.coarse = check_bank(embeddings, fine, coarse)
        self.device = device = self.embeddings.device
        n = self.embeddings.shape[0]
        self.chunk = chunk_rows(n, chunk_size)
        self.norms = squared_norms(self.embeddings, "bank")
        # On the CPU, for checking anchors given there and for drawing them.
        self._labels_cpu = (self.fine.cpu(), self.coarse.cpu())
        self._counts = [count.cpu() for count in candidate_counts(*self._labels_cpu)]
        n_pos, n_posneg, n_neg = self._counts
        valid = (n_pos > 0) & (n_posneg > 0) & (n_neg > 0)
        self._candidates = valid.nonzero().flatten()
        self.valid = valid.to(device)

        # Windows: the classes as contiguous runs of a stable sort by coarse class; a window
        # starts where its class does, moved left where it would pass the end of the bank.
        _, class_of = torch.unique(self.coarse, return_inverse=True)
        self._order = torch.argsort(class_of, stable=True)
        sizes = torch.bincount(class_of)
        starts = sizes.cumsum(0) - sizes
        self.width = int(sizes.max()) if n else 0
        window_starts = starts.clamp(max=n - self.width)
        # per sample (anchors gather rows): window start, fine, coarse, class number
        self._by_sample = torch.stack(
            [window_starts[class_of], self.fine, self.coarse, class_of], 1
        )
        # per sorted position (windows gather columns): bank index, fine, coarse, and how many
        # samples of other classes precede it in bank order (Random's N, below)
        order = self._order
        rank = torch.arange(n, device=device) - starts[class_of[order]]  # rank in its class
        self._by_position = torch.stack([order, self.fine[order], self.coarse[order], order - rank])
        self._offsets = torch.arange(self.width, device=device)
        # CPU Method 1, per class number: (start of its run, its size, its window start)
        self._runs = list(zip(starts.tolist(), sizes.tolist(), window_starts.tolist(), strict=True))
        self._sorted: Tensor | None = None  # the bank in class order (CPU Method 1)
        self.method1_by_class = device.type == "cpu"

    def sample_anchors(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n valid anchors, uniform: the draws of sample_anchors(valid, n, generator) -> (n,)."""
        anchors = draw_anchors(
            self._candidates, checks.integer("n", n, 0), check_generator(generator)
        )
        return anchors.to(self.device, non_blocking=True)

    def select(
        self, anchors, method: str, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """select_quadruplets(..., return_fallbacks=True) on this bank: quadruplets (B, 4)
        [R, P+, P-, N] and fallbacks (B, 2) [P+, P-] for anchors (B,), on the bank's device."""
        method = check_method(method)
        generator = check_generator(generator)
        anchors = self._anchors(anchors)
        with torch.no_grad(), exact_distances(self.device):
            if method == "random":
                uniforms = draw_uniforms(anchors.numel(), generator, self.device)
                parts = zip(anchors.split(self.chunk), uniforms.split(self.chunk), strict=True)
                return join([self._random(rows, u) for rows, u in parts], self.device)
            parts = [self._methods(rows, method) for rows in anchors.split(self.chunk)]
            return join(parts, self.device)

    def _anchors(self, anchors) -> Tensor:
        """Anchors on the device: checked when given on the CPU, trusted when already there."""
        on_device = isinstance(anchors, Tensor) and anchors.device == self.device
        if on_device and self.device.type != "cpu":
            if anchors.dtype not in checks.INTEGER_DTYPES or anchors.ndim != 1:
                raise ValueError(
                    f"anchors has dtype {anchors.dtype} and shape {tuple(anchors.shape)}; "
                    "expected a 1-D integer tensor (B,) of bank indices."
                )
            return anchors.long()
        anchors = check_anchors(anchors, *self._counts, *self._labels_cpu)
        return anchors.to(self.device, non_blocking=True)

    def _window(self, anchors: Tensor):
        """Each anchor's window (B, W): bank indices, P+ mask, P- mask, same-class mask, samples
        of other classes before each column, and the anchor's class number (B,)."""
        start, fine, coarse, anchor_class = self._by_sample[anchors].T[:, :, None]  # (B, 1) each
        positions = start + self._offsets  # (B, W): the window in sorted positions
        columns, window_fine, window_coarse, others_before = self._by_position[:, positions]
        in_class = window_coarse == coarse
        same_fine = window_fine == fine
        positives = same_fine & (columns != anchors[:, None])
        posnegs = in_class & ~same_fine
        return columns, positives, posnegs, in_class, others_before, anchor_class[:, 0]

    def _random(self, anchors: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor]:
        """random_quadruplets for one chunk of anchors (B,), on windows: (B, 4), (B, 2)."""
        columns, positives, posnegs, in_class, others_before, _ = self._window(anchors)
        positive = columns.gather(1, kth_candidate(positives, uniforms[:, 0])[:, None])
        posneg = columns.gather(1, kth_candidate(posnegs, uniforms[:, 1])[:, None])
        # N: the k-th sample outside the class, in bank order, is k + the number of class
        # members that precede it, i.e. of members with at most k other samples before them.
        count = self.embeddings.shape[0] - in_class.sum(1)
        k = torch.minimum((uniforms[:, 2] * count).long(), count - 1)
        negative = k + ((others_before <= k[:, None]) & in_class).sum(1)
        quadruplets = torch.cat([anchors[:, None], positive, posneg, negative[:, None]], 1)
        return quadruplets, torch.zeros_like(quadruplets[:, :2], dtype=torch.bool)

    def _methods(self, anchors: Tensor, method: str) -> tuple[Tensor, Tensor]:
        """Method 1 or 2 for one chunk of anchors (B,), step by step as the reference does."""
        columns, positives, posnegs, in_class, _, anchor_class = self._window(anchors)
        d = shifted_squared_distances(self.embeddings[anchors], self.embeddings, self.norms)
        d_window = d.gather(1, columns)  # D(R, j) on the window
        # hardest_negative: mask the anchor's coarse class (inside its window), argmin the rest
        class_columns = torch.where(in_class, columns, anchors[:, None])
        negative = d.scatter_(1, class_columns, float("inf")).argmin(1)
        radius = d.gather(1, negative[:, None])  # D(R, N)
        if method == "method1":
            key = self._method1_key(negative, anchor_class, columns)
        else:
            key = d_window  # method2_key
        candidates = torch.stack([positives, posnegs])  # P+, P-: (2, B, W)
        picks, fallbacks = pick_outside_sphere(candidates, d_window, radius, key)  # (2, B) each
        picks = columns.gather(1, picks.T)
        return torch.stack([anchors, picks[:, 0], picks[:, 1], negative], 1), fallbacks.T

    def _method1_key(self, negative: Tensor, anchor_class: Tensor, columns: Tensor) -> Tensor:
        """method1_key on the window: D(N, j) for each anchor's window columns, (B, W)."""
        from_negative = self.embeddings[negative]
        if not self.method1_by_class:
            full = shifted_squared_distances(from_negative, self.embeddings, self.norms)
            return full.gather(1, columns)
        if self._sorted is None:
            self._sorted = self.embeddings[self._order]
        bank = self._sorted
        # Anchors grouped by class; per class present, one product of their N's with the class's
        # rows of the sorted bank, written in place into its window columns (reading the counts
        # back is free on the CPU). Other columns keep 0: they are never candidates.
        order = torch.argsort(anchor_class)
        counts = torch.bincount(anchor_class, minlength=len(self._runs)).tolist()
        grouped = from_negative[order]
        products = torch.zeros(columns.shape, dtype=bank.dtype)
        row = 0
        for (start, size, window_start), count in zip(self._runs, counts, strict=True):
            if count:
                rows, at = slice(row, row + count), start - window_start
                out = products[rows, at : at + size]
                torch.mm(grouped[rows], bank[start : start + size].T, out=out)
                row += count
        products = products[torch.argsort(order)]  # back to the anchors' order
        # ||e_j||^2 - 2 e_N.e_j: shifted_squared_distances, rounded the same way
        return torch.add(self.norms[columns], products, alpha=-2.0)
