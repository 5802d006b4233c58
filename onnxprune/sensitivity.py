"""Estimate how much int8 quantization of each layer disturbs its output, from calibration data.

For a layer ``y = x Wᵀ`` with calibration Gram ``G = XᵀX``: per-channel symmetric int8 weight
rounding ``ΔW`` adds ``tr(ΔW G ΔWᵀ)`` of squared output error, and uniform 8-bit rounding of
the activations over their calibrated range ``[low, high]`` adds about
``rows · (Δ²/12) · ‖W‖²`` with ``Δ = (high - low)/255``. Both are divided by the layer's
output energy ``tr(W G Wᵀ)``. ``--auto-exclude`` keeps the highest-ranked layers in float.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.activations import weight_matrix
from onnxprune.calibration import CalibrationOptions, collect_statistics
from onnxprune.data import Dataset
from onnxprune.weights import find_weights

__all__ = ["quantization_sensitivity"]


def _int8_rounding_error(matrix: np.ndarray) -> np.ndarray:
    scale = np.abs(matrix).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return matrix - np.clip(np.round(matrix / scale), -127, 127) * scale


def quantization_sensitivity(model: ir.Model, data: Dataset) -> dict[str, float]:
    """Relative output error per consuming node name, highest first."""
    weights = find_weights(model)[0]
    stats, _ = collect_statistics(model, weights, data, CalibrationOptions(gram=True))
    scores: dict[str, float] = {}
    for weight in weights:
        if weight.name not in stats:
            continue
        layer = stats[weight.name]
        array = model.graph.initializers[weight.name].const_value.numpy()
        matrix = weight_matrix(array.astype(np.float64), weight.layout)
        energy = float(np.einsum("of,fg,og->", matrix, layer.gram, matrix))
        if energy <= 0:
            continue
        delta_w = _int8_rounding_error(matrix)
        weight_error = float(np.einsum("of,fg,og->", delta_w, layer.gram, delta_w))
        step = (layer.high - min(layer.low, 0.0)) / 255.0
        activation_error = layer.rows * step**2 / 12.0 * float(np.sum(matrix**2))
        for node in weight.nodes:
            scores[node] = (weight_error + activation_error) / energy
    return dict(sorted(scores.items(), key=lambda item: -item[1]))
