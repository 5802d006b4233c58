"""Graph clean-up before deployment: fold BatchNorm, drop no-op nodes, fold constants.

``CleanupPass`` guarantees: the model keeps its inputs and outputs and computes the same values
up to float rounding (the ``compress`` report checks max abs diff); it folds BatchNormalization
into a preceding Conv, ConvTranspose or Gemm with constant parameters (onnxscript's rewrite
rules), removes Identity nodes and inference-time Dropout (its mask output unused), folds
constant sub-graphs and removes dead nodes (onnxscript's optimizer). ``modified`` is True when
the node count changed; ``counts`` says how many nodes of each op type went.
"""

from __future__ import annotations

from collections import Counter

import onnx_ir as ir
import onnxscript.optimizer
import onnxscript.rewriter
from onnx_ir.passes.common import IdentityEliminationPass, RemoveUnusedNodesPass
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

__all__ = ["CleanupPass", "RemoveDropoutPass"]


class RemoveDropoutPass(ir.passes.InPlacePass):
    """Replace each Dropout whose mask output is unused by its input (inference semantics)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        removed = 0
        outputs = set(model.graph.outputs)
        for node in list(model.graph):
            if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.outputs) > 1 and node.outputs[1].uses():
                continue
            result = node.outputs[0]
            if result in outputs:
                continue
            result.replace_all_uses_with(node.inputs[0])
            model.graph.remove(node, safe=True)
            removed += 1
        return ir.passes.PassResult(model, modified=bool(removed))


class CleanupPass(ir.passes.InPlacePass):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = Counter(node.op_type for node in model.graph)
        RemoveDropoutPass()(model)
        IdentityEliminationPass()(model)
        onnxscript.rewriter.rewrite(
            model,
            pattern_rewrite_rules=[
                fuse_batchnorm_into_conv_rule,
                fuse_batchnorm_into_conv_transpose_rule,
                fuse_batchnorm_into_gemm_rule,
            ],
        )
        onnxscript.optimizer.optimize_ir(model, num_iterations=2)
        RemoveUnusedNodesPass()(model)
        after = Counter(node.op_type for node in model.graph)
        self.counts = {
            op: before[op] - after[op] for op in sorted(before) if before[op] > after[op]
        }
        return ir.passes.PassResult(model, modified=sum(before.values()) != sum(after.values()))
