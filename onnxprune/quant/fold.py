"""Put SmoothQuant's activation scale ``1/s`` into constants instead of a ``Mul`` node.

A ``Mul`` over every activation costs a full pass over the tensor at run time (on MiniLM the
smoothing ``Mul``s cost more than static int8 saves over dynamic int8). Two places take the
scale exactly:

* the ``LayerNormalization`` that produces the activation, when the smoothed ``MatMul``s are
  its only readers (a pre-LN block): ``gamma/s`` and ``beta/s``. In a post-LN block (BERT) the
  residual ``Add`` reads the same output, so the scale cannot go there;
* the value projection behind an attention context: the context is ``P @ V`` carried through
  ``Reshape``/``Transpose``, and attention mixes tokens, never channels, so dividing V's weight
  columns and bias by ``s`` divides the context's channels by ``s``. ``Reshape``s could still
  permute channels, so :func:`check_folds` runs the folded model on a few samples and keeps only
  the folds whose tensor equals the original divided by ``s``.

Everything else keeps the ``Mul`` (``onnxprune.quant.smooth``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["Capture", "Fold", "apply_fold", "check_folds", "plan_fold", "scale_weight_rows"]

logger = logging.getLogger(__name__)
LAYERNORM = "LayerNormalization"
VALUE = "value projection"
# ops a channel travels through unchanged on the way from V to the context (with MatMul as the
# right operand: P @ V mixes rows, keeps columns)
_CARRIERS = ("Reshape", "Transpose")
# readers that do not look at values
_SHAPE_ONLY = ("Shape", "Size")


@dataclass(frozen=True)
class Fold:
    """Where one activation's ``1/s`` goes: the ``(node, input index)`` constants whose last
    axis (a 1-D vector or a weight's output columns) is scaled."""

    tensor: str
    kind: str
    targets: tuple[tuple[str, int], ...]


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _value_readers(readers: dict, name: str) -> list[onnx.NodeProto]:
    return [n for n in readers.get(name, []) if n.op_type not in _SHAPE_ONLY]


def plan_fold(model: onnx.ModelProto, tensor: str, group: list[onnx.NodeProto]) -> Fold | None:
    """The fold for ``tensor`` read by the MatMuls ``group``, or None (keep a ``Mul``)."""
    graph = model.graph
    if tensor in {o.name for o in graph.output}:
        return None
    readers, producers = _readers(graph), {o: n for n in graph.node for o in n.output}
    if {id(n) for n in _value_readers(readers, tensor)} != {id(n) for n in group}:
        return None
    constants = {t.name for t in graph.initializer}
    producer = producers.get(tensor)
    if producer is None:
        return None
    if producer.op_type == LAYERNORM and producer.domain in ("", "ai.onnx"):
        return _layernorm_fold(tensor, producer, constants)
    return _value_fold(tensor, producer, producers, readers, constants)


def _layernorm_fold(tensor: str, node: onnx.NodeProto, constants: set[str]) -> Fold | None:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    params = [index for index in (1, 2) if index < len(node.input) and node.input[index]]
    if axis != -1 or len(node.output) > 1 or any(node.input[i] not in constants for i in params):
        return None
    return Fold(tensor, LAYERNORM, tuple((node.name, index) for index in params))


def _value_fold(tensor, node, producers, readers, constants) -> Fold | None:
    seen_attention = False
    while node is not None and (node.op_type in _CARRIERS or node.op_type == "MatMul"):
        if node.op_type == "MatMul":
            if seen_attention or node.input[1] in constants:
                return None
            seen_attention, name = True, node.input[1]
        else:
            name = node.input[0]
        if len(_value_readers(readers, name)) != 1:
            return None
        node = producers.get(name)
    if not seen_attention or node is None:
        return None
    return _projection(tensor, node, producers, readers, constants)


def _projection(tensor, node, producers, readers, constants) -> Fold | None:
    targets: list[tuple[str, int]] = []
    if node.op_type == "Add":
        bias = [i for i, name in enumerate(node.input) if name in constants]
        others = [name for name in node.input if name not in constants]
        if len(bias) != 1 or len(others) != 1 or len(_value_readers(readers, others[0])) != 1:
            return None
        targets.append((node.name, bias[0]))
        node = producers.get(others[0])
    if node is None or node.op_type != "MatMul" or node.input[1] not in constants:
        return None
    return Fold(tensor, VALUE, ((node.name, 1), *targets))


def apply_fold(model: onnx.ModelProto, fold: Fold, inverse: np.ndarray) -> None:
    """Scale the fold's constants by ``inverse`` along their last axis (into new initializers,
    so a constant shared with another node keeps its value there)."""
    constants = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for node_name, index in fold.targets:
        node = nodes[node_name]
        values = numpy_helper.to_array(constants[node.input[index]])
        if values.shape[-1] != inverse.shape[0]:
            raise ValueError(f"{node.input[index]}: {values.shape} cannot take {inverse.shape}")
        name = f"{node.input[index]}_folded"
        while name in constants:
            name += "_"
        scaled = numpy_helper.from_array((values * inverse).astype(values.dtype), name)
        model.graph.initializer.append(scaled)
        constants[name] = scaled
        node.input[index] = name


Capture = Callable[[onnx.ModelProto, list[str]], dict[str, np.ndarray]]


def check_folds(
    model: onnx.ModelProto,
    folds: dict[str, tuple[Fold, np.ndarray, list[str]]],
    capture: Capture,
) -> set[str]:
    """The tensors whose value-projection fold gives exactly ``tensor / s`` on the samples that
    ``capture(model, names)`` runs (LayerNorm folds are exact by construction and pass).

    ``folds``: tensor -> (fold, ``1/s``, the MatMuls that read the tensor). All folds are tried
    at once, each with its readers' weight rows scaled by ``s`` so later layers see their usual
    inputs."""
    checked = [t for t, (fold, _, _) in folds.items() if fold.kind == VALUE]
    passed = {t for t, (fold, _, _) in folds.items() if fold.kind == LAYERNORM}
    if not checked:
        return passed
    before = capture(model, checked)
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    for tensor in checked:
        fold, inverse, readers = folds[tensor]
        apply_fold(trial, fold, inverse)
        readers_in_trial = [n for n in trial.graph.node if n.name in readers]
        scale_weight_rows(trial, readers_in_trial, 1.0 / inverse, "_trial")
    after = capture(trial, checked)
    for tensor in checked:
        expected = before[tensor] * folds[tensor][1]
        scale = max(float(np.abs(expected).max()), 1e-12)
        if np.allclose(after[tensor], expected, rtol=1e-4, atol=1e-5 * scale):
            passed.add(tensor)
        else:
            logger.info("%s: the value-projection fold moves channels; keeping a Mul", tensor)
    return passed


def scale_weight_rows(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], scale: np.ndarray, suffix: str
) -> None:
    """Point each ``MatMul`` in ``nodes`` at a new initializer ``<weight><suffix>``: its weight
    with row ``k`` times ``scale[k]`` (the other side of an activation scaled by ``1/scale``)."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in nodes:
        weight = numpy_helper.to_array(constants[node.input[1]])
        name = f"{node.input[1]}{suffix}"
        rows = (weight * scale[:, None]).astype(weight.dtype)
        model.graph.initializer.append(numpy_helper.from_array(rows, name))
        node.input[1] = name
