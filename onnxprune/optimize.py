"""Fuse a transformer for onnxruntime, so that exporter overhead does not eat what pruning saved.

``OptimizeForRuntimePass`` guarantees the model computes the same function (up to float
rounding and one documented exception) with onnxruntime's fused kernels where it can:

1. ``ResolveInferredDimsPass``: a ``-1`` in a Reshape target that the input's shape determines
   (the other entries are literals or the input's own dims, read at run time) becomes that
   number. Exporters write ``[batch, seq, -1, head_dim]``; after pruning, shape inference then
   still knows the head count, which the fusions below need.
2. ``ScalarNanGuardPass``: the NaN guard of SDPA exports, ``Where(IsNaN(p), 0, p)``, gets its
   0 as a scalar (the TorchScript exporter writes a shape-[1] tensor, which onnxscript's SDPA
   pattern does not accept).
3. onnxscript's ``optimize_for_ort``: constant folding, then fusion into onnxruntime's
   ``Attention``/``MultiHeadAttention``, ``SkipLayerNormalization``, ``BiasGelu``/``Gelu``.
   The fused attention drops the NaN guard: a query row whose keys are all masked gives the
   mean of V instead of zeros (it never happens with padding masks that keep a real token).

Dense and pruned models are optimised the same way, so speed can be reported against the
original and against the equally optimised dense model.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

from onnxprune.model_io import load_model, save_model, uses_external_data
from onnxprune.structured.apply import edit_shape_constant
from onnxprune.structured.groups import ShapeEdit
from onnxprune.structured.shapes import Dim, Lit, constant_tensor, shape_terms

__all__ = [
    "OptimizeForRuntimePass",
    "ResolveInferredDimsPass",
    "ScalarNanGuardPass",
    "optimize_file",
    "optimize_stage",
]

logger = logging.getLogger(__name__)


def _resolved(node: ir.Node) -> tuple[tuple[str, int, int], int] | None:
    """(origin of the ``-1``, its value) when the input's shape determines it."""
    terms, source = shape_terms(node), node.inputs[0]
    if terms is None or source.shape is None:
        return None
    unknown = [t for t in terms if isinstance(t, Lit) and t.value == -1]
    if len(unknown) != 1 or unknown[0].origin is None:
        return None
    dims = list(source.shape)
    for index, term in enumerate(terms):
        if term is unknown[0]:
            continue
        if isinstance(term, Lit) and term.value == 0:
            if node.attributes.get_int("allowzero", 0):
                return None  # a literal empty axis
            term = Dim(source, index)  # allowzero=0 copies the input's dim
        if isinstance(term, Lit):
            dims.append(("divide", term.value))
            continue
        if term.factor != 1 or term.source.shape is None:
            return None
        wanted = term.source.shape[term.axis]
        match = next((d for d in dims if not isinstance(d, tuple) and d == wanted), None)
        if match is None or (not isinstance(wanted, int) and wanted.value is None):
            return None
        dims.remove(match)
    numerator = [d for d in dims if not isinstance(d, tuple)]
    divisor = math.prod(d[1] for d in dims if isinstance(d, tuple))
    if not all(isinstance(d, int) for d in numerator) or divisor <= 0:
        return None
    total = math.prod(numerator)
    return (unknown[0].origin, total // divisor) if total % divisor == 0 else None


class ResolveInferredDimsPass(ir.passes.InPlacePass):
    """Write the number for a Reshape ``-1`` that the input's shape determines (see above).

    A constant shared by several Reshapes is rewritten only when every user is such a Reshape
    and all agree on the number.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        NameFixPass()(model)  # constants are found again by their node's name
        found: dict[tuple[str, int, int], set[int]] = {}
        users: dict[tuple[str, int, int], set[str]] = {}
        for node in model.graph:
            if node.op_type == "Reshape":
                resolved = _resolved(node)
                if resolved is not None:
                    found.setdefault(resolved[0], set()).add(resolved[1])
                    users.setdefault(resolved[0], set()).add(node.name)
        nodes = {node.name: node for node in model.graph}
        changed = 0
        for origin, values in sorted(found.items()):
            holder = nodes[origin[0]]
            readers = {u.node.name for u in holder.outputs[0].uses()}
            if holder.op_type != "Reshape" and readers != users[origin]:
                continue
            if len(values) == 1:
                edit = ShapeEdit(origin[0], origin[1], origin[2], values.pop())
                edit_shape_constant(model, holder, edit, 1)
                changed += 1
        logger.info("resolved %d inferred reshape dims", changed)
        return ir.passes.PassResult(model, modified=changed > 0)


class ScalarNanGuardPass(ir.passes.InPlacePass):
    """``Where(IsNaN(p), c, p)`` with a one-element constant ``c`` gets ``c`` as a scalar."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in model.graph:
            guard = node.inputs[0].producer() if node.op_type == "Where" else None
            if guard is None or guard.op_type != "IsNaN" or guard.inputs[0] is not node.inputs[2]:
                continue
            filler = constant_tensor(node.inputs[1])
            if filler is None or filler.size != 1 or not filler.shape.dims:
                continue
            name = f"{node.name}_scalar_fill".replace("/", "_")
            array = np.asarray(filler.numpy().ravel()[0])
            value = ir.Value(name=name, shape=ir.Shape([]), type=ir.TensorType(filler.dtype))
            value.const_value = ir.Tensor(array, name=name)
            model.graph.register_initializer(value)
            node.replace_input_with(1, value)
            changed += 1
        return ir.passes.PassResult(model, modified=changed > 0)


class OptimizeForRuntimePass(ir.passes.InPlacePass):
    """Resolve dims, scalarise NaN guards, then onnxscript's ``optimize_for_ort``.

    ``fusions`` counts each fusion applied (onnxscript's names).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fusions: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        inference = ShapeInferencePass(strict_mode=False, data_prop=True)
        inference(model)  # the resolution below reads the input shapes
        ResolveInferredDimsPass()(model)
        ScalarNanGuardPass()(model)
        inference(model)  # learns the resolved dims
        optimized, counts = optimize_for_ort(model)
        if optimized is not model:
            raise AssertionError("optimize_for_ort did not work in place")
        self.fusions = {name: count for name, count in sorted(counts.items()) if count}
        logger.info("fusions: %s", self.fusions)
        return ir.passes.PassResult(model, modified=True)


def optimize_file(model: str | os.PathLike, output: str | os.PathLike) -> dict:
    """``OptimizeForRuntimePass`` on the file ``model`` into ``output``; the fusions made."""
    working = load_model(model)
    external = uses_external_data(working)
    ir.external_data.load_to_model(working)
    stage = OptimizeForRuntimePass()
    stage(working)
    save_model(working, output, external_data=external)
    return stage.fusions


def optimize_stage(original, pruned, output, work: Path, verify_options, dataset) -> dict:
    """The ``compress --optimize`` stage: ``pruned`` optimised into ``output``, and the
    original optimised the same way, so the report can say what pruning bought on its own:
    ``against_optimized_dense`` verifies ``output`` against that optimised dense model."""
    from onnxprune.verify import verify_models  # verify imports heavy runtime helpers

    dense = Path(work) / "dense.optimized.onnx"
    section = {
        "fusions": optimize_file(pruned, output),
        "dense_fusions": optimize_file(original, dense),
    }
    check = verify_models(dense, output, verify_options, dataset)
    section["against_optimized_dense"] = {
        "cosine_mean": check["quality"]["cosine_mean"],
        "max_abs_diff": check["quality"]["max_abs_diff"],
        "latency": check.get("latency"),
    }
    return section
