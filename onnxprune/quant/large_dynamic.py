"""Dynamic int8 quantization of ``MatMul`` weights one tensor at a time, in onnxruntime's format.

onnxruntime's ``quantize_dynamic`` (per channel, ``QInt8`` weights, ``QUInt8`` activations)
rewrites ``y = MatMul(a, W)`` as::

    a_quantized, a_scale, a_zero_point = DynamicQuantizeLinear(a)      # once per activation
    scales = Mul(a_scale, W_scale)                                    # <node>_quant_scales_mul
    q = MatMulInteger(a_quantized, W_quantized, a_zero_point, W_zero_point)
    y = Mul(Cast(q, to=FLOAT), scales)

with ``W`` quantized symmetrically per output column (``quant_utils.quantize_data``: range
``[-absmax, absmax]`` -> ``[-127, 127]``, scale computed in float64 and stored in float32,
values ``round(w / scale)`` half to even, clipped to ``[-128, 127]``). ``QuantizeMatMulIntegerPass``
writes the same nodes, names and tensors, reading one weight at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.quant.large import add_initializer, drop_unused_initializers, weight_matmuls
from onnxprune.quant.rules import LayerDecision
from onnxprune.streaming import release, scratch_for

__all__ = ["QuantizeMatMulIntegerPass", "int8_per_column"]

logger = logging.getLogger(__name__)
_TINY = np.finfo(np.float32).tiny


def int8_per_column(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``weight`` (K, N) float32 -> (int8 values, float32 scales (N,), int8 zero points (N,)),
    the numbers onnxruntime's per-channel symmetric int8 weight quantization produces."""
    rmin = np.minimum(weight.min(axis=0), np.float32(0))
    rmax = np.maximum(weight.max(axis=0), np.float32(0))
    absmax = np.maximum(np.abs(rmin), np.abs(rmax)).astype(np.float64)
    wide = (absmax - (-absmax)) / np.float64(254.0)
    scales = np.where(wide < _TINY, np.float32(1.0), wide.astype(np.float32)).astype(np.float32)
    values = np.round(weight / scales)
    np.clip(values, -128, 127, out=values)
    return values.astype(np.int8), scales, np.zeros(scales.shape, dtype=np.int8)


def _node(graph, before, op, inputs, names, name, **attributes) -> list[ir.Value]:
    made = ir.node(op, inputs, attributes, num_outputs=len(names), name=name)
    for value, output_name in zip(made.outputs, names, strict=True):
        value.name = output_name
    graph.insert_before(before, made)
    return list(made.outputs)


class QuantizeMatMulIntegerPass(ir.passes.InPlacePass):
    """Replace each ``MatMul`` with a 2-D float32 weight (not excluded) by onnxruntime's
    dynamic int8 pattern (module docstring); at most one float weight is read at a time."""

    def __init__(self, excluded: Mapping[str, str]):
        super().__init__()
        self.excluded = excluded
        self.plan: list[LayerDecision] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, weights, activations = model.graph, {}, {}
        scratch = scratch_for(model)
        for node in weight_matmuls(model, "dynamic"):
            if node.name in self.excluded:
                self.plan.append(
                    LayerDecision(node.name, "MatMul", "float", self.excluded[node.name])
                )
                continue
            a, w = node.inputs[0], node.inputs[1]
            if w.name not in weights:
                weights[w.name] = self._weight(graph, w, scratch)
            if a.name not in activations:
                names = [f"{a.name}_quantized", f"{a.name}_scale", f"{a.name}_zero_point"]
                activations[a.name] = _node(
                    graph, node, "DynamicQuantizeLinear", [a], names, f"{a.name}_QuantizeLinear"
                )
            self._rewrite(graph, node, activations[a.name], weights[w.name])
            self.plan.append(LayerDecision(node.name, "MatMul", "int8", "constant weight"))
        drop_unused_initializers(graph, set(weights))
        return ir.passes.PassResult(model, modified=bool(weights))

    def _weight(self, graph: ir.Graph, weight: ir.Value, scratch) -> list[ir.Value]:
        array = weight.const_value.numpy()
        values, scales, zero_points = int8_per_column(array)
        del array
        release(weight)
        return [
            add_initializer(graph, f"{weight.name}_quantized", values, scratch),
            add_initializer(graph, f"{weight.name}_scale", scales, scratch),
            add_initializer(graph, f"{weight.name}_zero_point", zero_points, scratch),
        ]

    @staticmethod
    def _rewrite(graph: ir.Graph, node: ir.Node, activation, weight) -> None:
        (a_q, a_scale, a_zp), (w_q, w_scale, w_zp) = activation, weight
        y = node.outputs[0]
        base = f"{node.name}_quant" if node.name else ""
        mul = base + "_scales_mul" if base else f"{a_scale.name}_{w_scale.name}_mul"
        (scales,) = _node(graph, node, "Mul", [a_scale, w_scale], [mul + ":0"], mul)
        (q,) = _node(
            graph,
            node,
            "MatMulInteger",
            [a_q, w_q, a_zp, w_zp],
            [f"{y.name}_output_quantized"],
            base,
        )
        (cast,) = _node(
            graph,
            node,
            "Cast",
            [q],
            [f"{q.name}_cast_output"],
            f"{q.name}_cast",
            to=ir.DataType.FLOAT,
        )
        final = ir.node("Mul", [cast, scales], name=base + "_output_scale_mul" if base else "")
        final.outputs[0].name = y.name
        ir.convenience.replace_nodes_and_values(graph, node, [node], [final], [y], final.outputs)
