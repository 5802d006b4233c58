"""Structured levels that keep the same units are one candidate.

Bisection on a structured sparsity probes levels such as 0.328, 0.305 and 0.293 that all round
to the same units (MiniLM: 4 of 12 heads per layer); each was built, reconstructed and verified
again (3 of the 14 candidates of one MiniLM search). ``UnitPlans`` maps a level to the units
every group keeps, the way ``onnxprune.structured.pipeline`` counts them (groups found once per
search), so the search reuses the outcome of an earlier level with the same plan.
"""

from __future__ import annotations

from pathlib import Path

from onnxprune.normalize import load_normalized
from onnxprune.structured.dependency import find_channel_groups
from onnxprune.structured.groups import ChannelGroup
from onnxprune.structured.heads import find_head_groups
from onnxprune.structured.pipeline import StructuredOptions, _selected, _units_to_keep

__all__ = ["UnitPlans"]


class UnitPlans:
    """Per structured target and level: ``(group id, units kept)`` of every group pruned."""

    def __init__(self, source: Path, include: str | None, exclude: str | None) -> None:
        self.source, self.include, self.exclude = source, include, exclude
        self._groups: list[ChannelGroup] | None = None

    def plan(self, target: str, sparsity: float, has_calibration: bool) -> tuple:
        if self._groups is None:
            model = load_normalized(self.source)
            self._groups = find_channel_groups(model) + find_head_groups(model)
        options = StructuredOptions(
            target=target, sparsity=sparsity, include=self.include, exclude=self.exclude
        )
        chosen, _ = _selected(self._groups, options, options.resolved_importance(has_calibration))
        return tuple(sorted((g.id, _units_to_keep(g, options)) for g in chosen))
