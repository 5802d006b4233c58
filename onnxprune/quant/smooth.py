"""SmoothQuant: move activation outliers into the weights before static int8.

For the ``MatMul`` layers that read one activation tensor ``X`` with constant weights
``W[K, N]``, the pass computes per input channel ``s_k = max|X_k|^alpha / max|W_k|^(1-alpha)``
(``max|W_k|`` over all those layers), inserts one ``Mul(X, 1/s)`` that feeds them and scales
each weight's rows by ``s``: the product is unchanged in exact arithmetic, while the
activation's per-tensor int8 range no longer spans a few outlier channels (Xiao et al., 2023,
the migration onnxruntime offers only through Intel Neural Compressor). Other consumers of ``X``
(residual ``Add``s, ``Shape``) keep reading ``X`` itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["SmoothQuantPass", "smoothable_groups"]

logger = logging.getLogger(__name__)
FLOOR = 1e-5


def smoothable_groups(model: onnx.ModelProto, nodes: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the MatMuls in ``nodes`` that read it with a 2-D constant weight."""
    constants = {t.name: t for t in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name not in nodes or node.input[1] not in constants:
            continue
        if len(constants[node.input[1]].dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    return groups


@dataclass
class SmoothQuantPass:
    """Scale activation channels down and weight rows up, ``alpha`` in (0, 1).

    Attributes:
        absmax: activation tensor -> per-channel max |x| over the calibration rows.
        alpha: migration strength (0.5 balances activation and weight ranges).
    """

    absmax: dict[str, np.ndarray]
    alpha: float = 0.5

    def call(self, model: onnx.ModelProto, nodes: set[str]) -> list[str]:
        """Smooth every group of ``nodes``; returns the activation tensors smoothed."""
        constants = {t.name: t for t in model.graph.initializer}
        smoothed = []
        for tensor, group in smoothable_groups(model, nodes).items():
            if tensor not in self.absmax:
                continue
            weights = [numpy_helper.to_array(constants[n.input[1]]) for n in group]
            scale = self._scale(self.absmax[tensor], weights)
            if scale is None:
                continue
            for node, weight in zip(group, weights, strict=True):
                name = f"{node.input[1]}_smoothed"
                scaled = (weight * scale[:, None]).astype(weight.dtype)
                model.graph.initializer.append(numpy_helper.from_array(scaled, name))
                node.input[1] = name
            self._insert_mul(model, tensor, group, (1.0 / scale).astype(np.float32))
            smoothed.append(tensor)
        _drop_unused(model)
        logger.info("SmoothQuant: %d activation tensors smoothed", len(smoothed))
        return smoothed

    def _scale(self, absmax: np.ndarray, weights: list[np.ndarray]) -> np.ndarray | None:
        weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        if absmax.shape != weight_max.shape:
            return None
        activation = np.maximum(absmax.astype(np.float64), FLOOR)
        weight = np.maximum(weight_max.astype(np.float64), FLOOR)
        return (activation**self.alpha / weight ** (1 - self.alpha)).astype(np.float32)

    @staticmethod
    def _insert_mul(model, tensor: str, group: list[onnx.NodeProto], inverse: np.ndarray) -> None:
        scale_name, output = f"{tensor}_smooth_scale", f"{tensor}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(inverse, scale_name))
        mul = onnx.helper.make_node("Mul", [tensor, scale_name], [output], name=f"{tensor}_smooth")
        position = min(list(model.graph.node).index(n) for n in group)
        model.graph.node.insert(position, mul)
        for node in group:
            node.input[0] = output


def _drop_unused(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
