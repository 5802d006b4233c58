"""Count multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes.

Shapes come from ONNX shape inference. Symbolic dimensions take the value given in ``dims``
(by name) or 1, so by default the count is per sample (and per token for sequence models).
Nodes whose shapes cannot be resolved are listed with ``macs: null``.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

__all__ = ["count_macs"]


def _dims(value: ir.Value | None, dims: dict[str, int]) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    resolved = []
    for dim in value.shape:
        if isinstance(dim, int):
            resolved.append(dim)
        elif dim.value in dims:
            resolved.append(dims[dim.value])
        else:
            resolved.append(1)
    return resolved


def _node_macs(node: ir.Node, dims: dict[str, int]) -> int | None:
    out = _dims(node.outputs[0], dims)
    weight = _dims(node.inputs[1], dims) if len(node.inputs) > 1 else None
    if out is None or weight is None:
        return None
    if node.op_type == "Conv":
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        source = _dims(node.inputs[0], dims)
        return None if source is None else math.prod(source) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        a = _dims(node.inputs[0], dims)
        if a is None:
            return None
        return math.prod(out) * (a[0] if node.attributes.get_int("transA", 0) else a[-1])
    a = _dims(node.inputs[0], dims)
    return None if a is None else math.prod(out) * a[-1]


def count_macs(model: ir.Model, dims: dict[str, int] | None = None) -> dict:
    """Per-node and total MACs of ``model`` (shape inference runs on a copy)."""
    dims = dims or {}
    working = model.clone()
    ShapeInferencePass()(working)
    layers = []
    for node in working.graph:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            layers.append({"node": node.name, "op": node.op_type, "macs": _node_macs(node, dims)})
    total = sum(layer["macs"] or 0 for layer in layers)
    return {"total": total, "dims": dict(sorted(dims.items())), "layers": layers}
