"""Order prunable layers into stages for sequential (layer-by-layer) calibration.

A stage is a run of layers, in topological order, none of whose inputs depends on a weight
of another layer in the same stage. Pruning stage by stage and recalibrating in between feeds
every layer the activations of the already-pruned layers before it (as in SparseGPT's
sequential mode), while layers that share an input (Q, K, V) are calibrated together.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.weights import PrunableWeight

__all__ = ["sequential_stages"]


def _upstream_weights(model: ir.Model, names: set[str]) -> dict[str, frozenset[str]]:
    """For every value: the names in ``names`` among the initializers it depends on."""
    upstream: dict[str, frozenset[str]] = {}
    for node in model.graph:  # onnx graphs are stored in topological order
        deps: set[str] = set()
        for value in node.inputs:
            if value is None:
                continue
            deps |= upstream.get(value.name, frozenset())
            if value.name in names:
                deps.add(value.name)
        for output in node.outputs:
            upstream[output.name] = frozenset(deps)
    return upstream


def sequential_stages(model: ir.Model, weights: list[PrunableWeight]) -> list[list[PrunableWeight]]:
    """Split ``weights`` into stages; layers keep their topological order."""
    names = {w.name for w in weights}
    upstream = _upstream_weights(model, names)
    position = {id(node): index for index, node in enumerate(model.graph)}
    consumer = {w.name: model.graph.initializers[w.name].uses()[0].node for w in weights}
    ordered = sorted(weights, key=lambda w: position[id(consumer[w.name])])
    stages: list[list[PrunableWeight]] = []
    current: set[str] = set()
    for weight in ordered:
        activation = consumer[weight.name].inputs[0]
        deps = upstream.get(activation.name, frozenset()) if activation is not None else frozenset()
        if stages and not deps & current:
            stages[-1].append(weight)
            current.add(weight.name)
        else:
            stages.append([weight])
            current = {weight.name}
    return stages
