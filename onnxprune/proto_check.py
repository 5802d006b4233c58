"""Checks on a parsed ``ModelProto`` that the ONNX checker does not make.

A damaged file can parse and still pass ``onnx.checker``: tensors whose bytes do not fit their
shape and type (found later as "buffer is smaller than requested size"), text fields that are
not UTF-8 (protobuf hands them over as ``bytes``, which breaks every later step), graph inputs
and outputs without an element type. ``check_proto`` finds these first, so ``load_model`` can
refuse the file with an ``InputError`` naming it instead of failing somewhere deep inside.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from onnxprune.errors import InputError, first_line
from onnxprune.paths import graph_tensors

__all__ = ["check_proto", "tensor_data_error"]

_PACKED_4BIT = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}
_KNOWN_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def tensor_data_error(tensor: onnx.TensorProto) -> str | None:
    """Why the in-file data of ``tensor`` does not fit its shape and type, or None."""
    if any(dim < 0 for dim in tensor.dims):
        return f"has a negative dimension {list(tensor.dims)}"
    if tensor.data_type not in _KNOWN_TYPES:
        return f"has an unknown data type {tensor.data_type}"
    elements = math.prod(tensor.dims)
    held = len(tensor.raw_data)  # one read: each access copies the bytes
    if held:
        if tensor.data_type in _PACKED_4BIT:
            needed = (elements + 1) // 2
        else:
            needed = elements * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if held != needed:
            return f"holds {held} bytes, its shape and type need {needed}"
        return None
    try:
        onnx.numpy_helper.to_array(tensor)
    except Exception as error:  # typed fields that do not match the shape
        return f"has data that does not match its shape ({first_line(error)})"
    return None


def _non_utf8_field(message: Message) -> str | None:
    """The name of the first text field (at any depth) that is not valid UTF-8, or None."""
    for field in message.DESCRIPTOR.fields:  # not ListFields: it would copy every raw_data
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        if field.is_repeated:
            values = getattr(message, field.name)
        elif message.HasField(field.name):
            values = [getattr(message, field.name)]
        else:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            if any(isinstance(item, bytes) for item in values):
                return field.name
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in values:
                found = _non_utf8_field(item)
                if found is not None:
                    return found
    return None


def _untyped_value(graph: onnx.GraphProto) -> str | None:
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.type.WhichOneof("value") != "tensor_type":
                continue
            if value.type.tensor_type.elem_type not in _KNOWN_TYPES:
                return f"{kind} '{value.name}' has no known element type"
    return None


def check_proto(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse ``proto`` (read from ``path``) if it is damaged in a way the checker misses."""
    reason = None
    field = _non_utf8_field(proto)
    if field is not None:
        reason = f"a '{field}' field is not valid UTF-8 text"
    elif not proto.graph.output:
        reason = "the graph has no outputs"
    else:
        reason = _untyped_value(proto.graph)
    for tensor in graph_tensors(proto.graph) if reason is None else ():
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            found = tensor_data_error(tensor)
            reason = None if found is None else f"tensor '{tensor.name}' {found}"
            if reason is not None:
                break
    if reason is not None:
        raise InputError(f"{path}: not a valid ONNX model ({reason})")
