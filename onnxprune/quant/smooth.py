"""SmoothQuant: move activation outliers into the weights before static int8.

For the ``MatMul`` layers that read one activation tensor ``X`` with constant weights
``W[K, N]``, the pass computes per input channel ``s_k = max|X_k|^alpha / max|W_k|^(1-alpha)``
(``max|W_k|`` over all those layers), inserts one ``Mul(X, 1/s)`` that feeds them and scales
each weight's rows by ``s``: the product is unchanged in exact arithmetic, while the
activation's per-tensor int8 range no longer spans a few outlier channels (Xiao et al., 2023,
the migration onnxruntime offers only through Intel Neural Compressor). Other consumers of ``X``
(residual ``Add``s, ``Shape``) keep reading ``X`` itself. ``alpha`` is chosen per group from
candidates by the simulated int8 output error on the calibration rows, and a group is left
alone when no candidate beats no smoothing (on MiniLM a fixed alpha helps Q/K/V and FFN1 but
hurts FFN2). Where exact, ``1/s`` goes into constants instead of the ``Mul``
(``onnxprune.quant.fold``: a LayerNorm read only by the group, an attention context's value
projection).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.quant.fold import (
    Capture,
    Fold,
    apply_fold,
    check_folds,
    plan_fold,
    scale_weight_rows,
)

__all__ = ["AUTO_ALPHAS", "SmoothQuantPass", "group_error", "smoothable_groups"]

logger = logging.getLogger(__name__)
FLOOR = 1e-5
# Candidate strengths tried per group by ``--smooth auto``.
AUTO_ALPHAS = (0.25, 0.5, 0.75, 0.9)


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


def _fake_quant_rows(rows: np.ndarray) -> np.ndarray:
    # uint8 asymmetric per-tensor over the rows' range (zero included): MinMax calibration.
    low, high = min(float(rows.min()), 0.0), max(float(rows.max()), 0.0)
    scale = max((high - low) / 255.0, 1e-12)
    zero = np.round(-low / scale)
    return (np.clip(np.round(rows / scale) + zero, 0, 255) - zero) * scale


def _fake_quant_weight(weight: np.ndarray) -> np.ndarray:
    # int8 symmetric per output column, as quantize_static's per-channel MatMul weights.
    scale = np.maximum(np.abs(weight).max(axis=0, keepdims=True) / 127.0, 1e-12)
    return np.clip(np.round(weight / scale), -128, 127) * scale


def group_error(rows: np.ndarray, weights: list[np.ndarray], scale: np.ndarray) -> float:
    """Mean over rows (tokens) and layers of the relative int8 output error after smoothing by
    ``scale``. Per row, not over the whole matrix: a few outlier tokens with huge norms would
    otherwise decide for all the others."""
    quantized = _fake_quant_rows(rows / scale)
    errors = []
    for weight in weights:
        reference = rows @ weight
        result = quantized @ _fake_quant_weight(weight * scale[:, None])
        norms = np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
        errors.append(np.mean(np.linalg.norm(result - reference, axis=1) / norms))
    return float(np.mean(errors))


@dataclass
class SmoothQuantPass:
    """Scale activation channels down and weight rows up, per group of MatMuls.

    Attributes:
        rows: activation tensor -> calibration rows ``[rows, K]``.
        alphas: candidate migration strengths; each group takes the one (or none, ``s = 1``)
            whose simulated int8 output error on the rows is lowest.
        capture: runs a model on a few samples and returns the named tensors; with it, ``1/s``
            is folded into constants where that is exact (``onnxprune.quant.fold``) instead of
            a ``Mul`` node. None: always a ``Mul``.
        placed: activation tensor -> where its ``1/s`` went (``Mul``, ``LayerNormalization``,
            ``value projection``).
        muls: False: a group whose scale cannot be folded is left unsmoothed (no ``Mul``); the
            static quantizer's mixed choice (``onnxprune.quant.mixed``) compares both.
        unfolded: activation tensors that needed a ``Mul`` (smoothed or not) -> their MatMuls.
        groups: every activation tensor considered -> its MatMuls.
    """

    rows: dict[str, np.ndarray]
    alphas: tuple[float, ...] = (0.5,)
    capture: Capture | None = None
    muls: bool = True
    unfolded: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    placed: dict[str, str] = field(default_factory=dict)

    def call(self, model: onnx.ModelProto, nodes: set[str]) -> list[str]:
        """Smooth the groups of ``nodes`` where it lowers the error; returns their tensors."""
        constants = {t.name: t for t in model.graph.initializer}
        scaled: dict[str, tuple[list[onnx.NodeProto], np.ndarray]] = {}
        for tensor, group in smoothable_groups(model, nodes).items():
            if tensor in self.rows:
                self.groups[tensor] = [n.name for n in group]
                weights = [numpy_helper.to_array(constants[n.input[1]]) for n in group]
                scale = self._best_scale(tensor, weights)
                if scale is not None:
                    scaled[tensor] = (group, scale)
        folds = self._folds(model, scaled)
        self.unfolded = {t: [n.name for n in g] for t, (g, _) in scaled.items() if t not in folds}
        if not self.muls:
            scaled = {t: value for t, value in scaled.items() if t in folds}
        for tensor, (group, scale) in scaled.items():
            # reads the weights as earlier folds left them (a value fold rescales V's weight)
            scale_weight_rows(model, group, scale, "_smoothed")
            inverse = (1.0 / scale).astype(np.float32)
            if tensor in folds:
                apply_fold(model, folds[tensor], inverse)
                self.placed[tensor] = folds[tensor].kind
            else:
                self._insert_mul(model, tensor, group, inverse)
                self.placed[tensor] = "Mul"
        _drop_unused(model)
        logger.info("SmoothQuant: %d activation tensors smoothed (%s)", len(scaled), self.placed)
        return list(scaled)

    def _folds(self, model: onnx.ModelProto, scaled: dict) -> dict[str, Fold]:
        # planned and checked on the model as it was, before any weight is scaled
        if self.capture is None:
            return {}
        candidates = {}
        for tensor, (group, scale) in scaled.items():
            fold = plan_fold(model, tensor, group)
            if fold is not None:
                inverse = (1.0 / scale).astype(np.float32)
                candidates[tensor] = (fold, inverse, [n.name for n in group])
        passed = check_folds(model, candidates, self.capture)
        return {t: candidates[t][0] for t in passed}

    def _best_scale(self, tensor: str, weights: list[np.ndarray]) -> np.ndarray | None:
        rows = self.rows[tensor].astype(np.float64)
        if rows.shape[1] != weights[0].shape[0]:
            return None
        as64 = [w.astype(np.float64) for w in weights]
        best, best_error = None, group_error(rows, as64, np.ones(rows.shape[1]))
        self.chosen[tensor] = 0.0
        for alpha in self.alphas:
            scale = _scale(np.abs(rows).max(axis=0), as64, alpha)
            error = group_error(rows, as64, scale)
            if error < best_error:
                best, best_error, self.chosen[tensor] = scale, error, alpha
        return None if best is None else best.astype(np.float32)

    @staticmethod
    def _insert_mul(model, tensor: str, group: list[onnx.NodeProto], inverse: np.ndarray) -> None:
        scale_name, output = f"{tensor}_smooth_scale", f"{tensor}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(inverse, scale_name))
        mul = onnx.helper.make_node("Mul", [tensor, scale_name], [output], name=f"{tensor}_smooth")
        position = min(list(model.graph.node).index(n) for n in group)
        model.graph.node.insert(position, mul)
        for node in group:
            node.input[0] = output


def _scale(absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    activation = np.maximum(absmax, FLOOR)
    weight = np.maximum(weight_max, FLOOR)
    return activation**alpha / weight ** (1 - alpha)


def _drop_unused(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
