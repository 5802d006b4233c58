"""Importance scores for unstructured pruning: higher means more important to keep.

``METHODS`` is the one list of ``--method`` names. Each method says whether it needs calibration
statistics, whether weights compete within a whole layer or within each output's inputs (the
Wanda comparison group), and whether it rewrites the kept weights (SparseGPT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.activations import from_weight_matrix
from onnxprune.calibration import LayerStats
from onnxprune.weights import PrunableWeight

__all__ = ["METHODS", "Method", "magnitude_scores", "wanda_scores"]


def magnitude_scores(
    weight: PrunableWeight, array: np.ndarray, stats: LayerStats | None
) -> np.ndarray:
    """|w|, in float32 so that every layer's scores compare on one scale."""
    return np.abs(array.astype(np.float32, copy=False))


def wanda_scores(weight: PrunableWeight, array: np.ndarray, stats: LayerStats | None) -> np.ndarray:
    """|w_ij| · ‖X_j‖₂: weight magnitude scaled by the norm of the input feature it multiplies."""
    assert stats is not None
    out = weight.shape[weight.layout.out_axis]
    scale = from_weight_matrix(
        np.broadcast_to(stats.norms, (out, stats.features)), weight.shape, weight.layout
    )
    return np.abs(array.astype(np.float64)) * scale


@dataclass(frozen=True)
class Method:
    """A pruning method: how it scores, which weights compete, what data it needs."""

    name: str
    needs_calibration: bool
    per_output: bool
    reconstructs: bool = False

    def scores(
        self, weight: PrunableWeight, array: np.ndarray, stats: LayerStats | None
    ) -> np.ndarray:
        if self.needs_calibration:
            return wanda_scores(weight, array, stats)
        return magnitude_scores(weight, array, stats)


METHODS: dict[str, Method] = {
    "magnitude": Method("magnitude", needs_calibration=False, per_output=False),
    "wanda": Method("wanda", needs_calibration=True, per_output=True),
    "sparsegpt": Method("sparsegpt", needs_calibration=True, per_output=False, reconstructs=True),
}
