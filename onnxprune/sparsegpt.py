"""SparseGPT-style layer reconstruction (Frantar & Alistarh, 2023), in numpy float64.

``sparsegpt_prune`` chooses which weights of a ``[out, in]`` matrix to remove and updates the
remaining ones so that the layer's output on the calibration inputs changes as little as
possible: columns are processed left to right in blocks; within a block, the mask is chosen by
the saliency ``w² / [H⁻¹]ⱼⱼ²`` within each output row (``round(s · out · block)`` weights per
block, spread evenly over rows, which measured better than one threshold per block on
MiniLM; or N of every M columns per row), and each removed weight's error is spread over the
columns not yet processed through the upper Cholesky factor of the damped inverse Hessian
``H = XᵀX / n + λ·mean(diag)·I``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sparsegpt_prune"]


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """Inverse of a lower-triangular matrix by halves, so nearly all work is matrix products
    (about ``n³/3`` multiply-adds instead of a general inverse's ``n³``)."""
    size = len(lower)
    if size <= 128:
        return np.tril(np.linalg.inv(lower))
    half = size // 2
    top, bottom = _lower_inverse(lower[:half, :half]), _lower_inverse(lower[half:, half:])
    inverse = np.zeros_like(lower)
    inverse[:half, :half], inverse[half:, half:] = top, bottom
    inverse[half:, :half] = -(bottom @ (lower[half:, :half] @ top))
    return inverse


def _inverse_hessian_factor(gram: np.ndarray, rows: int, damping: float) -> np.ndarray:
    """Upper factor ``U`` with ``H⁻¹ = UᵀU``, without forming ``H⁻¹``.

    With ``J`` the order-reversing permutation and ``JHJ = LLᵀ`` (Cholesky), ``U = J L⁻¹ J``:
    upper triangular with a positive diagonal and ``UᵀU = J L⁻ᵀ L⁻¹ J = H⁻¹``. One Cholesky and
    one triangular inverse, instead of Cholesky, general inverse, product and a second Cholesky.
    """
    hessian = gram / max(rows, 1)
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    diagonal = np.diag_indices(len(hessian))
    hessian[diagonal] += damping * np.mean(np.diag(hessian))
    for attempt in range(6):
        try:
            lower = np.linalg.cholesky(hessian[::-1, ::-1])
            break
        except np.linalg.LinAlgError:
            if attempt == 5:
                raise
            hessian[diagonal] += damping * np.mean(np.diag(hessian))
    del hessian
    return np.ascontiguousarray(_lower_inverse(lower)[::-1, ::-1])


def _block_mask(block: np.ndarray, diag: np.ndarray, sparsity: float, offset: int) -> np.ndarray:
    """Prune the lowest-saliency weights of each row of the block (each output equally).

    ``offset`` rotates which rows take the remainder when ``sparsity * width`` is fractional,
    so the layer total stays at ``round(sparsity * size)`` within a few weights.
    """
    saliency = block**2 / diag[None, :] ** 2
    rows, width = block.shape
    total = round(sparsity * block.size)
    counts = np.full(rows, total // rows)
    counts[(np.arange(total % rows) + offset) % rows] += 1
    order = np.argsort(saliency, axis=1, kind="stable")
    pruned = np.arange(width)[None, :] < counts[:, None]
    mask = np.empty_like(pruned)
    np.put_along_axis(mask, order, pruned, axis=1)
    return mask


def _pattern_columns(block: np.ndarray, diag: np.ndarray, pruned: np.ndarray, i: int, pattern):
    """Mark the N lowest-saliency of the M columns from ``i`` (rows of ``block``) as pruned."""
    n, m = pattern
    saliency = block[i : i + m].T ** 2 / diag[i : i + m][None, :] ** 2
    lowest = np.argsort(saliency, axis=1, kind="stable")[:, : m - n]
    np.put_along_axis(pruned[:, i : i + m], lowest, True, axis=1)


def _prune_block(block: np.ndarray, u_block, pruned, pattern, step: int) -> np.ndarray:
    """Prune ``block`` (``[width, out]``: one row per input column) in place, column by column,
    spreading each error over the later columns; returns the errors. Updates reach the rest of
    the block ``step`` columns at a time (one matrix product), the next ``step`` columns at once.
    """
    errors = np.zeros_like(block)
    width = len(block)
    diag = np.diag(u_block)
    for first in range(0, width, step):
        last = min(first + step, width)
        for i in range(first, last):
            if pattern is not None and i % pattern[1] == 0:
                _pattern_columns(block, diag, pruned, i, pattern)
            column = block[i]
            quantized = np.where(pruned[:, i], 0.0, column)
            errors[i] = (column - quantized) / u_block[i, i]
            block[i + 1 : last] -= u_block[i, i + 1 : last, None] * errors[i][None, :]
            block[i] = quantized
        block[last:] -= u_block[first:last, last:].T @ errors[first:last]
    return errors


def sparsegpt_prune(
    weight: np.ndarray,
    gram: np.ndarray,
    rows: int,
    sparsity: float,
    pattern: tuple[int, int] | None = None,
    block_size: int = 128,
    damping: float = 0.01,
) -> np.ndarray:
    """The pruned, updated ``[out, in]`` weight (float64) for inputs with Gram ``gram``."""
    w = np.array(weight.T, dtype=np.float64)  # [in, out]: each input column a contiguous row
    dead = np.diag(gram) == 0
    w[dead] = 0.0
    upper = _inverse_hessian_factor(gram, rows, damping)
    columns = len(w)
    step = 16
    if pattern is not None:
        block_size = max(pattern[1], block_size - block_size % pattern[1])
        step = pattern[1] * max(1, step // pattern[1])
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[start:end]
        u_block = upper[start:end, start:end]
        if pattern is None:
            pruned = _block_mask(block.T, np.diag(u_block), sparsity, start)
        else:
            pruned = np.zeros(block.T.shape, dtype=bool)
        errors = _prune_block(block, u_block, pruned, pattern, step)
        w[end:] -= upper[start:end, end:].T @ errors
    return np.ascontiguousarray(w.T)
