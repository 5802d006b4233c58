"""One weight pruned and written out: the per-layer step of ``onnxprune.pruning``.

``prune_one_weight`` reads one initializer (memory-mapped when the model has external data),
scores it, computes its pruned values (a mask, or SparseGPT's reconstruction) and returns the
new tensor: in memory for an in-memory model, else appended to the model's scratch file
(``onnxprune.streaming``) with the input's pages released, so only this weight, its scores
and its result are ever materialised. The bytes are the same either way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxprune.activations import from_weight_matrix, weight_matrix
from onnxprune.calibration import LayerStats
from onnxprune.masks import bits_of, layer_mask, n_m_mask, per_output_mask, zeros_in_bits
from onnxprune.scoring import METHODS
from onnxprune.sparsegpt import sparsegpt_prune
from onnxprune.streaming import ScratchTensors, release, stored_tensor
from onnxprune.weights import PrunableWeight

if TYPE_CHECKING:
    from onnxprune.pruning import PruneOptions

__all__ = [
    "PruneWeightsPass",
    "keep_mask",
    "masked",
    "prune_one_weight",
    "pruned_values",
    "zero_count",
]

logger = logging.getLogger(__name__)

_COUNT_CHUNK = 1 << 18  # entries counted at a time (a work buffer that stays in cache)


class PruneWeightsPass(ir.passes.InPlacePass):
    """Replace named initializers with their pruned values.

    Guarantees: only the named initializers change; each keeps its dtype and shape (a value of
    another shape is refused); ``modified`` is True only if some value actually changed.
    """

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.values = values

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for name, new in self.values.items():
            value = model.graph.initializers[name]
            old = value.const_value.numpy()
            if new.shape != old.shape:
                raise ValueError(f"{name}: pruned shape {new.shape} differs from {old.shape}")
            new = new.astype(old.dtype, copy=False)
            modified = modified or not np.array_equal(new, old)
            value.const_value = ir.Tensor(new, name=name)
        return ir.passes.PassResult(model, modified=modified)


def pruned_values(
    weight: PrunableWeight,
    array: np.ndarray,
    scores: np.ndarray,
    sparsity: float,
    options: PruneOptions,
    stats: LayerStats | None,
) -> np.ndarray:
    """``array`` pruned to ``sparsity`` by ``options.method`` (values updated by SparseGPT)."""
    method = METHODS[options.method]
    if method.reconstructs:
        assert stats is not None and stats.gram is not None
        matrix = sparsegpt_prune(
            weight_matrix(array, weight.layout), stats.gram, stats.rows, sparsity, options.pattern
        )
        return from_weight_matrix(matrix, weight.shape, weight.layout).astype(array.dtype)
    return masked(array, keep_mask(weight, scores, sparsity, options))


def keep_mask(
    weight: PrunableWeight, scores: np.ndarray, sparsity: float, options: PruneOptions
) -> np.ndarray:
    """True where a mask method (not SparseGPT) keeps the weight."""
    if options.pattern is not None:
        return n_m_mask(scores, *options.pattern, weight.layout)
    if METHODS[options.method].per_output:
        return per_output_mask(scores, sparsity, weight.layout)
    return layer_mask(scores, sparsity)


def masked(array: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``array`` with zeros (all bits clear) where ``keep`` is False: the bytes of
    ``np.where(keep, array, 0)``, as an integer product of the bits by the mask, which does
    not branch on a random mask (about 10x faster on a float32 weight half pruned)."""
    bits = bits_of(array.dtype)
    if bits is None:
        return np.where(keep, array, np.zeros((), dtype=array.dtype))
    array = np.ascontiguousarray(array)
    return np.multiply(array.view(bits), keep, dtype=bits).view(array.dtype)


def zero_count(array: np.ndarray) -> int:
    """How many entries of ``array`` are zero (either sign; NaN is not zero)."""
    bits = bits_of(array.dtype)
    if bits is None:
        return int(np.count_nonzero(array == 0))
    flat = np.ascontiguousarray(array).reshape(-1).view(bits)
    work = np.empty(min(flat.size, _COUNT_CHUNK), bits)
    floating, zeros = array.dtype.kind == "f", 0
    for start in range(0, flat.size, max(1, work.size)):
        chunk = flat[start : start + work.size]
        zeros += zeros_in_bits(chunk, floating, work[: chunk.size])
    return zeros


def prune_one_weight(
    model: ir.Model,
    weight: PrunableWeight,
    options: PruneOptions,
    target: float,
    stats: LayerStats | None,
    scratch: ScratchTensors | None,
) -> tuple[tuple[int, int], ir.TensorProtocol]:
    """Prune one weight; its zero counts before and after, and its new tensor (written to
    ``scratch`` when given, so only this weight is ever in memory)."""
    value = model.graph.initializers[weight.name]
    array = value.const_value.numpy()
    before = zero_count(array)
    scores = METHODS[options.method].scores(weight, array, stats)
    method = METHODS[options.method]
    if scratch is not None and not method.reconstructs and scratch.can_mask(array.dtype):
        keep = keep_mask(weight, scores, target, options)
        del scores
        tensor, after = scratch.store_masked(array, keep, weight.name)  # no result array
        del array
        release(value)
        return (before, after), tensor
    result = pruned_values(weight, array, scores, target, options, stats)
    result = result.astype(array.dtype, copy=False)
    del array, scores
    release(value)
    after = zero_count(result)
    return (before, after), stored_tensor(result, weight.name, scratch)
