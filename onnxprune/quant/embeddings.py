"""Embedding tables as 8-bit ``GatherBlockQuantized`` (onnxruntime CPU contrib op).

A ``Gather`` that reads a float 2-D initializer (a token, position or type embedding) becomes
``GatherBlockQuantized`` with uint8 data, asymmetric blocks of ``block_size`` values along the
hidden axis (a float scale and a uint8 zero point per block): the rows it returns are within
half a quantization step of the float ones, and the table shrinks about 4x. The 4-bit form is
written by onnxruntime's ``MatMulNBitsQuantizer`` (``onnxprune.quant.int4``).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.quant.rules import CONTRIB, use_contrib_opset

__all__ = [
    "QuantizeEmbeddingsPass",
    "block_for",
    "embedding_gathers",
    "gather_block_quantized",
    "quantize_table",
]

logger = logging.getLogger(__name__)


def embedding_gathers(model: onnx.ModelProto, block_size: int) -> dict[str, str | None]:
    """Gather name -> None if its table can be block-quantized, else the reason it cannot."""
    constants = {t.name: t for t in model.graph.initializer}
    found: dict[str, str | None] = {}
    for node in model.graph.node:
        table = constants.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None:
            continue
        if table.data_type != onnx.TensorProto.FLOAT or len(table.dims) != 2:
            found[node.name] = "not a float 2-D table"
        elif table.dims[1] < block_size or table.dims[1] % block_size:
            found[node.name] = f"rows of {table.dims[1]} values do not split into blocks"
        else:
            found[node.name] = None
    return found


def block_for(model: onnx.ModelProto, node: str, largest: int = 128) -> int:
    """The largest power of two in [16, largest] that divides the Gather's row length."""
    constants = {t.name: t for t in model.graph.initializer}
    table = next(constants[n.input[0]] for n in model.graph.node if n.name == node)
    block = largest
    while block > 16 and table.dims[1] % block:
        block //= 2
    return block


def quantize_table(table: np.ndarray, block_size: int) -> tuple[np.ndarray, ...]:
    """uint8 data, float scales and uint8 zero points, blocks along axis 1."""
    rows, cols = table.shape
    blocks = table.astype(np.float64).reshape(rows, cols // block_size, block_size)
    low = np.minimum(blocks.min(axis=-1), 0.0)
    high = np.maximum(blocks.max(axis=-1), 0.0)
    scale = np.maximum((high - low) / 255.0, 1e-12)
    zero = np.clip(np.round(-low / scale), 0, 255)
    data = np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, 255)
    return (
        data.astype(np.uint8).reshape(rows, cols),
        scale.astype(table.dtype),
        zero.astype(np.uint8),
    )


def gather_block_quantized(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    tensors: dict[str, np.ndarray],
    block: int,
    bits: int,
) -> onnx.NodeProto:
    """The ``GatherBlockQuantized`` replacing the Gather ``node``; adds its initializers.

    ``tensors`` maps name -> array for the quantized table, its scales and zero points, in
    that order; blocks run along the row (``quantize_axis`` 1), the gather axis is kept.
    """
    model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in tensors.items())
    data, scales, zeros = tensors
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return helper.make_node(
        "GatherBlockQuantized",
        [data, node.input[1], scales, zeros],
        list(node.output),
        name=node.name,
        domain=CONTRIB,
        gather_axis=axis,
        quantize_axis=1,
        block_size=block,
        bits=bits,
    )


class QuantizeEmbeddingsPass:
    """Replace the chosen Gathers on float tables by 8-bit ``GatherBlockQuantized``.

    Attributes:
        blocks: Gather name -> block size (a power of two >= 16 that divides the row length).
    """

    def __init__(self, blocks: dict[str, int]) -> None:
        self.blocks = blocks

    def call(self, model: onnx.ModelProto) -> list[str]:
        constants = {t.name: t for t in model.graph.initializer}
        done = []
        for index, node in enumerate(model.graph.node):
            if node.op_type != "Gather" or node.name not in self.blocks:
                continue
            block = self.blocks[node.name]
            table = numpy_helper.to_array(constants[node.input[0]])
            data, scale, zero = quantize_table(table, block)
            base = node.input[0]
            tensors = {f"{base}_q8": data, f"{base}_q8_scale": scale, f"{base}_q8_zero": zero}
            replacement = gather_block_quantized(model, node, tensors, block, bits=8)
            model.graph.node.remove(node)
            model.graph.node.insert(index, replacement)
            done.append(node.name)
        if done:
            _drop_unused(model)
            use_contrib_opset(model)
        logger.info("%d embedding tables quantized to 8 bits", len(done))
        return done


def _drop_unused(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
