"""Unstructured pruning of initializers: choose masks, zero weights, report per layer.

``prune_model`` guarantees: only prunable weights (see ``onnxprune.weights``) change; each keeps
its dtype and shape; kept entries are bit-identical; the achieved sparsity over the selected
weights is the target to within one weight per layer (``--scope layer``) or one weight overall
(``--scope global``), or exactly ``1 - N/M`` for an N:M pattern. The same model and options
always give the same masks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from onnxprune.errors import InputError
from onnxprune.masks import global_masks, layer_mask, n_m_mask, n_m_refusal
from onnxprune.scoring import SCORERS
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
SCOPES = ("layer", "global")


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
    """What to prune and how. ``target_sparsity`` may be None only with a ``pattern``."""

    target_sparsity: float | None = 0.5
    method: str = "magnitude"
    scope: str = "layer"
    pattern: tuple[int, int] | None = None
    include: str | None = None
    exclude: str | None = None

    @property
    def sparsity(self) -> float:
        if self.pattern is not None:
            return 1 - self.pattern[0] / self.pattern[1]
        assert self.target_sparsity is not None
        return self.target_sparsity

    def validate(self) -> None:
        """Raise ``InputError`` for options that contradict each other or are out of range."""
        if self.method not in SCORERS:
            raise InputError(f"unknown method '{self.method}' (choose from {', '.join(SCORERS)})")
        if self.scope not in SCOPES:
            raise InputError(f"unknown scope '{self.scope}' (choose from {', '.join(SCOPES)})")
        for flag, pattern in (("--include", self.include), ("--exclude", self.exclude)):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise InputError(f"{flag} '{pattern}' is not a valid regex: {error}") from error
        if self.pattern is None:
            if self.target_sparsity is None:
                raise InputError("give --target-sparsity or --pattern")
            if not 0.0 <= self.target_sparsity < 1.0:
                raise InputError(f"target sparsity must be in [0, 1), got {self.target_sparsity}")
            return
        if self.scope != "layer":
            raise InputError("an N:M pattern is applied per layer; --scope global does not apply")
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


class PruneWeightsPass(ir.passes.InPlacePass):
    """Zero the entries of named initializers where their keep-mask is False.

    Guarantees: only the named initializers change; dtype and shape are kept; kept entries are
    bit-identical; ``modified`` is True only if some entry actually became zero.
    """

    def __init__(self, masks: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.masks = masks

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for name, keep in self.masks.items():
            value = model.graph.initializers[name]
            array = value.const_value.numpy()
            pruned = np.where(keep, array, np.zeros((), dtype=array.dtype))
            if not np.array_equal(pruned, array):
                modified = True
            value.const_value = ir.Tensor(pruned, name=name)
        return ir.passes.PassResult(model, modified=modified)


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
        elif options.pattern is not None:
            reason = n_m_refusal(weight.shape, weight.layout, options.pattern[1])
        if reason is None:
            selected.append(weight)
        else:
            skipped.append(SkippedTensor(weight.name, weight.shape, reason))
    return selected, skipped


def _masks(
    model: ir.Model, weights: list[PrunableWeight], options: PruneOptions
) -> dict[str, np.ndarray]:
    scorer = SCORERS[options.method]
    scores = {
        w.name: scorer(w, model.graph.initializers[w.name].const_value.numpy()) for w in weights
    }
    if options.pattern is not None:
        n, m = options.pattern
        return {w.name: n_m_mask(scores[w.name], n, m, w.layout) for w in weights}
    if options.scope == "global":
        return global_masks(scores, options.sparsity)
    return {name: layer_mask(s, options.sparsity) for name, s in scores.items()}


def prune_model(model: ir.Model, options: PruneOptions) -> PruneResult:
    """Prune ``model`` in place and return the per-layer result."""
    options.validate()
    lifted = LiftConstantsToInitializersPass(size_limit=16)(model).modified
    weights, skipped = find_weights(model)
    selected, refused = _select(weights, options)
    if not selected:
        raise InputError(
            f"nothing to prune: {len(weights)} prunable weights, none selected "
            f"({len(skipped) + len(refused)} tensors skipped; see 'onnxprune inspect')"
        )
    zeros_before = {
        w.name: int(np.count_nonzero(model.graph.initializers[w.name].const_value.numpy() == 0))
        for w in selected
    }
    masks = _masks(model, selected, options)
    PruneWeightsPass(masks)(model)
    layers = [
        LayerResult(
            name=w.name,
            op_type=w.op_type,
            nodes=w.nodes,
            shape=w.shape,
            size=w.size,
            zeros_before=zeros_before[w.name],
            zeros_after=int(
                np.count_nonzero(model.graph.initializers[w.name].const_value.numpy() == 0)
            ),
        )
        for w in selected
    ]
    logger.info("pruned %d weights with %s", len(layers), options.method)
    return PruneResult(options, layers, skipped + refused, lifted)
