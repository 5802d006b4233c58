"""Write trained values back into the student file by initializer name, nothing else changed.

The student is loaded as it is on disk (not normalised), so its nodes, names, attributes,
declared shapes and ``value_info`` entries are written back unchanged; only the named tensors
get new values, with the same shape and dtype. A weight that came from a ``Constant`` node
(normalisation lifted it into an initializer under the node's output name) is written back
into that node. Masked weights are
checked: their zeros before and after must be the same elements, or this is a bug.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.errors import InputError
from onnxprune.model_io import load_model, save_model, uses_external_data

__all__ = ["write_back"]


def _constant_nodes(model: ir.Model) -> dict[str, ir.Node]:
    return {
        node.outputs[0].name: node
        for node in model.graph
        if node.op_type == "Constant" and node.attributes.get("value") is not None
    }


def _replace(model: ir.Model, constants: dict[str, ir.Node], name: str, array: np.ndarray):
    if name in model.graph.initializers:
        value = model.graph.initializers[name]
        old = value.const_value
    elif name in constants:
        old = constants[name].attributes["value"].as_tensor()
    else:
        raise InputError(f"repair cannot write weight '{name}' back: no initializer of that name")
    if tuple(old.shape) != array.shape or np.dtype(old.dtype.numpy()) != array.dtype:
        raise InputError(f"repair: weight '{name}' changed shape or type; nothing written")
    tensor = ir.tensor(array, name=name)
    if name in model.graph.initializers:
        model.graph.initializers[name].const_value = tensor
    else:
        constants[name].attributes["value"] = ir.AttrTensor("value", tensor)
    return old


def _keep_value_info_as_read(model: ir.Model, path: str | os.PathLike) -> None:
    """onnx-ir writes a ``value_info`` for every typed initializer; leave out those the file did
    not have, so the written graph is the one read."""
    declared = {
        info.name for info in onnx.load(str(path), load_external_data=False).graph.value_info
    }
    inputs = {value.name for value in model.graph.inputs}
    for name, value in model.graph.initializers.items():
        if name not in declared and name not in inputs:
            value.shape, value.type = None, None


def write_back(
    student: str | os.PathLike,
    values: dict[str, np.ndarray],
    masked: set[str],
    output: str | os.PathLike,
    protected: Sequence[Path],
) -> None:
    """Save ``student`` with ``values`` replacing its tensors of the same names to ``output``."""
    model = load_model(student)
    external = uses_external_data(model)
    constants = _constant_nodes(model)
    for name in sorted(values):
        old = _replace(model, constants, name, values[name])
        if name in masked and not np.array_equal(old.numpy() == 0, values[name] == 0):
            raise AssertionError(f"repair changed the zero pattern of '{name}'")
    _keep_value_info_as_read(model, student)
    save_model(model, output, protected=protected, external_data=external)
