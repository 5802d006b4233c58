"""Read shape tensors symbolically: which literal or which run-time dimension each entry is.

Exporters build the target shapes of ``Reshape`` and ``Expand`` either as constants or at run
time from ``Shape -> Gather/Slice -> Unsqueeze -> Concat`` chains. ``shape_terms`` evaluates
such a chain into one term per entry:

* ``Lit(value, origin)``: a literal; ``origin`` = (node, input index, position) names the
  constant it came from, so that it can be rewritten (``ShapeEdit``);
* ``Dim(source, axis, factor)``: ``factor`` times dimension ``axis`` of tensor ``source``, read
  at run time (so it follows ``source`` when ``source`` shrinks).

Anything the evaluator does not understand gives ``None``: callers refuse rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx_ir as ir

__all__ = ["Dim", "Lit", "constant_tensor", "read_axes", "shape_terms"]

_SAME = ("Unsqueeze", "Squeeze", "Cast", "Identity", "Reshape")


@dataclass(frozen=True)
class Lit:
    """A literal entry and the constant that holds it (None if it was computed)."""

    value: int
    origin: tuple[str, int, int] | None = None


@dataclass(frozen=True, eq=False)
class Dim:
    """``factor`` times dimension ``axis`` of ``source``, read at run time."""

    source: ir.Value
    axis: int
    factor: Fraction = Fraction(1)


Term = Lit | Dim


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


def _ints(value: ir.Value | None) -> list[int] | None:
    tensor = constant_tensor(value)
    if tensor is None or not np.issubdtype(tensor.numpy().dtype, np.integer):
        return None
    return [int(v) for v in tensor.numpy().ravel()]


def _scaled(terms: list[Term], factor: Fraction) -> list[Term] | None:
    out: list[Term] = []
    for term in terms:
        if isinstance(term, Dim):
            out.append(Dim(term.source, term.axis, term.factor * factor))
        elif (term.value * factor).denominator == 1:
            out.append(Lit(int(term.value * factor)))
        else:
            return None
    return out


def _shape_read(node: ir.Node) -> list[Term] | None:
    source = node.inputs[0]
    if source.shape is None:
        return None
    rank = len(source.shape)
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", rank)
    return [Dim(source, axis) for axis in range(rank)[slice(start, end)]]


def _sliced(node: ir.Node, terms: list[Term]) -> list[Term] | None:
    starts, ends = _ints(node.inputs[1]), _ints(node.inputs[2])
    axes = _ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else [0]
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if None in (starts, ends, axes, steps) or axes not in ([0], [-1]) or steps != [1]:
        return None
    return terms[slice(starts[0], ends[0])]


def _arithmetic(node: ir.Node, seen: dict) -> list[Term] | None:
    """``x * c``, ``c * x`` or ``x / c`` for a scalar integer constant ``c``."""
    for index in (1, 0) if node.op_type == "Mul" else (1,):
        scalar = _ints(node.inputs[index])
        if scalar is not None and len(scalar) == 1 and scalar[0] != 0:
            terms = _terms(node, 1 - index, seen)
            if terms is None:
                return None
            factor = Fraction(scalar[0]) if node.op_type == "Mul" else Fraction(1, scalar[0])
            return _scaled(terms, factor)
    return None


def _where(node: ir.Node, seen: dict) -> list[Term] | None:
    """``Where(Equal(s, -1), ones, s)`` (replace -1 by 1, as for Expand): ``s`` if it has no -1."""
    filler = node.inputs[1].producer()
    if filler is None or filler.op_type != "ConstantOfShape":
        return None
    terms = _terms(node, 2, seen)
    if terms is None or any(isinstance(t, Lit) and t.value == -1 for t in terms):
        return None
    return terms


def _terms(consumer: ir.Node, index: int, seen: dict) -> list[Term] | None:
    value = consumer.inputs[index]
    literal = _ints(value)
    if literal is not None:
        return [Lit(v, (consumer.name, index, i)) for i, v in enumerate(literal)]
    node = value.producer() if value is not None else None
    if node is None or len(seen) > 200:
        return None
    if id(node) not in seen:
        seen[id(node)] = _evaluate(node, seen)
    return seen[id(node)]


def _evaluate(node: ir.Node, seen: dict) -> list[Term] | None:
    op = node.op_type
    if op == "Shape":
        return _shape_read(node)
    if op in _SAME:
        return _terms(node, 0, seen)
    if op in ("Mul", "Div"):
        return _arithmetic(node, seen)
    if op == "Where":
        return _where(node, seen)
    if op == "Concat":
        pieces = [_terms(node, i, seen) for i in range(len(node.inputs))]
        return None if any(p is None for p in pieces) else [t for p in pieces for t in p]
    data = _terms(node, 0, seen) if op in ("Gather", "Slice") else None
    if data is None:
        return None
    if op == "Slice":
        return _sliced(node, data)
    indices = _ints(node.inputs[1])
    if indices is None or node.attributes.get_int("axis", 0) != 0:
        return None
    if any(not -len(data) <= i < len(data) for i in indices):
        return None
    return [data[i] for i in indices]


def shape_terms(node: ir.Node, index: int = 1) -> list[Term] | None:
    """One term per entry of ``node.inputs[index]`` (a 1-D shape tensor), or None."""
    return _terms(node, index, {})


def read_axes(shape_node: ir.Node, use: ir.Usage) -> set[int]:
    """Axes of ``shape_node``'s input that ``use`` of its output reads (all when unsure)."""
    rank = len(shape_node.inputs[0].shape)
    start = shape_node.attributes.get_int("start", 0)
    end = shape_node.attributes.get_int("end", rank)
    axes = list(range(rank))[slice(start, end)]
    node = use.node
    if node.op_type == "Gather" and use.idx == 0 and node.attributes.get_int("axis", 0) == 0:
        indices = _ints(node.inputs[1])
        if indices is not None and all(-len(axes) <= i < len(axes) for i in indices):
            return {axes[i] for i in indices}
    if node.op_type == "Slice" and use.idx == 0:
        picked = _sliced(node, [Lit(a) for a in axes])
        if picked is not None:
            return {t.value for t in picked}
    return set(range(rank))
