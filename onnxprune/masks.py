"""Turn importance scores into keep-masks.

All selections are exact and deterministic: the ``k`` lowest scores are removed, ties broken by
position (a stable sort), so a layer at sparsity ``s`` gets exactly ``round(s * size)`` zeros
from the scores alone. A mask is a boolean array of the weight's shape, True where kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxprune.ops import WeightLayout

__all__ = [
    "bits_of",
    "global_masks",
    "layer_mask",
    "n_m_mask",
    "n_m_refusal",
    "per_output_mask",
    "zeros_in_bits",
]


def bits_of(dtype: np.dtype) -> np.dtype | None:
    """The unsigned integer type whose product with a keep-mask zeroes ``dtype``'s values bit
    for bit (zero is all bits clear), or None where that does not hold or is not known
    (non-native byte order, non-numpy types such as bfloat16: use ``np.where``)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiu" or dtype.itemsize not in (1, 2, 4, 8) or not dtype.isnative:
        return None
    return np.dtype(f"u{dtype.itemsize}")


def zeros_in_bits(bits: np.ndarray, floating: bool, work: np.ndarray) -> int:
    """Zero values in ``bits`` (a flat unsigned view of a ``bits_of`` type): for floats either
    sign (all bits but the sign clear, so NaN is not zero), counted on the bits shifted left
    into ``work`` (same size and type): ~2.5x faster than counting the float values."""
    if not floating:
        return bits.size - int(np.count_nonzero(bits))
    return bits.size - int(np.count_nonzero(np.left_shift(bits, 1, out=work)))


def _lowest_by_rows(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """True at the ``counts[r]`` lowest entries of each row ``r``, ties broken by position.

    The same entries a stable ``argsort`` would put first, found in linear time: a partition
    gives each row's ``count``-th value, everything up to it goes, and when that is more than
    ``count`` (ties at that value) only the first ties by position. A partition sorts NaN last,
    as ``argsort`` does, so only a ``count``-th value that is NaN needs the sort.
    """
    dropped = np.zeros(rows.shape, dtype=bool)
    for count in np.unique(counts[counts > 0]):
        members = np.flatnonzero(counts == count)
        part = rows if members.size == rows.shape[0] else rows[members]
        kth = np.partition(part, count - 1, axis=1)[:, count - 1 : count]
        if np.isnan(kth).any():
            return _lowest_by_sort(rows, counts)
        below = part <= kth
        if (_row_counts(below) > count).any():  # only some of the ties go
            np.less(part, kth, out=below)
            _first_ties(below, part == kth, count - _row_counts(below))
        if members.size == rows.shape[0]:
            return below
        dropped[members] = below
    return dropped


def _row_counts(flags: np.ndarray) -> np.ndarray:
    """True entries per row (one row: a whole-array count, ~5x faster than by axis)."""
    if flags.shape[0] == 1:
        return np.array([np.count_nonzero(flags)])
    return np.count_nonzero(flags, axis=1)


def _lowest_by_sort(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``_lowest_by_rows`` by a stable sort (NaN last): for rows whose cut falls on NaN."""
    order = np.argsort(rows, axis=1, kind="stable")
    ranked = np.arange(rows.shape[1])[None, :] < counts[:, None]
    dropped = np.empty_like(ranked)
    np.put_along_axis(dropped, order, ranked, axis=1)
    return dropped


def _first_ties(below: np.ndarray, ties: np.ndarray, need: np.ndarray) -> None:
    """Set in ``below`` the first ``need[r]`` True entries of each row ``r`` of ``ties``."""
    row, col = np.nonzero(ties)  # row-major: each row's ties in order of position
    rank = np.arange(row.size) - np.searchsorted(row, row)
    chosen = rank < need[row]
    below[row[chosen], col[chosen]] = True


def _drop_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Keep-mask over a flat score vector with the ``count`` lowest entries removed."""
    if count <= 0:
        return np.ones(scores.size, dtype=bool)
    return ~_lowest_by_rows(scores.reshape(1, -1), np.array([count]))[0]


def layer_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Remove the lowest-scoring ``round(sparsity * size)`` weights of one tensor."""
    count = round(sparsity * scores.size)
    return _drop_lowest(scores.ravel(), count).reshape(scores.shape)


def _rows_by_output(array: np.ndarray, layout: WeightLayout) -> np.ndarray:
    """View ``array`` as [outputs, everything feeding that output]."""
    moved = np.moveaxis(array, layout.out_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def per_output_mask(scores: np.ndarray, sparsity: float, layout: WeightLayout) -> np.ndarray:
    """Remove the lowest scores within every output channel's inputs (the Wanda comparison group).

    Exactly ``round(sparsity * size)`` weights go: each output loses the same count, and the
    remainder is spread one each over the first outputs.
    """
    rows = _rows_by_output(scores, layout)
    total = round(sparsity * rows.size)
    counts = np.full(rows.shape[0], total // rows.shape[0])
    counts[: total % rows.shape[0]] += 1
    keep = ~_lowest_by_rows(rows, counts)
    moved_shape = np.moveaxis(scores, layout.out_axis, 0).shape
    return np.moveaxis(keep.reshape(moved_shape), 0, layout.out_axis)


def n_m_refusal(shape: tuple[int, ...], layout: WeightLayout, m: int) -> str | None:
    """Why an N:M pattern cannot be applied to a weight of this shape, or None if it can."""
    channels = shape[layout.in_axis]
    if channels % m:
        return f"{channels} input channels are not a multiple of {m}"
    return None


def n_m_mask(scores: np.ndarray, n: int, m: int, layout: WeightLayout) -> np.ndarray:
    """Keep the ``n`` highest scores in every run of ``m`` consecutive input channels."""
    moved = np.moveaxis(scores, layout.in_axis, -1)
    runs = moved.reshape(-1, m)
    keep = np.zeros(runs.shape, dtype=bool)
    highest = np.argsort(-runs, axis=1, kind="stable")[:, :n]
    np.put_along_axis(keep, highest, True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, layout.in_axis)


def global_masks(scores: Mapping[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """One threshold across all tensors: remove the lowest ``round(sparsity * total)`` scores."""
    names = list(scores)
    flat = np.concatenate([scores[name].ravel() for name in names]) if names else np.zeros(0)
    keep = _drop_lowest(flat, round(sparsity * flat.size))
    masks, start = {}, 0
    for name in names:
        size = scores[name].size
        masks[name] = keep[start : start + size].reshape(scores[name].shape)
        start += size
    return masks
