"""Run an ONNX graph in torch, node by node, so its float weights can be trained.

Why an interpreter of our own rather than onnx2torch: onnx2torch turns constant MatMul weights
into buffers (not parameters), stops at some op versions (Gelu and Softmax of opset 20, the
``Shape``/``Gather`` arithmetic dynamo writes) and renames everything, so every weight would need
promoting and a name map back. The graphs onnxprune repairs (the fixtures, MiniLM from the
TorchScript and dynamo exporters, with eager or default attention) use about 40 ops; a table of
torch rules for them (``registry``) keeps initializer names as they are, runs the exporters'
shape arithmetic as it is written, and refuses any other op by name before training.

``GraphProgram`` holds the main graph's nodes in topological order and its initializers as
tensors. ``run`` executes a range of nodes on an environment (tensor name -> value); trainable
weights are passed in ``params`` and override the stored initializers, so gradients reach them.
Nodes computed from ``Constant`` nodes alone (the exporters' shape constants, about a third of
MiniLM's nodes) are run once when the program is built and skipped afterwards; they never depend
on an initializer, so no trainable weight is folded away.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxprune.errors import InputError
from onnxprune.repair.registry import load_ops

__all__ = ["GraphProgram", "unsupported_ops"]

logger = logging.getLogger(__name__)

_DOMAINS = ("", "ai.onnx")
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"})


def unsupported_ops(model: ir.Model) -> list[str]:
    """Op types of the main graph that the interpreter has no rule for (sorted)."""
    table = load_ops()
    return sorted(
        {
            node.op_type if (node.domain or "") in _DOMAINS else f"{node.domain}::{node.op_type}"
            for node in model.graph
            if (node.domain or "") not in _DOMAINS or node.op_type not in table
        }
    )


class GraphProgram:
    """The main graph of ``model`` as torch computations (see the module docstring)."""

    def __init__(self, model: ir.Model) -> None:
        import torch

        missing = unsupported_ops(model)
        if missing:
            raise InputError(
                f"repair cannot run {', '.join(missing)} in torch (not in the repair op table)"
            )
        self.rules = load_ops()
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        self.nodes = list(model.graph)
        self.constants = {
            name: torch.from_numpy(np.array(value.const_value.numpy()))
            for name, value in model.graph.initializers.items()
            if value.const_value is not None
        }
        self.inputs = [v.name for v in model.graph.inputs if v.name not in self.constants]
        self.outputs = [v.name for v in model.graph.outputs]
        self.folded = self._fold()
        self.position = {node.name: index for index, node in enumerate(self.nodes)}
        self.producer = {
            value.name: index for index, node in enumerate(self.nodes) for value in node.outputs
        }
        self.last_use = self._last_uses()

    def _fold(self) -> set[int]:
        """Run the nodes whose inputs all come from ``Constant`` nodes (or ``Constant`` nodes
        themselves) once, store their outputs as constants, and return their positions."""
        import torch

        folded, known = set(), set()
        with torch.no_grad():
            for index, node in enumerate(self.nodes):
                names = [v.name for v in node.inputs if v is not None and v.name]
                outputs = {v.name for v in node.outputs}
                if node.op_type in _RANDOM or outputs & set(self.outputs):
                    continue
                if not all(name in known for name in names):
                    continue
                values = self.run(self.constants, index, index + 1)
                if len(values) != len(node.outputs):
                    continue
                self.constants.update(values)
                known.update(values)
                folded.add(index)
        return folded

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            for value in node.inputs:
                if value is not None:
                    last[value.name] = index
        for name in self.outputs:
            last[name] = len(self.nodes)
        return last

    def users(self, names: set[str], start: int, stop: int) -> set[str]:
        """The names in ``names`` that nodes ``start..stop-1`` consume."""
        used = set()
        for node in self.nodes[start:stop]:
            used |= {v.name for v in node.inputs if v is not None and v.name in names}
        return used

    def run(self, env: dict, start: int, stop: int, params: dict | None = None) -> dict:
        """Execute nodes ``start..stop-1``; return the new values (``env`` is not changed)."""
        params = params or {}
        new: dict = {}

        def value(name: str):
            for source in (params, new, env, self.constants):
                if name in source:
                    return source[name]
            raise InputError(f"repair: tensor '{name}' is not computed by the interpreter")

        folded = getattr(self, "folded", ())
        for index in range(start, stop):
            if index in folded:
                continue
            node = self.nodes[index]
            inputs = [None if v is None or not v.name else value(v.name) for v in node.inputs]
            result = self.rules[node.op_type](node, inputs, self.opset)
            results = result if isinstance(result, tuple) else (result,)
            for output, tensor in zip(node.outputs, results, strict=False):
                if output.name:
                    new[output.name] = tensor
        return new

    def advance(self, env: dict, start: int, stop: int, params: dict | None = None) -> None:
        """Run nodes ``start..stop-1`` into ``env`` and drop the values no later node needs."""
        env.update(self.run(env, start, stop, params))
        for name in [n for n in env if self.last_use.get(n, -1) < stop]:
            del env[name]
