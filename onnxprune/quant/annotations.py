"""Shape annotations that make onnxruntime run a quantized model slower.

onnxruntime's pre-processing and quantizers write ONNX shape inference results into the model
(``graph.value_info``). With those shapes known, onnxruntime's ``SkipLayerNormFusion`` turns each
residual ``Add`` + ``LayerNormalization`` into a ``SkipLayerNormalization``, which its CPU kernel
runs about 5x slower than the two ops it replaces (onnxruntime 1.32, 1 and 2 threads, batch 1
and 16 at width 384: 5.1 vs 1.0 ms at [16, 64, 384]); on MiniLM that is a fifth of the int8
model's time. A float export usually carries none (MiniLM's: none) and onnxruntime infers
the shapes it needs itself, so quantized models are written without intermediate shape
annotations (graph inputs and outputs keep theirs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

__all__ = ["drop_shape_annotations", "drop_shape_annotations_in_file"]

logger = logging.getLogger(__name__)


def drop_shape_annotations(model: onnx.ModelProto) -> int:
    """Remove every ``graph.value_info`` entry (in place); returns how many were removed."""
    dropped = len(model.graph.value_info)
    del model.graph.value_info[:]
    logger.info("%d intermediate shape annotations dropped", dropped)
    return dropped


def drop_shape_annotations_in_file(path: Path) -> int:
    """:func:`drop_shape_annotations` on the model file at ``path`` (its external data, if
    any, is neither read nor rewritten)."""
    model = onnx.load(str(path), load_external_data=False)
    dropped = drop_shape_annotations(model)
    if dropped:
        onnx.save(model, str(path))
    return dropped
