"""Find channel groups: every tensor slice coupled to a layer's output channels.

From each producer (a Conv with group 1, a Gemm, or a MatMul with a constant 2-D weight) the
tracer walks forward along the channel axis, applying the op table's ``channels`` rule of each
consumer: elementwise ops pass the axis on (their constant operands are sliced after
broadcasting), BatchNormalization slices its parameters, pooling and reductions keep the axis,
``Flatten``/``Reshape`` of ``[N, C, 1, ...]`` into ``[N, C]`` keep it (rewriting a literal C in
the shape), depthwise Conv ties input and output channels, ``route`` ops (Concat, Split, Slice)
move the channels to other positions as the op table's routing rule says (counting them in
split sizes and slice bounds), and Conv/Gemm/MatMul consume them (their weight's input axis is
sliced at the channels' positions). The walk keeps where each run of the producer's units sits
on the axis (``coupling.Segments``). Where a non-constant operand joins an elementwise op (a
residual ``Add``), the tracer walks back to the producers of that operand (back through route
ops too) and records which of their units meet its own; ``coupling.build_groups`` merges them.
Anything else blocks the group, with the reason: unknown ops, ops that mix channels
(LayerNormalization, Softmax), routes the rule cannot describe (computed sizes, another axis),
shared constants, and graph outputs.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.ops import lookup
from onnxprune.routing import CountSite
from onnxprune.structured.axes import (
    Blocked,
    check_resize,
    collapsed_axis,
    const,
    depthwise,
    dim,
    int_attr,
    output_axis,
    producer_weight,
    rank,
    reduced_axis,
)
from onnxprune.structured.coupling import (
    Count,
    Coupling,
    Piece,
    Segments,
    Trace,
    build_groups,
    shifted,
)
from onnxprune.structured.groups import ChannelGroup

__all__ = ["find_channel_groups", "producer_weight"]


def _owner(node: ir.Node) -> str:
    graph = node.graph
    return (graph.name if graph is not None else None) or "a subgraph"


def _whole(units: int) -> Segments:
    return ((0, units, 0),)


class _Tracer:
    """Walks one producer's channels forward (and others' back, at residual joins)."""

    def __init__(self, model: ir.Model, units: int, kind: str) -> None:
        self.opset = model.opset_imports.get("", 1)
        self.graph = model.graph
        self.outputs = {v.name for v in model.graph.outputs}
        self.trace = Trace(units, kind)
        self.found: dict[tuple[str, int], list[tuple[str, Segments]]] = {}

    def _slice(self, value: ir.Value, axis: int, role: str, runs: Segments, node: str = ""):
        self.trace.pieces.append(Piece(value.name, axis, role, node, runs, dim(value, axis)))

    def _slice_param(self, value: ir.Value, axis: int, runs: Segments) -> None:
        if len(value.uses()) > 1:
            raise Blocked(f"constant '{value.name}' is shared by several nodes")
        self._slice(value, axis, "param", runs)

    def forward(self, start: ir.Value, axis: int) -> None:
        pending, seen = [(start, axis, _whole(self.trace.units))], set()
        while pending:
            value, axis, runs = pending.pop()
            if (value.name, axis, runs) in seen:
                continue
            seen.add((value.name, axis, runs))
            if value.name in self.outputs:
                raise Blocked(f"channels reach the graph output '{value.name}'")
            for use in value.uses():
                if use.node.graph is not self.graph:
                    raise Blocked(
                        f"channels of '{value.name}' are used inside a subgraph of "
                        f"'{_owner(use.node)}' (If/Loop/Scan branches are not followed)"
                    )
                pending += self._step(use.node, use.idx, value, axis, runs)

    def _step(self, node: ir.Node, index: int, value: ir.Value, axis: int, runs: Segments):
        knowledge = lookup(node)
        rule = knowledge.channels if knowledge else None
        label = f"{node.op_type} '{node.name}'"
        if rule is None:
            raise Blocked(f"{label} is not in the channel table")
        if rule == "elementwise":
            return self._elementwise(node, value, axis, runs)
        if rule == "route":
            return self._route(node, index, axis, runs)
        if index != 0:
            raise Blocked(f"{label} uses the channels as input {index}")
        if rule == "unary":
            if any(o.uses() for o in node.outputs[1:]):
                raise Blocked(f"{label}: second output in use")
            return [(node.outputs[0], axis, runs)]
        if rule == "resize":
            check_resize(node, value, axis)
            return [(node.outputs[0], axis, runs)]
        if rule in ("batchnorm", "pool"):
            if axis != 1:
                raise Blocked(f"{label} works on axis 1, channels are on axis {axis}")
            if rule == "batchnorm":
                for param in node.inputs[1:5]:
                    if const(param) is None:
                        raise Blocked(f"{label}: parameter '{param.name}' is not constant")
                    self._slice_param(param, 0, runs)
            return [(node.outputs[0], 1, runs)]
        if rule == "reduce":
            return [(node.outputs[0], reduced_axis(node, value, axis), runs)]
        if rule in ("flatten", "reshape"):
            out_axis, site = collapsed_axis(node, value, axis, rule)
            if site is not None:
                self.trace.counts.append(Count(node.name, site, runs))
            return [(node.outputs[0], out_axis, runs)]
        if rule == "linear":
            return self._consume_linear(node, value, axis, runs)
        return self._consume_conv(node, value, axis, runs)

    def _elementwise(self, node: ir.Node, value: ir.Value, axis: int, runs: Segments) -> list:
        out = node.outputs[0]
        out_axis = axis + rank(out) - rank(value)
        channels = dim(value, axis)
        for other in node.inputs:
            if other is None or other is value:
                continue
            other_axis = out_axis - (rank(out) - rank(other))
            size = other.shape[other_axis] if other_axis >= 0 else 1
            if const(other) is not None:
                if size == channels:
                    self._slice_param(other, other_axis, runs)
                elif size != 1:
                    raise Blocked(f"constant '{other.name}' has {size} entries on the channel axis")
            elif size == 1:
                continue  # broadcast along the channels, e.g. an attention mask
            else:
                for partner, theirs in self.backward(other, other_axis):
                    self.trace.couplings.append(Coupling(partner, runs, theirs))
        return [(out, out_axis, runs)]

    def _routing(self, node: ir.Node, axis: int):
        routing = lookup(node).routing(node, axis, self.opset)
        if isinstance(routing, str):
            raise Blocked(f"{node.op_type} '{node.name}': {routing}")
        return routing

    def _route(self, node: ir.Node, index: int, axis: int, runs: Segments) -> list:
        routing = self._routing(node, axis)
        if not any(route.source == index for route in routing.routes):
            raise Blocked(f"{node.op_type} '{node.name}' uses the channels as input {index}")
        for site in routing.counts:
            counted = shifted(runs, site.start, site.stop, site.start)
            if site.source == index and counted:
                self.trace.counts.append(Count(node.name, site, counted))
        found = []
        for route in routing.routes:
            moved = shifted(runs, route.start, route.stop, route.offset)
            if route.source == index and moved:
                found.append((node.outputs[route.target], axis, moved))
        return found

    def _consume_linear(self, node: ir.Node, value: ir.Value, axis: int, runs: Segments) -> list:
        label = f"{node.op_type} '{node.name}'"
        weight = node.inputs[1]
        if const(weight) is None or weight.shape is None or len(weight.shape) != 2:
            raise Blocked(f"{label} multiplies the channels with a non-constant tensor")
        if node.op_type == "Gemm":
            if axis != 1 or int_attr(node, "transA", 0):
                raise Blocked(f"{label}: channels are not Gemm's input features")
            in_axis = 1 if int_attr(node, "transB", 0) else 0
        else:
            if axis != rank(value) - 1:
                raise Blocked(f"{label}: channels are not MatMul's last axis")
            in_axis = 0
        if len(weight.uses()) > 1:
            raise Blocked(f"weight '{weight.name}' is shared by several nodes")
        self._slice(weight, in_axis, "consumer", runs, node.name)
        return []

    def _consume_conv(self, node: ir.Node, value: ir.Value, axis: int, runs: Segments) -> list:
        label = f"Conv '{node.name}'"
        weight = node.inputs[1]
        if axis != 1 or const(weight) is None:
            raise Blocked(f"{label}: channels are not its input channels")
        group, channels = int_attr(node, "group", 1), dim(value, 1)
        if group == 1:
            self._slice(weight, 1, "consumer", runs, node.name)
            return []
        if group == channels and weight.shape[0] == channels and weight.shape[1] == 1:
            self._slice_param(weight, 0, runs)  # depthwise: output channel c reads input c
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                self._slice_param(node.inputs[2], 0, runs)
            site = CountSite(0, (group,), 0, channels, attribute="group", scalar=True)
            self.trace.counts.append(Count(node.name, site, runs))
            return [(node.outputs[0], 1, runs)]
        raise Blocked(f"{label} is a grouped convolution (group {group})")

    def backward(self, value: ir.Value, axis: int) -> list[tuple[str, Segments]]:
        """Producers whose units reach ``value`` on ``axis``, with the positions they take."""
        key = (value.name, axis)
        if key not in self.found:
            self.found[key] = self._backward(value, axis)
        return self.found[key]

    def _backward(self, value: ir.Value, axis: int) -> list[tuple[str, Segments]]:
        node = value.producer()
        if node is None:
            raise Blocked(f"channels of '{value.name}' come from a graph input or constant")
        produced = producer_weight(node)
        if produced is not None:
            if axis != output_axis(node):
                raise Blocked(f"'{value.name}' meets the channels on another axis")
            weight, out_axis = produced
            return [(weight.name, _whole(weight.shape[out_axis]))]
        knowledge = lookup(node)
        rule = knowledge.channels if knowledge else None
        if rule in ("unary", "batchnorm", "pool") or (rule == "conv" and depthwise(node)):
            return self.backward(node.inputs[0], axis)
        if rule == "resize":
            check_resize(node, node.inputs[0], axis)
            return self.backward(node.inputs[0], axis)
        if rule == "elementwise":
            found = []
            for operand in node.inputs:
                if operand is not None and const(operand) is None:
                    operand_axis = axis - (rank(value) - rank(operand))
                    if operand_axis >= 0 and operand.shape[operand_axis] != 1:
                        found += self.backward(operand, operand_axis)
            return found
        if rule == "route":
            target = list(node.outputs).index(value)
            return [
                (name, moved)
                for route in self._routing(node, axis).routes
                if route.target == target
                for name, runs in self.backward(node.inputs[route.source], axis)
                if (moved := shifted(runs, route.start, route.stop, route.offset))
            ]
        raise Blocked(f"channels of '{value.name}' come through {node.op_type} '{node.name}'")


def _trace_producer(model: ir.Model, node: ir.Node) -> tuple[str, Trace]:
    weight, out_axis = producer_weight(node)
    units = weight.shape[out_axis]
    tracer = _Tracer(model, units, "channels" if lookup(node).channels == "conv" else "neurons")
    whole = _whole(units)
    tracer.trace.pieces.append(Piece(weight.name, out_axis, "producer", node.name, whole, units))
    try:
        if len(weight.uses()) > 1:
            raise Blocked(f"weight '{weight.name}' is shared by several nodes")
        bias_index = 2 if node.op_type in ("Conv", "Gemm") else None
        if bias_index is not None and len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = node.inputs[2]
            if const(bias) is None or (bias.shape is not None and bias.shape[-1] != units):
                raise Blocked(f"bias of '{node.name}' is not a per-channel constant")
            tracer._slice_param(bias, len(bias.shape) - 1, whole)
        tracer.forward(node.outputs[0], output_axis(node))
    except Blocked as reason:
        tracer.trace.blocked = str(reason)
    return weight.name, tracer.trace


def find_channel_groups(model: ir.Model) -> list[ChannelGroup]:
    """All channel/neuron groups of a shape-inferred model, blocked ones with their reason."""
    traces = dict(
        _trace_producer(model, node) for node in model.graph if producer_weight(node) is not None
    )
    return build_groups(traces)
