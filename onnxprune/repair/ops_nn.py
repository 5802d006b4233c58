"""Layer rules of the repair interpreter: MatMul, Gemm, Conv, pooling and normalisations.

Padding follows ONNX (``pads`` = all begins, then all ends; ``auto_pad`` SAME_UPPER/LOWER
computed from the runtime shape). What torch cannot express exactly (average pooling with
uneven pads, a ``ConvTranspose`` with ``output_shape``, training-mode BatchNormalization) is
refused with the reason rather than approximated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxprune.errors import InputError
from onnxprune.repair.registry import attr_ints, register

__all__: list[str] = []

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@register("MatMul")
def _matmul(node, x, opset):
    return torch.matmul(x[0], x[1])


@register("Gemm")
def _gemm(node, x, opset):
    a, b = x[0], x[1]
    if node.attributes.get_int("transA", 0):
        a = a.t()
    if node.attributes.get_int("transB", 0):
        b = b.t()
    result = node.attributes.get_float("alpha", 1.0) * (a @ b)
    if len(x) > 2 and x[2] is not None:
        result = result + node.attributes.get_float("beta", 1.0) * x[2]
    return result


def _pads(node, data: torch.Tensor, kernel, strides, dilations) -> list[int]:
    """ONNX begin/end pads per spatial axis: [b1, ..., bn, e1, ..., en]."""
    spatial = data.dim() - 2
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = attr_ints(node, "pads", (0,) * (2 * spatial))
        return list(pads) if auto_pad == "NOTSET" else [0] * (2 * spatial)
    begins, ends = [], []
    for axis in range(spatial):
        size = data.shape[2 + axis]
        out = math.ceil(size / strides[axis])
        total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX pads as ``F.pad``'s list (last axis first, begin then end)."""
    spatial = len(pads) // 2
    order: list[int] = []
    for axis in reversed(range(spatial)):
        order += [pads[axis], pads[axis + spatial]]
    return order


def _window(node, data, kernel):
    spatial = data.dim() - 2
    strides = attr_ints(node, "strides", (1,) * spatial)
    dilations = attr_ints(node, "dilations", (1,) * spatial)
    return strides, dilations, _pads(node, data, kernel, strides, dilations)


@register("Conv")
def _conv(node, x, opset):
    data, weight = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    spatial = data.dim() - 2
    if spatial not in _CONV:
        raise InputError(f"{node.name}: Conv over {spatial} spatial axes is not supported")
    strides, dilations, pads = _window(node, data, tuple(weight.shape[2:]))
    if any(pads):
        data = F.pad(data, _torch_pad(pads))
    group = node.attributes.get_int("group", 1)
    return _CONV[spatial](data, weight, bias, strides, 0, dilations, group)


@register("ConvTranspose")
def _conv_transpose(node, x, opset):
    data, weight = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    spatial = data.dim() - 2
    if node.attributes.get("output_shape") is not None or spatial not in _CONV_T:
        raise InputError(f"{node.name}: ConvTranspose with output_shape is not supported")
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise InputError(f"{node.name}: ConvTranspose with auto_pad SAME is not supported")
    strides = attr_ints(node, "strides", (1,) * spatial)
    dilations = attr_ints(node, "dilations", (1,) * spatial)
    pads = attr_ints(node, "pads", (0,) * (2 * spatial))
    if pads[:spatial] != pads[spatial:]:
        raise InputError(f"{node.name}: ConvTranspose with uneven pads is not supported")
    extra = attr_ints(node, "output_padding", (0,) * spatial)
    group = node.attributes.get_int("group", 1)
    function = _CONV_T[spatial]
    return function(data, weight, bias, strides, pads[:spatial], extra, group, dilations)


@register("MaxPool")
def _max_pool(node, x, opset):
    data = x[0]
    kernel = attr_ints(node, "kernel_shape")
    strides, dilations, pads = _window(node, data, kernel)
    if any(pads):
        data = F.pad(data, _torch_pad(pads), value=-math.inf)
    ceil = bool(node.attributes.get_int("ceil_mode", 0))
    return _MAX_POOL[len(kernel)](data, kernel, strides, 0, dilations, ceil_mode=ceil)


@register("AveragePool")
def _avg_pool(node, x, opset):
    data = x[0]
    kernel = attr_ints(node, "kernel_shape")
    strides, _, pads = _window(node, data, kernel)
    spatial = len(kernel)
    even = pads[:spatial] == pads[spatial:] and all(
        p <= k // 2 for p, k in zip(pads, kernel, strict=False)
    )
    if not even:
        raise InputError(f"{node.name}: AveragePool with uneven or large pads is not supported")
    include = bool(node.attributes.get_int("count_include_pad", 0))
    ceil = bool(node.attributes.get_int("ceil_mode", 0))
    return _AVG_POOL[spatial](data, kernel, strides, pads[:spatial], ceil, include)


@register("GlobalAveragePool")
def _global_avg(node, x, opset):
    return x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)


@register("GlobalMaxPool")
def _global_max(node, x, opset):
    return torch.amax(x[0], dim=tuple(range(2, x[0].dim())), keepdim=True)


@register("BatchNormalization")
def _batch_norm(node, x, opset):
    if node.attributes.get_int("training_mode", 0):
        raise InputError(f"{node.name}: BatchNormalization in training mode is not supported")
    eps = node.attributes.get_float("epsilon", 1e-5)
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, eps)


@register("LayerNormalization")
def _layer_norm(node, x, opset):
    data, scale = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    axis = node.attributes.get_int("axis", -1) % data.dim()
    eps = node.attributes.get_float("epsilon", 1e-5)
    shape = tuple(data.shape[axis:])
    if tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(data, shape, scale, bias, eps)
    dims = tuple(range(axis, data.dim()))
    mean = data.mean(dim=dims, keepdim=True)
    variance = ((data - mean) ** 2).mean(dim=dims, keepdim=True)
    result = (data - mean) / torch.sqrt(variance + eps) * scale
    return result if bias is None else result + bias


@register("InstanceNormalization")
def _instance_norm(node, x, opset):
    eps = node.attributes.get_float("epsilon", 1e-5)
    return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=eps)
