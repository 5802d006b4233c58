"""Unstructured pruning of initializers: choose masks, zero weights, report per layer.

``prune_model`` guarantees: only prunable weights (see ``onnxprune.weights``) change; each keeps
its dtype and shape; mask methods (magnitude, wanda) keep the surviving entries bit-identical,
while sparsegpt also updates them to preserve each layer's output on the calibration data.
Each layer gets ``round(s_l * size)`` zeros for its allocated sparsity ``s_l`` (see
``onnxprune.allocation``; their weighted mean is the target), or exactly ``1 - N/M`` for an N:M
pattern. The same model, options and calibration data always give the same result.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from onnxprune.allocation import ALLOCATIONS, allocate
from onnxprune.calibration import (
    CalibrationOptions,
    LayerStats,
    layer_views,
    statistics_in_groups,
)
from onnxprune.data import Dataset
from onnxprune.errors import InputError, NothingToPrune, compiled_regex
from onnxprune.masks import n_m_refusal
from onnxprune.prune_weight import PruneWeightsPass, prune_one_weight
from onnxprune.reasons import grouped_reasons
from onnxprune.scoring import METHODS
from onnxprune.stages import sequential_stages
from onnxprune.streaming import scratch_for
from onnxprune.weights import PrunableWeight, SkippedTensor, find_weights

__all__ = [
    "LayerResult",
    "PruneOptions",
    "PruneResult",
    "PruneWeightsPass",
    "parse_pattern",
    "prune_model",
]

logger = logging.getLogger(__name__)


def parse_pattern(text: str) -> tuple[int, int]:
    """Parse an ``N:M`` pattern such as ``2:4``."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"pattern '{text}' is not of the form N:M (for example 2:4)")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise InputError(f"pattern '{text}' needs 0 < N < M")
    return n, m


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how. ``target_sparsity`` may be None only with a ``pattern``.

    ``calibration`` names the data file used for data-aware methods (recorded in the report);
    the data itself is passed to ``prune_model``.
    """

    target_sparsity: float | None = 0.5
    method: str = "magnitude"
    allocation: str = "uniform"
    pattern: tuple[int, int] | None = None
    include: str | None = None
    exclude: str | None = None
    calibration: str | None = None
    owl_lambda: float = 0.08
    sequential: bool = False
    min_fan_in: int = 16
    # Per-layer sparsity by weight name, overriding the allocation (``onnxprune.search``).
    layer_targets: tuple[tuple[str, float], ...] = ()

    @property
    def sparsity(self) -> float:
        if self.pattern is not None:
            return 1 - self.pattern[0] / self.pattern[1]
        assert self.target_sparsity is not None
        return self.target_sparsity

    @property
    def needs_calibration(self) -> bool:
        return METHODS[self.method].needs_calibration or self.allocation == "owl"

    def validate(self) -> None:
        """Raise ``InputError`` for options that contradict each other or are out of range."""
        if self.method not in METHODS:
            raise InputError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if self.allocation not in ALLOCATIONS:
            raise InputError(
                f"unknown allocation '{self.allocation}' (choose from {', '.join(ALLOCATIONS)})"
            )
        compiled_regex("--include", self.include)
        compiled_regex("--exclude", self.exclude)
        if self.sequential and not METHODS[self.method].needs_calibration:
            raise InputError("--sequential needs a data-aware method (wanda, sparsegpt)")
        if self.min_fan_in < 0:
            raise InputError(f"--min-fan-in must be >= 0, got {self.min_fan_in}")
        if not 0.0 <= self.owl_lambda < 0.5:
            raise InputError(f"OWL lambda must be in [0, 0.5), got {self.owl_lambda}")
        for name, value in self.layer_targets:
            if not 0.0 <= value < 1.0:
                raise InputError(f"layer sparsity of {name} must be in [0, 1), got {value}")
        if self.pattern is None:
            if self.target_sparsity is None:
                raise InputError("give --target-sparsity or --pattern")
            if not 0.0 <= self.target_sparsity < 1.0:
                raise InputError(f"target sparsity must be in [0, 1), got {self.target_sparsity}")
            return
        if self.allocation != "uniform":
            raise InputError(
                f"an N:M pattern is applied per layer; allocation '{self.allocation}' "
                "(--scope global / --allocation) does not apply"
            )
        if self.target_sparsity is not None and abs(self.target_sparsity - self.sparsity) > 1e-9:
            n, m = self.pattern
            raise InputError(
                f"--pattern {n}:{m} means sparsity {self.sparsity:g}, "
                f"but --target-sparsity is {self.target_sparsity:g}"
            )


@dataclass(frozen=True)
class LayerResult:
    """One pruned weight: its zero count before and after."""

    name: str
    op_type: str
    nodes: tuple[str, ...]
    shape: tuple[int, ...]
    size: int
    target: float
    zeros_before: int
    zeros_after: int

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "nodes": list(self.nodes),
            "shape": list(self.shape),
            "sparsity_before": self.zeros_before / self.size,
            "sparsity_after": self.zeros_after / self.size,
        }


@dataclass
class PruneResult:
    """The per-layer table of one pruning run, plus what was left alone and why."""

    options: PruneOptions
    layers: list[LayerResult] = field(default_factory=list)
    skipped: list[SkippedTensor] = field(default_factory=list)
    constants_lifted: bool = False

    def totals(self) -> dict:
        size = sum(layer.size for layer in self.layers)
        before = sum(layer.zeros_before for layer in self.layers)
        after = sum(layer.zeros_after for layer in self.layers)
        return {
            "pruned_weights": len(self.layers),
            "skipped_tensors": len(self.skipped),
            "elements": size,
            "zeros_before": before,
            "zeros_after": after,
            "sparsity_before": before / size if size else 0.0,
            "sparsity_after": after / size if size else 0.0,
        }

    def to_dict(self) -> dict:
        options = asdict(self.options)
        options["pattern"] = (
            None if self.options.pattern is None else "{}:{}".format(*self.options.pattern)
        )
        options["effective_sparsity"] = self.options.sparsity
        return {
            "options": options,
            "constants_lifted_to_initializers": self.constants_lifted,
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [
                {"name": s.name, "shape": list(s.shape), "reason": s.reason} for s in self.skipped
            ],
            "totals": self.totals(),
        }


def _select(
    weights: list[PrunableWeight], options: PruneOptions
) -> tuple[list[PrunableWeight], list[SkippedTensor]]:
    selected, skipped = [], []
    for weight in weights:
        names = (weight.name, *weight.nodes)
        reason = None
        if options.include and not any(re.search(options.include, n) for n in names):
            reason = f"not matched by --include '{options.include}'"
        elif options.exclude and any(re.search(options.exclude, n) for n in names):
            reason = f"excluded by --exclude '{options.exclude}'"
        elif weight.size // weight.shape[weight.layout.out_axis] < options.min_fan_in:
            fan_in = weight.size // weight.shape[weight.layout.out_axis]
            reason = (
                f"fan-in {fan_in} < --min-fan-in {options.min_fan_in}: too few inputs per "
                "output to prune"
            )
        elif options.pattern is not None:
            reason = n_m_refusal(weight.shape, weight.layout, options.pattern[1])
        if reason is None:
            selected.append(weight)
        else:
            skipped.append(SkippedTensor(weight.name, weight.shape, reason))
    return selected, skipped


def _unserved(
    model: ir.Model, weights: list[PrunableWeight], options: PruneOptions
) -> list[SkippedTensor]:
    """Weights a data-aware method cannot handle (no activation view), with reasons."""
    if not options.needs_calibration:
        return []
    _, refused = layer_views(model, weights)
    return [
        SkippedTensor(w.name, w.shape, f"{options.method}: {refused[w.name]}")
        for w in weights
        if w.name in refused
    ]


def _statistics(
    model: ir.Model,
    weights: list[PrunableWeight],
    options: PruneOptions,
    calibration: Dataset | None,
    calibration_options: CalibrationOptions,
    gram: bool,
) -> Iterator[dict[str, LayerStats | None]]:
    """Statistics for ``weights``, a group of layers at a time (one group without data)."""
    if not options.needs_calibration:
        yield dict.fromkeys((w.name for w in weights), None)
        return
    assert calibration is not None
    yield from statistics_in_groups(
        model, weights, calibration, replace(calibration_options, gram=gram)
    )


def _targets(
    model: ir.Model,
    selected: list[PrunableWeight],
    options: PruneOptions,
    stages: list[list[PrunableWeight]],
    calibration: Dataset | None,
    calibration_options: CalibrationOptions,
) -> dict[str, float]:
    """Per-layer sparsity; empty for uniform allocation (every layer gets the target).

    Allocations that compare layers need every layer's scores at once: with several stages
    they come from the unpruned model, else from the same statistics the layers are pruned
    with (without Gram matrices, which do not change the scores).
    """
    if options.allocation == "uniform":
        return {}
    method = METHODS[options.method]
    scores = {}
    for stats in _statistics(
        model,
        stages[0] if len(stages) == 1 else selected,
        options,
        calibration,
        calibration_options,
        False,
    ):
        for name, layer_stats in stats.items():
            value = model.graph.initializers[name]
            weight = next(w for w in selected if w.name == name)
            scores[name] = method.scores(weight, value.const_value.numpy(), layer_stats)
    return allocate(options.allocation, scores, options.sparsity, options.owl_lambda)


def prune_model(
    model: ir.Model,
    options: PruneOptions,
    calibration: Dataset | None = None,
    calibration_options: CalibrationOptions | None = None,
) -> PruneResult:
    """Prune ``model`` in place and return the per-layer result.

    Data-aware methods (and OWL allocation) need ``calibration`` samples for the model. With
    ``options.sequential`` the layers are pruned stage by stage (``onnxprune.stages``), each
    stage calibrated on the outputs of the already-pruned model.
    """
    options.validate()
    if options.needs_calibration and calibration is None:
        raise InputError(
            f"--method {options.method} with allocation {options.allocation} needs "
            "calibration data (--calibration DATA.npz)"
        )
    calibration_options = calibration_options or CalibrationOptions()
    lifted = LiftConstantsToInitializersPass(size_limit=16)(model).modified
    weights, skipped = find_weights(model)
    selected, refused = _select(weights, options)
    unserved = _unserved(model, selected, options)
    refused += unserved
    selected = [w for w in selected if w.name not in {s.name for s in unserved}]
    if not selected:
        left_alone = skipped + refused
        raise NothingToPrune(
            f"nothing to prune: {len(weights)} prunable weights, none selected "
            f"({len(left_alone)} tensors left alone)",
            grouped_reasons(s.reason for s in left_alone),
            {"mode": "unstructured", **PruneResult(options, [], left_alone, lifted).to_dict()},
        )
    method = METHODS[options.method]
    stages = sequential_stages(model, selected) if options.sequential else [selected]
    targets = _targets(model, selected, options, stages, calibration, calibration_options)
    targets.update(options.layer_targets)  # per-layer sparsity chosen by onnxprune.search
    scratch = scratch_for(model)
    zeros: dict[str, tuple[int, int]] = {}
    for stage in stages:
        pruned: dict[str, ir.TensorProtocol] = {}
        for stats in _statistics(
            model, stage, options, calibration, calibration_options, method.reconstructs
        ):
            by_name = {w.name: w for w in stage}
            for name, layer_stats in stats.items():
                weight = by_name[name]
                target = targets.get(name, options.sparsity)
                zeros[name], pruned[name] = prune_one_weight(
                    model, weight, options, target, layer_stats, scratch
                )
        for name, tensor in pruned.items():  # the stage's statistics came from its input
            model.graph.initializers[name].const_value = tensor
    layers = [
        LayerResult(
            name=w.name,
            op_type=w.op_type,
            nodes=w.nodes,
            shape=w.shape,
            size=w.size,
            target=targets.get(w.name, options.sparsity),
            zeros_before=zeros[w.name][0],
            zeros_after=zeros[w.name][1],
        )
        for w in selected
    ]
    logger.info("pruned %d weights with %s in %d stage(s)", len(layers), method.name, len(stages))
    return PruneResult(options, layers, skipped + refused, lifted)
