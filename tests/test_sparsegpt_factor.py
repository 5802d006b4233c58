"""SparseGPT's fast paths (flipped Cholesky factor, blocked updates) compute the textbook result."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.sparsegpt import (
    _block_mask,
    _inverse_hessian_factor,
    _lower_inverse,
    sparsegpt_prune,
)


def _gram(inputs: int, rows: int = 96, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, inputs))
    x[:, 3] = 0.0  # a dead input
    return x.T @ x


def _textbook(weight, gram, rows, sparsity, pattern, block_size=128, damping=0.01):
    """SparseGPT as written in the paper: H⁻¹ formed, one column update at a time."""
    hessian = gram / rows
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    hessian[np.diag_indices(len(hessian))] += damping * np.mean(np.diag(hessian))
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
    w = weight.astype(np.float64)
    w[:, dead] = 0.0
    if pattern is not None:
        block_size = max(pattern[1], block_size - block_size % pattern[1])
    for start in range(0, w.shape[1], block_size):
        end = min(start + block_size, w.shape[1])
        diag = np.diag(upper)[start:end]
        chosen = _block_mask(w[:, start:end], diag, sparsity, start) if pattern is None else None
        for i in range(start, end):
            if pattern is not None and (i - start) % pattern[1] == 0:
                n, m = pattern
                saliency = w[:, i : i + m] ** 2 / np.diag(upper)[i : i + m][None, :] ** 2
                lowest = np.argsort(saliency, axis=1, kind="stable")[:, : m - n]
                mask = np.zeros((len(w), m), dtype=bool)
                np.put_along_axis(mask, lowest, True, axis=1)
                keep = ~mask
            column = w[:, i].copy()
            if pattern is not None:
                quantized = np.where(keep[:, (i - start) % pattern[1]], column, 0.0)
            else:
                quantized = np.where(chosen[:, i - start], 0.0, column)
            error = (column - quantized) / upper[i, i]
            w[:, i:] -= np.outer(error, upper[i, i:])
            w[:, i] = quantized
    return w


def test_lower_inverse_by_halves_is_the_inverse() -> None:
    lower = np.linalg.cholesky(_gram(300, rows=400) + np.eye(300))
    inverse = _lower_inverse(lower)
    assert np.array_equal(inverse, np.tril(inverse))
    np.testing.assert_allclose(inverse @ lower, np.eye(300), atol=1e-10)


def test_factor_is_the_upper_cholesky_factor_of_the_inverse_hessian() -> None:
    gram = _gram(260)
    upper = _inverse_hessian_factor(gram.copy(), 96, 0.01)
    hessian = gram / 96
    hessian[3, 3] = 1.0
    hessian[np.diag_indices(260)] += 0.01 * np.mean(np.diag(hessian))
    assert np.array_equal(upper, np.triu(upper)) and (np.diag(upper) > 0).all()
    expected = np.linalg.cholesky(np.linalg.inv(hessian)).T
    np.testing.assert_allclose(upper, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("pattern", [None, (2, 4), (3, 5)], ids=["unstructured", "2of4", "3of5"])
def test_blocked_updates_give_the_textbook_weights(pattern) -> None:
    gram = _gram(200)
    weight = np.random.default_rng(1).standard_normal((24, 200)).astype(np.float32)
    result = sparsegpt_prune(weight, gram, 96, 0.5, pattern, block_size=64)
    expected = _textbook(weight, gram.copy(), 96, 0.5, pattern, block_size=64)
    assert np.array_equal(result == 0, expected == 0)
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-9)
    expected_zeros = 0.5 if pattern is None else 1 - pattern[0] / pattern[1]
    assert abs((result == 0).mean() - expected_zeros) < 0.02
