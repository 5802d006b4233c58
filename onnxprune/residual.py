"""Find residual blocks (``x + f(x)``) in a graph and remove them.

A residual block is an ``Add`` one of whose operands, ``f(x)``, depends on the values of the
other, ``x`` (shapes of ``x`` do not count), through layers with weights. Its nodes are those
that no graph output needs once ``x + f(x)`` is replaced by ``x``; removing the block does that
replacement. Transformers have two per layer (attention, feed-forward); ResNets one per basic
block.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

__all__ = ["RemoveBlocksPass", "ResidualBlock", "find_residual_blocks"]


@dataclass(frozen=True)
class ResidualBlock:
    """The ``Add`` closing the block, its skip input ``x`` (name and input index) and the names of
    its inner nodes. The index, not the name, finds ``x`` again after earlier blocks were
    removed: in a pre-norm stack one block's output is the next block's skip input."""

    add: str
    skip: str
    nodes: tuple[str, ...]
    skip_index: int = 0


def _depends_on(value: ir.Value, source: ir.Value, memo: dict[int, bool]) -> bool:
    """Whether ``value``'s contents depend on ``source`` (shapes of tensors do not count)."""
    if value is source:
        return True
    node = value.producer()
    if node is None or node.op_type == "Shape":  # a shape does not change with f(x)
        return False
    if id(node) not in memo:
        memo[id(node)] = False
        memo[id(node)] = any(v is not None and _depends_on(v, source, memo) for v in node.inputs)
    return memo[id(node)]


def _dead_after_cut(model: ir.Model, add: ir.Node, branch_index: int) -> list[ir.Node]:
    """Nodes no graph output needs once the Add's branch input is replaced by its skip input."""
    live: set[int] = set()
    pending = [v.producer() for v in model.graph.outputs if v.producer() is not None]
    while pending:
        node = pending.pop()
        if id(node) in live:
            continue
        live.add(id(node))
        inputs = [v for i, v in enumerate(node.inputs) if not (node is add and i == branch_index)]
        pending += [v.producer() for v in inputs if v is not None and v.producer() is not None]
    return [node for node in model.graph if id(node) not in live]


def find_residual_blocks(model: ir.Model) -> list[ResidualBlock]:
    """Residual blocks in graph order (sub-graphs of If/Loop are not searched).

    A block's nodes are those that become dead when ``x + f(x)`` is replaced by ``x``.
    """
    blocks = []
    for node in model.graph:
        if node.op_type != "Add" or len(node.inputs) != 2 or None in node.inputs:
            continue
        for skip_index in (1, 0):
            skip, branch = node.inputs[skip_index], node.inputs[1 - skip_index]
            if skip.const_value is not None or branch.const_value is not None:
                continue
            if skip.shape is not None and branch.shape is not None and skip.shape != branch.shape:
                continue
            if not _depends_on(branch, skip, {}):
                continue
            dead = _dead_after_cut(model, node, 1 - skip_index)
            if any(n.op_type in ("MatMul", "Gemm", "Conv") for n in dead):
                names = tuple(n.name for n in dead if n is not node)
                blocks.append(ResidualBlock(node.name, skip.name, names, skip_index))
                break
    return blocks


class RemoveBlocksPass(ir.passes.InPlacePass):
    """Replace each named block's ``x + f(x)`` by ``x`` and remove the dead nodes."""

    def __init__(self, blocks: list[ResidualBlock]) -> None:
        super().__init__()
        self.blocks = blocks

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = {node.name: node for node in model.graph}
        for block in self.blocks:
            add = nodes[block.add]
            skip = add.inputs[block.skip_index]
            assert skip is not None
            if add.outputs[0] in model.graph.outputs:
                identity = ir.node("Identity", [skip])
                model.graph.insert_before(add, identity)
                add.outputs[0].replace_all_uses_with(
                    identity.outputs[0], replace_graph_outputs=True
                )
            else:
                add.outputs[0].replace_all_uses_with(skip)
        RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=bool(self.blocks))
