"""Calibration in stages: layer-input statistics of a big model, one slice of it at a time.

``onnxprune.calibration.statistics_in_groups`` comes here for models with more initializer
bytes than ``CalibrationOptions.staged_above_bytes``. The model is cut into slices
(``onnxprune.staged``); each slice is run over every calibration batch in its own onnxruntime
session, fed the values earlier slices produced for that same batch, and the statistics of the
layers in it are accumulated before the session is dropped. The batches keep the boundaries of
the unsliced run, so no sample axis is assumed for intermediate values. What is held: one
slice's weights in onnxruntime, the values crossing the current cut for every batch, and the
statistics (with Gram matrices, a budget's worth at a time, one pass over the slice each).
Slices after the last layer asked for are not run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx_ir as ir

from onnxprune.calibration import (
    CalibrationOptions,
    LayerStats,
    add_batch,
    key_groups,
    refuse_non_finite,
)
from onnxprune.data import Dataset
from onnxprune.runtime import pinned_batch, run_feed
from onnxprune.staged import Slice, feed_of, forget, slice_session

__all__ = ["staged_groups"]

logger = logging.getLogger(__name__)


def _home_slices(model: ir.Model, slices: list[Slice], keys: dict) -> dict[tuple, int]:
    """key (tensor, view) -> the first slice with a node reading that tensor (it is there as
    an input of the slice or a value produced in it)."""
    nodes = list(model.graph)
    home: dict[tuple, int] = {}
    for number, piece in reversed(list(enumerate(slices))):
        read = {v.name for node in nodes[piece.start : piece.stop] for v in node.inputs if v}
        home.update((key, number) for key in keys if key[0] in read)
    return home


def _run_pass(session, piece: Slice, fetch: list[str], live: list[dict], stats: dict, masks):
    """One pass of a slice over every batch; the first pass of a slice also stores the values
    later slices read (``fetch`` then starts with them)."""
    for feed, keep in zip(live, masks, strict=True):
        slice_feed = feed_of(feed, piece)
        outputs = dict(slice_feed)
        if fetch:
            outputs.update(zip(fetch, run_feed(session, fetch, slice_feed), strict=True))
        feed.update((name, outputs[name]) for name in piece.outputs if name in fetch)
        add_batch(stats, outputs, None, keep)


def staged_groups(
    model: ir.Model,
    slices: list[Slice],
    dataset: Dataset,
    options: CalibrationOptions,
    slots: tuple[dict, dict],
    mask_name: str | None,
):
    """Statistics per weight name, a slice (and within it a Gram budget) at a time; ``slots``
    is (key -> in_features, weight name -> key) as in ``statistics_in_groups``."""
    features_of, key_of = slots
    home = _home_slices(model, slices, features_of)
    first_dims = (v.shape[0] for v in model.graph.inputs if v.shape is not None and len(v.shape))
    batch = pinned_batch(first_dims) or options.batch_size
    live = [dataset.slice(s, s + batch) for s in range(0, dataset.samples, batch)]
    masks = [feed.get(mask_name) if mask_name else None for feed in live]
    needed = slices[: max(home.values(), default=-1) + 1]
    logger.info("calibrating in %d of %d slices", len(needed), len(slices))
    with tempfile.TemporaryDirectory(prefix="onnxprune-staged-") as folder:
        for number, piece in enumerate(needed):
            keys = {k: f for k, f in features_of.items() if home.get(k) == number}
            captured = sorted({tensor for tensor, _ in keys} - set(piece.inputs))
            dtypes = {name: live[0][name].dtype for name in piece.inputs}
            session = slice_session(model, piece, dtypes, captured, Path(folder), options.threads)
            for index, group in enumerate(key_groups(keys, options, False) or [[]]):
                stats = {key: LayerStats(features_of[key], options.gram) for key in group}
                fetch = [*piece.outputs] if index == 0 else []
                fetch += [t for t in sorted({t for t, _ in group}) if t in captured]
                _run_pass(session, piece, list(dict.fromkeys(fetch)), live, stats, masks)
                refuse_non_finite(stats)
                if stats:
                    yield {name: stats[key] for name, key in key_of.items() if key in stats}
            del session
            forget(live, slices, number)
