"""Per-layer quantization error on calibration data: which layers are the most sensitive.

For a ``MatMul`` with constant weight ``W[K, N]`` and calibration input rows ``X`` the error of
a weight quantizer ``Q`` is ``||X (W - Q(W))|| / ||X W||`` (Frobenius norms): the relative
change of the layer's output that quantization alone causes. Without data ``X`` is the identity
(plain relative weight error). Rankings sort by error, then by name, so they are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.data import Dataset
from onnxprune.quant.capture import capture_rows

__all__ = ["block_quantize", "layer_errors", "matmul_weights", "most_sensitive"]

Quantizer = Callable[[np.ndarray], np.ndarray]


def block_quantize(weight: np.ndarray, bits: int, block: int, symmetric: bool) -> np.ndarray:
    """Round-to-nearest ``bits``-bit quantize-dequantize of ``W[K, N]`` in blocks of ``block``
    rows per column (the layout of onnxruntime's ``MatMulNBits``)."""
    rows, cols = weight.shape
    padded = np.zeros((-(-rows // block) * block, cols), dtype=np.float64)
    padded[:rows] = weight
    blocks = padded.reshape(-1, block, cols)
    if symmetric:
        top = 2 ** (bits - 1) - 1
        scale = np.maximum(np.abs(blocks).max(axis=1, keepdims=True) / top, 1e-12)
        result = np.clip(np.round(blocks / scale), -top - 1, top) * scale
    else:
        top = 2**bits - 1
        low = np.minimum(blocks.min(axis=1, keepdims=True), 0)
        high = np.maximum(blocks.max(axis=1, keepdims=True), 0)
        scale = np.maximum((high - low) / top, 1e-12)
        zero = np.round(-low / scale)
        result = (np.clip(np.round(blocks / scale) + zero, 0, top) - zero) * scale
    return result.reshape(-1, cols)[:rows]


def matmul_weights(
    model: onnx.ModelProto, nodes: set[str] | None = None, load: bool = True
) -> dict[str, tuple]:
    """MatMul name -> (activation input name, float64 weight or None if not ``load``) for
    2-D float constant weights."""
    constants = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in constants:
            continue
        if nodes is not None and node.name not in nodes:
            continue
        tensor = constants[node.input[1]]
        if len(tensor.dims) == 2 and tensor.data_type == onnx.TensorProto.FLOAT:
            weight = numpy_helper.to_array(tensor).astype(np.float64) if load else None
            found[node.name] = (node.input[0], weight)
    return found


def layer_errors(
    model: onnx.ModelProto, quantizer: Quantizer, data: Dataset | None, nodes: set[str] | None
) -> dict[str, float]:
    """Relative output error of each MatMul in ``nodes`` (all when None) under ``quantizer``."""
    weights = matmul_weights(model, nodes)
    rows = capture_rows(model, {a for a, _ in weights.values()}, data, 2048) if data else {}
    errors = {}
    for name, (activation, weight) in weights.items():
        delta = weight - quantizer(weight)
        x = rows.get(activation)
        if x is None:
            errors[name] = float(np.linalg.norm(delta) / max(np.linalg.norm(weight), 1e-12))
        else:
            x = x.astype(np.float64)
            reference = max(float(np.linalg.norm(x @ weight)), 1e-12)
            errors[name] = float(np.linalg.norm(x @ delta)) / reference
    return errors


def most_sensitive(errors: dict[str, float], ratio: float) -> list[str]:
    """The ``round(ratio * len(errors))`` layers with the highest error (ties by name)."""
    ranked = sorted(errors, key=lambda name: (-errors[name], name))
    return ranked[: round(ratio * len(ranked))]
