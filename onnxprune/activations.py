"""How a layer sees its input: turn a captured activation into rows of the layer's input features.

A view maps the activation feeding a prunable weight to a matrix ``X`` of shape
``[rows, in_features]`` whose columns line up with the weight as a matrix ``[out, in_features]``
(see ``weight_matrix``), so that the layer computes ``X @ W_matrix.T``. Linear layers (MatMul,
Gemm) flatten every leading axis into rows; 2-D Conv unfolds patches (im2col) in the weight's
``(channel, kh, kw)`` order. The op table (``onnxprune.ops``) says which view a node uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnxprune.ops import WeightLayout

__all__ = ["ConvView", "LinearView", "from_weight_matrix", "weight_matrix"]


@dataclass(frozen=True)
class LinearView:
    """Rows are every position of the leading axes; features are the last axis."""

    features: int

    def rows(self, activation: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        if keep is not None and activation.ndim == keep.ndim + 1:
            if activation.shape[:-1] == keep.shape:
                return activation[keep.astype(bool)]
        return activation.reshape(-1, self.features)


@dataclass(frozen=True)
class ConvView:
    """im2col of a 2-D convolution with group 1: one row per output pixel."""

    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]

    def rows(self, activation: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        top, left, bottom, right = self.pads
        padded = np.pad(activation, ((0, 0), (0, 0), (top, bottom), (left, right)))
        (kh, kw), (dh, dw), (sh, sw) = self.kernel, self.dilations, self.strides
        span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
        windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [B, C, Ho, Wo, kh, kw]
        channels = activation.shape[1]
        return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, channels * kh * kw)


def weight_matrix(array: np.ndarray, layout: WeightLayout) -> np.ndarray:
    """The weight as ``[out, in_features]``: output axis first, then the input axes flattened."""
    moved = np.moveaxis(array, layout.out_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def from_weight_matrix(
    matrix: np.ndarray, shape: tuple[int, ...], layout: WeightLayout
) -> np.ndarray:
    """Inverse of ``weight_matrix`` for a weight of ``shape``."""
    moved_shape = np.moveaxis(np.empty(shape, dtype=bool), layout.out_axis, 0).shape
    return np.moveaxis(matrix.reshape(moved_shape), 0, layout.out_axis)
