"""Importance scores for unstructured pruning: higher means more important to keep.

``SCORERS`` maps a ``--method`` name to a function ``(weight, array) -> scores`` of the
array's shape. Methods that need calibration data register elsewhere and are looked up by the
same name, so the command line has one list of methods.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxprune.weights import PrunableWeight

__all__ = ["SCORERS", "Scorer", "magnitude_scores"]

Scorer = Callable[[PrunableWeight, np.ndarray], np.ndarray]


def magnitude_scores(weight: PrunableWeight, array: np.ndarray) -> np.ndarray:
    """|w|, in float32 so that every layer's scores compare on one scale."""
    return np.abs(array.astype(np.float32, copy=False))


SCORERS: dict[str, Scorer] = {"magnitude": magnitude_scores}
