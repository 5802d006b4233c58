"""Consumer statistics for structured pruning, a budget's worth of square matrices at a time.

Repair and OBS importance need the Gram matrix (and, against a reference model, the cross
products) of every consumer's input; for a large model they do not fit in memory together.
``groups_with_stats`` hands out the channel groups in their given order, each with the
statistics of its consumers, computing them a group of layers at a time through
``onnxprune.calibration.statistics_in_groups`` and forgetting them once no later group needs
them. Every layer's statistics are exactly those of one pass over the data, so the result is
the same as with all of them held at once. ``WeightsAsLoaded`` gives the weights as they were
when it was made, read on access instead of all mapped at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict

import numpy as np
import onnx_ir as ir

from onnxprune.calibration import (
    CalibrationOptions,
    LayerStats,
    layer_views,
    statistics_in_groups,
)
from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.structured.groups import ChannelGroup
from onnxprune.weights import find_weights

__all__ = ["WeightsAsLoaded", "groups_with_stats"]


class WeightsAsLoaded(Mapping):
    """name -> array of the model's initializers as they are now; later replacements of an
    initializer do not show, and nothing is read until asked for."""

    def __init__(self, model: ir.Model) -> None:
        self._tensors = {
            name: value.const_value for name, value in model.graph.initializers.items()
        }

    def __getitem__(self, name: str) -> np.ndarray:
        return self._tensors[name].numpy()

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def groups_with_stats(
    model: ir.Model,
    groups: list[ChannelGroup],
    calibration: Dataset | None,
    calibration_options: CalibrationOptions,
    gram: bool,
    reference: ir.Model | None,
) -> Iterator[tuple[ChannelGroup, dict[str, LayerStats]]]:
    """Each group in order with its consumers' statistics (an empty dict without data)."""
    if calibration is None:
        yield from ((group, {}) for group in groups)
        return
    names = {c.tensor for g in groups for c in g.consumers}
    weights = [w for w in find_weights(model)[0] if w.name in names]
    _, refused = layer_views(model, weights)
    if refused:
        name, reason = next(iter(refused.items()))
        raise InputError(f"cannot calibrate consumer '{name}': {reason}")
    options = CalibrationOptions(**{**asdict(calibration_options), "gram": gram})
    pending, available = list(groups), {}
    for stats in statistics_in_groups(model, weights, calibration, options, reference):
        available.update(stats)
        while pending and all(c.tensor in available for c in pending[0].consumers):
            yield pending.pop(0), available
        needed = {c.tensor for g in pending for c in g.consumers}
        available = {n: s for n, s in available.items() if n in needed}
    yield from ((group, available) for group in pending)
