"""Find the initializers that can be pruned, and say why the others cannot.

A weight is prunable when it is a floating-point initializer whose every use is a weight input
in the op table (``onnxprune.ops``) and all uses agree on its layout. Everything else is
reported as skipped with the reason, so nothing is left out silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxprune.ops import WeightLayout, weight_layout

__all__ = ["PrunableWeight", "SkippedTensor", "find_weights", "is_float"]

_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}


@dataclass(frozen=True)
class PrunableWeight:
    """An initializer that feeds the weight input of known layers."""

    name: str
    op_type: str
    nodes: tuple[str, ...]
    shape: tuple[int, ...]
    layout: WeightLayout

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class SkippedTensor:
    """An initializer that is not pruned, with the reason."""

    name: str
    shape: tuple[int, ...]
    reason: str


def is_float(value: ir.Value) -> bool:
    """Whether the initializer holds floating-point numbers."""
    return value.dtype in _FLOAT_TYPES


def _classify(value: ir.Value) -> WeightLayout | str:
    if value.const_value is None:
        return "initializer without a value"
    if not is_float(value):
        return f"{value.dtype.name} tensor, not floating point"
    uses = value.uses()
    if not uses:
        return "unused initializer"
    rank = len(value.shape)
    layouts = {weight_layout(use.node, use.idx, rank) for use in uses}
    reasons = sorted(str(item) for item in layouts if not isinstance(item, WeightLayout))
    if reasons:
        return reasons[0]
    if len(layouts) > 1:
        return "shared by layers that disagree on its layout"
    return layouts.pop()


def find_weights(model: ir.Model) -> tuple[list[PrunableWeight], list[SkippedTensor]]:
    """Split the main graph's initializers into prunable weights and skipped tensors."""
    prunable: list[PrunableWeight] = []
    skipped: list[SkippedTensor] = []
    for name, value in model.graph.initializers.items():
        shape = tuple(int(d) for d in value.shape) if value.shape is not None else ()
        verdict = _classify(value)
        if isinstance(verdict, str):
            skipped.append(SkippedTensor(name, shape, verdict))
            continue
        nodes = tuple(sorted({use.node.name or "" for use in value.uses()}))
        op_type = value.uses()[0].node.op_type
        prunable.append(PrunableWeight(name, op_type, nodes, shape, verdict))
    return prunable, skipped
