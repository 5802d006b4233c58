"""Capture the inputs of chosen layers on calibration data, as rows of input features.

The model gets the wanted tensors as extra outputs and onnxruntime runs it in batches. Each
tensor becomes a 2-D array ``[rows, features]`` (features on the last axis, the layout of a
``MatMul``/``Gemm`` input); rows at padded positions are dropped when the data has an
``attention_mask`` whose shape matches the tensor's leading axes, and at most ``max_rows`` rows
are kept (evenly spaced, so the result does not depend on the batch size).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.data import Dataset
from onnxprune.errors import InputError, first_line

__all__ = ["capture_rows"]

logger = logging.getLogger(__name__)
MASK_NAMES = ("attention_mask",)
BATCH = 16


def _session(model: onnx.ModelProto, names: Iterable[str]) -> ort.InferenceSession:
    capture = onnx.ModelProto()
    capture.CopyFrom(model)
    present = {o.name for o in capture.graph.output}
    for name in sorted(set(names) - present):
        capture.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    return ort.InferenceSession(
        capture.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _rows(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if array.ndim >= 2 and mask is not None and array.shape[: mask.ndim] == mask.shape:
        return array[mask.astype(bool)].reshape(-1, array.shape[-1])
    return array.reshape(-1, array.shape[-1]) if array.ndim >= 2 else array.reshape(1, -1)


def _thin(rows: np.ndarray, max_rows: int) -> np.ndarray:
    if len(rows) <= max_rows:
        return rows
    return rows[np.linspace(0, len(rows) - 1, max_rows).round().astype(int)]


def capture_rows(
    model: onnx.ModelProto, names: Iterable[str], data: Dataset, max_rows: int = 4096
) -> dict[str, np.ndarray]:
    """Rows of input features of each tensor in ``names`` over ``data`` (float32)."""
    names = sorted(set(names))
    if not names:
        return {}
    session = _session(model, names)
    mask_name = next((n for n in MASK_NAMES if n in data.inputs), None)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, data.samples, BATCH):
        feed = data.slice(start, start + BATCH)
        try:
            results = session.run(names, feed)
        except Exception as error:  # onnxruntime raises its own exception types
            message = first_line(error)
            raise InputError(f"calibration run failed on samples {start}+: {message}") from error
        mask = feed.get(mask_name) if mask_name else None
        for name, result in zip(names, results, strict=True):
            parts[name].append(_rows(np.asarray(result, dtype=np.float32), mask))
    return {name: _thin(np.concatenate(chunks), max_rows) for name, chunks in parts.items()}
