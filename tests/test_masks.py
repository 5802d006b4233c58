"""Mask selection: exact counts, one global threshold, N:M runs along the input axis."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.masks import global_masks, layer_mask, n_m_mask, n_m_refusal, per_output_mask
from onnxprune.ops import WeightLayout

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_layer_mask_removes_exactly_the_lowest(sparsity: float) -> None:
    scores = RNG.random((7, 11))
    keep = layer_mask(scores, sparsity)
    removed = round(sparsity * scores.size)
    assert keep.shape == scores.shape
    assert np.count_nonzero(~keep) == removed
    if 0 < removed < scores.size:
        assert scores[~keep].max() <= scores[keep].min()


def test_layer_mask_breaks_ties_by_position() -> None:
    keep = layer_mask(np.zeros(6), 0.5)
    assert keep.tolist() == [False, False, False, True, True, True]


def test_global_masks_use_one_threshold() -> None:
    scores = {"a": RNG.random((10, 10)), "b": 3 * RNG.random((5, 4))}
    masks = global_masks(scores, 0.6)
    kept = np.concatenate([scores[n][masks[n]] for n in scores])
    dropped = np.concatenate([scores[n][~masks[n]] for n in scores])
    assert dropped.size == round(0.6 * 120)
    assert dropped.max() <= kept.min()
    # Layers with larger scores keep more: the global scope does not equalize sparsity.
    assert np.mean(~masks["a"]) > np.mean(~masks["b"])


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((8, 12), WeightLayout(out_axis=0, in_axis=1)),  # Gemm transB=1
        ((12, 8), WeightLayout(out_axis=1, in_axis=0)),  # MatMul B
        ((6, 8, 3, 3), WeightLayout(out_axis=0, in_axis=1)),  # Conv
    ],
    ids=["gemm_transB1", "matmul", "conv"],
)
def test_two_of_four_keeps_two_in_every_run_of_input_channels(shape, layout) -> None:
    scores = RNG.random(shape)
    keep = n_m_mask(scores, 2, 4, layout)
    runs = np.moveaxis(keep, layout.in_axis, -1).reshape(-1, 4)
    assert (runs.sum(axis=1) == 2).all()
    score_runs = np.moveaxis(scores, layout.in_axis, -1).reshape(-1, 4)
    assert (score_runs[~runs].reshape(-1, 2).max(1) <= score_runs[runs].reshape(-1, 2).min(1)).all()


def test_n_m_refuses_channels_not_divisible() -> None:
    assert n_m_refusal((10, 6), WeightLayout(0, 1), 4) == "6 input channels are not a multiple of 4"
    assert n_m_refusal((10, 8), WeightLayout(0, 1), 4) is None


def test_per_output_mask_prunes_each_output_equally() -> None:
    scores = RNG.random((12, 5))  # MatMul B: [in, out]
    keep = per_output_mask(scores, 0.5, WeightLayout(out_axis=1, in_axis=0))
    assert (np.count_nonzero(~keep, axis=0) == 6).all()


def _sorted_reference(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The selection by stable argsort that the linear-time masks must reproduce exactly."""
    order = np.argsort(rows, axis=1, kind="stable")
    dropped = np.zeros(rows.shape, dtype=bool)
    for row, count in enumerate(counts):
        dropped[row, order[row, :count]] = True
    return dropped


@pytest.mark.parametrize("values", ["distinct", "ties", "signed_zeros", "nan"])
@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.5, 0.99])
def test_masks_match_a_stable_sort(values: str, sparsity: float) -> None:
    scores = {
        "distinct": RNG.random((9, 40)),
        "ties": RNG.integers(0, 4, (9, 40)).astype(np.float32),
        "signed_zeros": np.where(RNG.random((9, 40)) < 0.5, -0.0, 0.0),
        "nan": np.where(RNG.random((9, 40)) < 0.1, np.nan, RNG.random((9, 40))),
    }[values]
    removed = round(sparsity * scores.size)
    flat = _sorted_reference(scores.reshape(1, -1), np.array([removed])).reshape(scores.shape)
    assert np.array_equal(~layer_mask(scores, sparsity), flat)
    counts = np.full(9, removed // 9)
    counts[: removed % 9] += 1
    expected = _sorted_reference(scores, counts)
    assert np.array_equal(~per_output_mask(scores, sparsity, WeightLayout(0, 1)), expected)
