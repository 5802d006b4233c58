"""Per-layer sparsities for a global level: a knapsack over the layers' sensitivity curves.

Each layer picks one of the searched levels. A level removes ``level x gain`` of the objective
(elements for ``size``, MACs for ``macs`` and ``latency``) and costs the layer's output NMSE
at that level (``onnxprune.search.sensitivity``). For a global level ``T`` the allocation
minimises the summed cost subject to removing at least ``T`` of the total gain, by dynamic
programming over the gain in ``RESOLUTION`` steps. The same curves always give the same
allocation (ties go to the lower level).
"""

from __future__ import annotations

import math

import numpy as np

from onnxprune.search.sensitivity import LayerCurve

__all__ = ["RESOLUTION", "allocate_levels", "gains", "removed_fraction"]

RESOLUTION = 1000  # the gain is counted in thousandths of the total


def gains(curves: list[LayerCurve], objective: str) -> np.ndarray:
    """What removing a whole layer gains: its elements (size) or MACs (macs, latency)."""
    values = [c.size if objective == "size" or not c.macs else c.macs for c in curves]
    return np.asarray(values, dtype=np.float64)


def removed_fraction(
    curves: list[LayerCurve], objective: str, allocation: dict[str, float]
) -> float:
    """The share of the total gain that ``allocation`` removes."""
    weight = gains(curves, objective)
    removed = sum(w * allocation.get(c.name, 0.0) for c, w in zip(curves, weight, strict=True))
    return float(removed / weight.sum()) if weight.sum() else 0.0


def allocate_levels(
    curves: list[LayerCurve], levels: tuple[float, ...], target: float, objective: str
) -> dict[str, float]:
    """The cheapest per-layer levels removing at least ``target`` of the total gain (the
    highest level everywhere when even that removes less)."""
    weight = gains(curves, objective)
    share = weight / weight.sum()
    need = min(RESOLUTION, math.ceil(target * RESOLUTION - 1e-9))
    best = np.full(need + 1, np.inf)
    best[0] = 0.0
    choices = np.zeros((len(curves), need + 1), dtype=np.int64)
    for index, curve in enumerate(curves):
        candidates = np.full((len(levels), need + 1), np.inf)
        for k, level in enumerate(levels):
            units = math.floor(level * share[index] * RESOLUTION + 1e-9)
            candidates[k] = _shift(best, units) + curve.errors[k]
        choices[index] = np.argmin(candidates, axis=0)
        best = candidates[choices[index], np.arange(need + 1)]
    if not np.isfinite(best[need]):
        return {c.name: levels[-1] for c in curves}
    allocation, remaining = {}, need
    for index in range(len(curves) - 1, -1, -1):
        k = int(choices[index, remaining])
        allocation[curves[index].name] = levels[k]
        units = math.floor(levels[k] * share[index] * RESOLUTION + 1e-9)
        remaining = max(0, remaining - units)
    return {c.name: allocation[c.name] for c in curves}


def _shift(best: np.ndarray, units: int) -> np.ndarray:
    """``out[u] = best[max(0, u - units)]``: reaching u by adding ``units`` to a smaller reach."""
    index = np.maximum(np.arange(best.size) - units, 0)
    return best[index]
