"""Allocate the target sparsity across layers.

* ``uniform``: every layer gets the target.
* ``global``: one ranking of importance scores across all layers; a layer's sparsity is the
  share of its weights below the global threshold.
* ``owl``: outlier-weighted layer-wise sparsity (Yin et al., 2024). A layer's outlier ratio is
  the share of its scores above ``outlier_multiplier`` times the layer's mean score; layers with
  more outliers keep more weights. Sparsities span ``target ± owl_lambda`` and are shifted so
  that their element-weighted mean equals the target exactly.

Every allocation returns per-layer sparsities whose element-weighted mean is the target (up to
rounding to whole weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxprune.masks import global_masks

__all__ = ["ALLOCATIONS", "allocate"]

ALLOCATIONS = ("uniform", "global", "owl")


def _owl(
    scores: Mapping[str, np.ndarray], target: float, owl_lambda: float, multiplier: float
) -> dict[str, float]:
    names = list(scores)
    ratios = np.array([np.mean(s > multiplier * s.mean()) for s in scores.values()])
    sizes = np.array([scores[n].size for n in names], dtype=np.float64)
    spread = ratios.max() - ratios.min()
    normalized = (ratios - ratios.min()) / spread if spread > 0 else np.zeros_like(ratios)
    sparsity = target + owl_lambda - 2 * owl_lambda * normalized
    sparsity += target - np.sum(sizes * sparsity) / sizes.sum()
    sparsity = np.clip(sparsity, 0.0, 0.99)
    sparsity += target - np.sum(sizes * sparsity) / sizes.sum()  # re-centre after clipping
    return {name: float(np.clip(s, 0.0, 0.99)) for name, s in zip(names, sparsity, strict=True)}


def allocate(
    allocation: str,
    scores: Mapping[str, np.ndarray],
    target: float,
    owl_lambda: float = 0.08,
    outlier_multiplier: float = 5.0,
) -> dict[str, float]:
    """Per-layer sparsity for ``allocation`` given each layer's importance scores."""
    if allocation == "uniform":
        return dict.fromkeys(scores, target)
    if allocation == "global":
        masks = global_masks(scores, target)
        return {name: float(np.mean(~keep)) for name, keep in masks.items()}
    if allocation == "owl":
        return _owl(scores, target, owl_lambda, outlier_multiplier)
    raise ValueError(f"unknown allocation {allocation}")
