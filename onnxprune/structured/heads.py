"""Find attention heads in exported transformer graphs and group everything that depends on them.

The matcher recognises decomposed multi-head attention as the TorchScript and dynamo exporters
write it: for each of Q, K and V, ``MatMul(x, W) [+ bias] -> Reshape [.., heads, head_dim] ->
Transpose`` (heads moved to axis 1); ``MatMul(Q, Kᵀ)``, then elementwise scaling and masking
(operands broadcast over heads), ``Softmax`` on the last axis and optional ``Dropout``;
``MatMul(probabilities, V) -> Transpose -> Reshape [.., hidden] -> MatMul(·, W_out)``.
A head is then ``head_dim`` consecutive columns of W_q, W_k, W_v (and bias entries) and the
same rows of W_out; literal head counts and hidden sizes in the Reshape shapes are rewritten.
Anything that does not fit is not reported as a head group (its layers stay blocked).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxprune.structured.groups import ChannelGroup, ShapeEdit, TensorSlice

__all__ = ["find_head_groups"]

_PASS_THROUGH = ("Dropout", "Identity", "Cast")


class _NoMatch(Exception):
    pass


@dataclass
class _Projection:
    weight: ir.Value
    bias: ir.Value | None
    heads: int
    head_dim: int
    edit: ShapeEdit | None


def _single_producer(value: ir.Value | None, op_type: str) -> ir.Node:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != op_type:
        raise _NoMatch
    return node


def _skip(value: ir.Value) -> ir.Value:
    node = value.producer()
    while node is not None and node.op_type in _PASS_THROUGH:
        value = node.inputs[0]
        node = value.producer()
    return value


def constant_tensor(value: ir.Value | None):
    """The constant held by ``value`` (an initializer or a Constant node's output), or None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value
    node = value.producer()
    if node is not None and node.op_type == "Constant" and "value" in node.attributes:
        return node.attributes["value"].value
    return None


def _shape_edit(reshape: ir.Node, position: int, literal: int, per_unit: int) -> ShapeEdit | None:
    """How to rewrite the shape entry at ``position`` (None if it is -1/0, already implied)."""
    shape = reshape.inputs[1]
    if constant_tensor(shape) is not None:
        found = constant_tensor(shape).numpy().tolist()[position]
        edit = (reshape.name, 1, position)
    else:
        concat = _single_producer(shape, "Concat")
        piece = concat.inputs[position] if position < len(concat.inputs) else None
        tensor = constant_tensor(piece)
        if tensor is None or tensor.size != 1:
            raise _NoMatch
        if any(p.shape is None or list(p.shape) != [1] for p in concat.inputs):
            raise _NoMatch
        found, edit = int(tensor.numpy().ravel()[0]), (concat.name, position, 0)
    if found in (-1, 0):
        return None
    if found != literal:
        raise _NoMatch
    return ShapeEdit(edit[0], edit[1], edit[2], per_unit)


def _projection(value: ir.Value) -> _Projection:
    transpose = _single_producer(_skip(value), "Transpose")
    perm = list(transpose.attributes.get_ints("perm", ()))
    while transpose.inputs[0].producer() is not None and (
        transpose.inputs[0].producer().op_type == "Transpose"
    ):  # compose chained transposes (K is often split, then transposed again)
        transpose = transpose.inputs[0].producer()
        inner = list(transpose.attributes.get_ints("perm", ()))
        perm = [inner[axis] for axis in perm] if len(inner) == len(perm) else []
    reshape = _single_producer(transpose.inputs[0], "Reshape")
    split = reshape.outputs[0].shape
    if split is None or len(perm) != 4 or perm[1] != 2 or len(split) != 4:
        raise _NoMatch
    if [u.node for u in _uses_besides_shape_reads(reshape.inputs[0], {0, 1})] != [reshape]:
        raise _NoMatch
    node, bias = reshape.inputs[0].producer(), None
    if node is not None and node.op_type == "Add":
        if len(node.inputs[0].uses()) + len(node.inputs[1].uses()) != 2:
            raise _NoMatch
        constants = [v for v in node.inputs if v is not None and v.const_value is not None]
        others = [v for v in node.inputs if v is not None and v.const_value is None]
        if len(constants) != 1 or len(others) != 1 or len(constants[0].shape) != 1:
            raise _NoMatch
        bias, node = constants[0], others[0].producer()
    if node is None or node.op_type != "MatMul":
        raise _NoMatch
    weight = node.inputs[1]
    if weight.const_value is None or weight.shape is None or len(weight.shape) != 2:
        raise _NoMatch
    hidden, head_dim = weight.shape[1], split[3]
    if not isinstance(head_dim, int) or hidden % head_dim:
        raise _NoMatch
    heads = hidden // head_dim
    if split[2] not in (heads,) and isinstance(split[2], int):
        raise _NoMatch
    if bias is not None and list(bias.shape) != [hidden]:
        raise _NoMatch
    return _Projection(weight, bias, heads, head_dim, _shape_edit(reshape, 2, heads, 1))


def _reaches_matmul(value: ir.Value, budget: int = 2000) -> bool:
    """Whether a MatMul lies upstream of ``value`` (searching at most ``budget`` nodes)."""
    pending, seen = [value], set()
    while pending and len(seen) < budget:
        node = pending.pop().producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "MatMul":
            return True
        pending += [v for v in node.inputs if v is not None]
    return len(seen) >= budget


def _scores_matmul(value: ir.Value) -> ir.Node:
    """Walk back from the attention probabilities to the ``MatMul(Q, Kᵀ)``.

    Elementwise operands off the score path (masks) must be computed without any MatMul and
    broadcast over the heads axis (size 1 there, or a symbolic size).
    """
    node = value.producer()
    while node is not None and node.op_type != "MatMul":
        if node.op_type == "Softmax":
            if node.attributes.get_int("axis", -1) not in (-1, 3):
                raise _NoMatch
        elif node.op_type in ("Mul", "Div", "Add", "Sub", "Where"):
            live = [v for v in node.inputs if v is not None and constant_tensor(v) is None]
            main = [v for v in live if _reaches_matmul(v)]
            if len(main) != 1:
                raise _NoMatch
            for operand in live:
                if operand is not main[0] and operand.shape is not None and len(operand.shape) == 4:
                    if isinstance(operand.shape[1], int) and operand.shape[1] != 1:
                        raise _NoMatch  # a per-head operand (e.g. a bias) would need slicing
            node = main[0].producer()
            continue
        elif node.op_type not in _PASS_THROUGH:
            raise _NoMatch
        node = node.inputs[0].producer()
    if node is None:
        raise _NoMatch
    return node


def _uses_besides_shape_reads(value: ir.Value, untouched_axes: set[int]) -> list:
    """Uses of ``value`` other than ``Shape -> Gather(constant index)`` reads of untouched axes."""
    others = []
    for use in value.uses():
        if use.node.op_type != "Shape" or use.node.attributes:
            others.append(use)
            continue
        for read in use.node.outputs[0].uses():
            index = constant_tensor(read.node.inputs[1]) if read.node.op_type == "Gather" else None
            if index is None or not set(index.numpy().ravel().tolist()) <= untouched_axes:
                raise _NoMatch
    return others


def _output_projection(context: ir.Node, heads: int, head_dim: int):
    uses = _uses_besides_shape_reads(context.outputs[0], {0, 2})
    if len(uses) != 1 or uses[0].node.op_type != "Transpose":
        raise _NoMatch
    transpose = uses[0].node
    if list(transpose.attributes.get_ints("perm", ())) != [0, 2, 1, 3]:
        raise _NoMatch
    uses = transpose.outputs[0].uses()
    if len(uses) != 1 or uses[0].node.op_type != "Reshape":
        raise _NoMatch
    merge = uses[0].node
    merged = merge.outputs[0].shape
    if merged is None or len(merged) != 3 or merged[2] not in (heads * head_dim,):
        if merged is None or len(merged) != 3 or isinstance(merged[2], int):
            raise _NoMatch
    edit = _shape_edit(merge, 2, heads * head_dim, head_dim)
    uses = merge.outputs[0].uses()
    if len(uses) != 1 or uses[0].node.op_type != "MatMul" or uses[0].idx != 0:
        raise _NoMatch
    consumer = uses[0].node
    weight = consumer.inputs[1]
    if weight.const_value is None or weight.shape is None or len(weight.shape) != 2:
        raise _NoMatch
    return consumer, weight, edit


def _match(context: ir.Node) -> ChannelGroup:
    value = _projection(context.inputs[1])
    scores = _scores_matmul(context.inputs[0])
    query, key = _projection(scores.inputs[0]), _projection(scores.inputs[1])
    shapes = {(p.heads, p.head_dim) for p in (query, key, value)}
    if len(shapes) != 1:
        raise _NoMatch
    heads, head_dim = shapes.pop()
    consumer, out_weight, merge_edit = _output_projection(context, heads, head_dim)
    group = ChannelGroup(
        id=f"heads:{out_weight.name}", kind="heads", units=heads, unit_size=head_dim
    )
    for projection in (query, key, value):
        if len(projection.weight.uses()) > 1:
            raise _NoMatch
        node = projection.weight.uses()[0].node
        group.slices.append(TensorSlice(projection.weight.name, 1, "producer", node.name))
        if projection.bias is not None:
            group.slices.append(TensorSlice(projection.bias.name, 0, "param"))
        if projection.edit is not None and projection.edit not in group.shape_edits:
            group.shape_edits.append(projection.edit)
    group.slices.append(TensorSlice(out_weight.name, 0, "consumer", consumer.name))
    if merge_edit is not None:
        group.shape_edits.append(merge_edit)
    return group


def find_head_groups(model: ir.Model) -> list[ChannelGroup]:
    """One group per recognised attention block, in graph order."""
    groups = []
    for node in model.graph:
        if node.op_type != "MatMul" or any(
            v is None or v.const_value is not None for v in node.inputs
        ):
            continue
        try:
            groups.append(_match(node))
        except _NoMatch:
            continue
    return groups
