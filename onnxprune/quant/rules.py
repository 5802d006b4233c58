"""Which ops static int8 quantizes and which stay in float, and why: one rule table.

Transformers keep their accuracy under int8 only when the numerically delicate ops stay in
float (the choices NNCF's transformer model type and the SmoothQuant/LLM.int8() papers make):
normalisation, softmax, the GELU's ``Erf``, residual and bias ``Add``s, and the attention-score
``MatMul``s whose two inputs are both activations. Only ops that multiply by a constant weight
(``MatMul``, ``Gemm``, ``Conv``) get int8 inputs. A ``MatMul``/``Gemm`` output stays float (its
per-tensor range is dominated by a few outlier channels in transformers; onnxruntime fuses the
int8 product into ``MatMulIntegerToFloat``), a ``Conv`` output is quantized (onnxruntime fuses
``DQ -> Conv -> Q`` into ``QLinearConv``, CNN activations have no such outliers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

__all__ = [
    "CONTRIB",
    "FLOAT_OPS",
    "INT8_CARRIER_OPS",
    "INT8_OPS",
    "OUTPUT_FLOAT_OPS",
    "LayerDecision",
    "static_plan",
    "use_contrib_opset",
    "weight_input",
]

# onnxruntime's contrib ops (MatMulIntegerToFloat, MatMulNBits, GatherBlockQuantized) live here
CONTRIB = "com.microsoft"

# op type -> why it stays in float under static int8.
FLOAT_OPS: Mapping[str, str] = {
    "LayerNormalization": "normalisation: its mean/variance need float range",
    "SkipLayerNormalization": "normalisation: its mean/variance need float range",
    "BatchNormalization": "folded into the preceding Conv by onnxruntime; kept float otherwise",
    "Softmax": "attention probabilities: exponent range does not fit 8 bits",
    "Erf": "GELU: its input range is wide and its output feeds outlier channels",
    "Gelu": "GELU: its input range is wide and its output feeds outlier channels",
    "FastGelu": "GELU: its input range is wide and its output feeds outlier channels",
    "Tanh": "GELU (tanh form): kept float with the rest of the activation",
    "Add": "residual or bias add: keeps the residual stream in float",
    "Sub": "elementwise arithmetic: kept float",
    "Mul": "elementwise arithmetic (GELU, scaling): kept float",
    "Div": "elementwise arithmetic (attention scaling, GELU): kept float",
    "Pow": "normalisation arithmetic: kept float",
    "Sqrt": "normalisation arithmetic: kept float",
    "ReduceMean": "normalisation statistics: kept float",
    "Where": "attention mask: kept float",
}
# op type -> index of its constant weight input, for ops whose inputs are quantized to int8.
INT8_OPS: Mapping[str, int] = {"MatMul": 1, "Gemm": 1, "Conv": 1}
# int8 ops whose output stays float (onnxruntime fuses them into MatMulIntegerToFloat).
OUTPUT_FLOAT_OPS = ("MatMul", "Gemm")
# ops that carry int8 tensors between int8 convolutions in CNNs (onnxruntime has QLinear kernels).
INT8_CARRIER_OPS: Mapping[str, str] = {
    op: "carries int8 activations between int8 layers (onnxruntime has an int8 kernel)"
    for op in ("Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten")
}
_ATTENTION_MATMUL = "attention-score MatMul (both inputs are activations): kept float"


@dataclass(frozen=True)
class LayerDecision:
    """One node's precision under a quantization plan and the reason for it."""

    node: str
    op_type: str
    precision: str
    reason: str

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "op": self.op_type,
            "precision": self.precision,
            "why": self.reason,
        }


def weight_input(node: onnx.NodeProto, constants: set[str]) -> str | None:
    """Name of the node's constant weight input if it is an int8-capable op, else None."""
    index = INT8_OPS.get(node.op_type)
    if index is None or len(node.input) <= index or node.input[index] not in constants:
        return None
    return node.input[index]


def static_plan(model: onnx.ModelProto, excluded: Mapping[str, str]) -> list[LayerDecision]:
    """The precision of every main-graph node that the rule table speaks about.

    Args:
        model: the model to quantize (every node named).
        excluded: node name -> reason it must stay float (user regex, accuracy control).

    Returns:
        One decision per weight op (int8 or float with the reason) and per op the table keeps
        in float; other ops (shape arithmetic, Reshape, Gather) are not listed.
    """
    constants = {t.name for t in model.graph.initializer}
    plan = []
    for node in model.graph.node:
        if weight_input(node, constants) is not None:
            if node.name in excluded:
                plan.append(LayerDecision(node.name, node.op_type, "float", excluded[node.name]))
            else:
                plan.append(LayerDecision(node.name, node.op_type, "int8", "constant weight"))
        elif node.op_type in INT8_OPS:
            plan.append(LayerDecision(node.name, node.op_type, "float", _ATTENTION_MATMUL))
        elif node.op_type in INT8_CARRIER_OPS:
            reason = INT8_CARRIER_OPS[node.op_type]
            plan.append(LayerDecision(node.name, node.op_type, "int8", reason))
        elif node.op_type in FLOAT_OPS:
            plan.append(LayerDecision(node.name, node.op_type, "float", FLOAT_OPS[node.op_type]))
    return plan


def use_contrib_opset(model: onnx.ModelProto) -> None:
    """Import onnxruntime's contrib domain (version 1) into ``model`` unless it is there."""
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
