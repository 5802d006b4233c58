"""Count multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes, in every graph.

Shapes come from ONNX shape inference with data propagation on a copy of the model whose
symbolic input dims are set first, to their value in ``dims`` (by name) or 1, so they flow
through Shape/Gather/Concat chains the way the runtime sees them. A name in ``dims`` that is no
input dim is refused. By default the count is per sample (and per token for sequence models).
Dims still unknown after inference count as 1, and the layer says so
(``symbolic_dims_as_1``). Nodes inside ``If``/``Loop``/``Scan`` bodies are counted with their
graph named; the total adds every branch of an ``If`` (an upper bound: only one runs). Nodes
whose shapes cannot be resolved are listed with ``macs: null``.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from onnxprune.errors import InputError
from onnxprune.normalize import NormalizeModelPass, symbolic_dim_names

__all__ = ["count_macs"]

_COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _dims(value: ir.Value | None) -> tuple[list[int], bool] | None:
    """Concrete dims (symbols as 1) and whether any symbol was taken as 1."""
    if value is None or value.shape is None:
        return None
    resolved, symbolic = [], False
    for dim in value.shape:
        if isinstance(dim, int) and dim >= 0:
            resolved.append(dim)
        else:
            resolved.append(1)
            symbolic = True
    return resolved, symbolic


def _node_macs(node: ir.Node) -> tuple[int | None, bool]:
    shapes = [_dims(v) for v in (node.outputs[0], *node.inputs[:2])]
    if len(node.inputs) < 2 or any(s is None for s in shapes):
        return None, False
    (out, s_out), (a, s_a), (weight, s_w) = shapes  # type: ignore[misc]
    symbolic = s_out or s_a or s_w
    if node.op_type == "Conv":
        return math.prod(out) * math.prod(weight[1:]), symbolic
    if node.op_type == "ConvTranspose":
        return math.prod(a) * math.prod(weight[1:]), symbolic
    if node.op_type == "Gemm":
        return math.prod(out) * (a[0] if node.attributes.get_int("transA", 0) else a[-1]), symbolic
    # MatMul: the reduced dim is B's second-to-last (a constant weight always knows it, while
    # A's last dim may come from a Shape/Concat chain that inference cannot resolve).
    reduced = weight[-2] if len(weight) >= 2 and not s_w else a[-1]
    return math.prod(out) * reduced, symbolic


def _name(dim: ir.SymbolicDim | int) -> str | None:
    return None if isinstance(dim, int) else dim.value


def _set_input_dims(model: ir.Model, dims: dict[str, int]) -> None:
    unknown = sorted(set(dims) - symbolic_dim_names(model))
    if unknown:
        known = ", ".join(sorted(symbolic_dim_names(model))) or "none"
        raise InputError(f"--dim {', '.join(unknown)}: no input has such a dim (symbolic: {known})")
    for value in model.graph.inputs:
        if value.shape is not None:
            value.shape = ir.Shape(
                [d if isinstance(d, int) and d >= 0 else dims.get(_name(d), 1) for d in value.shape]
            )


def count_macs(model: ir.Model, dims: dict[str, int] | None = None) -> dict:
    """Per-node and total MACs of ``model`` (shape inference runs on a copy)."""
    dims = dims or {}
    working = model.clone()
    _set_input_dims(working, dims)
    for node in ir.traversal.RecursiveGraphIterator(working.graph):
        if node.graph is working.graph:
            for value in node.outputs:  # stale declared shapes would hide the new dims
                value.shape = None
    NormalizeModelPass()(working)
    layers = []
    for node in ir.traversal.RecursiveGraphIterator(working.graph):
        if node.op_type not in _COUNTED or node.domain not in ("", "ai.onnx"):
            continue
        macs, symbolic = _node_macs(node)
        layer = {"node": node.name, "op": node.op_type, "macs": macs}
        if symbolic:
            layer["symbolic_dims_as_1"] = True
        if node.graph is not working.graph:
            layer["subgraph"] = node.graph.name if node.graph is not None else None
        layers.append(layer)
    total = sum(layer["macs"] or 0 for layer in layers)
    return {"total": total, "dims": dict(sorted(dims.items())), "layers": layers}
