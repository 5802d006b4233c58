"""Graph clean-up before deployment: fold BatchNorm, drop no-op nodes, fold constants.

``CleanupPass`` guarantees: the model keeps its inputs and outputs and computes the same values
up to float rounding (the ``compress`` report checks max abs diff); it folds BatchNormalization
into a preceding Conv, ConvTranspose or Gemm with constant parameters (onnxscript's rewrite
rules), removes Identity nodes and inference-time Dropout (its mask output unused), folds
constant sub-graphs and removes dead nodes (onnxscript's optimizer). The onnx-ir and onnxscript
steps run on a copy: a step that fails on a graph (onnx-ir's Identity elimination on an ``If``
branch that returns an outer value, onnxscript's optimizer on ``SplitToSequence``) is skipped
and named in ``skipped`` with the reason, the model left as it was before that step.
``modified`` is True when the node count changed; ``counts`` says how many nodes of each op
type went.
"""

from __future__ import annotations

import logging
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

from onnxprune.errors import first_line

__all__ = ["CleanupPass", "RemoveDropoutPass"]

logger = logging.getLogger(__name__)


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


def _fold_batchnorm(model: ir.Model) -> None:
    onnxscript.rewriter.rewrite(
        model,
        pattern_rewrite_rules=[
            fuse_batchnorm_into_conv_rule,
            fuse_batchnorm_into_conv_transpose_rule,
            fuse_batchnorm_into_gemm_rule,
        ],
    )


def _optimize(model: ir.Model) -> None:
    onnxscript.optimizer.optimize_ir(model, num_iterations=2)
    _drop_attributes_newer_than_opset(model)


def _drop_attributes_newer_than_opset(model: ir.Model) -> None:
    """onnxscript's optimizer writes Reshape's ``allowzero`` (opset 14) into older models: the
    default 0 is dropped; 1 cannot be expressed there, so the step fails (and is skipped)."""
    if model.opset_imports.get("", 14) >= 14:
        return
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type == "Reshape" and node.domain in ("", "ai.onnx"):
            allowzero = node.attributes.pop("allowzero", None)
            if allowzero is not None and allowzero.as_int() != 0:
                raise ValueError(f"Reshape '{node.name}' needs allowzero=1 (opset 14)")


def _remove_identities(model: ir.Model) -> None:
    IdentityEliminationPass()(model)


# Steps from other libraries, run on a copy: one that raises is skipped, with the reason.
_STEPS = (
    ("remove Identity", _remove_identities),
    ("fold BatchNormalization", _fold_batchnorm),
    ("optimize", _optimize),
)


def _replace_graph(model: ir.Model, working: ir.Model) -> None:
    """Make ``model`` the transformed copy ``working`` (same object, new contents)."""
    model.graph = working.graph  # the graph carries the opset imports
    functions = dict(working.functions)
    model.functions.clear()
    model.functions.update(functions)


class CleanupPass(ir.passes.InPlacePass):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = Counter(node.op_type for node in model.graph)
        RemoveDropoutPass()(model)
        self.skipped = {}
        for step, run in _STEPS:
            try:
                working = model.clone()
                run(working)
            except Exception as error:  # onnxscript fails on some valid graphs
                detail = first_line(error, "")
                name = type(error).__name__
                self.skipped[step] = f"{name}: {detail}" if detail else name
                logger.info("clean-up step '%s' skipped: %s", step, self.skipped[step])
                continue
            _replace_graph(model, working)
        RemoveUnusedNodesPass()(model)
        after = Counter(node.op_type for node in model.graph)
        self.counts = {
            op: before[op] - after[op] for op in sorted(before) if before[op] > after[op]
        }
        return ir.passes.PassResult(model, modified=sum(before.values()) != sum(after.values()))
