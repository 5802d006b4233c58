"""The calibration engine: run a model over calibration data and collect layer-input statistics.

For every prunable weight whose op has an activation view (``onnxprune.ops``), the engine
exposes the tensor feeding that layer as an extra model output, runs onnxruntime over the data
in batches, turns each captured activation into rows of the layer's input features
(``onnxprune.activations``) and accumulates, streaming and in float64: the row count, the
per-feature sum and sum of squares, and optionally the Gram matrix ``XᵀX`` (each batch's product
in float32, the running sum in float64). Memory stays bounded
by one batch of activations plus ``in_features²`` per distinct layer input of the current group:
with Gram matrices, layers are taken a group at a time within ``square_budget_bytes`` (one pass
over the data per group, ``statistics_in_groups``); layers that share an input (Q, K and V
projections) share one set of statistics.

Rows at padded positions are excluded when a mask input is given (``mask_input``) or detected
(an input named ``attention_mask``): an activation whose leading axes equal the mask's shape
keeps only the rows where the mask is non-zero.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.activations import ConvView, LinearView
from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.ops import activation_view
from onnxprune.runtime import create_session, fixed_batch, run_feed
from onnxprune.staged import Slice, initializer_bytes, plan_slices
from onnxprune.weights import PrunableWeight

__all__ = [
    "CalibrationOptions",
    "LayerStats",
    "capture_model",
    "collect_statistics",
    "detect_mask_input",
    "layer_views",
    "statistics_in_groups",
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
    square_budget_bytes: int = 1 << 30  # Gram/cross matrices held at once (one pass each)
    staged_above_bytes: int = 512 << 20  # bigger models are run a slice at a time
    slice_bytes: int = 256 << 20  # initializer bytes per slice (onnxprune.staged)


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
        if self.gram is not None:  # products in float32 (3x faster), summed in float64
            single = rows.astype(np.float32)
            self.gram += single.T @ single
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


def _slots(weights: list[PrunableWeight], views: dict) -> tuple[dict[tuple, int], dict[str, tuple]]:
    """Distinct layer inputs (key -> in_features) in weight order, and each weight's key."""
    features_of: dict[tuple, int] = {}
    key_of = {}
    for weight in weights:
        if weight.name in views:
            key = views[weight.name]
            features_of.setdefault(key, int(np.prod(weight_matrix_shape(weight)[1:])))
            key_of[weight.name] = key
    return features_of, key_of


def key_groups(features_of: dict[tuple, int], options: CalibrationOptions, crossed: bool):
    """Consecutive layer inputs whose square matrices (Gram, cross products) fit the budget
    together; one group when no square matrix is accumulated."""
    if not options.gram and not crossed:
        return [list(features_of)]
    per_square = (int(options.gram) + 2 * int(crossed)) * 8
    groups: list[list[tuple]] = []
    used = options.square_budget_bytes
    for key, features in features_of.items():
        cost = per_square * features * features
        if used + cost > options.square_budget_bytes and (not groups or groups[-1]):
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += cost
    return groups


def _accumulate(
    sessions: tuple, batch: int, dataset: Dataset, stats: dict, mask_name: str | None, bar
) -> None:
    """One pass over ``dataset`` adding every captured input of ``stats`` (key -> LayerStats);
    ``sessions`` is the capture session and the reference's (or None)."""
    session, reference_session = sessions
    fetched = sorted({tensor for tensor, _ in stats} - set(dataset.inputs))
    for start in range(0, dataset.samples, batch):
        feed = dataset.slice(start, start + batch)
        outputs, references = dict(feed), None
        if fetched:  # onnxruntime returns every output for an empty list
            outputs.update(zip(fetched, run_feed(session, fetched, feed, start), strict=True))
            if reference_session is not None:
                reference_outputs = run_feed(reference_session, fetched, feed, start)
                references = {**feed, **dict(zip(fetched, reference_outputs, strict=True))}
        elif reference_session is not None:
            references = feed
        add_batch(stats, outputs, references, feed.get(mask_name) if mask_name else None)
        if bar is not None:
            bar.update()


def add_batch(stats: dict, outputs: dict, references: dict | None, keep: np.ndarray | None) -> None:
    """Add one batch of captured tensors (name -> array) to ``stats`` (key -> LayerStats);
    ``keep`` is the batch's mask of real positions, if any."""
    for (tensor, view), layer in stats.items():
        reference_rows = view.rows(references[tensor], keep) if references is not None else None
        with np.errstate(over="ignore", invalid="ignore"):  # refused after the pass
            layer.add(view.rows(outputs[tensor], keep), reference_rows)


def refuse_non_finite(stats: dict[tuple, LayerStats]) -> None:
    """Data-aware scores and reconstructions from NaN/inf activations are meaningless (and
    SparseGPT's Hessian cannot be inverted): refuse, naming the first such layer input."""
    for (tensor, _), layer in stats.items():
        squares = layer.sum_sq if layer.gram is None else layer.gram
        if not np.isfinite(squares).all():
            raise InputError(
                f"calibration activations of '{tensor}' are not finite (NaN or beyond float "
                "range): check the calibration data's values"
            )


def _slices(
    model: ir.Model, options: CalibrationOptions, reference: ir.Model | None, dataset: Dataset
) -> list[Slice] | None:
    """The slices to calibrate a big model in (``onnxprune.staged``), or None for one session."""
    if reference is not None or dataset.samples == 0:
        return None
    if initializer_bytes(model) <= options.staged_above_bytes:
        return None
    slices = plan_slices(model, options.slice_bytes)
    if slices is None:
        logger.info("the graph has subgraphs or initialized inputs: calibrating it whole")
    return slices


def statistics_in_groups(
    model: ir.Model,
    weights: list[PrunableWeight],
    dataset: Dataset,
    options: CalibrationOptions | None = None,
    reference: ir.Model | None = None,
) -> Iterator[dict[str, LayerStats]]:
    """Statistics per weight name, a group of layers at a time (see ``collect_statistics``).

    Gram matrices (and cross products) are held for one group of layers at a time, within
    ``options.square_budget_bytes``; each group is one more pass over the data through the
    same capture session, so each layer's statistics are exactly those of a single pass.
    Weights the engine cannot serve are left out (``layer_views`` says why).
    """
    options = options or CalibrationOptions()
    views, _ = layer_views(model, weights)
    features_of, key_of = _slots(weights, views)
    groups = key_groups(features_of, options, reference is not None)
    mask_name = detect_mask_input(dataset, options.mask_input)
    slices = _slices(model, options, reference, dataset)
    if slices is not None:
        from onnxprune.staged_calibration import staged_groups  # it builds on this module

        yield from staged_groups(model, slices, dataset, options, (features_of, key_of), mask_name)
        return
    tensors = {tensor for tensor, _ in features_of}
    with tempfile.TemporaryDirectory(prefix="onnxprune-calibration-") as folder:
        session = create_session(capture_model(model, tensors, Path(folder)), options.threads)
        reference_session = None
        if reference is not None:
            (Path(folder) / "reference").mkdir()
            captured = capture_model(reference, tensors, Path(folder) / "reference")
            reference_session = create_session(captured, options.threads)
        batch = fixed_batch(session) or options.batch_size
        bar = _progress(len(range(0, dataset.samples, batch)) * len(groups), options.progress)
        for group in groups:
            stats = {key: LayerStats(features_of[key], options.gram) for key in group}
            _accumulate((session, reference_session), batch, dataset, stats, mask_name, bar)
            refuse_non_finite(stats)
            logger.info("calibrated %d layer inputs on %d samples", len(stats), dataset.samples)
            yield {name: stats[key] for name, key in key_of.items() if key in stats}
        if bar is not None:
            bar.close()


def collect_statistics(
    model: ir.Model,
    weights: list[PrunableWeight],
    dataset: Dataset,
    options: CalibrationOptions | None = None,
    reference: ir.Model | None = None,
) -> tuple[dict[str, LayerStats], dict[str, str]]:
    """Statistics per weight name, and the weights the engine cannot serve with reasons.

    With ``reference`` (a model with the same tensor names, such as the unpruned original), the
    same activations are captured from it too and cross products are accumulated. Every
    layer's statistics are returned at once: for many large layers with Gram matrices,
    ``statistics_in_groups`` holds less.
    """
    _, refused = layer_views(model, weights)
    stats: dict[str, LayerStats] = {}
    for group in statistics_in_groups(model, weights, dataset, options, reference):
        stats.update(group)
    return stats, refused


def weight_matrix_shape(weight: PrunableWeight) -> tuple[int, int]:
    """Shape of the weight as ``[out, in_features]``."""
    out = weight.shape[weight.layout.out_axis]
    return out, weight.size // out
