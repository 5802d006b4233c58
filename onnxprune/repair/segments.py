"""Cut the student's graph into segments that end at residual-block outputs.

Blocks come from ``onnxprune.residual.find_residual_blocks``. A segment is the run of nodes, in
topological order, after the previous cut up to and including the node producing the next
block's output, so every node (and weight) belongs to exactly one segment: the nodes between
blocks (a post-norm model's LayerNormalization, a stem convolution) are trained with the block
that follows them. When a block's ``Add`` feeds only a LayerNormalization (post-norm models such
as BERT), the cut moves to that normalisation's output: that is the hidden state the rest of the
network sees, and matching it does not over-weight the few outlier channels the norm scales
down. A cut tensor the teacher does not have (a block the student kept but the teacher
computes under another name) is skipped with the reason, and its nodes join the next segment.
The last segment ends at the graph outputs and is trained on the model-output loss; a model
without residual blocks is one such segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxprune.repair.program import GraphProgram
from onnxprune.residual import find_residual_blocks

__all__ = ["Segment", "float_outputs", "plan_segments"]

_FLOATS = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}


@dataclass(frozen=True)
class Segment:
    """Nodes ``start..stop-1``, the tensors their loss compares, and the weights they train."""

    label: str
    start: int
    stop: int
    targets: tuple[str, ...]
    final: bool
    params: tuple[str, ...]


def float_outputs(model: ir.Model) -> tuple[str, ...]:
    """The graph outputs a loss can compare (floating point)."""
    return tuple(v.name for v in model.graph.outputs if v.dtype in _FLOATS)


def _cut(add: ir.Node) -> ir.Value:
    value = add.outputs[0]
    uses = value.uses()
    if len(uses) == 1 and uses[0].node.op_type == "LayerNormalization" and uses[0].idx == 0:
        return uses[0].node.outputs[0]
    return value


def _cuts(model: ir.Model, program: GraphProgram, teacher: set[str]) -> tuple[list, list[dict]]:
    nodes = {node.name: node for node in model.graph}
    outputs = {v.name for v in model.graph.outputs}
    cuts, notes = {}, []
    for block in find_residual_blocks(model):
        value = _cut(nodes[block.add])
        if value.name not in teacher:
            notes.append(
                {
                    "block": block.add,
                    "note": f"tensor '{value.name}' is not in the teacher: trained with the "
                    "next segment",
                }
            )
        elif value.name not in outputs:
            cuts[program.producer[value.name]] = (block.add, value.name)
    return [cuts[p] + (p,) for p in sorted(cuts)], notes


def plan_segments(
    model: ir.Model, program: GraphProgram, teacher: set[str], trainable: set[str]
) -> tuple[list[Segment], list[dict]]:
    """Segments in order, and notes on blocks that could not be cut (see the module docstring)."""
    cuts, notes = _cuts(model, program, teacher)
    bounds = [(label, name, position + 1) for label, name, position in cuts]
    segments: list[Segment] = []
    start, owned = 0, set()
    for label, name, stop in bounds:
        segments.append(_segment(program, label, start, stop, (name,), False, trainable, owned))
        start = stop
    if start < len(program.nodes) or not segments:
        targets = float_outputs(model)
        segments.append(
            _segment(program, "outputs", start, len(program.nodes), targets, True, trainable, owned)
        )
    return segments, notes


def _segment(program, label, start, stop, targets, final, trainable, owned) -> Segment:
    params = sorted(program.users(trainable, start, stop) - owned)
    owned.update(params)
    return Segment(label, start, stop, tuple(targets), final, tuple(params))
