"""Where channels sit: the facts about axes that the channel tracer (``dependency``) uses.

``producer_weight`` says which nodes produce prunable channels (Conv with group 1, Gemm, MatMul
with a constant 2-D weight) and on which weight axis; ``reduced_axis`` and ``collapsed_axis``
follow the channel axis through reductions and through ``Flatten``/``Reshape`` into ``[N, C]``.
Anything they cannot follow raises ``Blocked`` with the reason.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.ops import lookup
from onnxprune.routing import CountSite
from onnxprune.structured.shapes import constant_tensor

__all__ = [
    "Blocked",
    "check_resize",
    "collapsed_axis",
    "const",
    "depthwise",
    "dim",
    "int_attr",
    "output_axis",
    "producer_weight",
    "rank",
    "reduced_axis",
]


class Blocked(Exception):
    """The walk met something structured pruning cannot follow; the message says what."""


def const(value: ir.Value | None):
    return None if value is None else value.const_value


def rank(value: ir.Value) -> int:
    if value.shape is None:
        raise Blocked(f"tensor '{value.name}' has no known rank (shape inference failed)")
    return len(value.shape)


def dim(value: ir.Value, axis: int) -> int:
    if value.shape is None or not isinstance(value.shape[axis], int):
        raise Blocked(f"tensor '{value.name}' has no static size on the channel axis")
    return value.shape[axis]


def check_resize(node: ir.Node, value: ir.Value, axis: int) -> None:
    """Resize/Upsample keep the channel axis when its scale is a constant 1 (``sizes`` would fix
    the channel count in a literal: refused); ``axes`` (opset 18) leaving it out also keeps it."""
    label = f"{node.op_type} '{node.name}'"
    axes = node.attributes.get_ints("axes", None)
    if axes is not None and axis not in [a % rank(value) for a in axes]:
        return
    scales_index = 1 if node.op_type == "Upsample" or len(node.inputs) == 2 else 2
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None and sizes.name:
        raise Blocked(f"{label}: 'sizes' fixes the channel count")
    scales = constant_tensor(node.inputs[scales_index]) if len(node.inputs) > scales_index else None
    if scales is None:
        raise Blocked(f"{label}: scales are not constant")
    position = axis if axes is None else [a % rank(value) for a in axes].index(axis)
    if float(scales.numpy().ravel()[position]) != 1.0:
        raise Blocked(f"{label} resizes the channel axis")


def int_attr(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def producer_weight(node: ir.Node) -> tuple[ir.Value, int] | None:
    """``(weight, output axis of the weight)`` if ``node`` produces prunable channels."""
    knowledge = lookup(node)
    rule = knowledge.channels if knowledge else None
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if rule not in ("linear", "conv") or const(weight) is None or weight.shape is None:
        return None
    if rule == "conv":
        if int_attr(node, "group", 1) != 1 or len(weight.shape) < 3:
            return None
        return weight, 0
    if node.op_type == "Gemm":
        if int_attr(node, "transA", 0):
            return None
        return weight, 0 if int_attr(node, "transB", 0) else 1
    return (weight, 1) if len(weight.shape) == 2 else None


def depthwise(node: ir.Node) -> bool:
    """A Conv whose output channel c reads only input channel c."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None or weight.shape is None or len(weight.shape) < 3:
        return False
    return weight.shape[1] == 1 and int_attr(node, "group", 1) == weight.shape[0]


def output_axis(node: ir.Node) -> int:
    if lookup(node).channels == "conv" or node.op_type == "Gemm":
        return 1
    return rank(node.outputs[0]) - 1


def reduced_axis(node: ir.Node, value: ir.Value, axis: int) -> int:
    """Where the channel axis is after a reduction over other axes."""
    axes_input = node.inputs[1] if len(node.inputs) > 1 else None
    if axes_input is not None:
        axes = const(axes_input).numpy().tolist() if const(axes_input) is not None else None
    else:
        axes = list(node.attributes.get_ints("axes", ()))
    if not axes:
        raise Blocked(f"{node.op_type} '{node.name}' reduces unknown or all axes")
    size = rank(value)
    axes = sorted(a % size for a in axes)
    if axis in axes:
        raise Blocked(f"{node.op_type} '{node.name}' reduces the channel axis")
    return axis if int_attr(node, "keepdims", 1) else axis - sum(a < axis for a in axes)


def collapsed_axis(
    node: ir.Node, value: ir.Value, axis: int, rule: str
) -> tuple[int, CountSite | None]:
    """The channel axis after ``Flatten``/``Reshape`` of ``[N, C, 1, ...]`` into ``[N, C]``, and
    the literal channel count of the target shape, if it has one."""
    label = f"{node.op_type} '{node.name}'"
    shape, out_shape = value.shape, node.outputs[0].shape
    if shape is None or out_shape is None or any(d != 1 for d in shape[axis + 1 :]):
        raise Blocked(f"{label} merges the channels with other axes")
    if len(out_shape) != axis + 1:
        raise Blocked(f"{label} moves the channel axis")
    if rule == "flatten":
        if int_attr(node, "axis", 1) != axis:
            raise Blocked(f"{label} merges the channels with leading axes")
        return axis, None
    target = const(node.inputs[1])
    if target is None:
        raise Blocked(f"{label} has a computed shape")
    literal = target.numpy().tolist()
    channels = dim(value, axis)
    if literal[axis] == channels:
        return axis, CountSite(axis, tuple(literal), 0, channels, input=1)
    if literal[axis] not in (-1, 0):
        raise Blocked(f"{label} reshapes the channels to {literal[axis]}")
    return axis, None
