"""Grow a model without changing what it computes (self-expansion, Net2Net).

* ``DeepenPass`` inserts an identity-initialised layer after a node: ``MatMul(y, I) + 0`` on
  the last axis, or a 1x1 ``Conv`` with identity weights on NCHW tensors, followed by ``Relu``
  when the node is a ``Relu`` (its output is already non-negative, so the ReLU is exact).
* ``WidenPass`` widens a channel group (see ``onnxprune.structured``) by a factor: new units
  copy randomly chosen existing ones (a fixed seed), producers and per-unit parameters are
  gathered, and each consumer's input weights are divided by the number of copies of their
  unit (Chen et al., Net2Net, 2016), so the function is preserved exactly up to rounding.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

from onnxprune.errors import InputError
from onnxprune.structured.apply import edit_shape_constant, reinfer_shapes
from onnxprune.structured.dependency import find_channel_groups
from onnxprune.structured.groups import ChannelGroup
from onnxprune.structured.heads import find_head_groups

__all__ = ["DeepenPass", "WidenPass", "find_group"]


def _constant(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
    )
    value.const_value = ir.Tensor(array, name=name)
    model.graph.register_initializer(value)
    return value


class DeepenPass(ir.passes.InPlacePass):
    """Insert an identity layer after node ``after`` (a node name or the name of the node's
    first output tensor; see the module docstring)."""

    def __init__(self, after: str) -> None:
        super().__init__()
        self.after = after
        self.added: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        NameFixPass()(model)
        ShapeInferencePass()(model)
        node = next((n for n in model.graph if self.after in (n.name, n.outputs[0].name)), None)
        if node is None:
            raise InputError(f"no node or tensor named '{self.after}' in the graph")
        value = node.outputs[0]
        if value in model.graph.outputs:
            raise InputError(f"'{self.after}' produces a graph output; grow after an inner node")
        if value.dtype != ir.DataType.FLOAT or value.shape is None:
            raise InputError(f"'{self.after}': output must be float32 with a known shape")
        consumers = list(value.uses())  # before the new layer becomes a consumer too
        dtype, shape = np.float32, list(value.shape)
        prefix = f"grown_after_{self.after}".replace("/", "_")
        if len(shape) == 4 and isinstance(shape[1], int) and node.op_type != "MatMul":
            channels = shape[1]
            weight = np.eye(channels, dtype=dtype).reshape(channels, channels, 1, 1)
            inputs = [
                value,
                _constant(model, f"{prefix}_weight", weight),
                _constant(model, f"{prefix}_bias", np.zeros(channels, dtype)),
            ]
            layer = ir.node(
                "Conv", inputs, attributes={"kernel_shape": [1, 1]}, name=f"{prefix}_conv"
            )
            new_nodes, units = [layer], channels
        elif isinstance(shape[-1], int):
            features = shape[-1]
            matmul = ir.node(
                "MatMul",
                [value, _constant(model, f"{prefix}_weight", np.eye(features, dtype=dtype))],
                name=f"{prefix}_matmul",
            )
            bias = ir.node(
                "Add",
                [matmul.outputs[0], _constant(model, f"{prefix}_bias", np.zeros(features, dtype))],
                name=f"{prefix}_bias_add",
            )
            new_nodes, units = [matmul, bias], features
        else:
            raise InputError(f"'{self.after}': the last axis must have a static size")
        if node.op_type == "Relu":
            new_nodes.append(ir.node("Relu", [new_nodes[-1].outputs[0]], name=f"{prefix}_relu"))
        result = new_nodes[-1].outputs[0]
        for use in consumers:
            use.node.replace_input_with(use.idx, result)
        model.graph.insert_after(node, new_nodes)
        reinfer_shapes(model)
        self.added = {
            "after": self.after,
            "ops": [n.op_type for n in new_nodes],
            "parameters": units * units + units,
        }
        return ir.passes.PassResult(model, modified=True)


def find_group(model: ir.Model, layer: str) -> ChannelGroup:
    """The channel group whose producer is the weight or node named ``layer``."""
    NameFixPass()(model)
    ShapeInferencePass()(model)
    for group in find_channel_groups(model) + find_head_groups(model):
        if any(layer in (p.tensor, p.node) for p in group.producers) or group.id == layer:
            if group.blocked:
                raise InputError(f"cannot widen '{layer}': {group.blocked}")
            if group.routed:
                raise InputError(f"cannot widen '{layer}': its channels pass Concat/Split/Slice")
            return group
    raise InputError(f"'{layer}' is not the weight or node of a layer with output channels")


class WidenPass(ir.passes.InPlacePass):
    """Widen ``group`` to ``round(units * factor)`` units (see the module docstring)."""

    def __init__(self, group: ChannelGroup, factor: float, seed: int = 0) -> None:
        super().__init__()
        if factor <= 1:
            raise InputError(f"--factor must be greater than 1, got {factor}")
        self.group, self.factor, self.seed = group, factor, seed
        self.added: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        group, units = self.group, self.group.units
        new_units = max(units + 1, round(units * self.factor))
        extra = np.random.default_rng(self.seed).integers(0, units, new_units - units)
        mapping = np.concatenate([np.arange(units), extra])
        copies = np.bincount(mapping, minlength=units)[mapping].astype(np.float64)
        indices = group.indices(mapping)
        per_index = np.repeat(copies, group.unit_size)
        before = sum(model.graph.initializers[s.tensor].const_value.size for s in group.slices)
        for piece in group.slices:
            value = model.graph.initializers[piece.tensor]
            array = np.take(value.const_value.numpy(), indices, axis=piece.axis)
            if piece.role == "consumer":
                scale = per_index.reshape([-1 if a == piece.axis else 1 for a in range(array.ndim)])
                array = (array / scale).astype(array.dtype)
            value.const_value = ir.Tensor(np.ascontiguousarray(array), name=piece.tensor)
            value.shape = ir.Shape(array.shape)
        nodes = {node.name: node for node in model.graph}
        for edit in group.shape_edits:
            edit_shape_constant(model, nodes[edit.node], edit, new_units)
        for edit in group.attribute_edits:
            nodes[edit.node].attributes[edit.name] = ir.AttrInt64(edit.name, new_units)
        reinfer_shapes(model)
        after = sum(model.graph.initializers[s.tensor].const_value.size for s in group.slices)
        self.added = {
            "group": group.id,
            "kind": group.kind,
            "units_before": units,
            "units_after": new_units,
            "parameters": int(after - before),
        }
        return ir.passes.PassResult(model, modified=True)
