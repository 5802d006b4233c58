"""Bias correction after static int8: put the mean output shift of each int8 layer back.

Quantizing a layer's input and weight shifts the mean of its outputs per channel; over a deep
stack the shifts add up (the "bias correction" of Nagel et al., 2019, NNCF's
``FastBiasCorrection``). For every int8 ``MatMul`` whose output goes to a bias ``Add`` the pass
computes, on float calibration rows ``X`` of the layer input, ``mean(X W - Q(X) Q(W))`` with the
exact scales and zero points the quantized model uses, and adds it to the bias. What remains,
``||X W - Q(X) Q(W) - shift|| / ||X W||``, is each layer's measured output error: accuracy
control ranks layers by it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["BiasCorrectionPass", "fake_quant_layers"]

logger = logging.getLogger(__name__)


def _dequant(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> np.ndarray:
    quantized = constants[node.input[0]].astype(np.float64)
    scale = constants[node.input[1]].astype(np.float64)
    zero = constants[node.input[2]].astype(np.float64) if len(node.input) > 2 else 0.0
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and quantized.ndim == 2:
        shape = [1, 1]
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape)
    return (quantized - zero) * scale


def fake_quant_layers(model: onnx.ModelProto) -> dict[str, tuple]:
    """MatMul name -> (float input name, (scale, zero, low, high), dequantized weight)."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    layers = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        activation, weight = (producers.get(name) for name in node.input[:2])
        if not (activation and weight and weight.op_type == "DequantizeLinear"):
            continue
        quantize = (
            producers.get(activation.input[0]) if activation.op_type == "DequantizeLinear" else None
        )
        if (
            quantize is None
            or quantize.op_type != "QuantizeLinear"
            or weight.input[0] not in constants
        ):
            continue
        zero = constants[activation.input[2]]
        info = np.iinfo(zero.dtype)
        params = (float(constants[activation.input[1]]), float(zero), info.min, info.max)
        layers[node.name] = (quantize.input[0], params, _dequant(weight, constants))
    return layers


def _fake_quant(rows: np.ndarray, params: tuple) -> np.ndarray:
    scale, zero, low, high = params
    return (np.clip(np.round(rows / scale) + zero, low, high) - zero) * scale


class BiasCorrectionPass:
    """Measure each int8 MatMul's output error; with ``apply``, add its mean shift to the bias.

    After ``call``, ``errors`` maps each measured MatMul to its relative output error (after
    the shift is taken out where a bias can absorb it).
    """

    def __init__(
        self, rows: dict[str, np.ndarray], weights: dict[str, np.ndarray], apply: bool = True
    ) -> None:
        self.rows = rows  # float input tensor name -> calibration rows
        self.weights = weights  # MatMul name -> float weight
        self.apply = apply
        self.errors: dict[str, float] = {}

    def call(self, model: onnx.ModelProto) -> int:
        layers = fake_quant_layers(model)
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        initializers = {t.name: t for t in model.graph.initializer}
        corrected = 0
        for node in model.graph.node:
            if node.name not in layers or node.name not in self.weights:
                continue
            tensor, params, dequantized = layers[node.name]
            if tensor not in self.rows:
                continue
            rows = self.rows[tensor].astype(np.float64)
            reference = rows @ self.weights[node.name]
            difference = reference - _fake_quant(rows, params) @ dequantized
            bias = _bias_of(node, consumers, initializers, difference.shape[1])
            shift = difference.mean(0) if bias is not None else 0.0
            norm = max(float(np.linalg.norm(reference)), 1e-12)
            self.errors[node.name] = float(np.linalg.norm(difference - shift)) / norm
            if bias is not None and self.apply:
                old = numpy_helper.to_array(bias)
                bias.CopyFrom(numpy_helper.from_array((old + shift).astype(old.dtype), bias.name))
                corrected += 1
        logger.info("bias correction on %d int8 layers", corrected)
        return corrected


def _bias_of(node, consumers, initializers, width: int) -> onnx.TensorProto | None:
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    found = [initializers[i] for i in users[0].input if i in initializers]
    if len(found) != 1 or tuple(found[0].dims) != (width,):
        return None
    return found[0]
