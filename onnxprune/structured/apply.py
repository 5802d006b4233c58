"""Physically remove units: slice every coupled tensor and rewrite shape constants.

``RemoveUnitsPass`` guarantees: each initializer named in a group's slices loses the indices of
the removed units along the slice's axis (where several groups share a tensor, as the inputs of
a Concat share the next Conv's weight, all of them are removed at once, at the positions found
before any removal); each shape edit's constant becomes ``per_unit * kept``, written as a new
initializer so that a constant shared with other nodes is left alone; unit-counting attributes
(depthwise ``group``) become ``kept``; each counted integer (Split sizes, Slice bounds, a
literal channel count) loses one per removed position it counts, written as a new initializer
or attribute (an equal Split becomes an explicit one); intermediate shapes are re-inferred.
Removing every entry of an axis is refused. Node names must be unique (``NameFixPass``). Graph
inputs and outputs are unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from onnxprune.errors import InputError
from onnxprune.routing import constant_ints
from onnxprune.streaming import scratch_for, set_initializer
from onnxprune.structured.groups import ChannelGroup, ShapeEdit
from onnxprune.structured.heads import constant_tensor

__all__ = ["RemoveUnitsPass", "edit_shape_constant", "reinfer_shapes"]


class RemoveUnitsPass(ir.passes.InPlacePass):
    """Keep only ``kept[group.id]`` units of each group (see the module docstring)."""

    def __init__(self, groups: list[ChannelGroup], kept: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.groups = [g for g in groups if g.id in kept and len(kept[g.id]) < g.units]
        self.kept = kept

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.groups:
            return ir.passes.PassResult(model, modified=False)
        nodes = {node.name: node for node in model.graph}
        removed = {g.id: np.setdiff1d(np.arange(g.units), self.kept[g.id]) for g in self.groups}
        _remove_positions(model, self.groups, removed)
        for group in self.groups:
            kept = group.units - len(removed[group.id])
            for edit in group.shape_edits:
                edit_shape_constant(model, nodes[edit.node], edit, kept)
            for edit in group.attribute_edits:
                nodes[edit.node].attributes[edit.name] = ir.AttrInt64(edit.name, kept)
        _write_counts(model, nodes, self.groups, removed)
        reinfer_shapes(model)
        return ir.passes.PassResult(model, modified=True)


def _remove_positions(model: ir.Model, groups: list[ChannelGroup], removed: dict) -> None:
    gone: dict[tuple[str, int], set[int]] = {}
    for group in groups:
        for piece in group.slices:
            positions = group.removed_positions(piece, removed[group.id])
            gone.setdefault((piece.tensor, piece.axis), set()).update(positions.tolist())
    scratch = scratch_for(model)  # weights of external data stay out of memory
    for (tensor, axis), positions in gone.items():
        value = model.graph.initializers[tensor]
        array = np.delete(value.const_value.numpy(), sorted(positions), axis=axis)
        if array.shape[axis] == 0:
            raise InputError(f"pruning would remove every entry of '{tensor}' on axis {axis}")
        set_initializer(value, np.ascontiguousarray(array), scratch)
        value.shape = ir.Shape(array.shape)


def _write_counts(model: ir.Model, nodes: dict, groups: list[ChannelGroup], removed) -> None:
    """Subtract the removed positions from every counted integer, each list written once."""
    lists: dict[tuple, tuple] = {}
    for group in groups:
        for edit in group.count_edits:
            key = (edit.node, *edit.site.location)
            site, values = lists.setdefault(key, (edit.site, list(edit.site.base)))
            values[edit.site.position] -= int(np.isin(edit.units, removed[group.id]).sum())
    for (name, index, attribute), (site, values) in lists.items():
        node = nodes[name]
        if site.drop is not None and site.drop in node.attributes:
            del node.attributes[site.drop]
        if attribute is None:
            _write_input(model, node, index, values)
        elif site.scalar:
            node.attributes[attribute] = ir.AttrInt64(attribute, values[0])
        else:
            node.attributes[attribute] = ir.AttrInt64s(attribute, values)


def _write_input(model: ir.Model, node: ir.Node, index: int, values: list[int]) -> None:
    old = node.inputs[index] if len(node.inputs) > index else None
    dtype = constant_ints(old).dtype if old is not None else np.int64
    array = np.array(values, dtype=dtype)
    name = f"{node.name}_input{index}_pruned".replace("/", "_")
    tensor = ir.Tensor(array, name=name)
    new = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype))
    new.const_value = tensor
    if name in model.graph.initializers:
        del model.graph.initializers[name]
    model.graph.register_initializer(new)
    if old is None:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


def edit_shape_constant(model: ir.Model, node: ir.Node, edit: ShapeEdit, units: int) -> None:
    """Point ``node``'s shape input at a new initializer whose entry counts ``units``."""
    old = node.inputs[edit.input_index]
    values = constant_tensor(old).numpy().copy()
    values.ravel()[edit.position] = edit.per_unit * units
    name = f"{old.name}_units_{node.name}".replace("/", "_")
    new = ir.Value(name=name, shape=ir.Shape(values.shape), type=ir.TensorType(old.dtype))
    new.const_value = ir.Tensor(values, name=name)
    if name in model.graph.initializers:
        del model.graph.initializers[name]
    model.graph.register_initializer(new)
    node.replace_input_with(edit.input_index, new)


def reinfer_shapes(model: ir.Model) -> None:
    """Forget the static dims of intermediate shapes and infer them again after tensors changed
    size. Named symbolic dims (``batch``, ``sequence``) stay: inference cannot always recover
    them, and onnxruntime's fusions check that Q, K and V agree on them."""
    for node in model.graph:
        for output in node.outputs:
            if output not in model.graph.outputs and output.shape is not None:
                symbolic = [d if isinstance(d, ir.SymbolicDim) else None for d in output.shape]
                output.shape = ir.Shape(symbolic)
    RemoveUnusedNodesPass()(model)
    ShapeInferencePass()(model)
