"""Elementwise, comparison, activation and reduction rules of the repair interpreter.

Semantics follow the ONNX operator specs (broadcasting as numpy, integer ``Div`` truncating,
``Softmax`` before opset 13 over the flattened trailing axes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxprune.repair.registry import attr_ints, register, torch_dtype

__all__: list[str] = []

_BINARY = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Equal": torch.eq,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
_UNARY = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Softsign": F.softsign,
    "Softplus": F.softplus,
    "Mish": F.mish,
    "Sign": torch.sign,
}


def _binary(op):
    return lambda node, x, opset: op(x[0], x[1])


def _unary(op):
    return lambda node, x, opset: op(x[0])


for _name, _op in _BINARY.items():
    register(_name)(_binary(_op))
for _name, _op in _UNARY.items():
    register(_name)(_unary(_op))


@register("Div")
def _div(node, x, opset):
    if x[0].dtype.is_floating_point:
        return x[0] / x[1]
    return torch.div(x[0], x[1], rounding_mode="trunc")


@register("Pow")
def _pow(node, x, opset):
    return torch.pow(x[0], x[1]).to(x[0].dtype)


@register("Max", "Min", "Sum", "Mean")
def _variadic(node, x, opset):
    result = x[0]
    for other in x[1:]:
        if node.op_type == "Max":
            result = torch.maximum(result, other)
        elif node.op_type == "Min":
            result = torch.minimum(result, other)
        else:
            result = result + other
    return result / len(x) if node.op_type == "Mean" else result


@register("Where")
def _where(node, x, opset):
    return torch.where(x[0], x[1], x[2])


@register("IsInf")
def _isinf(node, x, opset):
    positive, negative = (
        node.attributes.get_int("detect_positive", 1),
        node.attributes.get_int("detect_negative", 1),
    )
    return (torch.isposinf(x[0]) & bool(positive)) | (torch.isneginf(x[0]) & bool(negative))


@register("Cast")
def _cast(node, x, opset):
    return x[0].to(torch_dtype(node.attributes.get_int("to")))


@register("CastLike")
def _cast_like(node, x, opset):
    return x[0].to(x[1].dtype)


@register("Identity", "Dropout")
def _identity(node, x, opset):
    return x[0]


@register("LeakyRelu")
def _leaky_relu(node, x, opset):
    return F.leaky_relu(x[0], node.attributes.get_float("alpha", 0.01))


@register("Elu")
def _elu(node, x, opset):
    return F.elu(x[0], node.attributes.get_float("alpha", 1.0))


@register("Selu")
def _selu(node, x, opset):
    alpha = node.attributes.get_float("alpha", 1.67326319217681884765625)
    gamma = node.attributes.get_float("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x[0] > 0, x[0], alpha * (torch.exp(x[0]) - 1))


@register("HardSigmoid")
def _hard_sigmoid(node, x, opset):
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)
    return torch.clamp(alpha * x[0] + beta, 0.0, 1.0)


@register("HardSwish")
def _hard_swish(node, x, opset):
    return x[0] * torch.clamp(x[0] / 6.0 + 0.5, 0.0, 1.0)


@register("Gelu")
def _gelu(node, x, opset):
    return F.gelu(x[0], approximate=node.attributes.get_string("approximate", "none"))


@register("PRelu")
def _prelu(node, x, opset):
    return torch.where(x[0] >= 0, x[0], x[0] * x[1])


@register("Clip")
def _clip(node, x, opset):
    if opset < 11:
        low = node.attributes.get_float("min", -math.inf)
        high = node.attributes.get_float("max", math.inf)
        return torch.clamp(x[0], low, high)
    low = x[1] if len(x) > 1 and x[1] is not None else None
    high = x[2] if len(x) > 2 and x[2] is not None else None
    result = x[0]
    if low is not None:
        result = torch.maximum(result, low.to(result.dtype))
    if high is not None:
        result = torch.minimum(result, high.to(result.dtype))
    return result


def _softmax(node, x, opset, function):
    axis = node.attributes.get_int("axis", -1 if opset >= 13 else 1)
    data = x[0]
    axis = axis % data.dim() if data.dim() else 0
    if opset >= 13:
        return function(data, dim=axis)
    flat = data.reshape(*data.shape[:axis], -1)  # before 13: over the flattened trailing axes
    return function(flat, dim=-1).reshape(data.shape)


@register("Softmax")
def _softmax_rule(node, x, opset):
    return _softmax(node, x, opset, torch.softmax)


@register("LogSoftmax")
def _log_softmax_rule(node, x, opset):
    return _softmax(node, x, opset, torch.log_softmax)


def _reduce_axes(node, x, opset) -> list[int] | None:
    """Reduced axes from the attribute (older opsets) or the second input; None = all."""
    axes = attr_ints(node, "axes")
    if axes is None and len(x) > 1 and x[1] is not None:
        axes = tuple(int(a) for a in x[1].reshape(-1).tolist())
    if not axes:
        return None
    return [a % x[0].dim() for a in axes]


@register("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")
def _reduce(node, x, opset):
    keep = bool(node.attributes.get_int("keepdims", 1))
    axes = _reduce_axes(node, x, opset)
    if axes is None and node.attributes.get_int("noop_with_empty_axes", 0):
        return x[0]
    dims = list(range(x[0].dim())) if axes is None else axes
    data = x[0]
    op = node.op_type
    if op == "ReduceMean":
        return data.mean(dim=dims, keepdim=keep)
    if op == "ReduceSum":
        return data.sum(dim=dims, keepdim=keep)
    if op == "ReduceL2":
        return torch.sqrt((data * data).sum(dim=dims, keepdim=keep))
    if op == "ReduceProd":
        for dim in sorted(dims, reverse=True):
            data = data.prod(dim=dim, keepdim=keep)
        return data
    function = torch.amax if op == "ReduceMax" else torch.amin
    return function(data, dim=dims, keepdim=keep)
