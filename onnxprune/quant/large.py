"""Weight quantization one tensor at a time, for models whose weights live in external data.

onnxruntime's quantizers load the whole model as one protobuf (every weight in memory, plus
their own copies). Here each weight is read from the memory-mapped external data, quantized
into exactly onnxruntime's format and released before the next one; the quantized tensors go
to the model's scratch file as they are produced (``onnxprune.streaming``), so memory holds one
weight at a time, not the quantized model. The float weights that stay float are never loaded:
the writer copies them from the input's data file.

* ``int4`` (round to nearest): ``MatMul`` -> ``MatMulNBits`` built as onnxruntime's
  ``MatMulNBitsQuantizer`` builds it (same C++ block packer, same names and attributes).
* ``dynamic``: ``MatMul`` -> ``DynamicQuantizeLinear`` + ``MatMulInteger`` + scale ``Mul``s as
  onnxruntime's ``quantize_dynamic`` writes them (``onnxprune.quant.large_dynamic``).

``streaming_refusal`` says why a model/options pair must take onnxruntime's own path instead
(embedding tables, subgraphs, mixed precision, data-aware algorithms, ...); those stay exact
by going through onnxruntime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnxruntime.capi._pybind_state import quantize_matmul_4bits

from onnxprune.quant.options import QuantizeOptions
from onnxprune.quant.rules import CONTRIB, LayerDecision
from onnxprune.staged import has_subgraphs
from onnxprune.streaming import ScratchTensors, release, scratch_for, stored_tensor

__all__ = [
    "QuantizeMatMulNBitsPass",
    "add_initializer",
    "drop_unused_initializers",
    "int4_blocks",
    "quantize_streaming",
    "streaming_refusal",
    "weight_matmuls",
]

logger = logging.getLogger(__name__)
# op types onnxruntime's quantizers would also rewrite; a model with any of them goes through
# onnxruntime itself (the streaming writers only know MatMul)
_OTHER_QUANTIZED = {
    "int4": {"Gather", "GatherElements"},
    "dynamic": {"Conv", "Attention", "LSTM", "Gather", "EmbedLayerNormalization", "Transpose"},
}


_WEIGHT_TYPES = {
    "int4": (ir.DataType.FLOAT, ir.DataType.FLOAT16),  # the packer takes both, as in onnxruntime
    "dynamic": (ir.DataType.FLOAT,),  # DynamicQuantizeLinear reads float32 only
}


def weight_matmuls(model: ir.Model, mode: str = "dynamic") -> list[ir.Node]:
    """Main-graph ``MatMul``s whose second input is a 2-D initializer of a type ``mode``
    streams (float32; float16 too for int4)."""
    constants = model.graph.initializers
    found = []
    for node in model.graph:
        weight = node.inputs[1] if node.op_type == "MatMul" and len(node.inputs) > 1 else None
        if weight is None or weight.name not in constants or weight.const_value is None:
            continue
        tensor = weight.const_value
        if tensor.dtype in _WEIGHT_TYPES[mode] and len(tensor.shape) == 2:
            found.append(node)
    return found


def streaming_refusal(model: ir.Model, options: QuantizeOptions, calibration) -> str | None:
    """Why ``model`` cannot be quantized tensor by tensor with ``options`` (None: it can)."""
    if options.mode not in _OTHER_QUANTIZED:
        return f"mode {options.mode} calibrates on the whole model"
    if options.mode == "int4" and (options.algorithm != "rtn" or options.int8_ratio > 0):
        return "only round-to-nearest int4 without 8-bit layers streams"
    if options.mode == "int4" and calibration is not None:
        return "per-layer int4 errors on calibration data need the whole model"
    if options.mode == "dynamic" and not options.per_channel:
        return "only per-channel dynamic int8 streams"
    if has_subgraphs(model):
        return "the model has subgraphs"
    others = sorted({n.op_type for n in model.graph} & _OTHER_QUANTIZED[options.mode])
    if others:
        return f"onnxruntime would also quantize {', '.join(others)} nodes"
    matmuls = {id(n) for n in weight_matmuls(model, options.mode)}
    for node in model.graph:
        if node.op_type == "MatMul" and node.inputs[0].const_value is not None:
            return f"MatMul {node.name} multiplies a constant from the left"
        weight = node.inputs[1] if node.op_type == "MatMul" and len(node.inputs) > 1 else None
        if weight is not None and weight.const_value is not None and id(node) not in matmuls:
            return (
                f"MatMul {node.name} has a weight that is not a 2-D float tensor this mode streams"
            )
    return None


def int4_blocks(weight: np.ndarray, block: int, symmetric: bool) -> tuple[np.ndarray, ...]:
    """``weight`` (K, N) as onnxruntime's ``MatMulNBits`` inputs: packed, scales, zero points."""
    rows, cols = weight.shape
    k_blocks = (rows + block - 1) // block
    if k_blocks * block > rows:
        weight = np.pad(weight, ((0, k_blocks * block - rows), (0, 0)), "constant")
    packed = np.zeros((cols, k_blocks, block // 2), dtype=np.uint8)
    zero_points = np.zeros((cols, (k_blocks + 1) // 2), dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=weight.dtype)
    quantize_matmul_4bits(packed, weight, scales, zero_points, block, cols, rows, symmetric)
    return packed, scales, zero_points


def add_initializer(
    graph: ir.Graph, name: str, array: np.ndarray, scratch: ScratchTensors | None
) -> ir.Value:
    """Register ``array`` as initializer ``name``: appended to the model's scratch file when it
    has one (written as produced, not kept in memory; the same bytes), else held in memory."""
    tensor = stored_tensor(array, name, scratch)
    value = ir.Value(name=name, const_value=tensor)
    value.shape, value.type = ir.Shape(array.shape), ir.TensorType(tensor.dtype)
    graph.register_initializer(value)
    return value


def drop_unused_initializers(graph: ir.Graph, names: set[str]) -> None:
    """Remove the initializers in ``names`` that nothing uses any more."""
    for name in sorted(names):
        value = graph.initializers.get(name)
        if value is not None and not value.uses() and value not in graph.outputs:
            del graph.initializers[name]


class QuantizeMatMulNBitsPass(ir.passes.InPlacePass):
    """Replace each ``MatMul`` with a 2-D float32 weight (not excluded) by ``MatMulNBits``.

    Guarantees: the weights, names, attributes and opset import are those onnxruntime's
    ``MatMulNBitsQuantizer`` (round to nearest, ``QOperator``) writes, so the model computes
    the same bytes; at most one float weight is materialised at a time.
    """

    def __init__(self, block_size: int, symmetric: bool, excluded: Mapping[str, str]):
        super().__init__()
        self.block_size, self.symmetric, self.excluded = block_size, symmetric, excluded
        self.plan: list[LayerDecision] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, done, scratch = model.graph, {}, scratch_for(model)
        for node in weight_matmuls(model, "int4"):
            if node.name in self.excluded:
                self.plan.append(
                    LayerDecision(node.name, "MatMul", "float", self.excluded[node.name])
                )
                continue
            weight = node.inputs[1]
            if weight.name not in done:
                done[weight.name] = self._quantize(graph, weight, scratch)
            rows, cols = weight.const_value.shape
            attributes = {"K": rows, "N": cols, "bits": 4, "block_size": self.block_size}
            name = f"{node.name}_Q4" if node.name else ""
            new = ir.node(
                "MatMulNBits",
                [node.inputs[0], *done[weight.name]],
                attributes,
                domain=CONTRIB,
                name=name,
            )
            new.outputs[0].name = node.outputs[0].name
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], [new], node.outputs, new.outputs
            )
            self.plan.append(LayerDecision(node.name, "MatMul", "int4", "constant weight"))
        drop_unused_initializers(graph, set(done))
        if done:
            model.opset_imports[CONTRIB] = 1
        return ir.passes.PassResult(model, modified=bool(done))

    def _quantize(self, graph: ir.Graph, weight: ir.Value, scratch) -> list[ir.Value]:
        array = weight.const_value.numpy()
        packed, scales, zero_points = int4_blocks(array, self.block_size, self.symmetric)
        del array
        release(weight)
        values = [
            add_initializer(graph, f"{weight.name}_Q4", packed, scratch),
            add_initializer(graph, f"{weight.name}_scales", scales, scratch),
        ]
        if not self.symmetric:
            values.append(
                add_initializer(graph, f"{weight.name}_zero_points", zero_points, scratch)
            )
        return values


def quantize_streaming(model: ir.Model, options: QuantizeOptions, excluded: Mapping[str, str]):
    """Quantize ``model`` in place, tensor by tensor; return the report details."""
    if options.mode == "int4":
        quantizer = QuantizeMatMulNBitsPass(options.block_size, options.symmetric, excluded)
    else:
        from onnxprune.quant.large_dynamic import QuantizeMatMulIntegerPass

        quantizer = QuantizeMatMulIntegerPass(excluded)
    quantizer(model)
    plan = sorted(quantizer.plan, key=lambda decision: decision.node)
    details = {"streamed": True, "layers": [d.as_dict() for d in plan]}
    return {**details, "layer_errors": {}} if options.mode == "int4" else details
