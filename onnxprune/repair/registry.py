"""The table of ONNX ops the repair interpreter runs in torch, and the helpers its rules share.

Each rule takes the node, its inputs (torch tensors, ``None`` for an omitted optional input)
and the model's default-domain opset, and returns one tensor or a tuple of outputs. An op that
is not in ``OPS`` is refused before any training, with its name: the interpreter never guesses.
Rules are registered by ``ops_math``, ``ops_nn`` and ``ops_shape``; importing this module's
``load_ops`` imports them (and torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

__all__ = ["OPS", "Rule", "attr_ints", "load_ops", "register", "torch_dtype"]

Rule = Callable[[ir.Node, list[Any], int], Any]
OPS: dict[str, Rule] = {}


def register(*op_types: str) -> Callable[[Rule], Rule]:
    """Register a rule for the default-domain ops ``op_types``."""

    def add(rule: Rule) -> Rule:
        for op_type in op_types:
            OPS[op_type] = rule
        return rule

    return add


def load_ops() -> dict[str, Rule]:
    """Import the rule modules (torch with them) and return the table."""
    from onnxprune.repair import ops_math, ops_nn, ops_shape  # noqa: F401

    return OPS


def attr_ints(node: ir.Node, name: str, default: tuple[int, ...] | None = None):
    """An ints attribute as a tuple, or ``default``."""
    value = node.attributes.get_ints(name, None)
    return default if value is None else tuple(int(v) for v in value)


def torch_dtype(onnx_type: int):
    """The torch dtype of an ONNX ``TensorProto`` data type number."""
    import torch

    numpy_type = np.dtype(ir.DataType(onnx_type).numpy())
    if numpy_type == np.dtype(bool):
        return torch.bool
    return torch.from_numpy(np.zeros(0, dtype=numpy_type)).dtype
