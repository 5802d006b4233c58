"""The calibration engine: run a model over calibration data and collect layer-input statistics.

For every prunable weight whose op has an activation view (``onnxprune.ops``), the engine
exposes the tensor feeding that layer as an extra model output, runs onnxruntime over the data
in batches, turns each captured activation into rows of the layer's input features
(``onnxprune.activations``) and accumulates, streaming and in float64: the row count, the
per-feature sum and sum of squares, and optionally the Gram matrix ``XᵀX``. Memory stays bounded
by one batch of activations plus ``in_features²`` per distinct layer input; layers that share an
input (Q, K and V projections) share one set of statistics.

Rows at padded positions are excluded when a mask input is given (``mask_input``) or detected
(an input named ``attention_mask``): an activation whose leading axes equal the mask's shape
keeps only the rows where the mask is non-zero.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.activations import ConvView, LinearView
from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.ops import activation_view
from onnxprune.runtime import create_session, fixed_batch, run_feed
from onnxprune.weights import PrunableWeight

__all__ = [
    "CalibrationOptions",
    "LayerStats",
    "capture_model",
    "collect_statistics",
    "detect_mask_input",
    "layer_views",
]

logger = logging.getLogger(__name__)
MASK_NAMES = ("attention_mask",)


@dataclass(frozen=True)
class CalibrationOptions:
    """Batching, masking and what to accumulate."""

    batch_size: int = 16
    mask_input: str | None = None
    gram: bool = False
    threads: int = 0
    progress: bool | None = None  # None: a progress bar only on a terminal


@dataclass
class LayerStats:
    """Statistics of one layer input, over ``rows`` rows of ``in_features`` columns."""

    features: int
    gram_enabled: bool
    rows: int = 0
    sum: np.ndarray = field(init=False)
    sum_sq: np.ndarray = field(init=False)
    gram: np.ndarray | None = field(init=False)

    cross: np.ndarray | None = field(init=False, default=None)
    reference_sum: np.ndarray | None = field(init=False, default=None)
    low: float = field(init=False, default=np.inf)
    high: float = field(init=False, default=-np.inf)

    def __post_init__(self) -> None:
        self.sum = np.zeros(self.features)
        self.sum_sq = np.zeros(self.features)
        self.gram = np.zeros((self.features, self.features)) if self.gram_enabled else None

    def add(self, rows: np.ndarray, reference: np.ndarray | None = None) -> None:
        """Accumulate ``rows``; with ``reference`` (the same rows in a reference model) also
        the cross products ``XᵀX_ref`` and ``ΣX_ref`` used to repair towards that model."""
        rows = rows.astype(np.float64, copy=False)
        if rows.size:
            self.low, self.high = min(self.low, rows.min()), max(self.high, rows.max())
        self.rows += len(rows)
        self.sum += rows.sum(axis=0)
        self.sum_sq += np.einsum("ij,ij->j", rows, rows)
        if self.gram is not None:
            self.gram += rows.T @ rows
        if reference is not None:
            reference = reference.astype(np.float64, copy=False)
            if self.cross is None:
                self.cross = np.zeros((self.features, self.features))
                self.reference_sum = np.zeros(self.features)
            self.cross += rows.T @ reference
            self.reference_sum += reference.sum(axis=0)

    @property
    def norms(self) -> np.ndarray:
        """‖X_j‖₂ per input feature (the Wanda scale)."""
        return np.sqrt(self.sum_sq)

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.rows, 1)


def detect_mask_input(dataset: Dataset, requested: str | None) -> str | None:
    """The input whose non-zero entries mark real (unpadded) positions, if any."""
    if requested is not None:
        if requested not in dataset.inputs:
            raise InputError(f"--calibration-mask '{requested}' is not a model input")
        return requested
    return next((name for name in MASK_NAMES if name in dataset.inputs), None)


def layer_views(
    model: ir.Model, weights: list[PrunableWeight]
) -> tuple[dict[str, tuple[str, LinearView | ConvView]], dict[str, str]]:
    """weight -> (activation tensor, view) for supported layers; weight -> reason otherwise."""
    views, refused = {}, {}
    for weight in weights:
        node = model.graph.initializers[weight.name].uses()[0].node
        view = activation_view(node, weight.shape)
        activation = node.inputs[0]
        if isinstance(view, str):
            refused[weight.name] = view
        elif node.graph is not model.graph:
            refused[weight.name] = (
                "used inside a subgraph (If/Loop/Scan branch): its inputs cannot be captured"
            )
        elif activation is None or activation.name is None:
            refused[weight.name] = "layer has no activation input"
        else:
            views[weight.name] = (activation.name, view)
    return views, refused


def capture_model(model: ir.Model, names: set[str], folder: Path) -> Path:
    """Save a copy of ``model`` whose outputs also include the tensors in ``names``."""
    capture = model.clone()
    present = {v.name for v in capture.graph.outputs} | {v.name for v in capture.graph.inputs}
    values = {v.name: v for node in capture.graph for v in node.outputs}
    for name in sorted(names - present):
        value = values[name]
        if value.dtype is None:
            value.dtype = ir.DataType.FLOAT
        capture.graph.outputs.append(value)
    path = folder / "capture.onnx"
    ir.save(capture, path, external_data="capture.onnx.data")
    return path


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty() and total > 4
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="calibration", unit="batch", file=sys.stderr)


def collect_statistics(
    model: ir.Model,
    weights: list[PrunableWeight],
    dataset: Dataset,
    options: CalibrationOptions | None = None,
    reference: ir.Model | None = None,
) -> tuple[dict[str, LayerStats], dict[str, str]]:
    """Statistics per weight name, and the weights the engine cannot serve with reasons.

    With ``reference`` (a model with the same tensor names, such as the unpruned original), the
    same activations are captured from it too and cross products are accumulated.
    """
    options = options or CalibrationOptions()
    views, refused = layer_views(model, weights)
    mask_name = detect_mask_input(dataset, options.mask_input)
    by_key: dict[tuple, LayerStats] = {}
    key_of = {}
    for weight in weights:
        if weight.name in views:
            tensor, view = views[weight.name]
            features = int(np.prod(weight_matrix_shape(weight)[1:]))
            key = (tensor, view)
            by_key.setdefault(key, LayerStats(features, options.gram))
            key_of[weight.name] = key
    tensors = {tensor for tensor, _ in by_key}
    fetched = sorted(tensors - set(dataset.inputs))
    with tempfile.TemporaryDirectory(prefix="onnxprune-calibration-") as folder:
        session = create_session(capture_model(model, tensors, Path(folder)), options.threads)
        reference_session = None
        if reference is not None:
            (Path(folder) / "reference").mkdir()
            captured = capture_model(reference, tensors, Path(folder) / "reference")
            reference_session = create_session(captured, options.threads)
        batch = fixed_batch(session) or options.batch_size
        starts = range(0, dataset.samples, batch)
        bar = _progress(len(starts), options.progress)
        for start in starts:
            feed = dataset.slice(start, start + batch)
            outputs = dict(feed)
            if fetched:  # onnxruntime returns every output for an empty list
                outputs.update(zip(fetched, run_feed(session, fetched, feed, start), strict=True))
            keep = feed.get(mask_name) if mask_name else None
            references = dict(feed)
            if reference_session is not None and fetched:
                reference_outputs = run_feed(reference_session, fetched, feed, start)
                references.update(zip(fetched, reference_outputs, strict=True))
            for (tensor, view), stats in by_key.items():
                reference_rows = (
                    view.rows(references[tensor], keep) if reference_session is not None else None
                )
                stats.add(view.rows(outputs[tensor], keep), reference_rows)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    logger.info("calibrated %d layer inputs on %d samples", len(by_key), dataset.samples)
    return {name: by_key[key] for name, key in key_of.items()}, refused


def weight_matrix_shape(weight: PrunableWeight) -> tuple[int, int]:
    """Shape of the weight as ``[out, in_features]``."""
    out = weight.shape[weight.layout.out_axis]
    return out, weight.size // out
