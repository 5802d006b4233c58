"""Write static int8 ``MatMul``s as onnxruntime's ``MatMulIntegerToFloat`` with the bias fused.

onnxruntime turns ``Q -> DQ -> MatMul <- DQ(int8 weight)`` with a float output into
``MatMulIntegerToFloat``, but its QDQ selector does not take the following bias ``Add`` in: a
BERT layer then runs five separate bias ``Add``s over its activations, and static int8 was
slower than dynamic int8, whose ``DynamicQuantizeMatMul`` fuses the bias. This pass writes the
fused node itself (``com.microsoft.MatMulIntegerToFloat``: uint8 activation, per-tensor scale
and zero point from the ``QuantizeLinear``; int8 weight, per-column or per-tensor scale; float
bias), which computes exactly what the QDQ graph computes. ``DequantizeLinear`` nodes left
without readers are removed.
"""

from __future__ import annotations

import logging

import onnx
from onnx import helper

from onnxprune.quant.rules import CONTRIB, use_contrib_opset

__all__ = ["FuseIntegerMatMulPass"]

logger = logging.getLogger(__name__)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


class FuseIntegerMatMulPass:
    """``Q -> DQ -> MatMul(DQ(W)) [-> Add(bias)]`` to one ``MatMulIntegerToFloat``.

    Guarantees: only a ``MatMul`` whose activation comes from a per-tensor ``Q -> DQ`` pair and
    whose weight is a 2-D constant dequantized per tensor or along its output axis is rewritten;
    the bias is fused only when it is a 1-D constant of the output width, added by the sole
    reader of the product. Everything else is left as it was.
    """

    def call(self, model: onnx.ModelProto) -> int:
        """Rewrite the model in place; returns how many ``MatMul``s were fused."""
        graph = model.graph
        constants = {t.name: t for t in graph.initializer}
        producers = {o: n for n in graph.node for o in n.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        replaced: dict[int, onnx.NodeProto] = {}
        dropped: set[int] = set()
        for node in graph.node:
            if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
                continue
            inputs = self._integer_inputs(node, producers, constants)
            if inputs is None:
                continue
            width = constants[inputs[1]].dims[1]
            bias_add, bias = self._bias(node, readers, constants, width)
            output = bias_add.output[0] if bias_add is not None else node.output[0]
            fused = helper.make_node(
                "MatMulIntegerToFloat",
                [*inputs, *([bias] if bias else [])],
                [output],
                name=node.name,
                domain=CONTRIB,
            )
            replaced[id(node)] = fused
            if bias_add is not None:
                dropped.add(id(bias_add))
        if not replaced:
            return 0
        nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
        graph.ClearField("node")
        graph.node.extend(_without_unread_dequantize(nodes, graph))
        use_contrib_opset(model)
        logger.info("%d int8 MatMuls fused into MatMulIntegerToFloat", len(replaced))
        return len(replaced)

    @staticmethod
    def _integer_inputs(node, producers, constants) -> list[str] | None:
        activation, weight = (producers.get(name) for name in node.input[:2])
        if activation is None or weight is None:
            return None
        if activation.op_type != "DequantizeLinear" or weight.op_type != "DequantizeLinear":
            return None
        quantize = producers.get(activation.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear" or len(activation.input) < 3:
            return None
        if any(n not in constants for n in (*activation.input[1:3], *weight.input[:3])):
            return None
        if len(weight.input) < 3 or len(constants[weight.input[0]].dims) != 2:
            return None
        scale = constants[weight.input[1]].dims
        per_column = len(scale) == 1 and scale[0] > 1
        if len(constants[activation.input[1]].dims) > 0 or (per_column and _axis(weight) != 1):
            return None
        a, a_scale, a_zero = activation.input[:3]
        b, b_scale, b_zero = weight.input[:3]
        return [a, b, a_scale, b_scale, a_zero, b_zero]

    @staticmethod
    def _bias(node, readers, constants, width) -> tuple[onnx.NodeProto | None, str | None]:
        following = readers.get(node.output[0], [])
        if len(following) != 1 or following[0].op_type != "Add":
            return None, None
        add = following[0]
        other = [n for n in add.input if n != node.output[0]]
        bias = constants.get(other[0]) if len(other) == 1 else None
        if bias is None or list(bias.dims) != [width] or bias.data_type != onnx.TensorProto.FLOAT:
            return None, None
        return add, other[0]


def _without_unread_dequantize(nodes: list, graph: onnx.GraphProto) -> list:
    read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    kept = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
    freed = {name for n in nodes if n.op_type == "DequantizeLinear" for name in n.input}
    unused = freed - {name for n in kept for name in n.input}
    if unused:
        remaining = [t for t in graph.initializer if t.name not in unused]
        graph.ClearField("initializer")
        graph.initializer.extend(remaining)
    return kept
