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


def _inverse_hessian_factor(gram: np.ndarray, rows: int, damping: float) -> np.ndarray:
    """Upper factor ``U`` with ``H⁻¹ = UᵀU``; at most three ``in²`` matrices live at once."""
    hessian = gram / max(rows, 1)
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    diagonal = np.diag_indices(len(hessian))
    hessian[diagonal] += damping * np.mean(np.diag(hessian))
    for attempt in range(6):
        try:
            lower = np.linalg.cholesky(hessian)
            break
        except np.linalg.LinAlgError:
            if attempt == 5:
                raise
            hessian[diagonal] += damping * np.mean(np.diag(hessian))
    del hessian
    inverse = np.linalg.inv(lower)
    del lower
    inverse = inverse.T @ inverse  # H⁻¹
    return np.linalg.cholesky(inverse).T


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
    w = weight.astype(np.float64, copy=True)
    dead = np.diag(gram) == 0
    w[:, dead] = 0.0
    upper = _inverse_hessian_factor(gram, rows, damping)
    columns = w.shape[1]
    if pattern is not None:
        block_size = max(pattern[1], block_size - block_size % pattern[1])
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].copy()
        u_block = upper[start:end, start:end]
        errors = np.zeros_like(block)
        diag = np.diag(u_block)
        pruned = None if pattern is not None else _block_mask(block, diag, sparsity, start)
        if pattern is not None:
            pruned = np.zeros(block.shape, dtype=bool)
        for i in range(end - start):
            if pattern is not None and i % pattern[1] == 0:
                n, m = pattern
                saliency = block[:, i : i + m] ** 2 / diag[i : i + m][None, :] ** 2
                lowest = np.argsort(saliency, axis=1, kind="stable")[:, : m - n]
                np.put_along_axis(pruned[:, i : i + m], lowest, True, axis=1)
            column = block[:, i]
            quantized = np.where(pruned[:, i], 0.0, column)
            error = (column - quantized) / u_block[i, i]
            block[:, i:] -= np.outer(error, u_block[i, i:])
            block[:, i] = quantized
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ upper[start:end, end:]
    return w
