"""The linear-time mask and the bit-level masking give the bytes of the sort and np.where."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from onnxprune.masks import layer_mask, per_output_mask
from onnxprune.ops import WeightLayout
from onnxprune.prune_weight import masked, zero_count
from onnxprune.streaming import ScratchTensors

RNG = np.random.default_rng(12)


def _stable_lowest(flat: np.ndarray, count: int) -> np.ndarray:
    dropped = np.zeros(flat.size, dtype=bool)
    dropped[np.argsort(flat, kind="stable")[:count]] = True
    return dropped


@pytest.mark.parametrize(
    ("case", "scores", "sparsity"),
    [
        # float32 magnitudes rounded so that many weights share the value at the cut
        ("ties_at_cut", np.round(np.abs(RNG.standard_normal(20_000)), 2).astype(np.float32), 0.5),
        ("nan_below_cut", np.where(RNG.random(5_000) < 0.2, np.nan, RNG.random(5_000)), 0.5),
        ("cut_on_nan", np.where(RNG.random(5_000) < 0.2, np.nan, RNG.random(5_000)), 0.9),
        ("all_equal", np.ones(1_001, dtype=np.float32), 0.3),
    ],
)
def test_layer_mask_is_the_stable_sort_selection(case, scores, sparsity) -> None:
    count = round(sparsity * scores.size)
    assert np.array_equal(~layer_mask(scores, sparsity), _stable_lowest(scores, count))


def test_per_output_ties_cut_differently_in_each_row() -> None:
    scores = RNG.integers(0, 3, (7, 50)).astype(np.float32)  # rows: [outputs, inputs]
    keep = per_output_mask(scores, 0.41, WeightLayout(out_axis=0, in_axis=1))
    total = round(0.41 * scores.size)
    counts = np.full(7, total // 7)
    counts[: total % 7] += 1
    for row, count in enumerate(counts):
        assert np.array_equal(~keep[row], _stable_lowest(scores[row], count))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, ml_dtypes.bfloat16])
def test_masked_has_the_bytes_of_where(dtype) -> None:
    values = np.array([-1.5, np.nan, -0.0, np.inf, -np.inf, 2.0, -3.0, 1e-3] * 4).astype(dtype)
    keep = RNG.random(values.shape) < 0.5
    result = masked(values.reshape(4, 8), keep.reshape(4, 8))
    expected = np.where(keep, values, np.zeros((), dtype=values.dtype)).reshape(4, 8)
    assert result.dtype == expected.dtype
    assert result.tobytes() == expected.tobytes()  # dropped negatives are +0.0, not -0.0


def test_zero_count_counts_both_signs_and_not_nan() -> None:
    values = np.array([0.0, -0.0, np.nan, 1.0, -2.0], dtype=np.float32)
    assert zero_count(values) == 2
    assert zero_count(values.astype(ml_dtypes.bfloat16)) == 2
    assert zero_count(np.array([0, 3, 0], dtype=np.int8)) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int8])
@pytest.mark.parametrize("size", [7, 300_001])  # under one 1 MiB chunk, several chunks
def test_store_masked_writes_the_bytes_of_store(dtype, size) -> None:
    if np.dtype(dtype).kind == "f":  # signed zeros, NaN and infinities among the values
        values = np.resize(np.array([-1.5, np.nan, -0.0, np.inf, 2.0, 0.0, -3.0]), size)
    else:
        values = RNG.integers(-3, 3, size)
    values = values.astype(dtype)
    keep = RNG.random(size) < 0.5
    scratch = ScratchTensors()
    assert scratch.can_mask(values.dtype)
    tensor, zeros = scratch.store_masked(values, keep, "w")
    expected = masked(values, keep)
    assert tensor.tobytes() == scratch.store(expected, "w2").tobytes() == expected.tobytes()
    assert zeros == zero_count(expected)


def test_store_masked_is_refused_for_bfloat16() -> None:
    assert not ScratchTensors.can_mask(np.dtype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8])
def test_zero_count_over_several_chunks(dtype) -> None:
    values = RNG.integers(-2, 3, 600_001).astype(dtype)
    if np.dtype(dtype).kind == "f":
        values[::7] = -0.0
        values[1::11] = np.nan
    assert zero_count(values) == int(np.count_nonzero(values == 0))
