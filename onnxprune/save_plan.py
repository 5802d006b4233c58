"""Where ``onnx_ir.save(model, path, external_data=...)`` puts each tensor in the data file.

onnx-ir 1.1 and later 1.x write every initializer of more than 256 bytes (the default
``size_threshold_bytes``) to the data file, packed densely in declaration order with no
padding; smaller ones stay in the graph. Knowing that layout in advance lets the scratch
file of a streamed model (``onnxprune.streaming``) be written in it, so the file can become
the output's data file by a rename instead of a second copy of every weight.

Guarantees: ``save_plan`` gives exactly the offsets and lengths ``onnx_ir.save`` would, or None
for what it does not model (initializers in subgraphs, an onnx-ir other than 1.1 or later 1.x).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

__all__ = ["INLINE_BYTES", "save_plan"]

logger = logging.getLogger(__name__)

# onnx_ir.save's default size_threshold_bytes: tensors of at most this many bytes stay inline
INLINE_BYTES = 256


def save_plan(model: ir.Model) -> dict[str, tuple[int, int]] | None:
    """Initializer name -> (offset, length) in the data file ``onnx_ir.save`` would write, or
    None when the layout is not known (subgraphs, another onnx-ir version)."""
    major, minor = (int(part) for part in ir.__version__.split(".")[:2])
    if (major, minor) < (1, 1) or major > 1:  # dense packing is 1.1's layout
        logger.debug("onnx-ir %s: save layout not modelled", ir.__version__)
        return None
    if any(graph is not model.graph for graph in model.graphs()):
        return None
    plan, offset = {}, 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None or tensor.nbytes <= INLINE_BYTES:
            continue
        plan[value.name] = (offset, tensor.nbytes)
        offset += tensor.nbytes
    return plan
