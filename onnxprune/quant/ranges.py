"""Activation ranges of static int8 from real tokens only.

onnxruntime's calibrators reduce each tensor over everything the model computes, padded
positions included. In a padded batch of sentences (MiniLM: 64 positions, about 20 real tokens)
the padded positions' hidden states are never read by a result that matters (pooling and
attention mask them out), yet they set the range: a wider range is a coarser int8 step for
every real token, and SmoothQuant's per-channel scales, computed on real tokens, meet padded
outliers it never saw. ``SetActivationRangesPass`` recomputes the scale and zero point of each
activation ``QuantizeLinear`` from calibration rows captured without padded positions
(``onnxprune.quant.capture``): minimum and maximum (zero included), or a percentile of the
absolute values for ``percentile``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["SetActivationRangesPass", "activation_quantizers", "uint8_range"]

logger = logging.getLogger(__name__)
PERCENTILE = 99.999
_UINT8 = onnx.TensorProto.UINT8


def activation_quantizers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Float activation tensor -> the ``QuantizeLinear`` (uint8, per tensor) that reads it,
    for quantizers whose scale and zero point no other quantizer shares and whose dequantized
    tensor only ``MatMul``/``Gemm`` read (a CNN's tensors that onnxruntime chains through
    pools and ``Relu``s with one shared range are left alone)."""
    constants = {t.name: t for t in model.graph.initializer}
    readers: dict[str, set[str]] = {}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
        if node.op_type == "QuantizeLinear":
            for name in node.input[1:3]:
                uses[name] = uses.get(name, 0) + 1
    dequantized = {
        n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
    }
    found = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants or len(node.input) < 3:
            continue
        scale, zero = constants.get(node.input[1]), constants.get(node.input[2])
        if scale is None or zero is None or len(scale.dims) or zero.data_type != _UINT8:
            continue
        output = dequantized.get(node.output[0])
        if output is None or not readers.get(output, set()) <= {"MatMul", "Gemm"}:
            continue
        if uses[node.input[1]] == 1 and uses[node.input[2]] == 1:
            found[node.input[0]] = node
    return found


def uint8_range(rows: np.ndarray, method: str) -> tuple[np.float32, np.uint8]:
    """Scale and zero point of asymmetric uint8 over ``rows`` (zero always representable)."""
    if method == "percentile":
        low = -np.percentile(np.abs(np.minimum(rows, 0)), PERCENTILE)
        high = np.percentile(np.maximum(rows, 0), PERCENTILE)
    else:
        low, high = float(rows.min()), float(rows.max())
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max((high - low) / 255.0, 1e-8)
    zero = int(np.clip(np.round(-low / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


class SetActivationRangesPass:
    """Rewrite the scale and zero point of every activation quantizer that has rows.

    Attributes:
        rows: activation tensor -> calibration rows ``[rows, features]`` (real tokens only).
        method: ``minmax`` or ``percentile``; other methods keep onnxruntime's ranges.
    """

    def __init__(self, rows: dict[str, np.ndarray], method: str = "minmax") -> None:
        self.rows = rows
        self.method = method

    def call(self, model: onnx.ModelProto) -> int:
        """Set the ranges in place (Q and DQ share the initializers); returns how many."""
        if self.method not in ("minmax", "percentile"):
            return 0
        constants = {t.name: t for t in model.graph.initializer}
        changed = 0
        for tensor, node in activation_quantizers(model).items():
            if tensor not in self.rows or not len(self.rows[tensor]):
                continue
            scale, zero = uint8_range(self.rows[tensor].astype(np.float64), self.method)
            constants[node.input[1]].CopyFrom(numpy_helper.from_array(scale, node.input[1]))
            constants[node.input[2]].CopyFrom(numpy_helper.from_array(zero, node.input[2]))
            changed += 1
        logger.info("%d activation ranges set from real tokens", changed)
        return changed
