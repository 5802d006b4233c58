"""Shape and indexing rules of the repair interpreter (Reshape, Gather, Slice, ...).

Shape arithmetic runs on int64 tensors like everything else, so a model whose exporter
computes its reshapes from ``Shape`` nodes (TorchScript, dynamo) runs at any batch size and
sequence length. Negative indices and out-of-range slice bounds follow the ONNX specs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.errors import InputError
from onnxprune.repair.registry import attr_ints, register

__all__: list[str] = []


def _ints(tensor: torch.Tensor | None) -> list[int]:
    return [] if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def _axes(node, x, index: int) -> tuple[int, ...] | None:
    """Axes from the ``axes`` attribute (older opsets) or input ``index`` (newer)."""
    axes = attr_ints(node, "axes")
    if axes is None and len(x) > index and x[index] is not None:
        axes = tuple(_ints(x[index]))
    return axes


@register("Constant")
def _constant(node, x, opset):
    for name, attribute in node.attributes.items():
        if name == "value":
            return torch.from_numpy(np.array(attribute.as_tensor().numpy()))
        if name in ("value_float", "value_floats"):
            return torch.tensor(attribute.value, dtype=torch.float32)
        if name in ("value_int", "value_ints"):
            return torch.tensor(attribute.value, dtype=torch.int64)
    raise InputError(f"{node.name}: Constant without a numeric value is not supported")


@register("Shape")
def _shape(node, x, opset):
    dims = list(x[0].shape)
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


@register("Size")
def _size(node, x, opset):
    return torch.tensor(x[0].numel(), dtype=torch.int64)


@register("ConstantOfShape")
def _constant_of_shape(node, x, opset):
    attribute = node.attributes.get("value")
    value = (
        torch.zeros(1)
        if attribute is None
        else torch.from_numpy(np.array(attribute.as_tensor().numpy()))
    )
    return torch.full(_ints(x[0]), value.reshape(-1)[0].item(), dtype=value.dtype)


@register("Range")
def _range(node, x, opset):
    return torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype)


@register("Reshape")
def _reshape(node, x, opset):
    shape = _ints(x[1])
    if not node.attributes.get_int("allowzero", 0):
        shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x[0].reshape(shape)


@register("Flatten")
def _flatten(node, x, opset):
    axis = node.attributes.get_int("axis", 1) % (x[0].dim() + 1)
    outer = math.prod(x[0].shape[:axis])
    return x[0].reshape(outer, math.prod(x[0].shape[axis:]))


@register("Transpose")
def _transpose(node, x, opset):
    perm = attr_ints(node, "perm", tuple(reversed(range(x[0].dim()))))
    return x[0].permute(perm)


@register("Unsqueeze")
def _unsqueeze(node, x, opset):
    axes = _axes(node, x, 1) or ()
    rank = x[0].dim() + len(axes)
    result = x[0]
    for axis in sorted(a % rank for a in axes):
        result = result.unsqueeze(axis)
    return result


@register("Squeeze")
def _squeeze(node, x, opset):
    axes = _axes(node, x, 1)
    if axes is None:
        return x[0].reshape([d for d in x[0].shape if d != 1])
    result = x[0]
    for axis in sorted((a % x[0].dim() for a in axes), reverse=True):
        result = result.squeeze(axis)
    return result


@register("Concat")
def _concat(node, x, opset):
    return torch.cat([t for t in x if t is not None], dim=node.attributes.get_int("axis"))


@register("Split")
def _split(node, x, opset):
    axis = node.attributes.get_int("axis", 0) % x[0].dim()
    sizes = attr_ints(node, "split")
    if sizes is None and len(x) > 1 and x[1] is not None:
        sizes = tuple(_ints(x[1]))
    if sizes is None:
        parts = len(node.outputs)
        size = x[0].shape[axis]
        chunk = math.ceil(size / parts)
        sizes = tuple(min(chunk, size - i * chunk) for i in range(parts))
    return tuple(torch.split(x[0], list(sizes), dim=axis))


def _slice_axis(data: torch.Tensor, axis: int, start: int, end: int, step: int):
    begin, stop, stride = slice(start, end, step).indices(data.shape[axis])
    if stride > 0:
        index = [slice(None)] * data.dim()
        index[axis] = slice(begin, stop, stride)
        return data[tuple(index)]
    return data.index_select(axis, torch.arange(begin, stop, stride, dtype=torch.int64))


@register("Slice")
def _slice(node, x, opset):
    data = x[0]
    if opset < 10:
        starts, ends = attr_ints(node, "starts"), attr_ints(node, "ends")
        axes = attr_ints(node, "axes", tuple(range(len(starts))))
        steps = (1,) * len(starts)
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        data = _slice_axis(data, axis % data.dim(), start, end, step)
    return data


@register("Expand")
def _expand(node, x, opset):
    shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(_ints(x[1])))
    return x[0].expand(shape)


@register("Tile")
def _tile(node, x, opset):
    return x[0].repeat(_ints(x[1]))


def _positive(indices: torch.Tensor, size: int) -> torch.Tensor:
    return torch.where(indices < 0, indices + size, indices)


@register("Gather")
def _gather(node, x, opset):
    data, indices = x[0], x[1]
    axis = node.attributes.get_int("axis", 0) % data.dim()
    flat = _positive(indices, data.shape[axis]).reshape(-1)
    picked = data.index_select(axis, flat)
    shape = (*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])
    return picked.reshape(shape)


@register("GatherElements")
def _gather_elements(node, x, opset):
    axis = node.attributes.get_int("axis", 0) % x[0].dim()
    return torch.gather(x[0], axis, _positive(x[1], x[0].shape[axis]))


@register("GatherND")
def _gather_nd(node, x, opset):
    data, indices = x[0], x[1]
    batch = node.attributes.get_int("batch_dims", 0)
    depth = indices.shape[-1]
    groups = math.prod(data.shape[:batch])
    table = data.reshape(groups, *data.shape[batch:])
    rows = indices.reshape(groups, -1, depth)
    count = rows.shape[1]
    select = [torch.arange(groups).unsqueeze(1).expand(groups, count)]
    select += [_positive(rows[..., i], table.shape[1 + i]) for i in range(depth)]
    picked = table[tuple(select)]
    return picked.reshape(*indices.shape[:-1], *data.shape[batch + depth :])


@register("Pad")
def _pad(node, x, opset):
    if node.attributes.get_string("mode", "constant") != "constant":
        raise InputError(f"{node.name}: Pad mode other than constant is not supported")
    pads = list(attr_ints(node, "pads") or _ints(x[1]))
    value = node.attributes.get_float("value", 0.0)
    if len(x) > 2 and x[2] is not None and x[2].numel():
        value = x[2].reshape(-1)[0].item()
    rank = x[0].dim()
    axes = [a % rank for a in _ints(x[3])] if len(x) > 3 and x[3] is not None else range(rank)
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[axis + rank] = pads[i], pads[i + len(pads) // 2]
    order: list[int] = []
    for axis in reversed(range(rank)):
        order += [full[axis], full[axis + rank]]
    return F.pad(x[0], order, value=value)


@register("Einsum")
def _einsum(node, x, opset):
    return torch.einsum(node.attributes.get_string("equation"), *x)


@register("CumSum")
def _cumsum(node, x, opset):
    axis = int(x[1].reshape(-1)[0].item()) % x[0].dim()
    data = x[0].flip(axis) if node.attributes.get_int("reverse", 0) else x[0]
    result = torch.cumsum(data, dim=axis)
    if node.attributes.get_int("exclusive", 0):
        result = result - data
    return result.flip(axis) if node.attributes.get_int("reverse", 0) else result
