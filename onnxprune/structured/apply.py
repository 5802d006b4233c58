"""Physically remove units: slice every coupled tensor and rewrite shape constants.

``RemoveUnitsPass`` guarantees: each initializer named in a group's slices keeps only the
indices of the kept units along the slice's axis; each shape edit's constant becomes
``per_unit * kept``, written as a new initializer so that a constant shared with other nodes
is left alone; unit-counting attributes (depthwise ``group``) become ``kept``; intermediate
shapes are re-inferred. Node names must be unique (``NameFixPass``). Graph inputs and outputs
are unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

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
        for group in self.groups:
            indices = group.indices(np.sort(self.kept[group.id]))
            for piece in group.slices:
                value = model.graph.initializers[piece.tensor]
                array = np.take(value.const_value.numpy(), indices, axis=piece.axis)
                value.const_value = ir.Tensor(np.ascontiguousarray(array), name=piece.tensor)
                value.shape = ir.Shape(array.shape)
            for edit in group.shape_edits:
                edit_shape_constant(model, nodes[edit.node], edit, len(self.kept[group.id]))
            for edit in group.attribute_edits:
                node = nodes[edit.node]
                node.attributes[edit.name] = ir.AttrInt64(edit.name, len(self.kept[group.id]))
        reinfer_shapes(model)
        return ir.passes.PassResult(model, modified=True)


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
    """Forget intermediate shapes and infer them again after tensors changed size."""
    for node in model.graph:
        for output in node.outputs:
            if output not in model.graph.outputs:
                output.shape = None
    RemoveUnusedNodesPass()(model)
    ShapeInferencePass()(model)
