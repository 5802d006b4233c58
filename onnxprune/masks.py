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
    "global_masks",
    "layer_mask",
    "n_m_mask",
    "n_m_refusal",
    "per_output_mask",
]


def _drop_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Keep-mask over a flat score vector with the ``count`` lowest entries removed."""
    keep = np.ones(scores.size, dtype=bool)
    if count > 0:
        keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


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
    order = np.argsort(rows, axis=1, kind="stable")
    keep = np.arange(rows.shape[1])[None, :] >= counts[:, None]  # True past each row's count
    keep_sorted = np.empty_like(keep)
    np.put_along_axis(keep_sorted, order, keep, axis=1)
    moved_shape = np.moveaxis(scores, layout.out_axis, 0).shape
    return np.moveaxis(keep_sorted.reshape(moved_shape), 0, layout.out_axis)


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
