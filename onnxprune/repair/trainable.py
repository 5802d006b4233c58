"""Which initializers repair may change, and which of them keep their zeros.

Trainable: the prunable weights of the op table (``onnxprune.weights``: Conv/ConvTranspose
weights, Gemm B, constant 2-D MatMul B), which keep their zero pattern (``masked``: a pruned
weight stays pruned, an N:M pattern stays N:M); and, free to change, the biases of those layers
(Conv/Gemm input 2, or a constant vector added to a MatMul/Gemm/Conv output, as the TorchScript
and dynamo exporters write a Linear's bias) and the scale and shift of Layer-, Instance- and
BatchNormalization (never BatchNormalization's running statistics). Embedding tables, scalars,
shape constants and everything else stay as they are. Only float32 tensors are trained; a
float16 or bfloat16 model is refused with the reason (convert it to float32 first).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxprune.errors import InputError, compiled_regex
from onnxprune.weights import find_weights, is_float

__all__ = ["QUANTIZED_OPS", "TrainableTensor", "find_trainable", "refuse_quantized"]

QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulNBits",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearAdd",
        "QLinearMul",
    }
)
_NORMS = {"LayerNormalization": (1, 2), "InstanceNormalization": (1, 2)}
_NORMS["BatchNormalization"] = (1, 2)
_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
_LAYERS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


@dataclass(frozen=True)
class TrainableTensor:
    """An initializer repair trains: its role and whether its zeros are fixed."""

    name: str
    role: str  # weight, bias or norm
    masked: bool


def refuse_quantized(model: ir.Model) -> None:
    """Refuse a quantized graph: its integer weights cannot be trained here."""
    found = sorted({n.op_type for n in model.graph if n.op_type in QUANTIZED_OPS})
    if found:
        raise InputError(
            f"the model is quantized ({', '.join(found)} nodes): repair trains float weights; "
            "repair before quantizing (compress runs --repair before --quantize)"
        )


def _role(value: ir.Value) -> str | None:
    """``bias``/``norm`` when every use of the float initializer is one, else None."""
    roles = set()
    for use in value.uses():
        node, index = use.node, use.idx
        if _BIAS_INPUT.get(node.op_type) == index:
            roles.add("bias")
        elif index in _NORMS.get(node.op_type, ()):
            roles.add("norm")
        elif node.op_type == "Add" and _adds_to_layer(node, index, value):
            roles.add("bias")
        else:
            return None
    return roles.pop() if len(roles) == 1 else None


def _adds_to_layer(node: ir.Node, index: int, value: ir.Value) -> bool:
    other = node.inputs[1 - index] if len(node.inputs) == 2 else None
    producer = other.producer() if other is not None else None
    size = value.const_value.size if value.const_value is not None else 0
    return producer is not None and producer.op_type in _LAYERS and size > 1


def find_trainable(model: ir.Model, train_zeros: str | None = None) -> dict[str, TrainableTensor]:
    """Trainable initializers of the main graph by name (see the module docstring); weights
    whose names match the ``train_zeros`` regex may change their zeros too."""
    free = compiled_regex("--train-zeros", train_zeros)
    trainable = {
        w.name: TrainableTensor(w.name, "weight", not (free and free.search(w.name)))
        for w in find_weights(model)[0]
    }
    for name, value in model.graph.initializers.items():
        if name in trainable or not is_float(value) or not value.uses():
            continue
        role = _role(value)
        if role is not None:
            trainable[name] = TrainableTensor(name, role, False)
    wrong = sorted(
        {
            model.graph.initializers[n].dtype.name
            for n in trainable
            if model.graph.initializers[n].dtype != ir.DataType.FLOAT
        }
    )
    if wrong:
        raise InputError(
            f"the model's weights are {', '.join(wrong)}: repair trains float32 weights "
            "(convert the model to float32 first)"
        )
    if not trainable:
        raise InputError("the model has no weights repair can train (no Conv, Gemm or MatMul)")
    return trainable
