"""Find channel groups: every tensor slice coupled to a layer's output channels.

From each producer (a Conv with group 1, a Gemm, or a MatMul with a constant 2-D weight) the
tracer walks forward along the channel axis, applying the op table's ``channels`` rule of each
consumer: elementwise ops pass the axis on (their constant operands are sliced after
broadcasting), BatchNormalization slices its parameters, pooling and reductions keep the axis,
``Flatten``/``Reshape`` of ``[N, C, 1, ...]`` into ``[N, C]`` keep it (rewriting a literal C in
the shape), depthwise Conv ties input and output channels, and Conv/Gemm/MatMul consume it (their
weight's input axis is sliced). Where a non-constant operand joins an elementwise op (a residual
``Add``), the tracer walks back to the producers of that operand and the groups are merged.
Anything else blocks the group, with the reason: unknown ops, ops that mix channels
(LayerNormalization, Softmax), Concat/Split, shared constants, and graph outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from onnxprune.ops import lookup
from onnxprune.structured.groups import AttributeEdit, ChannelGroup, ShapeEdit, TensorSlice

__all__ = ["find_channel_groups", "producer_weight"]


class Blocked(Exception):
    """The walk met something structured pruning cannot follow; the message says what."""


def _const(value: ir.Value | None):
    return None if value is None else value.const_value


def _rank(value: ir.Value) -> int:
    if value.shape is None:
        raise Blocked(f"tensor '{value.name}' has no known rank (shape inference failed)")
    return len(value.shape)


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def producer_weight(node: ir.Node) -> tuple[ir.Value, int] | None:
    """``(weight, output axis of the weight)`` if ``node`` produces prunable channels."""
    knowledge = lookup(node)
    rule = knowledge.channels if knowledge else None
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if rule not in ("linear", "conv") or _const(weight) is None or weight.shape is None:
        return None
    if rule == "conv":
        if _int_attr(node, "group", 1) != 1 or len(weight.shape) < 3:
            return None
        return weight, 0
    if node.op_type == "Gemm":
        if _int_attr(node, "transA", 0):
            return None
        return weight, 0 if _int_attr(node, "transB", 0) else 1
    return (weight, 1) if len(weight.shape) == 2 else None


def _depthwise(node: ir.Node) -> bool:
    """A Conv whose output channel c reads only input channel c."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None or weight.shape is None or len(weight.shape) < 3:
        return False
    return weight.shape[1] == 1 and _int_attr(node, "group", 1) == weight.shape[0]


def _output_axis(node: ir.Node) -> int:
    if lookup(node).channels == "conv" or node.op_type == "Gemm":
        return 1
    return _rank(node.outputs[0]) - 1


@dataclass
class _Trace:
    slices: list[TensorSlice] = field(default_factory=list)
    edits: list[ShapeEdit] = field(default_factory=list)
    attribute_edits: list[AttributeEdit] = field(default_factory=list)
    partners: set[str] = field(default_factory=set)
    blocked: str | None = None


class _Tracer:
    def __init__(self, model: ir.Model, units: int) -> None:
        self.model = model
        self.units = units
        self.outputs = {v.name for v in model.graph.outputs}
        self.trace = _Trace()

    def _slice_param(self, value: ir.Value, axis: int) -> None:
        if len(value.uses()) > 1:
            raise Blocked(f"constant '{value.name}' is shared by several nodes")
        self.trace.slices.append(TensorSlice(value.name, axis, "param"))

    def forward(self, start: ir.Value, axis: int) -> None:
        pending, seen = [(start, axis)], set()
        while pending:
            value, axis = pending.pop()
            if (value.name, axis) in seen:
                continue
            seen.add((value.name, axis))
            if value.name in self.outputs:
                raise Blocked(f"channels reach the graph output '{value.name}'")
            for use in value.uses():
                pending += self._step(use.node, use.idx, value, axis)

    def _step(self, node: ir.Node, index: int, value: ir.Value, axis: int) -> list:
        knowledge = lookup(node)
        rule = knowledge.channels if knowledge else None
        label = f"{node.op_type} '{node.name}'"
        if rule is None:
            raise Blocked(f"{label} is not in the channel table")
        if rule == "elementwise":
            return self._elementwise(node, value, axis)
        if index != 0:
            raise Blocked(f"{label} uses the channels as input {index}")
        if rule == "unary":
            if any(o.uses() for o in node.outputs[1:]):
                raise Blocked(f"{label}: second output in use")
            return [(node.outputs[0], axis)]
        if rule in ("batchnorm", "pool"):
            if axis != 1:
                raise Blocked(f"{label} works on axis 1, channels are on axis {axis}")
            if rule == "batchnorm":
                for param in node.inputs[1:5]:
                    if _const(param) is None:
                        raise Blocked(f"{label}: parameter '{param.name}' is not constant")
                    self._slice_param(param, 0)
            return [(node.outputs[0], 1)]
        if rule == "reduce":
            return [(node.outputs[0], self._reduce_axis(node, value, axis))]
        if rule in ("flatten", "reshape"):
            return [(node.outputs[0], self._collapse(node, value, axis, rule))]
        if rule == "linear":
            return self._consume_linear(node, value, axis)
        return self._consume_conv(node, axis)

    def _elementwise(self, node: ir.Node, value: ir.Value, axis: int) -> list:
        out = node.outputs[0]
        out_axis = axis + _rank(out) - _rank(value)
        for other in node.inputs:
            if other is None or other is value:
                continue
            other_axis = out_axis - (_rank(out) - _rank(other))
            size = other.shape[other_axis] if other_axis >= 0 else 1
            if _const(other) is not None:
                if size == self.units:
                    self._slice_param(other, other_axis)
                elif size != 1:
                    raise Blocked(f"constant '{other.name}' has {size} entries on the channel axis")
            elif size == 1:
                continue  # broadcast along the channels, e.g. an attention mask
            else:
                self.trace.partners |= set(self.backward(other, other_axis))
        return [(out, out_axis)]

    def _reduce_axis(self, node: ir.Node, value: ir.Value, axis: int) -> int:
        axes_input = node.inputs[1] if len(node.inputs) > 1 else None
        if axes_input is not None:
            axes = _const(axes_input).numpy().tolist() if _const(axes_input) is not None else None
        else:
            axes = list(node.attributes.get_ints("axes", ()))
        if not axes:
            raise Blocked(f"{node.op_type} '{node.name}' reduces unknown or all axes")
        rank = _rank(value)
        axes = sorted(a % rank for a in axes)
        if axis in axes:
            raise Blocked(f"{node.op_type} '{node.name}' reduces the channel axis")
        return axis if _int_attr(node, "keepdims", 1) else axis - sum(a < axis for a in axes)

    def _collapse(self, node: ir.Node, value: ir.Value, axis: int, rule: str) -> int:
        label = f"{node.op_type} '{node.name}'"
        shape, out_shape = value.shape, node.outputs[0].shape
        if shape is None or out_shape is None or any(d != 1 for d in shape[axis + 1 :]):
            raise Blocked(f"{label} merges the channels with other axes")
        if len(out_shape) != axis + 1:
            raise Blocked(f"{label} moves the channel axis")
        if rule == "flatten":
            if _int_attr(node, "axis", 1) != axis:
                raise Blocked(f"{label} merges the channels with leading axes")
            return axis
        target = _const(node.inputs[1])
        if target is None:
            raise Blocked(f"{label} has a computed shape")
        literal = target.numpy().tolist()[axis]
        if literal == self.units:
            self.trace.edits.append(ShapeEdit(node.name, 1, axis, 1))
        elif literal not in (-1, 0):
            raise Blocked(f"{label} reshapes the channels to {literal}")
        return axis

    def _consume_linear(self, node: ir.Node, value: ir.Value, axis: int) -> list:
        label = f"{node.op_type} '{node.name}'"
        weight = node.inputs[1]
        if _const(weight) is None or weight.shape is None or len(weight.shape) != 2:
            raise Blocked(f"{label} multiplies the channels with a non-constant tensor")
        if node.op_type == "Gemm":
            if axis != 1 or _int_attr(node, "transA", 0):
                raise Blocked(f"{label}: channels are not Gemm's input features")
            in_axis = 1 if _int_attr(node, "transB", 0) else 0
        else:
            if axis != _rank(value) - 1:
                raise Blocked(f"{label}: channels are not MatMul's last axis")
            in_axis = 0
        if len(weight.uses()) > 1:
            raise Blocked(f"weight '{weight.name}' is shared by several nodes")
        self.trace.slices.append(TensorSlice(weight.name, in_axis, "consumer", node.name))
        return []

    def _consume_conv(self, node: ir.Node, axis: int) -> list:
        label = f"Conv '{node.name}'"
        weight = node.inputs[1]
        if axis != 1 or _const(weight) is None:
            raise Blocked(f"{label}: channels are not its input channels")
        group = _int_attr(node, "group", 1)
        if group == 1:
            self.trace.slices.append(TensorSlice(weight.name, 1, "consumer", node.name))
            return []
        if group == self.units and weight.shape[0] == self.units and weight.shape[1] == 1:
            self._slice_param(weight, 0)  # depthwise: output channel c reads input channel c
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                self._slice_param(node.inputs[2], 0)
            self.trace.attribute_edits.append(AttributeEdit(node.name, "group"))
            return [(node.outputs[0], 1)]
        raise Blocked(f"{label} is a grouped convolution (group {group})")

    def backward(self, value: ir.Value, axis: int) -> list[str]:
        """Producers whose output channels reach ``value`` on ``axis``."""
        node = value.producer()
        if node is None:
            raise Blocked(f"channels of '{value.name}' come from a graph input or constant")
        produced = producer_weight(node)
        if produced is not None:
            if axis != _output_axis(node):
                raise Blocked(f"'{value.name}' meets the channels on another axis")
            return [produced[0].name]
        knowledge = lookup(node)
        rule = knowledge.channels if knowledge else None
        if rule in ("unary", "batchnorm", "pool") or (rule == "conv" and _depthwise(node)):
            return self.backward(node.inputs[0], axis)
        if rule == "elementwise":
            found = []
            for operand in node.inputs:
                if operand is not None and _const(operand) is None:
                    operand_axis = axis - (_rank(value) - _rank(operand))
                    if operand_axis >= 0 and operand.shape[operand_axis] != 1:
                        found += self.backward(operand, operand_axis)
            return found
        raise Blocked(f"channels of '{value.name}' come through {node.op_type} '{node.name}'")


def _trace_producer(model: ir.Model, node: ir.Node) -> tuple[str, int, _Trace]:
    weight, out_axis = producer_weight(node)
    units = weight.shape[out_axis]
    tracer = _Tracer(model, units)
    tracer.trace.slices.append(TensorSlice(weight.name, out_axis, "producer", node.name))
    try:
        if len(weight.uses()) > 1:
            raise Blocked(f"weight '{weight.name}' is shared by several nodes")
        bias_index = 2 if node.op_type in ("Conv", "Gemm") else None
        if bias_index is not None and len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = node.inputs[2]
            if _const(bias) is None or (bias.shape is not None and bias.shape[-1] != units):
                raise Blocked(f"bias of '{node.name}' is not a per-channel constant")
            tracer._slice_param(bias, len(bias.shape) - 1)
        tracer.forward(node.outputs[0], _output_axis(node))
    except Blocked as reason:
        tracer.trace.blocked = str(reason)
    return weight.name, units, tracer.trace


def _find(parent: dict[str, str], name: str) -> str:
    while parent[name] != name:
        parent[name] = parent[parent[name]]
        name = parent[name]
    return name


def find_channel_groups(model: ir.Model) -> list[ChannelGroup]:
    """All channel/neuron groups of a shape-inferred model, blocked ones with their reason."""
    traces: dict[str, tuple[int, _Trace, str]] = {}
    for node in model.graph:
        if producer_weight(node) is not None:
            name, units, trace = _trace_producer(model, node)
            kind = "channels" if lookup(node).channels == "conv" else "neurons"
            traces[name] = (units, trace, kind)
    parent = {name: name for name in traces}
    for name, (_, trace, _) in traces.items():
        for partner in trace.partners:
            if partner not in parent:
                trace.blocked = trace.blocked or f"couples with '{partner}', which is not a layer"
                continue
            parent[_find(parent, partner)] = _find(parent, name)
    members: dict[str, list[str]] = {}
    for name in traces:
        members.setdefault(_find(parent, name), []).append(name)
    return [_merge(names, traces) for names in members.values()]


def _merge(names: list[str], traces: dict[str, tuple[int, _Trace, str]]) -> ChannelGroup:
    units = {traces[n][0] for n in names}
    group = ChannelGroup(
        id=names[0],
        kind="channels" if any(traces[n][2] == "channels" for n in names) else "neurons",
        units=min(units),
    )
    seen = set()
    for name in names:
        _, trace, _ = traces[name]
        group.blocked = group.blocked or trace.blocked
        for piece in trace.slices:
            if (piece.tensor, piece.axis) not in seen:
                seen.add((piece.tensor, piece.axis))
                group.slices.append(piece)
        group.shape_edits += [e for e in trace.edits if e not in group.shape_edits]
        group.attribute_edits += [
            e for e in trace.attribute_edits if e not in group.attribute_edits
        ]
    if len(units) > 1:
        group.blocked = group.blocked or f"coupled layers disagree on the channel count {units}"
    return group
