"""Structured pruning end to end: find groups, score units, repair consumers, remove units.

``prune_structured`` guarantees: only unblocked groups of the requested kinds change; each loses
``round(sparsity * units)`` units, fewer where the kept count is rounded up to a multiple of
``round_to`` (channels and neurons) or held at ``min_units``; every tensor coupled to a unit
is sliced consistently, so the model keeps its inputs and outputs and computes with smaller
tensors; blocked groups are reported with their reason. Decisions are recorded per group
(``kept`` unit indices) and can be replayed with ``decisions``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_ir as ir

from onnxprune.calibration import CalibrationOptions
from onnxprune.data import Dataset
from onnxprune.errors import InputError, NothingToPrune, compiled_regex
from onnxprune.normalize import NormalizeModelPass
from onnxprune.reasons import grouped_reasons
from onnxprune.streaming import scratch_for, set_initializer
from onnxprune.structured.apply import RemoveUnitsPass
from onnxprune.structured.dependency import find_channel_groups
from onnxprune.structured.groups import ChannelGroup
from onnxprune.structured.heads import find_head_groups
from onnxprune.structured.importance import (
    IMPORTANCE,
    obs_select,
    repair_consumer,
    unit_importance,
)
from onnxprune.structured.stats import WeightsAsLoaded, groups_with_stats
from onnxprune.weights import find_weights

__all__ = ["TARGETS", "StructuredOptions", "StructuredResult", "prune_structured"]

logger = logging.getLogger(__name__)
TARGETS = {
    "channels": {"channels"},
    "ffn": {"neurons"},
    "heads": {"heads"},
    "all": {"channels", "neurons", "heads"},
}


@dataclass(frozen=True)
class StructuredOptions:
    """What to remove: kinds of groups, share of units, scoring and repair."""

    target: str = "all"
    sparsity: float = 0.5
    importance: str | None = None  # default: obs with calibration data, else l2
    reconstruct: bool = False
    sequential: bool = False
    ridge: float = 1e-2
    min_units: int = 1
    round_to: int = 8
    include: str | None = None
    exclude: str | None = None
    calibration: str | None = None

    def validate(self, has_calibration: bool) -> None:
        if self.target not in TARGETS:
            raise InputError(f"unknown target '{self.target}' (choose from {', '.join(TARGETS)})")
        compiled_regex("--include", self.include)
        compiled_regex("--exclude", self.exclude)
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"target sparsity must be in [0, 1), got {self.sparsity}")
        if self.round_to < 1:
            raise InputError(f"--round-to must be at least 1, got {self.round_to}")
        if not self.ridge > 0:
            raise InputError(f"ridge must be positive, got {self.ridge}")
        if self.importance is not None and self.importance not in IMPORTANCE:
            raise InputError(
                f"unknown importance '{self.importance}' (choose from {', '.join(IMPORTANCE)})"
            )
        needs_data = self.reconstruct or self.importance in ("activation", "obs")
        if needs_data and not has_calibration:
            raise InputError("--reconstruct and activation importance need --calibration DATA.npz")

    def resolved_importance(self, has_calibration: bool) -> str:
        return self.importance or ("obs" if has_calibration else "l2")


@dataclass
class StructuredResult:
    """Per group: units before and after, the kept units, or why the group was left alone."""

    options: StructuredOptions
    importance: str
    pruned: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        units_before = sum(g["units_before"] for g in self.pruned)
        units_after = sum(g["units_after"] for g in self.pruned)
        return {
            "options": {**asdict(self.options), "importance": self.importance},
            "groups": self.pruned,
            "skipped": self.skipped,
            "totals": {
                "groups": len(self.pruned),
                "units_before": units_before,
                "units_after": units_after,
            },
        }

    def decisions(self) -> dict[str, list[int]]:
        return {g["id"]: g["kept"] for g in self.pruned}


def _routed_refusal(options: StructuredOptions, importance: str) -> str | None:
    """Why groups routed through Concat/Split/Slice cannot be pruned with these options."""
    unsupported = [
        name
        for name, used in (
            ("obs importance", importance == "obs"),
            ("--reconstruct", options.reconstruct),
            ("--sequential-groups", options.sequential),
        )
        if used
    ]
    if not unsupported:
        return None
    return (
        f"channels routed through Concat/Split/Slice: {', '.join(unsupported)} not supported "
        "for them (use --importance l2 or activation)"
    )


def _selected(groups: list[ChannelGroup], options: StructuredOptions, importance: str = "l2"):
    kinds = TARGETS[options.target]
    chosen, skipped = [], []
    for group in groups:
        names = [group.id, *(s.tensor for s in group.slices)]
        reason = group.blocked
        if reason is None and group.kind not in kinds:
            reason = f"{group.kind} not in --target {options.target}"
        if reason is None and group.routed:
            reason = _routed_refusal(options, importance)
        if (
            reason is None
            and options.include
            and not any(re.search(options.include, n) for n in names)
        ):
            reason = f"not matched by --include '{options.include}'"
        if reason is None and options.exclude and any(re.search(options.exclude, n) for n in names):
            reason = f"excluded by --exclude '{options.exclude}'"
        if reason is None:
            chosen.append(group)
        else:
            skipped.append({**group.describe(), "reason": reason})
    return chosen, skipped


def _bias_of(model: ir.Model, node_name: str) -> ir.Value | None:
    """The constant bias added to a consumer's output, if it has exactly one."""
    node = next(n for n in model.graph if n.name == node_name)
    if node.op_type in ("Conv", "Gemm"):
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        return bias if bias is not None and bias.const_value is not None else None
    uses = node.outputs[0].uses()
    if len(uses) == 1 and uses[0].node.op_type == "Add":
        other = uses[0].node.inputs[1 - uses[0].idx]
        if other.const_value is not None and len(other.shape) == 1 and len(other.uses()) == 1:
            return other
    return None


def _layouts(model: ir.Model):
    return {w.name: w.layout for w in find_weights(model)[0]}


def _repair(model, group, kept, stats, ridge) -> None:
    layouts = _layouts(model)
    channels = group.indices(np.sort(kept))
    for consumer in group.consumers:
        value = model.graph.initializers[consumer.tensor]
        bias = _bias_of(model, consumer.node)
        new, delta = repair_consumer(
            value.const_value.numpy(),
            layouts[consumer.tensor],
            stats[consumer.tensor],
            channels,
            bias is not None,
            ridge,
        )
        set_initializer(value, new, scratch_for(model))
        if bias is not None:
            bias.const_value = ir.Tensor(bias.const_value.numpy() + delta, name=bias.name)


def prune_structured(
    model: ir.Model,
    options: StructuredOptions,
    calibration: Dataset | None = None,
    calibration_options: CalibrationOptions | None = None,
    decisions: dict[str, list[int]] | None = None,
) -> StructuredResult:
    """Remove units from ``model`` in place (see the module docstring)."""
    options.validate(calibration is not None)
    importance = options.resolved_importance(calibration is not None)
    NormalizeModelPass()(model)  # edits and repairs refer to nodes by name; ranks are needed
    groups = find_channel_groups(model) + find_head_groups(model)
    chosen, skipped = _selected(groups, options, importance)
    if decisions is not None:
        _check_decisions(chosen, decisions)
        chosen = [g for g in chosen if g.id in decisions]
    if not chosen:
        raise NothingToPrune(
            f"nothing to prune structurally: {len(groups)} groups found, {len(skipped)} left alone",
            grouped_reasons(s["reason"] for s in skipped),
            {"mode": "structured", **StructuredResult(options, importance, [], skipped).to_dict()},
        )
    needs_stats = calibration is not None and (
        options.reconstruct or importance in ("activation", "obs")
    )
    calibration_options = calibration_options or CalibrationOptions()
    result = StructuredResult(options, importance, skipped=skipped)
    batches = [[g] for g in _topological(model, chosen)] if options.sequential else [chosen]
    original = model.clone() if options.sequential and options.reconstruct else None
    for index, batch in enumerate(batches):
        reference = original if index else None  # the first batch sees unpruned inputs anyway
        arrays = WeightsAsLoaded(model)
        kept_by_group = {}
        for group, stats in groups_with_stats(
            model,
            batch,
            calibration if needs_stats else None,
            calibration_options,
            options.reconstruct or importance == "obs",
            reference,
        ):
            keep = _units_to_keep(group, options)
            if decisions is not None:
                kept = np.array(sorted(decisions[group.id]), dtype=np.int64)
            elif importance == "obs":
                kept = obs_select(
                    group, arrays, _layouts(model), stats, group.units - keep, options.ridge
                )
            else:
                scores = unit_importance(group, arrays, importance, stats)
                kept = np.sort(np.argsort(-scores, kind="stable")[:keep])
            kept_by_group[group.id] = kept
            if options.reconstruct:
                _repair(model, group, kept, stats, options.ridge)
            result.pruned.append(
                {
                    **group.describe(),
                    "units_before": group.units,
                    "units_after": len(kept),
                    "kept": kept.tolist(),
                }
            )
        RemoveUnitsPass(batch, kept_by_group)(model)
    logger.info("structured: pruned %d groups", len(chosen))
    return result


def _units_to_keep(group: ChannelGroup, options: StructuredOptions) -> int:
    """``units - round(sparsity * units)``, rounded up to a multiple of ``round_to`` for channels
    and neurons (onnxruntime's blocked kernels are fastest on multiples of 8), at least
    ``min_units``, at most ``units``."""
    keep = max(options.min_units, group.units - round(options.sparsity * group.units))
    if group.kind != "heads" and options.round_to > 1:
        keep = -(-keep // options.round_to) * options.round_to
    return min(keep, group.units)


def _topological(model: ir.Model, groups: list[ChannelGroup]) -> list[ChannelGroup]:
    position = {node.name: index for index, node in enumerate(model.graph)}
    return sorted(groups, key=lambda g: min(position.get(p.node, 0) for p in g.producers))


def _check_decisions(groups: list[ChannelGroup], decisions: dict[str, list[int]]) -> None:
    known = {g.id: g for g in groups}
    for group_id, kept in decisions.items():
        group = known.get(group_id)
        if group is None:
            raise InputError(f"manifest group '{group_id}' is not a prunable group of this model")
        if not kept or min(kept) < 0 or max(kept) >= group.units or len(set(kept)) != len(kept):
            raise InputError(f"manifest group '{group_id}': kept units do not fit {group.units}")
