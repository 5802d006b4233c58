"""Prove that removing heads keeps a traced attention block consistent, or refuse with why.

``check_head_path`` guarantees, for a ``HeadPath`` from ``attention.trace_attention``:

* every Reshape/Expand target entry on the heads axis is ``-1`` (inferred), ``0`` (copied from
  an input whose heads are on the same axis), ``1`` (Expand: kept), a run-time dimension of a
  tensor that itself follows the heads (``Shape -> Gather -> Concat`` chains: consistent by
  construction), or a literal equal to the head count, returned as a ``ShapeEdit`` of the
  constant it came from (which must feed nothing else);
* no target entry on another axis reads a head count;
* a 4-D to 4-D Reshape keeps every other axis as it was (so it cannot move data across heads);
* every tensor that follows the heads is used only inside the block, or by ``Shape`` nodes whose
  reads of the heads axis end only in the target shapes checked above;
* every operand broadcast over the heads (masks, rotary tables) is computed without them.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.structured.attention import HeadPath, Refused
from onnxprune.structured.groups import ShapeEdit
from onnxprune.structured.shapes import Dim, Lit, read_axes, shape_terms

__all__ = ["check_head_path"]

_SHAPE_MATH = {
    "Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Cast", "Identity",
    "Mul", "Div", "Add", "Sub", "Equal", "Where", "Reshape",
}  # fmt: skip


class _Counts:
    def __init__(self, units: int, repeat: int) -> None:
        self.units, self.repeat = units, repeat

    def per_unit(self, key: str | None, elements: int) -> int:
        return (self.repeat if key == "q" else 1) * elements


def _private(start: ir.Node, target: ir.Node) -> bool:
    """Whether ``start``'s output reaches ``target`` through a chain used nowhere else."""
    node = start
    for _ in range(8):
        if node is target:
            return True
        uses = node.outputs[0].uses()
        if len(uses) != 1:
            return False
        node = uses[0].node
    return False


def _entry(node, term, position, key, elements, path: HeadPath, counts: _Counts, nodes: dict):
    label = f"entry {position} of the target shape"
    per_unit = counts.per_unit(key, elements)
    if isinstance(term, Dim):
        info = path.axes.get(term.source)
        if info is None or info[0] != term.axis or info[1] is None:
            raise Refused(f"{label} is a run-time size that does not follow the heads", node)
        if counts.per_unit(info[1], info[2]) * term.factor != per_unit:
            raise Refused(f"{label} reads a head count with the wrong multiple", node)
        return None
    reshape = node.op_type == "Reshape"
    copies = reshape and not node.attributes.get_int("allowzero", 0)
    copied = copies and path.axes.get(node.inputs[0], (None,))[0] == position
    if (
        (term.value == -1 and reshape)
        or (term.value == 1 and node.op_type == "Expand")
        or (term.value == 0 and copied)
    ):
        return None
    if term.value != counts.units * per_unit:
        raise Refused(f"{label} is {term.value}, not the {counts.units * per_unit} heads", node)
    if term.origin is None or not _private(nodes[term.origin[0]], node):
        raise Refused(f"{label} is a literal in a shape shared with other nodes", node)
    return ShapeEdit(term.origin[0], term.origin[1], term.origin[2], per_unit)


def _same_layout(node: ir.Node, terms: list, position: int, path: HeadPath) -> None:
    """A 4-D -> 4-D Reshape must keep every axis but the heads axis as it was."""
    source = node.inputs[0]
    for index, term in enumerate(terms):
        if index == position:
            continue
        if isinstance(term, Lit):
            same = term.value == source.shape[index] or (
                term.value == 0 and not node.attributes.get_int("allowzero", 0)
            )
        else:
            info = path.axes.get(term.source)
            same = info is not None and info[0] == position and term.axis == index
            same = same and term.factor == 1
        if not same:
            raise Refused(f"entry {index} of the target shape may move data across heads", node)


def _check_shapes(path: HeadPath, counts: _Counts, nodes: dict) -> list[ShapeEdit]:
    edits: list[ShapeEdit] = []
    for node, position, key, elements in path.checks:
        terms = shape_terms(node)
        if terms is None:
            raise Refused("cannot read the target shape", node)
        for index, term in enumerate(terms):
            if index != position and isinstance(term, Dim):
                info = path.axes.get(term.source)
                if info is not None and info[0] == term.axis:
                    raise Refused(f"entry {index} of the target shape is a head count", node)
        edit = _entry(node, terms[position], position, key, elements, path, counts, nodes)
        if edit is not None and edit not in edits:
            edits.append(edit)
        shapes = (node.inputs[0].shape, node.outputs[0].shape)
        if node.op_type == "Reshape" and all(s is not None and len(s) == 4 for s in shapes):
            if path.axes.get(node.inputs[0], (None,))[0] == position:
                _same_layout(node, terms, position, path)
    return edits


def _check_reads(shape: ir.Node, value: ir.Value, axis: int, checked: set) -> None:
    """Reads of the heads axis by ``shape`` must end only in checked target shapes."""
    for use in shape.outputs[0].uses():
        if axis not in read_axes(shape, use):
            continue
        pending = [use]
        while pending:
            current = pending.pop()
            node = current.node
            if (node in checked and current.idx == 1) or node.op_type == "Shape":
                continue  # a checked target shape, or the length of a shape vector
            if node.op_type not in _SHAPE_MATH or (node.op_type == "Reshape" and current.idx):
                raise Refused(
                    f"the head count of '{value.name}' is read at run time and used by "
                    f"{node.op_type} '{node.name}'",
                    shape,
                )
            pending += [u for out in node.outputs for u in out.uses()]


def _check_uses(path: HeadPath, outputs: set) -> None:
    checked = {node for node, *_ in path.checks}
    for value, (axis, _, _) in path.axes.items():
        if value in outputs:
            raise Refused(f"'{value.name}', which follows the heads, is a graph output")
        for use in value.uses():
            if use.node in path.nodes:
                continue
            if use.node.op_type != "Shape":
                raise Refused(
                    f"'{value.name}', which follows the heads, is also used by "
                    f"{use.node.op_type} '{use.node.name}'"
                )
            if value.shape is None:
                raise Refused(f"tensor '{value.name}' has no known rank", use.node)
            _check_reads(use.node, value, axis, checked)


def _check_sides(path: HeadPath, budget: int = 400) -> None:
    for operand in path.sides:
        pending, seen = [operand], set()
        while pending:
            value = pending.pop()
            if value in path.axes:
                raise Refused(f"'{operand.name}' is broadcast over the heads but reads them")
            node = value.producer()
            if node is None or node.op_type == "Shape" or node in seen:
                continue
            seen.add(node)
            if len(seen) > budget:
                raise Refused(f"cannot prove that '{operand.name}' does not depend on the heads")
            pending += [v for v in node.inputs if v is not None]


def check_head_path(model: ir.Model, path: HeadPath, units: int, repeat: int) -> list[ShapeEdit]:
    """Check ``path`` (see the module docstring); the shape edits that removing heads needs."""
    nodes = {node.name: node for node in model.graph}
    edits = _check_shapes(path, _Counts(units, repeat), nodes)
    _check_uses(path, set(model.graph.outputs))
    _check_sides(path)
    return edits
